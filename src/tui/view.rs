//! Drawing: `impl Widget for &App`, a pure read of the state.
//!
//! The canvas shows every generated position: masked ones as `░` (the current block's brighter
//! than later blocks'), revealed text syntax-highlighted, positions revealed this step
//! emphasised and fading over the next two, stop tokens as a faint `·`. Text wraps at the
//! pane's width character by character, so the layout does not jump as tokens resolve.
//! Control characters from the model are drawn as visible symbols, never sent to the terminal.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget};
use unicode_width::UnicodeWidthChar;

use super::app::{App, Kind, NoticeKind, Outcome, Turn};
use super::highlight::char_styles;
use super::theme::{Theme, MASK_GLYPH, STOP_GLYPH};
use crate::canvas::Frame;

/// How many steps a fresh reveal stays emphasised.
const FADE_STEPS: u32 = 3;

/// `c` as it may be drawn: control characters as their Unicode control pictures (U+2400 + c),
/// DEL and C1 controls as U+FFFD, tabs as four spaces; newlines stay.
fn displayable(c: char, out: &mut Vec<char>) {
    match c {
        '\n' => out.push('\n'),
        '\t' => out.extend([' '; 4]),
        c if (c as u32) < 0x20 => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{FFFD}')),
        '\u{7f}'..='\u{9f}' => out.push('\u{FFFD}'),
        c => out.push(c),
    }
}

/// `text` safe to print on a terminal: control characters as visible symbols (see
/// [`displayable`]), so model output can never move the cursor or change colours.
pub fn printable(text: &str) -> String {
    let mut chars = Vec::with_capacity(text.len());
    text.chars().for_each(|c| displayable(c, &mut chars));
    chars.into_iter().collect()
}

/// What a canvas pane shows of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanvasMode {
    /// Every position, with masks, stops and fresh reveals.
    Live,
    /// The answer only: text before the first stop token.
    Answer,
}

/// A frame laid out at `width` columns, and the line of the first masked position of the
/// current block (the place to keep in view).
pub fn canvas_lines(
    frame: &Frame,
    app: &App,
    width: u16,
    mode: CanvasMode,
) -> (Vec<Line<'static>>, usize) {
    let theme = &app.theme;
    // Characters to draw, the cell each belongs to, and the text the highlighter sees (masks
    // and stops as spaces, so grammars are not confused by glyphs).
    let mut chars: Vec<char> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    for (i, cell) in frame.cells.iter().enumerate() {
        if mode == CanvasMode::Answer && cell.stop {
            break;
        }
        let before = chars.len();
        if cell.is_masked() {
            if mode == CanvasMode::Live {
                chars.push(MASK_GLYPH);
            }
        } else if cell.stop {
            chars.push(STOP_GLYPH);
        } else {
            cell.text.chars().for_each(|c| displayable(c, &mut chars));
        }
        owner.extend(std::iter::repeat_n(i, chars.len() - before));
    }
    let for_highlight: String = chars
        .iter()
        .zip(&owner)
        .map(|(&c, &i)| {
            if frame.cells[i].is_masked() || frame.cells[i].stop {
                ' '
            } else {
                c
            }
        })
        .collect();
    let base = if theme.colour {
        char_styles(&for_highlight, app.lang, theme.syntax, theme.text)
    } else {
        vec![theme.text; chars.len()]
    };
    let focus_cell = frame.cells[frame.block_span.clone()]
        .iter()
        .position(|c| c.is_masked())
        .map_or(frame.block_span.start, |k| frame.block_span.start + k);

    let width = usize::from(width.max(1));
    let mut lines: Vec<Line<'static>> = Vec::new();
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut run = (String::new(), Style::new());
    let mut used = 0;
    let mut focus_line = 0;
    let flush = |run: &mut (String, Style), spans: &mut Vec<Span<'static>>| {
        if !run.0.is_empty() {
            spans.push(Span::styled(std::mem::take(&mut run.0), run.1));
        }
    };
    for (k, &c) in chars.iter().enumerate() {
        let i = owner[k];
        if i == focus_cell {
            focus_line = lines.len();
        }
        if c == '\n' {
            flush(&mut run, &mut spans);
            lines.push(Line::from(std::mem::take(&mut spans)));
            used = 0;
            continue;
        }
        let w = c.width().unwrap_or(0);
        if used + w > width && used > 0 {
            flush(&mut run, &mut spans);
            lines.push(Line::from(std::mem::take(&mut spans)));
            used = 0;
        }
        let style = cell_style(frame, i, base[k], theme, mode);
        if style != run.1 {
            flush(&mut run, &mut spans);
            run.1 = style;
        }
        run.0.push(c);
        used += w;
    }
    flush(&mut run, &mut spans);
    lines.push(Line::from(spans));
    (lines, focus_line)
}

fn cell_style(frame: &Frame, i: usize, base: Style, theme: &Theme, mode: CanvasMode) -> Style {
    let cell = &frame.cells[i];
    match cell.revealed_at {
        None if frame.block_span.contains(&i) => theme.mask_active,
        None => theme.mask_waiting,
        Some(_) if cell.stop => theme.stop,
        // A token the model just rewrote (LLaDA2.1 editing) stands out from fresh reveals.
        Some(_)
            if mode == CanvasMode::Live
                && cell
                    .edited_at
                    .is_some_and(|at| (frame.step as u32).saturating_sub(at) < FADE_STEPS) =>
        {
            base.patch(theme.edited)
        }
        Some(at) if mode == CanvasMode::Live => {
            let age = (frame.step as u32).saturating_sub(at);
            match theme.fresh.get(age as usize).filter(|_| age < FADE_STEPS) {
                Some(fresh) => base.patch(*fresh),
                None => base,
            }
        }
        Some(_) => base,
    }
}

/// `text` wrapped at `width`, one style.
fn plain_lines(text: &str, style: Style, width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width.max(1));
    let mut lines = Vec::new();
    for raw in text.split('\n') {
        let mut chars = Vec::new();
        raw.chars().for_each(|c| displayable(c, &mut chars));
        let mut line = String::new();
        let mut used = 0;
        for c in chars {
            let w = c.width().unwrap_or(0);
            if used + w > width && used > 0 {
                lines.push(Line::styled(std::mem::take(&mut line), style));
                used = 0;
            }
            line.push(c);
            used += w;
        }
        lines.push(Line::styled(line, style));
    }
    lines
}

/// `step 12/128 · block 1/4 · NFE 12 · 37/128 · TPF 3.1 · 4.1 tok/s · 9.0 s` (TPF: canvas
/// tokens revealed per forward pass).
pub fn progress(frame: &Frame) -> String {
    let tpf = frame.revealed() as f64 / frame.nfe.max(1) as f64;
    // Token editing: how many rewrites so far, and what this step's replaced.
    let edits = match frame.edits {
        0 => String::new(),
        n => {
            let now: Vec<String> = frame
                .cells
                .iter()
                .filter(|c| c.edited_at == Some(frame.step as u32))
                .filter_map(|c| {
                    Some(format!(
                        "{}→{}",
                        c.replaced.as_deref()?.trim(),
                        c.text.trim()
                    ))
                })
                .take(3)
                .collect();
            let plural = if n == 1 { "" } else { "s" };
            match now.is_empty() {
                true => format!(" · {n} edit{plural}"),
                false => format!(" · {n} edit{plural} ({})", now.join(", ")),
            }
        }
    };
    // A remote canvas (a step without forward passes): characters, not tokens, and no NFE.
    if frame.step > 0 && frame.nfe == 0 {
        return format!(
            "step {}/{} · {}/{} chars · {:.1} s",
            frame.step,
            frame.total,
            frame.revealed(),
            frame.cells.len(),
            frame.elapsed.as_secs_f64()
        );
    }
    format!(
        "step {}/{} · block {}/{} · NFE {} · {}/{} · TPF {tpf:.1} · {:.1} tok/s · {:.1} s{edits}",
        frame.step,
        frame.total,
        (frame.block + 1).min(frame.blocks.max(1)),
        frame.blocks.max(1),
        frame.nfe,
        frame.revealed(),
        frame.cells.len(),
        frame.tokens_per_s(),
        frame.elapsed.as_secs_f64()
    )
}

fn stats_line(turn: &Turn) -> Option<String> {
    match &turn.outcome {
        Outcome::Running => None,
        Outcome::Cancelled => Some("cancelled".into()),
        Outcome::Failed(e) => Some(format!("error: {e}")),
        Outcome::Done(s) => {
            let early = if s.stopped_early {
                format!(" · stopped early, {} NFE saved", s.nfe_saved)
            } else {
                String::new()
            };
            // NFE 0 after steps: a remote answer, whose forward passes are not known here.
            let nfe = match (s.nfe, s.steps) {
                (0, 1..) => String::new(),
                (n, _) => format!(" · NFE {n}"),
            };
            Some(format!(
                "{} steps{nfe} · {:.1} tok/s · {:.1} s · seed {}{early}",
                s.steps,
                s.tokens_per_s,
                s.elapsed.as_secs_f64(),
                turn.seed
            ))
        }
    }
}

impl App {
    fn status_line(&self, width: u16) -> Line<'static> {
        let theme = &self.theme;
        let right = match self.kind {
            Kind::Replay => " space play · ? help",
            Kind::Chat if self.replay.is_some() => " ←/→ Esc · ? help",
            Kind::OneShot | Kind::Chat => " ? help",
        };
        let left = match (&self.notice, self.shown_frame()) {
            (Some((text, kind)), _) => {
                let style = if *kind == NoticeKind::Error {
                    theme.error
                } else {
                    theme.accent
                };
                Span::styled(text.clone(), style)
            }
            // Progress first: on a narrow terminal it is what matters.
            (None, Some(frame)) => {
                let replaying = if self.replay.is_some() {
                    "replay · "
                } else {
                    ""
                };
                let model = format!(
                    "{} · {} {}",
                    self.header.model, self.header.device, self.header.dtype
                );
                Span::styled(
                    format!("{replaying}{} · {model}", progress(frame)),
                    theme.dim,
                )
            }
            (None, None) => Span::styled(
                format!(
                    "{} · {} {}",
                    self.header.model, self.header.device, self.header.dtype
                ),
                theme.dim,
            ),
        };
        let room = usize::from(width).saturating_sub(right.chars().count());
        let left_text: String = left.content.chars().take(room).collect();
        let pad = room.saturating_sub(left_text.chars().count());
        Line::from(vec![
            Span::styled(left_text, left.style),
            Span::raw(" ".repeat(pad)),
            Span::styled(
                right.chars().take(usize::from(width)).collect::<String>(),
                theme.dim,
            ),
        ])
    }

    fn gauge_line(&self, width: u16) -> Line<'static> {
        let ratio = self
            .shown_frame()
            .map_or(0.0, |f| f.revealed() as f64 / f.cells.len().max(1) as f64);
        let filled = (ratio * f64::from(width)).round() as usize;
        let rest = usize::from(width).saturating_sub(filled);
        Line::from(vec![
            Span::styled("━".repeat(filled), self.theme.gauge),
            Span::styled("─".repeat(rest), self.theme.dim),
        ])
    }

    /// The history of a chat: every turn, the last one live (or scrubbed), and the line to keep
    /// in view while an answer is being written.
    fn history_lines(&self, width: u16) -> (Vec<Line<'static>>, Option<usize>) {
        let theme = &self.theme;
        let mut lines: Vec<Line<'static>> = Vec::new();
        let mut focus = None;
        let last = self.turns.len().saturating_sub(1);
        for (n, turn) in self.turns.iter().enumerate() {
            lines.push(Line::styled("› you", theme.user));
            lines.extend(plain_lines(turn.user.trim_end(), theme.user, width));
            lines.push(Line::styled("› dcoder", theme.accent));
            // An unfinished answer keeps its masks on screen; a finished one shows its text.
            let live =
                !matches!(turn.outcome, Outcome::Done(_)) || (n == last && self.replay.is_some());
            let frame = if n == last {
                self.shown_frame()
            } else {
                turn.last_frame()
            };
            match frame {
                Some(frame) if live => {
                    let (canvas, at) = canvas_lines(frame, self, width, CanvasMode::Live);
                    focus = Some(lines.len() + at);
                    lines.extend(canvas);
                }
                Some(frame) => lines.extend(canvas_lines(frame, self, width, CanvasMode::Answer).0),
                None => lines.push(Line::styled("…", theme.dim)),
            }
            if let Some(stats) = stats_line(turn) {
                let style = if matches!(turn.outcome, Outcome::Failed(_)) {
                    theme.error
                } else {
                    theme.dim
                };
                lines.extend(plain_lines(&stats, style, width));
            }
            lines.push(Line::raw(""));
        }
        if self.turns.is_empty() {
            lines.push(Line::styled(
                "Ask for some code. Enter sends, Alt-Enter adds a line, ? shows the keys.",
                theme.dim,
            ));
        }
        (lines, focus)
    }

    fn render_scrolled(
        &self,
        lines: Vec<Line<'static>>,
        focus: Option<usize>,
        area: Rect,
        buf: &mut Buffer,
    ) {
        let height = usize::from(area.height);
        let total = lines.len();
        let bottom_top = total.saturating_sub(height);
        let mut top = bottom_top.saturating_sub(self.scroll);
        if self.scroll == 0 {
            if let Some(f) = focus.filter(|&f| f < top) {
                top = f.saturating_sub(height / 3);
            }
        }
        let shown: Vec<Line<'static>> = lines.into_iter().skip(top).take(height).collect();
        Paragraph::new(shown).render(area, buf);
    }

    fn render_input(&self, area: Rect, buf: &mut Buffer) {
        let theme = &self.theme;
        let title = if self.running() {
            " writing… Esc cancels "
        } else {
            " message · Enter sends · Alt-Enter newline "
        };
        let block = Block::default()
            .borders(Borders::TOP)
            .border_style(theme.dim)
            .title(Span::styled(title, theme.dim));
        let inner = block.inner(area);
        block.render(area, buf);
        let (row, col) = self.input.cursor();
        let visible = usize::from(inner.height.max(1));
        let first = (row + 1).saturating_sub(visible);
        let lines: Vec<Line<'static>> = self
            .input
            .lines()
            .iter()
            .skip(first)
            .take(visible)
            .map(|l| Line::styled(format!("› {l}").replace('\t', "    "), theme.text))
            .collect();
        Paragraph::new(lines).render(inner, buf);
        // The cursor as a reversed cell, so tests and screenshots see it too.
        let line = &self.input.lines()[row];
        let x_off: usize = 2 + line
            .chars()
            .take(col)
            .map(|c| c.width().unwrap_or(0))
            .sum::<usize>();
        let (x, y) = (inner.x as usize + x_off, inner.y as usize + row - first);
        if x < usize::from(inner.right()) && y < usize::from(inner.bottom()) {
            let cell = &mut buf[(x as u16, y as u16)];
            cell.set_style(
                cell.style()
                    .add_modifier(ratatui::style::Modifier::REVERSED),
            );
        }
    }

    fn render_help(&self, area: Rect, buf: &mut Buffer) {
        let keys: &[(&str, &str)] = match self.kind {
            Kind::Chat => &[
                ("Enter", "send the message"),
                ("Alt-Enter, Shift-Enter, Ctrl-J", "new line"),
                ("Esc", "cancel the answer being written"),
                ("Ctrl-R", "regenerate the last answer, new seed"),
                ("Ctrl-S", "save the last code block to a file"),
                ("Ctrl-Y", "copy the last code block (OSC 52)"),
                ("Ctrl-T", "replay the last answer step by step"),
                ("  ←/→ PgUp/PgDn Home/End", "step through the replay"),
                ("PgUp/PgDn", "scroll the history"),
                ("Ctrl-D (empty input), Ctrl-C", "quit"),
                ("? or F1", "this help"),
            ],
            Kind::OneShot => &[
                ("Esc, q", "cancel and leave"),
                ("Ctrl-C", "quit"),
                ("? or F1", "this help"),
            ],
            Kind::Replay => &[
                ("space", "play / pause"),
                ("←/→", "one step back / forward"),
                ("PgUp/PgDn", "ten steps"),
                ("Home/End", "first / last step"),
                ("q, Esc", "quit"),
            ],
        };
        let key_width = keys
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let lines: Vec<Line<'static>> = keys
            .iter()
            .map(|(k, what)| {
                Line::from(vec![
                    Span::styled(format!("{k:<key_width$}  "), self.theme.accent),
                    Span::styled((*what).to_string(), self.theme.text),
                ])
            })
            .collect();
        let w = (key_width + 44).min(usize::from(area.width)) as u16;
        let h = (lines.len() + 2).min(usize::from(area.height)) as u16;
        let popup = Rect::new(
            area.x + (area.width - w) / 2,
            area.y + (area.height - h) / 2,
            w,
            h,
        );
        Clear.render(popup, buf);
        let block = Block::default()
            .borders(Borders::ALL)
            .border_style(self.theme.accent)
            .title(" keys · any key closes ");
        let inner = block.inner(popup);
        block.render(popup, buf);
        Paragraph::new(lines).render(inner, buf);
    }
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width == 0 || area.height == 0 {
            return;
        }
        match self.kind {
            Kind::Chat => {
                let input_height = (self.input.lines().len() as u16 + 1).clamp(2, 8);
                let [history, input, status, gauge] = Layout::vertical([
                    Constraint::Min(0),
                    Constraint::Length(input_height),
                    Constraint::Length(1),
                    Constraint::Length(1),
                ])
                .areas(area);
                let (lines, focus) = self.history_lines(history.width);
                self.render_scrolled(lines, focus, history, buf);
                self.render_input(input, buf);
                self.status_line(status.width).render(status, buf);
                self.gauge_line(gauge.width).render(gauge, buf);
            }
            Kind::OneShot | Kind::Replay => {
                let [canvas, status, gauge] = Layout::vertical([
                    Constraint::Min(0),
                    Constraint::Length(1),
                    Constraint::Length(1),
                ])
                .areas(area);
                if let Some(frame) = self.shown_frame() {
                    let (lines, focus) = canvas_lines(frame, self, canvas.width, CanvasMode::Live);
                    // Keep the block being denoised in view; a finished canvas shows its start.
                    let height = usize::from(canvas.height);
                    let top = if lines.len() <= height {
                        0
                    } else {
                        focus.saturating_sub(height / 3).min(lines.len() - height)
                    };
                    Paragraph::new(lines.into_iter().skip(top).take(height).collect::<Vec<_>>())
                        .render(canvas, buf);
                }
                self.status_line(status.width).render(status, buf);
                self.gauge_line(gauge.width).render(gauge, buf);
            }
        }
        if self.help {
            self.render_help(area, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::Cell;
    use crate::engine::{EngineEvent, Stats};
    use crate::tui::app::{Event, Header};
    use crate::tui::theme::ThemeName;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use std::time::Duration;

    /// The canvas of the tests: a short answer with a fenced Rust block, then EOS padding.
    const TOKENS: [&str; 20] = [
        "Here",
        " is",
        " one",
        ":\n",
        "```",
        "rust",
        "\n",
        "fn",
        " main",
        "()",
        " {",
        "\n",
        "    ",
        "println!(\"hi\");",
        "\n",
        "}",
        "\n",
        "```",
        "",
        "",
    ];
    /// Which positions each step reveals (two per step, blocks of ten).
    const ORDER: [[usize; 2]; 10] = [
        [7, 8],
        [0, 1],
        [4, 5],
        [2, 3],
        [6, 9],
        [10, 11],
        [13, 15],
        [18, 19],
        [12, 14],
        [16, 17],
    ];

    fn frame_after(steps: usize) -> Frame {
        let mut frame = Frame::blank(TOKENS.len(), 0..10, 2, ORDER.len());
        for (s, pair) in ORDER.iter().take(steps).enumerate() {
            for &i in pair {
                frame.cells[i] = Cell {
                    text: TOKENS[i].to_string(),
                    revealed_at: Some(s as u32 + 1),
                    confidence: 0.8,
                    stop: i >= 18,
                    edited_at: None,
                    replaced: None,
                };
            }
        }
        frame.step = steps;
        frame.block = usize::from(steps > 5);
        frame.block_span = if steps > 5 { 10..20 } else { 0..10 };
        frame.nfe = steps;
        frame.elapsed = Duration::from_millis(250 * steps as u64);
        frame
    }

    fn header() -> Header {
        Header {
            model: "llada-tiny".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
        }
    }

    fn app_after(kind: Kind, steps: usize) -> App {
        let mut app = App::new(kind, header(), Theme::new(ThemeName::Dark, false), 0);
        app.ask("Write hello world in Rust.".into());
        app.take_effects();
        app.handle(Event::Engine(EngineEvent::Started(frame_after(0))));
        for s in 1..=steps {
            app.handle(Event::Engine(EngineEvent::Frame(frame_after(s))));
        }
        app
    }

    fn finished(app: &mut App) {
        let stats = Stats {
            steps: 10,
            nfe: 10,
            nfe_saved: 0,
            elapsed: Duration::from_millis(2500),
            tokens_per_s: 8.0,
            stopped_early: false,
        };
        let answer = frame_after(10).answer();
        app.handle(Event::Engine(EngineEvent::Finished {
            answer,
            stats,
            cancelled: false,
        }));
    }

    fn draw(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test backend");
        terminal
            .draw(|f| f.render_widget(app, f.area()))
            .expect("draw");
        terminal
    }

    /// Where `needle` starts on screen.
    fn find(terminal: &Terminal<TestBackend>, needle: &str) -> Option<(u16, u16)> {
        let buf = terminal.backend().buffer();
        (0..buf.area.height).find_map(|y| {
            let line: String = (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect();
            line.find(needle)
                .map(|b| (line[..b].chars().count() as u16, y))
        })
    }

    #[test]
    fn one_shot_first_step_is_all_masks() {
        let terminal = draw(&app_after(Kind::OneShot, 0), 40, 6);
        insta::assert_snapshot!("one_shot_first_step", terminal.backend());
    }

    #[test]
    fn one_shot_mid_run() {
        let terminal = draw(&app_after(Kind::OneShot, 4), 40, 8);
        insta::assert_snapshot!("one_shot_mid_run", terminal.backend());
    }

    /// Step 5 of the usual run, where token editing (LLaDA2.1) also rewrote " main" from
    /// " mian" revealed at step 1.
    fn app_with_an_edit() -> App {
        let mut app = App::new(
            Kind::OneShot,
            header(),
            Theme::new(ThemeName::Dark, false),
            0,
        );
        app.ask("Write hello world in Rust.".into());
        app.take_effects();
        app.handle(Event::Engine(EngineEvent::Started(frame_after(0))));
        for s in 1..=5 {
            let mut frame = frame_after(s);
            if s == 5 {
                frame.cells[8].edited_at = Some(5);
                frame.cells[8].replaced = Some(" mian".into());
                frame.edits = 1;
            }
            app.handle(Event::Engine(EngineEvent::Frame(frame)));
        }
        app
    }

    #[test]
    fn one_shot_step_with_an_edit() {
        let app = app_with_an_edit();
        let theme = app.theme;
        let terminal = draw(&app, 100, 8);
        let buf = terminal.backend().buffer();
        // The rewritten token is drawn in the edit style, not as a fresh reveal.
        let (x, y) = find(&terminal, "main").expect("edited text on screen");
        assert_eq!(buf[(x, y)].style().bg, theme.edited.bg);
        assert_ne!(theme.edited.bg, theme.fresh[0].bg);
        // The status line counts the edits and shows what this step replaced.
        assert!(find(&terminal, "1 edit (mian→main)").is_some());
        insta::assert_snapshot!("one_shot_step_with_an_edit", terminal.backend());
    }

    #[test]
    fn one_shot_finished() {
        let mut app = app_after(Kind::OneShot, 10);
        finished(&mut app);
        let terminal = draw(&app, 40, 10);
        insta::assert_snapshot!("one_shot_finished", terminal.backend());
    }

    #[test]
    fn chat_with_a_cancelled_answer() {
        let mut app = app_after(Kind::Chat, 3);
        app.handle(Event::Engine(EngineEvent::Finished {
            answer: frame_after(3).answer(),
            stats: Stats {
                steps: 3,
                nfe: 3,
                nfe_saved: 0,
                elapsed: Duration::ZERO,
                tokens_per_s: 0.0,
                stopped_early: false,
            },
            cancelled: true,
        }));
        let terminal = draw(&app, 50, 12);
        insta::assert_snapshot!("chat_cancelled", terminal.backend());
    }

    #[test]
    fn chat_help_overlay() {
        let mut app = app_after(Kind::Chat, 10);
        finished(&mut app);
        app.handle(Event::Key(KeyEvent::new(KeyCode::F(1), KeyModifiers::NONE)));
        let terminal = draw(&app, 80, 20);
        insta::assert_snapshot!("chat_help", terminal.backend());
    }

    #[test]
    fn chat_replay_shows_the_scrubbed_step() {
        let mut app = app_after(Kind::Chat, 10);
        finished(&mut app);
        app.handle(Event::Key(KeyEvent::new(
            KeyCode::Char('t'),
            KeyModifiers::CONTROL,
        )));
        for _ in 0..7 {
            app.handle(Event::Key(KeyEvent::new(KeyCode::Left, KeyModifiers::NONE)));
        }
        let terminal = draw(&app, 50, 12);
        insta::assert_snapshot!("chat_replay_step_3", terminal.backend());
    }

    #[test]
    fn a_tiny_terminal_does_not_panic() {
        for kind in [Kind::OneShot, Kind::Chat, Kind::Replay] {
            let mut app = app_after(kind, 4);
            app.help = true;
            for (w, h) in [(20, 5), (1, 1), (5, 2), (0, 0)] {
                draw(&app, w, h);
            }
        }
        let terminal = draw(&app_after(Kind::Chat, 4), 20, 5);
        insta::assert_snapshot!("chat_tiny_20x5", terminal.backend());
    }

    #[test]
    fn masked_fresh_and_highlighted_cells_have_their_styles() {
        let app = app_after(Kind::OneShot, 5);
        let theme = app.theme;
        let terminal = draw(&app, 40, 8);
        let buf = terminal.backend().buffer();
        // Step 5 revealed "()" (and a newline): fresh, with the newest background; step 4's
        // " one" has faded one step.
        let (x, y) = find(&terminal, "()").expect("fresh text on screen");
        assert_eq!(buf[(x, y)].style().bg, theme.fresh[0].bg);
        let (x, y) = find(&terminal, "one").expect("older text on screen");
        assert_eq!(buf[(x, y)].style().bg, theme.fresh[1].bg);
        // "fn" was revealed at step 1, four steps ago: no emphasis left, keyword colour only.
        let (x, y) = find(&terminal, "fn").expect("keyword on screen");
        let fn_style = buf[(x, y)].style();
        assert_ne!(fn_style.bg, theme.fresh[0].bg);
        assert!(
            fn_style.fg.is_some() && fn_style.fg != theme.text.fg,
            "syntax colour, not plain text"
        );
        // Masks (at step 4, when block 0 still has some): the current block's brighter than the
        // next block's.
        let terminal = draw(&app_after(Kind::OneShot, 4), 40, 8);
        let buf = terminal.backend().buffer();
        let masks: Vec<(u16, u16)> = (0..buf.area.height)
            .flat_map(|y| (0..buf.area.width).map(move |x| (x, y)))
            .filter(|&(x, y)| buf[(x, y)].symbol() == "░")
            .collect();
        let fgs: Vec<_> = masks.iter().map(|&(x, y)| buf[(x, y)].style().fg).collect();
        assert!(
            fgs.contains(&theme.mask_active.fg) && fgs.contains(&theme.mask_waiting.fg),
            "{fgs:?}"
        );
    }

    #[test]
    fn no_color_marks_states_without_colours() {
        let mut app = app_after(Kind::OneShot, 4);
        app.theme = Theme::new(ThemeName::Dark, true);
        let terminal = draw(&app, 40, 8);
        let buf = terminal.backend().buffer();
        let colours = (0..buf.area.height)
            .flat_map(|y| (0..buf.area.width).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                buf[(x, y)]
                    .style()
                    .fg
                    .is_some_and(|c| c != ratatui::style::Color::Reset)
            })
            .count();
        assert_eq!(colours, 0, "NO_COLOR: no foreground colours");
        let (x, y) = find(&terminal, "one").expect("fresh text");
        assert!(buf[(x, y)]
            .style()
            .add_modifier
            .contains(ratatui::style::Modifier::REVERSED));
    }

    #[test]
    fn control_characters_from_the_model_are_drawn_as_symbols() {
        let mut app = app_after(Kind::OneShot, 0);
        let mut frame = frame_after(0);
        frame.cells[0] = Cell {
            text: "a\x1b[31mb\x07".into(),
            revealed_at: Some(1),
            confidence: 0.5,
            stop: false,
            edited_at: None,
            replaced: None,
        };
        frame.step = 1;
        app.handle(Event::Engine(EngineEvent::Frame(frame)));
        let terminal = draw(&app, 40, 6);
        assert!(find(&terminal, "a␛[31mb␇").is_some());
        assert_eq!(printable("x\x1by\tz"), "x␛y    z");
    }

    #[test]
    fn wide_characters_wrap_by_columns() {
        let mut app = app_after(Kind::OneShot, 0);
        let mut frame = frame_after(0);
        frame.cells[0] = Cell {
            text: "日本語日本語".into(),
            revealed_at: Some(1),
            confidence: 0.5,
            stop: false,
            edited_at: None,
            replaced: None,
        };
        frame.step = 1;
        let (lines, _) = canvas_lines(&frame, &app, 5, CanvasMode::Answer);
        assert_eq!(
            lines.iter().map(|l| l.width()).collect::<Vec<_>>(),
            vec![4, 4, 4]
        );
        app.handle(Event::Engine(EngineEvent::Frame(frame)));
    }
}
