//! dcoder: watch masked-diffusion language models write code.
//!
//! From the command line down to the tensors:
//! - [`cli`]: flags; [`cmd`]: one file per subcommand.
//! - [`registry`]: models.toml; [`hub`]: model folders, the HF cache and downloads;
//!   [`settings`]: sampler settings in layers.
//! - [`session`]: a checkpoint read and loaded; [`conversation`], [`chat_template`] and
//!   [`tokenizer`]: prompts, turns and text.
//! - [`diffusion`]: the denoising loop; [`sampler`]: per-position decisions.
//! - [`model`]: the networks; [`device`]: device and dtype.
//! - [`progress_line`] and [`report`]: what a plain run prints.

mod chat_template;
mod cli;
mod cmd;
mod conversation;
mod device;
mod diffusion;
mod hub;
mod model;
#[cfg(test)]
mod parity;
mod progress_line;
mod registry;
mod report;
mod sampler;
mod session;
mod settings;
mod tokenizer;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let threads = match &cli.command {
        Some(Command::Bench(b)) => b.model.threads,
        _ => cli.run.model.threads,
    };
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        // candle sizes its matmul thread pool from this variable; set it before any tensor work.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    match cli.command {
        None => cmd::oneshot::run(cli.prompt, &cli.run),
        Some(Command::Models) => cmd::models::run(),
        Some(Command::Pull { name }) => cmd::pull::run(&name),
        Some(Command::Bench(args)) => cmd::bench::run(&args),
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
