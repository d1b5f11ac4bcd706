//! RMSNorm as LLaDA's `RMSLayerNorm` and Qwen2's `Qwen2RMSNorm` compute it: statistics in fp32,
//! the normalised value cast back to the input dtype, **then** multiplied by the weight
//! (`modeling_llada.py` `RMSLayerNorm`, HF transformers `modeling_qwen2.py` `Qwen2RMSNorm`).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() == DType::F32 {
            // In f32 the cast back is the identity, so candle's fused kernel computes the same.
            return candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32);
        }
        let x32 = x.to_dtype(DType::F32)?;
        let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x32.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.to_dtype(x.dtype())?.broadcast_mul(&self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    #[test]
    fn normalises_then_scales_in_both_paths() -> anyhow::Result<()> {
        let x = Tensor::new(&[[3f32, 4.0]], &Device::Cpu)?;
        // rms = sqrt((9 + 16) / 2)
        let rms = 12.5f32.sqrt();
        let want = [3.0 / rms, 8.0 / rms];
        // f32 takes the fused kernel, f64 the explicit reference order.
        for dtype in [DType::F32, DType::F64] {
            let w = Tensor::new(&[1f32, 2.0], &Device::Cpu)?;
            let vb = VarBuilder::from_tensors(
                HashMap::from([("weight".to_string(), w)]),
                dtype,
                &Device::Cpu,
            );
            let norm = RmsNorm::new(2, 0.0, vb)?;
            let got: Vec<f32> = norm
                .forward(&x.to_dtype(dtype)?)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            assert!(
                got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6),
                "{dtype:?}: {got:?}"
            );
        }
        Ok(())
    }
}
