//! Which positions a step reveals, given every masked position's decision: the schedule's
//! count (most confident first, or drawn), Dream's `origin` coin flips, Fast-dLLM's threshold,
//! SDAR's dynamic threshold, or the EB-sampler's entropy bound. Revealed tokens are never
//! re-masked.

use rand::{rngs::StdRng, Rng};

use super::decision::{draw_without_replacement, Decision};
use super::plan::RevealRule;
use super::schedule::Share;

/// What one step may reveal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transfer {
    Count(usize),
    /// Dream `origin`: each masked position independently.
    Probability(f64),
    /// Fast-dLLM: the most confident plus every one at or above the threshold.
    Threshold(f64),
    /// EB-sampler: the lowest-entropy positions while their summed entropy stays below the bound.
    EntropyBound(f64),
    /// SDAR `low_confidence_dynamic`: every position above the threshold if there are at least
    /// `count` of them, else the `count` most confident.
    Dynamic {
        count: usize,
        threshold: f64,
    },
}

impl Transfer {
    /// What `rule` reveals at a step whose scheduled share is `scheduled()` (asked for only by
    /// the rules that read it).
    pub fn of(rule: RevealRule, scheduled: impl FnOnce() -> Share) -> Transfer {
        let share = || match scheduled() {
            Share::Count(k) => Transfer::Count(k),
            Share::Probability(p) => Transfer::Probability(p),
        };
        match rule {
            RevealRule::Scheduled { .. } => share(),
            RevealRule::Threshold(t) => Transfer::Threshold(t),
            RevealRule::EntropyBound(e) => Transfer::EntropyBound(e),
            RevealRule::Dynamic(threshold) => match share() {
                Transfer::Count(count) => Transfer::Dynamic { count, threshold },
                _ => Transfer::Dynamic {
                    count: 1,
                    threshold,
                },
            },
        }
    }

    /// The step can reveal nothing: the drivers skip its forward pass.
    pub fn is_empty(&self) -> bool {
        *self == Transfer::Count(0)
    }
}

/// The rows (indices into `decisions`) a step reveals; `entropies` (one per decision) are read
/// only by the entropy bound, `alg_temp` only by a count.
pub fn select(
    decisions: &[Decision],
    entropies: &[f32],
    transfer: Transfer,
    alg_temp: f64,
    rng: &mut StdRng,
) -> Vec<usize> {
    match transfer {
        Transfer::Probability(p) => (0..decisions.len())
            .filter(|_| rng.random::<f64>() < p)
            .collect(),
        Transfer::Threshold(t) => {
            // Fast-dLLM `get_transfer_index`: the top-1 always, the rest if confident enough.
            let order = most_confident(decisions, decisions.len());
            order
                .iter()
                .enumerate()
                .filter(|&(rank, &row)| rank == 0 || f64::from(decisions[row].confidence) >= t)
                .map(|(_, &row)| row)
                .collect()
        }
        Transfer::Dynamic { count, threshold } => {
            // A float32 tensor against a Python float compares in float32; strictly above.
            let threshold = threshold as f32;
            let high: Vec<usize> = (0..decisions.len())
                .filter(|&row| decisions[row].confidence > threshold)
                .collect();
            match high.len() >= count {
                true => high,
                false => most_confident(decisions, count),
            }
        }
        Transfer::EntropyBound(bound) => {
            // JET `postprocess_loop`: sort by entropy ascending, k = #{cumsum < bound}
            // (`searchsorted(right=False)`), at least one.
            let mut order: Vec<usize> = (0..entropies.len()).collect();
            order.sort_by(|&a, &b| entropies[a].total_cmp(&entropies[b]).then(a.cmp(&b)));
            let mut sum = 0.0f64;
            let k = order
                .iter()
                .take_while(|&&row| {
                    sum += f64::from(entropies[row]);
                    sum < bound
                })
                .count();
            order.truncate(k.max(1));
            order
        }
        Transfer::Count(k) if alg_temp > 0.0 => {
            // softmax(confidence / alg_temp), drawn without replacement.
            let max = decisions
                .iter()
                .map(|d| f64::from(d.confidence))
                .fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = decisions
                .iter()
                .map(|d| ((f64::from(d.confidence) - max) / alg_temp).exp())
                .collect();
            draw_without_replacement(&weights, k, rng)
        }
        Transfer::Count(k) => most_confident(decisions, k),
    }
}

/// The indices of the `count` most confident decisions; ties go to the lower index so runs are
/// reproducible (torch.topk leaves tie order unspecified).
fn most_confident(decisions: &[Decision], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..decisions.len()).collect();
    order.sort_by(|&a, &b| {
        decisions[b]
            .confidence
            .total_cmp(&decisions[a].confidence)
            .then(a.cmp(&b))
    });
    order.truncate(count);
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn dynamic_takes_everything_above_the_threshold_or_the_count() {
        let d = |c: f32| Decision {
            token: 0,
            confidence: c,
        };
        let decisions = [d(0.95), d(0.5), d(0.91), d(0.9)];
        let mut rng = StdRng::seed_from_u64(0);
        let mut pick = |count, threshold| {
            select(
                &decisions,
                &[],
                Transfer::Dynamic { count, threshold },
                0.0,
                &mut rng,
            )
        };
        // Strictly above: 0.9 itself stays masked.
        assert_eq!(pick(1, 0.9), vec![0, 2]);
        assert_eq!(pick(2, 0.9), vec![0, 2]);
        assert_eq!(pick(3, 0.9), vec![0, 2, 3]);
    }

    #[test]
    fn entropy_bound_takes_the_lowest_entropies_while_their_sum_stays_below() {
        let decisions = [Decision {
            token: 0,
            confidence: 0.5,
        }; 4];
        let entropies = [0.3f32, 0.05, 0.1, 2.0];
        let mut rng = StdRng::seed_from_u64(0);
        let mut pick = |bound| {
            select(
                &decisions,
                &entropies,
                Transfer::EntropyBound(bound),
                0.0,
                &mut rng,
            )
        };
        assert_eq!(pick(0.2), vec![1, 2]);
        // The sum must stay strictly below (searchsorted, right=False).
        assert_eq!(pick(0.15000001), vec![1, 2]);
        assert_eq!(pick(0.05), vec![1]);
        // At least one, however small the bound.
        assert_eq!(pick(1e-9), vec![1]);
        assert_eq!(pick(1e9), vec![1, 2, 0, 3]);
    }

    #[test]
    fn the_dynamic_rule_reads_the_schedule_and_the_others_do_not() {
        let rule = RevealRule::Dynamic(0.9);
        assert_eq!(
            Transfer::of(rule, || Share::Count(3)),
            Transfer::Dynamic {
                count: 3,
                threshold: 0.9
            }
        );
        let never = || -> Share { panic!("the threshold rule must not read the schedule") };
        assert_eq!(
            Transfer::of(RevealRule::Threshold(0.5), never),
            Transfer::Threshold(0.5)
        );
    }
}
