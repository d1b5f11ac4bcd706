//! `dcoder "prompt"`: one answer.
//!
//! On a terminal the answer is written live in the denoising view, then printed in its place
//! (highlighted) when the view closes. With stdout redirected, `--plain` or `--json`, the answer
//! alone goes to stdout (or one JSON object), progress to stderr, so `dcoder "…" > file.rs` and
//! pipes get the answer and nothing else.

use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;

use anyhow::{bail, Context, Result};

use crate::canvas::FrameBuilder;
use crate::cli::RunArgs;
use crate::diffusion::Plan;
use crate::engine::Engine;
use crate::progress_line::ProgressLine;
use crate::report::{rates, Report, Settings};
use crate::session::Session;
use crate::settings::Family;
use crate::trace::TraceWriter;
use crate::tui::app::{Header, Outcome};
use crate::tui::view::printable;
use crate::tui::{self, highlight};

/// The prompt from the command line, else from stdin when it is not a terminal.
pub fn read_prompt(prompt: Option<String>) -> Result<String> {
    let prompt = match prompt {
        Some(p) => p,
        None if std::io::stdin().is_terminal() => {
            bail!("no prompt: give one, e.g. dcoder \"write a quicksort in rust\", or pipe it on stdin")
        }
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the prompt from stdin")?;
            text
        }
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    Ok(prompt)
}

/// `--suffix`: the text itself, or a file's with `@FILE`.
fn read_suffix(arg: &str) -> Result<String> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("--suffix @{path}: cannot read the file")),
        None => Ok(arg.to_string()),
    }
}

/// The suffix's ids, after checking the model can infill and the prompt goes as is.
fn suffix_ids(session: &Session, args: &RunArgs) -> Result<Vec<u32>> {
    let Some(arg) = &args.suffix else {
        return Ok(Vec::new());
    };
    if !matches!(session.arch.family(), Family::Llada | Family::Dream) {
        bail!(
            "--suffix: {} is a block-diffusion model and cannot infill (its attention never sees text after the block); use a LLaDA or Dream model",
            session.label
        );
    }
    if args.system.is_some() {
        bail!("--suffix sends the prompt as is, without the chat template; drop --system");
    }
    session.tokenizer.encode(&read_suffix(arg)?)
}

/// Exit status of a run stopped by the user (as after SIGINT).
pub const INTERRUPTED: u8 = 130;

/// Runs one prompt; returns the exit status.
pub fn run(prompt: Option<String>, args: &RunArgs) -> Result<u8> {
    let prompt = read_prompt(prompt)?;
    let look = crate::cmd::look(&args.look)?;
    let (session, plan) = crate::cmd::load(&args.model, &args.sampler)?;
    let live = std::io::stdout().is_terminal() && !args.plain && !args.json;
    if live {
        return run_live(session, plan, prompt, args, look);
    }
    run_plain(session, plan, prompt, args)
}

fn run_live(
    session: Session,
    plan: Plan,
    prompt: String,
    args: &RunArgs,
    look: tui::Look,
) -> Result<u8> {
    let header = Header {
        model: session.label.clone(),
        device: session.device_name(),
        dtype: session.dtype_name().into(),
    };
    let suffix = suffix_ids(&session, args)?;
    let raw = args.no_chat_template || args.suffix.is_some();
    let conversation = session.conversation(raw, args.system.clone())?;
    let seed = plan.seed;
    let engine = Engine {
        session,
        conversation,
        plan,
        trace: args.trace.clone(),
        suffix,
    };
    let turn = tui::oneshot(engine, header, look, seed, prompt)?;
    let mut out = std::io::stdout().lock();
    let text = printable(turn.answer.trim_end());
    if text.is_empty() {
        eprintln!("(the answer is empty: the model ended it at once)");
    } else if look.theme.colour {
        writeln!(
            out,
            "{}",
            highlight::ansi(&text, look.lang, look.theme.syntax)
        )?;
    } else {
        writeln!(out, "{text}")?;
    }
    out.flush()?;
    match turn.outcome {
        Outcome::Done(stats) => {
            if !args.quiet {
                let early = if stats.stopped_early {
                    format!(", stopped early ({} NFE saved)", stats.nfe_saved)
                } else {
                    String::new()
                };
                eprintln!(
                    "{} steps, NFE {}, {:.1} tok/s, {:.1} s{early}",
                    stats.steps,
                    stats.nfe,
                    stats.tokens_per_s,
                    stats.elapsed.as_secs_f64()
                );
            }
            Ok(0)
        }
        Outcome::Failed(message) => bail!(message),
        Outcome::Cancelled | Outcome::Running => {
            eprintln!("cancelled");
            Ok(INTERRUPTED)
        }
    }
}

fn run_plain(mut session: Session, plan: Plan, prompt: String, args: &RunArgs) -> Result<u8> {
    let suffix = suffix_ids(&session, args)?;
    let raw = args.no_chat_template || args.suffix.is_some();
    let conversation = session.conversation(raw, args.system.clone())?;
    let (prompt_text, prompt_ids) = conversation.prompt(&prompt, &session.tokenizer)?;
    let mut trace = match &args.trace {
        Some(path) => Some(TraceWriter::create(
            path,
            &session,
            &prompt_text,
            &prompt_ids,
            &plan,
        )?),
        None => None,
    };
    let tokenizer = session.tokenizer.clone();
    let mut frames = FrameBuilder::new(&tokenizer, plan.gen_length);
    let mut failure = None;
    let mut line = ProgressLine::new(!args.quiet);
    let generation = session.infill(&prompt_ids, &suffix, &plan, |step| {
        line.update(step, tokenizer.special.mask);
        if let Some(trace) = trace.as_mut() {
            if let Err(e) = frames
                .frame(step)
                .and_then(|frame| trace.step(step, &frame))
            {
                failure = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    line.clear();
    let generation = generation?;
    if let Some(e) = failure {
        return Err(e);
    }
    let text = tokenizer.answer(&generation.canvas)?;
    if let Some(trace) = trace.as_mut() {
        trace.end(&generation, &text)?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let (tokens_per_forward, tokens_per_s) = rates(&generation);
        let answer_tokens = generation
            .canvas
            .iter()
            .position(|t| tokenizer.special.stops.contains(t))
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
            nfe_saved: plan.steps.saturating_sub(generation.nfe),
            stopped_early: generation.stopped_early,
            cancelled: generation.cancelled,
            edits: generation.edits,
            settings: Settings::from(&plan),
        };
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else if !text.trim_end().is_empty() {
        writeln!(out, "{}", text.trim_end())?;
    }
    out.flush()?;
    Ok(0)
}
