//! `dcoder replay FILE`: a trace written with `--trace`, played in the live view. No model is
//! loaded: the trace holds each step's revealed positions and their text.

use std::io::IsTerminal;

use anyhow::{bail, Result};

use crate::cli::ReplayArgs;
use crate::trace;
use crate::tui::{self, app::App, app::Header};

pub fn run(args: &ReplayArgs) -> Result<u8> {
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        bail!("--speed must be a positive number of steps per second");
    }
    let replay = trace::read(&args.file)?;
    if !std::io::stdout().is_terminal() {
        bail!("replay draws in the terminal; run it with stdout on a terminal");
    }
    let look = crate::cmd::look(&args.look)?;
    let header = Header {
        model: replay.model,
        device: "trace".into(),
        dtype: String::new(),
    };
    let mut app = App::replaying(header, look.theme, replay.prompt, replay.frames);
    app.lang = look.lang;
    tui::replay(app, args.speed)?;
    Ok(0)
}
