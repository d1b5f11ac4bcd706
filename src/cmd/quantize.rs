//! `dcoder quantize MODEL --quant TYPE -o FILE.gguf`: a safetensors model written as a GGUF
//! with its matmul weights in a ggml block type (see `gguf/writer.rs` for what keeps which type),
//! or unquantized (`f32`, `f16`).

use anyhow::{bail, Result};

use crate::cli::QuantizeArgs;
use crate::gguf::file::parse_file_type;
use crate::hub::Source;
use crate::registry::Registry;
use crate::session::Checkpoint;

pub fn run(args: &QuantizeArgs) -> Result<()> {
    let ty = parse_file_type(&args.quant)?;
    if !args
        .output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        bail!(
            "-o {}: the output must be a .gguf file",
            args.output.display()
        );
    }
    let source = Source::parse(Some(&args.model), Registry::builtin()?)?;
    let checkpoint = Checkpoint::locate(&source)?;
    checkpoint.write_gguf(ty, &args.output)?;
    let size = std::fs::metadata(&args.output).map_or(0, |m| m.len());
    eprintln!(
        "wrote {} ({}, {})",
        args.output.display(),
        args.quant.to_ascii_lowercase(),
        indicatif::HumanBytes(size)
    );
    Ok(())
}
