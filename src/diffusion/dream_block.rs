//! Fast-dLLM's Dream sampler with a cache (NVlabs/Fast-dLLM
//! `dream/model/generation_utils_block.py`). Blocks left to right; at each block start one full
//! pass stores every position's keys and values and decodes the block's first position from it
//! unconditionally (row `start - 1`, the logit shift). Then each step runs, against the cache
//! (`fast_dllm_cache.rs`), the block and the masked suffix after it (prefix) or the block alone
//! (dual), and reveals by the threshold rule or by Dream's count `int(N (1 - s/t))` on the
//! block's own timesteps `linspace(1, eps, steps_per_block + 1)` from the second entry on (the
//! block-start decode stands for the first), everything left at its last step, most negative
//! entropy first.

use std::ops::ControlFlow;

use anyhow::{Context, Result};

use super::fast_dllm_cache::{cached_logits, refresh};
use super::plan::DreamBlocks;
use super::reveal::Transfer;
use super::run::{Outcome, Run};
use super::schedule::TimestepSchedule;
use super::step::Step;
use crate::model::Denoiser;

pub fn run<F: FnMut(&Step) -> ControlFlow<()>>(
    model: &mut impl Denoiser,
    run: &mut Run<'_, F>,
    driver: &DreamBlocks,
) -> Result<Outcome> {
    let plan = run.plan;
    let DreamBlocks {
        steps_per_block,
        eps,
        cache,
        ..
    } = *driver;
    let p = run.prompt_len;
    let timesteps = TimestepSchedule::new(eps, steps_per_block);
    // Logit row `pos - 1` predicts `pos`, within a pass whose first token is `offset`.
    let rows = |masked: &[u32], offset: usize| -> Vec<u32> {
        masked
            .iter()
            .map(|&pos| (pos as usize).saturating_sub(1).max(offset) as u32 - offset as u32)
            .collect()
    };
    let blocks = run.blocks.clone();
    for (block, span) in blocks.iter().enumerate() {
        let (start, end) = (p + span.start, p + span.end);
        let first = [start as u32];
        let logits = refresh(model, &run.seq, cache, start, &rows(&first, 0))
            .with_context(|| format!("model forward pass at step {}", run.steps()))?;
        run.nfe += 1;
        if let ControlFlow::Break(stop) = run.reveal(&logits, &first, Transfer::Count(1), block)? {
            return Ok((plan.gen_length, Some(stop)));
        }
        let mut i = 1;
        loop {
            let masked = run.masked(span);
            if masked.is_empty() || (!plan.reveal.adaptive() && i >= steps_per_block) {
                break;
            }
            let transfer = Transfer::of(plan.reveal, || timesteps.share(i, masked.len(), false));
            i += 1;
            // Fast-dLLM runs the pass and reveals nothing; skipping it changes no token.
            if transfer.is_empty() {
                continue;
            }
            let logits = cached_logits(model, &run.seq, cache, start..end, &rows(&masked, start))
                .with_context(|| format!("model forward pass at step {}", run.steps()))?;
            run.nfe += 1;
            if let ControlFlow::Break(stop) = run.reveal(&logits, &masked, transfer, block)? {
                return Ok((plan.gen_length, Some(stop)));
            }
        }
    }
    Ok((plan.gen_length, None))
}
