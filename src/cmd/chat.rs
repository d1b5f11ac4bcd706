//! `dcoder chat` (and `dcoder` alone on a terminal): the interactive multi-turn session.

use anyhow::{bail, Result};
use std::io::IsTerminal;

use crate::cli::ChatArgs;
use crate::engine::Engine;
use crate::tui::{self, app::Header};

pub fn run(args: &ChatArgs) -> Result<u8> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("the chat needs a terminal; for pipes give the prompt: dcoder \"...\" or echo \"...\" | dcoder");
    }
    let look = crate::cmd::look(&args.look)?;
    let (session, plan) = crate::cmd::load(&args.model, &args.sampler)?;
    let header = Header {
        model: session.label.clone(),
        device: session.device_name(),
        dtype: session.dtype_name().into(),
    };
    let conversation = session.conversation(args.no_chat_template, args.system.clone())?;
    let seed = plan.seed;
    tui::chat(
        Engine {
            session,
            conversation,
            plan,
            trace: None,
            suffix: Vec::new(),
        },
        header,
        look,
        seed,
    )?;
    Ok(0)
}
