//! Per-position decisions: the token a masked position would take and the sampler's confidence
//! in it. Pure maths over rows of logits; the denoising loop that uses them is `diffusion.rs`.
//!
//! LLaDA's rule (reference-spec 1.6 d-g, `generate.py` of ML-GSAI/LLaDA):
//! - the token is `argmax(logits)` at temperature 0, else the Gumbel-max sample
//!   `argmax(exp(l) / (-ln u)^T)` computed in float64;
//! - the confidence is `softmax(logits)[token]` of the **un-noised** logits (`low_confidence`), or
//!   a uniform draw (`random`).
//!
//! Greedy rows are reduced on the device (argmax, log-sum-exp, gather), so only two numbers per
//! row ever reach the host; a temperature above 0 needs the rows on the host for the float64
//! Gumbel draw.

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};
use rand::Rng;

use crate::diffusion::Strategy;

/// What one masked position would become.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub token: u32,
    pub confidence: f32,
}

/// LLaDA's decision rule for one step.
pub struct LladaRule<'a> {
    pub temperature: f64,
    pub strategy: Strategy,
    /// Added to the logits before anything else: `-inf` at EOS for `--suppress-eos`
    /// (`logits_eos_inf`).
    pub logit_bias: Option<&'a Tensor>,
    /// Added to the logits after the token is chosen, before the confidence softmax
    /// (`--eos-last`, see [`eos_last_ids`]).
    pub confidence_bias: Option<&'a Tensor>,
}

/// The ids that `confidence_eos_eot_inf` sets to `-inf` in the logits behind the confidence.
///
/// The reference writes `logits_with_noise[..., EOS] = logits[..., EOT] = -inf` after choosing the
/// tokens. Python assigns a chained target left to right, so the noisy copy loses EOS and the
/// clean logits lose EOT; at temperature 0 both names are the same tensor, so the clean logits
/// lose both (reference-spec 1.6f). The confidence softmax reads the clean logits: a position
/// whose choice is EOT (or, greedy, EOS) gets confidence 0 and is revealed last, and every other
/// confidence is renormalised without those tokens.
pub fn eos_last_ids(eos: u32, eot: Option<u32>, temperature: f64) -> Vec<u32> {
    let mut ids: Vec<u32> = eot.into_iter().collect();
    if temperature == 0.0 && !ids.contains(&eos) {
        ids.push(eos);
    }
    ids
}

/// A `[vocab]` row of zeros with `-inf` at `ids`, to add to logits rows.
pub fn neg_inf_bias(ids: &[u32], vocab: usize, device: &Device) -> Result<Tensor> {
    let mut row = vec![0f32; vocab];
    for &id in ids {
        if let Some(v) = row.get_mut(id as usize) {
            *v = f32::NEG_INFINITY;
        }
    }
    Tensor::from_vec(row, vocab, device)
}

impl LladaRule<'_> {
    /// Decides every row of `logits` (`[rows, vocab]`).
    pub fn decide(&self, logits: &Tensor, rng: &mut impl Rng) -> Result<Vec<Decision>> {
        let logits = logits.to_dtype(DType::F32)?;
        let logits = match self.logit_bias {
            Some(bias) => logits.broadcast_add(bias)?,
            None => logits,
        };
        let tokens = if self.temperature == 0.0 {
            logits.argmax_keepdim(D::Minus1)?
        } else {
            let rows = logits.to_vec2::<f32>()?;
            let chosen: Vec<u32> = rows
                .iter()
                .map(|row| gumbel_argmax(row, self.temperature, rng))
                .collect();
            Tensor::from_vec(chosen, (rows.len(), 1), logits.device())?
        };
        let token_ids: Vec<u32> = tokens.flatten_all()?.to_vec1()?;
        let confidences: Vec<f32> = match self.strategy {
            Strategy::Random => token_ids.iter().map(|_| rng.random::<f32>()).collect(),
            Strategy::Confidence => {
                let scored = match self.confidence_bias {
                    Some(bias) => logits.broadcast_add(bias)?,
                    None => logits,
                };
                probability_of(&scored, &tokens)?.to_vec1()?
            }
        };
        Ok(token_ids
            .into_iter()
            .zip(confidences)
            .map(|(token, confidence)| Decision { token, confidence })
            .collect())
    }
}

/// `softmax(logits)[token]` per row, as `exp(l[token] - logsumexp(l))`: one pass for the max,
/// one for the sum, no `[rows, vocab]` probability tensor kept.
pub fn probability_of(logits: &Tensor, tokens: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    let sum = logits.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?;
    let log_z = (max + sum.log()?)?;
    let chosen = logits.gather(tokens, D::Minus1)?;
    (chosen - log_z)?.exp()?.i((.., 0))
}

/// Gumbel-max sampling from `softmax(row / T)` the way LLaDA's `add_gumbel_noise` does it:
/// `argmax(exp(l) / (-ln u)^T)` with `u ~ U[0, 1)` in float64. Taking logs gives the same argmax
/// as `l - T ln(-ln u)` without overflowing `exp` for large logits.
fn gumbel_argmax(row: &[f32], temperature: f64, rng: &mut impl Rng) -> u32 {
    let mut best = (f64::NEG_INFINITY, 0usize);
    for (i, &l) in row.iter().enumerate() {
        let u: f64 = rng.random();
        let score = f64::from(l) - temperature * (-u.ln()).ln();
        if score > best.0 {
            best = (score, i);
        }
    }
    best.1 as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn rule(strategy: Strategy) -> LladaRule<'static> {
        LladaRule {
            temperature: 0.0,
            strategy,
            logit_bias: None,
            confidence_bias: None,
        }
    }

    #[test]
    fn greedy_picks_argmax_with_its_softmax_probability() -> anyhow::Result<()> {
        let logits = Tensor::new(
            &[[0.1f32, 0.2, 0.3, 0.4], [2.0, 0.0, 0.0, 0.0]],
            &Device::Cpu,
        )?;
        let d = rule(Strategy::Confidence).decide(&logits, &mut StdRng::seed_from_u64(0))?;
        assert_eq!(d[0].token, 3);
        assert_eq!(d[1].token, 0);
        let z: f32 = [0.1f32, 0.2, 0.3, 0.4].iter().map(|l| l.exp()).sum();
        assert!((d[0].confidence - 0.4f32.exp() / z).abs() < 1e-6);
        let z1 = 2f32.exp() + 3.0;
        assert!((d[1].confidence - 2f32.exp() / z1).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn ties_go_to_the_lowest_index() -> anyhow::Result<()> {
        let logits = Tensor::new(&[[1f32, 3.0, 3.0, 0.0]], &Device::Cpu)?;
        let d = rule(Strategy::Confidence).decide(&logits, &mut StdRng::seed_from_u64(0))?;
        assert_eq!(d[0].token, 1);
        Ok(())
    }

    #[test]
    fn logit_bias_removes_a_token_from_choice_and_softmax() -> anyhow::Result<()> {
        let logits = Tensor::new(&[[5f32, 1.0, 1.0]], &Device::Cpu)?;
        let bias = neg_inf_bias(&[0], 3, &Device::Cpu)?;
        let r = LladaRule {
            logit_bias: Some(&bias),
            ..rule(Strategy::Confidence)
        };
        let d = r.decide(&logits, &mut StdRng::seed_from_u64(0))?;
        assert_eq!(d[0].token, 1);
        assert!((d[0].confidence - 0.5).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn confidence_bias_zeroes_a_chosen_token_and_renormalises_others() -> anyhow::Result<()> {
        let logits = Tensor::new(&[[5f32, 1.0, 0.0], [0.0, 2.0, 2.0]], &Device::Cpu)?;
        let bias = neg_inf_bias(&[0], 3, &Device::Cpu)?;
        let r = LladaRule {
            confidence_bias: Some(&bias),
            ..rule(Strategy::Confidence)
        };
        let d = r.decide(&logits, &mut StdRng::seed_from_u64(0))?;
        assert_eq!((d[0].token, d[0].confidence), (0, 0.0));
        assert_eq!(d[1].token, 1);
        assert!(
            (d[1].confidence - 0.5).abs() < 1e-6,
            "token 0 left the softmax"
        );
        Ok(())
    }

    #[test]
    fn eos_last_follows_the_reference_chained_assignment() {
        assert_eq!(eos_last_ids(10, Some(20), 0.0), vec![20, 10]);
        assert_eq!(eos_last_ids(10, Some(20), 0.7), vec![20]);
        assert_eq!(eos_last_ids(10, None, 0.0), vec![10]);
    }

    #[test]
    fn sampling_is_seeded_and_follows_the_distribution() -> anyhow::Result<()> {
        // p = softmax([0, ln 3]) = [0.25, 0.75]
        let logits = Tensor::new(&[[0f32, 3f32.ln()]], &Device::Cpu)?;
        let r = LladaRule {
            temperature: 1.0,
            ..rule(Strategy::Confidence)
        };
        let draw = |seed| -> anyhow::Result<Vec<u32>> {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..2000)
                .map(|_| Ok(r.decide(&logits, &mut rng)?[0].token))
                .collect()
        };
        let a = draw(1)?;
        assert_eq!(a, draw(1)?, "same seed, same draws");
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.04, "frequency {ones}");
        Ok(())
    }

    #[test]
    fn random_strategy_draws_confidences_in_unit_interval() -> anyhow::Result<()> {
        let logits = Tensor::new(&[[0f32, 1.0], [1.0, 0.0]], &Device::Cpu)?;
        let d = rule(Strategy::Random).decide(&logits, &mut StdRng::seed_from_u64(3))?;
        assert!(d.iter().all(|x| (0.0..1.0).contains(&x.confidence)));
        assert_eq!((d[0].token, d[1].token), (1, 0));
        Ok(())
    }
}
