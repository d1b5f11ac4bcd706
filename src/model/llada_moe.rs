//! LLaDA-MoE (inclusionAI/LLaDA-MoE-7B-A1B-Base and -Instruct): LLaDA's full-attention masked
//! diffusion on a mixture-of-experts body (`architectures: ["LLaDAMoEModelLM"]`; its config.json
//! says `model_type: "llada"`, the dense LLaDA's string, so the registry tells them apart by
//! `architectures`).
//!
//! Mirrors the authors' Hugging Face `modeling_lladamoe.py` (vendored in ZHZisZZ/dllm
//! `dllm/pipelines/llada/models/modeling_lladamoe.py`; inclusionAI/dInfer
//! `tools/modeling_fused_lladamoe.py` computes the same without a mask):
//! - pre-norm layers, RMSNorm with f32 statistics (`norm.rs`);
//! - separate `q_proj`/`k_proj`/`v_proj` (no bias), per-head RMSNorm on q and k (`q_norm`,
//!   `k_norm`, one `[head_dim]` weight shared by the heads) when `qk_layernorm`, before RoPE;
//! - rotate-half RoPE over `head_dim * partial_rotary_factor` dims, in the model dtype;
//! - bidirectional attention with no mask at all (LLaDA's `generate()` passes none);
//! - layers with `moe_layer_freq[i]` set (all of them in the real checkpoint) route through
//!   `mlp.gate` / `mlp.experts.{e}` with the softmax rule of `moe.rs`, plus an unweighted
//!   `shared_expert` on the layer when `shared_expert_intermediate_size` is set; the others have
//!   a dense SwiGLU `mlp` of `dense_intermediate_size`;
//! - final `model.norm`, untied `lm_head`; no logit shift.
//!
//! Reference: <https://huggingface.co/inclusionAI/LLaDA-MoE-7B-A1B-Instruct>.

use candle_core::Result;
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::attention::SelfAttention;
use super::layer::{FeedForward, Layer};
use super::linear::{TokenEmbedding, WeightFormat};
use super::mlp::SwiGlu;
use super::moe::{Moe, Routing};
use super::norm::RmsNorm;
use super::rotary::{RopeMath, RotaryEmbedding};
use super::stack::{lm_head, Stack};

/// config.json of a LLaDA-MoE checkpoint; field names are the HF keys (`LLaDAConfig` in the
/// authors' `configuration_lladamoe.py`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub hidden_size: usize,
    #[serde(default)]
    pub dense_intermediate_size: Option<usize>,
    pub expert_intermediate_size: usize,
    #[serde(default)]
    pub shared_expert_intermediate_size: Option<usize>,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub vocab_size: usize,
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    /// Per layer, 1 for a mixture-of-experts layer; absent means every layer.
    #[serde(default)]
    pub moe_layer_freq: Option<Vec<u8>>,
    #[serde(default)]
    pub moe_router_enable_expert_bias: bool,
    #[serde(default = "default_true")]
    pub qk_layernorm: bool,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_partial_rotary_factor")]
    pub partial_rotary_factor: f64,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub clip_qkv: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
}

fn default_true() -> bool {
    true
}
fn default_rms_norm_eps() -> f64 {
    1e-5
}
fn default_rope_theta() -> f64 {
    50_000.0
}
fn default_partial_rotary_factor() -> f64 {
    1.0
}
fn default_max_position_embeddings() -> usize {
    8192
}
fn default_hidden_act() -> String {
    "silu".into()
}

impl Config {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// The dimensions RoPE rotates: `int(head_dim * partial_rotary_factor)`.
    pub fn rope_dim(&self) -> usize {
        (self.head_dim() as f64 * self.partial_rotary_factor) as usize
    }

    fn is_moe(&self, layer: usize) -> bool {
        match &self.moe_layer_freq {
            Some(freq) => freq.get(layer).is_some_and(|&f| f != 0),
            None => true,
        }
    }

    /// Number of weights, every expert included.
    pub fn parameters(&self) -> usize {
        let (d, hd) = (self.hidden_size, self.head_dim());
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        let attn = 2 * d * h * hd + 2 * d * kv * hd + 2 * hd;
        let shared = self.shared_expert_intermediate_size.unwrap_or(0);
        let moe = 3 * d * (self.expert_intermediate_size * self.num_experts + shared)
            + self.num_experts * d;
        let dense = 3 * d * self.dense_intermediate_size.unwrap_or(0);
        let layers: usize = (0..self.num_hidden_layers)
            .map(|i| attn + 2 * d + if self.is_moe(i) { moe } else { dense })
            .sum();
        let heads = if self.tie_word_embeddings { 1 } else { 2 };
        heads * self.vocab_size * d + layers + d
    }

    /// Rejects settings this implementation does not compute, naming the config key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.hidden_act != "silu" {
            return Err(format!(
                "`hidden_act` = \"{}\" is not supported (LLaDA-MoE uses \"silu\")",
                self.hidden_act
            ));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err("`rope_scaling` is not supported".into());
        }
        if self.clip_qkv.is_some() {
            return Err("`clip_qkv` is not supported (the released checkpoints set null)".into());
        }
        if self.attention_bias {
            return Err("`attention_bias` = true is not supported".into());
        }
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        if h == 0 || kv == 0 || !h.is_multiple_of(kv) {
            return Err(format!(
                "num_attention_heads {h} is not a multiple of num_key_value_heads {kv}"
            ));
        }
        if !self.hidden_size.is_multiple_of(h) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {h}",
                self.hidden_size
            ));
        }
        let rope = self.rope_dim();
        if rope == 0 || !rope.is_multiple_of(2) || rope > self.head_dim() {
            return Err(format!(
                "partial_rotary_factor {} gives {rope} rotary dimensions of a {}-wide head; it must be even and at most the head",
                self.partial_rotary_factor,
                self.head_dim()
            ));
        }
        if self.num_experts_per_tok == 0 || self.num_experts_per_tok > self.num_experts {
            return Err(format!(
                "num_experts_per_tok {} must be between 1 and num_experts {}",
                self.num_experts_per_tok, self.num_experts
            ));
        }
        if let Some(freq) = &self.moe_layer_freq {
            if freq.len() != self.num_hidden_layers {
                return Err(format!(
                    "moe_layer_freq has {} entries for {} layers",
                    freq.len(),
                    self.num_hidden_layers
                ));
            }
            if self.dense_intermediate_size.is_none() && freq.contains(&0) {
                return Err(
                    "moe_layer_freq has a dense layer but dense_intermediate_size is missing"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// `mlp.gate`, `mlp.expert_bias` where the config enables it, `mlp.experts.{e}`, and the
/// layer's own `shared_expert` (under the layer, not `mlp`, in the authors' file).
fn experts(cfg: &Config, layer: &VarBuilder, format: &WeightFormat) -> Result<Moe> {
    let (d, e) = (cfg.hidden_size, cfg.num_experts);
    let mlp = layer.pp("mlp");
    let expert_bias = match cfg.moe_router_enable_expert_bias {
        true => Some(mlp.get(e, "expert_bias")?),
        false => None,
    };
    let shared = match cfg.shared_expert_intermediate_size {
        Some(width) if width > 0 => Some(SwiGlu::new(d, width, layer.pp("shared_expert"), format)?),
        _ => None,
    };
    let routing = Routing::Softmax {
        top_k: cfg.num_experts_per_tok,
    };
    let width = cfg.expert_intermediate_size;
    Moe::new(d, e, width, routing, expert_bias, shared, mlp, format)
}

/// One `model.layers.{i}`: `input_layernorm`, `self_attn.{q,k,v,o}_proj`,
/// `self_attn.{q,k}_norm`, `post_attention_layernorm`, and the experts or a dense `mlp`.
fn layer(cfg: &Config, i: usize, vb: VarBuilder, format: &WeightFormat) -> Result<Layer> {
    let (d, hd, h, kv) = (
        cfg.hidden_size,
        cfg.head_dim(),
        cfg.num_attention_heads,
        cfg.kv_heads(),
    );
    let qk_norm = cfg.qk_layernorm.then_some(cfg.rms_norm_eps);
    let attn = SelfAttention::hf(d, (h, kv, hd), false, qk_norm, vb.pp("self_attn"), format)?;
    let mlp = match (cfg.is_moe(i), cfg.dense_intermediate_size) {
        (false, Some(width)) => FeedForward::Dense(SwiGlu::new(d, width, vb.pp("mlp"), format)?),
        _ => FeedForward::Experts(experts(cfg, &vb, format)?),
    };
    Ok(Layer {
        attn_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
        attn,
        mlp_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
        mlp,
    })
}

/// The LLaDA-MoE network: ids in, final-norm hidden states or logits out (`Stack`).
#[derive(Debug, Clone)]
pub struct Model(Stack);

impl Model {
    pub fn new(cfg: &Config, vb: VarBuilder, format: &WeightFormat) -> Result<Self> {
        let body = vb.pp("model");
        let (d, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let embed = TokenEmbedding::new(vocab, d, body.pp("embed_tokens"), format)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| layer(cfg, i, body.pp("layers").pp(i), format))
            .collect::<Result<Vec<_>>>()?;
        let tied = cfg.tie_word_embeddings && !vb.contains_tensor("lm_head.weight");
        Ok(Self(Stack {
            head: lm_head(tied, &embed, (vocab, d), vb.pp("lm_head"), format)?,
            embed,
            layers,
            norm: RmsNorm::new(d, cfg.rms_norm_eps, body.pp("norm"))?,
            rope: RotaryEmbedding::new(cfg.rope_dim(), cfg.rope_theta, RopeMath::ModelDtype),
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
    use serde_json::json;

    fn config(extra: serde_json::Value) -> Config {
        let mut base = json!({
            "hidden_size": 16, "expert_intermediate_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 4, "vocab_size": 10, "num_experts": 4,
            "num_experts_per_tok": 2
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(base).expect("valid config")
    }

    #[test]
    fn config_checks_name_the_key() {
        assert!(config(json!({})).validate().is_ok());
        let err = config(json!({"num_experts_per_tok": 5})).validate();
        assert!(err.expect_err("top-k").contains("num_experts_per_tok"));
        let err = config(json!({"moe_layer_freq": [1, 0]})).validate();
        assert!(err.expect_err("dense").contains("dense_intermediate_size"));
        let err = config(json!({"clip_qkv": 8.0})).validate();
        assert!(err.expect_err("clip").contains("clip_qkv"));
    }

    #[test]
    fn every_layer_is_moe_unless_moe_layer_freq_says_otherwise() {
        let all = config(json!({}));
        assert!(all.is_moe(0) && all.is_moe(1));
        let mixed = config(json!({"moe_layer_freq": [0, 1], "dense_intermediate_size": 32}));
        assert!(!mixed.is_moe(0) && mixed.is_moe(1));
        // Two untied 10x16 tables, per layer 4 projections of 16x16 and two q/k norms of 4,
        // two layer norms, 4 experts of 3x16x8 with a 4x16 router (or a 3x16x32 dense MLP).
        let attn = 4 * 16 * 16 + 2 * 4 + 2 * 16;
        let moe = 4 * 3 * 16 * 8 + 4 * 16;
        assert_eq!(all.parameters(), 2 * 160 + 2 * (attn + moe) + 16);
        assert_eq!(
            mixed.parameters(),
            2 * 160 + 2 * attn + 3 * 16 * 32 + moe + 16
        );
    }
}
