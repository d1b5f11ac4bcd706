//! Writes a safetensors checkpoint as a GGUF the way llama.cpp's `convert_hf_to_gguf.py` lays
//! one out (ggml-org/llama.cpp@0c1e5709), so that dcoder's loader, and llama.cpp, read it:
//! the converter's tensor names ([`super::names`]), LLaDA's q/k rows permuted into llama's
//! interleaved order (`LlamaModel.permute`), the hyper-parameter keys [`super::config`] reads,
//! and the tokenizer as `tokenizer.ggml.*` with the chat template.
//!
//! Types: the `[out, in]` matmul weights in the chosen block type where their rows are whole
//! blocks; the token embedding and LM head in Q8_0 (their rows are read one token at a time
//! and the head decides every token, so they keep 8 bits whatever the body's type, as
//! llama.cpp keeps a wider type for `output.weight`); norms, biases and rows too short for a
//! block in F32.
//!
//! The file is written to `NAME.part` next to the target and renamed when complete, so an
//! interrupted run never leaves a file a later run takes for whole.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::Value as Json;

use super::names::{gguf_name, Layout};
use super::tokenizer::HF_JSON;
use crate::model::Config;
use crate::registry::Arch;
use crate::tokenizer::SpecialTokens;

/// gguf-py `TokenType`.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// What a GGUF is written from.
pub struct Export<'a> {
    pub arch: Arch,
    pub config: &'a Config,
    pub weights: &'a [PathBuf],
    /// The fast tokenizer's JSON (`tokenizer.json` as HF writes it).
    pub tokenizer: Json,
    pub special: &'a SpecialTokens,
    pub chat_template: Option<&'a str>,
    /// The pre-tokenizer name the tokenizer's split regex has in llama.cpp.
    pub pre: &'a str,
}

/// `LlamaModel.permute`: each head's rows from halves to interleaved pairs.
fn permute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    w.reshape((heads, 2, out / heads / 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))
}

fn hyper_parameters(
    arch: Arch,
    config: &Config,
    has_qk_norm: bool,
) -> Result<(&'static str, Vec<(String, Value)>)> {
    let u = |v: usize| Value::U32(v as u32);
    let f = |v: f64| Value::F32(v as f32);
    Ok(match config {
        Config::Llada(c) => (
            "llada",
            vec![
                ("block_count".into(), u(c.n_layers)),
                ("context_length".into(), u(c.max_sequence_length)),
                ("embedding_length".into(), u(c.d_model)),
                ("feed_forward_length".into(), u(c.mlp_hidden())),
                ("attention.head_count".into(), u(c.n_heads)),
                ("attention.head_count_kv".into(), u(c.kv_heads())),
                ("rope.freq_base".into(), f(c.rope_theta)),
                ("attention.layer_norm_rms_epsilon".into(), f(c.rms_norm_eps)),
                ("rope.dimension_count".into(), u(c.head_dim())),
                ("vocab_size".into(), u(c.embedding_rows())),
            ],
        ),
        Config::Qwen(c) => {
            let arch = match (arch, has_qk_norm) {
                (Arch::Dream, _) => "dream",
                (_, true) => "qwen3",
                (_, false) => "qwen2",
            };
            let mut keys = vec![
                ("block_count".into(), u(c.num_hidden_layers)),
                ("context_length".into(), u(c.max_position_embeddings)),
                ("embedding_length".into(), u(c.hidden_size)),
                ("feed_forward_length".into(), u(c.intermediate_size)),
                ("attention.head_count".into(), u(c.num_attention_heads)),
                ("attention.head_count_kv".into(), u(c.kv_heads())),
                ("rope.freq_base".into(), f(c.rope_theta)),
                ("attention.layer_norm_rms_epsilon".into(), f(c.rms_norm_eps)),
            ];
            if arch == "qwen3" {
                keys.push(("attention.key_length".into(), u(c.head_dim())));
                keys.push(("attention.value_length".into(), u(c.head_dim())));
            }
            (arch, keys)
        }
        // llama.cpp's `LLaDAMoEModel` converter keys; the rotary width is written too (llama.cpp
        // requires the whole head). Dense layers, shared experts and the router bias are told by
        // their tensors.
        Config::LladaMoe(c) => (
            "llada-moe",
            vec![
                ("block_count".into(), u(c.num_hidden_layers)),
                ("context_length".into(), u(c.max_position_embeddings)),
                ("embedding_length".into(), u(c.hidden_size)),
                (
                    "feed_forward_length".into(),
                    u(c.dense_intermediate_size
                        .unwrap_or(c.expert_intermediate_size)),
                ),
                (
                    "expert_feed_forward_length".into(),
                    u(c.expert_intermediate_size),
                ),
                ("attention.head_count".into(), u(c.num_attention_heads)),
                ("attention.head_count_kv".into(), u(c.kv_heads())),
                ("rope.freq_base".into(), f(c.rope_theta)),
                ("rope.dimension_count".into(), u(c.rope_dim())),
                ("attention.layer_norm_rms_epsilon".into(), f(c.rms_norm_eps)),
                ("expert_count".into(), u(c.num_experts)),
                ("expert_used_count".into(), u(c.num_experts_per_tok)),
            ],
        ),
        // gguf-py's Bailing-MoE-V2 keys (`BailingMoeV2Model` in convert_hf_to_gguf.py), which
        // LLaDA2's body is: grouped sigmoid routing, scaled and normalised weights.
        Config::Llada2Moe(c) => (
            "llada2",
            vec![
                ("block_count".into(), u(c.num_hidden_layers)),
                ("context_length".into(), u(c.max_position_embeddings)),
                ("embedding_length".into(), u(c.hidden_size)),
                ("feed_forward_length".into(), u(c.intermediate_size)),
                (
                    "expert_feed_forward_length".into(),
                    u(c.moe_intermediate_size),
                ),
                ("attention.head_count".into(), u(c.num_attention_heads)),
                ("attention.head_count_kv".into(), u(c.num_key_value_heads)),
                ("attention.key_length".into(), u(c.head_dim())),
                ("attention.value_length".into(), u(c.head_dim())),
                ("rope.freq_base".into(), f(c.rope_theta)),
                ("rope.dimension_count".into(), u(c.rope_dim())),
                ("attention.layer_norm_rms_epsilon".into(), f(c.rms_norm_eps)),
                ("expert_count".into(), u(c.num_experts.unwrap_or(0))),
                ("expert_used_count".into(), u(c.num_experts_per_tok)),
                (
                    "expert_shared_count".into(),
                    u(c.num_shared_experts.unwrap_or(0)),
                ),
                ("expert_group_count".into(), u(c.n_group)),
                ("expert_group_used_count".into(), u(c.topk_group)),
                ("expert_weights_scale".into(), f(c.routed_scaling_factor)),
                ("expert_weights_norm".into(), Value::Bool(true)),
                // llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE_SIGMOID.
                ("expert_gating_func".into(), Value::U32(2)),
                (
                    "leading_dense_block_count".into(),
                    u(c.first_k_dense_replace),
                ),
            ],
        ),
    })
}

/// `tokenizer.ggml.*` from a fast tokenizer's JSON, padded to `vocab` tokens.
fn tokenizer_metadata(export: &Export, vocab: usize) -> Result<Vec<(String, Value)>> {
    let tok = &export.tokenizer;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab];
    let entries = tok["model"]["vocab"]
        .as_object()
        .ok_or_else(|| anyhow!("the tokenizer is not a BPE vocabulary"))?;
    for (text, id) in entries {
        if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
            *slot = Some((text.clone(), NORMAL));
        }
    }
    for t in tok["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (t["id"].as_u64(), t["content"].as_str()) else {
            continue;
        };
        let kind = if t["special"] == true {
            CONTROL
        } else {
            USER_DEFINED
        };
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = Some((text.to_string(), kind));
        }
    }
    let (texts, types): (Vec<Value>, Vec<Value>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let (text, kind) = t.unwrap_or((format!("[PAD{i}]"), UNUSED));
            (Value::String(text), Value::I32(kind))
        })
        .unzip();
    // A tokenizer that is not byte-level BPE (the word-level test stand-ins) travels whole as
    // gguf-py's `tokenizer.huggingface.json`, with its tokens listed as usual.
    let bpe = tok["model"]["type"] == "BPE";
    let merges: Vec<Value> = tok["model"]["merges"]
        .as_array()
        .filter(|_| bpe)
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(p) => Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?)),
            _ => None,
        })
        .map(Value::String)
        .collect();
    let s = export.special;
    let mut keys = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String(if bpe { "gpt2" } else { "none" }.into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            Value::String(export.pre.into()),
        ),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(texts)),
        ("tokenizer.ggml.token_type".to_string(), Value::Array(types)),
        ("tokenizer.ggml.merges".to_string(), Value::Array(merges)),
        ("tokenizer.ggml.eos_token_id".to_string(), Value::U32(s.eos)),
        (
            "tokenizer.ggml.mask_token_id".to_string(),
            Value::U32(s.mask),
        ),
    ];
    keys.extend(
        s.bos
            .map(|b| ("tokenizer.ggml.bos_token_id".to_string(), Value::U32(b))),
    );
    keys.extend(
        s.pad
            .map(|p| ("tokenizer.ggml.padding_token_id".to_string(), Value::U32(p))),
    );
    if !bpe {
        keys.push((HF_JSON.to_string(), Value::String(tok.to_string())));
    }
    if let Some(t) = export.chat_template {
        keys.push((
            "tokenizer.chat_template".to_string(),
            Value::String(t.into()),
        ));
    }
    Ok(keys)
}

/// llama.cpp's `llama_ftype` for a file whose matmul weights are `ty` (llama.h; a k-quant
/// everywhere is its `_S` variant).
fn file_type(ty: GgmlDType) -> u32 {
    match ty {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q8_0 | GgmlDType::Q8_1 | GgmlDType::Q8K => 7,
        GgmlDType::Q5_0 => 8,
        GgmlDType::Q5_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 14,
        GgmlDType::Q5K => 16,
        GgmlDType::Q6K => 18,
        GgmlDType::BF16 => 32,
    }
}

/// Tensor `name` (a GGUF name) in the type the file keeps it in: matmul weights in `ty` where
/// their rows are whole blocks; the token embedding and the head in Q8_0 at most; the MoE router
/// in F32 (it decides which experts run, and llama.cpp's quantizer leaves `ffn_gate_inp` alone
/// too); norms, biases and short rows in F32.
fn quantize(name: &str, w: &Tensor, ty: GgmlDType) -> Result<QTensor> {
    let edge = name == "token_embd.weight" || name == "output.weight";
    let want = match (edge, ty) {
        _ if name.contains("ffn_gate_inp") => GgmlDType::F32,
        (true, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) => ty,
        (true, _) => GgmlDType::Q8_0,
        (false, _) => ty,
    };
    let whole = w.rank() >= 2 && w.dim(w.rank() - 1)? % want.block_size() == 0;
    let dtype = if whole { want } else { GgmlDType::F32 };
    Ok(QTensor::quantize(w, dtype)?)
}

/// Writes `export` to `out` with matmul weights in `ty`.
pub fn write(export: &Export, ty: GgmlDType, out: &Path) -> Result<()> {
    let config = export.config;
    let body = config.body();
    // SAFETY: read-only maps of files dcoder does not write while they are mapped.
    #[allow(unsafe_code)]
    let st = unsafe { MmapedSafetensors::multi(export.weights) }.context("opening the weights")?;
    let mut names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    names.sort();
    let has_qk_norm = names.iter().any(|n| n.ends_with("self_attn.q_norm.weight"));
    let (arch, hyper) = hyper_parameters(export.arch, config, has_qk_norm)?;
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.quantization_version".into(), Value::U32(2)),
    ];
    metadata.extend(hyper.into_iter().map(|(k, v)| (format!("{arch}.{k}"), v)));
    // What llama.cpp's converter also writes (convert_hf_to_gguf.py, LLaDAModel / DreamModel),
    // so that its diffusion CLI runs dcoder's files as it runs its own: bidirectional
    // attention, and LLaDA's logits unshifted (llama.cpp assumes Dream's shift when the key is
    // absent).
    if matches!(arch, "llada" | "dream" | "llada-moe" | "llada2") {
        metadata.push((format!("{arch}.attention.causal"), Value::Bool(false)));
        metadata.push((
            "diffusion.shift_logits".into(),
            Value::Bool(arch == "dream"),
        ));
    }
    metadata.push(("general.file_type".into(), Value::U32(file_type(ty))));
    metadata.extend(tokenizer_metadata(export, config.vocab_size())?);
    let (heads, kv_heads) = match config {
        Config::Llada(c) => (c.n_heads, c.kv_heads()),
        _ => (1, 1),
    };
    let mut tensors = Vec::with_capacity(names.len());
    // Experts are stacked into one `[experts, out, in]` tensor per layer and projection, in
    // expert order (the converter's `torch.stack`).
    let mut stacks: BTreeMap<String, Vec<(usize, &str)>> = BTreeMap::new();
    for hf in &names {
        let (name, layout) =
            gguf_name(body, hf).ok_or_else(|| anyhow!("{hf}: no GGUF name for this tensor"))?;
        let w = st.load(hf, &Device::Cpu)?.to_dtype(DType::F32)?;
        let w = match layout {
            Layout::Plain => w,
            Layout::QueryHeads => permute(&w, heads)?,
            Layout::KvHeads => permute(&w, kv_heads)?,
            Layout::Expert(e) => {
                stacks.entry(name).or_default().push((e, hf));
                continue;
            }
        };
        tensors.push((
            name.clone(),
            quantize(&name, &w, ty).with_context(|| format!("quantizing {hf}"))?,
        ));
    }
    for (name, mut experts) in stacks {
        experts.sort_unstable();
        if experts.iter().enumerate().any(|(i, (e, _))| *e != i) {
            bail!(
                "{name}: the checkpoint's experts are not numbered 0..{}",
                experts.len()
            );
        }
        let parts = experts
            .iter()
            .map(|(_, hf)| st.load(hf, &Device::Cpu)?.to_dtype(DType::F32))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let stacked = Tensor::stack(&parts, 0)?;
        drop(parts);
        tensors.push((
            name.clone(),
            quantize(&name, &stacked, ty).with_context(|| format!("quantizing {name}"))?,
        ));
    }
    let part = out.with_extension("gguf.part");
    let written = (|| -> Result<()> {
        let file =
            std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
        let mut w = std::io::BufWriter::new(file);
        let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut w, &md, &ts).map_err(|e| anyhow!("{e}"))?;
        w.flush()?;
        w.get_ref().sync_all()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&part);
        return Err(e.context(format!("writing {}", part.display())));
    }
    std::fs::rename(&part, out)
        .with_context(|| format!("renaming {} to {}", part.display(), out.display()))
}
