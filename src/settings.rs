//! Sampler settings in layers: built-in fallbacks < architecture defaults < the model card's
//! defaults (both from models.toml) < command-line flags, merged field by field, then checked
//! once into [`diffusion::Params`](crate::diffusion::Params).

use anyhow::{bail, Result};
use serde::Deserialize;

use crate::diffusion::{Params, Strategy};

/// Sampler settings where every field may be absent: one layer of the stack.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub gen_length: Option<usize>,
    pub steps: Option<usize>,
    pub block_length: Option<usize>,
    pub strategy: Option<Strategy>,
    pub temperature: Option<f64>,
    pub cfg_scale: Option<f64>,
    pub suppress_eos: Option<bool>,
    pub eos_last: Option<bool>,
}

impl Defaults {
    /// `self` where set, else `lower`.
    pub fn over(&self, lower: &Defaults) -> Defaults {
        Defaults {
            gen_length: self.gen_length.or(lower.gen_length),
            steps: self.steps.or(lower.steps),
            block_length: self.block_length.or(lower.block_length),
            strategy: self.strategy.or(lower.strategy),
            temperature: self.temperature.or(lower.temperature),
            cfg_scale: self.cfg_scale.or(lower.cfg_scale),
            suppress_eos: self.suppress_eos.or(lower.suppress_eos),
            eos_last: self.eos_last.or(lower.eos_last),
        }
    }
}

/// Used when neither the flags nor models.toml say otherwise: LLaDA generate.py's `main()`.
const FALLBACK_GEN_LENGTH: usize = 128;
const FALLBACK_BLOCK_LENGTH: usize = 32;

/// Resolves `flags` over `defaults` into checked parameters.
///
/// When the flags change `--gen-length` but not `--steps`, the defaults' tokens-per-step ratio is
/// kept (the model cards state quality at a ratio, usually one token per step), rounded up to a
/// whole number of steps per block. A default block longer than the requested canvas shrinks to
/// the canvas. Explicit flags are never adjusted: an inconsistent set is an error.
pub fn resolve(flags: &Defaults, defaults: &Defaults, seed: u64) -> Result<Params> {
    let merged = flags.over(defaults);
    let gen_length = merged.gen_length.unwrap_or(FALLBACK_GEN_LENGTH);
    if gen_length == 0 {
        bail!("--gen-length must be at least 1");
    }
    let mut block_length = merged.block_length.unwrap_or(FALLBACK_BLOCK_LENGTH);
    if block_length == 0 {
        bail!("--block-length must be at least 1");
    }
    if flags.block_length.is_none() && block_length > gen_length {
        block_length = gen_length;
    }
    if !gen_length.is_multiple_of(block_length) {
        bail!(
            "--gen-length {gen_length} is not a multiple of --block-length {block_length}; \
             choose a gen-length that is a whole number of blocks"
        );
    }
    let blocks = gen_length / block_length;
    let steps = match flags.steps {
        Some(s) => s,
        None => {
            let default_gen = defaults.gen_length.unwrap_or(FALLBACK_GEN_LENGTH);
            let default_steps = defaults.steps.unwrap_or(default_gen);
            let scaled = (gen_length * default_steps).div_ceil(default_gen.max(1));
            scaled.div_ceil(blocks).max(1) * blocks
        }
    };
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    if !steps.is_multiple_of(blocks) {
        bail!(
            "--steps {steps} must be a multiple of the number of blocks ({blocks} = --gen-length \
             {gen_length} / --block-length {block_length})"
        );
    }
    let temperature = merged.temperature.unwrap_or(0.0);
    if !temperature.is_finite() || temperature < 0.0 {
        bail!("--temperature must be a number >= 0, got {temperature}");
    }
    let cfg_scale = merged.cfg_scale.unwrap_or(0.0);
    if !cfg_scale.is_finite() || cfg_scale < 0.0 {
        bail!("--cfg-scale must be a number >= 0, got {cfg_scale}");
    }
    Ok(Params {
        gen_length,
        block_length,
        steps,
        strategy: merged.strategy.unwrap_or(Strategy::Confidence),
        temperature,
        cfg_scale,
        suppress_eos: merged.suppress_eos.unwrap_or(false),
        eos_last: merged.eos_last.unwrap_or(false),
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llada() -> Defaults {
        Defaults {
            gen_length: Some(128),
            steps: Some(128),
            block_length: Some(32),
            ..Default::default()
        }
    }

    #[test]
    fn flags_override_defaults_field_by_field() -> Result<()> {
        let flags = Defaults {
            steps: Some(64),
            ..Default::default()
        };
        let p = resolve(&flags, &llada(), 7)?;
        assert_eq!(
            (p.gen_length, p.block_length, p.steps, p.seed),
            (128, 32, 64, 7)
        );
        Ok(())
    }

    #[test]
    fn new_gen_length_keeps_the_default_tokens_per_step() -> Result<()> {
        let flags = Defaults {
            gen_length: Some(256),
            ..Default::default()
        };
        assert_eq!(resolve(&flags, &llada(), 0)?.steps, 256);
        let half = Defaults {
            steps: Some(64),
            ..llada()
        };
        assert_eq!(resolve(&flags, &half, 0)?.steps, 128);
        Ok(())
    }

    #[test]
    fn default_block_shrinks_to_a_short_canvas() -> Result<()> {
        let flags = Defaults {
            gen_length: Some(16),
            ..Default::default()
        };
        let p = resolve(&flags, &llada(), 0)?;
        assert_eq!((p.block_length, p.steps), (16, 16));
        Ok(())
    }

    #[test]
    fn inconsistent_flags_are_errors() {
        let bad = [
            Defaults {
                steps: Some(0),
                ..Default::default()
            },
            Defaults {
                gen_length: Some(0),
                ..Default::default()
            },
            Defaults {
                gen_length: Some(100),
                block_length: Some(32),
                ..Default::default()
            },
            Defaults {
                steps: Some(10),
                ..Default::default()
            },
            Defaults {
                temperature: Some(-1.0),
                ..Default::default()
            },
            Defaults {
                block_length: Some(0),
                ..Default::default()
            },
        ];
        for flags in bad {
            assert!(
                resolve(&flags, &llada(), 0).is_err(),
                "{flags:?} should be rejected"
            );
        }
    }
}
