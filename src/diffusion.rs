//! The denoising loop: a canvas of masks after the prompt, revealed a few positions per step.
//!
//! This is LLaDA's `generate()` (ML-GSAI/LLaDA `generate.py`, reference-spec 1.6): the canvas
//! is split into `gen_length / block_length` semi-autoregressive blocks, each denoised in
//! `steps / blocks` steps; step `i` of a block reveals `transfer_counts(..)[i]` positions, the
//! most confident masked positions of the current block. Revealed tokens are never re-masked.
//!
//! The engine knows nothing of terminals or threads: it reports each step through a callback
//! whose return value can stop it, like llama.cpp's `diffusion_step_callback_t`.

use std::ops::{ControlFlow, Range};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::{Device, IndexOp, Tensor};
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::sampler::{eos_last_ids, neg_inf_bias, Decision, LladaRule};

/// How a step ranks the masked positions it may reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Most confident first: softmax probability of the chosen token (LLaDA `low_confidence`).
    Confidence,
    /// Random order (LLaDA `random`).
    Random,
}

/// Sampler parameters, already checked (see `settings::resolve`).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Canvas length: positions generated after the prompt.
    pub gen_length: usize,
    /// Length of one semi-autoregressive block; `gen_length` is a whole number of blocks.
    pub block_length: usize,
    /// Total denoising steps, a whole number per block.
    pub steps: usize,
    pub strategy: Strategy,
    /// 0 is greedy; above 0 samples with LLaDA's float64 Gumbel-max.
    pub temperature: f64,
    /// Classifier-free guidance: `un + (w + 1)(cond - un)`, the unconditional row having every
    /// prompt position masked.
    pub cfg_scale: f64,
    /// Never choose EOS (`logits_eos_inf`).
    pub suppress_eos: bool,
    /// Reveal EOS/EOT last (`confidence_eos_eot_inf`, as the reference code behaves).
    pub eos_last: bool,
    pub seed: u64,
}

/// The token ids the loop needs, read from the model's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub mask: u32,
    pub eos: u32,
    pub eot: Option<u32>,
}

/// A network that predicts tokens at masked positions.
pub trait Denoiser {
    /// Logits of the positions `rows` of every sequence in `ids` (`[batch, seq]`), as
    /// `[batch, rows.len(), vocab]`. Only the requested rows go through the LM head.
    fn logits(&mut self, ids: &Tensor, rows: &[u32]) -> candle_core::Result<Tensor>;
    fn vocab_size(&self) -> usize;
    fn device(&self) -> &Device;
}

/// One position revealed by a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reveal {
    /// Index into the canvas (0 is the first generated position).
    pub position: usize,
    pub token: u32,
    pub confidence: f32,
}

/// What the loop reports after every step.
#[derive(Debug)]
pub struct Step<'a> {
    /// 0-based index of this step.
    pub index: usize,
    /// Steps planned in all.
    pub total: usize,
    pub block: usize,
    pub blocks: usize,
    /// The current block, in canvas positions.
    pub block_span: Range<usize>,
    /// The whole canvas after this step; unrevealed positions hold the mask id.
    pub canvas: &'a [u32],
    pub revealed: &'a [Reveal],
    /// Model forward passes so far (a guided step's two rows are one batched pass).
    pub nfe: usize,
    /// Time spent in the loop so far.
    pub elapsed: Duration,
}

/// The result of one run of the loop.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// `gen_length` ids; masks remain only if the run was cancelled.
    pub canvas: Vec<u32>,
    pub steps: usize,
    pub nfe: usize,
    pub elapsed: Duration,
    pub cancelled: bool,
}

/// Tokens revealed at each of `steps` steps for `masked` masked positions: the base share, and
/// one more for each of the first `masked % steps` steps (LLaDA `get_num_transfer_tokens`).
pub fn transfer_counts(masked: usize, steps: usize) -> Vec<usize> {
    let (base, extra) = (masked / steps, masked % steps);
    (0..steps).map(|i| base + usize::from(i < extra)).collect()
}

/// Runs the denoising loop on `prompt` and returns the canvas.
pub fn generate(
    model: &mut impl Denoiser,
    prompt: &[u32],
    params: &Params,
    special: &SpecialIds,
    mut on_step: impl FnMut(&Step) -> ControlFlow<()>,
) -> Result<Generation> {
    let start = Instant::now();
    let device = model.device().clone();
    let vocab = model.vocab_size();
    let p = prompt.len();
    let blocks = params.gen_length / params.block_length;
    let steps_per_block = params.steps / blocks;
    let mut seq: Vec<u32> = prompt.to_vec();
    seq.resize(p + params.gen_length, special.mask);

    let logit_bias = match params.suppress_eos {
        true => Some(neg_inf_bias(&[special.eos], vocab, &device)?),
        false => None,
    };
    let confidence_bias = match params.eos_last {
        true => Some(neg_inf_bias(
            &eos_last_ids(special.eos, special.eot, params.temperature),
            vocab,
            &device,
        )?),
        false => None,
    };
    let rule = LladaRule {
        temperature: params.temperature,
        strategy: params.strategy,
        logit_bias: logit_bias.as_ref(),
        confidence_bias: confidence_bias.as_ref(),
    };
    let mut rng = StdRng::seed_from_u64(params.seed);

    // Every block starts fully masked, so the plan is the same for each of them.
    let plan = transfer_counts(params.block_length, steps_per_block);
    let total = blocks * plan.iter().filter(|&&k| k > 0).count();
    let (mut index, mut nfe) = (0, 0);
    let mut revealed = Vec::new();
    for block in 0..blocks {
        let span = block * params.block_length..(block + 1) * params.block_length;
        // A step that may reveal nothing would only repeat a forward pass: skip it.
        for &count in plan.iter().filter(|&&k| k > 0) {
            let masked: Vec<u32> = span
                .clone()
                .filter(|&i| seq[p + i] == special.mask)
                .map(|i| (p + i) as u32)
                .collect();
            if masked.is_empty() {
                break;
            }
            let logits = guided_logits(model, &seq, p, &masked, params.cfg_scale, special.mask)
                .with_context(|| format!("model forward pass at step {index}"))?;
            nfe += 1;
            let decisions = rule.decide(&logits, &mut rng)?;
            revealed.clear();
            for (row, d) in most_confident(&decisions, count) {
                let pos = masked[row] as usize;
                seq[pos] = d.token;
                revealed.push(Reveal {
                    position: pos - p,
                    token: d.token,
                    confidence: d.confidence,
                });
            }
            revealed.sort_by_key(|r| r.position);
            let step = Step {
                index,
                total,
                block,
                blocks,
                block_span: span.clone(),
                canvas: &seq[p..],
                revealed: &revealed,
                nfe,
                elapsed: start.elapsed(),
            };
            index += 1;
            if on_step(&step).is_break() {
                return Ok(Generation {
                    canvas: seq[p..].to_vec(),
                    steps: index,
                    nfe,
                    elapsed: start.elapsed(),
                    cancelled: true,
                });
            }
        }
    }
    Ok(Generation {
        canvas: seq.split_off(p),
        steps: index,
        nfe,
        elapsed: start.elapsed(),
        cancelled: false,
    })
}

/// Logits (`[rows, vocab]`) at the `rows` of `seq`, with classifier-free guidance when
/// `cfg_scale > 0`: a second row with every prompt position masked runs in the same batch and
/// the result is `un + (w + 1)(cond - un)` (reference-spec 1.6b).
fn guided_logits(
    model: &mut impl Denoiser,
    seq: &[u32],
    prompt_len: usize,
    rows: &[u32],
    cfg_scale: f64,
    mask: u32,
) -> candle_core::Result<Tensor> {
    let device = model.device().clone();
    if cfg_scale == 0.0 {
        let ids = Tensor::from_slice(seq, (1, seq.len()), &device)?;
        return model.logits(&ids, rows)?.i(0);
    }
    let mut both = seq.to_vec();
    both.extend(std::iter::repeat_n(mask, prompt_len));
    both.extend_from_slice(&seq[prompt_len..]);
    let ids = Tensor::from_vec(both, (2, seq.len()), &device)?;
    let logits = model.logits(&ids, rows)?;
    let (cond, un) = (logits.i(0)?, logits.i(1)?);
    un.clone() + ((cond - un)? * (cfg_scale + 1.0))?
}

/// The `count` decisions with the highest confidence, as (row, decision); ties go to the lower
/// row so runs are reproducible (torch.topk leaves tie order unspecified).
fn most_confident(decisions: &[Decision], count: usize) -> Vec<(usize, Decision)> {
    let mut order: Vec<usize> = (0..decisions.len()).collect();
    order.sort_by(|&a, &b| {
        decisions[b]
            .confidence
            .total_cmp(&decisions[a].confidence)
            .then(a.cmp(&b))
    });
    order
        .into_iter()
        .take(count)
        .map(|row| (row, decisions[row]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A denoiser whose logits favour a fixed token per position, more strongly for later
    /// positions, and that counts its forward passes.
    struct Fixed {
        vocab: usize,
        calls: usize,
        batch_seen: usize,
    }

    impl Denoiser for Fixed {
        fn logits(&mut self, ids: &Tensor, rows: &[u32]) -> candle_core::Result<Tensor> {
            self.calls += 1;
            let (batch, _) = ids.dims2()?;
            self.batch_seen = batch;
            let mut data = Vec::new();
            for _ in 0..batch {
                for &r in rows {
                    let mut row = vec![0f32; self.vocab];
                    row[(r as usize) % self.vocab] = 1.0 + r as f32;
                    data.extend(row);
                }
            }
            Tensor::from_vec(data, (batch, rows.len(), self.vocab), &Device::Cpu)
        }
        fn vocab_size(&self) -> usize {
            self.vocab
        }
        fn device(&self) -> &Device {
            &Device::Cpu
        }
    }

    fn params(gen_length: usize, block_length: usize, steps: usize) -> Params {
        Params {
            gen_length,
            block_length,
            steps,
            strategy: Strategy::Confidence,
            temperature: 0.0,
            cfg_scale: 0.0,
            suppress_eos: false,
            eos_last: false,
            seed: 0,
        }
    }

    const SPECIAL: SpecialIds = SpecialIds {
        mask: 99,
        eos: 98,
        eot: None,
    };

    #[test]
    fn transfer_counts_spread_the_remainder_first() {
        assert_eq!(transfer_counts(8, 3), vec![3, 3, 2]);
        assert_eq!(transfer_counts(4, 4), vec![1, 1, 1, 1]);
        assert_eq!(transfer_counts(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(transfer_counts(10, 4).iter().sum::<usize>(), 10);
    }

    #[test]
    fn blocks_fill_in_order_most_confident_first() -> Result<()> {
        let mut m = Fixed {
            vocab: 200,
            calls: 0,
            batch_seen: 0,
        };
        let mut seen = Vec::new();
        let out = generate(&mut m, &[1, 2], &params(4, 2, 4), &SPECIAL, |s| {
            seen.push((
                s.block,
                s.revealed.iter().map(|r| r.position).collect::<Vec<_>>(),
            ));
            ControlFlow::Continue(())
        })?;
        // Later positions have larger logits, so each block reveals right to left.
        assert_eq!(
            seen,
            vec![(0, vec![1]), (0, vec![0]), (1, vec![3]), (1, vec![2])]
        );
        assert_eq!(out.canvas, vec![2, 3, 4, 5]);
        assert_eq!((out.steps, out.nfe, m.calls), (4, 4, 4));
        assert!(!out.cancelled);
        Ok(())
    }

    #[test]
    fn break_stops_the_loop_and_keeps_the_masks() -> Result<()> {
        let mut m = Fixed {
            vocab: 200,
            calls: 0,
            batch_seen: 0,
        };
        let out = generate(&mut m, &[1], &params(4, 4, 4), &SPECIAL, |_| {
            ControlFlow::Break(())
        })?;
        assert!(out.cancelled);
        assert_eq!(out.steps, 1);
        assert_eq!(out.canvas.iter().filter(|&&t| t == SPECIAL.mask).count(), 3);
        Ok(())
    }

    #[test]
    fn steps_that_could_reveal_nothing_are_skipped() -> Result<()> {
        let mut m = Fixed {
            vocab: 200,
            calls: 0,
            batch_seen: 0,
        };
        let out = generate(&mut m, &[1], &params(2, 2, 4), &SPECIAL, |s| {
            assert_eq!(s.total, 2);
            ControlFlow::Continue(())
        })?;
        assert_eq!((out.steps, out.nfe), (2, 2));
        Ok(())
    }

    #[test]
    fn guidance_runs_both_rows_in_one_pass() -> Result<()> {
        let mut m = Fixed {
            vocab: 200,
            calls: 0,
            batch_seen: 0,
        };
        let p = Params {
            cfg_scale: 1.5,
            ..params(2, 2, 2)
        };
        let out = generate(&mut m, &[1, 2, 3], &p, &SPECIAL, |_| {
            ControlFlow::Continue(())
        })?;
        assert_eq!((m.batch_seen, out.nfe), (2, 2));
        Ok(())
    }
}
