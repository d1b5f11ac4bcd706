//! Where the model runs: the device and the dtype of its weights and activations.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

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

/// `cpu`, `cuda:0`, ... for reports.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// `--dtype`, or the device's default: f32 on the CPU (candle's CPU bf16 matmul widens to f32
/// and is slower), bf16 on a GPU.
pub fn pick_dtype(spec: Option<&str>, device: &Device) -> Result<DType> {
    match spec {
        None => Ok(if device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        }),
        Some("f32") => Ok(DType::F32),
        Some("bf16") => Ok(DType::BF16),
        Some("f16") => Ok(DType::F16),
        Some(other) => bail!("--dtype {other}: expected f32, bf16 or f16"),
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
        assert_eq!(pick_dtype(None, &Device::Cpu)?, DType::F32);
        assert_eq!(pick_dtype(Some("bf16"), &Device::Cpu)?, DType::BF16);
        assert!(pick_dtype(Some("f8"), &Device::Cpu).is_err());
        assert_eq!(describe(&pick_device("cpu")?), "cpu");
        assert!(pick_device("tpu").is_err());
        Ok(())
    }
}
