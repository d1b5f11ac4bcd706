//! The Qwen2 / Qwen3 transformer body with **bidirectional** attention, as diffusion models built
//! from those AR checkpoints use it: Dream, Dream-Coder and DiffuCoder (Qwen2, `model_type:
//! Dream`) and the Tiny-A2D block-diffusion models (`a2d-qwen3` / `a2d-qwen2`).
//!
//! Mirrors HF transformers' `modeling_qwen2.py` / `modeling_qwen3.py`, Dream's
//! `modeling_dream.py` (Dream-org/Dream-v0-Instruct-7B) and dllm's A2D Qwen models
//! (ZHZisZZ/dllm `dllm/pipelines/a2d/`) with the causal mask removed:
//! - q/k/v projections with biases where the checkpoint has them (Qwen2), none on `o_proj`;
//! - per-head RMSNorm on q and k before RoPE where the checkpoint has `q_norm`/`k_norm` (Qwen3);
//! - RoPE with the half rotation, cos/sin computed in f32 then cast to the model dtype;
//! - grouped-query attention; `head_dim` from config (Qwen3) or hidden / heads;
//! - MLP `down(silu(gate(x)) * up(x))`; final `model.norm`; `lm_head`, or the embedding when
//!   `tie_word_embeddings` and the file has no `lm_head.weight`.
//!
//! The logit shift of Dream (row i predicts position i + 1) is the sampler's business, not the
//! network's. References: <https://huggingface.co/Dream-org/Dream-v0-Instruct-7B>,
//! <https://github.com/DreamLM/Dream>, <https://github.com/ZHZisZZ/dllm>.

use candle_core::Result;
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::attention::SelfAttention;
use super::layer::{FeedForward, Layer};
use super::linear::{TokenEmbedding, WeightFormat};
use super::mlp::SwiGlu;
use super::norm::RmsNorm;
use super::rotary::{RopeMath, RotaryEmbedding};
use super::stack::{lm_head, Stack};

/// config.json of a Qwen2/Qwen3-bodied checkpoint; field names are the HF keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_max_position_embeddings() -> usize {
    32_768
}

impl Config {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Number of weights, assuming Qwen2's biases and an untied head where the config says so.
    pub fn parameters(&self) -> usize {
        let (d, hd, h, kv) = (
            self.hidden_size,
            self.head_dim(),
            self.num_attention_heads,
            self.kv_heads(),
        );
        let attn = d * h * hd * 2 + d * kv * hd * 2 + (h + 2 * kv) * hd;
        let block = attn + 3 * d * self.intermediate_size + 2 * d;
        let heads = if self.tie_word_embeddings { 1 } else { 2 };
        heads * self.vocab_size * d + self.num_hidden_layers * block + d
    }

    /// Rejects settings this implementation does not compute, naming the config key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let Some(act) = self.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(format!(
                "`hidden_act` = \"{act}\" is not supported (silu only)"
            ));
        }
        if self.use_sliding_window {
            return Err("`use_sliding_window` = true is not supported".into());
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err("`rope_scaling` is not supported".into());
        }
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        if h == 0 || kv == 0 || !h.is_multiple_of(kv) {
            return Err(format!(
                "num_attention_heads {h} is not a multiple of num_key_value_heads {kv}"
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(h) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {h}",
                self.hidden_size
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head dimension {} must be even for RoPE",
                self.head_dim()
            ));
        }
        Ok(())
    }
}

/// One `model.layers.{i}` of the checkpoint: `input_layernorm`, `self_attn.{q,k,v,o}_proj`
/// (q/k/v biases in Qwen2, `q_norm`/`k_norm` in Qwen3), `post_attention_layernorm`, and
/// `mlp.{gate,up,down}_proj`.
fn layer(cfg: &Config, vb: VarBuilder, format: &WeightFormat) -> Result<Layer> {
    let (d, hd, h, kv, m) = (
        cfg.hidden_size,
        cfg.head_dim(),
        cfg.num_attention_heads,
        cfg.kv_heads(),
        cfg.intermediate_size,
    );
    let attn = vb.pp("self_attn");
    let bias = attn.contains_tensor("q_proj.bias");
    let qk_norm = attn
        .contains_tensor("q_norm.weight")
        .then_some(cfg.rms_norm_eps);
    Ok(Layer {
        attn_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
        attn: SelfAttention::hf(d, (h, kv, hd), bias, qk_norm, attn, format)?,
        mlp_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
        mlp: FeedForward::Dense(SwiGlu::new(d, m, vb.pp("mlp"), format)?),
    })
}

/// The network: ids in, final-norm hidden states or logits out (`Stack`).
#[derive(Debug, Clone)]
pub struct Model(Stack);

impl Model {
    pub fn new(cfg: &Config, vb: VarBuilder, format: &WeightFormat) -> Result<Self> {
        let body = vb.pp("model");
        let (d, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let embed = TokenEmbedding::new(vocab, d, body.pp("embed_tokens"), format)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| layer(cfg, body.pp("layers").pp(i), format))
            .collect::<Result<Vec<_>>>()?;
        let tied = cfg.tie_word_embeddings && !vb.contains_tensor("lm_head.weight");
        Ok(Self(Stack {
            head: lm_head(tied, &embed, (vocab, d), vb.pp("lm_head"), format)?,
            embed,
            layers,
            norm: RmsNorm::new(d, cfg.rms_norm_eps, body.pp("norm"))?,
            rope: RotaryEmbedding::new(cfg.head_dim(), cfg.rope_theta, RopeMath::ModelDtype),
        }))
    }
}

impl std::ops::Deref for Model {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::denoiser::Pass;
    use crate::model::kv_cache::LayerCache;
    use candle_core::Tensor;
    use candle_core::{DType, Device};

    #[test]
    fn head_dim_defaults_to_hidden_over_heads_and_config_checks_name_keys() {
        let mut cfg: Config = serde_json::from_value(serde_json::json!({
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 10
        }))
        .expect("valid config");
        assert_eq!((cfg.head_dim(), cfg.kv_heads()), (4, 2));
        assert!(cfg.validate().is_ok());
        cfg.hidden_act = Some("gelu".into());
        assert!(cfg.validate().expect_err("gelu").contains("hidden_act"));
    }

    #[test]
    fn shapes_flow_from_ids_to_logits() -> anyhow::Result<()> {
        let cfg: Config = serde_json::from_value(serde_json::json!({
            "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2, "head_dim": 4,
            "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 11, "tie_word_embeddings": true
        }))?;
        let model = Model::new(
            &cfg,
            VarBuilder::zeros(DType::F32, &Device::Cpu),
            &WeightFormat::Dense,
        )?;
        let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?;
        let mut cache = vec![LayerCache::default(); model.layers()];
        let h = model.hidden(&Pass::full(&ids, &[0, 1, 2]), &mut cache)?;
        assert_eq!(h.dims(), &[1, 3, 8]);
        assert_eq!(model.logits(&h)?.dims(), &[1, 3, 11]);
        Ok(())
    }
}
