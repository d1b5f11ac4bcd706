//! A GGUF file's hyper-parameters as the config.json its network reads, per llama.cpp
//! architecture (`general.architecture`), with the keys `convert_hf_to_gguf.py` writes
//! (gguf-py `constants.py` `Keys.LLM` / `Keys.Attention` / `Keys.Rope`).
//!
//! - `llada`: the OLMo-named LLaDA config (`d_model`, `n_heads`, ...); the head size is
//!   `llada.rope.dimension_count`, which dcoder's LLaDA derives as `d_model / n_heads`.
//! - `dream`, `qwen2`, `qwen3`: the Qwen config; the head size is
//!   `{arch}.attention.key_length` where written (Qwen3), else hidden / heads.
//!
//! The vocabulary is the token-embedding's row count; the head is tied when the file has no
//! `output.weight`.

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::file::GgufFile;
use crate::model::Body;

/// The network body of a GGUF architecture, or `None` for one dcoder does not run.
pub fn body_of(arch: &str) -> Option<Body> {
    match arch {
        "llada" => Some(Body::Llada),
        "dream" | "qwen2" | "qwen3" => Some(Body::Qwen),
        "llada-moe" => Some(Body::LladaMoe),
        "llada2" => Some(Body::Llada2Moe),
        _ => None,
    }
}

/// The config.json equivalent of `file`'s metadata for `body`.
pub fn config_json(file: &GgufFile, arch: &str, body: Body) -> Result<Value> {
    let key = |k: &str| format!("{arch}.{k}");
    let int = |k: &str| -> Result<u64> { file.required_uint(&key(k)) };
    let shown = file.path.display();
    let Some((_, embd)) = file.tensor_info("token_embd.weight") else {
        bail!("{shown}: no token_embd.weight tensor");
    };
    let [vocab, hidden_in_file] = embd else {
        bail!("{shown}: token_embd.weight has shape {embd:?}, expected [vocab, hidden]");
    };
    let hidden = int("embedding_length")?;
    if *hidden_in_file as u64 != hidden {
        bail!("{shown}: token_embd.weight rows are {hidden_in_file} wide but {arch}.embedding_length is {hidden}");
    }
    let heads = int("attention.head_count")?;
    let kv_heads = file.uint(&key("attention.head_count_kv"))?.unwrap_or(heads);
    let layers = int("block_count")?;
    let ffn = int("feed_forward_length")?;
    let theta = file.float(&key("rope.freq_base"))?.unwrap_or(10_000.0);
    let eps = file
        .float(&key("attention.layer_norm_rms_epsilon"))?
        .unwrap_or(1e-6);
    let context = file.uint(&key("context_length"))?;
    let tied = file.tensor_info("output.weight").is_none();
    if let Some(kind) = file
        .metadata(&key("rope.scaling.type"))
        .and_then(|v| v.to_string().ok())
        .filter(|k| k.as_str() != "none")
    {
        bail!("{shown}: {arch}.rope.scaling.type = {kind} is not supported");
    }
    if heads == 0 {
        bail!("{shown}: {arch}.attention.head_count is 0");
    }
    Ok(match body {
        Body::Llada => {
            if let Some(rope) = file.uint(&key("rope.dimension_count"))? {
                if rope * heads != hidden {
                    bail!("{shown}: llada.rope.dimension_count {rope} is not embedding_length / head_count ({hidden} / {heads}); dcoder's LLaDA uses the whole head for RoPE");
                }
            }
            json!({
                "model_type": "llada",
                "d_model": hidden,
                "n_heads": heads,
                "n_kv_heads": kv_heads,
                "n_layers": layers,
                "mlp_hidden_size": ffn,
                "vocab_size": vocab,
                "embedding_size": vocab,
                "rope_theta": theta,
                "rms_norm_eps": eps,
                "max_sequence_length": context.unwrap_or(4096),
                "weight_tying": tied,
            })
        }
        Body::Qwen => json!({
            "hidden_size": hidden,
            "intermediate_size": ffn,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": file.uint(&key("attention.key_length"))?,
            "rope_theta": theta,
            "rms_norm_eps": eps,
            "vocab_size": vocab,
            "tie_word_embeddings": tied,
            "max_position_embeddings": context.unwrap_or(32_768),
        }),
        Body::LladaMoe | Body::Llada2Moe => {
            let hd = file
                .uint(&key("attention.key_length"))?
                .unwrap_or(hidden / heads);
            let moe = Moe::read(file, arch, layers as usize)?;
            let rope = file.uint(&key("rope.dimension_count"))?.unwrap_or(hd);
            let common = json!({
                "hidden_size": hidden,
                "num_hidden_layers": layers,
                "num_attention_heads": heads,
                "num_key_value_heads": kv_heads,
                "vocab_size": vocab,
                "rms_norm_eps": eps,
                "rope_theta": theta,
                "partial_rotary_factor": rope as f64 / hd as f64,
                "max_position_embeddings": context.unwrap_or(8192),
                "tie_word_embeddings": tied,
                "num_experts": moe.experts,
                "num_experts_per_tok": int("expert_used_count")?,
            });
            let own = match body {
                Body::LladaMoe => moe.llada_moe(file, arch, ffn)?,
                _ => moe.llada2(file, arch, ffn, hd)?,
            };
            let (Value::Object(mut all), Value::Object(own)) = (common, own) else {
                bail!("{shown}: internal: config is not an object");
            };
            all.extend(own);
            Value::Object(all)
        }
    })
}

/// What a mixture-of-experts file says of its experts, partly in keys and partly in which
/// tensors it has: MoE layers have a router (`ffn_gate_inp`), the others a dense MLP.
struct Moe {
    experts: u64,
    /// Per layer, 1 where it routes.
    layers: Vec<u8>,
    /// Width of one routed expert.
    width: u64,
    /// Width of the shared expert(s) together, where there are any.
    shared: Option<u64>,
    expert_bias: bool,
    qk_norm: bool,
}

impl Moe {
    fn read(file: &GgufFile, arch: &str, layers: usize) -> Result<Moe> {
        let shown = file.path.display();
        let has = |name: String| file.tensor_info(&name).is_some();
        let layer_kinds: Vec<u8> = (0..layers)
            .map(|i| u8::from(has(format!("blk.{i}.ffn_gate_inp.weight"))))
            .collect();
        let Some(first) = layer_kinds.iter().position(|&m| m == 1) else {
            bail!("{shown}: no layer has a router (blk.N.ffn_gate_inp.weight); not a mixture-of-experts file");
        };
        let experts = file.required_uint(&format!("{arch}.expert_count"))?;
        let stacked = file.tensor_info(&format!("blk.{first}.ffn_gate_exps.weight"));
        let width = match (file.uint(&format!("{arch}.expert_feed_forward_length"))?, stacked) {
            (Some(w), _) => w,
            (None, Some((_, [_, w, _]))) => *w as u64,
            _ => bail!("{shown}: no {arch}.expert_feed_forward_length and no blk.{first}.ffn_gate_exps.weight"),
        };
        let shared = file
            .tensor_info(&format!("blk.{first}.ffn_gate_shexp.weight"))
            .and_then(|(_, dims)| dims.first().map(|&w| w as u64));
        Ok(Moe {
            experts,
            layers: layer_kinds,
            width,
            shared,
            expert_bias: has(format!("blk.{first}.exp_probs_b.bias")),
            qk_norm: has("blk.0.attn_q_norm.weight".into()),
        })
    }

    /// LLaDA-MoE's keys: softmax routing with the top-k probabilities as weights, which is all
    /// llama.cpp's `llada-moe` graph computes; a file that asks for more is refused.
    fn llada_moe(&self, file: &GgufFile, arch: &str, ffn: u64) -> Result<Value> {
        let shown = file.path.display();
        if let Some(f) = file.uint(&format!("{arch}.expert_gating_func"))? {
            if f != 1 {
                bail!(
                    "{shown}: {arch}.expert_gating_func = {f}; LLaDA-MoE routes with softmax (1)"
                );
            }
        }
        if matches!(file.metadata(&format!("{arch}.expert_weights_norm")), Some(v) if v.to_bool().unwrap_or(false))
        {
            bail!("{shown}: {arch}.expert_weights_norm = true; LLaDA-MoE's weights are not renormalised");
        }
        Ok(json!({
            "dense_intermediate_size": ffn,
            "expert_intermediate_size": self.width,
            "shared_expert_intermediate_size": self.shared,
            "moe_layer_freq": self.layers,
            "moe_router_enable_expert_bias": self.expert_bias,
            "qk_layernorm": self.qk_norm,
        }))
    }

    /// LLaDA2's keys (gguf-py's Bailing-MoE-V2 set): grouped sigmoid routing.
    fn llada2(&self, file: &GgufFile, arch: &str, ffn: u64, hd: u64) -> Result<Value> {
        let shown = file.path.display();
        let key = |k: &str| format!("{arch}.{k}");
        if let Some(f) = file.uint(&key("expert_gating_func"))? {
            if f != 2 {
                bail!("{shown}: {arch}.expert_gating_func = {f}; LLaDA2 routes with sigmoid (2)");
            }
        }
        let dense = self.layers.iter().take_while(|&&m| m == 0).count();
        if self.layers[dense..].contains(&0) {
            bail!("{shown}: a dense layer after a mixture-of-experts one; LLaDA2 has its dense layers first");
        }
        let shared = match (file.uint(&key("expert_shared_count"))?, self.shared) {
            (Some(n), _) => n,
            (None, Some(w)) => w / self.width.max(1),
            (None, None) => 0,
        };
        Ok(json!({
            "intermediate_size": ffn,
            "moe_intermediate_size": self.width,
            "head_dim": hd,
            "first_k_dense_replace": dense,
            "n_group": file.uint(&key("expert_group_count"))?.unwrap_or(1),
            "topk_group": file.uint(&key("expert_group_used_count"))?.unwrap_or(1),
            "num_shared_experts": shared,
            "routed_scaling_factor": file.float(&key("expert_weights_scale"))?.unwrap_or(1.0),
            "use_qk_norm": self.qk_norm,
        }))
    }
}

/// Head counts (query, key/value) from the metadata, for undoing LLaDA's q/k permutation.
pub fn head_counts(file: &GgufFile, arch: &str) -> Result<(usize, usize)> {
    let heads = file.required_uint(&format!("{arch}.attention.head_count"))? as usize;
    let kv = file
        .uint(&format!("{arch}.attention.head_count_kv"))?
        .map_or(heads, |v| v as usize);
    Ok((heads, kv))
}
