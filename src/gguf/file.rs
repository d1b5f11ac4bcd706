//! One GGUF file, opened and checked: the header and metadata through candle's
//! `quantized::gguf_file` reader, every tensor's extent checked against the file's length, and
//! tensors read on demand.
//!
//! Errors name the file and what is wrong in one line (a wrong magic, a cut-off file, a tensor
//! type candle cannot read), because a GGUF usually comes from somewhere else.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};

use super::blocks::{read_tensor, FixUp};

/// ggml type ids candle cannot read, by name (ggml.h `enum ggml_type`), for the error message.
const UNSUPPORTED_TYPES: [(u32, &str); 16] = [
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
];

/// The GGUF type name of a candle block type (`Q4_K`, as llama.cpp writes it).
pub fn type_name(dtype: GgmlDType) -> &'static str {
    match dtype {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// [`type_name`] in lower case, as `--quant` and reports spell it.
pub fn lower_name(dtype: GgmlDType) -> &'static str {
    match dtype {
        GgmlDType::F32 => "f32",
        GgmlDType::F16 => "f16",
        GgmlDType::BF16 => "bf16",
        GgmlDType::Q4_0 => "q4_0",
        GgmlDType::Q4_1 => "q4_1",
        GgmlDType::Q5_0 => "q5_0",
        GgmlDType::Q5_1 => "q5_1",
        GgmlDType::Q8_0 => "q8_0",
        GgmlDType::Q8_1 => "q8_1",
        GgmlDType::Q2K => "q2_k",
        GgmlDType::Q3K => "q3_k",
        GgmlDType::Q4K => "q4_k",
        GgmlDType::Q5K => "q5_k",
        GgmlDType::Q6K => "q6_k",
        GgmlDType::Q8K => "q8_k",
    }
}

/// A `--quant` type: a block type's GGUF name in any case (`q8_0`, `Q4_K`).
pub fn parse_type(name: &str) -> Result<GgmlDType> {
    use GgmlDType::*;
    [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K]
        .into_iter()
        .find(|t| lower_name(*t).eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            anyhow!("--quant {name}: expected a ggml block type: q8_0, q6_k, q5_k, q4_k, q4_0, q5_0, q5_1, q4_1, q3_k or q2_k")
        })
}

/// A `dcoder quantize --quant` type: a block type, or `f32` / `f16` for an unquantized file
/// (as the converter's `--outtype f32`), which gives exactly the safetensors model's numbers.
pub fn parse_file_type(name: &str) -> Result<GgmlDType> {
    match name.to_ascii_lowercase().as_str() {
        "f32" => Ok(GgmlDType::F32),
        "f16" => Ok(GgmlDType::F16),
        _ => parse_type(name).map_err(|e| anyhow!("{e}, or f32 / f16 for an unquantized file")),
    }
}

/// Whether a tensor of this type is stored in quantized blocks (not f32/f16/bf16).
pub fn is_block_type(dtype: GgmlDType) -> bool {
    !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

/// An open GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    content: Content,
    reader: Mutex<BufReader<File>>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile> {
        let shown = path.display();
        let file = File::open(path).with_context(|| format!("opening {shown}"))?;
        let size = file
            .metadata()
            .with_context(|| format!("reading {shown}"))?
            .len();
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| read_error(path, size, &e))?;
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            // ggml quantizes along rows (the first `ne`, candle's last dim).
            let row = info.shape.dims().last().copied().unwrap_or(1);
            if !row.is_multiple_of(block) {
                bail!(
                    "{shown}: tensor {name} has rows of {row} values, not a whole number of {block}-value {} blocks",
                    type_name(info.ggml_dtype)
                );
            }
            let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
            let end = content
                .tensor_data_offset
                .saturating_add(info.offset)
                .saturating_add(bytes);
            if end > size {
                bail!("{shown}: truncated: tensor {name} ends at byte {end} but the file has {size} bytes; download it again");
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            reader: Mutex::new(reader),
        })
    }

    /// Drops the metadata the tokenizer was built from (tokens, merges, token types, an HF
    /// tokenizer.json), which is by far the largest and is not read again.
    pub fn forget_tokenizer_arrays(&mut self) {
        for key in [
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.token_type",
            "tokenizer.huggingface.json",
        ] {
            self.content.metadata.remove(key);
        }
        self.content.metadata.shrink_to_fit();
    }

    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// A required string.
    pub fn string(&self, key: &str) -> Result<&str> {
        match self.metadata(key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => bail!("{}: {key} is {other:?}, not a string", self.path.display()),
            None => bail!("{}: no {key} in the metadata", self.path.display()),
        }
    }

    /// An integer, when present.
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        let v = match self.metadata(key) {
            None => return Ok(None),
            Some(Value::U8(v)) => *v as u64,
            Some(Value::U16(v)) => *v as u64,
            Some(Value::U32(v)) => *v as u64,
            Some(Value::U64(v)) => *v,
            Some(Value::I8(v)) if *v >= 0 => *v as u64,
            Some(Value::I16(v)) if *v >= 0 => *v as u64,
            Some(Value::I32(v)) if *v >= 0 => *v as u64,
            Some(Value::I64(v)) if *v >= 0 => *v as u64,
            Some(other) => bail!(
                "{}: {key} is {other:?}, not a non-negative integer",
                self.path.display()
            ),
        };
        Ok(Some(v))
    }

    /// A required integer.
    pub fn required_uint(&self, key: &str) -> Result<u64> {
        self.uint(key)?
            .ok_or_else(|| anyhow!("{}: no {key} in the metadata", self.path.display()))
    }

    /// A float, when present.
    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.metadata(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v as f64)),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(other) => bail!("{}: {key} is {other:?}, not a float", self.path.display()),
        }
    }

    /// A required array.
    pub fn array(&self, key: &str) -> Result<&[Value]> {
        match self.metadata(key) {
            Some(Value::Array(v)) => Ok(v),
            Some(other) => bail!(
                "{}: {key} is {:?}, not an array",
                self.path.display(),
                other.value_type()
            ),
            None => bail!("{}: no {key} in the metadata", self.path.display()),
        }
    }

    /// Type and dims (PyTorch order: `[out, in]`) of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Option<(GgmlDType, &[usize])> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| (i.ggml_dtype, i.shape.dims()))
    }

    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.content.tensor_infos.keys().map(String::as_str)
    }

    /// Reads tensor `name` into host memory, applying `fix` to its bytes.
    pub fn read(&self, name: &str, fix: FixUp) -> candle_core::Result<QTensor> {
        self.read_part(name, None, fix)
    }

    /// Reads slice `part` of tensor `name`'s first (outermost) dimension, or all of it: expert
    /// `e` of a stacked `[experts, out, in]` tensor is one contiguous run of whole blocks.
    pub fn read_part(
        &self,
        name: &str,
        part: Option<usize>,
        fix: FixUp,
    ) -> candle_core::Result<QTensor> {
        let mut reader = self
            .reader
            .lock()
            .map_err(|_| candle_core::Error::msg("the GGUF reader lock is poisoned"))?;
        let shown = |e: &dyn std::fmt::Display| {
            candle_core::Error::msg(format!("{}: {name}: {e}", self.path.display()))
        };
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| shown(&"no such tensor"))?;
        let mut offset = self.content.tensor_data_offset + info.offset;
        let mut dims = info.shape.dims();
        if let Some(part) = part {
            let (&count, inner) = dims.split_first().ok_or_else(|| shown(&"a scalar"))?;
            if part >= count {
                return Err(shown(&format!("no slice {part} of {count}")));
            }
            let elems: usize = inner.iter().product();
            let dtype = info.ggml_dtype;
            offset += (part * elems / dtype.block_size() * dtype.type_size()) as u64;
            dims = inner;
        }
        read_tensor(&mut *reader, offset, info.ggml_dtype, dims, fix).map_err(|e| shown(&e))
    }
}

/// The reader's error in one line naming the file: not a GGUF, cut off, or a type candle lacks.
fn read_error(path: &Path, size: u64, e: &candle_core::Error) -> anyhow::Error {
    let shown = path.display();
    let text = e.to_string();
    if text.contains("unknown magic") {
        return anyhow!("{shown}: not a GGUF file (wrong magic; {text})");
    }
    let type_id = text
        .split_once("unknown dtype for tensor ")
        .and_then(|(_, n)| {
            let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
    if let Some(id) = type_id {
        let name = UNSUPPORTED_TYPES
            .iter()
            .find(|(i, _)| *i == id)
            .map_or("an unknown type".to_string(), |(_, n)| n.to_string());
        return anyhow!("{shown}: a tensor has ggml type {id} ({name}), which dcoder cannot read (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)");
    }
    let cut = matches!(e, candle_core::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
        || text.contains("remaining");
    if cut {
        return anyhow!(
            "{shown}: truncated or corrupt GGUF header ({size} bytes; {text}); download it again"
        );
    }
    anyhow!("{shown}: unreadable GGUF: {text}")
}
