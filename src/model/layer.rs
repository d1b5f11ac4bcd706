//! The pre-norm transformer layer every network file builds: `x + attn(norm(x))`, then
//! `x + ffn(norm(x))` with the LLaMA/Qwen SwiGLU MLP `down(silu(gate(x)) * up(x))` or a
//! mixture of such experts (`moe.rs`), and the loop of layers from embeddings to the final
//! norm. Each model file names the tensors.

use candle_core::{Result, Tensor};

use super::attention::{LayerInput, SelfAttention};
use super::denoiser::Pass;
use super::kv_cache::LayerCache;
use super::mlp::SwiGlu;
use super::moe::Moe;
use super::norm::RmsNorm;
use super::rotary::RotaryEmbedding;

/// A layer's feed-forward sub-layer.
#[derive(Debug, Clone)]
pub enum FeedForward {
    Dense(SwiGlu),
    Experts(Moe),
}

impl FeedForward {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            FeedForward::Dense(mlp) => mlp.forward(x),
            FeedForward::Experts(moe) => x.apply(moe),
        }
    }
}

/// One pre-norm decoder layer.
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: RmsNorm,
    pub attn: SelfAttention,
    pub mlp_norm: RmsNorm,
    pub mlp: FeedForward,
}

impl Layer {
    pub fn forward(
        &self,
        x: &Tensor,
        input: &LayerInput,
        cache: &mut LayerCache,
    ) -> Result<Tensor> {
        let residual = x;
        let x = (residual
            + self
                .attn
                .forward(&x.apply(&self.attn_norm)?, input, cache)?)?;
        let y = self.mlp.forward(&x.apply(&self.mlp_norm)?)?;
        x + y
    }
}

/// Runs embeddings `x` of `pass` through `layers` (one cache per layer) and `final_norm`.
pub fn run_layers(
    layers: &[Layer],
    rope: &RotaryEmbedding,
    final_norm: &RmsNorm,
    pass: &Pass,
    mut x: Tensor,
    cache: &mut [LayerCache],
) -> Result<Tensor> {
    let input = LayerInput::new(rope, pass)?;
    for (layer, layer_cache) in layers.iter().zip(cache.iter_mut()) {
        x = layer.forward(&x, &input, layer_cache)?;
    }
    x.apply(final_norm)
}
