//! Keys and values kept between forward passes, one buffer per layer.
//!
//! Diffusion models re-run the same positions many times. Two kinds of reuse are built on this:
//! - **exact**, for block diffusion (dllm's BD3LM sampler, arXiv 2503.09573): a committed block's K/V depend
//!   only on earlier blocks, so they are appended once and read by every later step;
//! - **approximate**, Fast-dLLM's caches for bidirectional models (NVlabs/Fast-dLLM `llada/generate.py`): at each
//!   block start a full pass stores every position's K/V; later steps read the prefix (and, for
//!   the dual cache, write the block in place over the stored suffix-and-block).
//!
//! Keys are stored after RoPE: a cached position never changes its position, so this equals
//! Fast-dLLM's re-rotation of pre-RoPE keys and skips redoing it every step. Buffers grow by
//! doubling and are written in place (`slice_set`), so a step copies only its own rows.

use candle_core::{Result, Tensor};

/// What a forward pass does with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOp {
    /// Ignore it: attend to this pass's keys only.
    None,
    /// Replace it with this pass's keys.
    Store,
    /// Attend to the cache followed by this pass's keys; leave the cache as it was.
    Read,
    /// Like `Read`, then keep this pass's keys at the end of the cache.
    Append,
    /// Write this pass's keys over cache positions `at..at + n` and attend to the whole cache.
    Overwrite { at: usize },
}

/// One layer's keys and values, `[batch, kv_heads, capacity, head_dim]`, first `len` valid.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

impl LayerCache {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn clear(&mut self) {
        *self = LayerCache::default();
    }

    /// Makes room for `needed` positions, keeping the first `len`.
    fn reserve(&mut self, k: &Tensor, needed: usize) -> Result<()> {
        let capacity = self.k.as_ref().map_or(0, |t| t.dim(2).unwrap_or(0));
        if needed <= capacity {
            return Ok(());
        }
        let (b, heads, _, d) = k.dims4()?;
        let new_cap = needed.max(2 * capacity).max(64);
        let grow = |old: &Option<Tensor>| -> Result<Tensor> {
            let fresh = Tensor::zeros((b, heads, new_cap, d), k.dtype(), k.device())?;
            if let Some(old) = old.as_ref().filter(|_| self.len > 0) {
                fresh.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            }
            Ok(fresh)
        };
        let (nk, nv) = (grow(&self.k)?, grow(&self.v)?);
        self.k = Some(nk);
        self.v = Some(nv);
        Ok(())
    }

    fn write(&mut self, k: &Tensor, v: &Tensor, at: usize) -> Result<()> {
        let n = k.dim(2)?;
        self.reserve(k, at + n)?;
        if let (Some(ck), Some(cv)) = (&self.k, &self.v) {
            ck.slice_set(&k.contiguous()?, 2, at)?;
            cv.slice_set(&v.contiguous()?, 2, at)?;
        }
        Ok(())
    }

    fn view(&self, len: usize) -> Result<(Tensor, Tensor)> {
        match (&self.k, &self.v) {
            (Some(k), Some(v)) => Ok((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?)),
            _ => candle_core::bail!("the KV cache is empty"),
        }
    }

    /// The keys and values a pass with this layer's new `k`, `v` attends to.
    pub fn keys(&mut self, k: Tensor, v: Tensor, op: CacheOp) -> Result<(Tensor, Tensor)> {
        let n = k.dim(2)?;
        match op {
            CacheOp::None => Ok((k, v)),
            CacheOp::Store => {
                self.len = 0;
                self.write(&k, &v, 0)?;
                self.len = n;
                Ok((k, v))
            }
            CacheOp::Read | CacheOp::Append => {
                let at = self.len;
                self.write(&k, &v, at)?;
                if op == CacheOp::Append {
                    self.len += n;
                }
                self.view(at + n)
            }
            CacheOp::Overwrite { at } => {
                if at + n > self.len {
                    candle_core::bail!(
                        "cache overwrite {at}..{} past its {} positions",
                        at + n,
                        self.len
                    );
                }
                self.write(&k, &v, at)?;
                self.view(self.len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn kv(values: &[f32]) -> Result<(Tensor, Tensor)> {
        let k = Tensor::from_slice(values, (1, 1, values.len(), 1), &Device::Cpu)?;
        Ok((k.clone(), (k * 10.0)?))
    }

    fn flat(t: &Tensor) -> Result<Vec<f32>> {
        t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
    }

    #[test]
    fn store_read_append_overwrite_truncate() -> Result<()> {
        let mut c = LayerCache::default();
        let (k, v) = kv(&[1.0, 2.0])?;
        c.keys(k, v, CacheOp::Store)?;
        assert_eq!(c.len(), 2);
        let (k, v) = kv(&[3.0])?;
        let (ks, vs) = c.keys(k, v, CacheOp::Read)?;
        assert_eq!(
            (flat(&ks)?, flat(&vs)?),
            (vec![1.0, 2.0, 3.0], vec![10.0, 20.0, 30.0])
        );
        assert_eq!(c.len(), 2, "read leaves the cache");
        let (k, v) = kv(&[4.0, 5.0])?;
        let (ks, _) = c.keys(k, v, CacheOp::Append)?;
        assert_eq!(flat(&ks)?, vec![1.0, 2.0, 4.0, 5.0]);
        let (k, v) = kv(&[9.0])?;
        let (ks, _) = c.keys(k, v, CacheOp::Overwrite { at: 1 })?;
        assert_eq!(flat(&ks)?, vec![1.0, 9.0, 4.0, 5.0]);
        c.truncate(2);
        let (k, v) = kv(&[7.0])?;
        let (ks, _) = c.keys(k, v, CacheOp::Read)?;
        assert_eq!(flat(&ks)?, vec![1.0, 9.0, 7.0]);
        let (k, v) = kv(&[0.0; 3])?;
        assert!(
            c.keys(k, v, CacheOp::Overwrite { at: 1 }).is_err(),
            "past the end"
        );
        Ok(())
    }

    #[test]
    fn growing_keeps_what_was_there() -> Result<()> {
        let mut c = LayerCache::default();
        let values: Vec<f32> = (0..100).map(|i| i as f32).collect();
        for chunk in values.chunks(30) {
            let (k, v) = kv(chunk)?;
            c.keys(k, v, CacheOp::Append)?;
        }
        let (k, v) = kv(&[100.0])?;
        let (ks, _) = c.keys(k, v, CacheOp::Read)?;
        let mut want = values;
        want.push(100.0);
        assert_eq!(flat(&ks)?, want);
        Ok(())
    }
}
