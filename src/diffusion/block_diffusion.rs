//! Block diffusion (dllm `dllm/core/samplers/bd3lm.py::BD3LMSampler`, and SDAR's
//! JetAstra/SDAR `generate.py::block_diffusion_generate`): attention is block-causal (a position
//! sees earlier blocks and its whole own block), each block is denoised on its own schedule, and
//! finished blocks are kept in an exact KV cache.
//!
//! The two samplers are one loop over a [`BlockGrid`]: where the grid starts (BD3LM end-aligns
//! the prompt, so its first block holds `P mod B` tokens; SDAR starts at position 0, so the
//! first canvas block runs with the prompt's last `P mod B` tokens), the per-step counts
//! (linear alpha over the block's masks, or an even split of a whole block), when to stop (after
//! a block holding EOS, or once any stop id appears), and whether pads are invisible (dllm: a
//! pad takes no position and no attention, so a generated pad shifts what follows, as dllm's
//! prefix pass does).
//!
//! With the cache the prompt runs once, a block's steps run only the block against the cache,
//! and a finished block is appended by one pass over its clean tokens: exactly what the
//! reference's full recomputation gives, because a block's keys depend only on earlier blocks.
//! Without it everything is recomputed each step.

use std::ops::ControlFlow;

use anyhow::{Context, Result};
use candle_core::{Device, IndexOp, Tensor};

use super::plan::{BlockDiffusion, BlockGrid, BlockStop, GridStart};
use super::reveal::Transfer;
use super::run::{ids, Outcome, Run, Stop};
use super::schedule::Share;
use super::step::Step;
use crate::model::{CacheOp, Denoiser, Pass};

pub fn run<F: FnMut(&Step) -> ControlFlow<()>>(
    model: &mut impl Denoiser,
    run: &mut Run<'_, F>,
    driver: &BlockDiffusion,
) -> Result<Outcome> {
    let plan = run.plan;
    let BlockDiffusion {
        grid,
        block_length: bs,
        exact_cache: exact,
        ..
    } = *driver;
    let device = model.device().clone();
    let p = run.prompt_len;
    let blocks = run.blocks.clone();
    let pad = if grid.pads_invisible {
        run.special.pad
    } else {
        None
    };
    let visible = |t: u32| Some(t) != pad;
    let (left, prefill) = grid_offsets(grid, p, bs);
    let block_of = |pos: usize| (left + pos) / bs;
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
        let first = match grid.start {
            GridStart::SequenceStart => start - start % bs,
            GridStart::PromptEnd => start,
        };
        end = span.end;
        let counts = driver.counts(plan.steps, span.len(), blocks.len());
        // The block's positions, fixed at its start (all visible).
        let block_positions: Vec<u32> =
            (next_position..next_position + (stop_at - first) as u32).collect();
        let mut i = 0;
        let mut post_steps = 0;
        loop {
            let masked = run.masked(span);
            // Which rows the pass decides, what it may reveal, and whether it edits.
            let (rows, transfer, edit) = match driver.editing {
                None => {
                    if masked.is_empty() || (!plan.reveal.adaptive() && i >= counts.len()) {
                        break;
                    }
                    // A whole block's count may exceed the masks left beside SDAR's prompt tail.
                    let count = counts.get(i).copied().unwrap_or(1).min(masked.len());
                    let transfer = Transfer::of(plan.reveal, || Share::Count(count));
                    (masked.clone(), transfer, None)
                }
                // LLaDA2.1: every answer position of the block is decided; once no mask is
                // left, passes are post-steps.
                Some(e) => {
                    if masked.is_empty() {
                        post_steps += 1;
                    }
                    if post_steps > e.max_post_steps {
                        break;
                    }
                    let transfer = match masked.is_empty() {
                        true => Transfer::Count(0),
                        false => Transfer::of(plan.reveal, || {
                            Share::Count(e.num_to_transfer.min(masked.len()))
                        }),
                    };
                    let rows = (start as u32..stop_at as u32).collect();
                    (rows, transfer, Some(e.threshold))
                }
            };
            i += 1;
            let logits = if exact {
                let rows: Vec<u32> = rows.iter().map(|&m| m - first as u32).collect();
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
                let rows: Vec<u32> = rows
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
            .with_context(|| format!("model forward pass at step {}", run.steps()))?;
            run.nfe += 1;
            let flow = run.reveal_and_edit(&logits, &rows, transfer, edit, block)?;
            if let ControlFlow::Break(stop) = flow {
                return Ok((end, Some(stop)));
            }
            // LLaDA2.1 ends a block at the first pass after its masks that edits nothing.
            if edit.is_some() && masked.is_empty() && run.step_edits() == 0 {
                break;
            }
        }
        let stopped = match grid.stop {
            BlockStop::AnswerHasStop => run.seq[p..stop_at]
                .iter()
                .any(|t| run.special.stops.contains(t)),
            BlockStop::BlockHoldsEos => run.seq[start..stop_at].contains(&run.special.eos),
            BlockStop::AnswerHasEos => run.seq[p..stop_at].contains(&run.special.eos),
            BlockStop::EarlyStopOnly => {
                let answer = &run.seq[p..stop_at];
                plan.early_stop
                    && !answer.contains(&run.special.mask)
                    && answer.contains(&run.special.eos)
            }
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

/// For a prompt of `p` tokens on `grid` with blocks of `bs`: the grid offset of position 0
/// (BD3LM end-aligns the prompt, so its first block holds `p mod bs` tokens), and how many
/// prompt positions are prefilled before the first block (SDAR's first block holds the tail).
fn grid_offsets(grid: BlockGrid, p: usize, bs: usize) -> (usize, usize) {
    match grid.start {
        GridStart::PromptEnd => ((bs - p % bs) % bs, p),
        GridStart::SequenceStart => (0, p - p % bs),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_place_the_prompt_as_their_samplers_do() {
        // A 6-token prompt in blocks of 4: BD3LM pads the grid on the left by 2 and caches the
        // whole prompt; SDAR's grid starts at 0 and its first block holds prompt tokens 4 and 5.
        assert_eq!(grid_offsets(BlockGrid::BD3LM, 6, 4), (2, 6));
        assert_eq!(grid_offsets(BlockGrid::SDAR, 6, 4), (0, 4));
        assert_eq!(grid_offsets(BlockGrid::BD3LM, 8, 4), (0, 8));
    }

    #[test]
    fn block_causal_bias_lets_a_block_see_itself_and_earlier_blocks() -> candle_core::Result<()> {
        let bias = block_causal_bias(&[0, 1, 1], &[0, 1, 1], &Device::Cpu)?;
        let rows: Vec<Vec<f32>> = bias.squeeze(0)?.squeeze(0)?.to_vec2()?;
        assert_eq!(rows[0], vec![0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        assert_eq!(rows[1], vec![0.0, 0.0, 0.0]);
        Ok(())
    }
}
