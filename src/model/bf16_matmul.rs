//! A bf16 matrix product for the CPU: `y = x Wᵀ` with `x` in f32, `W` in bf16, and AVX512-BF16
//! dot products (`vdpbf16ps`) accumulating in f32.
//!
//! Why: candle's CPU matmul has no bf16 kernel; it widens both operands to f32 on every call and
//! runs slower than f32. PyTorch's bf16 path (oneDNN) uses these instructions and runs about
//! twice its f32 speed on AVX512-BF16 CPUs. This kernel gives dcoder the same: weights stay in
//! bf16 (half the memory of f32, as the checkpoints ship them), activations are rounded to bf16
//! at the product's input only, and everything else stays f32.
//!
//! Layout: `W` (`[n, k]`, output-major as checkpoints store it) is packed once into panels of 16
//! output columns; within a panel, each pair of input positions `(2p, 2p+1)` holds 16 lanes × 2
//! bf16, one 512-bit vector. `vdpbf16ps` multiplies such a vector by a broadcast pair of
//! activations and adds both products into each lane: 32 multiply-adds per instruction, twice
//! an f32 FMA. A micro-tile keeps 6 rows × 64 columns of accumulators in registers; the input
//! dimension is cut into chunks that stay in the L2 cache; threads split the output columns.
//!
//! The kernel exists on x86_64 only. Elsewhere [`available`] is false, so the model never packs
//! weights (it keeps them dense), and [`PackedBf16::matmul`] falls back to a portable loop over
//! the same packing with the same rounding.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512bh, __m512i, _mm512_dpbf16_ps, _mm512_loadu_ps, _mm512_loadu_si512,
    _mm512_mask_storeu_ps, _mm512_set1_epi32, _mm512_setzero_ps, _mm512_storeu_ps,
};

use rayon::prelude::*;

/// Rows of a micro-tile: 8 divides the 32-token blocks block diffusion runs, so no tile runs
/// half empty. 8 rows × 3 panels of accumulators + 3 weight vectors + 1 broadcast fill 28 of
/// the 32 vector registers. (Measured against 6×4 and 4×6 tiles on Zen 4: within noise for
/// 160-row products, better for 32-row ones.)
#[cfg(target_arch = "x86_64")]
const MR: usize = 8;
/// 16-column panels of a micro-tile.
const NB: usize = 3;
/// Lanes of a 512-bit f32 vector: the columns of one panel.
const LANES: usize = 16;
/// Input pairs per cache chunk: 3 panels × 256 pairs × 64 bytes = 48 KiB of weights, read from
/// the L2 cache by every row tile (64 and 128 measured slower: more accumulator reloads).
#[cfg(target_arch = "x86_64")]
const KC: usize = 256;
/// Products below this many multiply-adds (`m * n * k`) run on the calling thread: waking the
/// pool would cost more than it saves.
const PARALLEL_MIN: usize = 1 << 18;

/// True when this CPU can run the kernel (x86_64 with AVX512-BF16, detected at run time).
#[cfg(target_arch = "x86_64")]
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// True when this CPU can run the kernel: never, off x86_64.
#[cfg(not(target_arch = "x86_64"))]
pub fn available() -> bool {
    false
}

/// bf16 bits of `x`, rounded to nearest even (as `_mm512_cvtne2ps_pbh` and torch round).
fn bf16_bits(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// `W` packed for the kernel.
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    data: Vec<u16>,
    /// Output columns (rows of `W`).
    n: usize,
    /// Input size (columns of `W`).
    k: usize,
    /// Input pairs, `ceil(k / 2)`.
    pairs: usize,
    /// Panels, rounded up to a whole number of micro-tiles.
    #[cfg(target_arch = "x86_64")]
    panels: usize,
}

impl PackedBf16 {
    /// Packs `w`, the bf16 bits of a `[n, k]` row-major matrix.
    pub fn pack(w: &[u16], n: usize, k: usize) -> Self {
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(LANES).div_ceil(NB) * NB;
        let mut data = vec![0u16; panels * pairs * 2 * LANES];
        for (col, row) in w.chunks_exact(k).enumerate() {
            let (panel, lane) = (col / LANES, col % LANES);
            let base = panel * pairs * 2 * LANES;
            for (i, &bits) in row.iter().enumerate() {
                let (pair, half) = (i / 2, i % 2);
                data[base + pair * 2 * LANES + lane * 2 + half] = bits;
            }
        }
        PackedBf16 {
            data,
            n,
            k,
            pairs,
            #[cfg(target_arch = "x86_64")]
            panels,
        }
    }

    pub fn out_features(&self) -> usize {
        self.n
    }

    /// `y = x Wᵀ` for `x` `[m, k]` row-major f32; returns `[m, n]` row-major f32.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        {
            self.matmul_avx512(x, m)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.matmul_portable(x, m)
        }
    }

    /// [`PackedBf16::matmul`] on the AVX512-BF16 kernel.
    #[cfg(target_arch = "x86_64")]
    fn matmul_avx512(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (n, pairs) = (self.n, self.pairs);
        let a = to_pairs(x, m, self.k);
        let mut y = vec![0f32; m * n];
        let group_cols = NB * LANES;
        let groups = self.panels / NB;
        // Each task owns the output columns of one group of panels; rows are laid out
        // row-major, so a task's columns are strided: write them through a raw pointer.
        let y_ptr = SendPtr(y.as_mut_ptr());
        let run = |g: usize| {
            let col0 = g * group_cols;
            if col0 >= n {
                return;
            }
            let cols = (n - col0).min(group_cols);
            let panel = &self.data[g * NB * pairs * 2 * LANES..];
            for k0 in (0..pairs).step_by(KC) {
                let kc = (pairs - k0).min(KC);
                for r0 in (0..m).step_by(MR) {
                    let rows = (m - r0).min(MR);
                    // SAFETY: `available()` was checked when these weights were packed (see
                    // `Linear`); `a` holds `m * pairs` pairs, `panel` holds NB panels of `pairs`
                    // vectors from this group on, and the tile writes `rows` rows × `cols`
                    // columns starting at (r0, col0) of the `m * n` output, which no other task
                    // writes (tasks own disjoint column groups).
                    #[allow(unsafe_code)]
                    unsafe {
                        tile(
                            rows,
                            a.as_ptr().add(r0 * pairs + k0),
                            pairs,
                            panel.as_ptr().add(k0 * 2 * LANES),
                            pairs * 2 * LANES,
                            kc,
                            y_ptr.get().add(r0 * n + col0),
                            n,
                            cols,
                            k0 == 0,
                        )
                    }
                }
            }
        };
        if m * n * self.k < PARALLEL_MIN {
            (0..groups).for_each(run);
        } else {
            (0..groups).into_par_iter().for_each(run);
        }
        y
    }

    /// [`PackedBf16::matmul`] without intrinsics, for CPUs the kernel cannot run on: the same
    /// numbers up to the order of f32 additions (activations rounded to bf16 to nearest even,
    /// products of each input pair summed in f32). Threads split the panels; each fills its own
    /// `[m, 16]` block, copied into place afterwards, so no task shares memory with another.
    #[cfg(any(test, not(target_arch = "x86_64")))]
    fn matmul_portable(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k, pairs) = (self.n, self.k, self.pairs);
        let widen = |bits: u16| f32::from_bits(u32::from(bits) << 16);
        let a: Vec<f32> = x.iter().map(|&v| widen(bf16_bits(v))).collect();
        let panel_len = pairs * 2 * LANES;
        let run = |panel: usize| -> Vec<f32> {
            let w = &self.data[panel * panel_len..(panel + 1) * panel_len];
            let mut block = vec![0f32; m * LANES];
            for (row, acc) in a.chunks_exact(k).zip(block.chunks_exact_mut(LANES)) {
                for (p, w_p) in w.chunks_exact(2 * LANES).enumerate() {
                    // Odd `k`: the last pair's second input is the packing's zero padding.
                    let (lo, hi) = (row[2 * p], row.get(2 * p + 1).copied().unwrap_or(0.0));
                    for (acc_l, w_l) in acc.iter_mut().zip(w_p.chunks_exact(2)) {
                        *acc_l += lo * widen(w_l[0]) + hi * widen(w_l[1]);
                    }
                }
            }
            block
        };
        let used = n.div_ceil(LANES);
        let blocks: Vec<Vec<f32>> = if m * n * k < PARALLEL_MIN {
            (0..used).map(run).collect()
        } else {
            (0..used).into_par_iter().map(run).collect()
        };
        let mut y = vec![0f32; m * n];
        for (panel, block) in blocks.iter().enumerate() {
            let col0 = panel * LANES;
            let cols = (n - col0).min(LANES);
            for (dst, src) in y.chunks_exact_mut(n).zip(block.chunks_exact(LANES)) {
                dst[col0..col0 + cols].copy_from_slice(&src[..cols]);
            }
        }
        y
    }
}

/// Activations as bf16 pairs, one u32 per input pair (odd `k` padded with a zero), rounded to
/// nearest even: 32 at a time with `vcvtne2ps2bf16`, the rest in scalar code.
#[cfg(target_arch = "x86_64")]
fn to_pairs(x: &[f32], m: usize, k: usize) -> Vec<u32> {
    let pairs = k.div_ceil(2);
    let mut a = vec![0u32; m * pairs];
    for (row, out) in x.chunks_exact(k).zip(a.chunks_exact_mut(pairs)) {
        let vectorised = (k / 32) * 32;
        // SAFETY: the kernel only runs where `available()` holds (see `Linear`), and the
        // loads/stores stay within `row` and `out` (32 inputs -> 16 pairs per iteration).
        #[allow(unsafe_code)]
        unsafe {
            convert_row(row, out, vectorised)
        };
        for p in vectorised / 2..pairs {
            let lo = bf16_bits(row[2 * p]);
            let hi = row.get(2 * p + 1).map_or(0, |&v| bf16_bits(v));
            out[p] = u32::from(lo) | (u32::from(hi) << 16);
        }
    }
    a
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_row(row: &[f32], out: &mut [u32], n: usize) {
    use std::arch::x86_64::{_mm512_cvtne2ps_pbh, _mm512_storeu_si512};
    for i in (0..n).step_by(32) {
        // SAFETY: i + 32 <= n <= row.len(), and i / 2 + 16 <= out.len().
        unsafe {
            let lo = _mm512_loadu_ps(row.as_ptr().add(i));
            let hi = _mm512_loadu_ps(row.as_ptr().add(i + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(out.as_mut_ptr().add(i / 2) as *mut __m512i, v);
        }
    }
}

/// A raw output pointer shared by tasks that write disjoint parts.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint column groups of the output (see `matmul_avx512`).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`: no two tasks write the same element, and none reads another's.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
unsafe impl Sync for SendPtr {}

#[cfg(target_arch = "x86_64")]
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// One micro-tile: `rows` (≤ MR) rows × up to `NB × 16` columns over `kc` input pairs.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile(
    rows: usize,
    a: *const u32,
    a_stride: usize,
    b: *const u16,
    panel_stride: usize,
    kc: usize,
    c: *mut f32,
    c_stride: usize,
    cols: usize,
    first: bool,
) {
    // SAFETY (for every call below): the caller guarantees the pointers cover the tile.
    unsafe {
        match rows {
            8 => micro::<8>(a, a_stride, b, panel_stride, kc, c, c_stride, cols, first),
            7 => micro::<7>(a, a_stride, b, panel_stride, kc, c, c_stride, cols, first),
            6 => micro::<6>(a, a_stride, b, panel_stride, kc, c, c_stride, cols, first),
            5 => micro::<5>(a, a_stride, b, panel_stride, kc, c, c_stride, cols, first),
            4 => micro::<4>(a, a_stride, b, panel_stride, kc, c, c_stride, cols, first),
            3 => micro::<3>(a, a_stride, b, panel_stride, kc, c, c_stride, cols, first),
            2 => micro::<2>(a, a_stride, b, panel_stride, kc, c, c_stride, cols, first),
            _ => micro::<1>(a, a_stride, b, panel_stride, kc, c, c_stride, cols, first),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn micro<const R: usize>(
    a: *const u32,
    a_stride: usize,
    b: *const u16,
    panel_stride: usize,
    kc: usize,
    c: *mut f32,
    c_stride: usize,
    cols: usize,
    first: bool,
) {
    // SAFETY: the caller guarantees `a` has R rows of `kc` pairs at stride `a_stride`, `b` has
    // NB panels of `kc` vectors at stride `panel_stride`, and `c` has R rows of `cols` columns.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NB]; R];
        if !first {
            for (r, acc_r) in acc.iter_mut().enumerate() {
                for (j, acc_rj) in acc_r.iter_mut().enumerate() {
                    let col = j * LANES;
                    if col < cols {
                        let mut buf = [0f32; LANES];
                        let take = (cols - col).min(LANES);
                        std::ptr::copy_nonoverlapping(
                            c.add(r * c_stride + col),
                            buf.as_mut_ptr(),
                            take,
                        );
                        *acc_rj = _mm512_loadu_ps(buf.as_ptr());
                    }
                }
            }
        }
        for p in 0..kc {
            let mut bv = [std::mem::zeroed::<__m512bh>(); NB];
            for (j, v) in bv.iter_mut().enumerate() {
                let raw: __m512i =
                    _mm512_loadu_si512(b.add(j * panel_stride + p * 2 * LANES) as *const __m512i);
                *v = std::mem::transmute::<__m512i, __m512bh>(raw);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let pair = *a.add(r * a_stride + p) as i32;
                let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair));
                for (acc_rj, &b_j) in acc_r.iter_mut().zip(bv.iter()) {
                    *acc_rj = _mm512_dpbf16_ps(*acc_rj, av, b_j);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (j, &v) in acc_r.iter().enumerate() {
                let col = j * LANES;
                if col >= cols {
                    break;
                }
                let dst = c.add(r * c_stride + col);
                let take = (cols - col).min(LANES);
                if take == LANES {
                    _mm512_storeu_ps(dst, v);
                } else {
                    _mm512_mask_storeu_ps(dst, ((1u32 << take) - 1) as u16, v);
                }
            }
        }
    }
}

/// Converts 32 f32 to bf16 with the CPU's rounding, for the test below to compare against.
#[cfg(all(test, target_arch = "x86_64"))]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn hw_bf16(x: &[f32; 32]) -> [u16; 32] {
    use std::arch::x86_64::_mm512_cvtne2ps_pbh;
    // SAFETY: the arrays hold 32 values; the feature is checked by the caller.
    unsafe {
        let v = _mm512_cvtne2ps_pbh(
            _mm512_loadu_ps(x[16..].as_ptr()),
            _mm512_loadu_ps(x.as_ptr()),
        );
        std::mem::transmute::<__m512bh, [u16; 32]>(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn reference(x: &[f32], w: &[u16], m: usize, n: usize, k: usize) -> Vec<f32> {
        let round = |v: f32| half::bf16::from_bits(bf16_bits(v)).to_f32();
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for t in 0..k {
                    s += f64::from(round(x[i * k + t]))
                        * f64::from(half::bf16::from_bits(w[j * k + t]).to_f32());
                }
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    /// Checks `product` (a packed weight, `x`, `m` -> `y`) against [`reference`].
    fn check_ragged_shapes(product: impl Fn(&PackedBf16, &[f32], usize) -> Vec<f32>) {
        let mut rng = StdRng::seed_from_u64(1);
        // Odd k, n not a multiple of 16, m not a multiple of 6, k longer than one chunk.
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 37, 9),
            (13, 100, 600),
            (32, 70, 1030),
            (3, 200, 64),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let w: Vec<u16> = (0..n * k)
                .map(|_| bf16_bits(rng.random_range(-1.0..1.0)))
                .collect();
            let got = product(&PackedBf16::pack(&w, n, k), &x, m);
            let want = reference(&x, &w, m, n, k);
            for (g, r) in got.iter().zip(&want) {
                assert!(
                    (g - r).abs() <= 1e-4 * (1.0 + r.abs()),
                    "{m}x{n}x{k}: {g} vs {r}"
                );
            }
        }
    }

    #[test]
    fn matches_a_plain_product_for_ragged_shapes() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        check_ragged_shapes(|w, x, m| w.matmul(x, m));
    }

    /// The fallback runs on every CPU, so this test does too.
    #[test]
    fn portable_product_matches_a_plain_product_for_ragged_shapes() {
        check_ragged_shapes(|w, x, m| w.matmul_portable(x, m));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn rounding_matches_the_hardware_conversion() {
        if !available() {
            return;
        }
        let mut rng = StdRng::seed_from_u64(2);
        let x: [f32; 32] = std::array::from_fn(|_| rng.random_range(-1e3..1e3));
        // SAFETY: checked `available()` above.
        #[allow(unsafe_code)]
        let hw = unsafe { hw_bf16(&x) };
        let sw: Vec<u16> = x.iter().map(|&v| bf16_bits(v)).collect();
        assert_eq!(hw.to_vec(), sw);
    }
}
