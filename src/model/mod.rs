//! The networks dcoder runs, and their loading from config.json + safetensors.
//!
//! Each architecture lives in its own file in the candle-transformers shape (`Config` with HF
//! key names, `new(cfg, vb)`, layers bottom-up); shared layers are `attention`, `norm` and
//! `rotary`. [`Model`] wraps whichever network a checkpoint holds and is the engine's
//! [`Denoiser`].

pub mod attention;
pub mod linear;
pub mod llada;
pub mod norm;
pub mod qwen;
pub mod random_weights;
pub mod rotary;

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::diffusion::Denoiser;
use crate::registry::Arch;

/// A parsed config.json.
#[derive(Debug, Clone, PartialEq)]
pub enum Config {
    Llada(llada::Config),
    Qwen(qwen::Config),
}

impl Config {
    /// Parses and checks `json` as a config of `arch`; the error names the offending key.
    pub fn parse(arch: Arch, json: &Value) -> Result<Config> {
        match arch {
            Arch::Llada => {
                let cfg: llada::Config =
                    serde_json::from_value(json.clone()).map_err(|e| anyhow!("{e}"))?;
                cfg.validate().map_err(|e| anyhow!(e))?;
                Ok(Config::Llada(cfg))
            }
            Arch::Dream => {
                let cfg: qwen::Config =
                    serde_json::from_value(json.clone()).map_err(|e| anyhow!("{e}"))?;
                cfg.validate().map_err(|e| anyhow!(e))?;
                Ok(Config::Qwen(cfg))
            }
        }
    }

    /// Rows of the LM head: logits per position.
    pub fn vocab_size(&self) -> usize {
        match self {
            Config::Llada(c) => c.embedding_rows(),
            Config::Qwen(c) => c.vocab_size,
        }
    }

    /// Number of weights.
    pub fn parameters(&self) -> usize {
        match self {
            Config::Llada(c) => c.parameters(),
            Config::Qwen(c) => c.parameters(),
        }
    }

    /// Longest prompt + canvas the model was trained for.
    pub fn max_positions(&self) -> usize {
        match self {
            Config::Llada(c) => c.max_sequence_length,
            Config::Qwen(c) => c.max_position_embeddings,
        }
    }
}

enum Network {
    Llada(llada::Model),
    Qwen(qwen::Model),
}

/// A network on a device.
pub struct Model {
    network: Network,
    device: Device,
    dtype: DType,
    vocab: usize,
}

impl Model {
    /// Builds the network of `config` from `vb` (checkpoint or random weights).
    pub fn new(config: &Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let (device, dtype) = (vb.device().clone(), vb.dtype());
        let network = match config {
            Config::Llada(c) => Network::Llada(llada::Model::new(c, vb)?),
            Config::Qwen(c) => Network::Qwen(qwen::Model::new(c, vb)?),
        };
        Ok(Self {
            network,
            device,
            dtype,
            vocab: config.vocab_size(),
        })
    }

    /// Final-norm hidden states `[batch, seq, hidden]` of `ids` `[batch, seq]`.
    pub fn hidden(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match &self.network {
            Network::Llada(m) => m.hidden(ids),
            Network::Qwen(m) => m.hidden(ids),
        }
    }

    /// LM-head logits of hidden states `[batch, rows, hidden]`.
    pub fn head(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        match &self.network {
            Network::Llada(m) => m.logits(hidden),
            Network::Qwen(m) => m.logits(hidden),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

impl Denoiser for Model {
    fn logits(&mut self, ids: &Tensor, rows: &[u32]) -> candle_core::Result<Tensor> {
        let hidden = self.hidden(ids)?;
        let rows = Tensor::from_slice(rows, rows.len(), &self.device)?;
        self.head(&hidden.index_select(&rows, 1)?)
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

/// Safetensors weights, memory-mapped, not yet converted to a dtype.
pub struct Weights {
    tensors: MmapedSafetensors,
}

impl Weights {
    pub fn open(paths: &[PathBuf]) -> Result<Weights> {
        for path in paths {
            // Open one by one first so the error names the broken file.
            // SAFETY: the files are opened read-only and dcoder never writes them while mapped;
            // like every mmap user we rely on no other process truncating them meanwhile.
            #[allow(unsafe_code)]
            unsafe { MmapedSafetensors::new(path) }.with_context(|| {
                format!("{}: not a readable safetensors file (truncated or corrupt?); delete it and download it again", path.display())
            })?;
        }
        // SAFETY: as above.
        #[allow(unsafe_code)]
        let tensors = unsafe { MmapedSafetensors::multi(paths) }.context("opening the weights")?;
        Ok(Weights { tensors })
    }

    /// Number of weight elements, to size memory before converting.
    pub fn elements(&self) -> usize {
        self.tensors
            .tensors()
            .iter()
            .map(|(_, view)| view.shape().iter().product::<usize>())
            .sum()
    }

    /// A builder converting tensors to `dtype` on `device` as the model asks for them.
    pub fn var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.tensors), dtype, device.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_errors_name_the_key() {
        let err = Config::parse(Arch::Llada, &json!({"d_model": 8}))
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("n_heads") || err.contains("missing field"),
            "{err}"
        );
        let err = Config::parse(
            Arch::Llada,
            &json!({"d_model": 8, "n_heads": 2, "n_layers": 1, "vocab_size": 4, "alibi": true}),
        )
        .expect_err("must fail")
        .to_string();
        assert!(err.contains("alibi"), "{err}");
    }

    #[test]
    fn denoiser_returns_logits_of_requested_rows_only() -> anyhow::Result<()> {
        let cfg = Config::parse(
            Arch::Llada,
            &json!({"d_model": 8, "n_heads": 2, "n_layers": 1, "vocab_size": 5, "mlp_hidden_size": 8}),
        )?;
        let mut model = Model::new(&cfg, VarBuilder::zeros(DType::F32, &Device::Cpu))?;
        let ids = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu)?;
        assert_eq!(model.logits(&ids, &[1, 3])?.dims(), &[1, 2, 5]);
        Ok(())
    }
}
