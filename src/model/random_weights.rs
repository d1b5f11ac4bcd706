//! Random weights for any architecture, for `dcoder bench --random`: every tensor the model asks
//! for is drawn on the spot (uniform with std 0.02, norm weights 1), so a real shape can be timed
//! without a checkpoint.

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

/// Standard deviation of the random weights, as HF initialisers use.
const STD: f64 = 0.02;

struct RandomWeights;

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if name.ends_with("norm.weight") || name.ends_with("ln_f.weight") {
            return Tensor::ones(shape, dtype, dev);
        }
        // U(-a, a) has std a / sqrt(3); uniform draws are several times cheaper than normal ones.
        let a = STD * 3f64.sqrt();
        Tensor::rand(-a as f32, a as f32, shape, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("random weights have no fixed shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// A builder that hands out fresh random tensors of `dtype` on `device`.
pub fn random_var_builder(dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomWeights), dtype, device.clone())
}
