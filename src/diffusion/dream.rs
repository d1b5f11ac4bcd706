//! Dream's `diffusion_generate()` (DreamLM/Dream `src/diffuser/generation_utils.py`,
//! `_sample`): one pass over the whole canvas on the timesteps `linspace(1, eps, steps + 1)`;
//! step `i` reveals `int(N (1 - s/t))` of the `N` masked positions (everything left at the last
//! step), or with `origin` each one with probability `1 - s/t`. Dream models are adapted from
//! autoregressive ones: logit row `i - 1` predicts position `i`.

use std::ops::ControlFlow;

use anyhow::{Context, Result};
use candle_core::IndexOp;

use super::plan::Timesteps;
use super::reveal::Transfer;
use super::run::{ids, positions, Outcome, Run};
use super::schedule::TimestepSchedule;
use super::step::Step;
use crate::model::{Denoiser, Pass};

pub fn run<F: FnMut(&Step) -> ControlFlow<()>>(
    model: &mut impl Denoiser,
    run: &mut Run<'_, F>,
    driver: &Timesteps,
) -> Result<Outcome> {
    let plan = run.plan;
    let Timesteps { eps, steps, origin } = *driver;
    let timesteps = TimestepSchedule::new(eps, steps);
    let canvas = 0..plan.gen_length;
    let all = positions(0..run.seq.len());
    let mut i = 0;
    loop {
        let masked = run.masked(&canvas);
        if masked.is_empty() || (!plan.reveal.adaptive() && i >= timesteps.len()) {
            break;
        }
        let transfer = Transfer::of(plan.reveal, || timesteps.share(i, masked.len(), origin));
        i += 1;
        // A step that may reveal nothing would only repeat a forward pass: skip it.
        if transfer.is_empty() {
            continue;
        }
        let rows: Vec<u32> = masked
            .iter()
            .map(|&pos| match plan.shift_logits {
                true => pos.saturating_sub(1),
                false => pos,
            })
            .collect();
        let tokens = ids(&run.seq, model.device())?;
        let logits = model
            .forward(&Pass::full(&tokens, &all), &rows)
            .and_then(|l| l.i(0))
            .with_context(|| format!("model forward pass at step {}", run.steps()))?;
        run.nfe += 1;
        if let ControlFlow::Break(stop) = run.reveal(&logits, &masked, transfer, 0)? {
            return Ok((plan.gen_length, Some(stop)));
        }
    }
    Ok((plan.gen_length, None))
}

#[cfg(test)]
mod tests {
    use super::super::fixed_denoiser::Callback;
    use super::super::fixed_denoiser::{run_collect, special, Fixed};
    use super::super::plan::tests::llada;
    use super::super::plan::{Driver, Plan};
    use super::*;

    /// The plan's timestep driver, as the tests run it.
    fn timesteps(m: &mut Fixed, state: &mut Run<'_, Callback>) -> Result<Outcome> {
        match state.plan.driver {
            Driver::Timesteps(t) => run(m, state, &t),
            other => anyhow::bail!("not a timesteps plan: {other:?}"),
        }
    }

    #[test]
    fn timesteps_reveal_the_truncated_share_and_the_rest_last() -> Result<()> {
        let mut m = Fixed::new();
        let p = Plan {
            driver: Driver::Timesteps(Timesteps {
                eps: 1e-3,
                steps: 4,
                origin: false,
            }),
            ..llada(8, 8, 4)
        };
        let (out, seen, _) = run_collect(&mut m, &[1], &p, timesteps)?;
        // N=8: int(8 * (1 - .75025)) = 1, then int(7 * (1 - .5005/.75025)) = 2,
        // int(5 * (1 - .25075/.5005)) = 2, and the last step takes the 3 left.
        let sizes: Vec<usize> = seen.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 2, 2, 3]);
        assert!(!out.canvas.contains(&special().mask));
        Ok(())
    }
}
