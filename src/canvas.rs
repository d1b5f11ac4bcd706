//! The canvas as text: one display piece per position, for the live view, traces and replays.
//!
//! This is the one place token ids become display text. A [`FrameBuilder`] turns each engine
//! [`Step`] into a [`Frame`], plain data that crosses to the UI thread: the UI never sees a
//! tokenizer or a tensor.
//!
//! Each revealed token is decoded on its own (cached per id). A token that holds only part of a
//! multi-byte character decodes to U+FFFD on its own; such a run of neighbours is decoded
//! together and its text given to the first position, so the layout never shows broken
//! characters (a character still missing its other half shows as nothing until it arrives).

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::diffusion::Step;
use crate::tokenizer::Tokenizer;

/// Longest run of tokens searched to complete a split character (UTF-8 needs at most 4 bytes).
const MAX_SPLIT: usize = 4;

/// One canvas position as the view draws it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Display text; empty for special tokens and for the tail of a split character.
    pub text: String,
    /// Step at which the position was revealed; `None` while masked.
    pub revealed_at: Option<u32>,
    /// The sampler's confidence when it was revealed.
    pub confidence: f32,
    /// A stop token (EOS, EOT or pad): the answer ends at the first one.
    pub stop: bool,
    /// Step at which token editing last rewrote the position (LLaDA2.1), if it did.
    #[serde(default)]
    pub edited_at: Option<u32>,
    /// The text that edit replaced.
    #[serde(default)]
    pub replaced: Option<String>,
}

impl Cell {
    pub fn masked() -> Cell {
        Cell {
            text: String::new(),
            revealed_at: None,
            confidence: 0.0,
            stop: false,
            edited_at: None,
            replaced: None,
        }
    }

    pub fn is_masked(&self) -> bool {
        self.revealed_at.is_none()
    }
}

/// The canvas after one step (or before the first, [`Frame::blank`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Steps done so far (0 before the first).
    pub step: usize,
    pub total: usize,
    pub block: usize,
    pub blocks: usize,
    /// The block being denoised, in canvas positions.
    pub block_span: Range<usize>,
    pub nfe: usize,
    pub elapsed: Duration,
    pub cells: Vec<Cell>,
    /// Token edits so far (LLaDA2.1).
    pub edits: usize,
}

impl Frame {
    /// The fully masked canvas before the first step.
    pub fn blank(
        gen_length: usize,
        first_block: Range<usize>,
        blocks: usize,
        total: usize,
    ) -> Frame {
        Frame {
            step: 0,
            total,
            block: 0,
            blocks,
            block_span: first_block,
            nfe: 0,
            elapsed: Duration::ZERO,
            cells: vec![Cell::masked(); gen_length],
            edits: 0,
        }
    }

    pub fn revealed(&self) -> usize {
        self.cells.iter().filter(|c| !c.is_masked()).count()
    }

    /// The answer: the text before the first stop token (masked positions count as nothing).
    pub fn answer(&self) -> String {
        self.cells
            .iter()
            .take_while(|c| !c.stop)
            .map(|c| c.text.as_str())
            .collect()
    }

    /// Canvas tokens revealed per second so far.
    pub fn tokens_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.revealed() as f64 / secs
        } else {
            0.0
        }
    }
}

/// Builds frames from engine steps for one generation.
pub struct FrameBuilder<'a> {
    tok: &'a Tokenizer,
    texts: HashMap<u32, String>,
    revealed_at: Vec<Option<u32>>,
    confidence: Vec<f32>,
    /// (step, replaced text) of each position's last edit.
    edited: Vec<Option<(u32, String)>>,
    edits: usize,
}

impl<'a> FrameBuilder<'a> {
    pub fn new(tok: &'a Tokenizer, gen_length: usize) -> Self {
        Self {
            tok,
            texts: HashMap::new(),
            revealed_at: vec![None; gen_length],
            confidence: vec![0.0; gen_length],
            edited: vec![None; gen_length],
            edits: 0,
        }
    }

    fn text(&mut self, id: u32) -> Result<String> {
        if let Some(t) = self.texts.get(&id) {
            return Ok(t.clone());
        }
        let t = self.tok.decode(&[id])?;
        self.texts.insert(id, t.clone());
        Ok(t)
    }

    /// The frame after `step`.
    pub fn frame(&mut self, step: &Step) -> Result<Frame> {
        for r in step.revealed {
            self.revealed_at[r.position] = Some(step.index as u32 + 1);
            self.confidence[r.position] = r.confidence;
        }
        for e in step.edited {
            let old = self.text(e.old)?;
            self.edited[e.position] = Some((step.index as u32 + 1, old));
            self.confidence[e.position] = e.confidence;
            self.edits += 1;
        }
        let mask = self.tok.special.mask;
        let mut cells = Vec::with_capacity(step.canvas.len());
        for (i, &id) in step.canvas.iter().enumerate() {
            let revealed_at = self.revealed_at[i].or((id != mask).then_some(0));
            cells.push(match revealed_at {
                None => Cell::masked(),
                Some(at) => Cell {
                    text: self.text(id)?,
                    revealed_at: Some(at),
                    confidence: self.confidence[i],
                    stop: self.tok.special.stops.contains(&id),
                    edited_at: self.edited[i].as_ref().map(|e| e.0),
                    replaced: self.edited[i].as_ref().map(|e| e.1.clone()),
                },
            });
        }
        self.join_split_characters(step.canvas, &mut cells)?;
        Ok(Frame {
            step: step.index + 1,
            total: step.total,
            block: step.block,
            blocks: step.blocks,
            block_span: step.block_span.clone(),
            nfe: step.nfe,
            elapsed: step.elapsed,
            cells,
            edits: self.edits,
        })
    }

    /// Decodes runs of revealed tokens together where a token alone is an incomplete character.
    fn join_split_characters(&mut self, ids: &[u32], cells: &mut [Cell]) -> Result<()> {
        let mut i = 0;
        while i < cells.len() {
            if !cells[i].text.contains('\u{FFFD}') {
                i += 1;
                continue;
            }
            let run_end = (i + 1..cells.len())
                .find(|&j| cells[j].is_masked())
                .unwrap_or(cells.len());
            let fixed = (i + 1..run_end.min(i + MAX_SPLIT)).find_map(|j| {
                let text = self.tok.decode(&ids[i..=j]).ok()?;
                (!text.contains('\u{FFFD}')).then_some((j, text))
            });
            match fixed {
                Some((j, text)) => {
                    cells[i].text = text;
                    for cell in &mut cells[i + 1..=j] {
                        cell.text.clear();
                    }
                    i = j + 1;
                }
                None => {
                    // The rest of the character is still masked (or it was never valid text).
                    cells[i].text.clear();
                    i += 1;
                }
            }
        }
        Ok(())
    }
}
