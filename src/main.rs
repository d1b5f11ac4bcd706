//! dcoder: watch masked-diffusion language models write code.
//!
//! From the command line down to the tensors:
//! - [`cli`]: flags; [`cmd`]: one file per subcommand.
//! - [`registry`]: models.toml; [`hub`]: model folders, the HF cache and downloads;
//!   [`settings`]: sampler settings in layers, resolved once into a `diffusion::Plan`.
//! - [`session`]: a checkpoint read and loaded; [`conversation`], [`chat_template`] and
//!   [`tokenizer`]: prompts, turns and text.
//! - [`diffusion`]: the denoising loop, one file per sampler (`llada`, `dream`, `dream_block`,
//!   `block_diffusion`) beside the plan, schedules, decision and reveal rules they share.
//! - [`model`]: the networks; [`device`]: device and dtype.
//! - [`canvas`]: canvas ids to display text; [`engine`]: the generation thread of the live view;
//!   [`tui`]: the live view (one-shot, chat, replay); [`trace`]: `--trace` files.
//! - [`progress_line`] and [`report`]: what a plain run prints.
//! - [`eval`]: HumanEval / MBPP pass@k in a sandbox (`dcoder eval`).
//! - [`api`]: the OpenAI-compatible wire format of `dcoder serve` and `--endpoint`;
//!   [`server`]: `dcoder serve`'s HTTP side and model thread.
//!   [`remote`]: a model behind an endpoint; [`backend`]: local or remote, for the live view.
//! - [`config`]: the config file (defaults for unset flags, named endpoints).
//! - [`allocator`]: glibc's thresholds for the steps, and memory freed by loading returned.

mod allocator;
mod api;
mod backend;
mod canvas;
mod chat_template;
mod cli;
mod cmd;
mod config;
mod conversation;
mod device;
mod diffusion;
mod engine;
mod eval;
mod gguf;
mod hub;
#[cfg(test)]
mod llada2_parity;
#[cfg(test)]
mod llada_moe_parity;
mod model;
#[cfg(test)]
mod parity;
mod progress_line;
mod registry;
mod remote;
mod report;
mod server;
mod session;
mod settings;
mod tokenizer;
mod trace;
mod tui;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    if let Some(code) = eval::jail::intercept() {
        return code;
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; returns the exit status.
fn run(mut cli: Cli) -> Result<u8> {
    cmd::configure::configure(&mut cli)?;
    let threads = match &cli.command {
        Some(Command::Bench(b)) => b.model.threads,
        Some(Command::Chat(c)) => c.model.threads,
        Some(Command::Eval(e)) => e.model.threads,
        Some(Command::Serve(s)) => s.model.threads,
        _ => cli.run.model.threads,
    };
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        // candle sizes its matmul thread pool from this variable; set it before any tensor work.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    allocator::tune();
    match cli.command {
        // No prompt on a terminal: the interactive session.
        None if cli.prompt.is_none()
            && std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal() =>
        {
            cmd::chat::run(&cli.run.into_chat())
        }
        None => cmd::oneshot::run(cli.prompt, &cli.run),
        Some(Command::Chat(args)) => cmd::chat::run(&args),
        Some(Command::Replay(args)) => cmd::replay::run(&args),
        Some(Command::Models) => cmd::models::run().map(|()| 0),
        Some(Command::Pull { name }) => cmd::pull::run(&name).map(|()| 0),
        Some(Command::Bench(args)) => cmd::bench::run(&args).map(|()| 0),
        Some(Command::Eval(args)) => cmd::eval::run(&args),
        Some(Command::Serve(args)) => cmd::serve::run(&args).map(|()| 0),
        Some(Command::Completions { shell }) => cmd::completions::run(shell).map(|()| 0),
        Some(Command::Quantize(args)) => cmd::quantize::run(&args).map(|()| 0),
    }
}

/// The error and its causes on one line. Only each message's first line is kept: candle
/// appends a backtrace to its errors when `RUST_BACKTRACE` is set.
fn one_line(err: &anyhow::Error) -> String {
    let parts: Vec<String> = err
        .chain()
        .map(|e| e.to_string().lines().next().unwrap_or_default().to_string())
        .collect();
    parts.join(": ")
}

/// A closed stdout (`dcoder … | head`) ends the program quietly, as other Unix tools do.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
