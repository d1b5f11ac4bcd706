//! The tokenizer a GGUF file describes (`tokenizer.ggml.*`), rebuilt as the Hugging Face fast
//! tokenizer it was converted from: byte-level BPE over `tokens` + `merges`, the pre-tokenizer
//! split regex that `tokenizer.ggml.pre` names (llama.cpp `llama-vocab.cpp` picks its regex from
//! the same name; the regexes here are the HF tokenizer.json ones of those families), and the
//! control / user-defined tokens as added tokens (special and not, as HF flags them).
//!
//! Also the special ids and chat template in the shape dcoder's tokenizer and template code
//! read from a model folder (config.json ids, tokenizer_config.json texts).

use anyhow::{anyhow, bail, Result};
use candle_core::quantized::gguf_file::Value as GgufValue;
use serde_json::{json, Map, Value};

use super::file::GgufFile;

/// gguf-py `TokenType`: CONTROL and USER_DEFINED tokens are matched whole in text.
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

/// Qwen2's tokenizer.json split regex (also Dream's and Qwen3's).
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// LLaDA's tokenizer.json split regex (llama.cpp names its hash "bailingmoe").
const LLADA: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
/// Llama 3's tokenizer.json split regex.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` names, their split regex (none: GPT-2's built-in one) and NFC.
const PRE: [(&str, Option<&str>, bool); 4] = [
    ("qwen2", Some(QWEN2), true),
    ("bailingmoe", Some(LLADA), true),
    ("llama-bpe", Some(LLAMA3), false),
    ("gpt2", None, false),
];

/// The HF split regex and normaliser of a `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Option<(Option<&'static str>, bool)> {
    let name = match pre {
        "deepseek-r1-qwen" => "qwen2",
        "llada-moe" => "bailingmoe",
        "llama3" | "smaug-bpe" => "llama-bpe",
        "default" => "gpt2",
        other => other,
    };
    PRE.iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, regex, nfc)| (*regex, *nfc))
}

/// The `tokenizer.ggml.pre` name of a fast tokenizer's JSON, from its split regex.
pub fn pre_name(tokenizer: &Value) -> Result<&'static str> {
    // Not byte-level BPE: the writer stores the whole tokenizer.json and nothing reads this.
    if tokenizer["model"]["type"] != "BPE" {
        return Ok("default");
    }
    let pre = &tokenizer["pre_tokenizer"];
    let regex = pre["pretokenizers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(pre))
        .find_map(|p| p["pattern"]["Regex"].as_str());
    match regex {
        Some(r) => PRE
            .iter()
            .find(|(_, known, _)| *known == Some(r))
            .map(|(name, ..)| *name)
            .ok_or_else(|| anyhow!("the tokenizer's pre-tokenizer regex is not one GGUF names (dcoder knows qwen2, bailingmoe, llama-bpe): {r}")),
        None if pre["type"] == "ByteLevel" => Ok("gpt2"),
        None => bail!("the tokenizer has no byte-level pre-tokenizer GGUF can describe"),
    }
}

fn strings(file: &GgufFile, key: &str) -> Result<Vec<String>> {
    file.array(key)?
        .iter()
        .map(|v| match v {
            GgufValue::String(s) => Ok(s.clone()),
            other => Err(anyhow!(
                "{}: {key} holds {other:?}, not strings",
                file.path.display()
            )),
        })
        .collect()
}

/// gguf-py `Keys.Tokenizer.HF_JSON`.
pub const HF_JSON: &str = "tokenizer.huggingface.json";

/// The fast tokenizer of `file`.
pub fn build(file: &GgufFile) -> Result<tokenizers::Tokenizer> {
    let shown = file.path.display();
    // gguf-py's `tokenizer.huggingface.json`: the whole tokenizer.json, which dcoder's writer
    // stores for tokenizers that are not byte-level BPE (the word-level test stand-ins).
    if let Some(GgufValue::String(json)) = file.metadata(HF_JSON) {
        return tokenizers::Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| anyhow!("{shown}: {HF_JSON} is not a usable tokenizer.json: {e}"));
    }
    let model = file.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        bail!("{shown}: tokenizer.ggml.model = {model}; dcoder reads byte-level BPE (gpt2) tokenizers only");
    }
    let pre = match file.metadata("tokenizer.ggml.pre") {
        Some(_) => file.string("tokenizer.ggml.pre")?,
        None => "default",
    };
    let Some((regex, nfc)) = pre_tokenizer(pre) else {
        bail!("{shown}: tokenizer.ggml.pre = {pre} is not a pre-tokenizer dcoder knows (qwen2, bailingmoe, llama-bpe, gpt2)");
    };
    let tokens = strings(file, "tokenizer.ggml.tokens")?;
    let merges = strings(file, "tokenizer.ggml.merges")?;
    let types: Vec<u64> = match file.metadata("tokenizer.ggml.token_type") {
        Some(GgufValue::Array(items)) => items
            .iter()
            .map(|v| match v {
                GgufValue::I32(t) => *t as u64,
                GgufValue::U32(t) => *t as u64,
                _ => 1,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        // Later duplicates of a text keep the first id, as the HF vocab had it.
        vocab.entry(token.clone()).or_insert(json!(id));
        let kind = types.get(id).copied().unwrap_or(1);
        if kind == CONTROL || kind == USER_DEFINED {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": kind == CONTROL,
            }));
        }
    }
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": regex});
    let pre_tokenizer = match regex {
        Some(r) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false},
            byte_level(false),
        ]}),
        None => byte_level(true),
    };
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": if nfc { json!({"type": "NFC"}) } else { Value::Null },
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": byte_level(false),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    });
    tokenizers::Tokenizer::from_bytes(spec.to_string().as_bytes())
        .map_err(|e| anyhow!("{shown}: building the tokenizer from its metadata: {e}"))
}

/// The special ids as config.json keys (`mask_token_id`, `eos_token_id`, ...) and the token
/// texts and chat template as tokenizer_config.json keys.
pub fn token_configs(file: &GgufFile) -> Result<(Value, Value)> {
    let tokens = file.array("tokenizer.ggml.tokens")?;
    let text = |id: u64| match tokens.get(id as usize) {
        Some(GgufValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let mut ids = Map::new();
    let mut texts = Map::new();
    for (role, key) in [
        ("mask", "tokenizer.ggml.mask_token_id"),
        ("eos", "tokenizer.ggml.eos_token_id"),
        ("bos", "tokenizer.ggml.bos_token_id"),
        ("pad", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = file.uint(key)? {
            if id as usize >= tokens.len() {
                bail!(
                    "{}: {key} = {id} is outside the {} tokens",
                    file.path.display(),
                    tokens.len()
                );
            }
            ids.insert(format!("{role}_token_id"), json!(id));
            if let Some(t) = text(id) {
                texts.insert(format!("{role}_token"), json!(t));
            }
        }
    }
    if let Some(GgufValue::String(template)) = file.metadata("tokenizer.chat_template") {
        texts.insert("chat_template".into(), json!(template));
    }
    Ok((Value::Object(ids), Value::Object(texts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_pre_tokenizer_compiles() {
        for pre in ["qwen2", "bailingmoe", "llama-bpe", "gpt2"] {
            let (regex, _) = pre_tokenizer(pre).expect("known");
            if let Some(r) = regex {
                fancy_regex_compiles(r);
            }
        }
        assert!(pre_tokenizer("tekken").is_none());
    }

    fn fancy_regex_compiles(r: &str) {
        let spec = json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false});
        let parsed: std::result::Result<tokenizers::PreTokenizerWrapper, _> =
            serde_json::from_value(spec);
        assert!(parsed.is_ok(), "{r}: {:?}", parsed.err());
    }
}
