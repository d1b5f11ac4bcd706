//! The denoising loop: a canvas of masks after the prompt, revealed a few positions per step.
//!
//! A resolved [`Plan`] names one driver, and [`generate`] runs it. Each sampler is a file:
//! - [`llada`]: LLaDA's `generate()`, semi-autoregressive blocks (with Fast-dLLM's caches);
//! - [`dream`]: Dream's `diffusion_generate()`, timesteps over the whole canvas;
//! - [`dream_block`]: Fast-dLLM's Dream sampler with a cache, block by block;
//! - [`block_diffusion`]: BD3LM and SDAR, block-causal with an exact KV cache.
//!
//! What they share: [`plan`] (the typed plan), [`schedule`] (how many positions a step
//! reveals), [`decision`] (each position's token and confidence), [`reveal`] (which positions
//! a step reveals), [`fast_dllm_cache`] (the prefix and dual caches), [`run`] (one generation's
//! state and its step reports) and [`step`] (what is reported).
//!
//! The engine knows nothing of terminals or threads: it reports each step through a callback
//! whose return value can stop it, like llama.cpp's `diffusion_step_callback_t`.

pub mod block_diffusion;
pub mod decision;
pub mod dream;
pub mod dream_block;
pub mod fast_dllm_cache;
#[cfg(test)]
mod fixed_denoiser;
pub mod llada;
pub mod plan;
pub mod reveal;
pub mod run;
pub mod schedule;
pub mod step;

use std::ops::ControlFlow;

use anyhow::Result;

pub use decision::Strategy;
pub use plan::{CacheMode, Driver, Plan};
pub use step::{Generation, SpecialIds, Step};

use crate::model::Denoiser;
use run::{biases, Run};

/// Runs the plan's driver on `prompt` and returns the canvas.
pub fn generate(
    model: &mut impl Denoiser,
    prompt: &[u32],
    plan: &Plan,
    special: &SpecialIds,
    on_step: impl FnMut(&Step) -> ControlFlow<()>,
) -> Result<Generation> {
    infill(model, prompt, &[], plan, special, on_step)
}

/// Like [`generate`] with `suffix` after the canvas: the model fills the masks between the two
/// (fill-in-the-middle). Only full-attention families see the suffix; block diffusion's
/// block-causal attention never looks past the block it denoises, so it refuses one.
pub fn infill(
    model: &mut impl Denoiser,
    prompt: &[u32],
    suffix: &[u32],
    plan: &Plan,
    special: &SpecialIds,
    on_step: impl FnMut(&Step) -> ControlFlow<()>,
) -> Result<Generation> {
    if !suffix.is_empty() && matches!(plan.driver, Driver::BlockDiffusion(_)) {
        anyhow::bail!("infilling needs a full-attention model (LLaDA, Dream): block diffusion never sees a suffix");
    }
    let (logit_bias, confidence_bias) =
        biases(plan, special, model.vocab_size(), &model.device().clone())?;
    let rule = plan
        .decision
        .with_biases(logit_bias.as_ref(), confidence_bias.as_ref());
    let mut state = Run::new(plan, special, prompt, suffix, rule, on_step);
    model.clear_cache();
    let outcome = match plan.driver {
        Driver::Blocks(d) => llada::run(model, &mut state, &d),
        Driver::Timesteps(d) => dream::run(model, &mut state, &d),
        Driver::DreamBlocks(d) => dream_block::run(model, &mut state, &d),
        Driver::BlockDiffusion(d) => block_diffusion::run(model, &mut state, &d),
    };
    model.clear_cache();
    Ok(state.finish(outcome?))
}

#[cfg(test)]
mod tests {
    use super::fixed_denoiser::{special, Fixed};
    use super::plan::tests::llada;
    use super::*;

    #[test]
    fn break_stops_the_loop_and_keeps_the_masks() -> Result<()> {
        let mut m = Fixed::new();
        let out = generate(&mut m, &[1], &llada(4, 4, 4), &special(), |_| {
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
}
