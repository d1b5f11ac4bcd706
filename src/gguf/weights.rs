//! A GGUF file's tensors under the checkpoint's own names: a candle `VarBuilder` backend that
//! dequantizes on request (norms, biases, embeddings, float-typed matmul weights), and the
//! [`QuantizedWeights`] source the linear layers take block-quantized weights from as they are.
//!
//! Transformations `convert_hf_to_gguf.py` applies are undone here, so the networks see the HF
//! layout: LLaDA's q and k rows are permuted into llama's interleaved RoPE order
//! (`LlamaModel.permute`, used by the LLaDA converter): within a head of size `hd`, GGUF row
//! `2j` is HF row `j` and GGUF row `2j + 1` is HF row `j + hd/2`. Rows are whole blocks in
//! every ggml type, so the inverse permutation moves row bytes and works on quantized tensors
//! too. Nothing else is transformed (GGUF `ne` is the reversed PyTorch shape; no transposes).

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::Init;

use super::file::{is_block_type, type_name, GgufFile};
use super::names::{gguf_name, Layout};
use crate::model::linear::QuantizedWeights;
use crate::model::Body;

/// The tensors of one GGUF file, named for `body`.
#[derive(Debug)]
pub struct GgufWeights {
    file: Arc<GgufFile>,
    body: Body,
    heads: usize,
    kv_heads: usize,
}

impl GgufWeights {
    pub fn new(file: Arc<GgufFile>, body: Body, heads: usize, kv_heads: usize) -> Self {
        Self {
            file,
            body,
            heads,
            kv_heads,
        }
    }

    fn lookup(&self, hf: &str) -> Option<(String, Layout)> {
        gguf_name(self.body, hf).filter(|(g, _)| self.file.tensor_info(g).is_some())
    }

    fn missing(&self, hf: &str) -> candle_core::Error {
        let name = gguf_name(self.body, hf).map_or(hf.to_string(), |(g, _)| g);
        candle_core::Error::msg(format!(
            "{}: no tensor {name} (the network needs it as {hf})",
            self.file.path.display()
        ))
    }

    /// Tensor `hf` as stored (any type) with the converter's permutation undone, or its
    /// expert's slice of a stacked tensor, after checking its shape is `want`.
    fn read(&self, hf: &str, want: &[usize]) -> Result<QTensor> {
        let (name, layout) = self.lookup(hf).ok_or_else(|| self.missing(hf))?;
        if let Some((dtype, dims)) = self.file.tensor_info(&name) {
            let fits = match layout {
                Layout::Expert(e) => {
                    dims.len() == want.len() + 1 && dims[1..] == *want && e < dims[0]
                }
                _ => dims == want,
            };
            if !fits {
                let what = match layout {
                    Layout::Expert(e) => format!("expert {e} of shape {want:?}"),
                    _ => format!("{want:?}"),
                };
                candle_core::bail!(
                    "{}: tensor {name} ({}) has shape {dims:?}, but the metadata implies {what}",
                    self.file.path.display(),
                    type_name(dtype),
                );
            }
        }
        let heads = match layout {
            Layout::Plain => return self.file.read(&name, &|_| Ok(())),
            Layout::Expert(e) => return self.file.read_part(&name, Some(e), &|_| Ok(())),
            Layout::QueryHeads => self.heads,
            Layout::KvHeads => self.kv_heads,
        };
        let rows = want.first().copied().unwrap_or(0);
        self.file
            .read(&name, &|bytes| unpermute_rows(bytes, rows, heads))
    }

    fn block_typed(&self, hf: &str) -> bool {
        self.lookup(hf)
            .and_then(|(g, _)| self.file.tensor_info(&g))
            .is_some_and(|(dtype, _)| is_block_type(dtype))
    }
}

/// Undoes `LlamaModel.permute` on the `rows` rows held in `data` (`[heads * hd, in]`), in
/// place: GGUF row `h*hd + 2j + p` goes back to HF row `h*hd + p*hd/2 + j`. Only one head is
/// copied aside at a time.
fn unpermute_rows(data: &mut [u8], rows: usize, heads: usize) -> Result<()> {
    if heads == 0
        || !rows.is_multiple_of(heads)
        || !(rows / heads).is_multiple_of(2)
        || !data.len().is_multiple_of(rows)
    {
        candle_core::bail!("cannot undo the q/k row permutation: {rows} rows over {heads} heads");
    }
    let row_bytes = data.len() / rows;
    let (hd, half) = (rows / heads, rows / heads / 2);
    let mut gguf = vec![0u8; hd * row_bytes];
    for head in data.chunks_exact_mut(hd * row_bytes) {
        gguf.copy_from_slice(head);
        for j in 0..half {
            for p in 0..2 {
                let (src, dst) = (2 * j + p, p * half + j);
                head[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&gguf[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    Ok(())
}

impl QuantizedWeights for GgufWeights {
    fn is_quantized(&self, name: &str) -> bool {
        self.block_typed(name)
    }

    fn quantized(&self, name: &str, shape: (usize, usize)) -> Result<QTensor> {
        self.read(name, &[shape.0, shape.1])
    }
}

/// The `VarBuilder` backend over a [`GgufWeights`].
pub struct GgufBackend(pub Arc<GgufWeights>);

impl candle_nn::var_builder::SimpleBackend for GgufBackend {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let q = self.0.read(name, shape.dims())?;
        q.dequantize(&Device::Cpu)?.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let (g, layout) = self.0.lookup(name).ok_or_else(|| self.0.missing(name))?;
        let mut dims = self
            .0
            .file
            .tensor_info(&g)
            .map(|(_, d)| d.to_vec())
            .unwrap_or_default();
        if matches!(layout, Layout::Expert(_)) && !dims.is_empty() {
            dims.remove(0);
        }
        self.get(Shape::from(dims), name, Init::Const(0.), dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.lookup(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_the_converters_permutation() -> anyhow::Result<()> {
        // Two heads of size 4 over 3 inputs; row r holds the value r in every column.
        let (heads, hd, cols) = (2, 4, 3);
        // The converter's permute: GGUF row h*hd + 2j + p = HF row h*hd + p*hd/2 + j.
        let mut gguf = Vec::new();
        for h in 0..heads {
            for j in 0..hd / 2 {
                for p in 0..2 {
                    let hf_row = (h * hd + p * hd / 2 + j) as f32;
                    gguf.extend(std::iter::repeat_n(hf_row, cols));
                }
            }
        }
        let mut bytes: Vec<u8> = gguf.iter().flat_map(|v| v.to_le_bytes()).collect();
        unpermute_rows(&mut bytes, heads * hd, heads)?;
        let back: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let rows: Vec<f32> = back.iter().step_by(cols).copied().collect();
        assert_eq!(rows, (0..8).map(|r| r as f32).collect::<Vec<_>>());
        assert!(back
            .chunks_exact(cols)
            .all(|r| r.iter().all(|v| *v == r[0])));
        Ok(())
    }
}
