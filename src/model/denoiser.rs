//! What the denoising loop asks of a network: one forward pass ([`Pass`]) giving the logits of
//! some of its rows, and control of the KV cache. [`super::Model`] implements it for the real
//! networks; the samplers' tests implement it with a stand-in.

use candle_core::{Device, Tensor};

use super::kv_cache::CacheOp;

/// What one forward pass computes: which tokens, at which positions, seeing which keys, and
/// what happens to the KV cache.
pub struct Pass<'a> {
    /// Token ids, `[batch, n]`.
    pub ids: &'a Tensor,
    /// The RoPE position of each of the `n` tokens.
    pub positions: &'a [u32],
    /// Additive attention bias (0 or -inf), broadcastable to `[batch, 1, n, keys]`; `None` lets
    /// every query see every key (bidirectional attention).
    pub bias: Option<&'a Tensor>,
    pub cache: CacheOp,
}

impl<'a> Pass<'a> {
    /// A plain bidirectional pass, no cache.
    pub fn full(ids: &'a Tensor, positions: &'a [u32]) -> Self {
        Pass {
            ids,
            positions,
            bias: None,
            cache: CacheOp::None,
        }
    }
}

/// A network that predicts tokens at masked positions.
pub trait Denoiser {
    /// Logits `[batch, rows.len(), vocab]` of the `rows` (indices into the pass's tokens) of one
    /// forward pass. Only the requested rows go through the LM head.
    fn forward(&mut self, pass: &Pass, rows: &[u32]) -> candle_core::Result<Tensor>;
    /// Keeps the first `len` cached positions.
    fn truncate_cache(&mut self, len: usize);
    fn clear_cache(&mut self);
    fn vocab_size(&self) -> usize;
    fn device(&self) -> &Device;
}
