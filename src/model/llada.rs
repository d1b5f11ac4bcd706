//! LLaDA (GSAI-ML/LLaDA-8B-Instruct, LLaDA-1.5): a LLaMA-style transformer with OLMo checkpoint
//! names and **bidirectional** attention: every position sees every other, there is no causal
//! mask and no KV cache in the reference.
//!
//! Mirrors `LLaDALlamaBlock` / `LLaDAModel` of the HF modeling file `modeling_llada.py` (as
//! vendored in NVlabs/Fast-dLLM@24cc59e `llada/model/modeling_llada.py`):
//! - pre-norm blocks; RMSNorm with fp32 statistics (see `norm.rs`);
//! - RoPE with the half rotation, q and k rotated in fp32 (`rope_full_precision`);
//! - grouped-query attention when `n_kv_heads < n_heads`;
//! - MLP `ff_out(silu(ff_proj(x)) * up_proj(x))`: `ff_proj` is the gate;
//! - final `ln_f`, then the LM head `ff_out` (or the embedding when `weight_tying`).
//!
//! Logit row i predicts position i: LLaDA does not shift.
//!
//! References: <https://huggingface.co/GSAI-ML/LLaDA-8B-Instruct>,
//! <https://github.com/ML-GSAI/LLaDA>, <https://github.com/NVlabs/Fast-dLLM>.

use candle_core::Result;
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::attention::SelfAttention;
use super::layer::{FeedForward, Layer};
use super::linear::{Linear, TokenEmbedding, WeightFormat};
use super::mlp::SwiGlu;
use super::norm::RmsNorm;
use super::rotary::{RopeMath, RotaryEmbedding};
use super::stack::{lm_head, Stack};

/// config.json of a LLaDA checkpoint; field names are the HF keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub d_model: usize,
    pub n_heads: usize,
    #[serde(default)]
    pub n_kv_heads: Option<usize>,
    #[serde(default)]
    pub multi_query_attention: Option<bool>,
    pub n_layers: usize,
    #[serde(default)]
    pub mlp_hidden_size: Option<usize>,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: usize,
    pub vocab_size: usize,
    #[serde(default)]
    pub embedding_size: Option<usize>,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_max_sequence_length")]
    pub max_sequence_length: usize,
    #[serde(default)]
    pub weight_tying: bool,
    // Options the reference supports but no LLaDA checkpoint uses; `validate` rejects them
    // rather than computing something else.
    #[serde(default)]
    pub include_bias: bool,
    #[serde(default)]
    pub include_qkv_bias: bool,
    #[serde(default)]
    pub alibi: bool,
    #[serde(default = "default_true")]
    pub rope: bool,
    #[serde(default)]
    pub attention_layer_norm: bool,
    #[serde(default)]
    pub input_emb_norm: bool,
    #[serde(default)]
    pub scale_logits: bool,
    #[serde(default)]
    pub block_type: Option<String>,
    #[serde(default)]
    pub activation_type: Option<String>,
    #[serde(default)]
    pub layer_norm_type: Option<String>,
}

fn default_mlp_ratio() -> usize {
    4
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-5
}
fn default_max_sequence_length() -> usize {
    4096
}
fn default_true() -> bool {
    true
}

impl Config {
    /// Key/value heads: `n_kv_heads`, one for multi-query attention, else `n_heads`
    /// (`effective_n_kv_heads` in `configuration_llada.py`).
    pub fn kv_heads(&self) -> usize {
        match (self.multi_query_attention, self.n_kv_heads) {
            (Some(true), _) => 1,
            (_, Some(n)) => n,
            _ => self.n_heads,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    pub fn mlp_hidden(&self) -> usize {
        self.mlp_hidden_size
            .unwrap_or(self.mlp_ratio * self.d_model)
    }

    /// Rows of the embedding and of the LM head.
    pub fn embedding_rows(&self) -> usize {
        self.embedding_size.unwrap_or(self.vocab_size)
    }

    /// Number of weights, embedding and head included.
    pub fn parameters(&self) -> usize {
        let (d, hd) = (self.d_model, self.head_dim());
        let attn = d * self.n_heads * hd * 2 + d * self.kv_heads() * hd * 2;
        let block = attn + 3 * d * self.mlp_hidden() + 2 * d;
        let heads = if self.weight_tying { 1 } else { 2 };
        heads * self.embedding_rows() * d + self.n_layers * block + d
    }

    /// Rejects settings this implementation does not compute, naming the config key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let unsupported = [
            ("include_bias", self.include_bias),
            ("include_qkv_bias", self.include_qkv_bias),
            ("alibi", self.alibi),
            ("attention_layer_norm", self.attention_layer_norm),
            ("input_emb_norm", self.input_emb_norm),
            ("scale_logits", self.scale_logits),
            ("rope = false", !self.rope),
        ];
        if let Some((key, _)) = unsupported.iter().find(|(_, on)| *on) {
            return Err(format!(
                "`{key}` is not supported (no released LLaDA checkpoint uses it)"
            ));
        }
        let expect = |key: &str, got: &Option<String>, want: &str| match got {
            Some(v) if v != want => Err(format!(
                "`{key}` = \"{v}\" is not supported (LLaDA uses \"{want}\")"
            )),
            _ => Ok(()),
        };
        expect("block_type", &self.block_type, "llama")?;
        expect("activation_type", &self.activation_type, "silu")?;
        expect("layer_norm_type", &self.layer_norm_type, "rms")?;
        if self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return Err(format!(
                "d_model {} is not a multiple of n_heads {}",
                self.d_model, self.n_heads
            ));
        }
        if self.kv_heads() == 0 || !self.n_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "n_heads {} is not a multiple of n_kv_heads {}",
                self.n_heads,
                self.kv_heads()
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

/// One `blocks.{i}` of the checkpoint: `attn_norm`, `q_proj`/`k_proj`/`v_proj`/`attn_out`,
/// `ff_norm`, and the MLP `ff_out(silu(ff_proj(x)) * up_proj(x))` (`ff_proj` is the gate).
fn layer(cfg: &Config, vb: VarBuilder, format: &WeightFormat) -> Result<Layer> {
    let (d, hd, h) = (cfg.d_model, cfg.head_dim(), cfg.mlp_hidden());
    let kv = cfg.kv_heads() * hd;
    let parts = [
        (cfg.n_heads * hd, vb.pp("q_proj")),
        (kv, vb.pp("k_proj")),
        (kv, vb.pp("v_proj")),
    ];
    Ok(Layer {
        attn_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("attn_norm"))?,
        attn: SelfAttention {
            qkv: Linear::stacked(d, &parts, false, format)?,
            out: Linear::new(cfg.n_heads * hd, d, false, vb.pp("attn_out"), format)?,
            qk_norm: None,
            heads: cfg.n_heads,
            kv_heads: cfg.kv_heads(),
            head_dim: hd,
        },
        mlp_norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("ff_norm"))?,
        mlp: FeedForward::Dense(SwiGlu {
            gate_up: Linear::stacked(
                d,
                &[(h, vb.pp("ff_proj")), (h, vb.pp("up_proj"))],
                false,
                format,
            )?,
            down: Linear::new(h, d, false, vb.pp("ff_out"), format)?,
            hidden: h,
        }),
    })
}

/// The LLaDA network: ids in, final-norm hidden states or logits out (`Stack`). Without a
/// cache the reference places token `i` at position `i`, pads included (no position ids).
#[derive(Debug, Clone)]
pub struct Model(Stack);

impl Model {
    pub fn new(cfg: &Config, vb: VarBuilder, format: &WeightFormat) -> Result<Self> {
        let vb = vb.pp("model").pp("transformer");
        let (d, vocab) = (cfg.d_model, cfg.embedding_rows());
        let embed = TokenEmbedding::new(vocab, d, vb.pp("wte"), format)?;
        let layers = (0..cfg.n_layers)
            .map(|i| layer(cfg, vb.pp("blocks").pp(i), format))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self(Stack {
            head: lm_head(
                cfg.weight_tying,
                &embed,
                (vocab, d),
                vb.pp("ff_out"),
                format,
            )?,
            embed,
            layers,
            norm: RmsNorm::new(d, cfg.rms_norm_eps, vb.pp("ln_f"))?,
            rope: RotaryEmbedding::new(cfg.head_dim(), cfg.rope_theta, RopeMath::F32),
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

    fn tiny() -> Config {
        serde_json::from_value(serde_json::json!({
            "d_model": 8, "n_heads": 2, "n_kv_heads": 1, "n_layers": 2, "mlp_hidden_size": 12,
            "vocab_size": 11, "rope_theta": 10000.0, "rms_norm_eps": 1e-5
        }))
        .expect("valid tiny config")
    }

    #[test]
    fn shapes_flow_from_ids_to_logits() -> anyhow::Result<()> {
        let cfg = tiny();
        assert_eq!(
            (cfg.kv_heads(), cfg.head_dim(), cfg.mlp_hidden()),
            (1, 4, 12)
        );
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

    #[test]
    fn unsupported_options_are_named() {
        let mut cfg = tiny();
        cfg.include_bias = true;
        assert!(cfg
            .validate()
            .expect_err("must fail")
            .contains("include_bias"));
        let mut cfg = tiny();
        cfg.activation_type = Some("swiglu".into());
        assert!(cfg
            .validate()
            .expect_err("must fail")
            .contains("activation_type"));
        let mut cfg = tiny();
        cfg.n_kv_heads = Some(3);
        assert!(cfg.validate().is_err());
        assert!(tiny().validate().is_ok());
    }
}
