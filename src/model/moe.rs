//! A mixture-of-experts feed-forward layer, with the two routing rules of inclusionAI's models:
//! - LLaDA2's `LLaDA2MoeSparseMoeBlock` (`modeling_llada2_moe.py`, vendored in ZHZisZZ/dllm
//!   `dllm/pipelines/llada2/models/`): a float32 sigmoid router, experts chosen on score +
//!   `expert_bias` within the best `topk_group` of `n_group` groups (a group's score is the sum
//!   of its two best biased scores), weights the chosen experts' unbiased scores normalised to 1
//!   and scaled by `routed_scaling_factor`;
//! - LLaDA-MoE's `LLaDAMoESparseMoeBlock` (`modeling_lladamoe.py`, vendored in ZHZisZZ/dllm
//!   `dllm/pipelines/llada/models/`; OLMoE's rule): a float32 softmax over every expert, the
//!   top-k probabilities (plus `expert_bias` where there is one) are the weights as they are:
//!   no renormalisation (the file hard-codes `norm_topk_prob = False`), no scale, no groups.
//!
//! Shared experts are added unweighted in both.
//!
//! Experts run grouped: the rows routed to an expert are gathered, go through it in one product,
//! and are scattered back weighted; an expert no row chose is never touched.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::linear::WeightFormat;
use super::mlp::SwiGlu;

/// How a row's router logits choose experts and weigh them; facts from config.json.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Routing {
    /// LLaDA2: sigmoid scores, group-limited top-k on score + bias, renormalised and scaled.
    GroupedSigmoid {
        top_k: usize,
        n_group: usize,
        topk_group: usize,
        routed_scaling_factor: f64,
    },
    /// LLaDA-MoE (OLMoE): softmax over all experts, the top-k probabilities as weights.
    Softmax { top_k: usize },
}

#[derive(Debug, Clone)]
pub struct Moe {
    /// Router weight `[experts, hidden]`, f32.
    pub gate: Tensor,
    /// Added to the scores for choosing only, f32 (`expert_bias`).
    pub expert_bias: Vec<f32>,
    pub experts: Vec<SwiGlu>,
    pub shared: Option<SwiGlu>,
    pub routing: Routing,
}

impl Moe {
    /// The router `gate.weight` (`[experts, d]`, kept in f32: both references route in f32)
    /// and the experts `experts.{e}` (SwiGLUs of `width`) under `vb`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        d: usize,
        experts: usize,
        width: usize,
        routing: Routing,
        expert_bias: Option<Tensor>,
        shared: Option<SwiGlu>,
        vb: VarBuilder,
        format: &WeightFormat,
    ) -> Result<Moe> {
        let gate = vb
            .pp("gate")
            .get((experts, d), "weight")?
            .to_dtype(DType::F32)?;
        let expert_bias = match expert_bias {
            Some(b) => b.to_dtype(DType::F32)?.to_vec1()?,
            None => vec![0.0; experts],
        };
        let experts = (0..experts)
            .map(|e| SwiGlu::new(d, width, vb.pp("experts").pp(e), format))
            .collect::<Result<Vec<_>>>()?;
        Ok(Moe {
            gate,
            expert_bias,
            experts,
            shared,
            routing,
        })
    }

    /// The chosen experts and their weights for each row of `x` (`[rows, hidden]`).
    pub fn route(&self, x: &Tensor) -> Result<Vec<Vec<(usize, f32)>>> {
        let logits = x.to_dtype(DType::F32)?.matmul(&self.gate.t()?)?;
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        Ok(rows.iter().map(|l| self.choose(l)).collect())
    }

    /// One row's routing from its router logits.
    fn choose(&self, logits: &[f32]) -> Vec<(usize, f32)> {
        match self.routing {
            Routing::GroupedSigmoid {
                top_k,
                n_group,
                topk_group,
                routed_scaling_factor,
            } => self.grouped_sigmoid(logits, top_k, n_group, topk_group, routed_scaling_factor),
            Routing::Softmax { top_k } => self.softmax(logits, top_k),
        }
    }

    /// LLaDA-MoE's rule: `softmax(logits, dtype=float32)`, plus `expert_bias`, then `topk`;
    /// the chosen values are the weights (`LLaDAMoESparseMoeBlock.forward`).
    fn softmax(&self, logits: &[f32], top_k: usize) -> Vec<(usize, f32)> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        let probs: Vec<f32> = exps
            .iter()
            .zip(&self.expert_bias)
            .map(|(e, b)| e / sum + b)
            .collect();
        descending(&probs)[..top_k.min(probs.len())]
            .iter()
            .map(|&e| (e, probs[e]))
            .collect()
    }

    /// LLaDA2's rule (`LLaDA2MoeGate.forward`).
    fn grouped_sigmoid(
        &self,
        logits: &[f32],
        top_k: usize,
        n_group: usize,
        topk_group: usize,
        routed_scaling_factor: f64,
    ) -> Vec<(usize, f32)> {
        let scores: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
        let biased: Vec<f32> = scores
            .iter()
            .zip(&self.expert_bias)
            .map(|(s, b)| s + b)
            .collect();
        let per_group = biased.len() / n_group.max(1);
        // A group's score: the sum of its two best biased scores (torch topk(2).sum()).
        let group_score = |g: usize| {
            let mut v: Vec<f32> = biased[g * per_group..(g + 1) * per_group].to_vec();
            v.sort_by(|a, b| b.total_cmp(a));
            v.iter().take(2).sum::<f32>()
        };
        let groups = descending(&(0..n_group).map(group_score).collect::<Vec<_>>());
        let allowed: Vec<usize> = groups[..topk_group.min(groups.len())].to_vec();
        let candidates: Vec<f32> = (0..biased.len())
            .map(|e| match allowed.contains(&(e / per_group.max(1))) {
                true => biased[e],
                false => f32::NEG_INFINITY,
            })
            .collect();
        let chosen: Vec<usize> = descending(&candidates)[..top_k].to_vec();
        let picked: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
        let sum: f32 = picked.iter().sum();
        let scale = routed_scaling_factor as f32;
        chosen
            .iter()
            .zip(&picked)
            .map(|(&e, &s)| {
                let w = if top_k > 1 { s / (sum + 1e-20) } else { s };
                (e, w * scale)
            })
            .collect()
    }
}

/// Indices by descending value, ties to the lower index (torch.topk's order on CPU).
fn descending(values: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order
}

impl Module for Moe {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let flat = x.reshape((b * t, h))?;
        let routes = self.route(&flat)?;
        // Rows (and weights) per expert.
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); self.experts.len()];
        let mut weights: Vec<Vec<f32>> = vec![Vec::new(); self.experts.len()];
        for (row, chosen) in routes.iter().enumerate() {
            for &(e, w) in chosen {
                rows[e].push(row as u32);
                weights[e].push(w);
            }
        }
        let active: Vec<usize> = (0..self.experts.len())
            .filter(|&e| !rows[e].is_empty())
            .collect();
        // One expert's weighted output for its rows, and the rows.
        let run = |e: usize| -> Result<(Tensor, Tensor)> {
            let n = rows[e].len();
            let ids = Tensor::from_slice(&rows[e], n, x.device())?;
            let w = Tensor::from_slice(&weights[e], (n, 1), x.device())?.to_dtype(x.dtype())?;
            let y = self.experts[e]
                .forward(&flat.index_select(&ids, 0)?.unsqueeze(0)?)?
                .squeeze(0)?;
            Ok((ids, y.broadcast_mul(&w)?))
        };
        // On the CPU the experts run side by side: most get a few rows of a block, products too
        // small to keep the threads busy one expert at a time.
        let outputs: Vec<(Tensor, Tensor)> = match x.device().is_cpu() {
            true => active.par_iter().map(|&e| run(e)).collect::<Result<_>>()?,
            false => active.iter().map(|&e| run(e)).collect::<Result<_>>()?,
        };
        // Added in expert order, as one at a time would: the sum does not depend on threads.
        let mut out = flat.zeros_like()?;
        for (ids, y) in outputs {
            out = out.index_add(&ids, &y, 0)?;
        }
        let mut out = out.reshape((b, t, h))?;
        if let Some(shared) = &self.shared {
            out = (out + shared.forward(x)?)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn moe(bias: Vec<f32>, routing: Routing) -> Result<Moe> {
        Ok(Moe {
            gate: Tensor::zeros((bias.len(), 2), DType::F32, &Device::Cpu)?,
            expert_bias: bias,
            experts: Vec::new(),
            shared: None,
            routing,
        })
    }

    #[test]
    fn experts_are_chosen_within_the_best_groups_on_biased_scores() -> Result<()> {
        let routing = Routing::GroupedSigmoid {
            top_k: 2,
            n_group: 2,
            topk_group: 1,
            routed_scaling_factor: 2.5,
        };
        // Logits 0 give scores 0.5 everywhere: the bias alone decides. Group 1 (experts 2, 3)
        // has the larger two-best sum, so expert 0's large bias cannot win.
        let m = moe(vec![0.3, 0.0, 0.2, 0.2], routing)?;
        let chosen = m.choose(&[0.0; 4]);
        let experts: Vec<usize> = chosen.iter().map(|c| c.0).collect();
        assert_eq!(experts, vec![2, 3]);
        // Weights: the unbiased scores (0.5 each) normalised to 1, times 2.5.
        for (_, w) in chosen {
            assert!((w - 1.25).abs() < 1e-6, "{w}");
        }
        Ok(())
    }

    #[test]
    fn softmax_routing_keeps_the_top_probabilities_unnormalised() -> Result<()> {
        let m = moe(vec![0.0; 4], Routing::Softmax { top_k: 2 })?;
        let logits = [1.0f32, 3.0, 0.0, 2.0];
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        let chosen = m.choose(&logits);
        assert_eq!(chosen.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 3]);
        // The weights are the probabilities over all four experts: they sum to less than 1.
        for (e, w) in chosen {
            assert!((w - logits[e].exp() / z).abs() < 1e-6, "{e}: {w}");
        }
        Ok(())
    }
}
