//! The config file: `$XDG_CONFIG_HOME/dcoder/config.toml` (else `~/.config/dcoder/config.toml`),
//! or `--config FILE`. Defaults for flags the command line leaves unset; flags win, then the
//! file, then the model card. Parsed strictly: an unknown key is an error naming the file, the
//! line and the key.
//!
//! ```toml
//! model = "llada-8b-instruct"      # the local model (a remote one is its endpoint's `model`)
//! default_endpoint = "inception"   # use an endpoint unless --endpoint says otherwise
//! theme = "light"
//! threads = 8
//! no_repack = true
//!
//! [sampler]                        # the keys of models.toml's defaults tables
//! gen_length = 256
//! threshold = 0.9
//!
//! [endpoint.gpu-box]               # a named endpoint: --endpoint gpu-box
//! url = "http://10.0.0.5:8080/v1"
//! model = "llada-8b-instruct"
//! api_key_env = "GPU_BOX_KEY"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::registry::EndpointSpec;
use crate::settings::Defaults;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `--model` when not given (for local runs; endpoints carry their own).
    pub model: Option<String>,
    /// `--endpoint` when not given.
    pub default_endpoint: Option<String>,
    /// The API key for endpoints that name none of their own, or the variable holding it.
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    /// `--theme`: dark or light.
    pub theme: Option<String>,
    /// `--lang`.
    pub lang: Option<String>,
    /// `--threads`.
    pub threads: Option<usize>,
    /// `--no-repack`.
    pub no_repack: Option<bool>,
    /// Sampler settings, between the flags and the model card's defaults. They count as flags
    /// given on every run: a key the model's sampler does not use is an error, as the flag is.
    #[serde(default)]
    pub sampler: Defaults,
    /// Named endpoints; they override models.toml's of the same name field by field.
    #[serde(default)]
    pub endpoint: BTreeMap<String, EndpointSpec>,
}

/// A config file and where it was read from.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub config: Config,
    /// The file, when there was one.
    pub path: Option<PathBuf>,
}

/// Where the config file is looked for when `--config` is not given.
pub fn default_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("dcoder").join("config.toml"))
}

/// `--config FILE` (which must exist), else the default file if there is one.
pub fn load(flag: Option<&Path>) -> Result<Loaded> {
    let path = match flag {
        Some(path) => path.to_path_buf(),
        None => match default_path().filter(|p| p.is_file()) {
            Some(path) => path,
            None => return Ok(Loaded::default()),
        },
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--config {}: cannot read it", path.display()))?;
    let config = parse(&text).map_err(|e| anyhow::anyhow!("{}{e}", path.display()))?;
    Ok(Loaded {
        config,
        path: Some(path),
    })
}

/// The config in `text`; an error is `" line N: message"` on one line.
fn parse(text: &str) -> Result<Config> {
    match toml::from_str::<Config>(text) {
        Ok(config) => {
            if config.threads == Some(0) {
                bail!(": threads must be at least 1");
            }
            Ok(config)
        }
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().replace('\n', " ");
            match line {
                Some(n) => bail!(" line {n}: {message}"),
                None => bail!(": {message}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() -> Result<()> {
        let example: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let config = parse(&example)?;
        assert_eq!(config.default_endpoint.as_deref(), Some("inception"));
        assert_eq!(config.sampler.gen_length, Some(256));
        assert_eq!(
            config.endpoint["gpu-box"].api_key_env.as_deref(),
            Some("GPU_BOX_KEY")
        );
        Ok(())
    }

    #[test]
    fn the_readme_example_parses() -> Result<()> {
        let readme = include_str!("../README.md");
        let section = readme
            .split("### The config file")
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("README: no config section"))?;
        let example = section
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .ok_or_else(|| anyhow::anyhow!("README: no toml example"))?;
        let config = parse(example)?;
        assert_eq!(config.default_endpoint.as_deref(), Some("gpu-box"));
        assert_eq!(config.no_repack, Some(true));
        assert_eq!(
            config.endpoint["inception"].model.as_deref(),
            Some("mercury-2")
        );
        Ok(())
    }

    #[test]
    fn unknown_keys_are_one_line_errors_naming_the_key_and_line() {
        let err = parse("theme = \"dark\"\n[sampler]\ngen_lenght = 3\n")
            .expect_err("an unknown key")
            .to_string();
        assert!(err.starts_with(" line 3:"), "{err}");
        assert!(err.contains("gen_lenght"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = parse("[endpoint.x]\nurl = \"http://h\"\nkey = \"k\"\n")
            .expect_err("an unknown endpoint key")
            .to_string();
        assert!(err.contains("key"), "{err}");
        assert!(parse("threads = 0").is_err());
    }
}
