//! Writes a GGUF from a safetensors fixture folder the way llama.cpp's `convert_hf_to_gguf.py`
//! does for the architectures dcoder reads (ggml-org/llama.cpp@0c1e5709: `LLaDAModel`,
//! `DreamModel`, `Qwen3Model`, `LLaDAMoEModel` with its experts stacked per layer in expert
//! order), so the loader is tested on a fresh clone without `../shared`:
//! the converter's tensor names and metadata keys, LLaDA's q/k rows permuted into llama's
//! interleaved RoPE order (`LlamaModel.permute`), the tokenizer as `tokenizer.ggml.*` (added
//! tokens CONTROL or USER_DEFINED, holes padded as `[PAD{id}]` UNUSED), the chat template.
//! Matmul weights are stored as `quant` where their rows are whole blocks, else F32.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::Value as Json;

use super::common::Result;

/// gguf-py `TokenType`.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

fn read_json(path: &Path) -> Result<Json> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// The GGUF name of an HF tensor (gguf-py `tensor_mapping.py`).
fn gguf_name(hf: &str) -> Option<String> {
    let globals = [
        ("model.transformer.wte.weight", "token_embd.weight"),
        ("model.transformer.ff_out.weight", "output.weight"),
        ("model.transformer.ln_f.weight", "output_norm.weight"),
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("lm_head.weight", "output.weight"),
        ("model.norm.weight", "output_norm.weight"),
    ];
    if let Some((_, g)) = globals.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf
        .strip_prefix("model.transformer.blocks.")
        .or_else(|| hf.strip_prefix("model.layers."))?;
    let (layer, part) = rest.split_once('.')?;
    let (stem, suffix) = part.rsplit_once('.')?;
    let g = match stem {
        "attn_norm" | "input_layernorm" => "attn_norm",
        "q_proj" | "self_attn.q_proj" => "attn_q",
        "k_proj" | "self_attn.k_proj" => "attn_k",
        "v_proj" | "self_attn.v_proj" => "attn_v",
        "attn_out" | "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "mlp.gate" => "ffn_gate_inp",
        "self_attn.k_norm" => "attn_k_norm",
        "ff_norm" | "post_attention_layernorm" => "ffn_norm",
        "ff_proj" | "mlp.gate_proj" => "ffn_gate",
        "up_proj" | "mlp.up_proj" => "ffn_up",
        "ff_out" | "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// `LlamaModel.permute`: rows of each head reordered from halves to interleaved pairs.
fn permute(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    Ok(w.reshape((heads, 2, out / heads / 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))?)
}

/// Metadata and tensors of a GGUF, before writing: tests change them to make bad files.
pub struct Gguf {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<(String, QTensor)>,
}

impl Gguf {
    pub fn set(&mut self, key: &str, value: Value) {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value));
    }

    pub fn write(&self, path: &Path) -> Result {
        let metadata: Vec<(&str, &Value)> =
            self.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &QTensor)> =
            self.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        gguf_file::write(&mut file, &metadata, &tensors)?;
        Ok(())
    }
}

/// The GGUF the converter writes for fixture folder `dir`, matmul weights in `quant`.
pub fn convert(dir: &Path, quant: GgmlDType) -> Result<Gguf> {
    let config = read_json(&dir.join("config.json"))?;
    let tok_config = read_json(&dir.join("tokenizer_config.json"))?;
    let tokenizer = read_json(&dir.join("tokenizer.json"))?;
    let model_type = config["model_type"].as_str().ok_or("model_type")?;
    let moe = config["architectures"][0] == "LLaDAMoEModelLM";
    let (arch, pre) = match model_type {
        "llada" if moe => ("llada-moe", "llada-moe"),
        "llada" => ("llada", "bailingmoe"),
        "Dream" => ("dream", "qwen2"),
        "a2d-qwen3" => ("qwen3", "qwen2"),
        other => return Err(format!("no converter for {other}").into()),
    };
    let u = |k: &str| config[k].as_u64().ok_or(format!("config.json {k}"));
    let llada = arch == "llada";
    let (hidden, heads, layers, ffn, vocab) = match llada {
        true => (
            u("d_model")?,
            u("n_heads")?,
            u("n_layers")?,
            u("mlp_hidden_size")?,
            u("vocab_size")?,
        ),
        false => (
            u("hidden_size")?,
            u("num_attention_heads")?,
            u("num_hidden_layers")?,
            u(if moe {
                "dense_intermediate_size"
            } else {
                "intermediate_size"
            })?,
            u("vocab_size")?,
        ),
    };
    let kv_heads = config
        .get(if llada {
            "n_kv_heads"
        } else {
            "num_key_value_heads"
        })
        .and_then(Json::as_u64)
        .unwrap_or(heads);
    let f = |k: &str, d: f64| config[k].as_f64().unwrap_or(d) as f32;
    let mut g = Gguf {
        metadata: Vec::new(),
        tensors: Vec::new(),
    };
    let key = |k: &str| format!("{arch}.{k}");
    g.set("general.architecture", Value::String(arch.into()));
    g.set(&key("block_count"), Value::U32(layers as u32));
    let context = match llada {
        true => config["max_sequence_length"].as_u64().unwrap_or(4096),
        false => u("max_position_embeddings")?,
    };
    g.set(&key("context_length"), Value::U32(context as u32));
    g.set(&key("embedding_length"), Value::U32(hidden as u32));
    g.set(&key("feed_forward_length"), Value::U32(ffn as u32));
    g.set(&key("attention.head_count"), Value::U32(heads as u32));
    g.set(&key("attention.head_count_kv"), Value::U32(kv_heads as u32));
    g.set(
        &key("rope.freq_base"),
        Value::F32(f("rope_theta", 10_000.0)),
    );
    let eps = f("rms_norm_eps", 1e-6);
    g.set(&key("attention.layer_norm_rms_epsilon"), Value::F32(eps));
    if llada {
        g.set(
            &key("rope.dimension_count"),
            Value::U32((hidden / heads) as u32),
        );
        g.set(&key("vocab_size"), Value::U32(vocab as u32));
        g.set("diffusion.shift_logits", Value::Bool(false));
    }
    if moe {
        g.set(
            &key("expert_feed_forward_length"),
            Value::U32(u("expert_intermediate_size")? as u32),
        );
        g.set(&key("expert_count"), Value::U32(u("num_experts")? as u32));
        g.set(
            &key("expert_used_count"),
            Value::U32(u("num_experts_per_tok")? as u32),
        );
        g.set(&key("attention.causal"), Value::Bool(false));
        g.set("diffusion.shift_logits", Value::Bool(false));
    }
    if let Some(hd) = config["head_dim"].as_u64().filter(|_| arch == "qwen3") {
        g.set(&key("attention.key_length"), Value::U32(hd as u32));
        g.set(&key("attention.value_length"), Value::U32(hd as u32));
    }

    // Tokenizer: the BPE vocab, the added tokens, holes padded up to the model's vocab.
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab as usize];
    for (text, id) in tokenizer["model"]["vocab"].as_object().ok_or("vocab")? {
        if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
            *slot = Some((text.clone(), NORMAL));
        }
    }
    for t in tokenizer["added_tokens"].as_array().ok_or("added_tokens")? {
        let id = t["id"].as_u64().ok_or("id")? as usize;
        let kind = if t["special"] == true {
            CONTROL
        } else {
            USER_DEFINED
        };
        if let Some(slot) = tokens.get_mut(id) {
            *slot = Some((t["content"].as_str().ok_or("content")?.to_string(), kind));
        }
    }
    let (texts, types): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or((format!("[PAD{i}]"), UNUSED)))
        .unzip();
    // The word-level stand-in tokenizer (no merges) travels whole as gguf-py's
    // `tokenizer.huggingface.json`; llama.cpp's converter would refuse it.
    let bpe = tokenizer["model"]["type"] == "BPE";
    if !bpe {
        g.set(
            "tokenizer.huggingface.json",
            Value::String(tokenizer.to_string()),
        );
    }
    let merges: Vec<Value> = tokenizer["model"]["merges"]
        .as_array()
        .filter(|_| bpe)
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(pair) => Some(format!("{} {}", pair[0].as_str()?, pair[1].as_str()?)),
            _ => None,
        })
        .map(Value::String)
        .collect();
    let id_of = |text: Option<&str>| text.and_then(|t| texts.iter().position(|x| x == t));
    let text_key = |k: &str| id_of(tok_config[k].as_str());
    let id_key = |k: &str| config[k].as_u64().map(|v| v as usize);
    let specials = [
        ("bos", text_key("bos_token").or(id_key("bos_token_id"))),
        ("eos", id_key("eos_token_id").or(text_key("eos_token"))),
        ("padding", id_key("pad_token_id").or(text_key("pad_token"))),
        ("mask", id_key("mask_token_id").or(text_key("mask_token"))),
    ];
    let model = if bpe { "gpt2" } else { "none" };
    g.set("tokenizer.ggml.model", Value::String(model.into()));
    g.set("tokenizer.ggml.pre", Value::String(pre.into()));
    g.set(
        "tokenizer.ggml.tokens",
        Value::Array(texts.iter().cloned().map(Value::String).collect()),
    );
    g.set(
        "tokenizer.ggml.token_type",
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    g.set("tokenizer.ggml.merges", Value::Array(merges));
    for (role, id) in specials {
        if let Some(id) = id {
            g.set(
                &format!("tokenizer.ggml.{role}_token_id"),
                Value::U32(id as u32),
            );
        }
    }
    g.set("tokenizer.ggml.add_bos_token", Value::Bool(llada));
    if let Some(t) = tok_config["chat_template"].as_str() {
        g.set("tokenizer.chat_template", Value::String(t.into()));
    }

    // Tensors, in f32 from the bf16 checkpoint; q/k permuted for LLaDA.
    let weights: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    // `LLaDAMoEModel.modify_tensors`: each layer's experts stacked in expert order.
    let mut stacks: std::collections::BTreeMap<String, Vec<(usize, Tensor)>> = Default::default();
    for hf in names.iter().filter(|n| n.contains(".mlp.experts.")) {
        let rest = hf.strip_prefix("model.layers.").ok_or("expert name")?;
        let (layer, rest) = rest.split_once(".mlp.experts.").ok_or("expert name")?;
        let (e, proj) = rest.split_once('.').ok_or("expert name")?;
        let g_name = match proj {
            "gate_proj.weight" => "ffn_gate_exps",
            "up_proj.weight" => "ffn_up_exps",
            "down_proj.weight" => "ffn_down_exps",
            other => return Err(format!("expert tensor {other}").into()),
        };
        let w = weights[*hf].to_dtype(DType::F32)?;
        stacks
            .entry(format!("blk.{layer}.{g_name}.weight"))
            .or_default()
            .push((e.parse()?, w));
    }
    for (name, mut experts) in stacks {
        experts.sort_by_key(|(e, _)| *e);
        let parts: Vec<Tensor> = experts.into_iter().map(|(_, w)| w).collect();
        let w = Tensor::stack(&parts, 0)?;
        g.tensors.push((name, QTensor::quantize(&w, quant)?));
    }
    names.retain(|n| !n.contains(".mlp.experts."));
    for hf in names {
        let name = gguf_name(hf).ok_or(format!("no GGUF name for {hf}"))?;
        let mut w = weights[hf].to_dtype(DType::F32)?;
        if llada && name.ends_with("attn_q.weight") {
            w = permute(&w, heads as usize)?;
        } else if llada && name.ends_with("attn_k.weight") {
            w = permute(&w, kv_heads as usize)?;
        }
        let whole_blocks = w.rank() == 2 && w.dim(1)? % quant.block_size() == 0;
        let dtype = if whole_blocks { quant } else { GgmlDType::F32 };
        g.tensors.push((name, QTensor::quantize(&w, dtype)?));
    }
    Ok(g)
}
