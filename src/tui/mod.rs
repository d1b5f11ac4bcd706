//! The live denoising view: the one-shot view, the chat and replays share one [`App`], one view
//! and one loop.
//!
//! Threads: the engine thread computes every step and sends frames over a channel; an input
//! thread turns terminal events into [`Event`]s on the same channel; the main thread drains all
//! pending events, applies them to the app and draws once, at most ~30 times a second. Drawing
//! never slows the sampler, and a fast model cannot make the UI fall behind.

pub mod app;
pub mod highlight;
pub mod input;
pub mod terminal;
pub mod theme;
pub mod view;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine as _;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event as TermEvent};
use ratatui::Terminal;

use app::{App, Effect, Event, Header, Kind, Turn};
use theme::Theme;

use crate::backend;
use crate::engine::Request;

/// Draw at most this often; every step is still computed.
const FRAME: Duration = Duration::from_millis(33);

/// How the view looks.
#[derive(Clone, Copy)]
pub struct Look {
    pub theme: Theme,
    pub lang: Option<&'static syntect::parsing::SyntaxReference>,
}

/// Reads terminal events until `stop` is set.
fn spawn_input(tx: Sender<Event>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(50)) {
                Ok(true) => {
                    let ev = match event::read() {
                        Ok(TermEvent::Key(k)) => Event::Key(k),
                        Ok(TermEvent::Paste(text)) => Event::Paste(text),
                        Ok(TermEvent::Resize(..)) => Event::Resize,
                        Ok(_) => continue,
                        Err(_) => break,
                    };
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
                Ok(false) => {}
                Err(_) => break,
            }
        }
    });
}

/// Sends a [`Event::Tick`] every `interval` until the receiver is gone.
fn spawn_ticker(tx: Sender<Event>, interval: Duration) {
    std::thread::spawn(move || loop {
        std::thread::sleep(interval);
        if tx.send(Event::Tick).is_err() {
            break;
        }
    });
}

/// Runs `app` until it quits: waits for events, applies all that are pending, performs the
/// effects, draws. Generic over the backend so tests can drive it with `TestBackend`.
pub fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    events: &Receiver<Event>,
    mut perform: impl FnMut(Effect) -> Option<String>,
) -> Result<()>
where
    B::Error: Send + Sync + 'static,
{
    terminal.draw(|f| f.render_widget(&*app, f.area()))?;
    let mut drawn = Instant::now();
    while !app.quit {
        // Effects first: the app may have queued a request before the loop started.
        for effect in app.take_effects() {
            if let Some(notice) = perform(effect) {
                app.notice = Some((notice, app::NoticeKind::Info));
            }
        }
        let Ok(first) = events.recv() else { break };
        app.handle(first);
        while let Ok(more) = events.try_recv() {
            app.handle(more);
        }
        if let Some(wait) = FRAME.checked_sub(drawn.elapsed()) {
            if !app.quit {
                std::thread::sleep(wait);
                while let Ok(more) = events.try_recv() {
                    app.handle(more);
                }
            }
        }
        terminal.draw(|f| f.render_widget(&*app, f.area()))?;
        drawn = Instant::now();
    }
    Ok(())
}

/// Carries out an effect against the real terminal and file system; returns a notice.
fn perform(effect: Effect, requests: &Sender<Request>) -> Option<String> {
    match effect {
        Effect::Request(r) => requests
            .send(r)
            .err()
            .map(|_| "the engine stopped; restart dcoder".into()),
        Effect::Copy(text) => {
            // OSC 52: the terminal (or tmux with set-clipboard) puts it on the clipboard.
            let data = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
            let mut out = std::io::stdout();
            let _ = write!(out, "\x1b]52;c;{data}\x07");
            let _ = out.flush();
            None
        }
        Effect::Save {
            stem,
            extension,
            text,
        } => Some(match save(&stem, &extension, &text) {
            Ok(path) => format!("saved to {}", path.display()),
            Err(e) => format!("could not save: {e:#}"),
        }),
    }
}

/// Writes `text` to the first free `stem.ext`, `stem-2.ext`, ... in the working directory.
fn save(stem: &str, extension: &str, text: &str) -> Result<PathBuf> {
    for n in 1..1000 {
        let name = if n == 1 {
            format!("{stem}.{extension}")
        } else {
            format!("{stem}-{n}.{extension}")
        };
        let path = PathBuf::from(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(text.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    anyhow::bail!("no free file name for {stem}.{extension}")
}

/// Lines of the inline viewport: most of the terminal, at most 24.
fn inline_height() -> u16 {
    let rows = ratatui::crossterm::terminal::size().map_or(24, |(_, r)| r);
    rows.saturating_sub(1).clamp(3, 24)
}

/// Erases an inline view and puts the cursor where it began, so what is printed next (the
/// answer) lands right below the command line, as plain output would.
fn leave_inline(terminal: &mut terminal::Tty) {
    let origin = terminal.get_frame().area().as_position();
    let _ = terminal.clear();
    let _ = terminal.set_cursor_position(origin);
}

/// The one-shot view: runs `user` on the backend (local engine or endpoint) in an inline viewport and returns the turn
/// when it ends (finished, cancelled, failed, or the user quit).
pub fn oneshot(
    engine: backend::Backend,
    header: Header,
    look: Look,
    seed: u64,
    user: String,
) -> Result<Turn> {
    let (events_tx, events) = channel();
    let (requests_tx, requests) = channel();
    let engine_tx = events_tx.clone();
    engine.spawn(requests, move |e| engine_tx.send(Event::Engine(e)).is_ok());
    let stop = Arc::new(AtomicBool::new(false));
    let (guard, mut terminal) = terminal::inline(inline_height())?;
    spawn_input(events_tx, stop.clone());
    let mut app = App::new(Kind::OneShot, header, look.theme, seed);
    app.lang = look.lang;
    app.ask(user);
    let result = run(&mut terminal, &mut app, &events, |e| {
        perform(e, &requests_tx)
    });
    stop.store(true, Ordering::Relaxed);
    leave_inline(&mut terminal);
    drop(guard);
    result?;
    app.turns.pop().context("the view ended without a turn")
}

/// The interactive chat, full screen, until the user quits.
pub fn chat(engine: backend::Backend, header: Header, look: Look, seed: u64) -> Result<()> {
    let (events_tx, events) = channel();
    let (requests_tx, requests) = channel();
    let engine_tx = events_tx.clone();
    engine.spawn(requests, move |e| engine_tx.send(Event::Engine(e)).is_ok());
    let stop = Arc::new(AtomicBool::new(false));
    let (guard, mut terminal) = terminal::fullscreen()?;
    spawn_input(events_tx, stop.clone());
    let mut app = App::new(Kind::Chat, header, look.theme, seed);
    app.lang = look.lang;
    let result = run(&mut terminal, &mut app, &events, |e| {
        perform(e, &requests_tx)
    });
    stop.store(true, Ordering::Relaxed);
    drop(guard);
    result
}

/// Plays recorded frames in an inline viewport, `steps_per_s` steps a second.
pub fn replay(app: App, steps_per_s: f64) -> Result<()> {
    let mut app = app;
    let (events_tx, events) = channel();
    let stop = Arc::new(AtomicBool::new(false));
    let (guard, mut terminal) = terminal::inline(inline_height())?;
    spawn_input(events_tx.clone(), stop.clone());
    spawn_ticker(
        events_tx,
        Duration::from_secs_f64(1.0 / steps_per_s.max(0.1)),
    );
    let (unused_tx, _) = channel();
    let result = run(&mut terminal, &mut app, &events, |e| perform(e, &unused_tx));
    stop.store(true, Ordering::Relaxed);
    leave_inline(&mut terminal);
    drop(guard);
    result
}
