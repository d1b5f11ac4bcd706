//! `dcoder completions SHELL`: the completion script clap_complete writes from the flag
//! definitions, on stdout.

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

pub fn run(shell: Shell) -> Result<()> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "dcoder", &mut std::io::stdout().lock());
    Ok(())
}
