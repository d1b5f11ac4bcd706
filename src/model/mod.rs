//! The networks dcoder runs, and their loading from config.json + safetensors.
//!
//! Each architecture lives in its own file in the candle-transformers shape (`Config` with HF
//! key names, `new(cfg, vb)`, its tensor names); the mechanics they share are `layer` (the
//! pre-norm decoder layer and its SwiGLU MLP), `attention`, `norm`, `rotary`, and `stack` (the
//! assembled network each of them builds). [`Model`]
//! wraps whichever network a checkpoint holds and is the engine's [`Denoiser`].

pub mod amx_matmul;
pub mod attention;
pub mod bf16_matmul;
mod block_decode;
pub mod denoiser;
pub mod kv_cache;
pub mod layer;
pub mod linear;
pub mod llada;
pub mod llada2_moe;
pub mod llada_moe;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod quant_kernel;
pub mod quant_matmul;
pub mod qwen;
pub mod random_weights;
pub mod rotary;
pub mod stack;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

pub use denoiser::{Denoiser, Pass};
pub use kv_cache::CacheOp;
use kv_cache::LayerCache;
use linear::{QuantizedWeights, WeightFormat};

/// The network bodies dcoder implements; every architecture runs on one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// LLaDA's OLMo-named LLaMA body (`llada.rs`).
    Llada,
    /// The Qwen2/Qwen3 body (`qwen.rs`): Dream, block diffusion.
    Qwen,
    /// LLaDA2's mixture-of-experts body (`llada2_moe.rs`).
    Llada2Moe,
    /// LLaDA-MoE's mixture-of-experts body (`llada_moe.rs`).
    LladaMoe,
}

/// A parsed config.json.
#[derive(Debug, Clone, PartialEq)]
pub enum Config {
    Llada(llada::Config),
    Qwen(qwen::Config),
    Llada2Moe(llada2_moe::Config),
    LladaMoe(llada_moe::Config),
}

impl Config {
    /// Parses and checks `json` as a config of `body`; the error names the offending key.
    pub fn parse(body: Body, json: &Value) -> Result<Config> {
        match body {
            Body::Llada => {
                let cfg: llada::Config =
                    serde_json::from_value(json.clone()).map_err(|e| anyhow!("{e}"))?;
                cfg.validate().map_err(|e| anyhow!(e))?;
                Ok(Config::Llada(cfg))
            }
            Body::Qwen => {
                let cfg: qwen::Config =
                    serde_json::from_value(json.clone()).map_err(|e| anyhow!("{e}"))?;
                cfg.validate().map_err(|e| anyhow!(e))?;
                Ok(Config::Qwen(cfg))
            }
            Body::Llada2Moe => {
                let cfg: llada2_moe::Config =
                    serde_json::from_value(json.clone()).map_err(|e| anyhow!("{e}"))?;
                cfg.validate().map_err(|e| anyhow!(e))?;
                Ok(Config::Llada2Moe(cfg))
            }
            Body::LladaMoe => {
                let cfg: llada_moe::Config =
                    serde_json::from_value(json.clone()).map_err(|e| anyhow!("{e}"))?;
                cfg.validate().map_err(|e| anyhow!(e))?;
                Ok(Config::LladaMoe(cfg))
            }
        }
    }

    /// The body this config describes.
    pub fn body(&self) -> Body {
        match self {
            Config::Llada(_) => Body::Llada,
            Config::Qwen(_) => Body::Qwen,
            Config::Llada2Moe(_) => Body::Llada2Moe,
            Config::LladaMoe(_) => Body::LladaMoe,
        }
    }

    /// Rows of the LM head: logits per position.
    pub fn vocab_size(&self) -> usize {
        match self {
            Config::Llada(c) => c.embedding_rows(),
            Config::Qwen(c) => c.vocab_size,
            Config::Llada2Moe(c) => c.vocab_size,
            Config::LladaMoe(c) => c.vocab_size,
        }
    }

    /// Number of weights.
    pub fn parameters(&self) -> usize {
        match self {
            Config::Llada(c) => c.parameters(),
            Config::Qwen(c) => c.parameters(),
            Config::Llada2Moe(c) => c.parameters(),
            Config::LladaMoe(c) => c.parameters(),
        }
    }

    /// Longest prompt + canvas the model was trained for.
    pub fn max_positions(&self) -> usize {
        match self {
            Config::Llada(c) => c.max_sequence_length,
            Config::Qwen(c) => c.max_position_embeddings,
            Config::Llada2Moe(c) => c.max_position_embeddings,
            Config::LladaMoe(c) => c.max_position_embeddings,
        }
    }
}

enum Network {
    Llada(llada::Model),
    Qwen(qwen::Model),
    Llada2Moe(llada2_moe::Model),
    LladaMoe(llada_moe::Model),
}

/// How a model's numbers are stored and computed on a device.
#[derive(Debug, Clone)]
pub struct Precision {
    /// Activations (and the small weights: norms, biases).
    pub activations: DType,
    /// Matmul weights and the embedding table.
    pub weights: WeightFormat,
    /// What reports call the weights when not the dtype (a GGUF file's types: "q8_0").
    pub label: Option<&'static str>,
}

impl Precision {
    /// `dtype` on `device`. bf16 on a CPU with AVX512-BF16 means bf16 weights in dcoder's own
    /// kernel with f32 activations: twice f32's speed and half its memory, where candle's CPU
    /// bf16 would be slower than f32.
    pub fn new(dtype: DType, device: &Device) -> Precision {
        match dtype {
            DType::BF16 if device.is_cpu() && bf16_matmul::available() => Precision {
                activations: DType::F32,
                weights: WeightFormat::PackedBf16,
                label: None,
            },
            _ => Precision {
                activations: dtype,
                weights: WeightFormat::Dense,
                label: None,
            },
        }
    }

    /// A GGUF file's weights as stored (f32 activations); `label` names its types.
    pub fn quantized(source: Arc<dyn QuantizedWeights>, label: &'static str) -> Precision {
        Precision {
            activations: DType::F32,
            weights: WeightFormat::Quantized(source),
            label: Some(label),
        }
    }

    /// The CPU kernel the matmuls take (`WeightFormat::kernel`).
    pub fn kernel(&self) -> &'static str {
        self.weights.kernel(self.label)
    }

    /// The dtype reports name: the weights'.
    pub fn name(&self) -> &'static str {
        match (&self.weights, self.label) {
            (_, Some(label)) => label,
            (WeightFormat::PackedBf16, None) => "bf16",
            (_, None) => self.activations.as_str(),
        }
    }
}

/// A network on a device, with its KV cache.
pub struct Model {
    network: Network,
    device: Device,
    precision: Precision,
    vocab: usize,
    cache: Vec<LayerCache>,
}

impl Model {
    /// Builds the network of `config` from `vb` (checkpoint or random weights), whose dtype
    /// must be `precision.activations`.
    pub fn new(config: &Config, vb: VarBuilder, precision: Precision) -> candle_core::Result<Self> {
        let device = vb.device().clone();
        let format = &precision.weights;
        let network = match config {
            Config::Llada(c) => Network::Llada(llada::Model::new(c, vb, format)?),
            Config::Qwen(c) => Network::Qwen(qwen::Model::new(c, vb, format)?),
            Config::Llada2Moe(c) => Network::Llada2Moe(llada2_moe::Model::new(c, vb, format)?),
            Config::LladaMoe(c) => Network::LladaMoe(llada_moe::Model::new(c, vb, format)?),
        };
        let layers = match &network {
            Network::Llada(m) => m.layers(),
            Network::Qwen(m) => m.layers(),
            Network::Llada2Moe(m) => m.layers(),
            Network::LladaMoe(m) => m.layers(),
        };
        Ok(Self {
            network,
            device,
            precision,
            vocab: config.vocab_size(),
            cache: vec![LayerCache::default(); layers],
        })
    }

    /// Final-norm hidden states `[batch, n, hidden]` of a pass.
    pub fn hidden(&mut self, pass: &Pass) -> candle_core::Result<Tensor> {
        let (network, cache) = (&self.network, &mut self.cache);
        on_pool(&self.device, || match network {
            Network::Llada(m) => m.hidden(pass, cache),
            Network::Qwen(m) => m.hidden(pass, cache),
            Network::Llada2Moe(m) => m.hidden(pass, cache),
            Network::LladaMoe(m) => m.hidden(pass, cache),
        })
    }

    /// LM-head logits of hidden states `[batch, rows, hidden]`.
    pub fn head(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        on_pool(&self.device, || match &self.network {
            Network::Llada(m) => m.logits(hidden),
            Network::Qwen(m) => m.logits(hidden),
            Network::Llada2Moe(m) => m.logits(hidden),
            Network::LladaMoe(m) => m.logits(hidden),
        })
    }

    pub fn precision(&self) -> &Precision {
        &self.precision
    }

    /// Each layer's routing of an uncached `pass` in a mixture-of-experts network (`None`
    /// for a dense layer), for tests that compare the router's choices with the reference's.
    #[cfg(test)]
    pub fn routes(&self, pass: &Pass) -> candle_core::Result<Vec<Option<stack::LayerRoutes>>> {
        match &self.network {
            Network::Llada(m) => m.routes(pass),
            Network::Qwen(m) => m.routes(pass),
            Network::Llada2Moe(m) => m.routes(pass),
            Network::LladaMoe(m) => m.routes(pass),
        }
    }
}

/// Runs a CPU forward on a thread of rayon's pool. Every parallel product and element-wise op
/// of a forward (candle's CPU ops, dcoder's kernels) is a rayon job; called from outside the
/// pool, each is handed to a worker and the caller sleeps until it is done, hundreds of
/// wake-ups per forward. Inside the pool they run on the worker without that hand-off: on one
/// thread a 32-row Q8_0 step of the Qwen3-0.6B shape measured 0.18-0.20 s against 0.23-0.24 s,
/// 4 rows 0.076-0.082 against 0.090-0.094 (`docs/benchmarks.md`, section 8.11).
fn on_pool<R: Send>(device: &Device, forward: impl FnOnce() -> R + Send) -> R {
    match device.is_cpu() {
        true => rayon::scope(|_| forward()),
        false => forward(),
    }
}

impl Denoiser for Model {
    fn forward(&mut self, pass: &Pass, rows: &[u32]) -> candle_core::Result<Tensor> {
        let hidden = self.hidden(pass)?;
        let rows = Tensor::from_slice(rows, rows.len(), &self.device)?;
        self.head(&hidden.index_select(&rows, 1)?)
    }

    fn truncate_cache(&mut self, len: usize) {
        self.cache.iter_mut().for_each(|c| c.truncate(len));
    }

    fn clear_cache(&mut self) {
        self.cache.iter_mut().for_each(LayerCache::clear);
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
        let err = Config::parse(Body::Llada, &json!({"d_model": 8}))
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("n_heads") || err.contains("missing field"),
            "{err}"
        );
        let err = Config::parse(
            Body::Llada,
            &json!({"d_model": 8, "n_heads": 2, "n_layers": 1, "vocab_size": 4, "alibi": true}),
        )
        .expect_err("must fail")
        .to_string();
        assert!(err.contains("alibi"), "{err}");
    }

    #[test]
    fn denoiser_returns_logits_of_requested_rows_only() -> anyhow::Result<()> {
        let cfg = Config::parse(
            Body::Llada,
            &json!({"d_model": 8, "n_heads": 2, "n_layers": 1, "vocab_size": 5, "mlp_hidden_size": 8}),
        )?;
        let precision = Precision::new(DType::F32, &Device::Cpu);
        let mut model = Model::new(&cfg, VarBuilder::zeros(DType::F32, &Device::Cpu), precision)?;
        let ids = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu)?;
        assert_eq!(
            model
                .forward(&Pass::full(&ids, &[0, 1, 2, 3]), &[1, 3])?
                .dims(),
            &[1, 2, 5]
        );
        Ok(())
    }
}
