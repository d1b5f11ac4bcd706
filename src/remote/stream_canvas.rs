//! The canvas a streamed answer builds, as [`Frame`]s for the live view.
//!
//! Three kinds of chunk arrive:
//! - dcoder's diffusing chunks carry the step in full ([`crate::api::WireFrame`]): the frame is
//!   exact (reveal steps, confidences, edits, block bounds), as for a local model;
//! - Mercury's diffusing chunks (`diffusion_meta.diffusion_content`) carry the whole current
//!   canvas as text, which *replaces* the previous one: one cell per character, a character that
//!   changed since the last canvas counts as revealed at this step, and noise (control
//!   characters, U+FFFD; Mercury's early canvases hold them) is drawn as a mask;
//! - plain OpenAI chunks carry text to *append*. After a diffusing chunk, though, text without
//!   `diffusion_meta` is taken as the final canvas and replaces it: a diffusing stream's chunks
//!   are whole canvases, and appending one would write the answer twice.

use std::time::{Duration, Instant};

use crate::api::ChatChunk;
use crate::canvas::{Cell, Frame};

/// What a streamed chunk holds that the canvas needs.
pub struct StreamCanvas {
    cells: Vec<Cell>,
    /// Canvas updates so far.
    step: usize,
    started: Instant,
    /// The last exact frame, when the server sends them.
    exact: Option<Frame>,
    /// A diffusing chunk has been seen.
    diffusing: bool,
    /// dcoder serve's answer, sent after its last exact frame: the server's own decoding of the
    /// whole canvas (cut at `stop` strings), which the frame's per-position texts may not equal.
    final_text: Option<String>,
}

impl StreamCanvas {
    pub fn new(started: Instant) -> StreamCanvas {
        StreamCanvas {
            cells: Vec::new(),
            step: 0,
            started,
            exact: None,
            diffusing: false,
            final_text: None,
        }
    }

    /// Canvas updates so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Forward passes, when the server reports them (dcoder's frames); else 0.
    pub fn nfe(&self) -> usize {
        self.exact.as_ref().map_or(0, |f| f.nfe)
    }

    /// Applies a chunk; the frame to draw when it changed the canvas.
    pub fn apply(&mut self, chunk: ChatChunk) -> Option<Frame> {
        let mut diffusing = chunk.diffusion_meta.filter(|m| m.diffusion_content);
        let choice = chunk.choices.into_iter().next();
        let content = choice.and_then(|c| c.delta.and_then(|d| d.content).or(c.text));
        if diffusing.is_none() && self.diffusing && content.as_ref().is_some_and(|t| !t.is_empty())
        {
            diffusing = Some(crate::api::DiffusionMeta {
                diffusion_content: true,
                diffusion_progress: 1.0,
            });
        }
        if let Some(meta) = diffusing {
            self.diffusing = true;
            if let Some(frame) = chunk.dcoder.and_then(|w| w.into_frame()) {
                self.step += 1;
                self.cells = frame.cells.clone();
                self.exact = Some(frame.clone());
                return Some(frame);
            }
            let text = content?;
            if self.exact.is_some() {
                // The answer after the last step: the view keeps the exact frame.
                self.final_text = Some(text);
                return None;
            }
            self.step += 1;
            let step = self.step as u32;
            let cells = text
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if is_noise(c) {
                        return Cell::masked();
                    }
                    let text = c.to_string();
                    let kept = self
                        .cells
                        .get(i)
                        .filter(|old| !old.is_masked() && old.text == text)
                        .and_then(|old| old.revealed_at);
                    revealed(text, kept.unwrap_or(step))
                })
                .collect();
            self.cells = cells;
            // Mercury reports progress, not a step count: the total the progress implies.
            let total = match meta.diffusion_progress {
                p if p > 0.0 && p <= 1.0 => {
                    ((self.step as f64 / p).round() as usize).max(self.step)
                }
                _ => self.step,
            };
            return Some(self.frame(total));
        }
        let text = content.filter(|t| !t.is_empty())?;
        self.step += 1;
        self.exact = None;
        let step = self.step as u32;
        self.cells.extend(text.chars().map(|c| match is_noise(c) {
            true => Cell::masked(),
            false => revealed(c.to_string(), step),
        }));
        Some(self.frame(self.step))
    }

    fn frame(&self, total: usize) -> Frame {
        Frame {
            step: self.step,
            total,
            block: 0,
            blocks: 1,
            block_span: 0..self.cells.len(),
            nfe: 0,
            elapsed: self.elapsed(),
            cells: self.cells.clone(),
            edits: 0,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The answer: the exact frame's, else the canvas text with masked (noise) cells left out.
    pub fn answer(&self) -> String {
        if let Some(text) = &self.final_text {
            return text.clone();
        }
        match &self.exact {
            Some(frame) => frame.answer(),
            None => self
                .cells
                .iter()
                .filter(|c| !c.is_masked())
                .map(|c| c.text.as_str())
                .collect(),
        }
    }
}

fn revealed(text: String, at: u32) -> Cell {
    Cell {
        text,
        revealed_at: Some(at),
        ..Cell::masked()
    }
}

/// Characters that are not text: control characters other than newline and tab (C0, DEL, C1)
/// and the replacement character. They never reach the terminal.
fn is_noise(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || c == '\u{FFFD}'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChunkChoice, Delta, DiffusionMeta, WireFrame};

    fn chunk(content: Option<&str>, progress: Option<f64>) -> ChatChunk {
        ChatChunk {
            id: "c".into(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: "m".into(),
            choices: vec![ChunkChoice {
                index: 0,
                delta: Some(Delta {
                    role: None,
                    content: content.map(str::to_string),
                }),
                text: None,
                finish_reason: None,
            }],
            diffusion_meta: progress.map(|p| DiffusionMeta {
                diffusion_content: true,
                diffusion_progress: p,
            }),
            dcoder: None,
            usage: None,
            dcoder_run: None,
        }
    }

    #[test]
    fn diffusing_chunks_replace_the_canvas_and_noise_is_masked() {
        let mut canvas = StreamCanvas::new(Instant::now());
        let first = canvas
            .apply(chunk(Some("d\u{1b}f\u{7}x\u{fffd}"), Some(0.25)))
            .expect("a frame");
        assert_eq!(first.cells.len(), 6);
        let masked: Vec<bool> = first.cells.iter().map(Cell::is_masked).collect();
        assert_eq!(masked, [false, true, false, true, false, true]);
        assert_eq!((first.step, first.total), (1, 4));
        assert!(first
            .cells
            .iter()
            .all(|c| !c.text.chars().any(char::is_control)));
        let second = canvas
            .apply(chunk(Some("def main"), Some(1.0)))
            .expect("a frame");
        // Replaced, not appended; `d` stayed from step 1, the rest is new at step 2.
        assert_eq!(canvas.answer(), "def main");
        assert_eq!(second.cells[0].revealed_at, Some(1));
        assert_eq!(second.cells[1].revealed_at, Some(2));
        assert_eq!((second.step, second.total), (2, 2));
        // The final chunk: an empty delta changes nothing.
        assert!(canvas.apply(chunk(None, None)).is_none());
        assert_eq!(canvas.answer(), "def main");
        // Text without diffusion_meta after diffusing chunks is the final canvas, not a delta.
        canvas.apply(chunk(Some("def main():"), None));
        assert_eq!(canvas.answer(), "def main():");
    }

    #[test]
    fn plain_chunks_append() {
        let mut canvas = StreamCanvas::new(Instant::now());
        canvas.apply(chunk(Some("fn "), None));
        let frame = canvas.apply(chunk(Some("main"), None)).expect("a frame");
        assert_eq!(canvas.answer(), "fn main");
        assert_eq!(frame.cells[0].revealed_at, Some(1));
        assert_eq!(frame.cells[3].revealed_at, Some(2));
        assert!(canvas.apply(chunk(Some(""), None)).is_none());
    }

    #[test]
    fn a_dcoder_wire_frame_is_drawn_exactly() {
        let mut exact = Frame::blank(3, 0..3, 1, 5);
        exact.step = 2;
        exact.nfe = 2;
        exact.cells[0].text = "ok".into();
        exact.cells[0].revealed_at = Some(2);
        exact.cells[1].stop = true;
        exact.cells[1].revealed_at = Some(1);
        let mut c = chunk(Some("ok_"), Some(0.5));
        c.dcoder = Some(WireFrame::from(&exact));
        let mut canvas = StreamCanvas::new(Instant::now());
        assert_eq!(canvas.apply(c), Some(exact));
        assert_eq!(canvas.answer(), "ok");
        assert_eq!(canvas.nfe(), 2);
    }
}
