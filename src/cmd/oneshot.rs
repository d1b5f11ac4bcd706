//! `dcoder "prompt"`: one answer.
//!
//! On a terminal the answer is written live in the denoising view, then printed in its place
//! (highlighted) when the view closes. With stdout redirected, `--plain` or `--json`, the answer
//! alone goes to stdout (or one JSON object), progress to stderr, so `dcoder "…" > file.rs` and
//! pipes get the answer and nothing else.

use std::cell::RefCell;
use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context, Result};

use crate::backend::Backend;
use crate::canvas::FrameBuilder;
use crate::cli::RunArgs;
use crate::cmd::configure;
use crate::diffusion::Plan;
use crate::engine::{Engine, EngineEvent};
use crate::progress_line::ProgressLine;
use crate::remote::Remote;
use crate::report::{rates, Report, Settings};
use crate::session::Session;
use crate::settings::Family;
use crate::trace::TraceWriter;
use crate::tui::app::{Header, Outcome, Turn};
use crate::tui::view::{printable, progress};
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
    let live = std::io::stdout().is_terminal() && !args.plain && !args.json;
    let system = args.system.clone();
    if let Some(remote) = configure::remote(&args.remote, &args.model, &args.sampler, system)? {
        remote_only(args)?;
        if live {
            let header = remote_header(&remote);
            let seed = args.sampler.seed;
            let turn = tui::oneshot(Backend::Remote(remote), header, look, seed, prompt)?;
            return show_turn(turn, args, look);
        }
        return run_remote_plain(&remote, &prompt, args);
    }
    let (session, plan) = crate::cmd::load(&args.model, &args.sampler)?;
    if live {
        return run_live(session, plan, prompt, args, look);
    }
    run_plain(session, plan, prompt, args)
}

/// Flags that only mean something for a model in this process.
fn remote_only(args: &RunArgs) -> Result<()> {
    if args.trace.is_some() {
        bail!("--trace records a local model's steps; it does not work with --endpoint");
    }
    if args.no_chat_template {
        bail!("--no-chat-template: an endpoint applies its own template; drop the flag with --endpoint");
    }
    Ok(())
}

/// The status line's model part for a remote model: its id and the endpoint's host.
pub fn remote_header(remote: &Remote) -> Header {
    let host = remote
        .base
        .split_once("://")
        .map_or(remote.base.as_str(), |(_, rest)| rest);
    Header {
        model: remote.model.clone(),
        device: host.split('/').next().unwrap_or(host).to_string(),
        dtype: "(remote)".into(),
    }
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
    let turn = tui::oneshot(Backend::Local(Box::new(engine)), header, look, seed, prompt)?;
    show_turn(turn, args, look)
}

/// Prints the answer of a live one-shot turn in the view's place; the exit status.
fn show_turn(turn: Turn, args: &RunArgs, look: tui::Look) -> Result<u8> {
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
                // NFE 0 after steps: a remote answer, whose forward passes are not known here.
                let nfe = match (stats.nfe, stats.steps) {
                    (0, 1..) => String::new(),
                    (n, _) => format!(", NFE {n}"),
                };
                eprintln!(
                    "{} steps{nfe}, {:.1} tok/s, {:.1} s{early}",
                    stats.steps,
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

/// Plain output of a remote model: the final text on stdout (control characters made visible
/// when stdout is a terminal), or the `--json` report with what a client can know. Tokens and
/// ids stay on the server: `tokens` and `prompt_tokens` are empty, `answer_tokens` is the
/// server's `usage.completion_tokens` (0 without usage), `nfe` what dcoder's frames report
/// (0 otherwise), `steps` the canvases received, and every time is measured here.
fn run_remote_plain(remote: &Remote, prompt: &str, args: &RunArgs) -> Result<u8> {
    let messages = remote.first_turn(prompt);
    let cancel = AtomicBool::new(false);
    let line = RefCell::new(ProgressLine::new(!args.quiet));
    let reply = remote.ask(&messages, args.sampler.seed, &cancel, &|event| {
        if let EngineEvent::Frame(frame) = &event {
            line.borrow_mut().show(false, || progress(frame));
        }
        true
    });
    line.borrow_mut().clear();
    let reply = reply?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let secs = reply.stats.elapsed.as_secs_f64();
        let report = Report {
            model: reply.model.clone().unwrap_or_else(|| remote.model.clone()),
            arch: "remote",
            device: remote.base.clone(),
            dtype: "remote",
            text: reply.answer.clone(),
            tokens: Vec::new(),
            prompt_tokens: Vec::new(),
            answer_tokens: reply.usage.map_or(0, |u| u.completion_tokens),
            steps: reply.stats.steps,
            nfe: reply.stats.nfe,
            tokens_per_forward: match (reply.usage, reply.stats.nfe) {
                (Some(u), nfe) if nfe > 0 => u.completion_tokens as f64 / nfe as f64,
                _ => 0.0,
            },
            load_s: 0.0,
            elapsed_s: secs,
            tokens_per_s: reply.stats.tokens_per_s,
            nfe_saved: 0,
            stopped_early: false,
            cancelled: reply.cancelled,
            edits: 0,
            settings: remote.fields.clone(),
        };
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let text = reply.answer.trim_end();
        let text = match std::io::stdout().is_terminal() {
            true => printable(text),
            false => text.to_string(),
        };
        if !text.is_empty() {
            writeln!(out, "{text}")?;
        }
    }
    out.flush()?;
    Ok(0)
}
