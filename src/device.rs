//! Where the model runs: the device and the dtype of its weights and activations.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

use candle_core::quantized::GgmlDType;

use crate::model::{bf16_matmul, quant_kernel};

/// `--device`: `auto` takes the first CUDA GPU when this build has CUDA and one is present.
pub fn pick_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(match candle_core::utils::cuda_is_available() {
            true => Device::new_cuda(0).unwrap_or(Device::Cpu),
            false => Device::Cpu,
        }),
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            if !candle_core::utils::cuda_is_available() {
                bail!("--device {cuda}: this dcoder was built without CUDA; rebuild with `cargo build --release --features cuda` or use --device cpu");
            }
            let ordinal = match cuda.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .with_context(|| format!("--device {cuda}: expected cuda:N"))?,
                None => 0,
            };
            Device::new_cuda(ordinal)
                .with_context(|| format!("--device {cuda}: cannot open the GPU"))
        }
        other => bail!("--device {other}: expected auto, cpu, cuda or cuda:N"),
    }
}

/// The `--quant` a registry model of `params` weights takes when neither `--quant` nor
/// `--dtype` is given, Q8_0:
/// - on a CPU with AVX512-VNNI when free memory holds the Q8_0 weights and candle's repacked
///   copy of them ([`quant_kernel::repack_fits`]): those kernels measured 1.6-1.8x faster than
///   dcoder's bf16 kernel at 4- and 32-row steps, in 0.8x its memory (`docs/benchmarks.md`,
///   section 8.8); without the copy Q8_0 is 0.7-0.8x bf16 there, so the rule below decides;
/// - on a CPU with AMX-INT8 (Sapphire Rapids and later Xeons), where Q8_0 products run on AMX
///   tiles with one copy of the weights: 2.3-2.8x faster than bf16 at 32-row block steps and
///   1.1-1.4x at 4 rows even without candle's copy, in half bf16's memory (section 8.9);
/// - on a CPU without dcoder's bf16 kernel but with its tiled Q8_0 kernel (AVX2), where it
///   measured 1.9x (1 row) to 2.7x (32-row block steps) faster than f32, in a quarter of the
///   memory (section 8.1).
///
/// The model is quantized once into dcoder's cache. Elsewhere (AVX512-BF16 runs bf16; ARM and
/// plain x86 were not measured; GPUs) none.
pub fn default_quant(device: &Device, params: Option<u64>) -> Option<&'static str> {
    // Q8_0: 34 bytes per 32 weights.
    let q8_0 = params.map(|p| p / 32 * 34);
    let repacked = quant_kernel::vnni_repack()
        && q8_0.is_some_and(|bytes| {
            quant_kernel::repack_fits(bytes, available_memory().map(|a| a.saturating_sub(bytes)))
        });
    // The kernel of a 32-row block step's Q8_0 products.
    let step = quant_kernel::kernel(32, GgmlDType::Q8_0);
    let tiled = !bf16_matmul::available() && step == quant_kernel::Kernel::Tiled;
    let amx = step == quant_kernel::Kernel::Amx;
    (device.is_cpu() && (repacked || tiled || amx)).then_some("q8_0")
}

/// `cpu`, `cuda:0`, ... for reports.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// `--dtype`, or the device's default: bf16 on a GPU. On the CPU, bf16 where `prefer_bf16` and
/// this CPU runs dcoder's bf16 kernel (AVX512-BF16: about 2.5x faster than f32, with the
/// matmul inputs rounded to bf16 as on a GPU), else f32: the reference's own numbers, which
/// local folders get so that they reproduce the reference token for token.
pub fn pick_dtype(spec: Option<&str>, device: &Device, prefer_bf16: bool) -> Result<DType> {
    match spec {
        None => Ok(
            if !device.is_cpu() || (prefer_bf16 && bf16_matmul::available()) {
                DType::BF16
            } else {
                DType::F32
            },
        ),
        Some("f32") => Ok(DType::F32),
        Some("bf16") => Ok(DType::BF16),
        Some("f16") => Ok(DType::F16),
        Some(other) => bail!("--dtype {other}: expected f32, bf16 or f16"),
    }
}

/// Refuses a CPU load of `elements` weights in `dtype` that would not fit in free memory, before
/// reading gigabytes rather than letting the system swap or kill the process.
pub fn ensure_fits(elements: usize, dtype: DType, device: &Device) -> Result<()> {
    let need = elements as u64 * dtype.size_in_bytes() as u64;
    ensure_bytes_fit(need, dtype.as_str(), elements, device)
}

/// [`ensure_fits`] for weights quantized to `ty` (named `name`) as they are made.
pub fn ensure_quantized_fits(
    elements: usize,
    ty: GgmlDType,
    name: &str,
    device: &Device,
) -> Result<()> {
    let need = (elements as f64 * ty.type_size() as f64 / ty.block_size() as f64) as u64;
    ensure_bytes_fit(need, name, elements, device)
}

/// Refuses `need` bytes of weights (`elements` of them, in type `name`) that free memory would
/// not hold, naming the quantized type that would.
fn ensure_bytes_fit(need: u64, name: &str, elements: usize, device: &Device) -> Result<()> {
    match available_memory().filter(|&a| device.is_cpu() && need > usable(a)) {
        Some(avail) => bail!(
            "the weights need {} in {name} but only {} of memory is free; {}",
            indicatif::HumanBytes(need),
            indicatif::HumanBytes(avail),
            fitting_quant(elements as u64, avail)
        ),
        None => Ok(()),
    }
}

/// What a load may take of the free memory: the rest is for activations, caches and the OS.
fn usable(avail: u64) -> u64 {
    avail / 20 * 19
}

/// GGUF block types from the most to the least precise, with their bits per weight
/// (ggml-common.h: Q8_0 34 bytes per 32 weights, Q6_K 210 and Q4_K 144 per 256).
const QUANT_BITS: [(&str, f64); 3] = [("q8_0", 8.5), ("q6_k", 6.5625), ("q4_k", 4.5)];

/// The advice for weights of `elements` that do not fit `avail` bytes: the most precise
/// `--quant` type that fits, or that none does.
pub fn fitting_quant(elements: u64, avail: u64) -> String {
    let size = |bits: f64| (elements as f64 * bits / 8.0) as u64;
    match QUANT_BITS
        .iter()
        .find(|(_, bits)| size(*bits) <= usable(avail))
    {
        Some((name, bits)) => format!(
            "--quant {name} (about {}) fits: use it, a smaller model, or a GPU",
            indicatif::HumanBytes(size(*bits))
        ),
        None => format!(
            "not even --quant q4_k (about {}) fits: use a smaller model or a GPU",
            indicatif::HumanBytes(size(4.5))
        ),
    }
}

/// Bytes of memory the kernel says a new allocation can use (`MemAvailable`), if known.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_defaults_to_f32_and_names_parse() -> Result<()> {
        assert_eq!(pick_dtype(None, &Device::Cpu, false)?, DType::F32);
        let fast = if bf16_matmul::available() {
            DType::BF16
        } else {
            DType::F32
        };
        assert_eq!(pick_dtype(None, &Device::Cpu, true)?, fast);
        assert_eq!(pick_dtype(Some("bf16"), &Device::Cpu, false)?, DType::BF16);
        assert_eq!(pick_dtype(Some("f32"), &Device::Cpu, true)?, DType::F32);
        assert!(pick_dtype(Some("f8"), &Device::Cpu, true).is_err());
        assert_eq!(describe(&pick_device("cpu")?), "cpu");
        assert!(pick_device("tpu").is_err());
        Ok(())
    }

    /// A model that does not fit is told the most precise type that does.
    #[test]
    fn advice_names_the_type_that_fits() {
        let giga = 1_000_000_000;
        assert!(fitting_quant(16 * giga, 24 * giga).starts_with("--quant q8_0 "));
        assert!(fitting_quant(16 * giga, 14 * giga).starts_with("--quant q6_k "));
        assert!(fitting_quant(16 * giga, 10 * giga).starts_with("--quant q4_k "));
        assert!(fitting_quant(16 * giga, 8 * giga).starts_with("not even --quant q4_k"));
    }
}
