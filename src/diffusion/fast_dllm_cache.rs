//! Fast-dLLM's approximate key/value caches for bidirectional models (NVlabs/Fast-dLLM,
//! `llada/generate.py::generate_with_prefix_cache` / `generate_with_dual_cache`, and the Dream
//! equivalents in `dream/model/generation_utils_block.py`).
//!
//! At each block start one full pass stores every position's keys and values. Later steps of
//! the block run, against that store, either the block and everything after it with the store
//! cut back to the positions before the block (**prefix**), or the block alone, its entries
//! overwritten in place among the stale rest (**dual**). Both are approximations: the stored
//! keys of other positions do not see the tokens revealed since the block began.

use std::ops::Range;

use candle_core::{IndexOp, Tensor};

use super::plan::FastDllmCache;
use super::run::{ids, positions};
use crate::model::{CacheOp, Denoiser, Pass};

/// Logits of `rows` (indices into `span`) from one pass over `seq[span]` at its own positions,
/// doing `op` to the cache.
pub fn span_logits(
    model: &mut impl Denoiser,
    seq: &[u32],
    span: Range<usize>,
    op: CacheOp,
    rows: &[u32],
) -> candle_core::Result<Tensor> {
    let tokens = ids(&seq[span.clone()], model.device())?;
    let pass = Pass {
        ids: &tokens,
        positions: &positions(span),
        bias: None,
        cache: op,
    };
    model.forward(&pass, rows)?.i(0)
}

/// A block start: one full pass over `seq` that stores every position, giving the logits of
/// `rows`; the prefix cache then keeps only the positions before the block at `block_start`.
pub fn refresh(
    model: &mut impl Denoiser,
    seq: &[u32],
    cache: FastDllmCache,
    block_start: usize,
    rows: &[u32],
) -> candle_core::Result<Tensor> {
    let logits = span_logits(model, seq, 0..seq.len(), CacheOp::Store, rows)?;
    if cache == FastDllmCache::Prefix {
        model.truncate_cache(block_start);
    }
    Ok(logits)
}

/// The tokens a step after the block start runs, for block `block` of `seq`, and what it does
/// to the cache: the block and everything after it, reading the cached prefix (`prefix`), or
/// the block alone, written over its own entries (`dual`). `rows` index into that span.
pub fn cached_logits(
    model: &mut impl Denoiser,
    seq: &[u32],
    cache: FastDllmCache,
    block: Range<usize>,
    rows: &[u32],
) -> candle_core::Result<Tensor> {
    let (span, op) = match cache {
        FastDllmCache::Dual => (block.clone(), CacheOp::Overwrite { at: block.start }),
        FastDllmCache::Prefix => (block.start..seq.len(), CacheOp::Read),
    };
    span_logits(model, seq, span, op, rows)
}
