//! Per-position decisions: the token a masked position would take and the sampler's confidence
//! in it. Pure maths over rows of logits; the drivers beside this file use them.
//!
//! Two families of rules, chosen by the architecture:
//!
//! **LLaDA** (`generate.py` of ML-GSAI/LLaDA, `generate()` and `get_num_transfer_tokens`): the token is
//! `argmax(logits)` at temperature 0, else the Gumbel-max sample `argmax(exp(l) / (-ln u)^T)`
//! in float64; the confidence is `softmax(logits)[token]` of the **un-noised** logits
//! (`low_confidence`) or a uniform draw (`random`).
//!
//! **Dream** (`sample_tokens` in DreamLM/Dream's `src/diffuser/generation_utils.py`): logits
//! divided by the temperature, then top-p, then top-k (removed entries get `finfo.min`, so they
//! get probability 0), then `softmax`; the token is sampled (temperature > 0) or the argmax; the
//! confidence is its probability (`maskgit_plus`), the top-1 minus top-2 probability
//! (`topk_margin`) or the negative entropy `Σ p log(p + 1e-10)` (`entropy`).
//!
//! Greedy LLaDA rows are reduced on the device (argmax, log-sum-exp, gather), so only two
//! numbers per row reach the host. Sampling and Dream's filters need the rows on the host.

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How a step ranks the masked positions it may reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Most confident first: the chosen token's probability (LLaDA `low_confidence`, Dream
    /// `maskgit_plus`).
    Confidence,
    /// Random order (LLaDA `random`).
    Random,
    /// Largest gap between the two most likely tokens first (Dream `topk_margin`).
    Margin,
    /// Lowest entropy first (Dream `entropy`).
    Entropy,
    /// Each masked position is revealed with probability `1 - s/t` (Dream `origin`).
    Origin,
}

/// How a position's token and confidence are decided: the plan's choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DecisionRule {
    /// LLaDA's `generate()`: argmax or float64 Gumbel-max, softmax confidence.
    Llada {
        strategy: Strategy,
        temperature: f64,
    },
    /// Dream's `sample_tokens`: temperature, top-p, top-k, then the strategy's confidence.
    Dream {
        strategy: Strategy,
        temperature: f64,
        top_p: Option<f64>,
        top_k: Option<usize>,
    },
    /// LLaDA2's `_sample_with_temperature_topk_topp` (inclusionAI's `modeling_llada2_moe.py`):
    /// at temperature 0 the argmax and its softmax probability, the filters ignored (LLaDA's
    /// greedy rule); above 0 `logits / T`, top-k, then top-p, one multinomial draw, and the
    /// drawn token's probability under that filtered distribution as its confidence.
    Llada2 {
        temperature: f64,
        top_p: Option<f64>,
        top_k: Option<usize>,
    },
}

impl DecisionRule {
    pub fn strategy(&self) -> Strategy {
        match *self {
            DecisionRule::Llada { strategy, .. } | DecisionRule::Dream { strategy, .. } => strategy,
            DecisionRule::Llada2 { .. } => Strategy::Confidence,
        }
    }

    pub fn temperature(&self) -> f64 {
        match *self {
            DecisionRule::Llada { temperature, .. }
            | DecisionRule::Dream { temperature, .. }
            | DecisionRule::Llada2 { temperature, .. } => temperature,
        }
    }

    /// The rule with its biases, ready to decide rows of logits.
    pub fn with_biases<'a>(
        &self,
        logit_bias: Option<&'a Tensor>,
        confidence_bias: Option<&'a Tensor>,
    ) -> Rule<'a> {
        let llada = |strategy, temperature| {
            Rule::Llada(LladaRule {
                temperature,
                strategy,
                logit_bias,
                confidence_bias,
            })
        };
        let dream = |strategy, temperature, top_p, top_k, top_k_first| {
            Rule::Dream(DreamRule {
                temperature,
                top_p,
                top_k,
                top_k_first,
                strategy,
                logit_bias,
            })
        };
        match *self {
            DecisionRule::Llada {
                strategy,
                temperature,
            } => llada(strategy, temperature),
            DecisionRule::Dream {
                strategy,
                temperature,
                top_p,
                top_k,
            } => dream(strategy, temperature, top_p, top_k, false),
            // LLaDA2 at temperature 0 is LLaDA's greedy rule; above it, the filters top-k first.
            DecisionRule::Llada2 { temperature, .. } if temperature == 0.0 => {
                llada(Strategy::Confidence, temperature)
            }
            DecisionRule::Llada2 {
                temperature,
                top_p,
                top_k,
            } => dream(Strategy::Confidence, temperature, top_p, top_k, true),
        }
    }
}

/// A family's decision rule with its biases, built once per run.
pub enum Rule<'a> {
    Llada(LladaRule<'a>),
    Dream(DreamRule<'a>),
}

impl Rule<'_> {
    pub fn decide(&self, logits: &Tensor, rng: &mut impl Rng) -> Result<Vec<Decision>> {
        match self {
            Rule::Llada(r) => r.decide(logits, rng),
            Rule::Dream(r) => r.decide(logits, rng),
        }
    }

    /// The bias added to the logits before anything else (`--suppress-eos`).
    pub fn logit_bias(&self) -> Option<&Tensor> {
        match self {
            Rule::Llada(r) => r.logit_bias,
            Rule::Dream(r) => r.logit_bias,
        }
    }
}

/// What one masked position would become.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub token: u32,
    pub confidence: f32,
}

/// The ids that `confidence_eos_eot_inf` sets to `-inf` in the logits behind the confidence.
///
/// The reference writes `logits_with_noise[..., EOS] = logits[..., EOT] = -inf` after choosing the
/// tokens. Python assigns a chained target left to right, so the noisy copy loses EOS and the
/// clean logits lose EOT; at temperature 0 both names are the same tensor, so the clean logits
/// lose both (LLaDA `generate.py`). The confidence softmax reads the clean logits: a position
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

impl LladaRule<'_> {
    /// Decides every row of `logits` (`[rows, vocab]`).
    pub fn decide(&self, logits: &Tensor, rng: &mut impl Rng) -> Result<Vec<Decision>> {
        let logits = with_bias(&logits.to_dtype(DType::F32)?, self.logit_bias)?;
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
            _ => probability_of(&with_bias(&logits, self.confidence_bias)?, &tokens)?.to_vec1()?,
        };
        Ok(token_ids
            .into_iter()
            .zip(confidences)
            .map(|(token, confidence)| Decision { token, confidence })
            .collect())
    }
}

fn with_bias(logits: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(bias) => logits.broadcast_add(bias),
        None => Ok(logits.clone()),
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

/// The entropy `-Σ p ln p` of `softmax(logits / T)` per row (`logits / 1` when greedy), after
/// `bias`: the EB-sampler's measure of how settled a position is (JET
/// `engine/scheduler.py::postprocess_loop`). Reduced on the device; a
/// token the bias removed (`-inf`) contributes nothing.
pub fn entropies(logits: &Tensor, temperature: f64, bias: Option<&Tensor>) -> Result<Vec<f32>> {
    let logits = with_bias(&logits.to_dtype(DType::F32)?, bias)?;
    let scaled = match temperature > 0.0 {
        true => (logits / temperature)?,
        false => logits,
    };
    // -inf would give 0 * -inf = NaN below; a very negative finite logit gives p = 0 exactly.
    let scaled = scaled.maximum(-1e30f32)?;
    let max = scaled.max_keepdim(D::Minus1)?;
    let shifted = scaled.broadcast_sub(&max)?;
    let exp = shifted.exp()?;
    let z = exp.sum_keepdim(D::Minus1)?;
    // H = ln z - Σ e_i x_i / z with x = l - max: one pass, no log of each probability.
    let weighted = (&exp * &shifted)?.sum_keepdim(D::Minus1)?;
    let h = (z.log()? - (weighted / &z)?)?;
    h.flatten_all()?.to_vec1()
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

/// Dream's decision rule for one step (`sample_tokens`).
pub struct DreamRule<'a> {
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    /// Top-k before top-p (LLaDA2's order); Dream applies top-p first.
    pub top_k_first: bool,
    pub strategy: Strategy,
    /// `-inf` at EOS for `--suppress-eos`.
    pub logit_bias: Option<&'a Tensor>,
}

impl DreamRule<'_> {
    /// Decides every row of `logits` (`[rows, vocab]`).
    pub fn decide(&self, logits: &Tensor, rng: &mut impl Rng) -> Result<Vec<Decision>> {
        let logits = with_bias(&logits.to_dtype(DType::F32)?, self.logit_bias)?;
        let filtered = self.top_p.is_some_and(|p| p < 1.0) || self.top_k.is_some();
        if self.temperature == 0.0 && !filtered {
            return self.decide_greedy(&logits);
        }
        let rows = logits.to_vec2::<f32>()?;
        Ok(rows.iter().map(|row| self.decide_row(row, rng)).collect())
    }

    /// Greedy and unfiltered, reduced on the device: argmax, log-sum-exp, and the confidence
    /// (probability, top-1 minus top-2, or negative entropy) per row.
    fn decide_greedy(&self, logits: &Tensor) -> Result<Vec<Decision>> {
        let tokens = logits.argmax_keepdim(D::Minus1)?;
        let max = logits.max_keepdim(D::Minus1)?;
        let log_z = (&max
            + logits
                .broadcast_sub(&max)?
                .exp()?
                .sum_keepdim(D::Minus1)?
                .log()?)?;
        let confidence = match self.strategy {
            Strategy::Margin => {
                let vocab = logits.dim(D::Minus1)? as u32;
                let ids = Tensor::arange(0u32, vocab, logits.device())?;
                let top = tokens.broadcast_eq(&ids.unsqueeze(0)?)?;
                let rest = top.where_cond(
                    &Tensor::full(f32::NEG_INFINITY, logits.shape(), logits.device())?,
                    logits,
                )?;
                let second = rest.max_keepdim(D::Minus1)?;
                (max.broadcast_sub(&log_z)?.exp()? - second.broadcast_sub(&log_z)?.exp()?)?
            }
            Strategy::Entropy => {
                let p = logits.broadcast_sub(&log_z)?.exp()?;
                (&p * (&p + 1e-10)?.log()?)?.sum_keepdim(D::Minus1)?
            }
            _ => max.broadcast_sub(&log_z)?.exp()?,
        };
        let tokens: Vec<u32> = tokens.flatten_all()?.to_vec1()?;
        let confidence: Vec<f32> = confidence.flatten_all()?.to_vec1()?;
        Ok(tokens
            .into_iter()
            .zip(confidence)
            .map(|(token, confidence)| Decision { token, confidence })
            .collect())
    }

    fn decide_row(&self, row: &[f32], rng: &mut impl Rng) -> Decision {
        // 1. temperature, in f32 as `logits / temperature`.
        let t = self.temperature as f32;
        let scaled: Vec<f32> = if t > 0.0 {
            row.iter().map(|&l| l / t).collect()
        } else {
            row.to_vec()
        };
        // 2-3. top-p then top-k (Dream), or top-k then top-p (LLaDA2): the surviving ids (all
        // of them without filters). torch keeps every logit >= the k-th largest, so ties at the
        // top-k cut stay; top-p's softmax is over what survived before it.
        let top_p = |kept: Vec<usize>| match self.top_p.filter(|&p| p < 1.0) {
            Some(p) => {
                let sub: Vec<f32> = kept.iter().map(|&i| scaled[i]).collect();
                top_p_ids(&sub, p).into_iter().map(|j| kept[j]).collect()
            }
            None => kept,
        };
        let top_k = |mut kept: Vec<usize>| {
            if let Some(k) = self.top_k.filter(|&k| k > 0 && k < kept.len()) {
                let mut values: Vec<f32> = kept.iter().map(|&i| scaled[i]).collect();
                let (_, cut, _) = values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                let cut = *cut;
                kept.retain(|&i| scaled[i] >= cut);
            }
            kept
        };
        let all: Vec<usize> = (0..scaled.len()).collect();
        let kept = match self.top_k_first {
            true => top_p(top_k(all)),
            false => top_k(top_p(all)),
        };
        // 4. softmax over the survivors (the removed ones have probability 0).
        let max = kept
            .iter()
            .map(|&i| scaled[i])
            .fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = kept.iter().map(|&i| (scaled[i] - max).exp()).collect();
        let z: f32 = exps.iter().sum();
        let probs: Vec<f32> = exps.iter().map(|e| e / z).collect();
        // 5. the token: sampled, or the first (lowest id) of the most likely.
        let best = (0..kept.len())
            .max_by(|&a, &b| probs[a].total_cmp(&probs[b]).then(kept[b].cmp(&kept[a])));
        let best = best.unwrap_or(0);
        let pick = if t > 0.0 {
            sample_index(&probs, rng)
        } else {
            best
        };
        let confidence = match self.strategy {
            Strategy::Margin => {
                let second = (0..probs.len())
                    .filter(|&i| i != best)
                    .map(|i| probs[i])
                    .fold(0.0, f32::max);
                probs[best] - second
            }
            Strategy::Entropy => probs.iter().map(|&p| p * (p + 1e-10).ln()).sum(),
            _ => probs[pick],
        };
        Decision {
            token: kept[pick] as u32,
            confidence,
        }
    }
}

/// `ids` ordered by descending logit, ties by ascending id (torch's stable sort order).
fn sorted_ids(logits: &[f32], mut ids: Vec<usize>) -> Vec<usize> {
    ids.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    ids
}

/// The ids top-p keeps, highest first: sorted by logit, token `j` stays when `j == 0` or the
/// cumulative probability before it is at most `p` (Dream's `top_p_logits`: remove where
/// `cumsum > p`, shifted right by one). Only the head of the distribution is sorted: the
/// candidates are the ids above a cut whose mass already exceeds `p`.
fn top_p_ids(logits: &[f32], p: f64) -> Vec<usize> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let z: f64 = exps.iter().sum();
    let mut cut = 0.5;
    let candidates = loop {
        let ids: Vec<usize> = (0..logits.len()).filter(|&i| exps[i] >= cut).collect();
        let mass: f64 = ids.iter().map(|&i| exps[i]).sum::<f64>() / z;
        if mass > p || cut < 1e-30 {
            break ids;
        }
        cut *= 0.125;
    };
    let sorted = sorted_ids(logits, candidates);
    let mut cum = 0.0;
    let mut kept = Vec::new();
    for i in sorted {
        if !kept.is_empty() && cum > p {
            break;
        }
        cum += exps[i] / z;
        kept.push(i);
    }
    kept
}

/// An index drawn with probability `probs[i]`.
fn sample_index(probs: &[f32], rng: &mut impl Rng) -> usize {
    let total: f32 = probs.iter().sum();
    let mut u = rng.random::<f32>() * total;
    for (i, &p) in probs.iter().enumerate() {
        if u < p {
            return i;
        }
        u -= p;
    }
    probs.iter().rposition(|&p| p > 0.0).unwrap_or(0)
}

/// `k` of `weights`' indices drawn without replacement, each draw proportional to the weights
/// left (`torch.multinomial(..., replacement=False)`).
pub fn draw_without_replacement(weights: &[f64], k: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut w = weights.to_vec();
    let mut chosen = Vec::with_capacity(k);
    for _ in 0..k.min(w.len()) {
        let total: f64 = w.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut u = rng.random::<f64>() * total;
        let mut pick = w.iter().rposition(|&x| x > 0.0).unwrap_or(0);
        for (i, &x) in w.iter().enumerate() {
            if x > 0.0 && u < x {
                pick = i;
                break;
            }
            u -= x;
        }
        chosen.push(pick);
        w[pick] = 0.0;
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn llada(strategy: Strategy) -> LladaRule<'static> {
        LladaRule {
            temperature: 0.0,
            strategy,
            logit_bias: None,
            confidence_bias: None,
        }
    }

    fn dream(strategy: Strategy) -> DreamRule<'static> {
        DreamRule {
            temperature: 0.0,
            top_p: None,
            top_k: None,
            top_k_first: false,
            strategy,
            logit_bias: None,
        }
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0)
    }

    #[test]
    fn greedy_picks_argmax_with_its_softmax_probability() -> anyhow::Result<()> {
        let logits = Tensor::new(
            &[[0.1f32, 0.2, 0.3, 0.4], [2.0, 0.0, 0.0, 0.0]],
            &Device::Cpu,
        )?;
        let d = llada(Strategy::Confidence).decide(&logits, &mut rng())?;
        assert_eq!((d[0].token, d[1].token), (3, 0));
        let z: f32 = [0.1f32, 0.2, 0.3, 0.4].iter().map(|l| l.exp()).sum();
        assert!((d[0].confidence - 0.4f32.exp() / z).abs() < 1e-6);
        assert!((d[1].confidence - 2f32.exp() / (2f32.exp() + 3.0)).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn entropies_match_the_definition() -> anyhow::Result<()> {
        let rows = [
            [0.1f32, 0.2, 0.3, 0.4],
            [2.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 1.0, 1.0],
        ];
        let logits = Tensor::new(&rows, &Device::Cpu)?;
        let by_hand = |row: &[f32], t: f32| -> f32 {
            let z: f32 = row.iter().map(|l| (l / t).exp()).sum();
            row.iter()
                .map(|l| (l / t).exp() / z)
                .map(|p| -p * p.ln())
                .sum()
        };
        for (temperature, t) in [(0.0, 1.0f32), (0.5, 0.5)] {
            let h = entropies(&logits, temperature, None)?;
            for (row, h) in rows.iter().zip(&h) {
                assert!(
                    (h - by_hand(row, t)).abs() < 1e-5,
                    "{h} vs {}",
                    by_hand(row, t)
                );
            }
        }
        // Uniform over 4 tokens: ln 4; a biased-out token leaves ln 3, not NaN.
        let h = entropies(&logits.i(2..3)?, 0.0, None)?;
        assert!((h[0] - 4f32.ln()).abs() < 1e-6);
        let bias = neg_inf_bias(&[0], 4, &Device::Cpu)?;
        let h = entropies(&logits.i(2..3)?, 0.0, Some(&bias))?;
        assert!((h[0] - 3f32.ln()).abs() < 1e-6, "{}", h[0]);
        Ok(())
    }

    #[test]
    fn ties_go_to_the_lowest_index() -> anyhow::Result<()> {
        let logits = Tensor::new(&[[1f32, 3.0, 3.0, 0.0]], &Device::Cpu)?;
        assert_eq!(
            llada(Strategy::Confidence).decide(&logits, &mut rng())?[0].token,
            1
        );
        assert_eq!(
            dream(Strategy::Confidence).decide(&logits, &mut rng())?[0].token,
            1
        );
        Ok(())
    }

    #[test]
    fn logit_bias_removes_a_token_from_choice_and_softmax() -> anyhow::Result<()> {
        let logits = Tensor::new(&[[5f32, 1.0, 1.0]], &Device::Cpu)?;
        let bias = neg_inf_bias(&[0], 3, &Device::Cpu)?;
        let r = LladaRule {
            logit_bias: Some(&bias),
            ..llada(Strategy::Confidence)
        };
        let d = r.decide(&logits, &mut rng())?;
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
            ..llada(Strategy::Confidence)
        };
        let d = r.decide(&logits, &mut rng())?;
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
        let l = LladaRule {
            temperature: 1.0,
            ..llada(Strategy::Confidence)
        };
        let d = DreamRule {
            temperature: 1.0,
            ..dream(Strategy::Confidence)
        };
        let draw = |seed, dream_rule: bool| -> anyhow::Result<Vec<u32>> {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..2000)
                .map(|_| {
                    let ds = if dream_rule {
                        d.decide(&logits, &mut rng)?
                    } else {
                        l.decide(&logits, &mut rng)?
                    };
                    Ok(ds[0].token)
                })
                .collect()
        };
        for dream_rule in [false, true] {
            let a = draw(1, dream_rule)?;
            assert_eq!(a, draw(1, dream_rule)?, "same seed, same draws");
            let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
            assert!((ones - 0.75).abs() < 0.04, "frequency {ones}");
        }
        Ok(())
    }

    #[test]
    fn random_strategy_draws_confidences_in_unit_interval() -> anyhow::Result<()> {
        let logits = Tensor::new(&[[0f32, 1.0], [1.0, 0.0]], &Device::Cpu)?;
        let d = llada(Strategy::Random).decide(&logits, &mut rng())?;
        assert!(d.iter().all(|x| (0.0..1.0).contains(&x.confidence)));
        assert_eq!((d[0].token, d[1].token), (1, 0));
        Ok(())
    }

    #[test]
    fn dream_confidences_are_probability_margin_and_negative_entropy() -> anyhow::Result<()> {
        let row = [2f32.ln(), 1f32.ln(), 1f32.ln()]; // p = [0.5, 0.25, 0.25]
        let logits = Tensor::new(&[row], &Device::Cpu)?;
        let conf =
            |s| -> anyhow::Result<f32> { Ok(dream(s).decide(&logits, &mut rng())?[0].confidence) };
        assert!((conf(Strategy::Confidence)? - 0.5).abs() < 1e-6);
        assert!((conf(Strategy::Margin)? - 0.25).abs() < 1e-6);
        let h = 0.5 * (0.5f32 + 1e-10).ln() + 2.0 * 0.25 * (0.25f32 + 1e-10).ln();
        assert!((conf(Strategy::Entropy)? - h).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn top_p_keeps_the_token_that_crosses_and_top_k_keeps_ties() {
        let logits = [4f32.ln(), 3f32.ln(), 2f32.ln(), 1f32.ln()]; // p = .4 .3 .2 .1
        assert_eq!(top_p_ids(&logits, 0.5), vec![0, 1]);
        assert_eq!(top_p_ids(&logits, 0.71), vec![0, 1, 2]);
        assert_eq!(top_p_ids(&logits, 0.1), vec![0]);
        let r = DreamRule {
            top_k: Some(2),
            ..dream(Strategy::Confidence)
        };
        let d = r.decide_row(&[1.0, 3.0, 3.0, 3.0, 0.0], &mut rng());
        assert_eq!(d.token, 1);
        assert!(
            (d.confidence - 1.0 / 3.0).abs() < 1e-6,
            "all three tied logits survive top-2"
        );
        let r = DreamRule {
            top_p: Some(0.5),
            ..dream(Strategy::Confidence)
        };
        let d = r.decide_row(&logits, &mut rng());
        assert!(
            (d.confidence - 4.0 / 7.0).abs() < 1e-6,
            "renormalised over the kept two"
        );
        // LLaDA2 filters top-k first: of the top two (.4, .3 -> .57, .43) top-p 0.5 keeps one;
        // Dream's order keeps both.
        for (top_k_first, want) in [(true, 1.0), (false, 4.0 / 7.0)] {
            let r = DreamRule {
                top_p: Some(0.5),
                top_k: Some(2),
                top_k_first,
                ..dream(Strategy::Confidence)
            };
            let d = r.decide_row(&logits, &mut rng());
            assert!((d.confidence - want).abs() < 1e-6, "{top_k_first}: {d:?}");
        }
    }

    #[test]
    fn draws_without_replacement_never_repeat() {
        let mut rng = rng();
        let picks = draw_without_replacement(&[1.0, 0.0, 5.0, 2.0], 3, &mut rng);
        assert_eq!(picks.len(), 3);
        assert!(!picks.contains(&1), "zero weight is never drawn");
        let mut sorted = picks.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 3);
    }
}
