//! What the denoising loop takes besides the plan (the special token ids) and what it reports:
//! a [`Step`] after every forward pass that revealed tokens, and the [`Generation`] at the end.

use std::ops::Range;
use std::time::Duration;

use serde::Serialize;

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

/// One position revealed by a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reveal {
    /// Index into the canvas (0 is the first generated position).
    pub position: usize,
    pub token: u32,
    pub confidence: f32,
}

/// A revealed position rewritten by a step (LLaDA2.1's token editing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Edit {
    /// Index into the canvas.
    pub position: usize,
    /// The token it held.
    pub old: u32,
    /// The token it holds now.
    pub new: u32,
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
    /// Revealed positions this step rewrote (token editing), by position.
    pub edited: &'a [Edit],
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
    /// Revealed tokens rewritten by token editing.
    pub edits: usize,
}
