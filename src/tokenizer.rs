//! Text to ids and back, plus the special tokens of a checkpoint.
//!
//! Special ids come from the model's own files, never from code: config.json
//! (`mask_token_id`, `eos_token_id`, ...), then generation_config.json, then the token texts in
//! tokenizer_config.json, then the architecture's token texts in models.toml, looked up in the
//! tokenizer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::diffusion::SpecialIds;
use crate::registry::ArchSpec;

/// The special tokens of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub mask: u32,
    pub eos: u32,
    /// End of turn (LLaDA `<|eot_id|>`), when the family has one.
    pub eot: Option<u32>,
    pub pad: Option<u32>,
    pub bos: Option<u32>,
    /// Every id that ends an answer: EOS (all of them, when config.json lists several), EOT, pad.
    pub stops: Vec<u32>,
}

impl SpecialTokens {
    pub fn ids(&self) -> SpecialIds {
        SpecialIds {
            mask: self.mask,
            eos: self.eos,
            eot: self.eot,
            pad: self.pad,
            stops: self.stops.clone(),
        }
    }
}

/// The parsed JSON files that describe a checkpoint's tokens.
pub struct TokenFiles<'a> {
    pub config: &'a Value,
    pub generation_config: Option<&'a Value>,
    pub tokenizer_config: Option<&'a Value>,
}

/// The tokenizer files of a checkpoint.
pub enum Source<'a> {
    /// `tokenizer.json`, the fast tokenizer.
    Fast(&'a Path),
    /// A slow byte-level BPE tokenizer (Dream, DiffuCoder): `vocab.json`, `merges.txt` and
    /// optionally `added_tokens.json`, split by the architecture's regex.
    SlowBpe {
        vocab: &'a Path,
        merges: &'a Path,
        added_tokens: Option<&'a Path>,
        split_regex: &'a str,
    },
}

/// A checkpoint's tokenizer; clones share it.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    pub special: SpecialTokens,
}

impl Tokenizer {
    /// Loads the tokenizer and resolves the special tokens.
    pub fn load(source: &Source, files: &TokenFiles, arch: &ArchSpec) -> Result<Self> {
        let inner = match source {
            Source::Fast(path) => tokenizers::Tokenizer::from_file(path)
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("reading tokenizer {}", path.display()))?,
            Source::SlowBpe {
                vocab,
                merges,
                added_tokens,
                split_regex,
            } => byte_level_bpe(
                vocab,
                merges,
                *added_tokens,
                files.tokenizer_config,
                split_regex,
            )?,
        };
        Self::from_built(inner, files, arch)
    }

    /// A tokenizer built elsewhere (from a GGUF's metadata), with the special tokens resolved
    /// from `files` as for a folder.
    pub fn from_built(
        inner: tokenizers::Tokenizer,
        files: &TokenFiles,
        arch: &ArchSpec,
    ) -> Result<Self> {
        let special = resolve_special(&inner, files, arch)?;
        Ok(Self {
            inner: Arc::new(inner),
            special,
        })
    }

    /// The tokenizer as tokenizer.json would hold it.
    pub fn to_json(&self) -> Result<Value> {
        let text = self
            .inner
            .to_string(false)
            .map_err(|e| anyhow!("serialising the tokenizer: {e}"))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Ids of `text`, special-token texts matched as tokens, nothing added (no BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizing the prompt: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` with special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("decoding tokens: {e}"))
    }

    /// The answer in `canvas`: everything before the first stop token (EOS, EOT or pad), decoded
    /// without special tokens.
    pub fn answer(&self, canvas: &[u32]) -> Result<String> {
        let end = canvas
            .iter()
            .position(|t| self.special.stops.contains(t))
            .unwrap_or(canvas.len());
        self.decode(&canvas[..end])
    }
}

/// The fast-tokenizer equivalent of a slow byte-level BPE tokenizer (HF `Qwen2Tokenizer`, Dream's
/// `DreamTokenizer`), built the way transformers' `Qwen2Converter` converts one: NFC normaliser,
/// a regex split (`Isolated`) then byte-level mapping without a prefix space, BPE over
/// `vocab.json` + `merges.txt`, byte-level decoder, plus the added tokens with their `special`
/// flags from tokenizer_config.json's `added_tokens_decoder` (or special when only listed in
/// `added_tokens.json`).
fn byte_level_bpe(
    vocab: &Path,
    merges: &Path,
    added_tokens: Option<&Path>,
    tokenizer_config: Option<&Value>,
    split_regex: &str,
) -> Result<tokenizers::Tokenizer> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let vocab_map: Value = serde_json::from_str(&read(vocab)?)
        .with_context(|| format!("{}: not valid JSON", vocab.display()))?;
    let merges_text = read(merges)?;
    let merge_list: Vec<&str> = merges_text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .collect();
    // id -> (content, flags), from both files; the config's entries carry the flags.
    let mut added: BTreeMap<u64, Value> = BTreeMap::new();
    if let Some(path) = added_tokens {
        let map: BTreeMap<String, u64> = serde_json::from_str(&read(path)?)
            .with_context(|| format!("{}: not a token -> id map", path.display()))?;
        for (content, id) in map {
            added.insert(id, json!({"content": content, "special": true}));
        }
    }
    if let Some(decoder) = tokenizer_config
        .and_then(|tc| tc.get("added_tokens_decoder"))
        .and_then(Value::as_object)
    {
        for (id, entry) in decoder {
            if let Ok(id) = id.parse::<u64>() {
                added.insert(id, entry.clone());
            }
        }
    }
    let flag = |e: &Value, key: &str| e.get(key).and_then(Value::as_bool).unwrap_or(false);
    let added: Vec<Value> = added
        .iter()
        .filter_map(|(id, e)| {
            Some(json!({
                "id": id,
                "content": e.get("content")?.as_str()?,
                "single_word": flag(e, "single_word"),
                "lstrip": flag(e, "lstrip"),
                "rstrip": flag(e, "rstrip"),
                "normalized": flag(e, "normalized"),
                "special": e.get("special").and_then(Value::as_bool).unwrap_or(true),
            }))
        })
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split_regex}, "behavior": "Isolated", "invert": false},
            byte_level,
        ]},
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab_map, "merges": merge_list,
        },
    });
    tokenizers::Tokenizer::from_bytes(spec.to_string().as_bytes()).map_err(|e| {
        anyhow!(
            "building the tokenizer from {} and {}: {e}",
            vocab.display(),
            merges.display()
        )
    })
}

/// A token written in tokenizer_config.json: a plain string or an `{"content": ...}` object.
pub fn token_text(v: &Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
}

/// First id of a config key that may hold one id or a list of ids.
fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as u32).into_iter().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_u64)
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn resolve_special(
    tok: &tokenizers::Tokenizer,
    files: &TokenFiles,
    arch: &ArchSpec,
) -> Result<SpecialTokens> {
    let from_configs = |key: &str| -> Vec<u32> {
        let ids = ids_of(files.config.get(key));
        if ids.is_empty() {
            ids_of(files.generation_config.and_then(|g| g.get(key)))
        } else {
            ids
        }
    };
    let from_text = |key: &str| -> Option<u32> {
        let text = files
            .tokenizer_config
            .and_then(|t| t.get(key))
            .and_then(token_text)?;
        tok.token_to_id(text)
    };
    let mask =
        match from_configs("mask_token_id").first() {
            Some(&id) => id,
            None => match from_text("mask_token")
                .or_else(|| arch.mask_token.as_deref().and_then(|t| tok.token_to_id(t)))
                .or(arch.mask_token_id)
            {
                Some(id) => id,
                None => bail!(
                "cannot find the mask token: config.json has no mask_token_id and the tokenizer \
                 has no mask token{}",
                arch.mask_token.as_deref().map(|t| format!(" '{t}'")).unwrap_or_default()
            ),
            },
        };
    let mut eos_ids = from_configs("eos_token_id");
    if eos_ids.is_empty() {
        eos_ids.extend(from_text("eos_token"));
    }
    let Some(&eos) = eos_ids.first() else {
        bail!("cannot find the end-of-sequence token: no eos_token_id in config.json or generation_config.json, no eos_token in tokenizer_config.json");
    };
    // A tokenizer without the family's end-of-turn token (a base model's, a test stand-in's)
    // ends answers at EOS and pad only.
    let eot = arch
        .eot_token
        .as_deref()
        .and_then(|text| tok.token_to_id(text));
    let pad = from_configs("pad_token_id")
        .first()
        .copied()
        .or_else(|| from_text("pad_token"));
    let bos = from_configs("bos_token_id")
        .first()
        .copied()
        .or_else(|| from_text("bos_token"));
    let mut stops = eos_ids;
    stops.extend(eot);
    stops.extend(pad);
    // tokenizer_config.json may name a different pad (DiffuCoder's `<|dlm_pad|>`) or EOS.
    stops.extend(from_text("pad_token"));
    stops.extend(from_text("eos_token"));
    stops.sort_unstable();
    stops.dedup();
    if stops.contains(&mask) {
        bail!("the mask token id {mask} is also a stop token; check mask_token_id in config.json");
    }
    Ok(SpecialTokens {
        mask,
        eos,
        eot,
        pad,
        bos,
        stops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{ArchSpec, ChatRule};
    use serde_json::json;

    fn word_level() -> tokenizers::Tokenizer {
        let vocab: serde_json::Map<String, Value> = ["<s>", "</s>", "<m>", "<eot>", "a", "b"]
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), json!(i)))
            .collect();
        let spec = json!({
            "version": "1.0",
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "a"}
        });
        tokenizers::Tokenizer::from_bytes(spec.to_string().as_bytes()).expect("valid tokenizer")
    }

    fn arch() -> ArchSpec {
        ArchSpec {
            model_types: vec![],
            architectures: vec![],
            mask_token: Some("<m>".into()),
            mask_token_id: None,
            eot_token: Some("<eot>".into()),
            chat: ChatRule::CarryTokens,
            shift_logits: false,
            bpe_split_regex: None,
            template_kwargs: Default::default(),
            defaults: Default::default(),
        }
    }

    #[test]
    fn ids_come_from_config_then_token_texts() -> Result<()> {
        let config = json!({"eos_token_id": 1, "pad_token_id": 1});
        let tc = json!({"bos_token": {"content": "<s>"}});
        let files = TokenFiles {
            config: &config,
            generation_config: None,
            tokenizer_config: Some(&tc),
        };
        let s = resolve_special(&word_level(), &files, &arch())?;
        assert_eq!(
            (s.mask, s.eos, s.eot, s.pad, s.bos),
            (2, 1, Some(3), Some(1), Some(0))
        );
        assert_eq!(s.stops, vec![1, 3]);
        Ok(())
    }

    #[test]
    fn config_mask_id_wins_and_lists_of_eos_are_all_stops() -> Result<()> {
        let config = json!({"mask_token_id": 5, "eos_token_id": [1, 4]});
        let files = TokenFiles {
            config: &config,
            generation_config: None,
            tokenizer_config: None,
        };
        let s = resolve_special(&word_level(), &files, &arch())?;
        assert_eq!((s.mask, s.eos), (5, 1));
        assert!(s.stops.contains(&4));
        Ok(())
    }

    #[test]
    fn a_missing_mask_token_is_a_clear_error() {
        let config = json!({"eos_token_id": 1});
        let files = TokenFiles {
            config: &config,
            generation_config: None,
            tokenizer_config: None,
        };
        let arch = ArchSpec {
            mask_token: Some("<nope>".into()),
            mask_token_id: None,
            ..arch()
        };
        let err = resolve_special(&word_level(), &files, &arch)
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("mask token") && err.contains("<nope>"),
            "{err}"
        );
    }

    /// A Dream-style folder with only vocab.json + merges.txt + added_tokens.json (what the Dream
    /// and DiffuCoder repos ship) must tokenize and decode exactly like the equivalent
    /// tokenizer.json.
    #[test]
    fn slow_bpe_files_tokenize_like_tokenizer_json() -> Result<()> {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dream-tiny");
        let read = |name: &str| -> Result<Value> {
            Ok(serde_json::from_str(&std::fs::read_to_string(
                fixture.join(name),
            )?)?)
        };
        let fast_json = read("tokenizer.json")?;
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("vocab.json"),
            fast_json["model"]["vocab"].to_string(),
        )?;
        let merges: Vec<String> = fast_json["model"]["merges"]
            .as_array()
            .context("merges")?
            .iter()
            .map(|m| match m {
                Value::String(s) => s.clone(),
                pair => format!(
                    "{} {}",
                    pair[0].as_str().unwrap_or_default(),
                    pair[1].as_str().unwrap_or_default()
                ),
            })
            .collect();
        std::fs::write(
            dir.path().join("merges.txt"),
            format!("#version: 0.2\n{}\n", merges.join("\n")),
        )?;
        let added: serde_json::Map<String, Value> = fast_json["added_tokens"]
            .as_array()
            .context("added_tokens")?
            .iter()
            .map(|t| {
                (
                    t["content"].as_str().unwrap_or_default().to_string(),
                    t["id"].clone(),
                )
            })
            .collect();
        std::fs::write(
            dir.path().join("added_tokens.json"),
            Value::Object(added).to_string(),
        )?;

        let registry = crate::registry::Registry::builtin()?;
        let arch = registry.arch(crate::registry::Arch::Dream)?;
        let (config, tc) = (read("config.json")?, read("tokenizer_config.json")?);
        let files = TokenFiles {
            config: &config,
            generation_config: None,
            tokenizer_config: Some(&tc),
        };
        let fast = Tokenizer::load(&Source::Fast(&fixture.join("tokenizer.json")), &files, arch)?;
        let (vocab, merges, added) = (
            dir.path().join("vocab.json"),
            dir.path().join("merges.txt"),
            dir.path().join("added_tokens.json"),
        );
        let split_regex = arch
            .bpe_split_regex
            .as_deref()
            .context("dream has a split regex")?;
        let slow_source = Source::SlowBpe {
            vocab: &vocab,
            merges: &merges,
            added_tokens: Some(&added),
            split_regex,
        };
        let slow = Tokenizer::load(&slow_source, &files, arch)?;
        assert_eq!(fast.special, slow.special);

        let cases = read("cases.json")?;
        let mut texts: Vec<String> = cases["cases"]
            .as_array()
            .context("cases")?
            .iter()
            .filter_map(|c| c["prompt_text"].as_str().map(str::to_string))
            .collect();
        texts.extend(
            [
                "def f(x):\n\treturn x ** 2  # square\n\n\n",
                "Don't panic, I'll be there; you're THE best. 1234567 + 3.14",
                "  leading and trailing spaces   \r\n",
                "Unicode: café, naïve, Ωμέγα, 日本語のテキスト, 한국어, emoji 🦀🚀",
                "<|im_start|>user\nhi<|im_end|><|mask|><|endoftext|>",
                "e\u{301}tude (combining accent, NFC-normalised)",
            ]
            .map(str::to_string),
        );
        for text in &texts {
            let ids = fast.encode(text)?;
            assert_eq!(slow.encode(text)?, ids, "encoding {text:?}");
            assert_eq!(slow.decode(&ids)?, fast.decode(&ids)?, "decoding {text:?}");
        }
        for case in cases["cases"].as_array().context("cases")? {
            let generated: Vec<u32> = serde_json::from_value(case["generated_ids"].clone())?;
            assert_eq!(slow.decode(&generated)?, fast.decode(&generated)?);
        }
        Ok(())
    }
}
