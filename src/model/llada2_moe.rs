//! LLaDA2.x (inclusionAI/LLaDA2.0-mini, LLaDA2.1-mini, the flash models): a mixture-of-experts
//! transformer trained for block diffusion (`model_type: llada2_moe`, `LLaDA2MoeModelLM`).
//!
//! Mirrors the authors' Hugging Face `modeling_llada2_moe.py` (vendored verbatim in
//! ZHZisZZ/dllm `dllm/pipelines/llada2/models/` and `dllm/pipelines/llada21/models/`):
//! - pre-norm layers; RMSNorm with f32 statistics (`norm.rs`);
//! - fused `query_key_value` (all q heads, then k, then v), grouped-query attention, per-head
//!   RMSNorm on q and k (`query_layernorm`, `key_layernorm`) before RoPE, output `dense`;
//! - partial rotary: rotate-half RoPE on the first `head_dim * partial_rotary_factor` dims;
//! - layers below `first_k_dense_replace` have a dense SwiGLU MLP, the others the routed and
//!   shared experts of `moe.rs`;
//! - final `model.norm`, untied `lm_head`.
//!
//! Attention is whatever bias the sampler passes: block-causal for LLaDA2's `generate()`.
//! References: <https://huggingface.co/inclusionAI/LLaDA2.0-mini>,
//! <https://github.com/inclusionAI/dInfer>, <https://github.com/ZHZisZZ/dllm>.

use candle_core::Result;
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::attention::SelfAttention;
use super::layer::{FeedForward, Layer};
use super::linear::{Linear, TokenEmbedding, WeightFormat};
use super::mlp::SwiGlu;
use super::moe::{Moe, Routing};
use super::norm::RmsNorm;
use super::rotary::{RopeMath, RotaryEmbedding};
use super::stack::{lm_head, Stack};

/// config.json of a LLaDA2 checkpoint; field names are the HF keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub moe_intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub num_hidden_layers: usize,
    pub vocab_size: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_partial_rotary_factor")]
    pub partial_rotary_factor: f64,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub first_k_dense_replace: usize,
    #[serde(default)]
    pub num_experts: Option<usize>,
    #[serde(default = "default_one")]
    pub num_experts_per_tok: usize,
    #[serde(default = "default_one")]
    pub n_group: usize,
    #[serde(default = "default_one")]
    pub topk_group: usize,
    #[serde(default)]
    pub num_shared_experts: Option<usize>,
    #[serde(default = "default_scaling")]
    pub routed_scaling_factor: f64,
    #[serde(default = "default_score_function")]
    pub score_function: String,
    #[serde(default = "default_true")]
    pub use_qk_norm: bool,
    #[serde(default)]
    pub use_qkv_bias: bool,
    #[serde(default)]
    pub use_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    600_000.0
}
fn default_partial_rotary_factor() -> f64 {
    1.0
}
fn default_max_position_embeddings() -> usize {
    32_768
}
fn default_one() -> usize {
    1
}
fn default_scaling() -> f64 {
    1.0
}
fn default_score_function() -> String {
    "sigmoid".into()
}
fn default_hidden_act() -> String {
    "silu".into()
}
fn default_true() -> bool {
    true
}

impl Config {
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The dimensions RoPE rotates: `int(head_dim * partial_rotary_factor)`.
    pub fn rope_dim(&self) -> usize {
        (self.head_dim() as f64 * self.partial_rotary_factor) as usize
    }

    fn is_moe(&self, layer: usize) -> bool {
        self.num_experts.is_some() && layer >= self.first_k_dense_replace
    }

    /// Number of weights, every expert included.
    pub fn parameters(&self) -> usize {
        let (d, hd) = (self.hidden_size, self.head_dim());
        let (h, kv) = (self.num_attention_heads, self.num_key_value_heads);
        let attn = d * (h + 2 * kv) * hd + h * hd * d + 2 * hd;
        let dense = 3 * d * self.intermediate_size;
        let experts = self.num_experts.unwrap_or(0);
        let shared = self.num_shared_experts.unwrap_or(0);
        let moe = 3 * d * self.moe_intermediate_size * (experts + shared) + experts * (d + 1);
        let layers: usize = (0..self.num_hidden_layers)
            .map(|i| attn + 2 * d + if self.is_moe(i) { moe } else { dense })
            .sum();
        2 * self.vocab_size * d + layers + d
    }

    /// Rejects settings this implementation does not compute, naming the config key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.score_function != "sigmoid" {
            return Err(format!(
                "`score_function` = \"{}\" is not supported (LLaDA2 uses \"sigmoid\")",
                self.score_function
            ));
        }
        if self.hidden_act != "silu" {
            return Err(format!(
                "`hidden_act` = \"{}\" is not supported (LLaDA2 uses \"silu\")",
                self.hidden_act
            ));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err("`rope_scaling` is not supported".into());
        }
        let (h, kv) = (self.num_attention_heads, self.num_key_value_heads);
        if h == 0 || kv == 0 || !h.is_multiple_of(kv) {
            return Err(format!(
                "num_attention_heads {h} is not a multiple of num_key_value_heads {kv}"
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
        if let Some(e) = self.num_experts {
            let groups = self.n_group.max(1);
            if e == 0 || !e.is_multiple_of(groups) {
                return Err(format!(
                    "num_experts {e} is not a multiple of n_group {groups}"
                ));
            }
            if self.topk_group == 0 || self.topk_group > groups {
                return Err(format!(
                    "topk_group {} must be between 1 and n_group {groups}",
                    self.topk_group
                ));
            }
            let reachable = self.topk_group * (e / groups);
            if self.num_experts_per_tok == 0 || self.num_experts_per_tok > reachable {
                return Err(format!(
                    "num_experts_per_tok {} must be between 1 and the {reachable} experts of topk_group groups",
                    self.num_experts_per_tok
                ));
            }
        }
        Ok(())
    }
}

/// `mlp.gate` (router weight and `expert_bias`), `mlp.experts.{e}`, `mlp.shared_experts`.
fn experts(cfg: &Config, experts: usize, vb: VarBuilder, format: &WeightFormat) -> Result<Moe> {
    let d = cfg.hidden_size;
    let gate = vb.pp("gate");
    let expert_bias = match gate.contains_tensor("expert_bias") {
        true => Some(gate.get(experts, "expert_bias")?),
        false => None,
    };
    let shared = match cfg.num_shared_experts {
        Some(n) if n > 0 => Some(SwiGlu::new(
            d,
            cfg.moe_intermediate_size * n,
            vb.pp("shared_experts"),
            format,
        )?),
        _ => None,
    };
    let routing = Routing::GroupedSigmoid {
        top_k: cfg.num_experts_per_tok,
        n_group: cfg.n_group.max(1),
        topk_group: cfg.topk_group,
        routed_scaling_factor: cfg.routed_scaling_factor,
    };
    let width = cfg.moe_intermediate_size;
    Moe::new(d, experts, width, routing, expert_bias, shared, vb, format)
}

/// One `model.layers.{i}`.
fn layer(cfg: &Config, i: usize, vb: VarBuilder, format: &WeightFormat) -> Result<Layer> {
    let (d, hd, h, kv) = (
        cfg.hidden_size,
        cfg.head_dim(),
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
    );
    let attn = vb.pp("attention");
    let qk_norm = match cfg.use_qk_norm {
        true => Some((
            RmsNorm::new(hd, cfg.rms_norm_eps, attn.pp("query_layernorm"))?,
            RmsNorm::new(hd, cfg.rms_norm_eps, attn.pp("key_layernorm"))?,
        )),
        false => None,
    };
    let mlp = match cfg.num_experts {
        Some(e) if cfg.is_moe(i) => FeedForward::Experts(experts(cfg, e, vb.pp("mlp"), format)?),
        _ => FeedForward::Dense(SwiGlu::new(d, cfg.intermediate_size, vb.pp("mlp"), format)?),
    };
    Ok(Layer {
        attn_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
        attn: SelfAttention {
            qkv: Linear::new(
                d,
                (h + 2 * kv) * hd,
                cfg.use_qkv_bias,
                attn.pp("query_key_value"),
                format,
            )?,
            out: Linear::new(h * hd, d, cfg.use_bias, attn.pp("dense"), format)?,
            qk_norm,
            heads: h,
            kv_heads: kv,
            head_dim: hd,
        },
        mlp_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
        mlp,
    })
}

/// The LLaDA2 network: ids in, final-norm hidden states or logits out (`Stack`).
#[derive(Debug, Clone)]
pub struct Model(Stack);

impl Model {
    pub fn new(cfg: &Config, vb: VarBuilder, format: &WeightFormat) -> Result<Self> {
        let body = vb.pp("model");
        let (d, vocab) = (cfg.hidden_size, cfg.vocab_size);
        let embed = TokenEmbedding::new(vocab, d, body.pp("word_embeddings"), format)?;
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
