//! One file per subcommand; each exposes `run`. The loading steps they share live here.

pub mod bench;
pub mod chat;
pub mod completions;
pub mod configure;
pub mod eval;
pub mod models;
pub mod oneshot;
pub mod pull;
pub mod quantize;
pub mod replay;
pub mod serve;

use anyhow::{anyhow, Result};

use crate::cli::{LookArgs, ModelArgs, SamplerArgs};
use crate::device::{default_quant, pick_device};
use crate::diffusion::Plan;
use crate::hub::Source;
use crate::registry::{Arch, Registry};
use crate::session::{plan_for, Checkpoint, LoadOptions, Session, SourceOptions};
use crate::tui::highlight::syntax_for;
use crate::tui::theme::{Theme, ThemeName};
use crate::tui::Look;

/// Resolves `--model`, resolves the sampler flags into the plan once (before any download when
/// the registry knows the model, else from the folder's or repo's config.json, before the
/// weights load), fetches what is missing and loads the model.
pub fn load(model: &ModelArgs, sampler: &SamplerArgs) -> Result<(Session, Plan)> {
    let registry = Registry::builtin()?;
    let source = Source::parse(model.model.as_deref(), registry)?;
    let flags = sampler.overrides();
    let known = match source.spec() {
        Some(spec) => Some(plan_for(spec.arch, &spec.defaults, &flags, sampler.seed)?),
        None => None,
    };
    let mut options = source_options(model)?;
    if let (Some(spec), None, None) = (source.spec(), &options.quant, &model.dtype) {
        let device = pick_device(&model.device)?;
        options.quant = default_quant(&device, spec.parameters()).map(str::to_string);
    }
    let checkpoint = Checkpoint::locate_with(&source, &options)?;
    let plan = match known {
        Some(plan) => plan,
        None => plan_for(checkpoint.arch, &checkpoint.defaults, &flags, sampler.seed)?,
    };
    let opts = LoadOptions {
        device: model.device.clone(),
        dtype: model.dtype.clone(),
        no_repack: model.no_repack,
    };
    Ok((Session::load(checkpoint, &opts)?, plan))
}

/// `--family` and `--quant`.
pub fn source_options(model: &ModelArgs) -> Result<SourceOptions> {
    let family = match model.family.as_deref() {
        None => None,
        Some("bd3lm") => Some(Arch::Bd3lm),
        Some("sdar") => Some(Arch::Sdar),
        Some(other) => {
            return Err(anyhow!(
                "--family {other}: expected bd3lm or sdar (the block-diffusion samplers a qwen2/qwen3 GGUF can run)"
            ))
        }
    };
    Ok(SourceOptions {
        family,
        quant: model.quant.clone(),
    })
}

/// The live view's look: `--theme`, `--lang`, and `NO_COLOR` from the environment.
pub fn look(args: &LookArgs) -> Result<Look> {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let lang = match &args.lang {
        Some(l) => Some(syntax_for(l).ok_or_else(|| anyhow!("--lang {l}: no grammar for that language (try rust, python, c, cpp, go, js, java, bash)"))?),
        None => None,
    };
    Ok(Look {
        theme: Theme::new(args.theme.unwrap_or(ThemeName::Dark), no_color),
        lang,
    })
}
