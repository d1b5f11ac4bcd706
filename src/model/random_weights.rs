//! Random weights for any architecture, for `dcoder bench --random`: every tensor the model asks
//! for is drawn on the spot (uniform with std 0.02, norm weights 1), so a real shape can be timed
//! without a checkpoint.

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

/// Standard deviation of the random weights, as HF initialisers use.
const STD: f64 = 0.02;

struct RandomWeights {
    /// Name fragments of tensors to report missing.
    absent: Vec<String>,
}

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if name.ends_with("norm.weight") || name.ends_with("ln_f.weight") {
            return Tensor::ones(shape, dtype, dev);
        }
        // U(-a, a) has std a / sqrt(3); uniform draws are several times cheaper than normal ones.
        let a = STD * 3f64.sqrt();
        Tensor::rand(-a as f32, a as f32, shape, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("random weights have no fixed shape for {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        !self.absent.iter().any(|a| name.contains(a.as_str()))
    }
}

/// A builder that hands out fresh random tensors of `dtype` on `device`, and reports the
/// tensors whose names contain one of `absent` as missing.
pub fn random_var_builder(absent: &[String], dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(RandomWeights {
            absent: absent.to_vec(),
        }),
        dtype,
        device.clone(),
    )
}

/// Random matmul weights quantized to `dtype` as they are asked for (`bench --random --quant`):
/// every `[out, in]` weight whose rows are whole blocks; the rest stays dense.
///
/// One random tensor is quantized per shape and its blocks copied into every later tensor of
/// that shape: each tensor still has memory of its own (the products read as many bytes as a
/// checkpoint's), but a 16B mixture of experts loads in seconds rather than the quarter of an
/// hour that drawing and k-quantizing 16B values takes. Equal weights across layers and experts
/// do not change the time of a product; the routers, which decide which experts run, stay
/// random per layer (they are f32 tensors of [`random_var_builder`]).
#[derive(Debug)]
pub struct RandomQuantized {
    dtype: candle_core::quantized::GgmlDType,
    /// Bytes of the quantized tensors handed out, and their element count.
    bytes: std::sync::atomic::AtomicU64,
    elements: std::sync::atomic::AtomicU64,
    /// The stored bytes of the first tensor of each shape, and its type.
    blocks: std::sync::Mutex<std::collections::HashMap<(usize, usize), StoredBlocks>>,
}

/// A quantized tensor's type and stored bytes.
type StoredBlocks = (candle_core::quantized::GgmlDType, Vec<u8>);

impl RandomQuantized {
    pub fn new(dtype: candle_core::quantized::GgmlDType) -> Self {
        Self {
            dtype,
            bytes: Default::default(),
            elements: Default::default(),
            blocks: Default::default(),
        }
    }

    /// (bytes, elements) of the quantized weights made so far.
    pub fn made(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.bytes.load(Relaxed), self.elements.load(Relaxed))
    }
}

impl super::linear::QuantizedWeights for RandomQuantized {
    fn is_quantized(&self, _name: &str) -> bool {
        true
    }

    fn quantized(
        &self,
        _name: &str,
        (out, inp): (usize, usize),
    ) -> Result<candle_core::quantized::QTensor> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut blocks = self
            .blocks
            .lock()
            .map_err(|_| candle_core::Error::msg("the random weights' lock is poisoned"))?;
        let (dtype, bytes) = match blocks.entry((out, inp)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let a = STD * 3f64.sqrt();
                let w = Tensor::rand(-a as f32, a as f32, (out, inp), &Device::Cpu)?;
                let dtype = match inp % self.dtype.block_size() {
                    0 => self.dtype,
                    _ => candle_core::quantized::GgmlDType::F32,
                };
                let q = candle_core::quantized::QTensor::quantize(&w, dtype)?;
                e.insert((dtype, q.data()?.to_vec()))
            }
        };
        let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
            *dtype,
            bytes,
            vec![out, inp],
            &Device::Cpu,
        )?;
        self.bytes
            .fetch_add(q.storage_size_in_bytes() as u64, Relaxed);
        self.elements.fetch_add((out * inp) as u64, Relaxed);
        Ok(q)
    }
}
