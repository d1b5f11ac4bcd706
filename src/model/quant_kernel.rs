//! Which kernel a product of block-quantized weights takes on the CPU, decided per product
//! from its row count and weight type, this CPU's features and the memory left for copies:
//! AMX tiles (`amx_matmul.rs`), candle's repacked kernels (`QMatMul`), candle's dot products
//! on the weights as loaded, or dcoder's tiled kernel (`quant_matmul.rs`). `dcoder bench
//! --qmatmul` forces one, to compare them in one run.

use super::amx_matmul;
#[cfg(target_arch = "x86_64")]
use super::block_decode::avx2;
use candle_core::quantized::GgmlDType;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// Products of at least this many rows take the tiled kernel in `auto`: at 4 rows of the
/// Qwen3-0.6B shape it measured 2.0x candle's for Q8_0, at 1 row 0.66x (`docs/benchmarks.md`,
/// section 8.1).
pub const MIN_ROWS: usize = 4;

/// The same for the k-quants, whose decoding costs more: at 4 rows of the Qwen3-0.6B shape
/// candle's dot products measured 1.25x faster than the tiled kernel for Q4_K, at 8 rows
/// 0.96x, at 16 0.68x, at 32 equal to candle's repacked kernel (`docs/benchmarks.md`, 8.6).
pub const MIN_ROWS_K: usize = 8;

/// On one thread, Q8_0 products of at least this many rows take AMX tiles in `auto` even where
/// candle's repacked copy exists: on the Qwen3-0.6B shape (Sapphire Rapids) AMX measured 0.6x
/// candle's repacked kernels' speed at 1 row, 0.8x at 4, equal at 8, 1.15-1.26x at 16 and 1.18x
/// at 32 (`docs/benchmarks.md`, section 8.9). On more threads every row count takes AMX: it
/// splits over `--threads` and candle's `QMatMul` stays on its one-thread pool (at 2 threads AMX
/// measured equal at 1 row, 1.05x at 2, 1.25x at 4 and 2x at 32).
pub const AMX_MIN_ROWS: usize = 8;

/// Whether every Q8_0 product takes AMX in `auto`, whatever its rows: where candle's copy was
/// not planned (`repack`), or on more than one thread; see [`AMX_MIN_ROWS`].
fn amx_every_row(repack: bool) -> bool {
    !repack || rayon::current_num_threads() > 1
}

/// Which kernel quantized products take: [`kernel`] decides unless `dcoder bench --qmatmul`
/// forced one (to measure one against the other in the same run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Per product, the kernel that measured faster with one copy of the weights.
    Auto,
    /// candle's `QMatMul` for every product (on x86 it repacks K-quants into a second copy).
    Candle,
    /// candle's dot products, called directly, for every product.
    Dots,
    /// The tiled kernel for every product.
    Tiled,
    /// AMX tiles for every Q8_0 product (`amx_matmul.rs`), the default choice elsewhere.
    Amx,
}

/// The kernel of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `quant_matmul::matmul_into`: dcoder's tiled kernel.
    Tiled,
    /// `quant_matmul::dot_products`: candle's dot products without its repacking.
    Dots,
    /// candle's `QMatMul` (every device).
    Candle,
    /// `quant_matmul::amx_into`: Q8_0 on Intel AMX tiles.
    Amx,
}

static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Whether `auto` sends the types candle repacks to candle's `QMatMul` ([`plan_copies`]).
static REPACK: AtomicBool = AtomicBool::new(false);

/// Whether this CPU has AVX512-VNNI, where candle's `QMatMul` repacks Q8_0, Q4_K and Q6_K
/// weights into tiles for `vpdpbusd` (`candle-core` 0.11 `quantized/repack_x86.rs`): measured
/// 2.2-2.7x faster than dcoder's one-copy kernels and 1.6-2.0x faster than bf16 at 4 and 32
/// rows (`docs/benchmarks.md`, section 8.8), at the price of a second copy of those weights.
pub fn vnni_repack() -> bool {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
        return true;
    }
    false
}

/// Whether the second copy candle's repacking makes fits: `free` bytes of memory left after
/// `weight_bytes` of quantized weights were loaded must hold 2.5 times them (the repacked
/// tiles of Q4_K take 6 bits per weight against 4.5, plus candle's per-product buffers:
/// measured 2.25x the Q4_K weights' bytes on the Qwen3-0.6B shape), keeping a tenth free.
pub fn repack_fits(weight_bytes: u64, free: Option<u64>) -> bool {
    free.is_some_and(|free| free / 10 * 9 >= weight_bytes.saturating_mul(5) / 2)
}

/// Decides, once the quantized weights are loaded, whether `auto` takes candle's repacked
/// kernels on this CPU: where `allowed` (not `--no-repack`), [`vnni_repack`] and
/// [`repack_fits`]; returns the decision.
pub fn plan_copies(weight_bytes: u64, free: Option<u64>, allowed: bool) -> bool {
    let repack = allowed && vnni_repack() && repack_fits(weight_bytes, free);
    REPACK.store(repack, Ordering::Relaxed);
    repack
}

/// Sets the kernel choice for the rest of the process.
pub fn choose(choice: Choice) {
    CHOICE.store(choice as u8, Ordering::Relaxed);
}

/// The CPU kernel of a product of `rows` rows of `dtype` weights. In `auto`:
/// - Q8_0 on AMX tiles (`amx_matmul.rs`, one copy of the weights) where the CPU has AMX-INT8,
///   except, on one thread, products of fewer than [`AMX_MIN_ROWS`] rows where candle's
///   repacked copy exists;
/// - candle's repacked kernels for Q8_0, Q4_K and Q6_K where [`plan_copies`] allowed them
///   (AVX512-VNNI with memory for the copy);
/// - otherwise, on AVX2, the tiled kernel from [`MIN_ROWS`] rows for Q8_0 and Q4_0 and from
///   [`MIN_ROWS_K`] for the k-quants, candle's dot products below; both read the weights as
///   loaded, so memory stays one copy of the file.
///
/// Elsewhere (NEON, no AVX2) candle's `QMatMul`, whose kernels there were not measured
/// against these.
pub fn kernel(rows: usize, dtype: GgmlDType) -> Kernel {
    let amx = dtype == GgmlDType::Q8_0 && amx_matmul::available();
    let repack = REPACK.load(Ordering::Relaxed);
    match CHOICE.load(Ordering::Relaxed) {
        1 => Kernel::Candle,
        2 => Kernel::Dots,
        3 => Kernel::Tiled,
        4 if amx => Kernel::Amx,
        0 if amx && (rows >= AMX_MIN_ROWS || amx_every_row(repack)) => Kernel::Amx,
        _ if !fast() => Kernel::Candle,
        _ if repack && matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q4K | GgmlDType::Q6K) => {
            Kernel::Candle
        }
        _ => {
            let min = match dtype {
                GgmlDType::Q8_0 | GgmlDType::Q4_0 => MIN_ROWS,
                _ => MIN_ROWS_K,
            };
            match rows >= min {
                true => Kernel::Tiled,
                false => Kernel::Dots,
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn fast() -> bool {
    avx2()
}

#[cfg(not(target_arch = "x86_64"))]
fn fast() -> bool {
    false
}

/// The kernel path this CPU takes for weights mostly of type `label` (a GGUF type's lower-case
/// name): `amx-int8` for Q8_0 where AMX tiles run it (`avx512vnni+amx-int8` where products of
/// few rows take candle's repacked kernels: one thread), `avx512vnni` for Q8_0, Q4_K and Q6_K where
/// [`plan_copies`] chose candle's repacked kernels, else `avx2`, `neon` or `scalar`.
pub fn kernel_name(label: Option<&str>) -> &'static str {
    let choice = CHOICE.load(Ordering::Relaxed);
    let repack = REPACK.load(Ordering::Relaxed) && choice == 0;
    if label == Some("q8_0") && matches!(choice, 0 | 4) && amx_matmul::available() {
        return match amx_every_row(repack) {
            true => "amx-int8",
            false => "avx512vnni+amx-int8",
        };
    }
    if repack && matches!(label, Some("q8_0" | "q4_k" | "q6_k")) {
        return "avx512vnni";
    }
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        return "avx2";
    }
    if cfg!(target_arch = "aarch64") {
        "neon"
    } else {
        "scalar"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repacked copy is taken only where memory holds 2.5 times the weights with a tenth
    /// to spare, and never when free memory is unknown.
    #[test]
    fn the_repacked_copy_needs_memory_for_it() {
        let gib = 1u64 << 30;
        assert!(repack_fits(gib, Some(3 * gib)));
        assert!(!repack_fits(gib, Some(2 * gib)));
        assert!(!repack_fits(8 * gib, Some(14 * gib)));
        assert!(!repack_fits(gib, None));
        assert!(repack_fits(0, Some(0)));
    }
}
