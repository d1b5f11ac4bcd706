//! Terminal lifecycle: raw mode in, and out again on every exit path (normal return, error,
//! panic). A [`Session`](TerminalGuard) restores the terminal when dropped; a panic hook
//! restores it before the panic message prints.
//!
//! The one-shot view is an *inline* viewport: it draws in place below the shell prompt, like
//! llama.cpp's visual mode, so the scrollback above stays intact and the final answer is
//! printed right where plain output would be. The chat is a full-screen app on the alternate
//! screen.

use std::io::{stdout, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use anyhow::{Context, Result};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    DisableBracketedPaste, EnableBracketedPaste, KeyboardEnhancementFlags,
    PopKeyboardEnhancementFlags, PushKeyboardEnhancementFlags,
};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, supports_keyboard_enhancement, EnterAlternateScreen,
    LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::{Terminal, TerminalOptions, Viewport};

pub type Tty = Terminal<CrosstermBackend<Stdout>>;

/// What the restore has to undo.
static ALTERNATE: AtomicBool = AtomicBool::new(false);
static ENHANCED_KEYS: AtomicBool = AtomicBool::new(false);
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back: raw mode off, cursor visible, alternate screen left if entered.
/// Safe to call more than once.
pub fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = stdout();
    if ENHANCED_KEYS.swap(false, Ordering::SeqCst) {
        let _ = execute!(out, PopKeyboardEnhancementFlags);
    }
    if ALTERNATE.swap(false, Ordering::SeqCst) {
        let _ = execute!(out, DisableBracketedPaste, LeaveAlternateScreen);
    }
    let _ = disable_raw_mode();
    let _ = execute!(out, cursor::Show);
    let _ = out.flush();
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Restores the terminal when dropped.
pub struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// An inline viewport of `height` lines below the cursor.
pub fn inline(height: u16) -> Result<(TerminalGuard, Tty)> {
    install_panic_hook();
    enable_raw_mode().context("switching the terminal to raw mode")?;
    ACTIVE.store(true, Ordering::SeqCst);
    let guard = TerminalGuard;
    let terminal = Terminal::with_options(
        CrosstermBackend::new(stdout()),
        TerminalOptions {
            viewport: Viewport::Inline(height),
        },
    )
    .context("setting up the terminal")?;
    Ok((guard, terminal))
}

/// The whole screen (alternate screen, bracketed paste, and Shift-Enter where the terminal can
/// tell it from Enter).
pub fn fullscreen() -> Result<(TerminalGuard, Tty)> {
    install_panic_hook();
    enable_raw_mode().context("switching the terminal to raw mode")?;
    ACTIVE.store(true, Ordering::SeqCst);
    let guard = TerminalGuard;
    let mut out = stdout();
    execute!(out, EnterAlternateScreen, EnableBracketedPaste)
        .context("entering the alternate screen")?;
    ALTERNATE.store(true, Ordering::SeqCst);
    if supports_keyboard_enhancement().unwrap_or(false)
        && execute!(
            out,
            PushKeyboardEnhancementFlags(KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES)
        )
        .is_ok()
    {
        ENHANCED_KEYS.store(true, Ordering::SeqCst);
    }
    let terminal =
        Terminal::new(CrosstermBackend::new(stdout())).context("setting up the terminal")?;
    Ok((guard, terminal))
}
