//! The state of one generation that every driver shares: the sequence, the decision rule, the
//! counters, and the report of each step to the caller. A driver decides which forward pass
//! gives a step's logits; [`Run::reveal`] does the rest of the step the same way for all.

use std::ops::{ControlFlow, Range};
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, SeedableRng};

use super::decision::{entropies, eos_last_ids, neg_inf_bias, Rule};
use super::plan::Plan;
use super::reveal::{select, Transfer};
use super::step::{Edit, Generation, Reveal, SpecialIds, Step};

/// Why a driver stopped early.
pub enum Stop {
    Cancelled,
    AnswerFinal,
}

/// How a driver ended: the canvas length it produced, and why it stopped early, if it did.
pub type Outcome = (usize, Option<Stop>);

/// The logit biases of a plan: `-inf` at EOS before choosing (`--suppress-eos`), and at the
/// ids `--eos-last` hides from the confidence.
pub fn biases(
    plan: &Plan,
    special: &SpecialIds,
    vocab: usize,
    device: &Device,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    let logit_bias = match plan.suppress_eos {
        true => Some(neg_inf_bias(&[special.eos], vocab, device)?),
        false => None,
    };
    let confidence_bias = match plan.eos_last {
        true => Some(neg_inf_bias(
            &eos_last_ids(special.eos, special.eot, plan.decision.temperature()),
            vocab,
            device,
        )?),
        false => None,
    };
    Ok((logit_bias, confidence_bias))
}

pub struct Run<'a, F> {
    pub plan: &'a Plan,
    pub special: &'a SpecialIds,
    /// Prompt, canvas, then the suffix when infilling; unrevealed positions hold the mask id.
    pub seq: Vec<u32>,
    pub prompt_len: usize,
    /// The canvas blocks (`Plan::blocks`).
    pub blocks: Vec<Range<usize>>,
    /// Forward passes so far.
    pub nfe: usize,
    rule: Rule<'a>,
    rng: StdRng,
    start: Instant,
    steps: usize,
    total: usize,
    revealed: Vec<Reveal>,
    edited: Vec<Edit>,
    edits: usize,
    step_edits: usize,
    on_step: F,
}

impl<'a, F: FnMut(&Step) -> ControlFlow<()>> Run<'a, F> {
    pub fn new(
        plan: &'a Plan,
        special: &'a SpecialIds,
        prompt: &[u32],
        suffix: &[u32],
        rule: Rule<'a>,
        on_step: F,
    ) -> Self {
        let mut seq = prompt.to_vec();
        seq.resize(prompt.len() + plan.canvas_len(prompt.len()), special.mask);
        seq.extend_from_slice(suffix);
        Run {
            plan,
            special,
            seq,
            prompt_len: prompt.len(),
            blocks: plan.blocks(prompt.len()),
            nfe: 0,
            rule,
            rng: StdRng::seed_from_u64(plan.seed),
            start: Instant::now(),
            steps: 0,
            total: plan.total_steps(prompt.len()),
            revealed: Vec::new(),
            edited: Vec::new(),
            edits: 0,
            step_edits: 0,
            on_step,
        }
    }

    /// Absolute positions of the masked cells of canvas block `span`.
    pub fn masked(&self, span: &Range<usize>) -> Vec<u32> {
        let p = self.prompt_len;
        span.clone()
            .filter(|&j| self.seq[p + j] == self.special.mask)
            .map(|j| (p + j) as u32)
            .collect()
    }

    /// Decides the `masked` positions from their `logits` (`[rows, vocab]`), reveals what
    /// `transfer` allows, and reports the step.
    pub fn reveal(
        &mut self,
        logits: &Tensor,
        masked: &[u32],
        transfer: Transfer,
        block: usize,
    ) -> Result<ControlFlow<Stop>> {
        self.reveal_and_edit(logits, masked, transfer, None, block)
    }

    /// Like [`Run::reveal`] over `rows` (absolute positions, masked or not, one per logits
    /// row): reveals what `transfer` allows among the masked ones and, with an edit threshold,
    /// rewrites every revealed answer position whose argmax changed to a token more probable
    /// than the threshold (LLaDA2.1). Returns how many positions it rewrote.
    pub fn reveal_and_edit(
        &mut self,
        logits: &Tensor,
        rows: &[u32],
        transfer: Transfer,
        edit_threshold: Option<f64>,
        block: usize,
    ) -> Result<ControlFlow<Stop>> {
        let all = self.rule.decide(logits, &mut self.rng)?;
        let mask = self.special.mask;
        let (masked, decisions): (Vec<u32>, Vec<_>) = rows
            .iter()
            .zip(&all)
            .filter(|(&pos, _)| self.seq[pos as usize] == mask)
            .map(|(&pos, d)| (pos, *d))
            .unzip();
        let logits = match masked.len() == rows.len() {
            true => logits.clone(),
            false => {
                let keep: Vec<u32> = (0..rows.len() as u32)
                    .filter(|&r| self.seq[rows[r as usize] as usize] == mask)
                    .collect();
                let keep = Tensor::from_slice(&keep, keep.len(), logits.device())?;
                logits.index_select(&keep, 0)?
            }
        };
        let p = self.prompt_len;
        let shown = self.plan.gen_length;
        // Edits first, judged on the tokens as they were before this step (a position revealed
        // now is not edited now).
        self.edited.clear();
        self.step_edits = 0;
        if let Some(threshold) = edit_threshold {
            let threshold = threshold as f32;
            for (&pos, d) in rows.iter().zip(&all) {
                let (pos, old) = (pos as usize, self.seq[pos as usize]);
                if pos >= p && old != mask && old != d.token && d.confidence > threshold {
                    self.seq[pos] = d.token;
                    self.edits += 1;
                    self.step_edits += 1;
                    if pos - p < shown {
                        self.edited.push(Edit {
                            position: pos - p,
                            old,
                            new: d.token,
                            confidence: d.confidence,
                        });
                    }
                }
            }
        }
        let masked = &masked[..];
        let entropies = match transfer {
            Transfer::EntropyBound(_) => entropies(
                &logits,
                self.plan.decision.temperature(),
                self.rule.logit_bias(),
            )?,
            _ => Vec::new(),
        };
        self.revealed.clear();
        let rows = select(
            &decisions,
            &entropies,
            transfer,
            self.plan.alg_temp(),
            &mut self.rng,
        );
        for row in rows {
            let pos = masked[row] as usize;
            self.seq[pos] = decisions[row].token;
            // Positions past `--gen-length` (a whole last block) are denoised, not shown.
            if pos - p < shown {
                self.revealed.push(Reveal {
                    position: pos - p,
                    token: decisions[row].token,
                    confidence: decisions[row].confidence,
                });
            }
        }
        self.revealed.sort_by_key(|r| r.position);
        let canvas = &mut self.seq[p..];
        // With token editing a revealed token can still change: no answer is final mid-block.
        let done = self.plan.early_stop
            && edit_threshold.is_none()
            && canvas.contains(&self.special.mask)
            && answer_is_final(canvas, self.special);
        if done {
            for t in canvas.iter_mut().filter(|t| **t == self.special.mask) {
                *t = self.special.eos;
            }
        }
        let span = &self.blocks[block];
        let step = Step {
            index: self.steps,
            total: self.total,
            block,
            blocks: self.blocks.len(),
            block_span: span.start.min(shown)..span.end.min(shown),
            canvas: &self.seq[p..p + shown],
            revealed: &self.revealed,
            edited: &self.edited,
            nfe: self.nfe,
            elapsed: self.start.elapsed(),
        };
        self.steps += 1;
        if (self.on_step)(&step).is_break() {
            return Ok(ControlFlow::Break(Stop::Cancelled));
        }
        Ok(if done {
            ControlFlow::Break(Stop::AnswerFinal)
        } else {
            ControlFlow::Continue(())
        })
    }

    /// Positions the last step rewrote (token editing).
    pub fn step_edits(&self) -> usize {
        self.step_edits
    }

    /// Steps reported so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    pub fn finish(self, (end, stop): Outcome) -> Generation {
        let end = end.min(self.plan.gen_length);
        Generation {
            canvas: self.seq[self.prompt_len..self.prompt_len + end].to_vec(),
            steps: self.steps,
            nfe: self.nfe,
            elapsed: self.start.elapsed(),
            cancelled: matches!(stop, Some(Stop::Cancelled)),
            stopped_early: matches!(stop, Some(Stop::AnswerFinal)),
            edits: self.edits,
        }
    }
}

/// Token ids as a `[1, n]` tensor.
pub fn ids(tokens: &[u32], device: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_slice(tokens, (1, tokens.len()), device)
}

pub fn positions(range: Range<usize>) -> Vec<u32> {
    range.map(|p| p as u32).collect()
}

/// True when a stop token is revealed and every position before the first one is revealed:
/// nothing later can change the answer, since revealed tokens are never re-masked.
fn answer_is_final(canvas: &[u32], special: &SpecialIds) -> bool {
    match canvas.iter().position(|t| special.stops.contains(t)) {
        Some(stop) => !canvas[..stop].contains(&special.mask),
        None => false,
    }
}
