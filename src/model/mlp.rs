//! The SwiGLU feed-forward network of LLaMA-family models: `down(silu(gate(x)) * up(x))`, with
//! gate and up stacked into one product. Dense layers and every expert of a mixture use it.

use candle_core::{Result, Tensor};

use super::linear::Linear;

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
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = Linear::split(&x.apply(&self.gate_up)?, &[self.hidden, self.hidden])?;
        (gate_up[0].silu()? * &gate_up[1])?.apply(&self.down)
    }
}
