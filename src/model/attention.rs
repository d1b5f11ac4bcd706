//! Self-attention as every network here computes it: one stacked q/k/v product, heads split,
//! optional per-head q/k RMSNorm (Qwen3), RoPE, the KV cache, scaled dot-product attention with
//! grouped key/value heads and no causal mask (torch SDPA with `is_causal=False`; block
//! diffusion passes a block-causal bias), heads merged, the output product. The model files
//! keep their own tensor names and build a [`SelfAttention`] from them.
//!
//! Query head `j` reads key/value head `j / (heads / kv_heads)`, as `repeat_interleave` /
//! `repeat_kv` do in the references. Instead of copying K and V per query head, the query heads
//! of one group are stacked along the sequence axis and share one matmul with their K/V head.

use candle_core::{Module, Result, Tensor};

use super::denoiser::Pass;
use super::kv_cache::{CacheOp, LayerCache};
use candle_nn::VarBuilder;

use super::linear::{Linear, WeightFormat};
use super::norm::RmsNorm;
use super::rotary::RotaryEmbedding;

/// Per-pass values every layer reads.
pub struct LayerInput<'a> {
    pub rope: &'a RotaryEmbedding,
    pub cos: Tensor,
    pub sin: Tensor,
    pub bias: Option<&'a Tensor>,
    pub cache: CacheOp,
}

impl<'a> LayerInput<'a> {
    /// The RoPE tables of the pass's positions, its bias and its cache operation.
    pub fn new(rope: &'a RotaryEmbedding, pass: &Pass<'a>) -> Result<Self> {
        let (cos, sin) = rope.tables(pass.positions, pass.ids.device())?;
        Ok(LayerInput {
            rope,
            cos,
            sin,
            bias: pass.bias,
            cache: pass.cache,
        })
    }
}

/// One attention sub-layer.
#[derive(Debug, Clone)]
pub struct SelfAttention {
    /// The q, k and v projections stacked into one product (all q heads, then k, then v).
    pub qkv: Linear,
    /// The output projection.
    pub out: Linear,
    /// RMSNorm over each head's q and k, before RoPE (Qwen3).
    pub qk_norm: Option<(RmsNorm, RmsNorm)>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl SelfAttention {
    /// The Hugging Face (Llama/Qwen) layout under `vb` (`self_attn`): `q_proj`, `k_proj` and
    /// `v_proj` stacked, with biases where `bias`, `o_proj` without, and the per-head `q_norm`
    /// and `k_norm` of epsilon `qk_norm` where given. `(heads, kv_heads, head_dim)` shape it.
    pub fn hf(
        d: usize,
        (h, kv, hd): (usize, usize, usize),
        bias: bool,
        qk_norm: Option<f64>,
        vb: VarBuilder,
        format: &WeightFormat,
    ) -> Result<Self> {
        let qk_norm = match qk_norm {
            Some(eps) => Some((
                RmsNorm::new(hd, eps, vb.pp("q_norm"))?,
                RmsNorm::new(hd, eps, vb.pp("k_norm"))?,
            )),
            None => None,
        };
        let parts = [
            (h * hd, vb.pp("q_proj")),
            (kv * hd, vb.pp("k_proj")),
            (kv * hd, vb.pp("v_proj")),
        ];
        Ok(SelfAttention {
            qkv: Linear::stacked(d, &parts, bias, format)?,
            out: Linear::new(h * hd, d, false, vb.pp("o_proj"), format)?,
            qk_norm,
            heads: h,
            kv_heads: kv,
            head_dim: hd,
        })
    }

    /// `x` `[b, t, hidden]` through attention, reading and updating `cache` as the pass says.
    pub fn forward(
        &self,
        x: &Tensor,
        input: &LayerInput,
        cache: &mut LayerCache,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (hd, heads, kv) = (self.head_dim, self.heads, self.kv_heads);
        let qkv = Linear::split(&x.apply(&self.qkv)?, &[heads * hd, kv * hd, kv * hd])?;
        let split = |y: &Tensor, heads: usize, norm: Option<&RmsNorm>| -> Result<Tensor> {
            let y = y.reshape((b, t, heads, hd))?;
            let y = match norm {
                Some(n) => n.forward(&y)?,
                None => y,
            };
            y.transpose(1, 2)
        };
        let (qn, kn) = match &self.qk_norm {
            Some((q, k)) => (Some(q), Some(k)),
            None => (None, None),
        };
        let q = input
            .rope
            .apply(&split(&qkv[0], heads, qn)?, &input.cos, &input.sin)?;
        let k = input
            .rope
            .apply(&split(&qkv[1], kv, kn)?, &input.cos, &input.sin)?;
        let v = split(&qkv[2], kv, None)?.contiguous()?;
        let (k, v) = cache.keys(k, v, input.cache)?;
        let y = attention(&q, &k, &v, input.bias)?;
        y.transpose(1, 2)?
            .reshape((b, t, heads * hd))?
            .apply(&self.out)
    }
}

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
