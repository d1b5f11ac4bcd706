//! `dcoder chat` (and `dcoder` alone on a terminal): the interactive multi-turn session.

use anyhow::{bail, Result};
use std::io::IsTerminal;

use crate::backend::Backend;
use crate::cli::ChatArgs;
use crate::cmd::configure;
use crate::engine::Engine;
use crate::tui::{self, app::Header};

pub fn run(args: &ChatArgs) -> Result<u8> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("the chat needs a terminal; for pipes give the prompt: dcoder \"...\" or echo \"...\" | dcoder");
    }
    let look = crate::cmd::look(&args.look)?;
    let system = args.system.clone();
    if let Some(remote) = configure::remote(&args.remote, &args.model, &args.sampler, system)? {
        if args.no_chat_template {
            bail!("--no-chat-template: an endpoint applies its own template; drop the flag with --endpoint");
        }
        let header = super::oneshot::remote_header(&remote);
        tui::chat(Backend::Remote(remote), header, look, args.sampler.seed)?;
        return Ok(0);
    }
    let (session, plan) = crate::cmd::load(&args.model, &args.sampler)?;
    let header = Header {
        model: session.label.clone(),
        device: session.device_name(),
        dtype: session.dtype_name().into(),
    };
    let conversation = session.conversation(args.no_chat_template, args.system.clone())?;
    let seed = plan.seed;
    tui::chat(
        Backend::Local(Box::new(Engine {
            session,
            conversation,
            plan,
            trace: None,
            suffix: Vec::new(),
        })),
        header,
        look,
        seed,
    )?;
    Ok(0)
}
