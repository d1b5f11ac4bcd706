//! The `--json` report of a run: one object, stable field names.

use serde::Serialize;

use crate::diffusion::decision::DecisionRule;
use crate::diffusion::{CacheMode, Generation, Plan, Strategy};

/// `S`: the settings object; a run on `--endpoint` reports the request's sampler fields there.
#[derive(Debug, Serialize)]
pub struct Report<S = Settings> {
    pub model: String,
    pub arch: &'static str,
    pub device: String,
    pub dtype: &'static str,
    /// The answer: generated text before the first EOS/EOT/pad, special tokens left out.
    pub text: String,
    /// The whole canvas, `gen_length` ids, EOS and pad included.
    pub tokens: Vec<u32>,
    pub prompt_tokens: Vec<u32>,
    /// Tokens before the first stop token.
    pub answer_tokens: usize,
    /// Denoising steps run.
    pub steps: usize,
    /// Model forward passes.
    pub nfe: usize,
    /// Canvas tokens decoded per forward pass.
    pub tokens_per_forward: f64,
    /// Reading config, tokenizer and weights.
    pub load_s: f64,
    /// The denoising loop alone.
    pub elapsed_s: f64,
    /// Canvas tokens per second of the denoising loop.
    pub tokens_per_s: f64,
    /// Forward passes the reference schedule would have run beyond these (`steps - nfe`): steps
    /// that could reveal nothing and, with early stop, the steps after the answer was final.
    pub nfe_saved: usize,
    /// The answer was final before the schedule ended.
    pub stopped_early: bool,
    pub cancelled: bool,
    /// Revealed tokens rewritten by token editing (LLaDA2.1; 0 otherwise).
    pub edits: usize,
    pub settings: S,
}

/// The sampler settings the run used, after defaults.
#[derive(Debug, Serialize)]
pub struct Settings {
    pub gen_length: usize,
    /// The block length, or null for Dream's timestep schedule over the whole canvas.
    pub block_length: Option<usize>,
    pub eps: Option<f64>,
    pub steps: usize,
    pub strategy: Strategy,
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub alg_temp: f64,
    pub cfg_scale: f64,
    pub suppress_eos: bool,
    pub eos_last: bool,
    /// Fast-dLLM's parallel-decoding threshold, if any.
    pub threshold: Option<f64>,
    /// The EB-sampler's entropy bound, if any.
    pub entropy_bound: Option<f64>,
    pub cache: CacheMode,
    /// Block diffusion's steps per block, when set.
    pub steps_per_block: Option<usize>,
    /// LLaDA2.1 token editing: the edit threshold, post-steps and mask floor, when on.
    pub edit_threshold: Option<f64>,
    pub max_post_steps: Option<usize>,
    pub num_to_transfer: Option<usize>,
    pub early_stop: bool,
    pub seed: u64,
}

impl From<&Plan> for Settings {
    fn from(p: &Plan) -> Self {
        let (top_p, top_k) = match p.decision {
            DecisionRule::Dream { top_p, top_k, .. }
            | DecisionRule::Llada2 { top_p, top_k, .. } => (top_p, top_k),
            DecisionRule::Llada { .. } => (None, None),
        };
        Settings {
            gen_length: p.gen_length,
            block_length: p.block_length(),
            eps: p.eps(),
            steps: p.steps,
            strategy: p.decision.strategy(),
            temperature: p.decision.temperature(),
            top_p,
            top_k,
            alg_temp: p.alg_temp(),
            cfg_scale: p.cfg_scale(),
            suppress_eos: p.suppress_eos,
            eos_last: p.eos_last,
            threshold: p.threshold(),
            entropy_bound: p.entropy_bound(),
            cache: p.cache(),
            steps_per_block: p.steps_per_block_flag(),
            edit_threshold: p.editing().map(|e| e.threshold),
            max_post_steps: p.editing().map(|e| e.max_post_steps),
            num_to_transfer: p.editing().map(|e| e.num_to_transfer),
            early_stop: p.early_stop,
            seed: p.seed,
        }
    }
}

/// Canvas tokens per forward pass and per second of a generation.
pub fn rates(g: &Generation) -> (f64, f64) {
    let n = g.canvas.len() as f64;
    let per_forward = if g.nfe > 0 { n / g.nfe as f64 } else { 0.0 };
    let secs = g.elapsed.as_secs_f64();
    (per_forward, if secs > 0.0 { n / secs } else { 0.0 })
}
