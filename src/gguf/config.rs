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
        Body::Llada2Moe => bail!("{shown}: {arch} GGUF files are not supported"),
    })
}

/// Head counts (query, key/value) from the metadata, for undoing LLaDA's q/k permutation.
pub fn head_counts(file: &GgufFile, arch: &str) -> Result<(usize, usize)> {
    let heads = file.required_uint(&format!("{arch}.attention.head_count"))? as usize;
    let kv = file
        .uint(&format!("{arch}.attention.head_count_kv"))?
        .map_or(heads, |v| v as usize);
    Ok((heads, kv))
}
