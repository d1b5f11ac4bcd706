//! LLaDA's `generate()` (ML-GSAI/LLaDA `generate.py`): the canvas in semi-autoregressive blocks,
//! each block in `steps_per_block` steps, step `i` revealing `transfer_counts(..)[i]` of its
//! positions, every step a pass over the whole sequence (with classifier-free guidance when
//! asked) or through one of Fast-dLLM's caches (`fast_dllm_cache.rs`). Dream models given
//! `--block-length` without a cache run here too, reading logit row `i - 1` for position `i`.

use std::ops::ControlFlow;

use anyhow::{Context, Result};
use candle_core::{IndexOp, Tensor};

use super::fast_dllm_cache::{cached_logits, refresh};
use super::plan::{Blocks, FullPass};
use super::reveal::Transfer;
use super::run::{ids, positions, Outcome, Run};
use super::schedule::{transfer_counts, Share};
use super::step::Step;
use crate::model::{Denoiser, Pass};

pub fn run<F: FnMut(&Step) -> ControlFlow<()>>(
    model: &mut impl Denoiser,
    run: &mut Run<'_, F>,
    driver: &Blocks,
) -> Result<Outcome> {
    let plan = run.plan;
    let Blocks {
        block_length,
        steps_per_block,
        pass,
    } = *driver;
    let p = run.prompt_len;
    // Every block starts fully masked, so one schedule serves them all.
    let counts = transfer_counts(block_length, steps_per_block);
    let shift = plan.shift_logits;
    // Logit rows of the masked positions, in a pass whose first token is `offset`.
    let rows = |masked: &[u32], offset: usize| -> Vec<u32> {
        masked
            .iter()
            .map(|&pos| if shift { pos.saturating_sub(1) } else { pos } - offset as u32)
            .collect()
    };
    let blocks = run.blocks.clone();
    for (block, span) in blocks.iter().enumerate() {
        let (start, end) = (p + span.start, p + span.end);
        let mut refreshed = false;
        let mut i = 0;
        loop {
            let masked = run.masked(span);
            if masked.is_empty() || (!plan.reveal.adaptive() && i >= counts.len()) {
                break;
            }
            let transfer = Transfer::of(plan.reveal, || {
                Share::Count(counts.get(i).copied().unwrap_or(masked.len()))
            });
            i += 1;
            // A step that may reveal nothing would only repeat a forward pass: skip it.
            if transfer.is_empty() {
                continue;
            }
            let logits = match pass {
                FullPass::Recompute { cfg_scale } => guided_logits(
                    model,
                    &run.seq,
                    p,
                    &rows(&masked, 0),
                    cfg_scale,
                    run.special.mask,
                ),
                FullPass::Cached(cache) if !refreshed => {
                    refreshed = true;
                    refresh(model, &run.seq, cache, start, &rows(&masked, 0))
                }
                FullPass::Cached(cache) => {
                    cached_logits(model, &run.seq, cache, start..end, &rows(&masked, start))
                }
            }
            .with_context(|| format!("model forward pass at step {}", run.steps()))?;
            run.nfe += 1;
            if let ControlFlow::Break(stop) = run.reveal(&logits, &masked, transfer, block)? {
                return Ok((plan.gen_length, Some(stop)));
            }
        }
    }
    Ok((plan.gen_length, None))
}

/// Logits (`[rows, vocab]`) at the `rows` of `seq` from one full pass, with classifier-free
/// guidance when `cfg_scale > 0`: a second row with every prompt position masked runs in the
/// same batch and the result is `un + (w + 1)(cond - un)` (LLaDA `generate.py`, `cfg_scale`).
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

#[cfg(test)]
mod tests {
    use super::super::fixed_denoiser::Callback;
    use super::super::fixed_denoiser::{run_collect, Fixed};
    use super::super::plan::tests::llada;
    use super::super::plan::{Driver, Plan, RevealRule};
    use super::super::run::Run;
    use super::*;

    /// The plan's blocks driver, as the tests run it.
    fn blocks(m: &mut Fixed, state: &mut Run<'_, Callback>) -> Result<Outcome> {
        match state.plan.driver {
            Driver::Blocks(b) => run(m, state, &b),
            other => anyhow::bail!("not a blocks plan: {other:?}"),
        }
    }
    use crate::diffusion::decision::Strategy;

    #[test]
    fn blocks_fill_in_order_most_confident_first() -> Result<()> {
        let mut m = Fixed::new();
        let (out, seen, _) = run_collect(&mut m, &[1, 2], &llada(4, 2, 4), blocks)?;
        // Later positions have larger logits, so each block reveals right to left.
        assert_eq!(seen, vec![vec![1], vec![0], vec![3], vec![2]]);
        assert_eq!(out.canvas, vec![2, 3, 4, 5]);
        assert_eq!((out.steps, out.nfe, m.calls), (4, 4, 4));
        assert!(!out.cancelled && !out.stopped_early);
        Ok(())
    }

    #[test]
    fn entropy_bound_runs_each_block_until_it_is_revealed() -> Result<()> {
        // `Fixed` puts logit `1 + pos` on one of 200 tokens: later positions are surer.
        let h = |pos: usize| {
            let a = 1.0 + pos as f64;
            let z = a.exp() + 199.0;
            z.ln() - a * a.exp() / z
        };
        let bounded = |bound| Plan {
            reveal: RevealRule::EntropyBound(bound),
            ..llada(4, 4, 4)
        };
        let mut m = Fixed::new();
        let (out, seen, _) = run_collect(&mut m, &[1, 2], &bounded(1e-9), blocks)?;
        assert_eq!(seen, vec![vec![3], vec![2], vec![1], vec![0]]);
        assert_eq!(out.canvas, vec![2, 3, 4, 5]);
        // Positions 5 and 4 (canvas 3 and 2) fit under the bound together, 3 more does not;
        // then 3 alone fits, 3 and 2 do not.
        assert!(h(3) < h(5) + h(4) && h(3) + h(2) > h(5) + h(4));
        let (out, seen, _) = run_collect(&mut m, &[1, 2], &bounded(h(5) + h(4) + 1e-3), blocks)?;
        assert_eq!(seen, vec![vec![2, 3], vec![1], vec![0]]);
        assert_eq!((out.steps, out.nfe), (3, 3));
        // The steps count no longer caps the block: a large bound reveals it at once.
        let (out, seen, _) = run_collect(&mut m, &[1, 2], &bounded(1e9), blocks)?;
        assert_eq!((seen, out.steps), (vec![vec![0, 1, 2, 3]], 1));
        Ok(())
    }

    #[test]
    fn steps_that_could_reveal_nothing_are_skipped() -> Result<()> {
        let mut m = Fixed::new();
        let (out, _, totals) = run_collect(&mut m, &[1], &llada(2, 2, 4), blocks)?;
        assert_eq!(totals, vec![2, 2]);
        assert_eq!((out.steps, out.nfe), (2, 2));
        Ok(())
    }

    #[test]
    fn guidance_runs_both_rows_in_one_pass() -> Result<()> {
        let mut m = Fixed::new();
        let mut p = llada(2, 2, 2);
        p.driver = Driver::Blocks(Blocks {
            block_length: 2,
            steps_per_block: 2,
            pass: FullPass::Recompute { cfg_scale: 1.5 },
        });
        let (out, _, _) = run_collect(&mut m, &[1, 2, 3], &p, blocks)?;
        assert_eq!((m.batch_seen, out.nfe), (2, 2));
        Ok(())
    }

    #[test]
    fn shifted_models_read_the_previous_row() -> Result<()> {
        let mut m = Fixed::new();
        let p = Plan {
            shift_logits: true,
            ..llada(2, 2, 2)
        };
        let (out, _, _) = run_collect(&mut m, &[7, 8, 9], &p, blocks)?;
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
    fn early_stop_ends_once_the_answer_before_the_first_stop_is_final() -> Result<()> {
        let mut m = Fixed::new();
        // Prompt of 1: canvas position j is predicted as token j + 1, so canvas 3 is EOS (4).
        let p = Plan {
            early_stop: true,
            ..llada(8, 8, 8)
        };
        let (out, seen, _) = run_collect(&mut m, &[1], &p, blocks)?;
        // Right to left: 7, 6, 5, 4, 3 (EOS), 2, 1, 0: final only when nothing is left.
        assert!(!out.stopped_early);
        assert_eq!(
            seen.len(),
            8,
            "stopping needs every position before the EOS"
        );
        let mut m = Fixed::new();
        let p = Plan {
            early_stop: true,
            ..llada(8, 2, 8)
        };
        assert_eq!(p.decision.strategy(), Strategy::Confidence);
        let (out, seen, _) = run_collect(&mut m, &[1], &p, blocks)?;
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
