//! Rotary position embedding with the half rotation of GPT-NeoX / HF Llama: the last dimension
//! splits into two halves, `rotate_half(x) = cat(-x2, x1)`, `x' = x cos + rotate_half(x) sin`.
//! Not the interleaved-pairs variant (LLaDA's `modeling_llada.py` `RotaryEmbedding.rotate_half`).
//!
//! `inv_freq = 1 / theta^(arange(0, d, 2) / d)` and the angle tables are computed in f32, as
//! both references do. Where the rotation runs is the architecture's choice ([`RopeMath`]).
//! Partial rotary (LLaDA2's `partial_rotary_factor`, HF `apply_rotary_pos_emb`): a table built
//! for `d` smaller than the head rotates the first `d` dimensions and passes the rest through.

use candle_core::{DType, Device, Result, Tensor, D};

/// Where the rotation is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeMath {
    /// q and k upcast to f32, rotated, cast back (LLaDA `rope_full_precision`).
    F32,
    /// cos/sin cast to the model dtype, rotation in the model dtype (HF Qwen2 / Dream).
    ModelDtype,
}

#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f32>,
    math: RopeMath,
}

impl RotaryEmbedding {
    pub fn new(head_dim: usize, theta: f64, math: RopeMath) -> Self {
        let theta = theta as f32;
        let inv_freq = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / theta.powf(i as f32 / head_dim as f32))
            .collect();
        Self { inv_freq, math }
    }

    /// cos and sin tables (`[positions, head_dim / 2]`, f32) for absolute positions `positions`.
    pub fn tables(&self, positions: &[u32], device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let n = positions.len();
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        for &p in positions {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (n, half), device)?,
            Tensor::from_vec(sin, (n, half), device)?,
        ))
    }

    /// Rotates `x` (`[batch, heads, seq, head_dim]`) with tables from [`Self::tables`]; a head
    /// wider than the table keeps its last dimensions as they are.
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (width, rotated) = (x.dim(D::Minus1)?, 2 * self.inv_freq.len());
        if width > rotated {
            let head = self.rotate(&x.narrow(D::Minus1, 0, rotated)?, cos, sin)?;
            let rest = x.narrow(D::Minus1, rotated, width - rotated)?;
            return Tensor::cat(&[&head, &rest.contiguous()?], D::Minus1);
        }
        self.rotate(x, cos, sin)
    }

    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        match self.math {
            RopeMath::F32 if dtype != DType::F32 => {
                candle_nn::rotary_emb::rope(&x.to_dtype(DType::F32)?.contiguous()?, cos, sin)?
                    .to_dtype(dtype)
            }
            RopeMath::F32 => candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin),
            RopeMath::ModelDtype => candle_nn::rotary_emb::rope(
                &x.contiguous()?,
                &cos.to_dtype(dtype)?,
                &sin.to_dtype(dtype)?,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_halves_by_position_angle() -> anyhow::Result<()> {
        let rope = RotaryEmbedding::new(4, 10000.0, RopeMath::F32);
        let (cos, sin) = rope.tables(&[0, 1], &Device::Cpu)?;
        // x = [1, 2, 3, 4] at positions 0 and 1; inv_freq = [1, 0.01]
        let x = Tensor::new(&[1f32, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0], &Device::Cpu)?
            .reshape((1, 1, 2, 4))?;
        let y: Vec<f32> = rope.apply(&x, &cos, &sin)?.flatten_all()?.to_vec1()?;
        assert_eq!(&y[..4], &[1.0, 2.0, 3.0, 4.0], "position 0 is the identity");
        let (c0, s0, c1, s1) = (1f32.cos(), 1f32.sin(), 0.01f32.cos(), 0.01f32.sin());
        let want = [
            1.0 * c0 - 3.0 * s0,
            2.0 * c1 - 4.0 * s1,
            3.0 * c0 + 1.0 * s0,
            4.0 * c1 + 2.0 * s1,
        ];
        assert!(
            y[4..].iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6),
            "{y:?}"
        );
        Ok(())
    }
}
