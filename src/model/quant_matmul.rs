//! A tiled product of block-quantized weights (ggml's Q8_0, Q4_0, k-quants, ...) with f32
//! activations: `y = x Wᵀ` for the many-row products a block-diffusion step runs.
//!
//! Why: candle's `QMatMul` computes a quantized product as one dot product per (row, column)
//! pair after rounding the activations to Q8. For Q8_0 and Q4_0 at 32 rows that measured 1.5x
//! slower than f32 on an AVX2 CPU (`docs/benchmarks.md`, section 8): every row re-reads and
//! re-decodes every weight block. This kernel follows the layout of llamafile's tinyBLAS and of
//! BLIS instead: each call decodes the weights once, in panels of [`NP`] output columns by
//! [`KC`] inputs that stay in the L2 cache, and every 4-row × 3-column tile of the output then
//! accumulates along the input in 12 vector registers with f32 FMAs. Decoding costs one pass
//! over the weights per call, shared by all rows; the multiply-adds run at the f32 FMA rate on
//! a quarter (Q8_0) or an eighth (Q4_0) of the f32 weight bytes. The activations stay f32, so
//! the result is the product with the dequantized weights up to f32 summation order (candle's
//! path also rounds the activations).
//!
//! Decoding is `block_decode.rs` (candle's `to_float`, with AVX2 decoders of the same
//! arithmetic for Q8_0, Q4_0, Q4_K and Q6_K). Paths are chosen at run time: AVX2+FMA on
//! x86_64, otherwise a portable loop the compiler vectorises (NEON on aarch64). Threads (rayon)
//! split the output panels. Products of few rows take candle's dot products ([`dot_products`]),
//! called so that the weights stay the one copy that was loaded.

use super::amx_matmul;
#[cfg(target_arch = "x86_64")]
use super::block_decode::avx2;
use super::block_decode::{blocks, decoder, Decode};
use candle_core::quantized::{GgmlDType, QTensor};
use rayon::prelude::*;

/// Rows of a micro-tile.
const MR: usize = 4;
/// Columns of a micro-tile: 4 × 3 accumulators + 3 weight vectors + 1 activation vector are
/// the 16 AVX2 registers.
const NR: usize = 3;
/// Output columns decoded together: 24 columns × [`KC`] f32 = 192 KiB, read from L2 by every
/// row tile.
const NP: usize = 8 * NR;
/// Inputs per decoded chunk; a multiple of every block size (32 and 256). 2048 measured
/// within noise of 1024 and 4096 and faster than 512 and 256 (fewer partial sums to reduce).
const KC: usize = 2048;
/// Floats of padding after each row of the packed activations and panels: one cache line.
const PAD: usize = 16;

/// A `[n, k]` block-quantized weight as the kernel reads it: borrowed bytes, row-major.
pub struct QuantRows<'a> {
    bytes: &'a [u8],
    n: usize,
    k: usize,
    block_elems: usize,
    block_bytes: usize,
    decode: Decode,
}

impl<'a> QuantRows<'a> {
    /// The rows of `t` (`[n, k]` on the CPU), or `None` for a type or layout the kernel does not
    /// take (float types, rows that are not whole blocks), which candle's path then runs.
    pub fn new(t: &'a QTensor, bytes: &'a [u8]) -> Option<Self> {
        let (n, k) = t.shape().dims2().ok()?;
        let (decode, block_elems, block_bytes) = decoder(t.dtype())?;
        if !k.is_multiple_of(block_elems) || bytes.len() != n * (k / block_elems) * block_bytes {
            return None;
        }
        Some(Self {
            bytes,
            n,
            k,
            block_elems,
            block_bytes,
            decode,
        })
    }

    /// Decodes inputs `k0..k0 + kc` of row `row` into `out`.
    fn decode_row(&self, row: usize, k0: usize, out: &mut [f32]) {
        let row_bytes = (self.k / self.block_elems) * self.block_bytes;
        let start = row * row_bytes + (k0 / self.block_elems) * self.block_bytes;
        let len = (out.len() / self.block_elems) * self.block_bytes;
        (self.decode)(&self.bytes[start..start + len], out);
    }
}

/// `x` (`[m, k]`, row-major) times `tᵀ` on AMX tiles (`amx_matmul.rs`), into columns
/// `col0..col0 + n` of `y` (`[m, ldy]`); `false` where `t` is not Q8_0 or this CPU has no
/// AMX-INT8.
pub fn amx_into(
    x: &[f32],
    m: usize,
    t: &QTensor,
    bytes: &[u8],
    y: &mut [f32],
    ldy: usize,
    col0: usize,
) -> candle_core::Result<bool> {
    let (n, k) = t.shape().dims2()?;
    if t.dtype() != GgmlDType::Q8_0 {
        return Ok(false);
    }
    Ok(amx_matmul::q8_0_into(x, m, bytes, n, k, y, ldy, col0))
}

/// `x` (`[m, k]`, row-major) times `tᵀ`, into columns `col0..col0 + n` of `y` (`[m, ldy]`),
/// by candle's dot products
/// (`k_quants::matmul`: the activations rounded to the weight's dot-product type, one dot
/// product per row and column, AVX2/NEON chosen at run time), called directly rather than
/// through `QMatMul`: on x86 `QMatMul` first repacks Q4_K and Q6_K weights (and Q8_0 on
/// AVX512-VNNI) into tiles kept beside the original, 1.33x its size, so a Q4_K_M file took
/// 2.2x its size in memory (`docs/benchmarks.md`, section 8.5). `false` for a type candle has
/// no dot product for.
pub fn dot_products(
    x: &[f32],
    m: usize,
    t: &QTensor,
    bytes: &[u8],
    y: &mut [f32],
    ldy: usize,
    col0: usize,
) -> candle_core::Result<bool> {
    use candle_core::quantized::k_quants::{self as kq, GgmlType};
    /// One candle product per run of whole columns (rows of the weight), each into a buffer
    /// of its own: candle's own pool is kept at one thread (`allocator.rs`), so `--threads`
    /// splits the columns here.
    fn run<T: GgmlType>(
        (m, k, n): (usize, usize, usize),
        x: &[f32],
        bytes: &[u8],
    ) -> candle_core::Result<(Vec<Vec<f32>>, usize)> {
        let w = blocks::<T>(bytes);
        let per_col = w.len() / n.max(1);
        let cols = match m * n * k < 1 << 20 {
            true => n,
            false => n
                .div_ceil(4 * rayon::current_num_threads())
                .next_multiple_of(4),
        };
        let parts = (0..n.div_ceil(cols))
            .into_par_iter()
            .map(|p| {
                let c0 = p * cols;
                let nc = cols.min(n - c0);
                let mut part = vec![0f32; m * nc];
                let w = &w[c0 * per_col..(c0 + nc) * per_col];
                kq::matmul::<T>((m, k, nc), x, w, &mut part)?;
                Ok(part)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((parts, cols))
    }
    let (n, k) = t.shape().dims2()?;
    debug_assert!(col0 + n <= ldy && y.len() == m * ldy, "output is [m, ldy]");
    let mkn = (m, k, n);
    let (parts, cols) = match t.dtype() {
        GgmlDType::Q8_0 => run::<kq::BlockQ8_0>(mkn, x, bytes)?,
        GgmlDType::Q4_0 => run::<kq::BlockQ4_0>(mkn, x, bytes)?,
        GgmlDType::Q4_1 => run::<kq::BlockQ4_1>(mkn, x, bytes)?,
        GgmlDType::Q5_0 => run::<kq::BlockQ5_0>(mkn, x, bytes)?,
        GgmlDType::Q5_1 => run::<kq::BlockQ5_1>(mkn, x, bytes)?,
        GgmlDType::Q2K => run::<kq::BlockQ2K>(mkn, x, bytes)?,
        GgmlDType::Q3K => run::<kq::BlockQ3K>(mkn, x, bytes)?,
        GgmlDType::Q4K => run::<kq::BlockQ4K>(mkn, x, bytes)?,
        GgmlDType::Q5K => run::<kq::BlockQ5K>(mkn, x, bytes)?,
        GgmlDType::Q6K => run::<kq::BlockQ6K>(mkn, x, bytes)?,
        _ => return Ok(false),
    };
    place_columns(&parts, m, cols, y, ldy, col0);
    Ok(true)
}

/// Copies runs of columns computed apart (`parts[p]`: `[m, width]`, columns `p · step` on) into
/// columns `col0..` of `y` (`[m, ldy]`).
fn place_columns(
    parts: &[Vec<f32>],
    m: usize,
    step: usize,
    y: &mut [f32],
    ldy: usize,
    col0: usize,
) {
    for (p, part) in parts.iter().enumerate() {
        let width = part.len() / m.max(1);
        if width == 0 {
            continue;
        }
        for (r, row) in part.chunks_exact(width).enumerate() {
            let start = r * ldy + col0 + p * step;
            y[start..start + width].copy_from_slice(row);
        }
    }
}

/// `x` (`[m, k]`, row-major) times `wᵀ`, into columns `col0..col0 + n` of `y` (`[m, ldy]`,
/// row-major). Each thread fills whole panels of columns in a buffer of its own, copied into `y`
/// at the end (so no two threads write the same rows).
pub fn matmul_into(x: &[f32], m: usize, w: &QuantRows, y: &mut [f32], ldy: usize, col0: usize) {
    let (n, k) = (w.n, w.k);
    assert_eq!(x.len(), m * k, "activations are [m, k]");
    debug_assert!(col0 + n <= ldy && y.len() == m * ldy, "output is [m, ldy]");
    if m == 0 || n == 0 {
        return;
    }
    // Rows of the activations and of a decoded panel are 4 KiB apart when k is 1024 (or a
    // multiple): every row would then fall in the same L1 set and evict the others. A pad of
    // one cache line per row spreads them over the sets.
    let ldx = k + PAD;
    let mut xp = vec![0f32; m * ldx];
    for (dst, src) in xp.chunks_exact_mut(ldx).zip(x.chunks_exact(k)) {
        dst[..k].copy_from_slice(src);
    }
    let ldw = KC.min(k) + PAD;
    // The decoded panel is a buffer per thread: zeroing a fresh one per panel would write
    // as many bytes again as the decoding does.
    let panel = |buf: &mut Vec<f32>, p: usize| {
        let c0 = p * NP;
        let np = NP.min(n - c0);
        let mut out = vec![0f32; m * np];
        buf.resize(NP * ldw, 0.0);
        let buf = &mut buf[..np * ldw];
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for (j, row) in buf.chunks_exact_mut(ldw).enumerate() {
                w.decode_row(c0 + j, k0, &mut row[..kc]);
            }
            tiles(&xp, m, ldx, k0, kc, buf, ldw, np, &mut out);
        }
        out
    };
    let panels = n.div_ceil(NP);
    // Below this many multiply-adds the pool's wake-up costs more than a second thread saves.
    let outs: Vec<Vec<f32>> = match m * n * k < 1 << 20 {
        true => {
            let mut buf = Vec::new();
            (0..panels).map(|p| panel(&mut buf, p)).collect()
        }
        false => (0..panels)
            .into_par_iter()
            .map_init(Vec::new, panel)
            .collect(),
    };
    place_columns(&outs, m, NP, y, ldy, col0);
}

/// Adds `x[:, k0..k0 + kc] · w_panelᵀ` to `out` (`[m, np]`); the rows of `x` are `k` floats
/// apart, those of `w_panel` (`np` rows of `kc` inputs) `ldw`.
#[allow(clippy::too_many_arguments)]
fn tiles(
    x: &[f32],
    m: usize,
    k: usize,
    k0: usize,
    kc: usize,
    w: &[f32],
    ldw: usize,
    np: usize,
    out: &mut [f32],
) {
    assert!(
        kc.is_multiple_of(8)
            && k0 + kc <= k
            && kc <= ldw
            && w.len() >= np * ldw
            && out.len() == np * m
    );
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: AVX2 and FMA were detected at run time; the lengths were checked above.
        #[allow(unsafe_code)]
        unsafe {
            return avx2_tiles::tiles(x, m, k, k0, kc, w, ldw, np, out);
        }
    }
    portable_tiles(x, m, k, k0, kc, w, ldw, np, out);
}

/// Walks the tiles of one panel chunk: full 4 × 3 tiles, then the row and column remainders.
/// A remainder of 2 or 3 rows is one tile of that height, not rows one by one: a 1-row tile
/// loads as many weights as a 4-row one for a quarter of the work, which made a 5-row product
/// (a mixture-of-experts expert's usual share of a block) cost nearly what an 8-row one does.
macro_rules! walk_tiles {
    ($tile:ident, $x:expr, $m:expr, $k:expr, $k0:expr, $kc:expr, $w:expr, $ldw:expr, $np:expr, $out:expr) => {{
        let mut r = 0;
        while r < $m {
            let rows = MR.min($m - r);
            let mut c = 0;
            while c < $np {
                let cols = NR.min($np - c);
                match (rows, cols) {
                    (4, 3) => $tile::<4, 3>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                    (4, 2) => $tile::<4, 2>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                    (4, _) => $tile::<4, 1>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                    (3, 3) => $tile::<3, 3>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                    (3, 2) => $tile::<3, 2>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                    (3, _) => $tile::<3, 1>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                    (2, 3) => $tile::<2, 3>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                    (2, 2) => $tile::<2, 2>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                    (2, _) => $tile::<2, 1>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                    (_, 3) => $tile::<1, 3>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                    (_, 2) => $tile::<1, 2>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                    (_, _) => $tile::<1, 1>($x, $m, $k, $k0, $kc, $w, $ldw, $out, r, c),
                }
                c += cols;
            }
            r += rows;
        }
    }};
}

/// The portable tiles: the same loop nest on arrays of 8 lanes, which the compiler vectorises
/// (NEON on aarch64, SSE2 on a plain x86_64).
#[allow(clippy::too_many_arguments)]
fn portable_tiles(
    x: &[f32],
    m: usize,
    k: usize,
    k0: usize,
    kc: usize,
    w: &[f32],
    ldw: usize,
    np: usize,
    out: &mut [f32],
) {
    walk_tiles!(portable_tile, x, m, k, k0, kc, w, ldw, np, out)
}

#[allow(clippy::too_many_arguments)]
fn portable_tile<const R: usize, const C: usize>(
    x: &[f32],
    m: usize,
    k: usize,
    k0: usize,
    kc: usize,
    w: &[f32],
    ldw: usize,
    out: &mut [f32],
    r0: usize,
    c0: usize,
) {
    let np = out.len() / m;
    let mut acc = [[[0f32; 8]; C]; R];
    for kk in (0..kc).step_by(8) {
        for (i, acc) in acc.iter_mut().enumerate() {
            let xs = &x[(r0 + i) * k + k0 + kk..][..8];
            for (j, acc) in acc.iter_mut().enumerate() {
                let ws = &w[(c0 + j) * ldw + kk..][..8];
                for l in 0..8 {
                    acc[l] += xs[l] * ws[l];
                }
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (j, acc) in acc.iter().enumerate() {
            out[(r0 + i) * np + c0 + j] += acc.iter().sum::<f32>();
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2_tiles {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// See [`super::tiles`]; the caller checked the lengths.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tiles(
        x: &[f32],
        m: usize,
        k: usize,
        k0: usize,
        kc: usize,
        w: &[f32],
        ldw: usize,
        np: usize,
        out: &mut [f32],
    ) {
        walk_tiles!(tile, x, m, k, k0, kc, w, ldw, np, out)
    }

    /// One `R × C` tile: `R · C` accumulators of 8 lanes along the input, reduced at the end.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const C: usize>(
        x: &[f32],
        m: usize,
        k: usize,
        k0: usize,
        kc: usize,
        w: &[f32],
        ldw: usize,
        out: &mut [f32],
        r0: usize,
        c0: usize,
    ) {
        // Bounds for the unchecked loads below: rows r0..r0+R of x span inputs k0..k0+kc, and
        // columns c0..c0+C of the panel span 0..kc.
        assert!((r0 + R - 1) * k + k0 + kc <= x.len() && (c0 + C - 1) * ldw + kc <= w.len());
        let xp = x.as_ptr().add(r0 * k + k0);
        let wp = w.as_ptr().add(c0 * ldw);
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut kk = 0;
        while kk < kc {
            // SAFETY: kk + 8 <= kc (kc is a multiple of 8), inside the bounds asserted above.
            let wv: [__m256; C] = std::array::from_fn(|j| _mm256_loadu_ps(wp.add(j * ldw + kk)));
            for (i, acc) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(xp.add(i * k + kk));
                for (acc, wv) in acc.iter_mut().zip(&wv) {
                    *acc = _mm256_fmadd_ps(xv, *wv, *acc);
                }
            }
            kk += 8;
        }
        let np = out.len() / m;
        for (i, acc) in acc.iter().enumerate() {
            for (j, acc) in acc.iter().enumerate() {
                out[(r0 + i) * np + c0 + j] += hsum(*acc);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    const _: () = assert!(MR == 4 && NR == 3, "walk_tiles instantiates 4 × 3 tiles");
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// A product of no rows (an empty step) writes nothing and does not fail.
    #[test]
    fn dot_products_of_no_rows_write_nothing() -> anyhow::Result<()> {
        let w = Tensor::randn(0f32, 1.0, (64, 256), &Device::Cpu)?;
        let q = QTensor::quantize(&w, GgmlDType::Q4K)?;
        let mut y: Vec<f32> = Vec::new();
        assert!(dot_products(&[], 0, &q, &q.data()?, &mut y, 64, 0)?);
        Ok(())
    }

    /// Split over threads by columns, candle's dot products give exactly what one call over
    /// every column gives.
    #[test]
    fn dot_products_split_by_columns_equal_one_call() -> anyhow::Result<()> {
        use candle_core::quantized::k_quants::{self as kq, BlockQ4K};
        let dev = Device::Cpu;
        let (m, n, k) = (2, 1100, 512);
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let q = QTensor::quantize(&w, GgmlDType::Q4K)?;
        let bytes = q.data()?;
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut want = vec![0f32; m * n];
        kq::matmul::<BlockQ4K>((m, k, n), &x, blocks::<BlockQ4K>(&bytes), &mut want)?;
        // Into the middle columns of a wider output, as stacked layers write.
        let ldy = n + 5;
        let mut got = vec![0f32; m * ldy];
        assert!(dot_products(&x, m, &q, &bytes, &mut got, ldy, 3)?);
        for r in 0..m {
            assert_eq!(got[r * ldy + 3..r * ldy + 3 + n], want[r * n..(r + 1) * n]);
        }
        Ok(())
    }

    /// Every block type, with row and column counts that leave partial tiles and panels and an
    /// input longer than one chunk, matches the product with the dequantized weights, on the
    /// CPU's path and on the portable one.
    #[test]
    fn matches_the_product_with_dequantized_weights() -> anyhow::Result<()> {
        use GgmlDType::*;
        let dev = Device::Cpu;
        for (ty, k) in [
            (Q8_0, 1280),
            (Q4_0, 96),
            (Q4_1, 64),
            (Q5_0, 64),
            (Q5_1, 64),
            (Q2K, 256),
            (Q3K, 256),
            (Q4K, 1280),
            (Q5K, 256),
            (Q6K, 512),
        ] {
            for (m, n) in [(1, 7), (5, 26), (6, 3), (7, 50), (9, 50)] {
                let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
                let q = QTensor::quantize(&w, ty)?;
                let deq = q.dequantize(&dev)?;
                let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
                let want = x.matmul(&deq.t()?)?.flatten_all()?.to_vec1::<f32>()?;
                let bytes = q.data()?;
                let rows = QuantRows::new(&q, &bytes).expect("block type");
                let xs = x.flatten_all()?.to_vec1::<f32>()?;
                let mut got = vec![0f32; m * n];
                matmul_into(&xs, m, &rows, &mut got, n, 0);
                let mut portable = vec![0f32; m * n];
                for k0 in (0..k).step_by(KC) {
                    let kc = KC.min(k - k0);
                    let mut panel = vec![0f32; n * kc];
                    for (j, row) in panel.chunks_exact_mut(kc).enumerate() {
                        rows.decode_row(j, k0, row);
                    }
                    portable_tiles(&xs, m, k, k0, kc, &panel, kc, n, &mut portable);
                }
                for (path, got) in [("cpu", &got), ("portable", &portable)] {
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{ty:?} {m}x{n}x{k} {path}: {g} vs {w}"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
