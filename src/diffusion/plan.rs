//! The typed plan of one generation: which driver runs, how it passes over the canvas, which
//! rule decides each position and which rule reveals positions. `settings::resolve` builds it
//! once from flags and model defaults, before anything loads; the drivers only read it.
//!
//! Combinations the references do not have cannot be written down here: classifier-free
//! guidance exists only on LLaDA's uncached full pass, Dream's `origin` order only on its
//! timestep schedule, the dual cache only for bidirectional models, and block diffusion's
//! cache is exact or absent.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::decision::DecisionRule;
#[cfg(test)]
use super::decision::Strategy;
use super::schedule::{bd3lm_counts, transfer_counts};

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

/// Fast-dLLM's approximate caches for bidirectional models (`fast_dllm_cache.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastDllmCache {
    Prefix,
    Dual,
}

/// How LLaDA's block driver computes a step's logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FullPass {
    /// The whole sequence every step; `cfg_scale > 0` adds the unconditional row
    /// (classifier-free guidance) to the same batch.
    Recompute { cfg_scale: f64 },
    /// Fast-dLLM's caches, refreshed at every block start.
    Cached(FastDllmCache),
}

/// Where block diffusion's block grid starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridStart {
    /// The prompt is end-aligned to the grid: its first block holds `P mod B` tokens, and the
    /// canvas starts on a grid line (dllm's `BD3LMSampler`).
    PromptEnd,
    /// The grid starts at the first prompt token: the prompt's last `P mod B` tokens share the
    /// first canvas block, which runs with them (SDAR's `block_diffusion_generate`).
    SequenceStart,
}

/// How many positions each step of a block reveals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCounts {
    /// dllm's linear-alpha schedule over the masks the block has (`bd3lm_counts`).
    LinearAlpha,
    /// LLaDA's even split of a whole block over its steps, clamped to the masks left (SDAR).
    EvenSplit,
}

/// When block diffusion stops before the last block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStop {
    /// After a block that holds EOS (dllm).
    BlockHoldsEos,
    /// After a block, once any stop id (EOS, EOT, pad) appears in the answer (SDAR).
    AnswerHasStop,
    /// After a block, once EOS appears in the answer (LLaDA2.0's `generate()`).
    AnswerHasEos,
    /// Only with `--early-stop`: after a block, once the answer has no masks left and holds
    /// EOS (LLaDA2.1's `generate()`, whose edits can still rewrite a revealed EOS).
    EarlyStopOnly,
}

/// A block-diffusion sampler described as data: BD3LM and SDAR differ only in these facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockGrid {
    pub start: GridStart,
    pub counts: BlockCounts,
    pub stop: BlockStop,
    /// Pad tokens take no position and no attention (dllm's rule); SDAR treats them as text.
    pub pads_invisible: bool,
    /// `--threshold` is SDAR's `low_confidence_dynamic` (the schedule's count is a floor)
    /// rather than Fast-dLLM's rule (the most confident one is the floor).
    pub dynamic_threshold: bool,
    /// The last block is denoised whole, past `--gen-length` up to the grid line, and the
    /// answer cut to `--gen-length` afterwards (LLaDA2 lays the whole canvas on the grid);
    /// else the last block ends at `--gen-length`.
    pub whole_last_block: bool,
    /// `--steps` counts each block's steps, capped at `gen_length / minimal_topk` (LLaDA2's
    /// `steps`); else it counts the run's steps, spread over the blocks.
    pub steps_per_block: bool,
}

impl BlockGrid {
    /// dllm's `BD3LMSampler` (Tiny-A2D models).
    pub const BD3LM: BlockGrid = BlockGrid {
        start: GridStart::PromptEnd,
        counts: BlockCounts::LinearAlpha,
        stop: BlockStop::BlockHoldsEos,
        pads_invisible: true,
        dynamic_threshold: false,
        whole_last_block: false,
        steps_per_block: false,
    };
    /// SDAR's `generate.py::block_diffusion_generate`.
    pub const SDAR: BlockGrid = BlockGrid {
        start: GridStart::SequenceStart,
        counts: BlockCounts::EvenSplit,
        stop: BlockStop::AnswerHasStop,
        pads_invisible: false,
        dynamic_threshold: true,
        whole_last_block: false,
        steps_per_block: false,
    };
    /// LLaDA2's `generate()` (inclusionAI, `modeling_llada2_moe.py`): SDAR's grid, counts and
    /// dynamic threshold, the whole canvas on the grid, a stop once EOS appears.
    pub const LLADA2: BlockGrid = BlockGrid {
        start: GridStart::SequenceStart,
        counts: BlockCounts::EvenSplit,
        stop: BlockStop::AnswerHasEos,
        pads_invisible: false,
        dynamic_threshold: true,
        whole_last_block: true,
        steps_per_block: true,
    };
    /// LLaDA2.1's `generate()` (token editing): LLaDA2.0's grid, stopping only on request.
    pub const LLADA21: BlockGrid = BlockGrid {
        stop: BlockStop::EarlyStopOnly,
        ..BlockGrid::LLADA2
    };
}

/// LLaDA2.1's token editing: while a block is denoised, a revealed (non-prompt) position of it
/// whose argmax changed is rewritten when the new token's probability is above `threshold`;
/// once the block has no masks, further passes (post-steps) edit only, until one edits nothing
/// or `max_post_steps` have run. Masks are revealed by the dynamic threshold rule with
/// `num_to_transfer` as the floor instead of a schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Editing {
    pub threshold: f64,
    pub max_post_steps: usize,
    pub num_to_transfer: usize,
}

/// LLaDA's `generate()` (`llada.rs`): semi-autoregressive blocks, each in `steps_per_block`
/// steps, every step over the whole sequence or through a Fast-dLLM cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blocks {
    pub block_length: usize,
    pub steps_per_block: usize,
    pub pass: FullPass,
}

/// Dream's `diffusion_generate()` (`dream.rs`): `steps` steps over the whole canvas on the
/// timesteps `linspace(1, eps, steps + 1)`; `origin` reveals each masked position with
/// probability `1 - s/t` instead of the most confident share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timesteps {
    pub eps: f64,
    pub steps: usize,
    pub origin: bool,
}

/// Fast-dLLM's Dream block sampler (`dream_block.rs`): blocks, each on its own timesteps,
/// through a cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DreamBlocks {
    pub block_length: usize,
    pub steps_per_block: usize,
    pub eps: f64,
    pub cache: FastDllmCache,
}

/// Block diffusion (`block_diffusion.rs`): block-causal attention, finished blocks in an exact
/// cache (`exact_cache`), or everything recomputed every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockDiffusion {
    pub grid: BlockGrid,
    pub block_length: usize,
    /// `--steps-per-block`; else `ceil(steps / blocks)`, which depends on the prompt.
    pub steps_per_block: Option<usize>,
    pub exact_cache: bool,
    /// LLaDA2.1's token editing, when on.
    pub editing: Option<Editing>,
}

impl BlockDiffusion {
    /// Steps per block for a run of `steps` steps over `blocks` blocks: the flag, else the
    /// steps spread evenly (rounded up); an even split of a block never takes more steps than
    /// the block has positions.
    pub fn steps_per_block(&self, steps: usize, blocks: usize) -> usize {
        let n = self
            .steps_per_block
            .unwrap_or(steps.div_ceil(blocks.max(1)))
            .max(1);
        match self.grid.counts {
            BlockCounts::EvenSplit => n.min(self.block_length),
            BlockCounts::LinearAlpha => n,
        }
    }

    /// Reveal counts for a block of `len` positions in a run of `steps` steps over `blocks`
    /// blocks (SDAR splits a whole block, whatever its masks).
    pub fn counts(&self, steps: usize, len: usize, blocks: usize) -> Vec<usize> {
        let n = self.steps_per_block(steps, blocks);
        match self.grid.counts {
            BlockCounts::EvenSplit => transfer_counts(self.block_length, n),
            BlockCounts::LinearAlpha => bd3lm_counts(len, n),
        }
    }
}

/// Which loop runs, with the facts only that loop reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Driver {
    Blocks(Blocks),
    Timesteps(Timesteps),
    DreamBlocks(DreamBlocks),
    BlockDiffusion(BlockDiffusion),
}

/// Which of the decided positions a step reveals (`reveal.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RevealRule {
    /// The schedule's count, most confident first; with `alg_temp > 0` drawn by
    /// `softmax(confidence / alg_temp)` (Dream).
    Scheduled { alg_temp: f64 },
    /// Fast-dLLM: the most confident position and every other one at or above the threshold.
    Threshold(f64),
    /// SDAR `low_confidence_dynamic`: every position strictly above the threshold if at least
    /// the schedule's count qualify, else the count most confident.
    Dynamic(f64),
    /// EB-sampler: the lowest-entropy positions while their summed entropy stays below the
    /// bound, at least one.
    EntropyBound(f64),
}

impl RevealRule {
    /// Parallel decoding: a block runs until it has no masks left, however many steps that
    /// takes, instead of following the schedule's step count.
    pub fn adaptive(&self) -> bool {
        !matches!(self, RevealRule::Scheduled { .. })
    }
}

/// A resolved, checked plan for one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Canvas length: positions generated after the prompt.
    pub gen_length: usize,
    /// `--steps` as resolved (each driver's own step counts derive from it).
    pub steps: usize,
    pub driver: Driver,
    pub decision: DecisionRule,
    pub reveal: RevealRule,
    /// Logit row `i - 1` predicts position `i` (Dream family).
    pub shift_logits: bool,
    /// Never choose EOS (`logits_eos_inf`).
    pub suppress_eos: bool,
    /// Reveal EOS/EOT last (`confidence_eos_eot_inf`, as the reference code behaves).
    pub eos_last: bool,
    /// Stop as soon as the answer is final: a stop token is revealed and every position before
    /// it too. The rest of the canvas is filled with EOS instead of being denoised.
    pub early_stop: bool,
    pub seed: u64,
}

impl Plan {
    /// The block length, or `None` for Dream's schedule over the whole canvas.
    pub fn block_length(&self) -> Option<usize> {
        match self.driver {
            Driver::Blocks(Blocks { block_length, .. })
            | Driver::DreamBlocks(DreamBlocks { block_length, .. })
            | Driver::BlockDiffusion(BlockDiffusion { block_length, .. }) => Some(block_length),
            Driver::Timesteps(_) => None,
        }
    }

    pub fn eps(&self) -> Option<f64> {
        match self.driver {
            Driver::Timesteps(Timesteps { eps, .. })
            | Driver::DreamBlocks(DreamBlocks { eps, .. }) => Some(eps),
            _ => None,
        }
    }

    /// The `--cache` value this plan runs with.
    pub fn cache(&self) -> CacheMode {
        let fast = |c: FastDllmCache| match c {
            FastDllmCache::Prefix => CacheMode::Prefix,
            FastDllmCache::Dual => CacheMode::Dual,
        };
        match self.driver {
            Driver::Blocks(Blocks {
                pass: FullPass::Cached(c),
                ..
            })
            | Driver::DreamBlocks(DreamBlocks { cache: c, .. }) => fast(c),
            Driver::BlockDiffusion(BlockDiffusion {
                exact_cache: true, ..
            }) => CacheMode::Prefix,
            _ => CacheMode::None,
        }
    }

    pub fn cfg_scale(&self) -> f64 {
        match self.driver {
            Driver::Blocks(Blocks {
                pass: FullPass::Recompute { cfg_scale },
                ..
            }) => cfg_scale,
            _ => 0.0,
        }
    }

    pub fn alg_temp(&self) -> f64 {
        match self.reveal {
            RevealRule::Scheduled { alg_temp } => alg_temp,
            _ => 0.0,
        }
    }

    /// The Fast-dLLM or SDAR threshold, if one is on.
    pub fn threshold(&self) -> Option<f64> {
        match self.reveal {
            RevealRule::Threshold(t) | RevealRule::Dynamic(t) => Some(t),
            _ => None,
        }
    }

    pub fn entropy_bound(&self) -> Option<f64> {
        match self.reveal {
            RevealRule::EntropyBound(e) => Some(e),
            _ => None,
        }
    }

    /// LLaDA2.1's token editing, when on.
    pub fn editing(&self) -> Option<Editing> {
        match self.driver {
            Driver::BlockDiffusion(b) => b.editing,
            _ => None,
        }
    }

    /// `--steps-per-block` as given (block diffusion only).
    pub fn steps_per_block_flag(&self) -> Option<usize> {
        match self.driver {
            Driver::BlockDiffusion(b) => b.steps_per_block,
            _ => None,
        }
    }

    /// Positions denoised after a prompt of `prompt_len` tokens: `gen_length`, or up to the
    /// next grid line when the grid denoises its last block whole.
    pub fn canvas_len(&self, prompt_len: usize) -> usize {
        match self.driver {
            Driver::BlockDiffusion(b) if b.grid.whole_last_block => {
                let start = match b.grid.start {
                    GridStart::SequenceStart => 0,
                    GridStart::PromptEnd => prompt_len,
                };
                let end = prompt_len + self.gen_length;
                start + (end - start).div_ceil(b.block_length) * b.block_length - prompt_len
            }
            _ => self.gen_length,
        }
    }

    /// The blocks of the canvas after a prompt of `prompt_len` tokens, in canvas positions (the
    /// last may be shorter, or reach past `gen_length`: [`Plan::canvas_len`]). SDAR's grid
    /// starts at the first prompt token, so its first canvas block is cut short by the
    /// prompt's tail.
    pub fn blocks(&self, prompt_len: usize) -> Vec<Range<usize>> {
        let len = self.canvas_len(prompt_len);
        let Some(bs) = self.block_length() else {
            // One block: the whole canvas.
            return std::iter::once(0..len).collect();
        };
        let tail = match self.driver {
            Driver::BlockDiffusion(b) if b.grid.start == GridStart::SequenceStart => {
                prompt_len % bs
            }
            _ => 0,
        };
        let mut blocks = Vec::new();
        let mut start = 0;
        while start < len {
            let end = (start + bs - if start == 0 { tail } else { 0 }).min(len);
            blocks.push(start..end);
            start = end;
        }
        blocks
    }

    /// The steps this plan runs for a prompt of `prompt_len` tokens: exact for a fixed
    /// schedule, an upper bound with parallel decoding (one token per step at worst), early
    /// stops and skipped steps. The live view's gauge reads it before the first step.
    pub fn total_steps(&self, prompt_len: usize) -> usize {
        let blocks = self.blocks(prompt_len);
        if let Driver::BlockDiffusion(BlockDiffusion {
            editing: Some(e), ..
        }) = self.driver
        {
            // At most one mask revealed per step, then the post-steps.
            return blocks.iter().map(|b| b.len() + e.max_post_steps).sum();
        }
        if self.reveal.adaptive() {
            return self.gen_length;
        }
        match self.driver {
            Driver::Blocks(b) => {
                let counts = transfer_counts(b.block_length, b.steps_per_block);
                blocks.len() * counts.iter().filter(|&&k| k > 0).count()
            }
            Driver::Timesteps(t) => t.steps,
            Driver::DreamBlocks(d) => blocks.len() * d.steps_per_block,
            Driver::BlockDiffusion(d) => blocks
                .iter()
                .map(|b| d.counts(self.steps, b.len(), blocks.len()).len())
                .sum(),
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A greedy LLaDA plan with blocks and no cache, for driver tests.
    pub fn llada(gen_length: usize, block_length: usize, steps: usize) -> Plan {
        Plan {
            gen_length,
            steps,
            driver: Driver::Blocks(Blocks {
                block_length,
                steps_per_block: steps / gen_length.div_ceil(block_length),
                pass: FullPass::Recompute { cfg_scale: 0.0 },
            }),
            decision: DecisionRule::Llada {
                strategy: Strategy::Confidence,
                temperature: 0.0,
            },
            reveal: RevealRule::Scheduled { alg_temp: 0.0 },
            shift_logits: false,
            suppress_eos: false,
            eos_last: false,
            early_stop: false,
            seed: 0,
        }
    }

    #[test]
    fn sdar_blocks_follow_the_grid_from_the_first_prompt_token() {
        let grid = BlockDiffusion {
            grid: BlockGrid::SDAR,
            block_length: 4,
            steps_per_block: None,
            exact_cache: true,
            editing: None,
        };
        let sdar = Plan {
            driver: Driver::BlockDiffusion(grid),
            ..llada(10, 4, 10)
        };
        // A 6-token prompt leaves 2 of its grid block to the canvas.
        assert_eq!(sdar.blocks(6), vec![0..2, 2..6, 6..10]);
        assert_eq!(sdar.blocks(8), vec![0..4, 4..8, 8..10]);
        // Other families start their blocks at the canvas.
        assert_eq!(llada(10, 4, 10).blocks(6), vec![0..4, 4..8, 8..10]);
        // SDAR splits a whole block: never more steps than positions.
        assert_eq!(grid.steps_per_block(10, 3), 4);
        assert_eq!(sdar.total_steps(6), 12);
    }

    #[test]
    fn total_steps_counts_only_steps_that_can_reveal() {
        // 2 positions in 4 steps: two steps of each block reveal nothing and are skipped.
        assert_eq!(llada(2, 2, 4).total_steps(1), 2);
        assert_eq!(llada(8, 4, 4).total_steps(1), 4);
        let adaptive = Plan {
            reveal: RevealRule::Threshold(0.9),
            ..llada(8, 4, 4)
        };
        assert_eq!(adaptive.total_steps(1), 8);
    }
}
