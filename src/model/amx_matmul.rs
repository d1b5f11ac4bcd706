//! Products of Q8_0 weights with f32 activations on Intel AMX tiles (AMX-INT8: Sapphire Rapids
//! and later Xeons), reading the weights as loaded: one copy, no repacking.
//!
//! The arithmetic is candle's Q8_0 product (`candle-core` 0.11 `quantized/k_quants.rs`,
//! `BlockQ8_0::from_float` and `avx.rs::vec_dot_q8_0_q8_0`, ports of ggml's
//! `quantize_row_q8_0` and `ggml_vec_dot_q8_0_q8_0`): each row of activations is rounded to
//! Q8_0 blocks (an f16 scale and 32 int8 per 32 inputs), each pair of blocks gives an exact
//! integer sum, scaled by the product of the two f16 scales and added in f32. Only the order of
//! the f32 additions differs from candle's.
//!
//! Layout (Intel SDM vol. 1 ch. 20 and vol. 2 `TDPBSSD`): `TDPBSSD C, A, B` adds to each int32
//! `C[i][j]` the dot product of row `i` of A (64 int8 at most) with column `j` of B, whose rows
//! hold 4 consecutive inputs of each of 16 columns. The *weights* are A: at one block index, the
//! 32 quants of 16 consecutive weight rows lie one row of blocks apart, which `TILELOADD`
//! reads with that stride straight from the loaded tensor. The *activations* are B, rearranged
//! once per product into that 4-byte-interleaved layout (rows × inputs bytes, small next to the
//! weights). Every 32-input block has its own scales, so each block's 16 × 16 integer tile is
//! stored and scaled into 16 AVX-512 accumulators (one per weight row, a lane per activation
//! row); the store of block `b` overlaps the tile product of block `b + 1`.
//!
//! Linux gives a process the 8 KiB of tile state only after it asks (`arch_prctl` with
//! `ARCH_REQ_XCOMP_PERM`, the kernel's `Documentation/arch/x86/xstate.rst`); [`available`] asks
//! once; where it refuses (kernels before 5.16) the products take the other kernels. The AMX
//! instructions are written as inline assembly: Rust's AMX intrinsics are not stable. Threads
//! (rayon) split the weight rows in runs of 16, each loading the tile configuration itself.

// Elsewhere only the tests run the tile algorithm (on its emulation).
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use half::f16;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Inputs per Q8_0 block.
const BLOCK: usize = 32;
/// Bytes per Q8_0 block: an f16 scale, then 32 int8.
const BLOCK_BYTES: usize = 2 + BLOCK;
/// Rows of a tile, columns of an int32 tile row, and lanes of an AVX-512 register.
const T: usize = 16;
/// Bytes of one block of activations in B's layout: `BLOCK / 4` rows of `T` columns × 4 bytes.
const B_BYTES: usize = BLOCK * T;

/// Whether this CPU has AMX-INT8 (and AVX-512 for the scaling) and the OS let this process use
/// the tiles. Asks the OS once.
pub fn available() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(request_tiles)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tiles() -> bool {
    if !is_x86_feature_detected!("avx512f") {
        return false;
    }
    // CPUID leaf 7, EDX bit 24: AMX-TILE, bit 25: AMX-INT8 (SDM vol. 2, CPUID). Leaf 7 exists
    // on every CPU with AVX-512.
    #[allow(unused_unsafe, unsafe_code)]
    // SAFETY: CPUID is available on every x86_64 CPU; reading leaf 7 has no side effects.
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    if (leaf7.edx >> 24) & 3 != 3 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    #[allow(unsafe_code)]
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) takes two integers and touches no
    // memory of ours; it fails (non-zero) on kernels without AMX support.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_tiles() -> bool {
    false
}

/// The activations rounded to Q8_0 and laid out as B tiles: for each tile of 16 rows and each
/// block, `BLOCK / 4` rows of 64 bytes, row `r` holding inputs `4r..4r + 4` of each of the 16
/// rows (zeros past the last row); their f16 scales as f32, `[tile][block][16]`.
struct Activations {
    tiles: Vec<u8>,
    scales: Vec<f32>,
    blocks: usize,
}

impl Activations {
    fn new(x: &[f32], m: usize, k: usize) -> Self {
        let blocks = k / BLOCK;
        let count = m.div_ceil(T);
        let mut tiles = vec![0u8; count * blocks * B_BYTES];
        let mut scales = vec![0f32; count * blocks * T];
        #[cfg(target_arch = "x86_64")]
        let vector = amx::Rounder::new();
        let round = |xb: &[f32], q: &mut [i8; BLOCK]| -> f32 {
            #[cfg(target_arch = "x86_64")]
            if let Some(r) = &vector {
                return r.round(xb, q);
            }
            round_block(xb, q)
        };
        let mut q = [0i8; BLOCK];
        for (row, xs) in x.chunks_exact(k).enumerate() {
            let (t, j) = (row / T, row % T);
            for (b, xb) in xs.chunks_exact(BLOCK).enumerate() {
                let d = round(xb, &mut q);
                let tile = &mut tiles[(t * blocks + b) * B_BYTES..][..B_BYTES];
                for (g, four) in q.chunks_exact(4).enumerate() {
                    for (l, v) in four.iter().enumerate() {
                        tile[g * 4 * T + j * 4 + l] = *v as u8;
                    }
                }
                scales[(t * blocks + b) * T + j] = f16::from_f32(d).to_f32();
            }
        }
        Self {
            tiles,
            scales,
            blocks,
        }
    }

    /// B tiles and scales of row tile `t`.
    fn tile(&self, t: usize) -> (&[u8], &[f32]) {
        let b = self.blocks;
        (
            &self.tiles[t * b * B_BYTES..(t + 1) * b * B_BYTES],
            &self.scales[t * b * T..(t + 1) * b * T],
        )
    }
}

/// One block of activations rounded to Q8_0 as candle's `BlockQ8_0::from_float` does: the
/// quants into `q`, the scale `max |x| / 127` returned (before its f16 rounding).
fn round_block(xb: &[f32], q: &mut [i8; BLOCK]) -> f32 {
    let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in q.iter_mut().zip(xb) {
        *q = round_away(v * id);
    }
    d
}

/// `f32::round` (halves away from zero) of `v` in `[-127, 127]`, as an i8, without the libm
/// call `round` compiles to on baseline x86_64 (a visible share of a 32-row product): the
/// truncation and the remainder `v - t` are exact in f32 at these magnitudes.
fn round_away(v: f32) -> i8 {
    let t = v as i32;
    let rest = v - t as f32;
    (t + (rest >= 0.5) as i32 - (rest <= -0.5) as i32) as i8
}

/// What computes one 16 × 16 output tile over every block: AMX here, a plain emulation of the
/// same instruction in the tests.
trait TileUnit: Sync {
    /// Readies this thread (AMX: loads the tile configuration).
    fn begin(&self);
    /// Hands the thread's tile state back.
    fn end(&self);
    /// The f16 scales of every block of 16 weight rows (`rows`, `stride` apart) as f32,
    /// `ws[b][i]` for block `b` of row `i`.
    fn scales(&self, rows: &[u8], stride: usize, ws: &mut [f32]) {
        for (i, row) in rows.chunks_exact(stride).take(T).enumerate() {
            for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
                ws[b * T + i] = f16::from_le_bytes([block[0], block[1]]).to_f32();
            }
        }
    }
    /// `acc[i][j] += Σ_b ws[b][i] · xs[b][j] · Σ_l a_i[b][l] · x_j[b][l]`, where `a_i[b]` are the
    /// 32 quants of block `b` of weight row `i` (`rows[i · stride + b · 34 + 2..]`, 16 rows) and
    /// `x_j[b]` row `j` of block `b` of the B tiles `bt` (all of `s`). The bytes of `s.next`
    /// are fetched into the cache meanwhile.
    fn strip(&self, s: &Strip, acc: &mut [[f32; T]; T]);
}

/// One strip's inputs: the 16 weight rows of a column tile and one row tile of activations.
struct Strip<'a> {
    /// 16 weight rows of whole blocks, `stride` bytes apart.
    rows: &'a [u8],
    stride: usize,
    /// Weight rows to fetch into the cache meanwhile (empty for none).
    next: &'a [u8],
    /// The row tile's B tiles ([`Activations::tile`]) and their scales, `[block][16]`.
    bt: &'a [u8],
    xs: &'a [f32],
    /// The weight rows' scales, `[block][16]`.
    ws: &'a [f32],
}

impl Strip<'_> {
    /// Blocks along the input, once every slice is checked to hold that many (what the AMX
    /// unit's unchecked loads rely on).
    fn blocks(&self) -> usize {
        let blocks = self.xs.len() / T;
        assert!(
            self.stride == blocks * BLOCK_BYTES
                && self.rows.len() >= T * self.stride
                && self.bt.len() >= blocks * B_BYTES
                && self.ws.len() >= blocks * T,
            "16 weight rows of whole blocks and activations of as many blocks"
        );
        blocks
    }
}

/// `x` (`[m, k]`) times `Wᵀ` for Q8_0 weights `bytes` (`[n, k]`, rows of blocks), into columns
/// `col0..col0 + n` of `y` (`[m, ldy]`). `false` (nothing written) where AMX is not
/// [`available`], or `k` is zero or not whole blocks.
#[allow(clippy::too_many_arguments)]
pub fn q8_0_into(
    x: &[f32],
    m: usize,
    bytes: &[u8],
    n: usize,
    k: usize,
    y: &mut [f32],
    ldy: usize,
    col0: usize,
) -> bool {
    if k == 0 || !k.is_multiple_of(BLOCK) || !available() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        products(&amx::Amx, x, m, bytes, n, k, Output::new(y, ldy, col0, n));
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, m, bytes, n, y, ldy, col0);
        false
    }
}

/// The columns `col0..col0 + n` of an output `[m, ldy]`, written by the parts of a product side
/// by side: each part writes only the columns of its own weight rows.
struct Output<'a> {
    ptr: *mut f32,
    len: usize,
    ldy: usize,
    col0: usize,
    n: usize,
    _y: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: the parts of one product write disjoint columns (`products` hands each its own range
// of weight rows, and `write` checks the column against `n`), so no element is written by two
// threads, and `y` stays borrowed for the output's life.
#[allow(unsafe_code)]
unsafe impl Sync for Output<'_> {}

impl<'a> Output<'a> {
    fn new(y: &'a mut [f32], ldy: usize, col0: usize, n: usize) -> Self {
        assert!(
            col0 + n <= ldy && y.len().is_multiple_of(ldy.max(1)),
            "output is [m, ldy]"
        );
        Self {
            ptr: y.as_mut_ptr(),
            len: y.len(),
            ldy,
            col0,
            n,
            _y: std::marker::PhantomData,
        }
    }

    /// Sets row `row`, columns `c0..c0 + values.len()` (of the product's `n`).
    fn write(&self, row: usize, c0: usize, values: impl ExactSizeIterator<Item = f32>) {
        let start = row * self.ldy + self.col0 + c0;
        assert!(c0 + values.len() <= self.n && start + values.len() <= self.len);
        for (i, v) in values.enumerate() {
            // SAFETY: inside `y` (asserted above); the columns belong to the calling part.
            #[allow(unsafe_code)]
            unsafe {
                *self.ptr.add(start + i) = v
            };
        }
    }
}

fn products<U: TileUnit>(
    unit: &U,
    x: &[f32],
    m: usize,
    bytes: &[u8],
    n: usize,
    k: usize,
    y: Output,
) {
    let blocks = k / BLOCK;
    let row_bytes = blocks * BLOCK_BYTES;
    assert!(
        x.len() == m * k && bytes.len() == n * row_bytes && y.len >= m * y.ldy,
        "activations are [m, k], weights [n, k] of Q8_0 blocks, the output [m, ldy]"
    );
    let tiles = n.div_ceil(T);
    if m == 0 || tiles == 0 {
        return;
    }
    let act = Activations::new(x, m, k);
    // Below this many multiply-adds the pool's wake-up costs more than a second thread saves.
    let per_part = match m * n * k < 1 << 20 {
        true => tiles,
        false => tiles.div_ceil(4 * rayon::current_num_threads()),
    };
    let part = |p: usize| {
        let (t0, t1) = (p * per_part, ((p + 1) * per_part).min(tiles));
        let mut tail = Vec::new();
        let mut ws = vec![0f32; blocks * T];
        unit.begin();
        for tn in t0..t1 {
            let n0 = tn * T;
            let nt = T.min(n - n0);
            // The last tile of a width that is not a multiple of 16 reads a zero-padded copy:
            // a tile load always reads 16 rows.
            let rows = match nt == T {
                true => &bytes[n0 * row_bytes..(n0 + T) * row_bytes],
                false => {
                    tail.clear();
                    tail.extend_from_slice(&bytes[n0 * row_bytes..]);
                    tail.resize(T * row_bytes, 0);
                    &tail[..]
                }
            };
            unit.scales(rows, row_bytes, &mut ws);
            // The full tile two ahead in this part, fetched while the first row tile runs (one
            // ahead measured slower at 32 rows, within this machine's noise).
            let next = match tn + 2 < t1 && (tn + 3) * T <= n {
                true => &bytes[(n0 + 2 * T) * row_bytes..(n0 + 3 * T) * row_bytes],
                false => &[][..],
            };
            for tm in 0..m.div_ceil(T) {
                let (bt, xs) = act.tile(tm);
                let mut acc = [[0f32; T]; T];
                let strip = Strip {
                    rows,
                    stride: row_bytes,
                    next: if tm == 0 { next } else { &[][..] },
                    bt,
                    xs,
                    ws: &ws,
                };
                unit.strip(&strip, &mut acc);
                for j in 0..T.min(m - tm * T) {
                    y.write(tm * T + j, n0, acc[..nt].iter().map(|a| a[j]));
                }
            }
        }
        unit.end();
    };
    match tiles.div_ceil(per_part) {
        1 => part(0),
        parts => (0..parts).into_par_iter().for_each(part),
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod amx {
    use super::{Strip, TileUnit, BLOCK, BLOCK_BYTES, B_BYTES, T};
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// The tile configuration (`LDTILECFG`'s 64 bytes, SDM vol. 1 20.2): palette 1; tmm0 and
    /// tmm4 the weights (16 rows × 32 bytes), tmm1 and tmm5 the activations (8 rows × 64
    /// bytes), tmm2 and tmm3 the int32 results (16 rows × 64 bytes). Even blocks use the first
    /// of each pair, odd blocks the second, so that a block's loads need not wait for the
    /// previous block's product to release its registers.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    const CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let tiles: [(u8, u16); 6] = [(16, 32), (8, 64), (16, 64), (16, 64), (16, 32), (8, 64)];
        let mut t = 0;
        while t < tiles.len() {
            let colsb = tiles[t].1.to_le_bytes();
            c[16 + 2 * t] = colsb[0];
            c[17 + 2 * t] = colsb[1];
            c[48 + t] = tiles[t].0;
            t += 1;
        }
        Config(c)
    };

    /// Two int32 result tiles, one being scaled while the other is computed.
    #[repr(C, align(64))]
    struct Results([[[i32; T]; T]; 2]);

    pub(super) struct Amx;

    impl TileUnit for Amx {
        fn begin(&self) {
            // SAFETY: `available()` checked AMX and got the OS's permission before any
            // product reaches here; the configuration is 64 valid bytes.
            unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack)) };
        }

        fn end(&self) {
            // SAFETY: as in `begin`; TILERELEASE only resets tile state.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }

        fn scales(&self, rows: &[u8], stride: usize, ws: &mut [f32]) {
            let blocks = ws.len() / T;
            assert!(
                stride == blocks * BLOCK_BYTES && rows.len() >= T * stride,
                "16 weight rows of whole blocks"
            );
            // SAFETY: AVX-512F was checked by `available()`; the lengths were asserted.
            unsafe { scales(rows, stride, ws) }
        }

        fn strip(&self, s: &Strip, acc: &mut [[f32; T]; T]) {
            let blocks = s.blocks();
            // SAFETY: AVX-512F was checked by `available()`; `blocks` checked the lengths.
            unsafe { strip(s, blocks, acc) }
        }
    }

    /// [`super::round_block`] on AVX-512, which every AMX CPU has: rounding the activations
    /// one value at a time was 8% of a 32-row step (`docs/benchmarks.md`, 8.12). The same f32
    /// operations in the same order (`|x|` maximum, `x · (1 / d)`, truncation and the remainder's
    /// comparisons with ±0.5), so the same bytes.
    pub(super) struct Rounder(());

    impl Rounder {
        /// `Some` where this CPU has AVX-512F.
        pub(super) fn new() -> Option<Self> {
            is_x86_feature_detected!("avx512f").then_some(Rounder(()))
        }

        pub(super) fn round(&self, xb: &[f32], q: &mut [i8; BLOCK]) -> f32 {
            assert!(xb.len() == BLOCK, "one block of activations");
            // SAFETY: a `Rounder` exists only where AVX-512F was detected; `xb` holds 32
            // values and `q` 32 bytes.
            unsafe { round_block(xb, q) }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn round_block(xb: &[f32], q: &mut [i8; BLOCK]) -> f32 {
        let halves = [
            _mm512_loadu_ps(xb.as_ptr()),
            _mm512_loadu_ps(xb.as_ptr().add(T)),
        ];
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(
            _mm512_abs_ps(halves[0]),
            _mm512_abs_ps(halves[1]),
        ));
        let d = amax / 127.0;
        let id = _mm512_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let (half, one) = (_mm512_set1_ps(0.5), _mm512_set1_ps(1.0));
        for (h, x) in halves.into_iter().enumerate() {
            let v = _mm512_mul_ps(x, id);
            let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
            let rest = _mm512_sub_ps(v, t);
            let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(rest, half);
            let down =
                _mm512_cmp_ps_mask::<_CMP_LE_OQ>(rest, _mm512_sub_ps(_mm512_setzero_ps(), half));
            let t = _mm512_mask_sub_ps(_mm512_mask_add_ps(t, up, t, one), down, t, one);
            let bytes = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(t));
            _mm_storeu_si128(q.as_mut_ptr().add(h * T).cast(), bytes);
        }
        d
    }

    /// See [`TileUnit::scales`]: one gather of the 16 rows' scales per block (4 bytes from each
    /// block's start: the f16 scale and two quants), narrowed to 16 bits and converted.
    #[target_feature(enable = "avx512f")]
    unsafe fn scales(rows: &[u8], stride: usize, ws: &mut [f32]) {
        let offsets = _mm512_mullo_epi32(
            _mm512_set1_epi32(stride as i32),
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        );
        for (b, ws) in ws.chunks_exact_mut(T).enumerate() {
            // SAFETY: row i's block b starts at i · stride + b · 34, and its 4 bytes read are
            // inside the block (asserted by the caller: 16 rows of whole blocks).
            let bits =
                _mm512_i32gather_epi32::<1>(offsets, rows.as_ptr().add(b * BLOCK_BYTES).cast());
            let half = _mm512_cvtepi32_epi16(bits);
            _mm512_storeu_ps(ws.as_mut_ptr(), _mm512_cvtph_ps(half));
        }
    }

    /// The tile product of one block, stored: loads the weights into `$a` and the activations
    /// into `$x`, multiplies into the zeroed `$c` (registers as in [`CONFIG`]).
    macro_rules! block_product {
        ($a:literal, $x:literal, $c:literal, $weights:expr, $stride:expr, $acts:expr, $out:expr) => {
            asm!(
                concat!("tileloadd ", $a, ", [{a} + {sa}*1]"),
                concat!("tileloadd ", $x, ", [{x} + {sx}*1]"),
                concat!("tilezero ", $c),
                concat!("tdpbssd ", $c, ", ", $a, ", ", $x),
                concat!("tilestored [{c} + {sc}*1], ", $c),
                a = in(reg) $weights, sa = in(reg) $stride,
                x = in(reg) $acts, sx = in(reg) 4 * T,
                c = in(reg) $out, sc = in(reg) 4 * T,
                options(nostack),
            )
        };
    }

    /// See [`TileUnit::strip`]; [`Strip::blocks`] checked the lengths.
    #[target_feature(enable = "avx512f")]
    unsafe fn strip(s: &Strip, blocks: usize, acc: &mut [[f32; T]; T]) {
        let Strip {
            rows,
            stride,
            next,
            bt,
            xs,
            ws,
        } = *s;
        let mut c = Results([[[0; T]; T]; 2]);
        let mut v: [__m512; T] = std::array::from_fn(|i| _mm512_loadu_ps(acc[i].as_ptr()));
        // Tile product of block `b` into result `b % 2`, stored to memory.
        let tile = |b: usize, c: &mut Results| {
            let a = rows.as_ptr().add(b * BLOCK_BYTES + 2);
            let x = bt.as_ptr().add(b * B_BYTES);
            let out = c.0[b % 2].as_mut_ptr();
            // SAFETY: tmm0 reads 16 rows of 32 bytes `stride` apart from `a` (inside `rows`:
            // block `b` of rows 0..16), tmm1 8 rows of 64 bytes from `x` (block `b` of `bt`),
            // and the result's 16 rows of 64 bytes go to `out`; all asserted by the caller.
            match b % 2 {
                0 => block_product!("tmm0", "tmm1", "tmm2", a, stride, x, out),
                _ => block_product!("tmm4", "tmm5", "tmm3", a, stride, x, out),
            }
        };
        tile(0, &mut c);
        // Cache lines of `next` to fetch per block, so that all are asked for by the last one.
        let lines = next.len().div_ceil(64);
        let per_block = lines.div_ceil(blocks);
        for b in 0..blocks {
            for l in b * per_block..((b + 1) * per_block).min(lines) {
                _mm_prefetch::<_MM_HINT_T0>(next.as_ptr().add(l * 64).cast());
            }
            if b + 1 < blocks {
                tile(b + 1, &mut c);
            }
            let xv = _mm512_loadu_ps(xs.as_ptr().add(b * T));
            let sums = &c.0[b % 2];
            for (i, v) in v.iter_mut().enumerate() {
                let s = _mm512_mul_ps(xv, _mm512_set1_ps(*ws.get_unchecked(b * T + i)));
                let q = _mm512_cvtepi32_ps(_mm512_load_si512(sums[i].as_ptr().cast()));
                *v = _mm512_fmadd_ps(q, s, *v);
            }
        }
        for (a, v) in acc.iter_mut().zip(v) {
            _mm512_storeu_ps(a.as_mut_ptr(), v);
        }
    }

    const _: () = assert!(BLOCK == 32 && T == 16, "the configuration above");
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{self as kq, BlockQ8_0};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// `TDPBSSD` and the scaling written out: what the AMX unit must compute.
    struct Emulated;

    impl TileUnit for Emulated {
        fn begin(&self) {}
        fn end(&self) {}
        fn strip(&self, s: &Strip, acc: &mut [[f32; T]; T]) {
            let Strip {
                rows,
                stride,
                bt,
                xs,
                ws,
                ..
            } = *s;
            for b in 0..s.blocks() {
                for (i, acc) in acc.iter_mut().enumerate() {
                    let a = &rows[i * stride + b * BLOCK_BYTES + 2..][..BLOCK];
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let sum: i32 = (0..BLOCK)
                            .map(|l| {
                                let x = bt[b * B_BYTES + (l / 4) * 4 * T + j * 4 + l % 4];
                                a[l] as i8 as i32 * x as i8 as i32
                            })
                            .sum();
                        *acc += sum as f32 * (xs[b * T + j] * ws[b * T + i]);
                    }
                }
            }
        }
    }

    /// Shapes that leave partial row and column tiles, one block, and a product split over
    /// threads: the tile algorithm (emulated everywhere, on AMX where this CPU has it) gives
    /// candle's Q8_0 dot products up to the order of the f32 additions.
    #[test]
    fn q8_0_products_match_candles_dot_products() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        for (m, n, k) in [
            (1, 16, 32),
            (4, 50, 96),
            (17, 33, 256),
            (32, 64, 1024),
            (3, 2, 64),
        ] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let q = QTensor::quantize(&w, GgmlDType::Q8_0)?;
            let bytes = q.data()?;
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let mut want = vec![0f32; m * n];
            kq::matmul::<BlockQ8_0>(
                (m, k, n),
                &x,
                super::super::block_decode::blocks(&bytes),
                &mut want,
            )?;
            // Into the middle columns of a wider output, as stacked layers write; the other
            // columns must stay untouched.
            let (ldy, col0) = (n + 5, 3);
            let mut emulated = vec![f32::NAN; m * ldy];
            products(
                &Emulated,
                &x,
                m,
                &bytes,
                n,
                k,
                Output::new(&mut emulated, ldy, col0, n),
            );
            let mut got = vec![("emulated", emulated)];
            let mut amx = vec![f32::NAN; m * ldy];
            match q8_0_into(&x, m, &bytes, n, k, &mut amx, ldy, col0) {
                true => got.push(("amx", amx)),
                false => eprintln!("AMX-INT8 not available here: only the emulation ran"),
            }
            for (path, got) in got {
                for (r, row) in got.chunks_exact(ldy).enumerate() {
                    assert!(row[..col0]
                        .iter()
                        .chain(&row[col0 + n..])
                        .all(|v| v.is_nan()));
                    for (g, w) in row[col0..col0 + n].iter().zip(&want[r * n..(r + 1) * n]) {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{m}x{n}x{k} {path}: {g} vs {w}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// AVX-512's block rounding (where the CPU has it) gives the scalar one's bytes and scale,
    /// ties included: blocks of every half in range (scale 1, so each value is its own
    /// product), and blocks of mixed magnitudes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_rounding_is_the_scalar_rounding() {
        let Some(rounder) = amx::Rounder::new() else {
            println!("no AVX-512F here: the vector rounding is not checked");
            return;
        };
        let halves: Vec<f32> = (-254..=254).map(|i| i as f32 / 2.0).collect();
        let mixed: Vec<f32> = (0..32 * 500)
            .map(|i| ((i * 7919) % 2003) as f32 * 0.013 - 13.0 + (i % 32) as f32 * 1e-3)
            .collect();
        let mut blocks: Vec<Vec<f32>> = halves
            .chunks(31)
            .map(|c| {
                let mut b = c.to_vec();
                b.resize(31, 0.0);
                b.push(127.0);
                b
            })
            .collect();
        blocks.extend(mixed.chunks_exact(BLOCK).map(<[f32]>::to_vec));
        blocks.push(vec![0.0; BLOCK]);
        let (mut a, mut b) = ([0i8; BLOCK], [0i8; BLOCK]);
        for block in &blocks {
            let (da, db) = (round_block(block, &mut a), rounder.round(block, &mut b));
            assert_eq!((da.to_bits(), a), (db.to_bits(), b), "{block:?}");
        }
    }

    /// The rounding is `f32::round` on the values the activations can take: every half and
    /// whole number of the range, their neighbours, and a sweep between.
    #[test]
    fn round_away_is_f32_round() {
        let halves = (-254..=254).map(|i| i as f32 / 2.0);
        let near = halves.flat_map(|h| [h, h.next_up(), h.next_down()]);
        let sweep = (0..200_000).map(|i| -127.0 + i as f32 * (254.0 / 200_000.0));
        for v in near.chain(sweep).filter(|v| v.abs() <= 127.0) {
            assert_eq!(round_away(v), v.round() as i8, "{v}");
        }
    }

    /// Activations round as candle's `BlockQ8_0::from_float` does (through `QTensor::quantize`,
    /// whose bytes are the blocks), into B's interleaved layout.
    #[test]
    fn activations_round_like_candle_into_the_interleaved_layout() -> anyhow::Result<()> {
        let (m, k) = (18, 64);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37) % 101) as f32 / 7.0 - 7.0)
            .collect();
        let act = Activations::new(&x, m, k);
        let q = QTensor::quantize(
            &Tensor::from_slice(&x, (m, k), &Device::Cpu)?,
            GgmlDType::Q8_0,
        )?;
        let bytes = q.data()?;
        for (row, blocks) in bytes.chunks_exact(k / BLOCK * BLOCK_BYTES).enumerate() {
            let (bt, xs) = act.tile(row / T);
            let j = row % T;
            for (b, block) in blocks.chunks_exact(BLOCK_BYTES).enumerate() {
                assert_eq!(
                    xs[b * T + j],
                    f16::from_le_bytes([block[0], block[1]]).to_f32()
                );
                for (l, q) in block[2..].iter().enumerate() {
                    assert_eq!(bt[b * B_BYTES + (l / 4) * 4 * T + j * 4 + l % 4], *q);
                }
            }
        }
        Ok(())
    }
}
