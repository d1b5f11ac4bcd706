//! The SwiGLU feed-forward network of LLaMA-family models: `down(silu(gate(x)) * up(x))`, with
//! gate and up stacked into one product. Dense layers and every expert of a mixture use it.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::linear::{Linear, WeightFormat};

/// The SwiGLU feed-forward sub-layer.
#[derive(Debug, Clone)]
pub struct SwiGlu {
    /// The gate and up projections stacked into one product.
    pub gate_up: Linear,
    pub down: Linear,
    /// Width of each of gate and up.
    pub hidden: usize,
}

impl SwiGlu {
    /// `gate_proj`, `up_proj` (`[width, d]`) and `down_proj` (`[d, width]`) under `vb`.
    pub fn new(d: usize, width: usize, vb: VarBuilder, format: &WeightFormat) -> Result<Self> {
        Ok(SwiGlu {
            gate_up: Linear::stacked(
                d,
                &[(width, vb.pp("gate_proj")), (width, vb.pp("up_proj"))],
                false,
                format,
            )?,
            down: Linear::new(width, d, false, vb.pp("down_proj"), format)?,
            hidden: width,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = Linear::split(&x.apply(&self.gate_up)?, &[self.hidden, self.hidden])?;
        (gate_up[0].silu()? * &gate_up[1])?.apply(&self.down)
    }
}
