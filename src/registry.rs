//! The model registry: `models.toml`, compiled into the binary, parsed once.
//!
//! It holds three kinds of facts: per-architecture facts (`[arch.*]`: token texts, multi-turn
//! rule, sampler defaults), per-model facts (`[[model]]`: repo, revision, licence, the model
//! card's sampler defaults) and benchmark shapes (`[shape.*]`). Code matches on [`Arch`] only.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use anyhow::{bail, Result};
use serde::Deserialize;

use crate::diffusion::plan::BlockGrid;
use crate::model::Body;
use crate::settings::{Defaults, Family};

const MODELS_TOML: &str = include_str!("../models.toml");

static BUILTIN: LazyLock<std::result::Result<Registry, String>> = LazyLock::new(|| {
    toml::from_str::<Registry>(MODELS_TOML)
        .map_err(|e| format!("the built-in models.toml is invalid: {e}"))
});

/// The network families dcoder implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Llada,
    Dream,
    /// Block diffusion on a Qwen body (Tiny-A2D BD3LM).
    Bd3lm,
    /// Block diffusion on a Qwen3 body with SDAR's sampler (JetAstra/SDAR).
    Sdar,
    /// LLaDA2.x: block diffusion on a mixture-of-experts body (inclusionAI).
    Llada2,
    /// LLaDA-MoE: LLaDA's full-attention sampler on a mixture-of-experts body (inclusionAI).
    LladaMoe,
}

impl Arch {
    /// The reference sampler this architecture's models follow.
    pub fn family(self) -> Family {
        match self {
            Arch::Llada | Arch::LladaMoe => Family::Llada,
            Arch::Dream => Family::Dream,
            Arch::Bd3lm => Family::BlockDiffusion(BlockGrid::BD3LM),
            Arch::Sdar => Family::BlockDiffusion(BlockGrid::SDAR),
            Arch::Llada2 => Family::BlockDiffusion(BlockGrid::LLADA2),
        }
    }

    /// The network body its checkpoints load into.
    pub fn body(self) -> Body {
        match self {
            Arch::Llada => Body::Llada,
            Arch::Dream | Arch::Bd3lm | Arch::Sdar => Body::Qwen,
            Arch::Llada2 => Body::Llada2Moe,
            Arch::LladaMoe => Body::LladaMoe,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llada => "llada",
            Arch::Dream => "dream",
            Arch::Bd3lm => "bd3lm",
            Arch::Sdar => "sdar",
            Arch::Llada2 => "llada2",
            Arch::LladaMoe => "llada-moe",
        }
    }
}

/// How a multi-turn conversation builds the next prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChatRule {
    /// LLaDA `chat.py`: keep the previous turns as tokens (EOS removed) and append the new
    /// turn's template rendered alone, minus its leading BOS.
    CarryTokens,
    /// Dream demos: render the whole message list again every turn.
    Rerender,
}

/// Facts shared by every checkpoint of one architecture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    /// `model_type` values in config.json that select this architecture.
    pub model_types: Vec<String>,
    /// config.json `architectures` class names that select this architecture before its
    /// `model_type` does (LLaDA-MoE's config says `model_type: "llada"`, as dense LLaDA's).
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Mask token text, used when config.json has no `mask_token_id`.
    pub mask_token: Option<String>,
    /// The architecture's mask id, when neither config.json nor the tokenizer names one.
    pub mask_token_id: Option<u32>,
    /// End-of-turn token text (besides EOS and pad), if the family has one.
    pub eot_token: Option<String>,
    pub chat: ChatRule,
    /// Logit row `i - 1` predicts position `i` (models adapted from autoregressive ones).
    #[serde(default)]
    pub shift_logits: bool,
    /// Pre-tokenizer split regex for checkpoints that ship a slow byte-level BPE tokenizer
    /// (`vocab.json` + `merges.txt`) instead of `tokenizer.json`.
    pub bpe_split_regex: Option<String>,
    /// Extra chat-template variables (Qwen3's `enable_thinking = false`, as dllm renders).
    #[serde(default)]
    pub template_kwargs: toml::Table,
    #[serde(default)]
    pub defaults: Defaults,
}

/// One runnable model: `dcoder --model NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub repo: String,
    pub revision: String,
    pub arch: Arch,
    pub params: String,
    pub license: String,
    pub about: String,
    /// The model `dcoder` runs when `--model` is not given.
    #[serde(default)]
    pub default: bool,
    /// Longest prompt + canvas the model card supports, when below config.json's limit.
    pub context: Option<usize>,
    #[serde(default)]
    pub defaults: Defaults,
}

impl ModelSpec {
    /// The weight count `params` gives (`"0.6B"`, `"16B (1.4B active)"`: all of them, active
    /// or not), before anything is downloaded.
    pub fn parameters(&self) -> Option<u64> {
        let billions: f64 = self.params.split('B').next()?.trim().parse().ok()?;
        Some((billions * 1e9) as u64)
    }
}

/// A named real-model shape for `dcoder bench --random`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeSpec {
    pub arch: Arch,
    /// Name fragments of tensors such checkpoints lack (Qwen2 has no `q_norm`, ...).
    #[serde(default)]
    pub absent: Vec<String>,
    /// config.json keys of the architecture.
    pub config: toml::Table,
}

/// A named OpenAI-compatible endpoint: `--endpoint NAME` (models.toml `[endpoint.*]`, or the
/// config file's, which override these field by field).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// The API base; requests go to `{url}/chat/completions`.
    pub url: Option<String>,
    /// The model id used when `--model` is not given.
    pub model: Option<String>,
    /// The environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// The key itself (config files only; prefer `api_key_env`).
    pub api_key: Option<String>,
    /// Model ids the endpoint is known to serve (for `dcoder models`).
    #[serde(default)]
    pub models: Vec<String>,
    pub about: Option<String>,
}

impl EndpointSpec {
    /// `self` where set, else `lower`.
    pub fn over(&self, lower: &EndpointSpec) -> EndpointSpec {
        EndpointSpec {
            url: self.url.clone().or_else(|| lower.url.clone()),
            model: self.model.clone().or_else(|| lower.model.clone()),
            api_key_env: self
                .api_key_env
                .clone()
                .or_else(|| lower.api_key_env.clone()),
            api_key: self.api_key.clone().or_else(|| lower.api_key.clone()),
            models: match self.models.is_empty() {
                true => lower.models.clone(),
                false => self.models.clone(),
            },
            about: self.about.clone().or_else(|| lower.about.clone()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    pub arch: BTreeMap<Arch, ArchSpec>,
    #[serde(rename = "model")]
    pub models: Vec<ModelSpec>,
    #[serde(rename = "shape")]
    pub shapes: BTreeMap<String, ShapeSpec>,
    #[serde(rename = "endpoint", default)]
    pub endpoints: BTreeMap<String, EndpointSpec>,
}

impl Registry {
    /// The registry compiled into this binary.
    pub fn builtin() -> Result<&'static Registry> {
        BUILTIN.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn find(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn default_model(&self) -> Result<&ModelSpec> {
        match self.models.iter().find(|m| m.default) {
            Some(m) => Ok(m),
            None => bail!("models.toml marks no model as `default = true`"),
        }
    }

    pub fn arch(&self, arch: Arch) -> Result<&ArchSpec> {
        match self.arch.get(&arch) {
            Some(a) => Ok(a),
            None => bail!("models.toml has no [arch.{}] table", arch.name()),
        }
    }

    /// The architecture whose `model_types` lists `model_type`.
    pub fn arch_for_model_type(&self, model_type: &str) -> Option<Arch> {
        self.arch
            .iter()
            .find(|(_, spec)| spec.model_types.iter().any(|t| t == model_type))
            .map(|(arch, _)| *arch)
    }

    /// The architecture whose `architectures` lists one of config.json's `architectures`.
    pub fn arch_for_class(&self, classes: &[&str]) -> Option<Arch> {
        self.arch
            .iter()
            .find(|(_, spec)| {
                spec.architectures
                    .iter()
                    .any(|a| classes.contains(&a.as_str()))
            })
            .map(|(arch, _)| *arch)
    }

    /// Every `model_type` dcoder can load, for error messages.
    pub fn known_model_types(&self) -> Vec<&str> {
        self.arch
            .values()
            .flat_map(|a| a.model_types.iter().map(String::as_str))
            .collect()
    }

    pub fn shape(&self, name: &str) -> Result<&ShapeSpec> {
        match self.shapes.get(name) {
            Some(s) => Ok(s),
            None => {
                let known: Vec<&str> = self.shapes.keys().map(String::as_str).collect();
                bail!(
                    "unknown shape '{name}' for --random; known shapes: {}",
                    known.join(", ")
                )
            }
        }
    }

    /// Registry names closest to `name`, best first, for "did you mean" hints.
    pub fn suggest(&self, name: &str) -> Vec<&str> {
        let mut scored: Vec<(usize, &str)> = self
            .models
            .iter()
            .map(|m| (edit_distance(&m.name, name), m.name.as_str()))
            .filter(|(d, n)| *d <= 3 || n.contains(name) || name.contains(n))
            .collect();
        scored.sort();
        scored.into_iter().map(|(_, n)| n).take(3).collect()
    }
}

/// Levenshtein distance; model names are short, so the quadratic table is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn parameters_come_from_the_params_text() -> Result<()> {
        let reg = Registry::builtin()?;
        let params = |name: &str| {
            reg.models
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.parameters())
        };
        assert_eq!(params("qwen3-0.6b-bd3lm"), Some(Some(600_000_000)));
        assert_eq!(params("llada2.0-mini"), Some(Some(16_000_000_000)));
        Ok(())
    }

    #[test]
    fn builtin_registry_parses_with_unique_names_and_one_default() -> Result<()> {
        let reg = Registry::builtin()?;
        let names: HashSet<&str> = reg.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names.len(), reg.models.len(), "duplicate model names");
        assert_eq!(reg.models.iter().filter(|m| m.default).count(), 1);
        for m in &reg.models {
            reg.arch(m.arch)?;
            assert!(m.repo.contains('/'), "{}: repo must be org/name", m.name);
            assert!(
                m.parameters().is_some(),
                "{}: params {:?}",
                m.name,
                m.params
            );
        }
        for (name, endpoint) in &reg.endpoints {
            let url = endpoint.url.as_deref().unwrap_or_default();
            assert!(url.starts_with("https://"), "endpoint {name}: {url}");
            assert!(endpoint
                .models
                .contains(endpoint.model.as_ref().expect("a model")));
        }
        for (name, shape) in &reg.shapes {
            reg.arch(shape.arch)
                .map_err(|e| anyhow::anyhow!("shape {name}: {e}"))?;
        }
        Ok(())
    }

    #[test]
    fn model_type_selects_arch() -> Result<()> {
        let reg = Registry::builtin()?;
        assert_eq!(reg.arch_for_model_type("llada"), Some(Arch::Llada));
        assert_eq!(reg.arch_for_model_type("lladamoe"), Some(Arch::LladaMoe));
        assert_eq!(
            reg.arch_for_class(&["LLaDAMoEModelLM"]),
            Some(Arch::LladaMoe)
        );
        assert_eq!(reg.arch_for_class(&["LLaDAModelLM"]), None);
        assert_eq!(reg.arch_for_model_type("Dream"), Some(Arch::Dream));
        assert_eq!(reg.arch_for_model_type("a2d-qwen3"), Some(Arch::Bd3lm));
        assert_eq!(reg.arch_for_model_type("gpt2"), None);
        Ok(())
    }

    #[test]
    fn suggestions_find_near_misses() -> Result<()> {
        let reg = Registry::builtin()?;
        assert_eq!(
            reg.suggest("llada-8b-instruc").first(),
            Some(&"llada-8b-instruct")
        );
        assert!(reg.suggest("qwertyuiop").is_empty());
        Ok(())
    }
}
