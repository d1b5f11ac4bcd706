//! `--trace FILE`: every denoising step as one JSON line, and `dcoder replay FILE` to play it.
//!
//! Format (version 2; version 1 is read too), one JSON object per line, distinguished by
//! `type`:
//! - `header`: `version`, `model`, `arch`, `prompt` (the text sent to the model), `prompt_tokens`,
//!   `gen_length`, `blocks`, `total_steps`, `block_length` (null for Dream's timestep schedule),
//!   `mask_token`;
//! - `step`, one per step: `step` (1-based), `block`, `block_start`, `block_end` (canvas
//!   positions), `nfe`, `elapsed_s`, and `revealed`: the positions revealed by this step, each
//!   `{position, token, text, confidence, stop}`, where `text` is the display text of that
//!   position (see canvas.rs) and `stop` marks EOS/EOT/pad; and (version 2) `edited`: the
//!   revealed positions this step rewrote (LLaDA2.1 token editing), each `{position, old,
//!   new, old_text, text, confidence, stop}`;
//! - `end`: `text` (the answer), `tokens` (the whole canvas), `steps`, `nfe`, `elapsed_s`,
//!   `cancelled`, `stopped_early`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::canvas::{Cell, Frame};
use crate::diffusion::{Generation, Plan, Step};
use crate::session::Session;

const VERSION: u32 = 2;
/// Versions `read` accepts: version 1 has no `edited` lists.
const READS: [u32; 2] = [1, 2];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    Header {
        version: u32,
        model: String,
        arch: String,
        prompt: String,
        prompt_tokens: Vec<u32>,
        gen_length: usize,
        blocks: usize,
        total_steps: usize,
        block_length: Option<usize>,
        mask_token: u32,
    },
    Step {
        step: usize,
        block: usize,
        block_start: usize,
        block_end: usize,
        nfe: usize,
        elapsed_s: f64,
        revealed: Vec<Revealed>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        edited: Vec<Edited>,
    },
    End {
        text: String,
        tokens: Vec<u32>,
        steps: usize,
        nfe: usize,
        elapsed_s: f64,
        cancelled: bool,
        stopped_early: bool,
    },
}

/// A position token editing rewrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edited {
    pub position: usize,
    pub old: u32,
    pub new: u32,
    pub old_text: String,
    pub text: String,
    pub confidence: f32,
    pub stop: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revealed {
    pub position: usize,
    pub token: u32,
    pub text: String,
    pub confidence: f32,
    pub stop: bool,
}

pub struct TraceWriter {
    out: BufWriter<File>,
    path: String,
}

impl TraceWriter {
    pub fn create(
        path: &Path,
        session: &Session,
        prompt: &str,
        prompt_tokens: &[u32],
        plan: &Plan,
    ) -> Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("--trace {}: cannot create the file", path.display()))?;
        let mut w = TraceWriter {
            out: BufWriter::new(file),
            path: path.display().to_string(),
        };
        w.write(&Record::Header {
            version: VERSION,
            model: session.label.clone(),
            arch: session.arch.name().to_string(),
            prompt: prompt.to_string(),
            prompt_tokens: prompt_tokens.to_vec(),
            gen_length: plan.gen_length,
            blocks: plan.blocks(prompt_tokens.len()).len(),
            total_steps: plan.total_steps(prompt_tokens.len()),
            block_length: plan.block_length(),
            mask_token: session.tokenizer.special.mask,
        })?;
        Ok(w)
    }

    fn write(&mut self, record: &Record) -> Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        writeln!(self.out).with_context(|| format!("writing the trace {}", self.path))
    }

    pub fn step(&mut self, step: &Step, frame: &Frame) -> Result<()> {
        let revealed = step
            .revealed
            .iter()
            .map(|r| Revealed {
                position: r.position,
                token: r.token,
                text: frame.cells[r.position].text.clone(),
                confidence: r.confidence,
                stop: frame.cells[r.position].stop,
            })
            .collect();
        let edited = step
            .edited
            .iter()
            .map(|e| {
                let cell = &frame.cells[e.position];
                Edited {
                    position: e.position,
                    old: e.old,
                    new: e.new,
                    old_text: cell.replaced.clone().unwrap_or_default(),
                    text: cell.text.clone(),
                    confidence: e.confidence,
                    stop: cell.stop,
                }
            })
            .collect();
        self.write(&Record::Step {
            step: step.index + 1,
            block: step.block,
            block_start: step.block_span.start,
            block_end: step.block_span.end,
            nfe: step.nfe,
            elapsed_s: step.elapsed.as_secs_f64(),
            revealed,
            edited,
        })
    }

    pub fn end(&mut self, g: &Generation, answer: &str) -> Result<()> {
        self.write(&Record::End {
            text: answer.to_string(),
            tokens: g.canvas.clone(),
            steps: g.steps,
            nfe: g.nfe,
            elapsed_s: g.elapsed.as_secs_f64(),
            cancelled: g.cancelled,
            stopped_early: g.stopped_early,
        })?;
        self.out
            .flush()
            .with_context(|| format!("writing the trace {}", self.path))
    }
}

/// A trace read back: the model's name and every frame, the blank canvas first.
#[derive(Debug)]
pub struct Replay {
    pub model: String,
    pub prompt: String,
    pub frames: Vec<Frame>,
}

/// Reads a trace written by `--trace`; errors name the file and line.
pub fn read(path: &Path) -> Result<Replay> {
    let file =
        File::open(path).with_context(|| format!("{}: cannot open the trace", path.display()))?;
    let mut lines = BufReader::new(file).lines().enumerate();
    let parse = |n: usize, line: std::io::Result<String>| -> Result<Record> {
        let line =
            line.with_context(|| format!("{}: cannot read line {}", path.display(), n + 1))?;
        serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: not a dcoder trace record",
                path.display(),
                n + 1
            )
        })
    };
    let Some((n, first)) = lines.next() else {
        bail!("{}: empty file, not a dcoder trace", path.display())
    };
    let Record::Header {
        version,
        model,
        prompt,
        gen_length,
        blocks,
        total_steps,
        block_length,
        ..
    } = parse(n, first)?
    else {
        bail!("{}: the first line is not a trace header", path.display());
    };
    if !READS.contains(&version) {
        bail!(
            "{}: trace version {version}, this dcoder reads versions 1 and {VERSION}",
            path.display()
        );
    }
    let first_block = 0..block_length.unwrap_or(gen_length).min(gen_length);
    let mut frame = Frame::blank(gen_length, first_block, blocks, total_steps);
    let mut frames = vec![frame.clone()];
    for (n, line) in lines {
        match parse(n, line)? {
            Record::Step {
                step,
                block,
                block_start,
                block_end,
                nfe,
                elapsed_s,
                revealed,
                edited,
            } => {
                for r in revealed {
                    let Some(cell) = frame.cells.get_mut(r.position) else {
                        bail!(
                            "{} line {}: position {} is outside the {gen_length}-token canvas",
                            path.display(),
                            n + 1,
                            r.position
                        );
                    };
                    *cell = Cell {
                        text: r.text,
                        revealed_at: Some(step as u32),
                        confidence: r.confidence,
                        stop: r.stop,
                        edited_at: None,
                        replaced: None,
                    };
                }
                for e in edited {
                    let Some(cell) = frame.cells.get_mut(e.position) else {
                        bail!(
                            "{} line {}: edited position {} is outside the {gen_length}-token canvas",
                            path.display(),
                            n + 1,
                            e.position
                        );
                    };
                    cell.text = e.text;
                    cell.stop = e.stop;
                    cell.confidence = e.confidence;
                    cell.edited_at = Some(step as u32);
                    cell.replaced = Some(e.old_text);
                    frame.edits += 1;
                }
                frame.step = step;
                frame.block = block;
                frame.block_span = block_start..block_end;
                frame.nfe = nfe;
                frame.elapsed = Duration::from_secs_f64(elapsed_s.max(0.0));
                frames.push(frame.clone());
            }
            Record::End { .. } => break,
            Record::Header { .. } => bail!("{} line {}: a second header", path.display(), n + 1),
        }
    }
    Ok(Replay {
        model,
        prompt,
        frames,
    })
}
