//! The live view's state and its one mutator, [`App::handle`]. No terminal, no drawing, no
//! threads: events come in, effects (requests to the engine, clipboard writes, saved files) go
//! out through [`App::take_effects`], so every key can be tested without a terminal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use syntect::parsing::SyntaxReference;

use super::input::Input;
use super::theme::Theme;
use crate::canvas::Frame;
use crate::engine::{EngineEvent, Request, Stats};

/// Which screen this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `dcoder "prompt"`: one answer, then the view closes.
    OneShot,
    /// `dcoder` / `dcoder chat`: turns, an input box, replay.
    Chat,
    /// `dcoder replay FILE`: a recorded trace, played back.
    Replay,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Key(KeyEvent),
    Paste(String),
    Resize,
    /// Autoplay clock of a replay.
    Tick,
    Engine(EngineEvent),
}

/// Something the main loop must do for the app.
#[derive(Debug, Clone)]
pub enum Effect {
    Request(Request),
    /// Copy to the system clipboard (OSC 52).
    Copy(String),
    /// Write `text` to a new file named after `stem` and `extension`.
    Save {
        stem: String,
        extension: String,
        text: String,
    },
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Running,
    Done(Stats),
    Cancelled,
    Failed(String),
}

/// One question and its answer, with every frame of the answer for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub user: String,
    /// The blank canvas, then the canvas after each step.
    pub frames: Vec<Frame>,
    pub answer: String,
    pub outcome: Outcome,
    pub seed: u64,
}

impl Turn {
    pub fn last_frame(&self) -> Option<&Frame> {
        self.frames.last()
    }
}

/// The model line of the status bar.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Header {
    pub model: String,
    pub device: String,
    pub dtype: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    Info,
    Error,
}

pub struct App {
    pub kind: Kind,
    pub header: Header,
    pub theme: Theme,
    /// `--lang`: highlight every answer with this grammar.
    pub lang: Option<&'static SyntaxReference>,
    pub turns: Vec<Turn>,
    pub input: Input,
    pub help: bool,
    /// Timeline scrub: the frame shown of the last turn, while replaying.
    pub replay: Option<usize>,
    /// A replay plays on its own (`Kind::Replay`) until paused.
    pub playing: bool,
    /// History lines scrolled up from the bottom (0 follows the newest output).
    pub scroll: usize,
    pub notice: Option<(String, NoticeKind)>,
    pub quit: bool,
    /// The running request's cancel flag.
    cancel: Option<Arc<AtomicBool>>,
    next_seed: u64,
    effects: Vec<Effect>,
}

/// Frames a replay jumps with PageUp/PageDown.
const PAGE: usize = 10;
/// History lines PageUp/PageDown scroll.
const SCROLL_PAGE: usize = 10;

impl App {
    pub fn new(kind: Kind, header: Header, theme: Theme, seed: u64) -> App {
        App {
            kind,
            header,
            theme,
            lang: None,
            turns: Vec::new(),
            input: Input::default(),
            help: false,
            replay: None,
            playing: kind == Kind::Replay,
            scroll: 0,
            notice: None,
            quit: false,
            cancel: None,
            next_seed: seed,
            effects: Vec::new(),
        }
    }

    /// A replay app over recorded frames, positioned at the blank canvas.
    pub fn replaying(header: Header, theme: Theme, prompt: String, frames: Vec<Frame>) -> App {
        let mut app = App::new(Kind::Replay, header, theme, 0);
        let answer = frames.last().map(Frame::answer).unwrap_or_default();
        app.turns.push(Turn {
            user: prompt,
            frames,
            answer,
            outcome: Outcome::Cancelled,
            seed: 0,
        });
        app.replay = Some(0);
        app
    }

    /// Starts a one-shot or first chat turn for `user` (sends the request).
    pub fn ask(&mut self, user: String) {
        let cancel = Arc::new(AtomicBool::new(false));
        let seed = self.next_seed;
        self.turns.push(Turn {
            user: user.clone(),
            frames: Vec::new(),
            answer: String::new(),
            outcome: Outcome::Running,
            seed,
        });
        self.cancel = Some(cancel.clone());
        self.scroll = 0;
        self.effects
            .push(Effect::Request(Request::Ask { user, seed, cancel }));
    }

    pub fn running(&self) -> bool {
        self.turns
            .last()
            .is_some_and(|t| t.outcome == Outcome::Running)
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The frame the canvas shows: the scrubbed one while replaying, else the newest.
    pub fn shown_frame(&self) -> Option<&Frame> {
        let turn = self.turns.last()?;
        match self.replay {
            Some(i) => turn.frames.get(i),
            None => turn.last_frame(),
        }
    }

    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Key(key) if key.kind == KeyEventKind::Press => self.key(key),
            Event::Key(_) | Event::Resize => {}
            Event::Paste(text) => {
                if self.kind == Kind::Chat && self.replay.is_none() {
                    self.input.insert_str(&text);
                }
            }
            Event::Tick => self.tick(),
            Event::Engine(e) => self.engine(e),
        }
    }

    fn engine(&mut self, event: EngineEvent) {
        let Some(turn) = self.turns.last_mut() else {
            return;
        };
        match event {
            EngineEvent::Started(frame) => {
                turn.frames = vec![frame];
                turn.answer.clear();
                turn.outcome = Outcome::Running;
            }
            EngineEvent::Frame(frame) => {
                turn.answer = frame.answer();
                turn.frames.push(frame);
            }
            EngineEvent::Finished {
                answer,
                stats,
                cancelled,
            } => {
                turn.answer = answer;
                turn.outcome = if cancelled {
                    Outcome::Cancelled
                } else {
                    Outcome::Done(stats)
                };
                self.cancel = None;
                if self.kind == Kind::OneShot {
                    self.quit = true;
                }
            }
            EngineEvent::Failed(message) => {
                turn.outcome = Outcome::Failed(message.clone());
                self.cancel = None;
                self.notice = Some((message, NoticeKind::Error));
                if self.kind == Kind::OneShot {
                    self.quit = true;
                }
            }
        }
    }

    fn tick(&mut self) {
        if !self.playing {
            return;
        }
        let frames = self.turns.last().map_or(0, |t| t.frames.len());
        match self.replay {
            Some(i) if i + 1 < frames => self.replay = Some(i + 1),
            _ => self.playing = false,
        }
    }

    fn cancel_running(&mut self) {
        if let Some(flag) = &self.cancel {
            flag.store(true, Ordering::Relaxed);
            self.notice = Some(("cancelling after this step…".into(), NoticeKind::Info));
        }
    }

    fn key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        // Ctrl-C always quits, from any state.
        if ctrl && key.code == KeyCode::Char('c') {
            self.cancel_running();
            self.quit = true;
            return;
        }
        if self.help {
            // Any key closes the help.
            self.help = false;
            return;
        }
        if key.code == KeyCode::F(1) {
            self.help = true;
            return;
        }
        if self.replay.is_some() {
            self.replay_key(key);
            return;
        }
        match self.kind {
            Kind::OneShot => match key.code {
                KeyCode::Esc | KeyCode::Char('q') => {
                    self.cancel_running();
                    if !self.running() {
                        self.quit = true;
                    }
                }
                KeyCode::Char('?') => self.help = true,
                _ => {}
            },
            Kind::Replay => {}
            Kind::Chat => self.chat_key(key, ctrl),
        }
    }

    fn replay_key(&mut self, key: KeyEvent) {
        let frames = self.turns.last().map_or(0, |t| t.frames.len());
        let last = frames.saturating_sub(1);
        let at = self.replay.unwrap_or(0);
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let leave = match self.kind {
            Kind::Replay => matches!(key.code, KeyCode::Esc | KeyCode::Char('q')),
            _ => key.code == KeyCode::Esc || (ctrl && key.code == KeyCode::Char('t')),
        };
        if leave {
            self.replay = None;
            self.playing = false;
            if self.kind == Kind::Replay {
                self.quit = true;
            }
            return;
        }
        self.replay = Some(match key.code {
            KeyCode::Left => at.saturating_sub(1),
            KeyCode::Right => (at + 1).min(last),
            KeyCode::PageUp | KeyCode::Up => at.saturating_sub(PAGE),
            KeyCode::PageDown | KeyCode::Down => (at + PAGE).min(last),
            KeyCode::Home => 0,
            KeyCode::End => last,
            KeyCode::Char(' ') => {
                self.playing = !self.playing && at < last;
                at
            }
            KeyCode::Char('?') => {
                self.help = true;
                at
            }
            _ => at,
        });
        if !matches!(key.code, KeyCode::Char(' ')) {
            self.playing = false;
        }
    }

    fn chat_key(&mut self, key: KeyEvent, ctrl: bool) {
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Esc if self.running() => self.cancel_running(),
            KeyCode::Esc => self.notice = None,
            KeyCode::Char('d') if ctrl && self.input.is_empty() => self.quit = true,
            KeyCode::Char('r') if ctrl => self.regenerate(),
            KeyCode::Char('s') if ctrl => self.save(),
            KeyCode::Char('y') if ctrl => self.copy(),
            KeyCode::Char('t') if ctrl => self.start_replay(),
            KeyCode::Char('j') if ctrl => self.input.newline(),
            KeyCode::Enter if alt || shift => self.input.newline(),
            KeyCode::Enter => self.send(),
            KeyCode::Char('?') if self.input.is_empty() => self.help = true,
            KeyCode::PageUp => self.scroll += SCROLL_PAGE,
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(SCROLL_PAGE),
            _ => self.input.key(key),
        }
    }

    fn send(&mut self) {
        if self.running() {
            self.notice = Some((
                "an answer is still being written: wait, or Esc to cancel it".into(),
                NoticeKind::Info,
            ));
            return;
        }
        let text = self.input.text();
        if text.trim().is_empty() {
            return;
        }
        self.input.clear();
        self.notice = None;
        self.ask(text);
    }

    fn regenerate(&mut self) {
        if self.running() {
            return;
        }
        let Some(turn) = self.turns.last_mut() else {
            self.notice = Some(("nothing to regenerate yet".into(), NoticeKind::Info));
            return;
        };
        self.next_seed = self
            .next_seed
            .wrapping_add(1)
            .max(turn.seed.wrapping_add(1));
        let seed = self.next_seed;
        let cancel = Arc::new(AtomicBool::new(false));
        turn.frames.clear();
        turn.answer.clear();
        turn.outcome = Outcome::Running;
        turn.seed = seed;
        self.cancel = Some(cancel.clone());
        self.scroll = 0;
        self.notice = Some((format!("regenerating with seed {seed}"), NoticeKind::Info));
        self.effects
            .push(Effect::Request(Request::Regenerate { seed, cancel }));
    }

    /// The last finished answer.
    fn last_answer(&self) -> Option<&str> {
        self.turns
            .iter()
            .rev()
            .find(|t| !t.answer.is_empty())
            .map(|t| t.answer.as_str())
    }

    fn save(&mut self) {
        let Some(answer) = self.last_answer() else {
            self.notice = Some(("no answer to save yet".into(), NoticeKind::Info));
            return;
        };
        let (extension, text) = match code_block(answer) {
            Some((lang, code)) => (extension_for(&lang).to_string(), code),
            None => ("md".to_string(), answer.to_string()),
        };
        self.effects.push(Effect::Save {
            stem: "dcoder-answer".into(),
            extension,
            text,
        });
    }

    fn copy(&mut self) {
        let Some(answer) = self.last_answer() else {
            self.notice = Some(("no answer to copy yet".into(), NoticeKind::Info));
            return;
        };
        let text = code_block(answer).map_or_else(|| answer.to_string(), |(_, code)| code);
        self.effects.push(Effect::Copy(text));
        self.notice = Some(("copied to the clipboard (OSC 52)".into(), NoticeKind::Info));
    }

    fn start_replay(&mut self) {
        if self.running() {
            return;
        }
        match self.turns.last() {
            Some(t) if t.frames.len() > 1 => {
                self.replay = Some(t.frames.len() - 1);
                self.notice = None;
            }
            _ => self.notice = Some(("no finished answer to replay".into(), NoticeKind::Info)),
        }
    }
}

/// The first fenced code block of `text`: its language tag and its code.
pub fn code_block(text: &str) -> Option<(String, String)> {
    let mut lines = text.lines();
    let tag = lines
        .by_ref()
        .find_map(super::highlight::fence_tag)?
        .to_string();
    let mut code = String::new();
    for line in lines {
        if super::highlight::fence_tag(line).is_some() {
            return Some((tag, code));
        }
        code.push_str(line);
        code.push('\n');
    }
    Some((tag, code))
}

/// A file extension for a fence's language tag.
fn extension_for(tag: &str) -> &str {
    match tag.to_ascii_lowercase().as_str() {
        "rust" | "rs" => "rs",
        "python" | "py" | "python3" => "py",
        "javascript" | "js" => "js",
        "typescript" | "ts" => "ts",
        "c" => "c",
        "cpp" | "c++" | "cc" => "cpp",
        "go" | "golang" => "go",
        "java" => "java",
        "bash" | "sh" | "shell" | "zsh" => "sh",
        "ruby" | "rb" => "rb",
        "haskell" | "hs" => "hs",
        "sql" => "sql",
        "html" => "html",
        "css" => "css",
        "json" => "json",
        "yaml" | "yml" => "yaml",
        "toml" => "toml",
        "" => "txt",
        _ => "txt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::{Cell, Frame};
    use crate::tui::theme::ThemeName;
    use ratatui::crossterm::event::KeyEventState;
    use std::time::Duration;

    fn app(kind: Kind) -> App {
        App::new(
            kind,
            Header::default(),
            Theme::new(ThemeName::Dark, false),
            7,
        )
    }

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn ctrl(c: char) -> Event {
        Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
    }

    fn typed(app: &mut App, text: &str) {
        text.chars().for_each(|c| app.handle(key(KeyCode::Char(c))));
    }

    fn frame(step: usize, text: &[&str]) -> Frame {
        let mut f = Frame::blank(text.len(), 0..text.len(), 1, 4);
        for (i, t) in text.iter().enumerate() {
            f.cells[i] = Cell {
                text: t.to_string(),
                revealed_at: Some(step as u32),
                confidence: 0.5,
                stop: false,
                edited_at: None,
                replaced: None,
            };
        }
        f.step = step;
        f.elapsed = Duration::from_millis(100 * step as u64);
        f
    }

    fn stats() -> Stats {
        Stats {
            steps: 2,
            nfe: 2,
            nfe_saved: 0,
            elapsed: Duration::from_secs(1),
            tokens_per_s: 2.0,
            stopped_early: false,
        }
    }

    /// A chat with one finished turn answering with a fenced Rust block, over three frames.
    fn answered_chat() -> App {
        let mut app = app(Kind::Chat);
        typed(&mut app, "hello");
        app.handle(key(KeyCode::Enter));
        app.take_effects();
        let answer = "```rust\nfn main() {}\n```";
        app.handle(Event::Engine(EngineEvent::Started(Frame::blank(
            3,
            0..3,
            1,
            2,
        ))));
        app.handle(Event::Engine(EngineEvent::Frame(frame(
            1,
            &["```rust\n", "", ""],
        ))));
        app.handle(Event::Engine(EngineEvent::Frame(frame(
            2,
            &["```rust\n", "fn main() {}\n", "```"],
        ))));
        app.handle(Event::Engine(EngineEvent::Finished {
            answer: answer.into(),
            stats: stats(),
            cancelled: false,
        }));
        app
    }

    #[test]
    fn enter_sends_the_message_once_and_clears_the_input() {
        let mut app = app(Kind::Chat);
        typed(&mut app, "write fizzbuzz");
        app.handle(key(KeyCode::Enter));
        let effects = app.take_effects();
        assert!(
            matches!(&effects[..], [Effect::Request(Request::Ask { user, seed: 7, .. })] if user == "write fizzbuzz")
        );
        assert!(app.input.is_empty() && app.running());
        // While the answer is being written, Enter does not send another.
        typed(&mut app, "more");
        app.handle(key(KeyCode::Enter));
        assert!(app.take_effects().is_empty());
        assert!(app.notice.is_some());
        assert_eq!(app.input.text(), "more");
    }

    #[test]
    fn alt_enter_adds_a_line_instead_of_sending() {
        let mut app = app(Kind::Chat);
        typed(&mut app, "a");
        app.handle(Event::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)));
        typed(&mut app, "b");
        assert_eq!(app.input.text(), "a\nb");
        assert!(app.take_effects().is_empty());
    }

    #[test]
    fn esc_cancels_the_running_answer_and_keeps_the_app_open() {
        let mut app = app(Kind::Chat);
        typed(&mut app, "x");
        app.handle(key(KeyCode::Enter));
        let Some(Effect::Request(Request::Ask { cancel, .. })) = app.take_effects().pop() else {
            panic!("no request")
        };
        app.handle(key(KeyCode::Esc));
        assert!(cancel.load(Ordering::Relaxed));
        assert!(!app.quit);
        app.handle(Event::Engine(EngineEvent::Finished {
            answer: String::new(),
            stats: stats(),
            cancelled: true,
        }));
        assert_eq!(app.turns[0].outcome, Outcome::Cancelled);
        assert!(!app.running());
    }

    #[test]
    fn ctrl_c_always_quits_and_ctrl_d_only_on_an_empty_input() {
        let mut app = app(Kind::Chat);
        typed(&mut app, "x");
        app.handle(ctrl('d'));
        assert!(!app.quit);
        app.handle(ctrl('c'));
        assert!(app.quit);
        let mut app = app_with_help();
        app.handle(ctrl('c'));
        assert!(app.quit, "Ctrl-C quits even from the help overlay");
    }

    fn app_with_help() -> App {
        let mut app = app(Kind::Chat);
        app.handle(key(KeyCode::Char('?')));
        assert!(app.help);
        app
    }

    #[test]
    fn question_mark_opens_help_only_on_an_empty_input_and_any_key_closes_it() {
        let mut app = app_with_help();
        app.handle(key(KeyCode::Char('z')));
        assert!(
            !app.help && app.input.is_empty(),
            "the closing key is not typed"
        );
        typed(&mut app, "why?");
        assert_eq!(app.input.text(), "why?");
        assert!(!app.help);
    }

    #[test]
    fn regenerate_asks_again_with_a_new_seed() {
        let mut app = answered_chat();
        app.handle(ctrl('r'));
        let effects = app.take_effects();
        let [Effect::Request(Request::Regenerate { seed, .. })] = &effects[..] else {
            panic!("{effects:?}")
        };
        assert_eq!(*seed, 8);
        assert!(app.running());
        assert_eq!(app.turns.len(), 1, "the turn is replaced, not added");
        assert_eq!(app.turns[0].seed, 8);
    }

    #[test]
    fn replay_scrubs_within_the_frames() {
        let mut app = answered_chat();
        app.handle(ctrl('t'));
        assert_eq!(app.replay, Some(2));
        app.handle(key(KeyCode::Right));
        assert_eq!(app.replay, Some(2), "cannot go past the last frame");
        app.handle(key(KeyCode::Left));
        assert_eq!(app.replay, Some(1));
        assert_eq!(app.shown_frame().map(|f| f.step), Some(1));
        app.handle(key(KeyCode::Home));
        app.handle(key(KeyCode::Left));
        assert_eq!(app.replay, Some(0), "cannot go before the blank canvas");
        app.handle(key(KeyCode::End));
        assert_eq!(app.replay, Some(2));
        app.handle(key(KeyCode::Esc));
        assert_eq!(app.replay, None);
        assert!(!app.quit);
    }

    #[test]
    fn save_and_copy_take_the_code_block() {
        let mut app = answered_chat();
        app.handle(ctrl('s'));
        app.handle(ctrl('y'));
        let effects = app.take_effects();
        let [Effect::Save {
            extension, text, ..
        }, Effect::Copy(copied)] = &effects[..]
        else {
            panic!("{effects:?}")
        };
        assert_eq!(
            (extension.as_str(), text.as_str()),
            ("rs", "fn main() {}\n")
        );
        assert_eq!(copied, "fn main() {}\n");
    }

    #[test]
    fn one_shot_quits_when_the_answer_is_done_and_esc_cancels() {
        let mut app = app(Kind::OneShot);
        app.ask("x".into());
        let Some(Effect::Request(Request::Ask { cancel, .. })) = app.take_effects().pop() else {
            panic!("no request")
        };
        app.handle(key(KeyCode::Char('q')));
        assert!(cancel.load(Ordering::Relaxed));
        assert!(!app.quit, "waits for the engine to stop");
        app.handle(Event::Engine(EngineEvent::Finished {
            answer: "a".into(),
            stats: stats(),
            cancelled: true,
        }));
        assert!(app.quit);
    }

    #[test]
    fn replay_plays_on_ticks_until_the_end_or_a_pause() {
        let frames = vec![
            Frame::blank(2, 0..2, 1, 2),
            frame(1, &["a", ""]),
            frame(2, &["a", "b"]),
        ];
        let mut app = App::replaying(
            Header::default(),
            Theme::new(ThemeName::Dark, false),
            "p".into(),
            frames,
        );
        assert!(app.playing);
        app.handle(Event::Tick);
        assert_eq!(app.replay, Some(1));
        app.handle(key(KeyCode::Char(' ')));
        app.handle(Event::Tick);
        assert_eq!(app.replay, Some(1), "paused");
        app.handle(key(KeyCode::Char(' ')));
        app.handle(Event::Tick);
        app.handle(Event::Tick);
        assert_eq!(app.replay, Some(2));
        assert!(!app.playing, "stops at the end");
        app.handle(key(KeyCode::Char('q')));
        assert!(app.quit);
    }

    #[test]
    fn key_releases_are_ignored() {
        let mut app = app(Kind::Chat);
        let mut release = KeyEvent::new(KeyCode::Char('a'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        release.state = KeyEventState::NONE;
        app.handle(Event::Key(release));
        assert!(app.input.is_empty());
    }

    #[test]
    fn code_block_finds_the_first_fence() {
        assert_eq!(
            code_block("x\n```py\nprint(1)\n```\n"),
            Some(("py".into(), "print(1)\n".into()))
        );
        assert_eq!(code_block("no code"), None);
    }
}
