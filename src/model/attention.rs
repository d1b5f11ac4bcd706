//! Scaled dot-product attention with grouped key/value heads and no causal mask: the
//! bidirectional attention of masked-diffusion models (torch SDPA with `is_causal=False`).
//!
//! Query head `j` reads key/value head `j / (heads / kv_heads)`, as `repeat_interleave` /
//! `repeat_kv` do in the references. Instead of copying K and V per query head, the query heads
//! of one group are stacked along the sequence axis and share one matmul with their K/V head.

use candle_core::{Result, Tensor};

/// `softmax(q kᵀ / sqrt(d) + bias) v` for `q` `[b, heads, tq, d]` (contiguous) and `k`, `v`
/// `[b, kv_heads, tk, d]`; `bias`, if any, broadcasts to `[b, 1, tq, tk]` (0 or -inf).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, heads, tq, d) = q.dims4()?;
    let (_, kv_heads, tk, _) = k.dims4()?;
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        candle_core::bail!("{heads} query heads cannot share {kv_heads} key/value heads");
    }
    let group = heads / kv_heads;
    let q = q.reshape((b, kv_heads, group * tq, d))?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let scores = match bias {
        Some(bias) => scores
            .reshape((b, kv_heads, group, tq, tk))?
            .broadcast_add(&bias.unsqueeze(2)?)?
            .reshape((b, kv_heads, group * tq, tk))?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(&v.contiguous()?)?.reshape((b, heads, tq, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    /// The textbook computation with K/V repeated per query head.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (_, heads, _, d) = q.dims4()?;
        let group = heads / k.dim(1)?;
        let rep = |t: &Tensor| -> Result<Tensor> {
            let parts: Vec<Tensor> = (0..heads)
                .map(|j| t.narrow(1, j / group, 1))
                .collect::<Result<_>>()?;
            Tensor::cat(&parts, 1)
        };
        let s = (q.matmul(&rep(k)?.t()?)? / (d as f64).sqrt())?;
        let s = match bias {
            Some(b) => s.broadcast_add(b)?,
            None => s,
        };
        let m = s.max_keepdim(D::Minus1)?;
        let e = s.broadcast_sub(&m)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?
            .matmul(&rep(v)?)
    }

    #[test]
    fn grouped_heads_match_repeated_kv_with_and_without_bias() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 6, 5, 4), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (1, 2, 7, 4), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (1, 2, 7, 4), &dev)?;
        let mut bias = vec![0f32; 5 * 7];
        bias[3] = f32::NEG_INFINITY;
        let bias = Tensor::from_vec(bias, (1, 1, 5, 7), &dev)?;
        for b in [None, Some(&bias)] {
            let diff = (attention(&q, &k, &v, b)? - reference(&q, &k, &v, b)?)?
                .abs()?
                .max_all()?;
            assert!(diff.to_scalar::<f32>()? < 1e-5);
        }
        Ok(())
    }
}
