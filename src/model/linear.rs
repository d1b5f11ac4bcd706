//! Linear layers and the token embedding, with weights stored the way the matmul reads fastest.
//!
//! Checkpoints store `W` as `[out, in]` and compute `y = x Wᵀ`.
//! - [`WeightFormat::Dense`]: on the CPU the weight is transposed once at load time. candle's
//!   `Linear` multiplies by the transposed *view*, and the gemm kernels then read the weight with
//!   a stride at about 60% of the speed they reach on a contiguous `[in, out]` matrix (60 vs 90
//!   GFLOP/s per core at 160×1536×4096 on this project's machine). GPUs (cuBLAS) take the view.
//! - [`WeightFormat::PackedBf16`]: bf16 weights packed for the AVX512-BF16 kernel
//!   (`bf16_matmul.rs`); activations stay f32.
//! - [`WeightFormat::Quantized`]: ggml block types (a GGUF file's Q8_0, Q4_K, ...) kept as they
//!   are. `quant_kernel::kernel` picks each product's kernel: Q8_0 on AMX tiles
//!   (`amx_matmul.rs`) where the CPU has them, candle's dot products or repacked kernels, or
//!   dcoder's tiled kernel for many rows on AVX2. Weights the file stores as f32/f16/bf16 take
//!   the dense path, so an F32 GGUF computes exactly what the safetensors checkpoint does.

use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::bf16_matmul::PackedBf16;
use super::quant_kernel::{self, Kernel};
use super::quant_matmul::{self, QuantRows};

/// Where a quantized checkpoint's matmul weights come from, by checkpoint (HF) tensor name.
pub trait QuantizedWeights: Send + Sync + std::fmt::Debug {
    /// Whether `name` is stored in a block-quantized type (not f32/f16/bf16).
    fn is_quantized(&self, name: &str) -> bool;
    /// Tensor `name` as stored, `[out, in]`, in the HF row order, on the CPU.
    fn quantized(&self, name: &str, shape: (usize, usize)) -> Result<QTensor>;
}

/// How matmul weights are kept.
#[derive(Debug, Clone)]
pub enum WeightFormat {
    /// A tensor of the model's dtype.
    Dense,
    /// bf16, packed for dcoder's CPU kernel (f32 activations).
    PackedBf16,
    /// A file's ggml block types as stored (f32 activations); float-typed tensors go dense.
    Quantized(Arc<dyn QuantizedWeights>),
}

impl WeightFormat {
    /// The CPU kernel the matmuls take: quantized products as `quant_kernel::kernel_name`
    /// names them for `label`, the quantized weights' main type (AMX, candle's VNNI tiles,
    /// AVX2, NEON or scalar, chosen at run time); dense products run on the `gemm` crate;
    /// packed bf16 on dcoder's AVX512-BF16 kernel.
    pub fn kernel(&self, label: Option<&str>) -> &'static str {
        match self {
            WeightFormat::Dense => "gemm",
            WeightFormat::PackedBf16 => "avx512bf16",
            WeightFormat::Quantized(_) => quant_kernel::kernel_name(label),
        }
    }
}

#[derive(Debug, Clone)]
enum Weight {
    /// `Wᵀ`: `[in, out]`, contiguous on the CPU.
    Transposed(Tensor),
    Packed(Arc<PackedBf16>),
    /// Quantized parts side by side along the output (stacked layers whose parts have different
    /// types, as Q4_K_M files mix Q4_K and Q6_K).
    Quantized(Vec<QuantPart>),
}

/// One quantized part: the tensor, shared with candle's `QMatMul` of it, and its output width.
#[derive(Debug, Clone)]
struct QuantPart {
    tensor: Arc<QTensor>,
    matmul: QMatMul,
    width: usize,
}

impl QuantPart {
    /// `x` (`[rows, k]`, f32; `xs` its values) times its `Wᵀ`, into columns `col..col + width`
    /// of `y` (`[rows, n]`).
    fn forward_into(
        &self,
        x: &Tensor,
        xs: &[f32],
        route: Kernel,
        y: &mut [f32],
        n: usize,
        col: usize,
    ) -> Result<()> {
        let rows = y.len() / n.max(1);
        if route != Kernel::Candle {
            // dcoder's kernels read the weights as loaded; each says whether it took the type.
            let (t, bytes) = (&*self.tensor, self.tensor.data()?);
            let done = match route {
                Kernel::Tiled => QuantRows::new(t, &bytes)
                    .map(|w| quant_matmul::matmul_into(xs, rows, &w, y, n, col))
                    .is_some(),
                Kernel::Dots => quant_matmul::dot_products(xs, rows, t, &bytes, y, n, col)?,
                Kernel::Amx => quant_matmul::amx_into(xs, rows, t, &bytes, y, n, col)?,
                Kernel::Candle => false,
            };
            if done {
                return Ok(());
            }
        }
        let part: Vec<f32> = self.matmul.forward(x)?.flatten_all()?.to_vec1()?;
        for (r, row) in part.chunks_exact(self.width).enumerate() {
            y[r * n + col..r * n + col + self.width].copy_from_slice(row);
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

/// bf16 bits of a `[rows, cols]` tensor.
fn bf16_bits(t: &Tensor) -> Result<Vec<u16>> {
    let values: Vec<half::bf16> = t.to_dtype(DType::BF16)?.flatten_all()?.to_vec1()?;
    Ok(values.into_iter().map(half::bf16::to_bits).collect())
}

impl Linear {
    /// From a checkpoint weight `[out, in]`.
    pub fn from_weight(
        weight: &Tensor,
        bias: Option<Tensor>,
        format: &WeightFormat,
    ) -> Result<Self> {
        let weight = match format {
            WeightFormat::PackedBf16 => {
                let (out, inp) = weight.dims2()?;
                Weight::Packed(Arc::new(PackedBf16::pack(&bf16_bits(weight)?, out, inp)))
            }
            WeightFormat::Dense | WeightFormat::Quantized(_) if weight.device().is_cpu() => {
                Weight::Transposed(weight.t()?.contiguous()?)
            }
            WeightFormat::Dense | WeightFormat::Quantized(_) => Weight::Transposed(weight.t()?),
        };
        Ok(Self { weight, bias })
    }

    /// Loads `{vb}.weight` (and `{vb}.bias` when `bias`).
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        vb: VarBuilder,
        format: &WeightFormat,
    ) -> Result<Self> {
        Self::stacked(in_dim, &[(out_dim, vb)], bias, format)
    }

    /// Several layers reading the same input (q/k/v, gate/up), stacked into one product whose
    /// output [`Linear::split`] cuts back apart: one matmul instead of several, which on a
    /// small CPU saves thread wake-ups per layer and keeps the kernel's tiles full.
    pub fn stacked(
        in_dim: usize,
        parts: &[(usize, VarBuilder)],
        bias: bool,
        format: &WeightFormat,
    ) -> Result<Self> {
        let bias = match bias {
            true => {
                let parts = parts
                    .iter()
                    .map(|(out, vb)| vb.get(*out, "bias"))
                    .collect::<Result<Vec<_>>>()?;
                Some(Tensor::cat(&parts, 0)?)
            }
            false => None,
        };
        if let WeightFormat::Quantized(source) = format {
            let names: Vec<String> = parts
                .iter()
                .map(|(_, vb)| format!("{}.weight", vb.prefix()))
                .collect();
            if names.iter().any(|n| source.is_quantized(n)) {
                let device = parts.first().map(|(_, vb)| vb.device().clone());
                let tensors = parts
                    .iter()
                    .zip(&names)
                    .map(|((out, _), name)| source.quantized(name, (*out, in_dim)))
                    .collect::<Result<Vec<_>>>()?;
                let device = device.unwrap_or(candle_core::Device::Cpu);
                return Ok(Self {
                    weight: Weight::Quantized(quantized_parts(tensors, &device)?),
                    bias,
                });
            }
        }
        let load = |out: usize, vb: &VarBuilder| match format {
            // Straight from the file's bf16, never through an f32 copy.
            WeightFormat::PackedBf16 => {
                vb.get_with_hints_dtype((out, in_dim), "weight", Default::default(), DType::BF16)
            }
            WeightFormat::Dense | WeightFormat::Quantized(_) => vb.get((out, in_dim), "weight"),
        };
        let weights = parts
            .iter()
            .map(|(out, vb)| load(*out, vb))
            .collect::<Result<Vec<_>>>()?;
        let weight = if weights.len() == 1 {
            weights[0].clone()
        } else {
            Tensor::cat(&weights, 0)?
        };
        Self::from_weight(&weight, bias, format)
    }

    /// The outputs of a stacked layer, `sizes` wide each, along the last dimension.
    pub fn split(y: &Tensor, sizes: &[usize]) -> Result<Vec<Tensor>> {
        let last = y.rank() - 1;
        let mut start = 0;
        sizes
            .iter()
            .map(|&n| {
                let part = y.narrow(last, start, n);
                start += n;
                part
            })
            .collect()
    }
}

/// `x` (`[rows, k]`, f32) times the parts' `Wᵀ`, side by side; `tiled` says which parts take
/// the tiled kernel (CPU only).
fn quantized_product(
    parts: &[QuantPart],
    x: &Tensor,
    route: impl Fn(&QuantPart) -> Kernel,
) -> Result<Tensor> {
    if parts.iter().all(|p| route(p) == Kernel::Candle) {
        // candle's kernels only (any device): their outputs as they come, no copy for one part.
        let mut ys = parts
            .iter()
            .map(|p| p.matmul.forward(x))
            .collect::<Result<Vec<_>>>()?;
        return match ys.len() {
            1 => Ok(ys.remove(0)),
            _ => Tensor::cat(&ys, 1),
        };
    }
    let rows = x.dim(0)?;
    let n: usize = parts.iter().map(|p| p.width).sum();
    let mut y = vec![0f32; rows * n];
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let mut col = 0;
    for part in parts {
        part.forward_into(x, &xs, route(part), &mut y, n, col)?;
        col += part.width;
    }
    Tensor::from_vec(y, (rows, n), x.device())
}

/// Stacked quantized parts: consecutive parts of one type become one tensor (rows are whole
/// blocks, so stacking is byte concatenation), each run one `QMatMul` on `device`.
fn quantized_parts(tensors: Vec<QTensor>, device: &candle_core::Device) -> Result<Vec<QuantPart>> {
    // Runs of consecutive parts of one type and width.
    let mut runs: Vec<Vec<QTensor>> = Vec::new();
    for t in tensors {
        match runs.last_mut() {
            Some(run)
                if run[0].dtype() == t.dtype()
                    && run[0].shape().dims2()?.1 == t.shape().dims2()?.1 =>
            {
                run.push(t)
            }
            _ => runs.push(vec![t]),
        }
    }
    runs.into_iter()
        .map(|mut run| {
            let tensor = match (run.len(), device.is_cpu()) {
                // A part alone is kept as read: copying it would briefly double the largest
                // tensors (the LM head), which is the load's peak memory.
                (1, true) => run.pop().map(Arc::new),
                _ => None,
            };
            let tensor = match tensor {
                Some(t) => t,
                None => {
                    let (dtype, cols) = (run[0].dtype(), run[0].shape().dims2()?.1);
                    let size: usize = run.iter().map(QTensor::storage_size_in_bytes).sum();
                    let mut bytes = Vec::with_capacity(size);
                    let mut rows = 0;
                    for t in &run {
                        bytes.extend_from_slice(&t.data()?);
                        rows += t.shape().dims2()?.0;
                    }
                    drop(run);
                    let stacked = qtensor_from_ggml(dtype, &bytes, vec![rows, cols], device)?;
                    drop(bytes);
                    // The parts and the staging copy leave holes in the heap that later, other-
                    // sized tensors fill only in part; handed back now, they never add up to a
                    // load-time peak (the staging copies of every layer's q/k/v and gate/up
                    // measured ~110 MB above the loaded model's resident size on a 0.8B GGUF).
                    crate::allocator::return_freed();
                    Arc::new(stacked)
                }
            };
            Ok(QuantPart {
                matmul: QMatMul::from_arc(tensor.clone())?,
                width: tensor.shape().dims2()?.0,
                tensor,
            })
        })
        .collect()
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let k = dims[dims.len() - 1];
        let rows = x.elem_count() / k.max(1);
        let x_dtype = x.dtype();
        let (y, out) = match &self.weight {
            Weight::Transposed(w) => (x.reshape((rows, k))?.matmul(w)?, w.dim(1)?),
            Weight::Packed(p) => {
                let input: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let n = p.out_features();
                (
                    Tensor::from_vec(p.matmul(&input, rows), (rows, n), x.device())?
                        .to_dtype(x.dtype())?,
                    n,
                )
            }
            Weight::Quantized(parts) => {
                let x = x.reshape((rows, k))?.to_dtype(DType::F32)?;
                let cpu = x.device().is_cpu();
                let y = quantized_product(parts, &x, |p| match cpu {
                    true => quant_kernel::kernel(rows, p.tensor.dtype()),
                    false => Kernel::Candle,
                })?;
                (y.to_dtype(x_dtype)?, parts.iter().map(|p| p.width).sum())
            }
        };
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = out;
        }
        let y = y.reshape(out_dims)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// The token embedding table, kept in the weight format's dtype (bf16 when packed, which halves
/// the largest table of the model) and looked up into the activation dtype. A file's quantized
/// table stays quantized: its looked-up rows are decoded (an f32 copy of a 150k-token table
/// would take more memory than a whole Q8_0 0.6B model), and a tied LM head shares it.
#[derive(Debug, Clone)]
pub struct TokenEmbedding {
    table: Table,
    activations: DType,
    device: candle_core::Device,
}

#[derive(Debug, Clone)]
enum Table {
    Dense(Tensor),
    /// On the CPU, `[rows, dim]`.
    Quantized(Arc<QTensor>),
}

impl TokenEmbedding {
    pub fn new(rows: usize, dim: usize, vb: VarBuilder, format: &WeightFormat) -> Result<Self> {
        let activations = vb.dtype();
        let device = vb.device().clone();
        let name = format!("{}.weight", vb.prefix());
        let table = match format {
            WeightFormat::Quantized(source) if source.is_quantized(&name) => {
                Table::Quantized(Arc::new(source.quantized(&name, (rows, dim))?))
            }
            WeightFormat::PackedBf16 => Table::Dense(vb.get_with_hints_dtype(
                (rows, dim),
                "weight",
                Default::default(),
                DType::BF16,
            )?),
            WeightFormat::Dense | WeightFormat::Quantized(_) => {
                Table::Dense(vb.get((rows, dim), "weight")?)
            }
        };
        Ok(Self {
            table,
            activations,
            device,
        })
    }

    /// The table as an LM head (tied embeddings); a quantized table stays quantized and is
    /// shared, not copied, on the CPU.
    pub fn as_head(&self, format: &WeightFormat) -> Result<Linear> {
        match &self.table {
            Table::Quantized(q) if self.device.is_cpu() => Ok(Linear {
                weight: Weight::Quantized(vec![QuantPart {
                    matmul: QMatMul::from_arc(q.clone())?,
                    width: q.shape().dims2()?.0,
                    tensor: q.clone(),
                }]),
                bias: None,
            }),
            Table::Quantized(q) => Ok(Linear {
                weight: Weight::Quantized(quantized_parts(
                    vec![qtensor_from_ggml(
                        q.dtype(),
                        &q.data()?,
                        q.shape().dims().to_vec(),
                        &self.device,
                    )?],
                    &self.device,
                )?),
                bias: None,
            }),
            Table::Dense(table) => Linear::from_weight(table, None, format),
        }
    }

    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let rows = match &self.table {
            Table::Dense(table) => table.index_select(&ids.flatten_all()?, 0)?,
            Table::Quantized(q) => q
                .embedding(&ids.flatten_all()?.to_device(&candle_core::Device::Cpu)?)?
                .to_device(&self.device)?,
        };
        rows.to_dtype(self.activations)?.reshape((b, t, ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_x_times_w_transposed_with_bias() -> anyhow::Result<()> {
        let w = Tensor::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &Device::Cpu)?;
        let b = Tensor::new(&[0.5f32, 0.0, -0.5], &Device::Cpu)?;
        let x = Tensor::new(&[[[1f32, 1.0], [0.0, 2.0]]], &Device::Cpu)?;
        let want = vec![vec![3.5, 7.0, 10.5], vec![4.5, 8.0, 11.5]];
        let lin = Linear::from_weight(&w, Some(b.clone()), &WeightFormat::Dense)?;
        assert_eq!(lin.forward(&x)?.squeeze(0)?.to_vec2::<f32>()?, want);
        if super::super::bf16_matmul::available() {
            // Small integers are exact in bf16.
            let lin = Linear::from_weight(&w, Some(b), &WeightFormat::PackedBf16)?;
            assert_eq!(lin.forward(&x)?.squeeze(0)?.to_vec2::<f32>()?, want);
        }
        Ok(())
    }

    /// Quantized products of every block type match the product with the dequantized weights
    /// up to the Q8 rounding of the activations; stacked parts of mixed types (as Q4_K_M files
    /// hold) come out side by side.
    #[test]
    fn quantized_products_match_their_dequantized_weights() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        // Every type through each kernel (AMX takes the Q8_0 parts where the CPU has it; the
        // other parts, and every part elsewhere, fall back to candle's `QMatMul`).
        for (rows, kernel) in [
            (5, Kernel::Candle),
            (3, Kernel::Dots),
            (6, Kernel::Dots),
            (9, Kernel::Tiled),
            (10, Kernel::Amx),
        ] {
            quantized_products_of(&Tensor::randn(0f32, 1.0, (rows, 512), &dev)?, kernel)?;
        }
        Ok(())
    }

    fn quantized_products_of(x: &Tensor, kernel: Kernel) -> anyhow::Result<()> {
        use candle_core::quantized::GgmlDType::*;
        let dev = Device::Cpu;
        let mut parts = Vec::new();
        let mut dense = Vec::new();
        for (i, ty) in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K]
            .into_iter()
            .enumerate()
        {
            let w = Tensor::randn(0f32, 1.0, (8 + i, 512), &dev)?;
            let q = QTensor::quantize(&w, ty)?;
            let deq = q.dequantize(&dev)?;
            let lin = Linear {
                weight: Weight::Quantized(quantized_parts(vec![q], &dev)?),
                bias: None,
            };
            let got = product(&lin, x, kernel)?;
            let want = x.matmul(&deq.t()?)?;
            let err = (&got - &want)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt()
                / want.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            assert!(err < 0.02, "{ty:?}: relative error {err}");
            parts.push(QTensor::quantize(&w, ty)?);
            dense.push(want);
        }
        let stacked = Linear {
            weight: Weight::Quantized(quantized_parts(parts, &dev)?),
            bias: None,
        };
        let got = product(&stacked, x, kernel)?;
        let want = Tensor::cat(&dense, 1)?;
        assert_eq!(got.dims(), want.dims());
        let err = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 0.05 * scale, "stacked: {err} of {scale}");
        Ok(())
    }

    /// A quantized layer's product with the kernel forced.
    fn product(lin: &Linear, x: &Tensor, kernel: Kernel) -> Result<Tensor> {
        match &lin.weight {
            Weight::Quantized(parts) => quantized_product(parts, x, |_| kernel),
            _ => unreachable!("a quantized layer"),
        }
    }
}
