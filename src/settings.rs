//! Sampler settings in layers: built-in fallbacks < architecture defaults < the model card's
//! defaults (both from models.toml) < command-line flags, merged field by field, then checked
//! once into the typed [`Plan`] the drivers run.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::diffusion::decision::{DecisionRule, Strategy};
use crate::diffusion::plan::{
    BlockDiffusion, BlockGrid, Blocks, CacheMode, DreamBlocks, Driver, Editing, FastDllmCache,
    FullPass, Plan, RevealRule, Timesteps,
};

/// Which reference sampler a model follows: what `resolve` needs to know of its architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// LLaDA's `generate()`.
    Llada,
    /// Dream's `diffusion_generate()`; the logit shift is a separate fact of the architecture.
    Dream,
    /// Block diffusion on the given grid (BD3LM, SDAR).
    BlockDiffusion(BlockGrid),
}

/// Sampler settings where every field may be absent: one layer of the stack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub alg_temp: Option<f64>,
    pub eps: Option<f64>,
    pub threshold: Option<f64>,
    pub entropy_bound: Option<f64>,
    pub cache: Option<CacheMode>,
    pub steps_per_block: Option<usize>,
    pub minimal_topk: Option<usize>,
    pub edit_threshold: Option<f64>,
    pub max_post_steps: Option<usize>,
    pub num_to_transfer: Option<usize>,
    pub early_stop: Option<bool>,
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
            top_p: self.top_p.or(lower.top_p),
            top_k: self.top_k.or(lower.top_k),
            alg_temp: self.alg_temp.or(lower.alg_temp),
            eps: self.eps.or(lower.eps),
            threshold: self.threshold.or(lower.threshold),
            entropy_bound: self.entropy_bound.or(lower.entropy_bound),
            cache: self.cache.or(lower.cache),
            steps_per_block: self.steps_per_block.or(lower.steps_per_block),
            minimal_topk: self.minimal_topk.or(lower.minimal_topk),
            edit_threshold: self.edit_threshold.or(lower.edit_threshold),
            max_post_steps: self.max_post_steps.or(lower.max_post_steps),
            num_to_transfer: self.num_to_transfer.or(lower.num_to_transfer),
            early_stop: self.early_stop.or(lower.early_stop),
        }
    }
}

/// Used when neither the flags nor models.toml say otherwise: LLaDA generate.py's `main()`.
const FALLBACK_GEN_LENGTH: usize = 128;
const FALLBACK_BLOCK_LENGTH: usize = 32;
/// Dream's `DreamGenerationConfig` default.
const FALLBACK_EPS: f64 = 1e-3;

/// LLaDA2.1's token editing, on when an edit threshold is set (`--edit-threshold` or a model
/// card); its flags belong to the LLaDA2 sampler.
fn editing(flags: &Defaults, merged: &Defaults, llada2: bool) -> Result<Option<Editing>> {
    let given = [
        ("--edit-threshold", flags.edit_threshold.is_some()),
        ("--max-post-steps", flags.max_post_steps.is_some()),
        ("--num-to-transfer", flags.num_to_transfer.is_some()),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, set)| *set && !llada2) {
        bail!("{flag} belongs to the LLaDA2.1 sampler; this model does not use it");
    }
    let Some(threshold) = merged.edit_threshold.filter(|_| llada2) else {
        if let Some((flag, _)) = given[1..].iter().find(|(_, set)| *set) {
            bail!("{flag} needs token editing: give --edit-threshold too");
        }
        return Ok(None);
    };
    if !(0.0..=1.0).contains(&threshold) {
        bail!("--edit-threshold must be in [0, 1], got {threshold}");
    }
    let num_to_transfer = merged.num_to_transfer.unwrap_or(1);
    if num_to_transfer == 0 {
        bail!("--num-to-transfer must be at least 1");
    }
    Ok(Some(Editing {
        threshold,
        // The authors' defaults (`generate()` of LLaDA2.1).
        max_post_steps: merged.max_post_steps.unwrap_or(16),
        num_to_transfer,
    }))
}

/// Resolves `flags` over `defaults` into the checked plan for a model of `family`
/// (`shift_logits`: logit row `i - 1` predicts position `i`).
///
/// The schedule is blocks when a block length is set (LLaDA and block-diffusion defaults
/// always set one) and Dream's timesteps otherwise. When the flags change `--gen-length` but
/// not `--steps`, the defaults' tokens-per-step ratio is kept (the model cards state quality at
/// a ratio, usually one token per step), rounded up to a whole number of steps per block. A
/// default block longer than the requested canvas shrinks to the canvas. Explicit flags are
/// never adjusted: an inconsistent set is an error, and so is a flag of another family's
/// sampler.
pub fn resolve(
    flags: &Defaults,
    defaults: &Defaults,
    family: Family,
    shift_logits: bool,
    seed: u64,
) -> Result<Plan> {
    let merged = flags.over(defaults);
    let block_diffusion = matches!(family, Family::BlockDiffusion(_));
    let gen_length = merged.gen_length.unwrap_or(FALLBACK_GEN_LENGTH);
    if gen_length == 0 {
        bail!("--gen-length must be at least 1");
    }
    let cache = merged.cache.unwrap_or(match family {
        // The exact cache is the point of block diffusion.
        Family::BlockDiffusion(_) => CacheMode::Prefix,
        Family::Llada | Family::Dream => CacheMode::None,
    });
    // Fast-dLLM's Dream caches work block by block (its default block: 32).
    let dream_cached = family == Family::Dream && cache != CacheMode::None;
    let block_length = match (merged.block_length, family) {
        (Some(b), _) => Some(b),
        (None, Family::Llada | Family::BlockDiffusion(_)) => Some(FALLBACK_BLOCK_LENGTH),
        (None, Family::Dream) if dream_cached => Some(FALLBACK_BLOCK_LENGTH),
        (None, Family::Dream) => None,
    };
    let eps = merged.eps.unwrap_or(FALLBACK_EPS);
    if !(eps > 0.0 && eps < 1.0) {
        bail!("--eps must be between 0 and 1 (exclusive), got {eps}");
    }
    let block_length = match block_length {
        Some(0) => bail!("--block-length must be at least 1"),
        Some(b) => {
            let b = if flags.block_length.is_none() && b > gen_length && !block_diffusion {
                gen_length
            } else {
                b
            };
            // Block diffusion allows a shorter last block (dllm's `cur_block_len`).
            if !gen_length.is_multiple_of(b) && !block_diffusion {
                bail!(
                    "--gen-length {gen_length} is not a multiple of --block-length {b}; \
                     choose a gen-length that is a whole number of blocks"
                );
            }
            Some(b)
        }
        None => None,
    };
    let blocks = block_length.map_or(1, |b| gen_length.div_ceil(b));
    // Block diffusion spreads the steps itself (ceil per block); the others need a whole number.
    let whole_blocks = !block_diffusion;
    // LLaDA2 counts `--steps` per block, as its authors do; it does not scale with the canvas.
    let per_block = matches!(family, Family::BlockDiffusion(g) if g.steps_per_block);
    let steps = match flags.steps {
        Some(s) => s,
        None if per_block => merged
            .steps
            .unwrap_or(block_length.unwrap_or(FALLBACK_BLOCK_LENGTH)),
        None => {
            let default_gen = defaults.gen_length.unwrap_or(FALLBACK_GEN_LENGTH);
            let default_steps = defaults.steps.unwrap_or(default_gen);
            let scaled = (gen_length * default_steps).div_ceil(default_gen.max(1));
            if whole_blocks {
                scaled.div_ceil(blocks).max(1) * blocks
            } else {
                scaled.max(1)
            }
        }
    };
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    if whole_blocks && !steps.is_multiple_of(blocks) {
        bail!(
            "--steps {steps} must be a multiple of the number of blocks ({blocks} = --gen-length \
             {gen_length} / --block-length {})",
            gen_length / blocks
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
    // Two parallel-decoding rules: the one given as a flag replaces the other's default.
    let (threshold, entropy_bound) = match (flags.threshold, flags.entropy_bound) {
        (Some(_), None) => (merged.threshold, None),
        (None, Some(_)) => (None, merged.entropy_bound),
        _ => (merged.threshold, merged.entropy_bound),
    };
    if threshold.is_some() && entropy_bound.is_some() {
        bail!("--threshold and --entropy-bound are two parallel-decoding rules; give one");
    }
    if let Some(t) = threshold.filter(|t| !(*t >= 0.0 && *t <= 1.0)) {
        bail!("--threshold must be in [0, 1], got {t}");
    }
    if let Some(e) = entropy_bound.filter(|e| !(e.is_finite() && *e > 0.0)) {
        bail!(
            "--entropy-bound must be a number > 0 (in nats; the EB-sampler uses 0.1 to 1), got {e}"
        );
    }
    let mut strategy = merged.strategy.unwrap_or(match family {
        Family::Llada | Family::BlockDiffusion(_) => Strategy::Confidence,
        Family::Dream => Strategy::Entropy,
    });
    // Dream's order is fixed by Fast-dLLM: a threshold compares token probabilities (its
    // `confidence_threshold`), and the cached samplers otherwise order by entropy.
    let forced = match (family, threshold, dream_cached) {
        (Family::Dream, Some(_), _) => Some((Strategy::Confidence, "--threshold")),
        (Family::Dream, None, true) => Some((Strategy::Entropy, "--cache")),
        _ => None,
    };
    if let Some((only, why)) = forced {
        if let Some(given) = flags.strategy.filter(|s| *s != only) {
            bail!(
                "--strategy {}: with {why}, a Dream model's order is {} (Fast-dLLM's rule); drop --strategy",
                format!("{given:?}").to_lowercase(),
                format!("{only:?}").to_lowercase()
            );
        }
        strategy = only;
    }
    let allowed: &[Strategy] = match family {
        Family::Llada | Family::BlockDiffusion(_) => &[Strategy::Confidence, Strategy::Random],
        Family::Dream => &[
            Strategy::Confidence,
            Strategy::Margin,
            Strategy::Entropy,
            Strategy::Origin,
        ],
    };
    if !allowed.contains(&strategy) {
        let names: Vec<String> = allowed
            .iter()
            .map(|s| format!("{s:?}").to_lowercase())
            .collect();
        bail!(
            "--strategy {}: this model's sampler offers {}",
            format!("{strategy:?}").to_lowercase(),
            names.join(", ")
        );
    }
    if strategy == Strategy::Origin && block_length.is_some() {
        bail!("--strategy origin follows Dream's timestep schedule; drop --block-length");
    }
    // Flags of another family's sampler are errors rather than silently ignored. LLaDA2's
    // `generate()` takes top-p and top-k too.
    let llada2 = matches!(family, Family::BlockDiffusion(g) if g == BlockGrid::LLADA2);
    let dream: &[(&str, bool)] = &[
        ("--top-p", flags.top_p.is_some() && !llada2),
        ("--top-k", flags.top_k.is_some() && !llada2),
        ("--alg-temp", flags.alg_temp.is_some()),
        ("--eps", flags.eps.is_some()),
    ];
    let llada: &[(&str, bool)] = &[
        ("--cfg-scale", cfg_scale > 0.0),
        ("--eos-last", merged.eos_last == Some(true)),
    ];
    let block_diffusion_flags: &[(&str, bool)] =
        &[("--steps-per-block", flags.steps_per_block.is_some())];
    let foreign: [(&[(&str, bool)], &str); 2] = match family {
        Family::Llada => [
            (dream, "Dream-family"),
            (block_diffusion_flags, "block-diffusion"),
        ],
        Family::Dream => [(llada, "LLaDA"), (block_diffusion_flags, "block-diffusion")],
        Family::BlockDiffusion(_) => [
            (dream, "Dream-family (and, for --top-p/--top-k, LLaDA2)"),
            (llada, "LLaDA"),
        ],
    };
    for (flags, owner) in foreign {
        if let Some((flag, _)) = flags.iter().find(|(_, set)| *set) {
            bail!("{flag} belongs to the {owner} sampler; this model does not use it");
        }
    }
    if flags.minimal_topk.is_some() && !per_block {
        bail!("--minimal-topk belongs to the LLaDA2 sampler; this model does not use it");
    }
    let minimal_topk = merged.minimal_topk.unwrap_or(1);
    if minimal_topk == 0 {
        bail!("--minimal-topk must be at least 1");
    }
    let editing = editing(flags, &merged, per_block)?;
    let top_p = merged.top_p;
    if let Some(p) = top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        bail!("--top-p must be in (0, 1], got {p}");
    }
    let top_k = merged.top_k;
    if top_k == Some(0) {
        bail!("--top-k must be at least 1");
    }
    let alg_temp = merged.alg_temp.unwrap_or(0.0);
    if !alg_temp.is_finite() || alg_temp < 0.0 {
        bail!("--alg-temp must be a number >= 0, got {alg_temp}");
    }
    if merged.steps_per_block == Some(0) {
        bail!("--steps-per-block must be at least 1");
    }
    if cache == CacheMode::Dual && block_diffusion {
        bail!("--cache dual is Fast-dLLM's cache for bidirectional models; block diffusion caches exactly with prefix (or none)");
    }
    if cache != CacheMode::None && family == Family::Llada && cfg_scale > 0.0 {
        bail!("--cfg-scale needs --cache none");
    }
    // Fast-dLLM's Dream sampler decodes a block's first position at the block start and runs
    // steps 1.. of the block's timesteps after it: one step per block would leave masks.
    let adaptive = threshold.is_some() || entropy_bound.is_some();
    if dream_cached && !adaptive && steps / blocks < 2 {
        bail!("--steps {steps}: Dream with --cache needs at least 2 steps per block ({blocks} blocks), or --threshold or --entropy-bound");
    }
    if block_diffusion && cfg_scale > 0.0 {
        bail!("--cfg-scale is not supported for block diffusion");
    }
    let fast_dllm = match cache {
        CacheMode::None => None,
        CacheMode::Prefix => Some(FastDllmCache::Prefix),
        CacheMode::Dual => Some(FastDllmCache::Dual),
    };
    let driver = match (family, block_length, fast_dllm) {
        (Family::BlockDiffusion(grid), b, _) => Driver::BlockDiffusion(BlockDiffusion {
            grid: match editing {
                Some(_) => BlockGrid::LLADA21,
                None => grid,
            },
            editing,
            block_length: b.unwrap_or(FALLBACK_BLOCK_LENGTH),
            // LLaDA2 `generate()`: `steps = min(steps, gen_length // minimal_topk)` per block.
            steps_per_block: match grid.steps_per_block {
                true => Some(
                    merged
                        .steps_per_block
                        .unwrap_or(steps.min(gen_length / minimal_topk))
                        .max(1),
                ),
                false => merged.steps_per_block,
            },
            exact_cache: cache != CacheMode::None,
        }),
        (Family::Dream, Some(block_length), Some(cache)) => Driver::DreamBlocks(DreamBlocks {
            block_length,
            steps_per_block: steps / blocks,
            eps,
            cache,
        }),
        (_, Some(block_length), fast_dllm) => Driver::Blocks(Blocks {
            block_length,
            steps_per_block: steps / blocks,
            pass: match fast_dllm {
                Some(cache) => FullPass::Cached(cache),
                None => FullPass::Recompute { cfg_scale },
            },
        }),
        (_, None, _) => Driver::Timesteps(Timesteps {
            eps,
            steps,
            origin: strategy == Strategy::Origin,
        }),
    };
    let dynamic = matches!(family, Family::BlockDiffusion(g) if g.dynamic_threshold);
    let reveal = match (threshold, entropy_bound) {
        (Some(t), _) if dynamic => RevealRule::Dynamic(t),
        (Some(t), _) => RevealRule::Threshold(t),
        (None, Some(e)) => RevealRule::EntropyBound(e),
        (None, None) => RevealRule::Scheduled { alg_temp },
    };
    let decision = match family {
        Family::Dream => DecisionRule::Dream {
            strategy,
            temperature,
            top_p,
            top_k,
        },
        Family::BlockDiffusion(g) if g == BlockGrid::LLADA2 => DecisionRule::Llada2 {
            temperature,
            top_p,
            top_k,
        },
        Family::Llada | Family::BlockDiffusion(_) => DecisionRule::Llada {
            strategy,
            temperature,
        },
    };
    Ok(Plan {
        gen_length,
        steps,
        driver,
        decision,
        reveal,
        shift_logits,
        suppress_eos: merged.suppress_eos.unwrap_or(false),
        eos_last: merged.eos_last.unwrap_or(false),
        early_stop: merged.early_stop.unwrap_or(false),
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `resolve` for a model of `family`, with the Dream family's logit shift.
    fn resolve_for(
        flags: &Defaults,
        defaults: &Defaults,
        family: Family,
        seed: u64,
    ) -> Result<Plan> {
        resolve(flags, defaults, family, family == Family::Dream, seed)
    }

    fn resolve_llada(flags: &Defaults, defaults: &Defaults, seed: u64) -> Result<Plan> {
        resolve_for(flags, defaults, Family::Llada, seed)
    }

    fn blocks(block_length: usize, steps_per_block: usize) -> Driver {
        Driver::Blocks(Blocks {
            block_length,
            steps_per_block,
            pass: FullPass::Recompute { cfg_scale: 0.0 },
        })
    }

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
        let p = resolve_llada(&flags, &llada(), 7)?;
        assert_eq!(
            (p.gen_length, p.driver, p.steps, p.seed),
            (128, blocks(32, 16), 64, 7)
        );
        Ok(())
    }

    #[test]
    fn new_gen_length_keeps_the_default_tokens_per_step() -> Result<()> {
        let flags = Defaults {
            gen_length: Some(256),
            ..Default::default()
        };
        assert_eq!(resolve_llada(&flags, &llada(), 0)?.steps, 256);
        let half = Defaults {
            steps: Some(64),
            ..llada()
        };
        assert_eq!(resolve_llada(&flags, &half, 0)?.steps, 128);
        Ok(())
    }

    #[test]
    fn default_block_shrinks_to_a_short_canvas() -> Result<()> {
        let flags = Defaults {
            gen_length: Some(16),
            ..Default::default()
        };
        let p = resolve_llada(&flags, &llada(), 0)?;
        assert_eq!((p.driver, p.steps), (blocks(16, 16), 16));
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
                resolve_llada(&flags, &llada(), 0).is_err(),
                "{flags:?} should be rejected"
            );
        }
    }

    #[test]
    fn one_parallel_rule_at_a_time_and_the_flag_wins() -> Result<()> {
        let card = Defaults {
            threshold: Some(0.9),
            ..llada()
        };
        let eb = Defaults {
            entropy_bound: Some(0.35),
            ..Default::default()
        };
        let p = resolve_llada(&eb, &card, 0)?;
        assert_eq!(p.reveal, RevealRule::EntropyBound(0.35));
        let p = resolve_llada(&Defaults::default(), &card, 0)?;
        assert_eq!(p.reveal, RevealRule::Threshold(0.9));
        let both = Defaults {
            threshold: Some(0.9),
            ..eb.clone()
        };
        for bad in [0.0, -1.0, f64::NAN] {
            let flags = Defaults {
                entropy_bound: Some(bad),
                ..Default::default()
            };
            assert!(resolve_llada(&flags, &llada(), 0).is_err(), "{bad}");
        }
        let err = resolve_llada(&both, &llada(), 0)
            .expect_err("two parallel rules")
            .to_string();
        assert!(err.contains("--entropy-bound"), "{err}");
        Ok(())
    }

    #[test]
    fn dream_defaults_to_timesteps_unless_a_block_is_asked_for() -> Result<()> {
        let dream = Family::Dream;
        let flags = Defaults {
            gen_length: Some(64),
            steps: Some(64),
            ..Default::default()
        };
        let p = resolve_for(&flags, &Defaults::default(), dream, 0)?;
        let timesteps = Driver::Timesteps(Timesteps {
            eps: 1e-3,
            steps: 64,
            origin: false,
        });
        assert_eq!(
            (p.driver, p.decision.strategy(), p.shift_logits),
            (timesteps, Strategy::Entropy, true)
        );
        let with_blocks = Defaults {
            block_length: Some(32),
            ..flags.clone()
        };
        assert_eq!(
            resolve_for(&with_blocks, &Defaults::default(), dream, 0)?.driver,
            blocks(32, 32)
        );
        Ok(())
    }

    #[test]
    fn dream_caches_follow_fast_dllm_blocks_and_order() -> Result<()> {
        let dream = Family::Dream;
        let card = Defaults {
            gen_length: Some(256),
            steps: Some(256),
            strategy: Some(Strategy::Entropy),
            ..Default::default()
        };
        let cached = Defaults {
            cache: Some(CacheMode::Dual),
            ..Default::default()
        };
        let p = resolve_for(&cached, &card, dream, 0)?;
        assert_eq!(
            (p.driver, p.decision.strategy(), p.steps),
            (
                Driver::DreamBlocks(DreamBlocks {
                    block_length: 32,
                    steps_per_block: 32,
                    eps: 1e-3,
                    cache: FastDllmCache::Dual,
                }),
                Strategy::Entropy,
                256
            )
        );
        // A threshold compares probabilities, cached or not.
        for cache in [None, Some(CacheMode::Prefix)] {
            let flags = Defaults {
                threshold: Some(0.9),
                cache,
                ..Default::default()
            };
            assert_eq!(
                resolve_for(&flags, &card, dream, 0)?.decision.strategy(),
                Strategy::Confidence
            );
        }
        let bad = [
            Defaults {
                strategy: Some(Strategy::Margin),
                ..cached.clone()
            },
            Defaults {
                threshold: Some(0.9),
                strategy: Some(Strategy::Entropy),
                ..Default::default()
            },
            // One step per block would leave masks behind (Fast-dLLM's loop starts at step 1).
            Defaults {
                steps: Some(8),
                ..cached.clone()
            },
        ];
        for flags in bad {
            assert!(
                resolve_for(&flags, &card, dream, 0).is_err(),
                "{flags:?} should be rejected"
            );
        }
        Ok(())
    }

    #[test]
    fn flags_of_the_other_sampler_and_foreign_strategies_are_errors() {
        let dream = Family::Dream;
        let llada = Family::Llada;
        let none = Defaults::default();
        let cases = [
            (
                Defaults {
                    top_p: Some(0.9),
                    ..Default::default()
                },
                llada,
            ),
            (
                Defaults {
                    strategy: Some(Strategy::Entropy),
                    ..Default::default()
                },
                llada,
            ),
            (
                Defaults {
                    cfg_scale: Some(1.0),
                    ..Default::default()
                },
                dream,
            ),
            (
                Defaults {
                    strategy: Some(Strategy::Random),
                    ..Default::default()
                },
                dream,
            ),
            (
                Defaults {
                    strategy: Some(Strategy::Origin),
                    block_length: Some(32),
                    ..Default::default()
                },
                dream,
            ),
            (
                Defaults {
                    eps: Some(1.5),
                    ..Default::default()
                },
                dream,
            ),
            (
                Defaults {
                    top_p: Some(0.0),
                    ..Default::default()
                },
                dream,
            ),
        ];
        for (flags, arch) in cases {
            assert!(
                resolve_for(&flags, &none, arch, 0).is_err(),
                "{flags:?} should be rejected"
            );
        }
    }

    #[test]
    fn sdar_thresholds_are_dynamic_and_bd3lm_thresholds_are_fast_dllm() -> Result<()> {
        let flags = Defaults {
            threshold: Some(0.9),
            ..Default::default()
        };
        let sdar = resolve_for(
            &flags,
            &Defaults::default(),
            Family::BlockDiffusion(BlockGrid::SDAR),
            0,
        )?;
        assert_eq!(sdar.reveal, RevealRule::Dynamic(0.9));
        let bd3lm = resolve_for(
            &flags,
            &Defaults::default(),
            Family::BlockDiffusion(BlockGrid::BD3LM),
            0,
        )?;
        assert_eq!(bd3lm.reveal, RevealRule::Threshold(0.9));
        assert_eq!(
            (bd3lm.cache(), bd3lm.threshold()),
            (CacheMode::Prefix, Some(0.9))
        );
        Ok(())
    }

    /// LLaDA2 takes top-p and top-k (its `generate()` does) and decides by its own rule; other
    /// block-diffusion samplers refuse them.
    #[test]
    fn llada2_samples_with_its_filters_and_bd3lm_refuses_them() -> Result<()> {
        let flags = Defaults {
            temperature: Some(0.7),
            top_p: Some(0.9),
            top_k: Some(50),
            ..Default::default()
        };
        let llada2 = Family::BlockDiffusion(BlockGrid::LLADA2);
        let p = resolve_for(&flags, &Defaults::default(), llada2, 0)?;
        assert_eq!(
            p.decision,
            DecisionRule::Llada2 {
                temperature: 0.7,
                top_p: Some(0.9),
                top_k: Some(50)
            }
        );
        let bd3lm = Family::BlockDiffusion(BlockGrid::BD3LM);
        let err = resolve_for(&flags, &Defaults::default(), bd3lm, 0).expect_err("bd3lm");
        assert!(err.to_string().contains("--top-p"), "{err}");
        Ok(())
    }
}
