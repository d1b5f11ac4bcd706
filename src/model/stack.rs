//! The network every model file assembles: the token embedding, the pre-norm layers, the final
//! norm, the LM head and the rotary tables. A model file names its tensors and builds its
//! layers; the forward pass is this one.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::denoiser::Pass;
use super::kv_cache::LayerCache;
use super::layer::{run_layers, Layer};
use super::linear::{Linear, TokenEmbedding, WeightFormat};
use super::norm::RmsNorm;
use super::rotary::RotaryEmbedding;

/// One layer's routing: per position, the chosen experts (best first) and their weights.
#[cfg(test)]
pub type LayerRoutes = Vec<Vec<(usize, f32)>>;

/// Ids in, final-norm hidden states or logits out.
#[derive(Debug, Clone)]
pub struct Stack {
    pub embed: TokenEmbedding,
    pub layers: Vec<Layer>,
    pub norm: RmsNorm,
    pub head: Linear,
    pub rope: RotaryEmbedding,
}

/// The LM head `[vocab, hidden]` under `vb`, or the embedding's rows when `tied`.
pub fn lm_head(
    tied: bool,
    embed: &TokenEmbedding,
    (vocab, hidden): (usize, usize),
    vb: VarBuilder,
    format: &WeightFormat,
) -> Result<Linear> {
    match tied {
        true => embed.as_head(format),
        false => Linear::new(hidden, vocab, false, vb, format),
    }
}

impl Stack {
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Final-norm hidden states `[batch, n, hidden]` of a pass.
    pub fn hidden(&self, pass: &Pass, cache: &mut [LayerCache]) -> Result<Tensor> {
        let x = self.embed.forward(pass.ids)?;
        run_layers(&self.layers, &self.rope, &self.norm, pass, x, cache)
    }

    /// LM-head logits for hidden states `[batch, rows, hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        hidden.apply(&self.head)
    }

    /// Each layer's routing of an uncached `pass`: per position the chosen experts (best first)
    /// with their weights; `None` for a dense layer. The forward checks compare it with the
    /// reference's router choices.
    #[cfg(test)]
    pub fn routes(&self, pass: &Pass) -> Result<Vec<Option<LayerRoutes>>> {
        use super::attention::LayerInput;
        use super::layer::FeedForward;
        let input = LayerInput::new(&self.rope, pass)?;
        let mut x = self.embed.forward(pass.ids)?;
        let mut out = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let mut cache = LayerCache::default();
            let a = layer
                .attn
                .forward(&x.apply(&layer.attn_norm)?, &input, &mut cache)?;
            let h = (&x + a)?;
            let m = h.apply(&layer.mlp_norm)?;
            out.push(match &layer.mlp {
                FeedForward::Experts(moe) => {
                    let (b, t, d) = m.dims3()?;
                    Some(moe.route(&m.reshape((b * t, d))?)?)
                }
                FeedForward::Dense(_) => None,
            });
            x = (&h + layer.mlp.forward(&m)?)?;
        }
        Ok(out)
    }
}
