//! The denoising loop: a canvas of masks after the prompt, revealed a few positions per step.
//!
//! Schedules, as the references define them:
//! - **blocks** (LLaDA `generate()`, reference-spec 1.6): the canvas is split into
//!   `gen_length / block_length` semi-autoregressive blocks, each denoised in `steps / blocks`
//!   steps; step `i` of a block reveals `transfer_counts(..)[i]` positions;
//! - **timesteps** (Dream `diffusion_generate`, reference-spec 2.5): one pass over the whole
//!   canvas; with `t, s` consecutive values of `linspace(1, eps, steps + 1)` (float32), step `i`
//!   reveals `int(N (1 - s / t))` of the `N` masked positions, the last step all that remain;
//! - **block diffusion** (dllm `BD3LMSampler`, block-diffusion-spec 1.3-1.7): block-causal
//!   attention, the prompt end-aligned to the block grid, each block denoised with the
//!   linear-alpha schedule (`bd3lm_counts`), committed blocks kept in an exact KV cache, stop
//!   after a block that holds EOS.
//!
//! Within a step the decision rule of the model family (`sampler.rs`) proposes a token and a
//! confidence for every masked position of the current block, and the most confident ones are
//! revealed (or: Dream's `origin`, each with probability `1 - s/t`; with `alg_temp > 0`, a draw
//! weighted by `softmax(confidence / alg_temp)`; with a threshold, Fast-dLLM's rule: the most
//! confident one plus every other one at or above the threshold; with an entropy bound, the
//! EB-sampler's rule: the lowest-entropy positions while their summed entropy stays below the
//! bound, at least one). Revealed tokens are never
//! re-masked. Dream-family models predict position `i` from logit row `i - 1` (the logit shift).
//!
//! Bidirectional models can reuse keys and values across steps with Fast-dLLM's approximate
//! caches (`CacheMode`, reference-spec 3.2): a full pass at each block start stores every
//! position; later steps run the block and the rest of the canvas (`prefix`) or the block alone
//! (`dual`) against it. Dream with a cache follows Fast-dLLM's own Dream sampler (reference-spec
//! 3.3, `dream_cached`): the block-start pass also decodes the block's first position, and each
//! block runs on its own timesteps.
//!
//! The engine knows nothing of terminals or threads: it reports each step through a callback
//! whose return value can stop it, like llama.cpp's `diffusion_step_callback_t`.

use std::ops::{ControlFlow, Range};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{Device, IndexOp, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::kv_cache::CacheOp;
use crate::model::Pass;
use crate::sampler::{
    draw_without_replacement, entropies, eos_last_ids, neg_inf_bias, Decision, DreamRule, LladaRule,
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

/// The sampler family of an architecture (models.toml `sampler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// LLaDA's `generate()`.
    Llada,
    /// Dream's `diffusion_generate()`.
    Dream,
    /// Block diffusion (dllm's BD3LM sampler): block-causal attention, exact KV cache.
    Bd3lm,
    /// Block diffusion with SDAR's sampler (`generate.py::block_diffusion_generate`): the block
    /// grid from position 0, so the first block holds the prompt's tail.
    Sdar,
}

impl Family {
    /// Block-causal attention with an exact cache of finished blocks.
    pub fn block_diffusion(self) -> bool {
        matches!(self, Family::Bd3lm | Family::Sdar)
    }
}

/// How many positions each step reveals, and where.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// LLaDA's semi-autoregressive blocks.
    Blocks { block_length: usize },
    /// Dream's timestep schedule over the whole canvas.
    Timesteps { eps: f64 },
    /// Fast-dLLM's Dream with a cache: blocks, each on its own timestep schedule.
    BlockTimesteps { block_length: usize, eps: f64 },
}

impl Schedule {
    pub fn block_length(&self) -> Option<usize> {
        match *self {
            Schedule::Blocks { block_length } | Schedule::BlockTimesteps { block_length, .. } => {
                Some(block_length)
            }
            Schedule::Timesteps { .. } => None,
        }
    }

    pub fn eps(&self) -> Option<f64> {
        match *self {
            Schedule::Timesteps { eps } | Schedule::BlockTimesteps { eps, .. } => Some(eps),
            Schedule::Blocks { .. } => None,
        }
    }
}

/// Key/value reuse across steps (`--cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// Recompute every position every step (the references' default). For block diffusion:
    /// recompute the prompt and committed blocks too (slow; proves the exact cache exact).
    None,
    /// Fast-dLLM prefix cache: steps after a block's first run the block and everything after
    /// it against the stored prompt and earlier blocks. Block diffusion: the exact cache.
    Prefix,
    /// Fast-dLLM dual cache: steps after a block's first run the block alone against everything
    /// stored at the block's start.
    Dual,
}

/// Sampler parameters, already checked (see `settings::resolve`).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Canvas length: positions generated after the prompt.
    pub gen_length: usize,
    /// Total denoising steps (with LLaDA blocks, a whole number per block).
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
    /// Parallel decoding (Fast-dLLM): reveal the most confident masked position and every other
    /// one whose confidence is at least this; a block runs until it has no masks left.
    pub threshold: Option<f64>,
    /// Parallel decoding (EB-sampler): reveal the lowest-entropy masked positions while their
    /// summed entropy stays below this (at least one); a block runs until it has no masks left.
    pub entropy_bound: Option<f64>,
    pub cache: CacheMode,
    /// Block diffusion: steps per block (else `ceil(steps / blocks)`).
    pub steps_per_block: Option<usize>,
    /// Stop as soon as the answer is final: a stop token is revealed and every position before
    /// it too. The rest of the canvas is filled with EOS instead of being denoised.
    pub early_stop: bool,
    pub seed: u64,
}

impl Params {
    /// The adaptive reveal rule, if parallel decoding is on: each step reveals as many positions
    /// as the rule allows, and a block runs until it has no masks left.
    fn parallel(&self) -> Option<Transfer> {
        match (self.threshold, self.entropy_bound) {
            (Some(t), _) => Some(Transfer::Threshold(t)),
            (None, Some(e)) => Some(Transfer::EntropyBound(e)),
            (None, None) => None,
        }
    }

    /// The blocks of the canvas after a prompt of `prompt_len` tokens, in canvas positions (the
    /// last may be shorter). SDAR's grid starts at the first prompt token, so its first canvas
    /// block is cut short by the prompt's tail.
    pub fn blocks(&self, prompt_len: usize) -> Vec<Range<usize>> {
        let Some(bs) = self.schedule.block_length() else {
            // One block: the whole canvas.
            return std::iter::once(0..self.gen_length).collect();
        };
        let tail = match self.family {
            Family::Sdar => prompt_len % bs,
            _ => 0,
        };
        let mut blocks = Vec::new();
        let mut start = 0;
        while start < self.gen_length {
            let end = (start + bs - if start == 0 { tail } else { 0 }).min(self.gen_length);
            blocks.push(start..end);
            start = end;
        }
        blocks
    }
}

/// The token ids the loop needs, read from the model's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialIds {
    pub mask: u32,
    pub eos: u32,
    pub eot: Option<u32>,
    /// The pad id, which block diffusion treats as absent from attention (dllm's rule).
    pub pad: Option<u32>,
    /// Every id that ends an answer (EOS, EOT, pad).
    pub stops: Vec<u32>,
}

/// A network that predicts tokens at masked positions.
pub trait Denoiser {
    /// Logits `[batch, rows.len(), vocab]` of the `rows` (indices into the pass's tokens) of one
    /// forward pass. Only the requested rows go through the LM head.
    fn forward(&mut self, pass: &Pass, rows: &[u32]) -> candle_core::Result<Tensor>;
    /// Keeps the first `len` cached positions.
    fn truncate_cache(&mut self, len: usize);
    fn clear_cache(&mut self);
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
    /// The canvas: `gen_length` ids, or the blocks run when block diffusion stopped after an
    /// EOS; masks remain only if the run was cancelled.
    pub canvas: Vec<u32>,
    /// Denoising steps (forward passes that revealed tokens).
    pub steps: usize,
    /// All forward passes, cache refreshes and block commits included.
    pub nfe: usize,
    pub elapsed: Duration,
    pub cancelled: bool,
    /// The answer was final before the schedule ended.
    pub stopped_early: bool,
}

/// Tokens revealed at each of `steps` steps for `masked` masked positions: the base share, and
/// one more for each of the first `masked % steps` steps (LLaDA `get_num_transfer_tokens`).
pub fn transfer_counts(masked: usize, steps: usize) -> Vec<usize> {
    let (base, extra) = (masked / steps, masked % steps);
    (0..steps).map(|i| base + usize::from(i < extra)).collect()
}

/// Block diffusion's schedule for `masked` positions in `steps` steps (dllm
/// `get_num_transfer_tokens` with the linear alpha scheduler, block-diffusion-spec 1.5):
/// `t = (S - j)/S`, `s = (S - j - 1)/S`, `alpha(x) = 1 - x` and `r = (1 - alpha(s)) / (1 -
/// alpha(t))` in float32, `k_j = round_half_even(m (1 - r))` in float64 over the masks `m`
/// left, until none is left; steps revealing nothing are dropped.
pub fn bd3lm_counts(masked: usize, steps: usize) -> Vec<usize> {
    let mut left = masked;
    let mut counts = Vec::new();
    for j in 0..steps {
        if left == 0 {
            break;
        }
        let t = ((steps - j) as f64 / steps as f64) as f32;
        let s = ((steps - j - 1) as f64 / steps as f64) as f32;
        let (alpha_t, alpha_s) = (1.0f32 - t, 1.0f32 - s);
        let r = (1.0f32 - alpha_s) / (1.0f32 - alpha_t);
        let k = ((left as f64) * (1.0 - f64::from(r)))
            .round_ties_even()
            .max(0.0) as usize;
        let k = k.min(left);
        left -= k;
        if k > 0 {
            counts.push(k);
        }
    }
    counts
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

/// What a step may reveal.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transfer {
    Count(usize),
    /// Dream `origin`: each masked position independently.
    Probability(f64),
    /// Fast-dLLM: the most confident plus every one at or above the threshold.
    Threshold(f64),
    /// EB-sampler: the lowest-entropy positions while their summed entropy stays below the bound.
    EntropyBound(f64),
    /// SDAR `low_confidence_dynamic`: every position above the threshold if there are at least
    /// `count` of them, else the `count` most confident.
    Dynamic {
        count: usize,
        threshold: f64,
    },
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
            Plan::Counts(c) => Transfer::Count(c.get(i).copied().unwrap_or(masked)),
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

    fn logit_bias(&self) -> Option<&Tensor> {
        match self {
            Rule::Llada(r) => r.logit_bias,
            Rule::Dream(r) => r.logit_bias,
        }
    }
}

/// The state of one generation, shared by the schedules' drivers: the sequence, the rule, the
/// counters, and the report to the caller.
struct Run<'a, F> {
    params: &'a Params,
    special: &'a SpecialIds,
    seq: Vec<u32>,
    prompt_len: usize,
    rule: Rule<'a>,
    rng: StdRng,
    start: Instant,
    steps: usize,
    nfe: usize,
    total: usize,
    blocks: Vec<Range<usize>>,
    revealed: Vec<Reveal>,
    on_step: F,
}

/// Why a driver stopped early.
enum Stop {
    Cancelled,
    AnswerFinal,
}

impl<F: FnMut(&Step) -> ControlFlow<()>> Run<'_, F> {
    /// Absolute positions of the masked cells of canvas block `span`.
    fn masked(&self, span: &Range<usize>) -> Vec<u32> {
        let p = self.prompt_len;
        span.clone()
            .filter(|&j| self.seq[p + j] == self.special.mask)
            .map(|j| (p + j) as u32)
            .collect()
    }

    /// Decides the `masked` positions from their `logits` (`[rows, vocab]`), reveals what
    /// `transfer` allows, and reports the step.
    fn reveal(
        &mut self,
        logits: &Tensor,
        masked: &[u32],
        transfer: Transfer,
        block: usize,
    ) -> Result<ControlFlow<Stop>> {
        let decisions = self.rule.decide(logits, &mut self.rng)?;
        let entropies = match transfer {
            Transfer::EntropyBound(_) => {
                entropies(logits, self.params.temperature, self.rule.logit_bias())?
            }
            _ => Vec::new(),
        };
        let p = self.prompt_len;
        self.revealed.clear();
        let rows = select(
            &decisions,
            &entropies,
            transfer,
            self.params.alg_temp,
            &mut self.rng,
        );
        for row in rows {
            let pos = masked[row] as usize;
            self.seq[pos] = decisions[row].token;
            self.revealed.push(Reveal {
                position: pos - p,
                token: decisions[row].token,
                confidence: decisions[row].confidence,
            });
        }
        self.revealed.sort_by_key(|r| r.position);
        let canvas = &mut self.seq[p..];
        let done = self.params.early_stop
            && canvas.contains(&self.special.mask)
            && answer_is_final(canvas, self.special);
        if done {
            for t in canvas.iter_mut().filter(|t| **t == self.special.mask) {
                *t = self.special.eos;
            }
        }
        let step = Step {
            index: self.steps,
            total: self.total,
            block,
            blocks: self.blocks.len(),
            block_span: self.blocks[block].clone(),
            canvas: &self.seq[p..],
            revealed: &self.revealed,
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

    fn finish(self, end: usize, stop: Option<Stop>) -> Generation {
        Generation {
            canvas: self.seq[self.prompt_len..self.prompt_len + end].to_vec(),
            steps: self.steps,
            nfe: self.nfe,
            elapsed: self.start.elapsed(),
            cancelled: matches!(stop, Some(Stop::Cancelled)),
            stopped_early: matches!(stop, Some(Stop::AnswerFinal)),
        }
    }
}

/// Runs the denoising loop on `prompt` and returns the canvas.
pub fn generate(
    model: &mut impl Denoiser,
    prompt: &[u32],
    params: &Params,
    special: &SpecialIds,
    on_step: impl FnMut(&Step) -> ControlFlow<()>,
) -> Result<Generation> {
    let device = model.device().clone();
    let vocab = model.vocab_size();
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
        Family::Llada | Family::Bd3lm | Family::Sdar => Rule::Llada(LladaRule {
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
    let mut seq = prompt.to_vec();
    seq.resize(prompt.len() + params.gen_length, special.mask);
    let mut run = Run {
        params,
        special,
        seq,
        prompt_len: prompt.len(),
        rule,
        rng: StdRng::seed_from_u64(params.seed),
        start: Instant::now(),
        steps: 0,
        nfe: 0,
        total: 0,
        blocks: params.blocks(prompt.len()),
        revealed: Vec::new(),
        on_step,
    };
    model.clear_cache();
    let result = match (params.family, params.schedule) {
        (Family::Bd3lm | Family::Sdar, _) => block_diffusion(model, &mut run),
        (_, Schedule::BlockTimesteps { .. }) => dream_cached(model, &mut run),
        _ => bidirectional(model, &mut run),
    };
    model.clear_cache();
    let (end, stop) = result?;
    Ok(run.finish(end, stop))
}

/// Token ids as a `[1, n]` tensor.
fn ids(tokens: &[u32], device: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_slice(tokens, (1, tokens.len()), device)
}

fn positions(range: Range<usize>) -> Vec<u32> {
    range.map(|p| p as u32).collect()
}

/// Logits of `rows` (indices into `span`) from one pass over `seq[span]` at its own positions,
/// doing `op` to the cache.
fn span_logits(
    model: &mut impl Denoiser,
    seq: &[u32],
    span: Range<usize>,
    op: CacheOp,
    rows: &[u32],
) -> candle_core::Result<Tensor> {
    let tokens = ids(&seq[span.clone()], model.device())?;
    let pass = Pass {
        ids: &tokens,
        positions: &positions(span),
        bias: None,
        cache: op,
    };
    model.forward(&pass, rows)?.i(0)
}

/// What a Fast-dLLM step after the block start runs, for the block `block` of a sequence of
/// `len` tokens: the block and everything after it against the cached prefix (`prefix`), or the
/// block alone, written over its own cache entries (`dual`).
fn cached_step(cache: CacheMode, block: Range<usize>, len: usize) -> (Range<usize>, CacheOp) {
    match cache {
        CacheMode::Dual => (block.clone(), CacheOp::Overwrite { at: block.start }),
        _ => (block.start..len, CacheOp::Read),
    }
}

/// LLaDA and Dream: every step sees the whole sequence (possibly through Fast-dLLM's caches).
/// Returns the canvas length produced and why it stopped early, if it did.
fn bidirectional<F: FnMut(&Step) -> ControlFlow<()>>(
    model: &mut impl Denoiser,
    run: &mut Run<'_, F>,
) -> Result<(usize, Option<Stop>)> {
    let params = run.params;
    let p = run.prompt_len;
    let len = p + params.gen_length;
    let blocks = run.blocks.clone();
    let steps_per_block = params.steps / blocks.len();
    let plan = match params.schedule {
        // Every block starts fully masked, so one plan serves them all.
        Schedule::Blocks { block_length } => {
            Plan::Counts(transfer_counts(block_length, steps_per_block))
        }
        Schedule::Timesteps { eps } => {
            Plan::Timesteps(linspace_f32(1.0, eps as f32, params.steps + 1))
        }
        Schedule::BlockTimesteps { .. } => bail!("Dream's cached sampler runs in its own driver"),
    };
    run.total = match (&plan, params.parallel()) {
        (_, Some(_)) => params.gen_length,
        (Plan::Counts(c), None) => blocks.len() * c.iter().filter(|&&k| k > 0).count(),
        (Plan::Timesteps(_), None) => params.steps,
    };
    let origin = params.strategy == Strategy::Origin;
    let shift = |masked: &[u32], offset: usize| -> Vec<u32> {
        masked.iter().map(|&pos| if params.shift_logits { pos.saturating_sub(1) } else { pos } - offset as u32).collect()
    };
    for (block, span) in blocks.iter().enumerate() {
        let (start, end) = (p + span.start, p + span.end);
        let mut refreshed = false;
        let mut i = 0;
        loop {
            let masked = run.masked(span);
            if masked.is_empty() || (params.parallel().is_none() && i >= plan.len()) {
                break;
            }
            let transfer = match params.parallel() {
                Some(rule) => rule,
                None => plan.transfer(i, masked.len(), origin),
            };
            i += 1;
            // A step that may reveal nothing would only repeat a forward pass: skip it.
            if transfer == Transfer::Count(0) {
                continue;
            }
            let logits = match params.cache {
                CacheMode::None => guided_logits(
                    model,
                    &run.seq,
                    p,
                    &shift(&masked, 0),
                    params.cfg_scale,
                    run.special.mask,
                ),
                // A block's first step: one full pass, which also stores every position.
                _ if !refreshed => {
                    refreshed = true;
                    let logits =
                        span_logits(model, &run.seq, 0..len, CacheOp::Store, &shift(&masked, 0));
                    if params.cache == CacheMode::Prefix {
                        model.truncate_cache(start);
                    }
                    logits
                }
                cache => {
                    let (span, op) = cached_step(cache, start..end, len);
                    span_logits(model, &run.seq, span, op, &shift(&masked, start))
                }
            }
            .with_context(|| format!("model forward pass at step {}", run.steps))?;
            run.nfe += 1;
            if let ControlFlow::Break(stop) = run.reveal(&logits, &masked, transfer, block)? {
                return Ok((params.gen_length, Some(stop)));
            }
        }
    }
    Ok((params.gen_length, None))
}

/// Dream with Fast-dLLM's caches (Fast-dLLM `dream/model/generation_utils_block.py`,
/// reference-spec 3.3). Blocks left to right; at each block start one full pass stores every
/// position's keys and values and decodes the block's first position from it unconditionally
/// (row `start - 1`, the logit shift). Then each step runs, against the cache, the block and the
/// masked suffix after it (`prefix`: the cache is cut back to the prompt and earlier blocks) or
/// the block alone, its entries overwritten in place among the stale suffix (`dual`), and
/// reveals by the threshold rule or by Dream's count `int(N (1 - s/t))` on the block's own
/// timesteps `linspace(1, eps, steps_per_block + 1)` from the second entry on (the block-start
/// decode stands for the first), everything left at its last step, most negative entropy first.
fn dream_cached<F: FnMut(&Step) -> ControlFlow<()>>(
    model: &mut impl Denoiser,
    run: &mut Run<'_, F>,
) -> Result<(usize, Option<Stop>)> {
    let params = run.params;
    let Schedule::BlockTimesteps { eps, .. } = params.schedule else {
        bail!("Dream's cached sampler needs blocks");
    };
    let p = run.prompt_len;
    let len = p + params.gen_length;
    let blocks = run.blocks.clone();
    let steps_per_block = params.steps / blocks.len();
    let plan = Plan::Timesteps(linspace_f32(1.0, eps as f32, steps_per_block + 1));
    run.total = match params.parallel() {
        Some(_) => params.gen_length,
        None => params.steps,
    };
    // Logit row `pos - 1` predicts `pos`, within a pass whose first token is `offset`.
    let rows = |masked: &[u32], offset: usize| -> Vec<u32> {
        masked
            .iter()
            .map(|&pos| (pos as usize).saturating_sub(1).max(offset) as u32 - offset as u32)
            .collect()
    };
    for (block, span) in blocks.iter().enumerate() {
        let (start, end) = (p + span.start, p + span.end);
        let first = [start as u32];
        let logits = span_logits(model, &run.seq, 0..len, CacheOp::Store, &rows(&first, 0))
            .with_context(|| format!("model forward pass at step {}", run.steps))?;
        run.nfe += 1;
        if params.cache == CacheMode::Prefix {
            model.truncate_cache(start);
        }
        if let ControlFlow::Break(stop) = run.reveal(&logits, &first, Transfer::Count(1), block)? {
            return Ok((params.gen_length, Some(stop)));
        }
        let mut i = 1;
        loop {
            let masked = run.masked(span);
            if masked.is_empty() {
                break;
            }
            let transfer = match params.parallel() {
                Some(rule) => rule,
                None if i >= steps_per_block => break,
                None => plan.transfer(i, masked.len(), false),
            };
            i += 1;
            // Fast-dLLM runs the pass and reveals nothing; skipping it changes no token.
            if transfer == Transfer::Count(0) {
                continue;
            }
            let (span, op) = cached_step(params.cache, start..end, len);
            let logits = span_logits(model, &run.seq, span, op, &rows(&masked, start))
                .with_context(|| format!("model forward pass at step {}", run.steps))?;
            run.nfe += 1;
            if let ControlFlow::Break(stop) = run.reveal(&logits, &masked, transfer, block)? {
                return Ok((params.gen_length, Some(stop)));
            }
        }
    }
    Ok((params.gen_length, None))
}

/// Block diffusion (dllm `BD3LMSampler`): the prompt is end-aligned to the block grid (its first
/// block holds `P mod bs` tokens), attention is block-causal (a position sees earlier blocks and
/// its whole own block), pad tokens are invisible and take no position (so a generated pad
/// shifts what follows, as dllm's prefix pass does), and a block that holds EOS ends the run.
///
/// SDAR (`generate.py::block_diffusion_generate`, block-diffusion-spec 2.3) differs in four
/// ways: the grid starts at position 0, so the first block runs the prompt's last `P mod bs`
/// tokens with its masks; reveal counts are LLaDA's even split of a whole block over
/// `steps_per_block` (at most `bs` steps; clamped to the masks left); `--threshold` is its
/// `low_confidence_dynamic` rule; and the run ends after a block once any stop id appears.
/// Pads are ordinary tokens there.
///
/// With the cache (`--cache prefix`, the default for these models), the prompt runs once, a
/// block's steps run only the block against the cache, and a finished block is appended by one
/// pass over its clean tokens: exactly what the reference's full recomputation gives, because a
/// block's keys depend only on earlier blocks. `--cache none` recomputes everything each step.
fn block_diffusion<F: FnMut(&Step) -> ControlFlow<()>>(
    model: &mut impl Denoiser,
    run: &mut Run<'_, F>,
) -> Result<(usize, Option<Stop>)> {
    let params = run.params;
    let Schedule::Blocks { block_length: bs } = params.schedule else {
        bail!("block diffusion needs a block length");
    };
    let sdar = params.family == Family::Sdar;
    let device = model.device().clone();
    let p = run.prompt_len;
    let blocks = run.blocks.clone();
    let mut steps_per_block = params
        .steps_per_block
        .unwrap_or(params.steps.div_ceil(blocks.len()))
        .max(1);
    if sdar {
        // Every SDAR step reveals at least one position; more steps would reveal nothing.
        steps_per_block = steps_per_block.min(bs);
    }
    // Reveal counts for a block of `len` masks (SDAR splits a whole block, whatever its masks).
    let schedule = |len: usize| match sdar {
        true => transfer_counts(bs, steps_per_block),
        false => bd3lm_counts(len, steps_per_block),
    };
    run.total = match params.parallel() {
        Some(_) => params.gen_length,
        None => blocks.iter().map(|b| schedule(b.len()).len()).sum(),
    };
    let pad = if sdar { None } else { run.special.pad };
    let visible = |t: u32| Some(t) != pad;
    // Block index of each sequence position: BD3LM end-aligns the prompt to the grid.
    let left = if sdar { 0 } else { (bs - p % bs) % bs };
    let block_of = |pos: usize| (left + pos) / bs;
    // The prompt positions cached before the first block: SDAR's first block holds the tail.
    let prefill = if sdar { p - p % bs } else { p };
    let exact = params.cache != CacheMode::None;
    // The position the next visible token takes.
    let mut next_position = 0u32;
    if exact {
        let keep: Vec<usize> = (0..prefill).filter(|&i| visible(run.seq[i])).collect();
        if !keep.is_empty() {
            let tokens: Vec<u32> = keep.iter().map(|&i| run.seq[i]).collect();
            let pos: Vec<u32> = (0..keep.len() as u32).collect();
            let groups: Vec<usize> = keep.iter().map(|&i| block_of(i)).collect();
            let bias = block_causal_bias(&groups, &groups, &device)?;
            let pass = Pass {
                ids: &ids(&tokens, &device)?,
                positions: &pos,
                bias: Some(&bias),
                cache: CacheOp::Store,
            };
            model.forward(&pass, &[]).context("prefilling the prompt")?;
            run.nfe += 1;
            next_position = keep.len() as u32;
        }
    } else {
        next_position = (0..prefill).filter(|&i| visible(run.seq[i])).count() as u32;
    }
    let mut end = 0;
    for (block, span) in blocks.iter().enumerate() {
        let (start, stop_at) = (p + span.start, p + span.end);
        // Where the block's pass begins: its grid line, inside the prompt for SDAR's first.
        let first = if sdar { start - start % bs } else { start };
        end = span.end;
        let counts = schedule(span.len());
        // The block's positions, fixed at its start (all visible).
        let block_positions: Vec<u32> =
            (next_position..next_position + (stop_at - first) as u32).collect();
        let mut i = 0;
        loop {
            let masked = run.masked(span);
            if masked.is_empty() || (params.parallel().is_none() && i >= counts.len()) {
                break;
            }
            // A whole block's count may exceed the masks left beside SDAR's prompt tail.
            let count = counts.get(i).copied().unwrap_or(1).min(masked.len());
            let transfer = match params.parallel() {
                Some(Transfer::Threshold(threshold)) if sdar => {
                    Transfer::Dynamic { count, threshold }
                }
                Some(rule) => rule,
                None => Transfer::Count(count),
            };
            i += 1;
            let logits = if exact {
                let rows: Vec<u32> = masked.iter().map(|&m| m - first as u32).collect();
                let pass = Pass {
                    ids: &ids(&run.seq[first..stop_at], &device)?,
                    positions: &block_positions,
                    bias: None,
                    cache: CacheOp::Read,
                };
                model.forward(&pass, &rows)?.i(0)
            } else {
                // Everything from scratch: earlier tokens that are pads drop out; the current
                // block keeps all its positions (dllm fixes them at the block's start).
                let keep: Vec<usize> = (0..stop_at)
                    .filter(|&i| i >= first || visible(run.seq[i]))
                    .collect();
                let tokens: Vec<u32> = keep.iter().map(|&i| run.seq[i]).collect();
                let pos: Vec<u32> = (0..keep.len() as u32).collect();
                let groups: Vec<usize> = keep.iter().map(|&i| block_of(i)).collect();
                let bias = block_causal_bias(&groups, &groups, &device)?;
                let rows: Vec<u32> = masked
                    .iter()
                    .filter_map(|&m| keep.iter().position(|&k| k == m as usize))
                    .map(|r| r as u32)
                    .collect();
                let pass = Pass {
                    ids: &ids(&tokens, &device)?,
                    positions: &pos,
                    bias: Some(&bias),
                    cache: CacheOp::None,
                };
                model.forward(&pass, &rows)?.i(0)
            }
            .with_context(|| format!("model forward pass at step {}", run.steps))?;
            run.nfe += 1;
            if let ControlFlow::Break(stop) = run.reveal(&logits, &masked, transfer, block)? {
                return Ok((end, Some(stop)));
            }
        }
        // The references stop after a block that holds EOS (dllm) or once any stop id has
        // appeared in the answer (SDAR), early if blocks are left.
        let stopped = match sdar {
            true => run.seq[p..stop_at]
                .iter()
                .any(|t| run.special.stops.contains(t)),
            false => run.seq[start..stop_at].contains(&run.special.eos),
        };
        if stopped {
            let blocks_left = block + 1 < blocks.len();
            return Ok((end, blocks_left.then_some(Stop::AnswerFinal)));
        }
        if block + 1 == blocks.len() {
            break;
        }
        // Commit the finished block: its visible tokens, at their positions, into the cache.
        let keep: Vec<u32> = run.seq[first..stop_at]
            .iter()
            .copied()
            .filter(|&t| visible(t))
            .collect();
        if exact && !keep.is_empty() {
            let pos: Vec<u32> = (next_position..next_position + keep.len() as u32).collect();
            let pass = Pass {
                ids: &ids(&keep, &device)?,
                positions: &pos,
                bias: None,
                cache: CacheOp::Append,
            };
            model
                .forward(&pass, &[])
                .context("caching a finished block")?;
            run.nfe += 1;
        }
        next_position += keep.len() as u32;
    }
    Ok((end, None))
}

/// The additive attention bias (0 or -inf, `[1, 1, q, k]`) letting query `i` see key `j` when
/// `key_blocks[j] <= query_blocks[i]`: block-causal attention.
fn block_causal_bias(
    query_blocks: &[usize],
    key_blocks: &[usize],
    device: &Device,
) -> candle_core::Result<Tensor> {
    let data: Vec<f32> = query_blocks
        .iter()
        .flat_map(|&q| {
            key_blocks
                .iter()
                .map(move |&k| if k <= q { 0.0 } else { f32::NEG_INFINITY })
        })
        .collect();
    Tensor::from_vec(data, (1, 1, query_blocks.len(), key_blocks.len()), device)
}

/// True when a stop token is revealed and every position before the first one is revealed:
/// nothing later can change the answer, since revealed tokens are never re-masked.
fn answer_is_final(canvas: &[u32], special: &SpecialIds) -> bool {
    match canvas.iter().position(|t| special.stops.contains(t)) {
        Some(stop) => !canvas[..stop].contains(&special.mask),
        None => false,
    }
}

/// The rows (indices into `decisions`) a step reveals; `entropies` (one per decision) are read
/// only by the entropy bound.
fn select(
    decisions: &[Decision],
    entropies: &[f32],
    transfer: Transfer,
    alg_temp: f64,
    rng: &mut StdRng,
) -> Vec<usize> {
    match transfer {
        Transfer::Probability(p) => (0..decisions.len())
            .filter(|_| rng.random::<f64>() < p)
            .collect(),
        Transfer::Threshold(t) => {
            // Fast-dLLM `get_transfer_index`: the top-1 always, the rest if confident enough.
            let order = most_confident(decisions, decisions.len());
            order
                .iter()
                .enumerate()
                .filter(|&(rank, &row)| rank == 0 || f64::from(decisions[row].confidence) >= t)
                .map(|(_, &row)| row)
                .collect()
        }
        Transfer::Dynamic { count, threshold } => {
            // A float32 tensor against a Python float compares in float32; strictly above.
            let threshold = threshold as f32;
            let high: Vec<usize> = (0..decisions.len())
                .filter(|&row| decisions[row].confidence > threshold)
                .collect();
            match high.len() >= count {
                true => high,
                false => most_confident(decisions, count),
            }
        }
        Transfer::EntropyBound(bound) => {
            // JET `postprocess_loop`: sort by entropy ascending, k = #{cumsum < bound}
            // (`searchsorted(right=False)`), at least one.
            let mut order: Vec<usize> = (0..entropies.len()).collect();
            order.sort_by(|&a, &b| entropies[a].total_cmp(&entropies[b]).then(a.cmp(&b)));
            let mut sum = 0.0f64;
            let k = order
                .iter()
                .take_while(|&&row| {
                    sum += f64::from(entropies[row]);
                    sum < bound
                })
                .count();
            order.truncate(k.max(1));
            order
        }
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

/// Logits (`[rows, vocab]`) at the `rows` of `seq` from one full pass, with classifier-free
/// guidance when `cfg_scale > 0`: a second row with every prompt position masked runs in the
/// same batch and the result is `un + (w + 1)(cond - un)` (reference-spec 1.6b).
fn guided_logits(
    model: &mut impl Denoiser,
    seq: &[u32],
    prompt_len: usize,
    rows: &[u32],
    cfg_scale: f64,
    mask: u32,
) -> candle_core::Result<Tensor> {
    let device = model.device().clone();
    let all = positions(0..seq.len());
    if cfg_scale == 0.0 {
        return model
            .forward(&Pass::full(&ids(seq, &device)?, &all), rows)?
            .i(0);
    }
    let mut both = seq.to_vec();
    both.extend(std::iter::repeat_n(mask, prompt_len));
    both.extend_from_slice(&seq[prompt_len..]);
    let batch = Tensor::from_vec(both, (2, seq.len()), &device)?;
    let logits = model.forward(&Pass::full(&batch, &all), rows)?;
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

    /// A denoiser whose logits favour token `position % vocab` at each row, more strongly for
    /// later positions, and that counts its forward passes.
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
        fn forward(&mut self, pass: &Pass, rows: &[u32]) -> candle_core::Result<Tensor> {
            self.calls += 1;
            let (batch, _) = pass.ids.dims2()?;
            self.batch_seen = batch;
            self.rows_seen = rows.to_vec();
            let mut data = Vec::new();
            for _ in 0..batch {
                for &r in rows {
                    // Keyed on the absolute position, so passes through a cache agree.
                    let pos = pass.positions[r as usize] as usize;
                    let mut row = vec![0f32; self.vocab];
                    row[pos % self.vocab] = 1.0 + pos as f32;
                    data.extend(row);
                }
            }
            Tensor::from_vec(data, (batch, rows.len(), self.vocab), &Device::Cpu)
        }
        fn truncate_cache(&mut self, _: usize) {}
        fn clear_cache(&mut self) {}
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
            threshold: None,
            entropy_bound: None,
            cache: CacheMode::None,
            steps_per_block: None,
            early_stop: false,
            seed: 0,
        }
    }

    fn special() -> SpecialIds {
        SpecialIds {
            mask: 199,
            eos: 4,
            eot: None,
            pad: None,
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
    fn sdar_blocks_follow_the_grid_from_the_first_prompt_token() {
        let sdar = Params {
            family: Family::Sdar,
            ..params(10, 4, 10)
        };
        // A 6-token prompt leaves 2 of its grid block to the canvas.
        assert_eq!(sdar.blocks(6), vec![0..2, 2..6, 6..10]);
        assert_eq!(sdar.blocks(8), vec![0..4, 4..8, 8..10]);
        // Other families start their blocks at the canvas.
        assert_eq!(params(10, 4, 10).blocks(6), vec![0..4, 4..8, 8..10]);
    }

    #[test]
    fn dynamic_takes_everything_above_the_threshold_or_the_count() {
        let d = |c: f32| Decision {
            token: 0,
            confidence: c,
        };
        let decisions = [d(0.95), d(0.5), d(0.91), d(0.9)];
        let mut rng = StdRng::seed_from_u64(0);
        let mut pick = |count, threshold| {
            select(
                &decisions,
                &[],
                Transfer::Dynamic { count, threshold },
                0.0,
                &mut rng,
            )
        };
        // Strictly above: 0.9 itself stays masked.
        assert_eq!(pick(1, 0.9), vec![0, 2]);
        assert_eq!(pick(2, 0.9), vec![0, 2]);
        assert_eq!(pick(3, 0.9), vec![0, 2, 3]);
    }

    #[test]
    fn entropy_bound_takes_the_lowest_entropies_while_their_sum_stays_below() {
        let decisions = [Decision {
            token: 0,
            confidence: 0.5,
        }; 4];
        let entropies = [0.3f32, 0.05, 0.1, 2.0];
        let mut rng = StdRng::seed_from_u64(0);
        let mut pick = |bound| {
            select(
                &decisions,
                &entropies,
                Transfer::EntropyBound(bound),
                0.0,
                &mut rng,
            )
        };
        assert_eq!(pick(0.2), vec![1, 2]);
        // The sum must stay strictly below (searchsorted, right=False).
        assert_eq!(pick(0.15000001), vec![1, 2]);
        assert_eq!(pick(0.05), vec![1]);
        // At least one, however small the bound.
        assert_eq!(pick(1e-9), vec![1]);
        assert_eq!(pick(1e9), vec![1, 2, 0, 3]);
    }

    #[test]
    fn entropy_bound_runs_each_block_until_it_is_revealed() -> Result<()> {
        // `Fixed` puts logit `1 + pos` on one of 200 tokens: later positions are surer.
        let h = |pos: usize| {
            let a = 1.0 + pos as f64;
            let z = a.exp() + 199.0;
            z.ln() - a * a.exp() / z
        };
        let bounded = |bound| Params {
            entropy_bound: Some(bound),
            ..params(4, 4, 4)
        };
        let mut m = Fixed::new();
        let (out, seen) = run(&mut m, &[1, 2], &bounded(1e-9))?;
        assert_eq!(seen, vec![vec![3], vec![2], vec![1], vec![0]]);
        assert_eq!(out.canvas, vec![2, 3, 4, 5]);
        // Positions 5 and 4 (canvas 3 and 2) fit under the bound together, 3 more does not;
        // then 3 alone fits, 3 and 2 do not.
        assert!(h(3) < h(5) + h(4) && h(3) + h(2) > h(5) + h(4));
        let (out, seen) = run(&mut m, &[1, 2], &bounded(h(5) + h(4) + 1e-3))?;
        assert_eq!(seen, vec![vec![2, 3], vec![1], vec![0]]);
        assert_eq!((out.steps, out.nfe), (3, 3));
        // The steps count no longer caps the block: a large bound reveals it at once.
        let (out, seen) = run(
            &mut m,
            &[1, 2],
            &Params {
                steps: 4,
                ..bounded(1e9)
            },
        )?;
        assert_eq!((seen, out.steps), (vec![vec![0, 1, 2, 3]], 1));
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
