//! GGUF models (llama.cpp's file format) as a model source: one file holding the weights (f32,
//! f16, bf16 or ggml block-quantized), the hyper-parameters, the tokenizer, the chat template and
//! the special ids.
//!
//! - [`file`]: the file, read through candle's `quantized::gguf_file` and checked;
//! - [`blocks`]: a tensor's blocks read in place, without candle's transient copy;
//! - [`config`]: metadata to the config.json the network reads;
//! - [`names`]: checkpoint tensor names to GGUF names;
//! - [`tokenizer`]: the tokenizer, special ids and template from the metadata;
//! - [`weights`]: the tensors as a `VarBuilder` backend and a quantized-weight source, with the
//!   converter's LLaDA q/k permutation undone.
//!
//! Which dcoder architecture a file is: `llada` and `dream` say so; a `qwen2`/`qwen3` file does
//! not say it is a block-diffusion model, so the family comes from `--family` (bd3lm or sdar).

#[cfg(test)]
mod agreement;
pub mod blocks;
pub mod cache;
pub mod config;
pub mod file;
pub mod names;
pub mod tokenizer;
pub mod weights;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use crate::model::Body;
use crate::registry::Arch;
use file::{lower_name, GgufFile};
use weights::GgufWeights;

/// An opened GGUF model: its architecture and the config.json-shaped facts dcoder reads.
#[derive(Debug)]
pub struct GgufModel {
    pub file: Arc<GgufFile>,
    pub arch: Arch,
    /// `general.architecture`.
    pub gguf_arch: String,
    /// The network's config.json, with the special ids (`mask_token_id`, ...).
    pub config: Value,
    /// tokenizer_config.json's token texts and `chat_template`.
    pub tokenizer_config: Value,
    /// The tokenizer the metadata describes, built when the file is opened.
    tokenizer: Box<tokenizers::Tokenizer>,
}

/// The dcoder architecture of a GGUF architecture, given `--family`.
fn arch_of(path: &Path, gguf_arch: &str, family: Option<Arch>) -> Result<Arch> {
    let shown = path.display();
    let fixed = match gguf_arch {
        "llada" => Some(Arch::Llada),
        "dream" => Some(Arch::Dream),
        "llada-moe" => Some(Arch::LladaMoe),
        "llada2" => Some(Arch::Llada2),
        "qwen2" | "qwen3" => None,
        other => bail!("{shown}: general.architecture '{other}' is not one dcoder runs (llada, dream, llada-moe, llada2, or qwen2/qwen3 with --family bd3lm|sdar)"),
    };
    match (fixed, family) {
        (Some(arch), None) => Ok(arch),
        (Some(arch), Some(f)) if f == arch => Ok(arch),
        (Some(arch), Some(f)) => bail!(
            "--family {}: {shown} is a {} model; --family applies to qwen2/qwen3 files",
            f.name(),
            arch.name()
        ),
        (None, Some(f @ (Arch::Bd3lm | Arch::Sdar))) => Ok(f),
        (None, Some(f)) => bail!(
            "--family {}: a {gguf_arch} body runs as bd3lm or sdar",
            f.name()
        ),
        (None, None) => bail!("{shown}: a {gguf_arch} GGUF does not say which diffusion sampler it was trained for; pass --family bd3lm or --family sdar"),
    }
}

impl GgufModel {
    pub fn open(path: &Path, family: Option<Arch>) -> Result<GgufModel> {
        let mut file = GgufFile::open(path)?;
        let gguf_arch = file.string("general.architecture")?.to_string();
        let arch = arch_of(path, &gguf_arch, family)?;
        let body = arch.body();
        if config::body_of(&gguf_arch) != Some(body) {
            bail!(
                "{}: a {gguf_arch} file cannot run as {}",
                path.display(),
                arch.name()
            );
        }
        let mut config = config::config_json(&file, &gguf_arch, body)?;
        let (ids, tokenizer_config) = tokenizer::token_configs(&file)?;
        let built = tokenizer::build(&file)?;
        // The vocabulary's metadata arrays (some 20 MB for a 126k vocabulary) have served their
        // purpose: freed now, before the weights load, they are not part of the peak.
        file.forget_tokenizer_arrays();
        if let (Value::Object(c), Value::Object(ids)) = (&mut config, ids) {
            c.extend(ids);
        }
        Ok(GgufModel {
            file: Arc::new(file),
            arch,
            gguf_arch,
            config,
            tokenizer_config,
            tokenizer: Box::new(built),
        })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    pub fn tokenizer(&self) -> tokenizers::Tokenizer {
        (*self.tokenizer).clone()
    }

    /// The tensors under the names of `body`'s checkpoints.
    pub fn weights(&self, body: Body) -> Result<Arc<GgufWeights>> {
        let (heads, kv) = config::head_counts(&self.file, &self.gguf_arch)?;
        Ok(Arc::new(GgufWeights::new(
            self.file.clone(),
            body,
            heads,
            kv,
        )))
    }

    /// The file's most common matmul weight type (`q8_0`; a Q4_K_M file says `q4_k`), for
    /// reports: what the linear layers run on, not `general.file_type`.
    pub fn weight_label(&self) -> &'static str {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for name in self.file.tensor_names() {
            if let Some((dtype, dims)) = self.file.tensor_info(name) {
                if dims.len() == 2 && name != "token_embd.weight" {
                    *counts.entry(lower_name(dtype)).or_default() += 1;
                }
            }
        }
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map_or("f32", |(t, _)| t)
    }

    /// Bytes of tensor data: what the weights take in memory as stored.
    pub fn weight_bytes(&self) -> u64 {
        self.file
            .tensor_names()
            .filter_map(|n| self.file.tensor_info(n))
            .map(|(dtype, dims)| {
                let elems: usize = dims.iter().product();
                match file::is_block_type(dtype) {
                    true => (elems / dtype.block_size() * dtype.type_size()) as u64,
                    // Float tensors load into f32.
                    false => elems as u64 * 4,
                }
            })
            .sum()
    }
}

/// The GGUF file `arg` names: the file itself, or the one `.gguf` in a folder that has no
/// config.json. `None` when `arg` is neither (a model folder, a registry name, a repo).
pub fn find_file(arg: &Path) -> Result<Option<PathBuf>> {
    if arg.is_file() {
        return match arg.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("gguf") => Ok(Some(arg.to_path_buf())),
            _ => bail!(
                "--model {}: a file, but not a .gguf; give a .gguf file or a model folder",
                arg.display()
            ),
        };
    }
    if !arg.is_dir() || arg.join("config.json").is_file() {
        return Ok(None);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(arg)
        .map_err(|e| anyhow!("reading {}: {e}", arg.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        })
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => bail!(
            "--model {}: {n} .gguf files here ({}); name one of them",
            arg.display(),
            found
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The file of a hub repo's `files` that `--quant quant` names: a `.gguf` whose name holds the
/// type as a whole word (`model-Q4_K_M.gguf` for `q4_k_m`, not for `q4_k`), as llama.cpp's
/// `-hf org/name:Q4_K_M` and ollama pick one. Split files and vision projectors are not models.
pub fn choose_file(repo: &str, files: &[String], quant: &str) -> Result<String> {
    let want = quant.to_ascii_uppercase();
    let ggufs: Vec<&String> = files
        .iter()
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
        .filter(|f| !f.to_ascii_lowercase().contains("mmproj"))
        .collect();
    let word = |name: &str| -> bool {
        let upper = name.to_ascii_uppercase();
        let bytes = upper.as_bytes();
        upper.match_indices(&want).any(|(i, _)| {
            let before = i.checked_sub(1).map(|j| bytes[j]);
            let after = bytes.get(i + want.len()).copied();
            before.is_none_or(|b| !b.is_ascii_alphanumeric())
                && after.is_none_or(|b| !b.is_ascii_alphanumeric() && b != b'_')
        })
    };
    let matching: Vec<&String> = ggufs.iter().copied().filter(|f| word(f)).collect();
    match matching.as_slice() {
        [one] if one.contains("-of-") => bail!("{repo}: {one} is one part of a split GGUF; dcoder reads single-file GGUFs (merge the parts with llama.cpp's gguf-split --merge)"),
        [one] => Ok(one.to_string()),
        [] if ggufs.is_empty() => bail!("{repo}: no .gguf files in this repo; --quant picks one of a GGUF repo's files"),
        [] => bail!(
            "--quant {quant}: {repo} has no file of that type; it has {}",
            ggufs.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
        ),
        many => bail!(
            "--quant {quant}: several files of {repo} match ({}); name the file with --model",
            many.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_picks_one_file_of_a_gguf_repo() {
        let files: Vec<String> = [
            "README.md",
            "Model-Q4_K_M.gguf",
            "Model-Q4_K_S.gguf",
            "Model-Q8_0.gguf",
            "model.q5_k_m.gguf",
            "mmproj-Model-Q8_0.gguf",
            "Big-Q6_K-00001-of-00002.gguf",
        ]
        .map(String::from)
        .to_vec();
        let pick = |q: &str| choose_file("org/m", &files, q);
        assert_eq!(pick("q4_k_m").ok().as_deref(), Some("Model-Q4_K_M.gguf"));
        assert_eq!(pick("Q8_0").ok().as_deref(), Some("Model-Q8_0.gguf"));
        assert_eq!(pick("Q5_K_M").ok().as_deref(), Some("model.q5_k_m.gguf"));
        let err = pick("Q4_K").expect_err("Q4_K is not Q4_K_M").to_string();
        assert!(
            err.contains("no file of that type") && err.contains("Model-Q4_K_S.gguf"),
            "{err}"
        );
        let err = pick("Q6_K").expect_err("split").to_string();
        assert!(err.contains("split GGUF"), "{err}");
        let err = choose_file("org/m", &["a.safetensors".to_string()], "Q8_0")
            .expect_err("none")
            .to_string();
        assert!(err.contains("no .gguf files"), "{err}");
        let two = ["a-Q8_0.gguf", "b-Q8_0.gguf"].map(String::from).to_vec();
        let err = choose_file("org/m", &two, "q8_0")
            .expect_err("two")
            .to_string();
        assert!(err.contains("several files"), "{err}");
    }

    #[test]
    fn family_is_needed_for_qwen_bodies_only() {
        let p = Path::new("m.gguf");
        assert_eq!(arch_of(p, "llada", None).ok(), Some(Arch::Llada));
        assert_eq!(arch_of(p, "qwen3", Some(Arch::Sdar)).ok(), Some(Arch::Sdar));
        let err = arch_of(p, "qwen3", None)
            .expect_err("needs family")
            .to_string();
        assert!(err.contains("--family bd3lm"), "{err}");
        let err = arch_of(p, "dream", Some(Arch::Bd3lm))
            .expect_err("foreign")
            .to_string();
        assert!(err.contains("--family bd3lm"), "{err}");
        let err = arch_of(p, "llama", None).expect_err("unknown").to_string();
        assert!(err.contains("general.architecture 'llama'"), "{err}");
    }
}
