//! The config file and `--endpoint` applied to the parsed flags, once, before any command runs:
//! unset flags take the file's values, and a named endpoint becomes its URL, model and key.
//! Afterwards a command reads only its flags.

use anyhow::{anyhow, bail, Result};
use clap::ValueEnum;
use serde_json::{Map, Value};

use crate::cli::{ChatArgs, Cli, Command, LookArgs, ModelArgs, RemoteArgs, SamplerArgs};
use crate::config::{self, Config};
use crate::registry::{EndpointSpec, Registry};
use crate::remote::Remote;
use crate::tui::theme::ThemeName;

/// Reads the config file (`--config` or the default place) and fills the flags from it.
pub fn configure(cli: &mut Cli) -> Result<()> {
    let loaded = config::load(cli.config.as_deref())?;
    let file = loaded.path.as_ref().map_or_else(
        || "the config file".to_string(),
        |p| p.display().to_string(),
    );
    let config = &loaded.config;
    let theme = match &config.theme {
        Some(name) => Some(
            ThemeName::from_str(name, true)
                .map_err(|_| anyhow!("{file}: theme = \"{name}\": use dark or light"))?,
        ),
        None => None,
    };
    let look = |look: &mut LookArgs| {
        look.theme = look.theme.or(theme);
        look.lang = look.lang.take().or_else(|| config.lang.clone());
    };
    let model = |model: &mut ModelArgs, sampler: &mut SamplerArgs| {
        model.threads = model.threads.or(config.threads);
        model.no_repack |= config.no_repack.unwrap_or(false);
        sampler.config = config.sampler.clone();
    };
    match &mut cli.command {
        None => {
            let run = &mut cli.run;
            model(&mut run.model, &mut run.sampler);
            look(&mut run.look);
            endpoint(&mut run.remote, &mut run.model, config, &file)?;
        }
        Some(Command::Chat(chat)) => {
            let ChatArgs {
                model: m,
                sampler,
                remote,
                look: l,
                ..
            } = chat.as_mut();
            model(m, sampler);
            look(l);
            endpoint(remote, m, config, &file)?;
        }
        Some(Command::Bench(b)) => {
            model(&mut b.model, &mut b.sampler);
            b.model.model = b.model.model.take().or_else(|| config.model.clone());
        }
        Some(Command::Eval(e)) => {
            model(&mut e.model, &mut e.sampler);
            e.model.model = e.model.model.take().or_else(|| config.model.clone());
        }
        Some(Command::Serve(s)) => {
            model(&mut s.model, &mut s.sampler);
            s.model.model = s.model.model.take().or_else(|| config.model.clone());
        }
        Some(Command::Replay(r)) => look(&mut r.look),
        Some(_) => {}
    }
    Ok(())
}

/// Resolves `--endpoint` (or the config's `default_endpoint`): a preset name becomes its URL;
/// the model is `--model`, else the endpoint's, else the config's; the key is `--api-key`,
/// else the endpoint's, else the config's. Without an endpoint, `--model` defaults to the
/// config's model. `local` means no endpoint.
fn endpoint(
    remote: &mut RemoteArgs,
    model: &mut ModelArgs,
    config: &Config,
    file: &str,
) -> Result<()> {
    let name = remote
        .endpoint
        .take()
        .or_else(|| config.default_endpoint.clone())
        .filter(|n| n != "local");
    let Some(name) = name else {
        model.model = model.model.take().or_else(|| config.model.clone());
        return Ok(());
    };
    let builtin = &Registry::builtin()?.endpoints;
    let preset = |n: &str| -> Option<EndpointSpec> {
        match (config.endpoint.get(n), builtin.get(n)) {
            (Some(mine), Some(theirs)) => Some(mine.over(theirs)),
            (mine, theirs) => mine.or(theirs).cloned(),
        }
    };
    let spec = if name.contains("://") {
        // A URL: a preset with the same URL still gives its key variable and model.
        let known = config
            .endpoint
            .keys()
            .chain(builtin.keys())
            .find_map(|n| preset(n).filter(|p| same_url(p.url.as_deref(), &name)));
        EndpointSpec {
            url: Some(name.clone()),
            ..known.unwrap_or_default()
        }
    } else {
        match preset(&name) {
            Some(p) => p,
            None => {
                let mut known: Vec<&String> =
                    builtin.keys().chain(config.endpoint.keys()).collect();
                known.sort();
                known.dedup();
                let known: Vec<&str> = known.into_iter().map(String::as_str).collect();
                bail!(
                    "--endpoint {name}: not a URL (http://host:port/v1) nor a known endpoint ({}; add [endpoint.{name}] to {file})",
                    known.join(", ")
                )
            }
        }
    };
    let Some(url) = spec.url.clone() else {
        bail!("{file}: [endpoint.{name}] has no url");
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("--endpoint {url}: the URL must start with http:// or https://");
    }
    let from_env = |var: &Option<String>| {
        var.as_ref()
            .and_then(|v| std::env::var(v).ok())
            .filter(|k| !k.is_empty())
    };
    remote.api_key = remote
        .api_key
        .take()
        .filter(|k| !k.is_empty())
        .or_else(|| spec.api_key.clone())
        .or_else(|| from_env(&spec.api_key_env))
        .or_else(|| config.api_key.clone())
        .or_else(|| from_env(&config.api_key_env));
    model.model = model
        .model
        .take()
        .or(spec.model)
        .or_else(|| config.model.clone());
    remote.endpoint = Some(url);
    Ok(())
}

fn same_url(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.trim_end_matches('/') == b.trim_end_matches('/'))
}

/// The remote model the resolved flags name, if `--endpoint` was given (or configured).
pub fn remote(
    remote: &RemoteArgs,
    model: &ModelArgs,
    sampler: &SamplerArgs,
    system: Option<String>,
) -> Result<Option<Remote>> {
    let Some(base) = remote.endpoint.clone() else {
        return Ok(None);
    };
    let Some(id) = model.model.clone() else {
        bail!("--endpoint {base}: name the remote model with --model (e.g. --model mercury-coder)");
    };
    Ok(Some(Remote {
        base,
        api_key: remote.api_key.clone(),
        model: id,
        system,
        fields: request_fields(sampler)?,
    }))
}

/// The sampler flags given on the command line as request fields: `--gen-length` is OpenAI's
/// `max_tokens`, the rest keep dcoder's names (what `dcoder serve` reads).
fn request_fields(sampler: &SamplerArgs) -> Result<Map<String, Value>> {
    let Value::Object(mut fields) = serde_json::to_value(sampler.given())? else {
        bail!("the sampler flags did not serialise to an object");
    };
    fields.retain(|_, v| !v.is_null());
    if let Some(n) = fields.remove("gen_length") {
        fields.insert("max_tokens".into(), n);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parsed(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("dcoder").chain(args.iter().copied())).expect("parses")
    }

    #[test]
    fn only_the_given_sampler_flags_are_sent() -> Result<()> {
        let cli = parsed(&[
            "--gen-length",
            "64",
            "--threshold",
            "0.9",
            "--steps",
            "8",
            "x",
        ]);
        let fields = request_fields(&cli.run.sampler)?;
        let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(keys, ["max_tokens", "steps", "threshold"]);
        assert_eq!(fields["max_tokens"], 64);
        Ok(())
    }

    #[test]
    fn presets_give_url_model_and_key_and_flags_win() -> Result<()> {
        let mut config = Config::default();
        config.endpoint.insert(
            "inception".into(),
            EndpointSpec {
                model: Some("mercury-2".into()),
                ..Default::default()
            },
        );
        config.model = Some("llada-8b-instruct".into());
        let mut cli = parsed(&["--endpoint", "inception", "x"]);
        endpoint(&mut cli.run.remote, &mut cli.run.model, &config, "c.toml")?;
        assert_eq!(
            cli.run.remote.endpoint.as_deref(),
            Some("https://api.inceptionlabs.ai/v1")
        );
        // The config's preset overrides the built-in one's model, field by field.
        assert_eq!(cli.run.model.model.as_deref(), Some("mercury-2"));
        let mut cli = parsed(&[
            "--endpoint",
            "inception",
            "--model",
            "mercury-coder-small",
            "x",
        ]);
        endpoint(&mut cli.run.remote, &mut cli.run.model, &config, "c.toml")?;
        assert_eq!(cli.run.model.model.as_deref(), Some("mercury-coder-small"));
        // `local` drops a configured endpoint; the config's model is the local default.
        config.default_endpoint = Some("inception".into());
        let mut cli = parsed(&["--endpoint", "local", "x"]);
        endpoint(&mut cli.run.remote, &mut cli.run.model, &config, "c.toml")?;
        assert_eq!(cli.run.remote.endpoint, None);
        assert_eq!(cli.run.model.model.as_deref(), Some("llada-8b-instruct"));
        let mut cli = parsed(&["--endpoint", "nowhere", "x"]);
        let err = endpoint(&mut cli.run.remote, &mut cli.run.model, &config, "c.toml")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("inception"), "{err}");
        Ok(())
    }
}
