//! `dcoder "prompt"`: one answer. The answer goes to stdout (or one JSON object with `--json`),
//! progress to stderr, so `dcoder "…" > file.rs` and pipes get the answer alone.

use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;

use anyhow::{bail, Context, Result};

use crate::cli::RunArgs;
use crate::hub::Source;
use crate::progress_line::ProgressLine;
use crate::registry::Registry;
use crate::report::{rates, Report, Settings};
use crate::session::{Checkpoint, LoadOptions, Session};
use crate::settings;

/// The prompt from the command line, else from stdin when it is not a terminal.
fn read_prompt(prompt: Option<String>) -> Result<String> {
    let prompt = match prompt {
        Some(p) => p,
        None if !std::io::stdin().is_terminal() => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the prompt from stdin")?;
            text
        }
        None => bail!(
            "no prompt: give one, e.g. dcoder \"write a quicksort in rust\", or pipe it on stdin"
        ),
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    Ok(prompt)
}

pub fn run(prompt: Option<String>, args: &RunArgs) -> Result<()> {
    let prompt = read_prompt(prompt)?;
    let registry = Registry::builtin()?;
    let source = Source::parse(args.model.model.as_deref(), registry)?;
    let flags = args.sampler.overrides();
    // Registry models know their defaults before anything is downloaded: check the flags first.
    if let Some(spec) = source.spec() {
        settings::resolve(
            &flags,
            &spec.defaults.over(&registry.arch(spec.arch)?.defaults),
            args.sampler.seed,
        )?;
    }
    let checkpoint = Checkpoint::locate(&source)?;
    let params = checkpoint.params(&flags, args.sampler.seed)?;
    let opts = LoadOptions {
        device: args.model.device.clone(),
        dtype: args.model.dtype.clone(),
    };
    let mut session = Session::load(checkpoint, &opts)?;
    let conversation = session.conversation(args.no_chat_template, args.system.clone())?;
    let (_, prompt_ids) = conversation.prompt(&prompt, &session.tokenizer)?;

    let mask = session.tokenizer.special.mask;
    let mut line = ProgressLine::new(!args.quiet);
    let generation = session.generate(&prompt_ids, &params, |step| {
        line.update(step, mask);
        ControlFlow::Continue(())
    });
    line.clear();
    let generation = generation?;
    let text = session.tokenizer.answer(&generation.canvas)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let (tokens_per_forward, tokens_per_s) = rates(&generation);
        let answer_tokens = generation
            .canvas
            .iter()
            .position(|t| session.tokenizer.special.stops.contains(t))
            .unwrap_or(generation.canvas.len());
        let report = Report {
            model: session.label.clone(),
            arch: session.arch.name(),
            device: session.device_name(),
            dtype: session.dtype_name(),
            text,
            tokens: generation.canvas,
            prompt_tokens: prompt_ids,
            answer_tokens,
            steps: generation.steps,
            nfe: generation.nfe,
            tokens_per_forward,
            load_s: session.load_time.as_secs_f64(),
            elapsed_s: generation.elapsed.as_secs_f64(),
            tokens_per_s,
            cancelled: generation.cancelled,
            settings: Settings::from(&params),
        };
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", text.trim_end())?;
    }
    out.flush()?;
    Ok(())
}
