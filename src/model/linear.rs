//! Linear layers and the token embedding, with weights stored the way the matmul reads fastest.
//!
//! Checkpoints store `W` as `[out, in]` and compute `y = x Wᵀ`.
//! - [`WeightFormat::Dense`]: on the CPU the weight is transposed once at load time. candle's
//!   `Linear` multiplies by the transposed *view*, and the gemm kernels then read the weight with
//!   a stride at about 60% of the speed they reach on a contiguous `[in, out]` matrix (60 vs 90
//!   GFLOP/s per core at 160×1536×4096 on this project's machine). GPUs (cuBLAS) take the view.
//! - [`WeightFormat::PackedBf16`]: bf16 weights packed for the AVX512-BF16 kernel
//!   (`bf16_matmul.rs`); activations stay f32.

use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::bf16_matmul::PackedBf16;

/// How matmul weights are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// A tensor of the model's dtype.
    Dense,
    /// bf16, packed for dcoder's CPU kernel (f32 activations).
    PackedBf16,
}

#[derive(Debug, Clone)]
enum Weight {
    /// `Wᵀ`: `[in, out]`, contiguous on the CPU.
    Transposed(Tensor),
    Packed(Arc<PackedBf16>),
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
        format: WeightFormat,
    ) -> Result<Self> {
        let weight = match format {
            WeightFormat::PackedBf16 => {
                let (out, inp) = weight.dims2()?;
                Weight::Packed(Arc::new(PackedBf16::pack(&bf16_bits(weight)?, out, inp)))
            }
            WeightFormat::Dense if weight.device().is_cpu() => {
                Weight::Transposed(weight.t()?.contiguous()?)
            }
            WeightFormat::Dense => Weight::Transposed(weight.t()?),
        };
        Ok(Self { weight, bias })
    }

    /// Loads `{vb}.weight` (and `{vb}.bias` when `bias`).
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        vb: VarBuilder,
        format: WeightFormat,
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
        format: WeightFormat,
    ) -> Result<Self> {
        let load = |out: usize, vb: &VarBuilder| match format {
            // Straight from the file's bf16, never through an f32 copy.
            WeightFormat::PackedBf16 => {
                vb.get_with_hints_dtype((out, in_dim), "weight", Default::default(), DType::BF16)
            }
            WeightFormat::Dense => vb.get((out, in_dim), "weight"),
        };
        let weights = parts
            .iter()
            .map(|(out, vb)| load(*out, vb))
            .collect::<Result<Vec<_>>>()?;
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

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let k = dims[dims.len() - 1];
        let rows = x.elem_count() / k.max(1);
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
/// the largest table of the model) and looked up into the activation dtype.
#[derive(Debug, Clone)]
pub struct TokenEmbedding {
    table: Tensor,
    activations: DType,
}

impl TokenEmbedding {
    pub fn new(rows: usize, dim: usize, vb: VarBuilder, format: WeightFormat) -> Result<Self> {
        let activations = vb.dtype();
        let table = match format {
            WeightFormat::PackedBf16 => {
                vb.get_with_hints_dtype((rows, dim), "weight", Default::default(), DType::BF16)?
            }
            WeightFormat::Dense => vb.get((rows, dim), "weight")?,
        };
        Ok(Self { table, activations })
    }

    /// The table as an LM head (tied embeddings).
    pub fn as_head(&self, format: WeightFormat) -> Result<Linear> {
        Linear::from_weight(&self.table, None, format)
    }

    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let rows = self.table.index_select(&ids.flatten_all()?, 0)?;
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
        let lin = Linear::from_weight(&w, Some(b.clone()), WeightFormat::Dense)?;
        assert_eq!(lin.forward(&x)?.squeeze(0)?.to_vec2::<f32>()?, want);
        if super::super::bf16_matmul::available() {
            // Small integers are exact in bf16.
            let lin = Linear::from_weight(&w, Some(b), WeightFormat::PackedBf16)?;
            assert_eq!(lin.forward(&x)?.squeeze(0)?.to_vec2::<f32>()?, want);
        }
        Ok(())
    }
}
