//! Text to ids and back, plus the special tokens of a checkpoint.
//!
//! Special ids come from the model's own files, never from code: config.json
//! (`mask_token_id`, `eos_token_id`, ...), then generation_config.json, then the token texts in
//! tokenizer_config.json, then the architecture's token texts in models.toml, looked up in the
//! tokenizer.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

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
        }
    }
}

/// The parsed JSON files that describe a checkpoint's tokens.
pub struct TokenFiles<'a> {
    pub config: &'a Value,
    pub generation_config: Option<&'a Value>,
    pub tokenizer_config: Option<&'a Value>,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub special: SpecialTokens,
}

impl Tokenizer {
    /// Loads `tokenizer.json` and resolves the special tokens.
    pub fn load(tokenizer_json: &Path, files: &TokenFiles, arch: &ArchSpec) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("reading tokenizer {}", tokenizer_json.display()))?;
        let special = resolve_special(&inner, files, arch)?;
        Ok(Self { inner, special })
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
    let eot = match &arch.eot_token {
        Some(text) => match tok.token_to_id(text) {
            Some(id) => Some(id),
            None => bail!("the tokenizer has no end-of-turn token '{text}'"),
        },
        None => None,
    };
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
            mask_token: Some("<m>".into()),
            eot_token: Some("<eot>".into()),
            chat: ChatRule::CarryTokens,
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
}
