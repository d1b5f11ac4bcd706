//! Decoding ggml's block-quantized rows into f32: candle's `to_float` of each block type
//! (`candle-core`'s `quantized/k_quants.rs`, a port of ggml's `dequantize_row_*`), and AVX2
//! decoders of the same arithmetic for the types whose decoding is a visible share of a
//! product: Q8_0 and Q4_0, and Q4_K and Q6_K (the two types of a Q4_K_M file). Each AVX2
//! decoder is bit-exact against candle's (tested), chosen at run time.

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType,
};
use candle_core::quantized::GgmlDType;

/// Decodes whole blocks (`bytes`) into f32 (`out`, block-size elements per block).
pub(super) type Decode = fn(&[u8], &mut [f32]);

/// The decoder of `dtype`, with its block's elements and bytes.
pub(super) fn decoder(dtype: GgmlDType) -> Option<(Decode, usize, usize)> {
    fn of<T: GgmlType>(decode: Decode) -> (Decode, usize, usize) {
        (decode, T::BLCK_SIZE, std::mem::size_of::<T>())
    }
    Some(match dtype {
        GgmlDType::Q8_0 => of::<BlockQ8_0>(decode_q8_0),
        GgmlDType::Q4_0 => of::<BlockQ4_0>(decode_q4_0),
        GgmlDType::Q4_1 => of::<BlockQ4_1>(decode_blocks::<BlockQ4_1>),
        GgmlDType::Q5_0 => of::<BlockQ5_0>(decode_blocks::<BlockQ5_0>),
        GgmlDType::Q5_1 => of::<BlockQ5_1>(decode_blocks::<BlockQ5_1>),
        GgmlDType::Q8_1 => of::<BlockQ8_1>(decode_blocks::<BlockQ8_1>),
        GgmlDType::Q2K => of::<BlockQ2K>(decode_blocks::<BlockQ2K>),
        GgmlDType::Q3K => of::<BlockQ3K>(decode_blocks::<BlockQ3K>),
        GgmlDType::Q4K => of::<BlockQ4K>(decode_q4k),
        GgmlDType::Q5K => of::<BlockQ5K>(decode_blocks::<BlockQ5K>),
        GgmlDType::Q6K => of::<BlockQ6K>(decode_q6k),
        GgmlDType::Q8K => of::<BlockQ8K>(decode_blocks::<BlockQ8K>),
        _ => return None,
    })
}

/// `bytes` as blocks of `T`.
pub(super) fn blocks<T: GgmlType>(bytes: &[u8]) -> &[T] {
    let size = std::mem::size_of::<T>();
    assert!(
        bytes.len().is_multiple_of(size)
            && bytes.as_ptr().align_offset(std::mem::align_of::<T>()) == 0,
        "quantized rows are whole, aligned blocks"
    );
    // SAFETY: the length is a whole number of blocks and the start is aligned for `T` (both
    // asserted); ggml blocks are `repr(C)` structs of f16 and byte arrays, for which every bit
    // pattern is a valid value; the borrow keeps `bytes` alive and unchanged.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size)
    }
}

fn decode_blocks<T: GgmlType>(bytes: &[u8], out: &mut [f32]) {
    if bytes.as_ptr().align_offset(std::mem::align_of::<T>()) == 0 {
        return T::to_float(blocks::<T>(bytes), out);
    }
    // A row of blocks of an odd size may start off their alignment: decode a copy that is
    // aligned (a u64 buffer is aligned for every block type).
    let mut owned = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: the buffer holds at least `bytes.len()` bytes, any bit pattern is a valid u8,
    // and the two slices do not overlap.
    #[allow(unsafe_code)]
    let aligned = unsafe {
        let ptr = owned.as_mut_ptr().cast::<u8>();
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len());
        std::slice::from_raw_parts(ptr, bytes.len())
    };
    T::to_float(blocks::<T>(aligned), out);
}

/// ggml's block layouts (`ggml-common.h`): an f16 scale, then the quants.
const Q8_0_BYTES: usize = 2 + 32;
const Q4_0_BYTES: usize = 2 + 16;
/// ggml's k-quant super-blocks of 256: Q4_K is `d`, `dmin` (f16), 12 bytes of packed 6-bit
/// scales and mins, 128 bytes of nibbles; Q6_K is 128 bytes of low nibbles, 64 of high 2-bit
/// pairs, 16 signed scales, then `d`.
const Q4K_BYTES: usize = 2 + 2 + 12 + 128;
const Q6K_BYTES: usize = 128 + 64 + 16 + 2;
const _: () = assert!(
    std::mem::size_of::<BlockQ8_0>() == Q8_0_BYTES
        && std::mem::size_of::<BlockQ4_0>() == Q4_0_BYTES
        && std::mem::size_of::<BlockQ4K>() == Q4K_BYTES
        && std::mem::size_of::<BlockQ6K>() == Q6K_BYTES
);

/// A decoder that takes `$avx2` where the CPU has AVX2 and candle's `to_float` elsewhere.
macro_rules! fast_decoder {
    ($name:ident, $block:ty, $avx2:ident) => {
        fn $name(bytes: &[u8], out: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            if avx2() {
                // SAFETY: AVX2 was detected at run time; the decoder checks the lengths.
                #[allow(unsafe_code)]
                unsafe {
                    return $avx2(bytes, out);
                }
            }
            decode_blocks::<$block>(bytes, out)
        }
    };
}

fast_decoder!(decode_q8_0, BlockQ8_0, decode_q8_0_avx2);
fast_decoder!(decode_q4_0, BlockQ4_0, decode_q4_0_avx2);
fast_decoder!(decode_q4k, BlockQ4K, decode_q4k_avx2);
fast_decoder!(decode_q6k, BlockQ6K, decode_q6k_avx2);

/// Whether this CPU has the AVX2, FMA and F16C instructions the x86 paths use.
#[cfg(target_arch = "x86_64")]
pub(super) fn avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// A block's f16 scale, converted by the F16C instruction (the `half` crate's portable
/// conversion measured as a fifth of Q8_0's decoding).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c")]
#[inline]
#[allow(unsafe_code)]
unsafe fn scale_f16c(block: &[u8]) -> f32 {
    // Only the first two bytes are read: the scale at the start of a block, or wherever the
    // caller points.
    use std::arch::x86_64::{_mm_cvtph_ps, _mm_cvtsi32_si128, _mm_cvtss_f32};
    let bits = u16::from_le_bytes([block[0], block[1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// ggml's `dequantize_row_q8_0`: `q * d`, 8 lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(unsafe_code)]
unsafe fn decode_q8_0_avx2(bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert_eq!(out.len() / 32 * Q8_0_BYTES, bytes.len());
    for (x, o) in bytes.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(32)) {
        let d = _mm256_set1_ps(scale_f16c(x));
        for (q, o) in x[2..].chunks_exact(8).zip(o.chunks_exact_mut(8)) {
            // SAFETY: `q` holds 8 bytes and `o` 8 floats (exact chunks).
            let q = _mm_loadl_epi64(q.as_ptr().cast());
            let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(v, d));
        }
    }
}

/// ggml's `dequantize_row_q4_0`: the low nibbles are elements 0..16 of a block, the high ones
/// 16..32, each `(q - 8) * d`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(unsafe_code)]
unsafe fn decode_q4_0_avx2(bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert_eq!(out.len() / 32 * Q4_0_BYTES, bytes.len());
    let low = _mm_set1_epi8(0x0f);
    let eight = _mm_set1_epi8(8);
    for (x, o) in bytes.chunks_exact(Q4_0_BYTES).zip(out.chunks_exact_mut(32)) {
        let d = _mm256_set1_ps(scale_f16c(x));
        // SAFETY: a Q4_0 block holds 16 bytes of nibbles after its scale; `o` holds 32 floats.
        let q = _mm_loadu_si128(x[2..].as_ptr().cast());
        let lo = _mm_sub_epi8(_mm_and_si128(q, low), eight);
        let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), low), eight);
        for (i, half) in [lo, hi].into_iter().enumerate() {
            for (e, v) in widen(half).into_iter().enumerate() {
                _mm256_storeu_ps(o.as_mut_ptr().add(16 * i + 8 * e), _mm256_mul_ps(v, d));
            }
        }
    }
}

/// ggml's `dequantize_row_q4_K` in candle's order (`k_quants.rs`, `BlockQ4K::to_float`): for
/// each 64 inputs, two (scale, min) pairs from the packed 6-bit fields, `d1 = d · sc`, `m1 =
/// dmin · m`, then `d1 · (q & 15) − m1` for the low nibbles of 32 bytes and the same with the
/// second pair for their high nibbles. A multiply then a subtraction, as the scalar code rounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(unsafe_code)]
unsafe fn decode_q4k_avx2(bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert_eq!(out.len() / 256 * Q4K_BYTES, bytes.len());
    let low = _mm256_set1_epi8(0x0f);
    for (x, o) in bytes.chunks_exact(Q4K_BYTES).zip(out.chunks_exact_mut(256)) {
        let d = scale_f16c(&x[0..2]);
        let dmin = scale_f16c(&x[2..4]);
        let scales = &x[4..16];
        for (j, o) in o.chunks_exact_mut(64).enumerate() {
            // SAFETY: 32 bytes of nibbles per 64 inputs, inside the block (exact chunks).
            let q = _mm256_loadu_si256(x[16 + 32 * j..].as_ptr().cast());
            let halves = [
                _mm256_and_si256(q, low),
                _mm256_and_si256(_mm256_srli_epi16(q, 4), low),
            ];
            for (h, (nibbles, o)) in halves.into_iter().zip(o.chunks_exact_mut(32)).enumerate() {
                let (sc, m) = scale_min_k4(2 * j + h, scales);
                let d1 = _mm256_set1_ps(d * f32::from(sc));
                let m1 = _mm256_set1_ps(dmin * f32::from(m));
                let parts = [
                    _mm256_castsi256_si128(nibbles),
                    _mm256_extracti128_si256(nibbles, 1),
                ];
                for (p, part) in parts.into_iter().enumerate() {
                    for (e, v) in widen(part).into_iter().enumerate() {
                        let y = _mm256_sub_ps(_mm256_mul_ps(d1, v), m1);
                        _mm256_storeu_ps(o.as_mut_ptr().add(16 * p + 8 * e), y);
                    }
                }
            }
        }
    }
}

/// 16 signed bytes as two vectors of 8 floats, exactly (Q4_K's nibbles, 0..15, read the same
/// signed or unsigned).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn widen(bytes: std::arch::x86_64::__m128i) -> [std::arch::x86_64::__m256; 2] {
    use std::arch::x86_64::*;
    [
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(bytes, 8))),
    ]
}

/// ggml's `get_scale_min_k4`: scale and min `j` (of 8) from a Q4_K block's 12 packed bytes.
#[cfg(target_arch = "x86_64")]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// ggml's `dequantize_row_q6_K` in candle's order (`BlockQ6K::to_float`): for each 128 inputs,
/// four 32-input quarters whose 6-bit values are a nibble of `ql` and two bits of `qh`, minus
/// 32; each 16 inputs share a signed scale: `(d · sc) · q`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(unsafe_code)]
unsafe fn decode_q6k_avx2(bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert_eq!(out.len() / 256 * Q6K_BYTES, bytes.len());
    let low4 = _mm256_set1_epi8(0x0f);
    let low2 = _mm256_set1_epi8(0x03);
    let bias = _mm256_set1_epi8(32);
    for (x, o) in bytes.chunks_exact(Q6K_BYTES).zip(out.chunks_exact_mut(256)) {
        let d = scale_f16c(&x[208..210]);
        let scales = &x[192..208];
        for (half, o) in o.chunks_exact_mut(128).enumerate() {
            // SAFETY: 64 bytes of `ql` and 32 of `qh` per 128 inputs, inside the block.
            let ql0 = _mm256_loadu_si256(x[64 * half..].as_ptr().cast());
            let ql1 = _mm256_loadu_si256(x[64 * half + 32..].as_ptr().cast());
            let qh = _mm256_loadu_si256(x[128 + 32 * half..].as_ptr().cast());
            let high = |shift: i32| {
                let shifted = match shift {
                    0 => qh,
                    2 => _mm256_srli_epi16(qh, 2),
                    4 => _mm256_srli_epi16(qh, 4),
                    _ => _mm256_srli_epi16(qh, 6),
                };
                _mm256_slli_epi16(_mm256_and_si256(shifted, low2), 4)
            };
            let quarters = [
                _mm256_or_si256(_mm256_and_si256(ql0, low4), high(0)),
                _mm256_or_si256(_mm256_and_si256(ql1, low4), high(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), high(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), high(6)),
            ];
            for (qi, (q, o)) in quarters.into_iter().zip(o.chunks_exact_mut(32)).enumerate() {
                let q = _mm256_sub_epi8(q, bias);
                let parts = [_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)];
                for (p, part) in parts.into_iter().enumerate() {
                    // Inputs 16p..16p+16 of the quarter share scale `p + 2 qi` of this half.
                    let sc = scales[8 * half + p + 2 * qi] as i8;
                    let ds = _mm256_set1_ps(d * f32::from(sc));
                    for (e, v) in widen(part).into_iter().enumerate() {
                        _mm256_storeu_ps(o.as_mut_ptr().add(16 * p + 8 * e), _mm256_mul_ps(ds, v));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// The AVX2 decoders agree with candle's `to_float` bit for bit.
    #[test]
    fn fast_decoders_equal_candles() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (3, 512), &dev)?;
        for ty in [
            GgmlDType::Q8_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&w, ty)?;
            let want = q.dequantize(&dev)?.flatten_all()?.to_vec1::<f32>()?;
            let bytes = q.data()?;
            let (decode, _, _) = decoder(ty).expect("block type");
            let mut got = vec![0f32; want.len()];
            decode(&bytes, &mut got);
            assert_eq!(got, want, "{ty:?}");
        }
        Ok(())
    }

    /// The decoders take rows that start at any byte, on this CPU's path and candle's.
    #[test]
    fn decoders_take_unaligned_rows() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (1, 256), &dev)?;
        let q = QTensor::quantize(&w, GgmlDType::Q6K)?;
        let want = q.dequantize(&dev)?.flatten_all()?.to_vec1::<f32>()?;
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&q.data()?);
        for decode in [decode_q6k, decode_blocks::<BlockQ6K>] {
            let mut got = vec![0f32; 256];
            decode(&shifted[1..], &mut got);
            assert_eq!(got, want);
        }
        Ok(())
    }
}
