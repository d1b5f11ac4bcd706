//! The denoising loop: a canvas of masks after the prompt, revealed a few positions per step.
//!
//! Two schedules, as the references define them:
//! - **blocks** (LLaDA `generate()`, reference-spec 1.6): the canvas is split into
//!   `gen_length / block_length` semi-autoregressive blocks, each denoised in `steps / blocks`
//!   steps; step `i` of a block reveals `transfer_counts(..)[i]` positions;
//! - **timesteps** (Dream `diffusion_generate`, reference-spec 2.5): one pass over the whole
//!   canvas; with `t, s` consecutive values of `linspace(1, eps, steps + 1)` (float32), step `i`
//!   reveals `int(N (1 - s / t))` of the `N` masked positions, the last step all that remain.
//!
//! Within a step the decision rule of the model family (`sampler.rs`) proposes a token and a
//! confidence for every masked position of the current block, and the most confident ones are
//! revealed (or, Dream's `origin`, each with probability `1 - s/t`; or, with `alg_temp > 0`, a
//! draw weighted by `softmax(confidence / alg_temp)`). Revealed tokens are never re-masked.
//! Dream-family models predict position `i` from logit row `i - 1` (the logit shift).
//!
//! The engine knows nothing of terminals or threads: it reports each step through a callback
//! whose return value can stop it, like llama.cpp's `diffusion_step_callback_t`.

use std::ops::{ControlFlow, Range};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::{Device, IndexOp, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::sampler::{
    draw_without_replacement, eos_last_ids, neg_inf_bias, Decision, DreamRule, LladaRule,
};

/// How a step ranks the masked positions it may reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Most confident first: the chosen token's probability (LLaDA `low_confidence`, Dream
    /// `maskgit_plus`).
    Confidence,
    /// Random order (LLaDA `random`).
    Random,
    /// Largest gap between the two most likely tokens first (Dream `topk_margin`).
    Margin,
    /// Lowest entropy first (Dream `entropy`).
    Entropy,
    /// Each masked position is revealed with probability `1 - s/t` (Dream `origin`).
    Origin,
}

/// The per-position decision rule of a model family (models.toml `sampler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Llada,
    Dream,
}

/// How many positions each step reveals, and where.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// LLaDA's semi-autoregressive blocks.
    Blocks { block_length: usize },
    /// Dream's timestep schedule over the whole canvas.
    Timesteps { eps: f64 },
}

/// Sampler parameters, already checked (see `settings::resolve`).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Canvas length: positions generated after the prompt.
    pub gen_length: usize,
    /// Total denoising steps (with blocks, a whole number per block).
    pub steps: usize,
    pub schedule: Schedule,
    pub family: Family,
    /// Logit row `i - 1` predicts position `i` (Dream family).
    pub shift_logits: bool,
    pub strategy: Strategy,
    /// 0 is greedy.
    pub temperature: f64,
    /// Dream: nucleus filter before the softmax.
    pub top_p: Option<f64>,
    /// Dream: keep the k largest logits.
    pub top_k: Option<usize>,
    /// Dream: above 0, positions are drawn by `softmax(confidence / alg_temp)` instead of top-k.
    pub alg_temp: f64,
    /// Classifier-free guidance: `un + (w + 1)(cond - un)`, the unconditional row having every
    /// prompt position masked.
    pub cfg_scale: f64,
    /// Never choose EOS (`logits_eos_inf`).
    pub suppress_eos: bool,
    /// Reveal EOS/EOT last (`confidence_eos_eot_inf`, as the reference code behaves).
    pub eos_last: bool,
    /// Stop as soon as the answer is final: a stop token is revealed and every position before
    /// it too. The rest of the canvas is filled with EOS instead of being denoised.
    pub early_stop: bool,
    pub seed: u64,
}

impl Params {
    /// The blocks of the canvas, in canvas positions.
    pub fn blocks(&self) -> Vec<Range<usize>> {
        match self.schedule {
            Schedule::Blocks { block_length } => (0..self.gen_length / block_length)
                .map(|b| b * block_length..(b + 1) * block_length)
                .collect(),
            // One block: the whole canvas.
            Schedule::Timesteps { .. } => std::iter::once(0..self.gen_length).collect(),
        }
    }
}

/// The token ids the loop needs, read from the model's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialIds {
    pub mask: u32,
    pub eos: u32,
    pub eot: Option<u32>,
    /// Every id that ends an answer (EOS, EOT, pad).
    pub stops: Vec<u32>,
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
    /// Steps planned in all (an upper bound when steps may be skipped or stopped early).
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
    /// Steps that revealed tokens.
    pub steps: usize,
    pub nfe: usize,
    pub elapsed: Duration,
    pub cancelled: bool,
    /// The answer was final before the schedule ended (`early_stop`).
    pub stopped_early: bool,
}

/// Tokens revealed at each of `steps` steps for `masked` masked positions: the base share, and
/// one more for each of the first `masked % steps` steps (LLaDA `get_num_transfer_tokens`).
pub fn transfer_counts(masked: usize, steps: usize) -> Vec<usize> {
    let (base, extra) = (masked / steps, masked % steps);
    (0..steps).map(|i| base + usize::from(i < extra)).collect()
}

/// `torch.linspace(start, end, n)` in float32 as ATen's CPU kernel computes it: the step
/// `(end - start) / (n - 1)` in f32, then `start + step * i` for the first half and
/// `end - step * (n - 1 - i)` for the second, each a fused multiply-add (one rounding). Checked
/// against torch 2.15 for every `n` up to 600 at eps 1e-2, 1e-3 and 1e-4: Dream's truncated
/// `int(N (1 - s/t))` can turn a one-ulp difference into a different schedule.
pub fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// What step `i` of a block may reveal.
enum Transfer {
    Count(usize),
    /// Dream `origin`: each masked position independently.
    Probability(f64),
}

/// Per-step reveal counts of one block.
enum Plan {
    Counts(Vec<usize>),
    Timesteps(Vec<f32>),
}

impl Plan {
    fn len(&self) -> usize {
        match self {
            Plan::Counts(c) => c.len(),
            Plan::Timesteps(ts) => ts.len() - 1,
        }
    }

    fn transfer(&self, i: usize, masked: usize, origin: bool) -> Transfer {
        match self {
            Plan::Counts(c) => Transfer::Count(c[i]),
            Plan::Timesteps(ts) => {
                let last = i + 1 == ts.len() - 1;
                // Dream computes this in float32: N * (1 - s / t), truncated by int().
                let ratio = 1.0f32 - ts[i + 1] / ts[i];
                match (origin, last) {
                    (false, true) => Transfer::Count(masked),
                    (true, true) => Transfer::Probability(1.0),
                    (true, false) => Transfer::Probability(f64::from(ratio)),
                    (false, false) => Transfer::Count((masked as f32 * ratio) as usize),
                }
            }
        }
    }
}

/// The family's decision rule, built once per run.
enum Rule<'a> {
    Llada(LladaRule<'a>),
    Dream(DreamRule<'a>),
}

impl Rule<'_> {
    fn decide(&self, logits: &Tensor, rng: &mut StdRng) -> candle_core::Result<Vec<Decision>> {
        match self {
            Rule::Llada(r) => r.decide(logits, rng),
            Rule::Dream(r) => r.decide(logits, rng),
        }
    }
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
    let blocks = params.blocks();
    let steps_per_block = params.steps / blocks.len();
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
    let rule = match params.family {
        Family::Llada => Rule::Llada(LladaRule {
            temperature: params.temperature,
            strategy: params.strategy,
            logit_bias: logit_bias.as_ref(),
            confidence_bias: confidence_bias.as_ref(),
        }),
        Family::Dream => Rule::Dream(DreamRule {
            temperature: params.temperature,
            top_p: params.top_p,
            top_k: params.top_k,
            strategy: params.strategy,
            logit_bias: logit_bias.as_ref(),
        }),
    };
    let mut rng = StdRng::seed_from_u64(params.seed);
    let plan = match params.schedule {
        // Every block starts fully masked, so one plan serves them all.
        Schedule::Blocks { block_length } => {
            Plan::Counts(transfer_counts(block_length, steps_per_block))
        }
        Schedule::Timesteps { eps } => {
            Plan::Timesteps(linspace_f32(1.0, eps as f32, params.steps + 1))
        }
    };
    let total = match &plan {
        Plan::Counts(c) => blocks.len() * c.iter().filter(|&&k| k > 0).count(),
        Plan::Timesteps(_) => params.steps,
    };
    let origin = params.strategy == Strategy::Origin;
    let (mut index, mut nfe) = (0, 0);
    let mut revealed = Vec::new();
    let finish = |seq: Vec<u32>, steps, nfe, cancelled, stopped_early| Generation {
        canvas: seq[p..].to_vec(),
        steps,
        nfe,
        elapsed: start.elapsed(),
        cancelled,
        stopped_early,
    };
    for (block, span) in blocks.iter().enumerate() {
        for i in 0..plan.len() {
            let masked: Vec<u32> = span
                .clone()
                .filter(|&j| seq[p + j] == special.mask)
                .map(|j| (p + j) as u32)
                .collect();
            if masked.is_empty() {
                break;
            }
            let transfer = plan.transfer(i, masked.len(), origin);
            // A step that may reveal nothing would only repeat a forward pass: skip it.
            if matches!(transfer, Transfer::Count(0)) {
                continue;
            }
            let rows: Vec<u32> = match params.shift_logits {
                true => masked.iter().map(|&pos| pos.saturating_sub(1)).collect(),
                false => masked.clone(),
            };
            let logits = guided_logits(model, &seq, p, &rows, params.cfg_scale, special.mask)
                .with_context(|| format!("model forward pass at step {index}"))?;
            nfe += 1;
            let decisions = rule.decide(&logits, &mut rng)?;
            revealed.clear();
            for row in select(&decisions, &transfer, params.alg_temp, &mut rng) {
                let pos = masked[row] as usize;
                seq[pos] = decisions[row].token;
                revealed.push(Reveal {
                    position: pos - p,
                    token: decisions[row].token,
                    confidence: decisions[row].confidence,
                });
            }
            revealed.sort_by_key(|r| r.position);
            let done = params.early_stop
                && seq[p..].contains(&special.mask)
                && answer_is_final(&seq[p..], special);
            if done {
                for t in seq[p..].iter_mut().filter(|t| **t == special.mask) {
                    *t = special.eos;
                }
            }
            let step = Step {
                index,
                total,
                block,
                blocks: blocks.len(),
                block_span: span.clone(),
                canvas: &seq[p..],
                revealed: &revealed,
                nfe,
                elapsed: start.elapsed(),
            };
            index += 1;
            if on_step(&step).is_break() {
                return Ok(finish(seq, index, nfe, true, false));
            }
            if done {
                return Ok(finish(seq, index, nfe, false, true));
            }
        }
    }
    Ok(finish(seq, index, nfe, false, false))
}

/// True when a stop token is revealed and every position before the first one is revealed:
/// nothing later can change the answer, since revealed tokens are never re-masked.
fn answer_is_final(canvas: &[u32], special: &SpecialIds) -> bool {
    match canvas.iter().position(|t| special.stops.contains(t)) {
        Some(stop) => !canvas[..stop].contains(&special.mask),
        None => false,
    }
}

/// The rows (indices into `decisions`) a step reveals.
fn select(
    decisions: &[Decision],
    transfer: &Transfer,
    alg_temp: f64,
    rng: &mut StdRng,
) -> Vec<usize> {
    match *transfer {
        Transfer::Probability(p) => (0..decisions.len())
            .filter(|_| rng.random::<f64>() < p)
            .collect(),
        Transfer::Count(k) if alg_temp > 0.0 => {
            // softmax(confidence / alg_temp), drawn without replacement.
            let max = decisions
                .iter()
                .map(|d| f64::from(d.confidence))
                .fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = decisions
                .iter()
                .map(|d| ((f64::from(d.confidence) - max) / alg_temp).exp())
                .collect();
            draw_without_replacement(&weights, k, rng)
        }
        Transfer::Count(k) => most_confident(decisions, k),
    }
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

/// The indices of the `count` most confident decisions; ties go to the lower index so runs are
/// reproducible (torch.topk leaves tie order unspecified).
fn most_confident(decisions: &[Decision], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..decisions.len()).collect();
    order.sort_by(|&a, &b| {
        decisions[b]
            .confidence
            .total_cmp(&decisions[a].confidence)
            .then(a.cmp(&b))
    });
    order.truncate(count);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A denoiser whose logits favour token `row % vocab` at each row, more strongly for later
    /// rows, and that counts its forward passes.
    struct Fixed {
        vocab: usize,
        calls: usize,
        batch_seen: usize,
        rows_seen: Vec<u32>,
    }

    impl Fixed {
        fn new() -> Self {
            Self {
                vocab: 200,
                calls: 0,
                batch_seen: 0,
                rows_seen: Vec::new(),
            }
        }
    }

    impl Denoiser for Fixed {
        fn logits(&mut self, ids: &Tensor, rows: &[u32]) -> candle_core::Result<Tensor> {
            self.calls += 1;
            let (batch, _) = ids.dims2()?;
            self.batch_seen = batch;
            self.rows_seen = rows.to_vec();
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
            steps,
            schedule: Schedule::Blocks { block_length },
            family: Family::Llada,
            shift_logits: false,
            strategy: Strategy::Confidence,
            temperature: 0.0,
            top_p: None,
            top_k: None,
            alg_temp: 0.0,
            cfg_scale: 0.0,
            suppress_eos: false,
            eos_last: false,
            early_stop: false,
            seed: 0,
        }
    }

    fn special() -> SpecialIds {
        SpecialIds {
            mask: 199,
            eos: 4,
            eot: None,
            stops: vec![4],
        }
    }

    fn run(m: &mut Fixed, prompt: &[u32], p: &Params) -> Result<(Generation, Vec<Vec<usize>>)> {
        let mut seen = Vec::new();
        let g = generate(m, prompt, p, &special(), |s| {
            seen.push(s.revealed.iter().map(|r| r.position).collect());
            ControlFlow::Continue(())
        })?;
        Ok((g, seen))
    }

    #[test]
    fn transfer_counts_spread_the_remainder_first() {
        assert_eq!(transfer_counts(8, 3), vec![3, 3, 2]);
        assert_eq!(transfer_counts(4, 4), vec![1, 1, 1, 1]);
        assert_eq!(transfer_counts(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(transfer_counts(10, 4).iter().sum::<usize>(), 10);
    }

    #[test]
    fn linspace_matches_torch_float32_bit_for_bit() {
        // torch.linspace(1, 1e-3, 9).tolist() and torch.linspace(1, 0.01, 8).tolist(), torch 2.15:
        // the plain `start + step * i` is one ulp off at indices 3, 5 and 4.
        let want = [
            1.0,
            0.875124990940094,
            0.750249981880188,
            0.625374972820282,
            0.5005000233650208,
            0.37562501430511475,
            0.25075000524520874,
            0.12587499618530273,
            0.0010000000474974513,
        ];
        let got: Vec<f64> = linspace_f32(1.0, 1e-3, 9)
            .into_iter()
            .map(f64::from)
            .collect();
        assert_eq!(got, want);
        let want = [
            1.0,
            0.8585714101791382,
            0.7171428203582764,
            0.5757142901420593,
            0.4342857301235199,
            0.2928571403026581,
            0.15142858028411865,
            0.009999999776482582,
        ];
        let got: Vec<f64> = linspace_f32(1.0, 0.01, 8)
            .into_iter()
            .map(f64::from)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn blocks_fill_in_order_most_confident_first() -> Result<()> {
        let mut m = Fixed::new();
        let (out, seen) = run(&mut m, &[1, 2], &params(4, 2, 4))?;
        // Later positions have larger logits, so each block reveals right to left.
        assert_eq!(seen, vec![vec![1], vec![0], vec![3], vec![2]]);
        assert_eq!(out.canvas, vec![2, 3, 4, 5]);
        assert_eq!((out.steps, out.nfe, m.calls), (4, 4, 4));
        assert!(!out.cancelled && !out.stopped_early);
        Ok(())
    }

    #[test]
    fn break_stops_the_loop_and_keeps_the_masks() -> Result<()> {
        let mut m = Fixed::new();
        let out = generate(&mut m, &[1], &params(4, 4, 4), &special(), |_| {
            ControlFlow::Break(())
        })?;
        assert!(out.cancelled);
        assert_eq!(out.steps, 1);
        assert_eq!(
            out.canvas.iter().filter(|&&t| t == special().mask).count(),
            3
        );
        Ok(())
    }

    #[test]
    fn steps_that_could_reveal_nothing_are_skipped() -> Result<()> {
        let mut m = Fixed::new();
        let out = generate(&mut m, &[1], &params(2, 2, 4), &special(), |s| {
            assert_eq!(s.total, 2);
            ControlFlow::Continue(())
        })?;
        assert_eq!((out.steps, out.nfe), (2, 2));
        Ok(())
    }

    #[test]
    fn guidance_runs_both_rows_in_one_pass() -> Result<()> {
        let mut m = Fixed::new();
        let p = Params {
            cfg_scale: 1.5,
            ..params(2, 2, 2)
        };
        let (out, _) = run(&mut m, &[1, 2, 3], &p)?;
        assert_eq!((m.batch_seen, out.nfe), (2, 2));
        Ok(())
    }

    #[test]
    fn shifted_models_read_the_previous_row() -> Result<()> {
        let mut m = Fixed::new();
        let p = Params {
            shift_logits: true,
            ..params(2, 2, 2)
        };
        let (out, _) = run(&mut m, &[7, 8, 9], &p)?;
        // Position 3 (canvas 0) is predicted by row 2, position 4 by row 3.
        assert_eq!(out.canvas, vec![2, 3]);
        assert_eq!(
            m.rows_seen,
            vec![2],
            "the last step asks only for the one masked row"
        );
        Ok(())
    }

    #[test]
    fn timesteps_reveal_the_truncated_share_and_the_rest_last() -> Result<()> {
        let mut m = Fixed::new();
        let p = Params {
            schedule: Schedule::Timesteps { eps: 1e-3 },
            ..params(8, 8, 4)
        };
        let (out, seen) = run(&mut m, &[1], &p)?;
        // N=8: int(8 * (1 - .75025)) = 1, then int(7 * (1 - .5005/.75025)) = 2,
        // int(5 * (1 - .25075/.5005)) = 2, and the last step takes the 3 left.
        let sizes: Vec<usize> = seen.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 2, 2, 3]);
        assert!(!out.canvas.contains(&special().mask));
        Ok(())
    }

    #[test]
    fn early_stop_ends_once_the_answer_before_the_first_stop_is_final() -> Result<()> {
        let mut m = Fixed::new();
        // Prompt of 1: canvas position j is predicted as token j + 1, so canvas 3 is EOS (4).
        let p = Params {
            early_stop: true,
            ..params(8, 8, 8)
        };
        let (out, seen) = run(&mut m, &[1], &p)?;
        // Right to left: 7, 6, 5, 4, 3 (EOS), 2, 1, 0: final only when nothing is left.
        assert!(!out.stopped_early);
        assert_eq!(
            seen.len(),
            8,
            "stopping needs every position before the EOS"
        );
        let mut m = Fixed::new();
        let p = Params {
            early_stop: true,
            strategy: Strategy::Confidence,
            ..params(8, 2, 8)
        };
        let (out, seen) = run(&mut m, &[1], &p)?;
        assert!(out.stopped_early);
        assert_eq!(
            seen.len(),
            4,
            "blocks 0 and 1 decide the answer; blocks 2 and 3 are never run"
        );
        assert_eq!(out.canvas, vec![1, 2, 3, 4, 4, 4, 4, 4]);
        Ok(())
    }
}
