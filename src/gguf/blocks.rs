//! A tensor's ggml blocks read from the file straight into the storage candle computes on.
//!
//! candle's `Content::tensor` reads a tensor's bytes into a buffer and then copies them into a
//! `Vec` of blocks (`ggml_file::from_raw_data`), so every tensor briefly lives twice. For the
//! largest tensors (a 126k-token embedding and head are a quarter of a small model) that copy
//! set the peak memory of a GGUF run at ~1.45x the file (docs/benchmarks.md, 8.5). Reading into
//! the final `Vec<T>` keeps the peak at the file's size plus the process's own needs.

use std::io::{Read, Seek, SeekFrom};

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType,
};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::Result;
use half::{bf16, f16};

/// Bytes of a tensor, changed in place after reading (the loader undoes the converter's row
/// permutation this way, without a second copy).
pub type FixUp<'a> = &'a dyn Fn(&mut [u8]) -> Result<()>;

/// Reads the `dims` tensor of type `dtype` that starts at byte `offset` of `reader`, then
/// applies `fix` to its bytes.
pub fn read_tensor<R: Read + Seek>(
    reader: &mut R,
    offset: u64,
    dtype: GgmlDType,
    dims: &[usize],
    fix: FixUp,
) -> Result<QTensor> {
    let elems: usize = dims.iter().product();
    if !elems.is_multiple_of(dtype.block_size()) {
        candle_core::bail!(
            "{elems} values are not a whole number of {}-value blocks",
            dtype.block_size()
        );
    }
    let blocks = elems / dtype.block_size();
    reader.seek(SeekFrom::Start(offset))?;
    let storage = match dtype {
        GgmlDType::F32 => read_blocks::<f32, R>(reader, blocks, fix)?,
        GgmlDType::F16 => read_blocks::<f16, R>(reader, blocks, fix)?,
        GgmlDType::BF16 => read_blocks::<bf16, R>(reader, blocks, fix)?,
        GgmlDType::Q4_0 => read_blocks::<BlockQ4_0, R>(reader, blocks, fix)?,
        GgmlDType::Q4_1 => read_blocks::<BlockQ4_1, R>(reader, blocks, fix)?,
        GgmlDType::Q5_0 => read_blocks::<BlockQ5_0, R>(reader, blocks, fix)?,
        GgmlDType::Q5_1 => read_blocks::<BlockQ5_1, R>(reader, blocks, fix)?,
        GgmlDType::Q8_0 => read_blocks::<BlockQ8_0, R>(reader, blocks, fix)?,
        GgmlDType::Q8_1 => read_blocks::<BlockQ8_1, R>(reader, blocks, fix)?,
        GgmlDType::Q2K => read_blocks::<BlockQ2K, R>(reader, blocks, fix)?,
        GgmlDType::Q3K => read_blocks::<BlockQ3K, R>(reader, blocks, fix)?,
        GgmlDType::Q4K => read_blocks::<BlockQ4K, R>(reader, blocks, fix)?,
        GgmlDType::Q5K => read_blocks::<BlockQ5K, R>(reader, blocks, fix)?,
        GgmlDType::Q6K => read_blocks::<BlockQ6K, R>(reader, blocks, fix)?,
        GgmlDType::Q8K => read_blocks::<BlockQ8K, R>(reader, blocks, fix)?,
    };
    QTensor::new(storage, dims)
}

/// `n` blocks of `T`, read in place.
fn read_blocks<T: GgmlType + 'static, R: Read>(
    reader: &mut R,
    n: usize,
    fix: FixUp,
) -> Result<QStorage> {
    let size = T::DTYPE.type_size();
    // The byte view below relies on the block being exactly its ggml size, which is how candle
    // itself reinterprets file bytes as blocks (`quantized::as_t_slice`).
    if std::mem::size_of::<T>() != size {
        candle_core::bail!(
            "{:?} blocks are {} bytes in memory but {size} in the file",
            T::DTYPE,
            std::mem::size_of::<T>()
        );
    }
    let mut blocks = vec![T::zeros(); n];
    let len = n * size;
    // SAFETY: `blocks` owns `n` initialised values of `T`, `size_of::<T>() * n == len` bytes
    // (checked above), and nothing else refers to it while the slice lives. ggml blocks are
    // plain `#[repr(C)]` structs of f16 scales and integer arrays with no padding and no
    // invalid bit patterns, so any bytes the file holds make valid values.
    #[allow(unsafe_code)]
    let bytes = unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), len) };
    reader.read_exact(bytes)?;
    fix(bytes)?;
    Ok(QStorage::Cpu(Box::new(blocks)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn blocks_read_in_place_equal_candles_reader() -> anyhow::Result<()> {
        let values: Vec<f32> = (0..2 * 256)
            .map(|i| ((i * 37 % 101) as f32) / 13.0 - 3.0)
            .collect();
        let t = Tensor::from_vec(values, (2, 256), &Device::Cpu)?;
        for dtype in [
            GgmlDType::F32,
            GgmlDType::F16,
            GgmlDType::BF16,
            GgmlDType::Q8_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&t, dtype)?;
            let data = q.data()?.to_vec();
            let mut file = vec![7u8; 5];
            file.extend_from_slice(&data);
            let read = read_tensor(
                &mut std::io::Cursor::new(file),
                5,
                dtype,
                &[2, 256],
                &|_| Ok(()),
            )?;
            assert_eq!(read.dtype(), dtype);
            assert_eq!(read.shape().dims(), &[2, 256]);
            assert_eq!(read.data()?.to_vec(), data, "{dtype:?}");
        }
        Ok(())
    }

    #[test]
    fn a_short_file_is_an_error() {
        let file = vec![0u8; 40];
        let read = read_tensor(
            &mut std::io::Cursor::new(file),
            0,
            GgmlDType::Q8_0,
            &[2, 32],
            &|_| Ok(()),
        );
        assert!(read.is_err());
    }
}
