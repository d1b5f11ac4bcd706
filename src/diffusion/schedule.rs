//! How many positions each step reveals, as the references compute it: LLaDA's even split of a
//! block, dllm's linear-alpha block-diffusion schedule, and Dream's timesteps.

/// What a scheduled step reveals: a number of positions, or (Dream `origin`) each masked
/// position with a probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Share {
    Count(usize),
    Probability(f64),
}

/// Tokens revealed at each of `steps` steps for `masked` masked positions: the base share, and
/// one more for each of the first `masked % steps` steps (LLaDA `get_num_transfer_tokens`).
pub fn transfer_counts(masked: usize, steps: usize) -> Vec<usize> {
    let (base, extra) = (masked / steps, masked % steps);
    (0..steps).map(|i| base + usize::from(i < extra)).collect()
}

/// Block diffusion's schedule for `masked` positions in `steps` steps (dllm
/// `get_num_transfer_tokens` with the linear alpha scheduler, `dllm/core/samplers/bd3lm.py`):
/// `t = (S - j)/S`, `s = (S - j - 1)/S`, `alpha(x) = 1 - x` and `r = (1 - alpha(s)) / (1 -
/// alpha(t))` in float32, `k_j = round_half_even(m (1 - r))` in float64 over the masks `m`
/// left, until none is left; steps revealing nothing are dropped.
pub fn bd3lm_counts(masked: usize, steps: usize) -> Vec<usize> {
    let mut left = masked;
    let mut counts = Vec::new();
    for j in 0..steps {
        if left == 0 {
            break;
        }
        let t = ((steps - j) as f64 / steps as f64) as f32;
        let s = ((steps - j - 1) as f64 / steps as f64) as f32;
        let (alpha_t, alpha_s) = (1.0f32 - t, 1.0f32 - s);
        let r = (1.0f32 - alpha_s) / (1.0f32 - alpha_t);
        let k = ((left as f64) * (1.0 - f64::from(r)))
            .round_ties_even()
            .max(0.0) as usize;
        let k = k.min(left);
        left -= k;
        if k > 0 {
            counts.push(k);
        }
    }
    counts
}

/// `torch.linspace(start, end, n)` in float32 as ATen's CPU kernel computes it: the step
/// `(end - start) / (n - 1)` in f32, then `start + step * i` for the first half and
/// `end - step * (n - 1 - i)` for the second, each a fused multiply-add (one rounding). Checked
/// against torch 2.15 for every `n` up to 600 at eps 1e-2, 1e-3 and 1e-4: Dream's truncated
/// `int(N (1 - s/t))` can turn a one-ulp difference into a different schedule.
pub fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// Dream's timestep schedule for one pass over `steps` steps: `linspace(1, eps, steps + 1)`.
pub struct TimestepSchedule(Vec<f32>);

impl TimestepSchedule {
    pub fn new(eps: f64, steps: usize) -> TimestepSchedule {
        TimestepSchedule(linspace_f32(1.0, eps as f32, steps + 1))
    }

    /// Steps in the schedule.
    pub fn len(&self) -> usize {
        self.0.len() - 1
    }

    /// Step `i`'s share of `masked` masked positions (Dream `diffusion_generate`): with `t, s`
    /// its two timesteps, `int(N (1 - s/t))` in float32, everything left at the last step;
    /// `origin` reveals each position with probability `1 - s/t` instead (1 at the last).
    pub fn share(&self, i: usize, masked: usize, origin: bool) -> Share {
        let ts = &self.0;
        let last = i + 1 >= ts.len() - 1;
        let ratio = match ts.get(i + 1) {
            Some(&s) => 1.0f32 - s / ts[i],
            None => 1.0,
        };
        match (origin, last) {
            (false, true) => Share::Count(masked),
            (true, true) => Share::Probability(1.0),
            (true, false) => Share::Probability(f64::from(ratio)),
            (false, false) => Share::Count((masked as f32 * ratio) as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_counts_spread_the_remainder_first() {
        assert_eq!(transfer_counts(8, 3), vec![3, 3, 2]);
        assert_eq!(transfer_counts(4, 4), vec![1, 1, 1, 1]);
        assert_eq!(transfer_counts(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(transfer_counts(10, 4).iter().sum::<usize>(), 10);
    }

    #[test]
    fn linspace_matches_torch_float32_bit_for_bit() {
        // torch.linspace(1, 1e-3, 9).tolist() and torch.linspace(1, 0.01, 8).tolist(), torch 2.15:
        // the plain `start + step * i` is one ulp off at indices 3, 5 and 4.
        let want = [
            1.0,
            0.875124990940094,
            0.750249981880188,
            0.625374972820282,
            0.5005000233650208,
            0.37562501430511475,
            0.25075000524520874,
            0.12587499618530273,
            0.0010000000474974513,
        ];
        let got: Vec<f64> = linspace_f32(1.0, 1e-3, 9)
            .into_iter()
            .map(f64::from)
            .collect();
        assert_eq!(got, want);
        let want = [
            1.0,
            0.8585714101791382,
            0.7171428203582764,
            0.5757142901420593,
            0.4342857301235199,
            0.2928571403026581,
            0.15142858028411865,
            0.009999999776482582,
        ];
        let got: Vec<f64> = linspace_f32(1.0, 0.01, 8)
            .into_iter()
            .map(f64::from)
            .collect();
        assert_eq!(got, want);
    }
}
