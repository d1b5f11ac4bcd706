//! Where `--quant TYPE` keeps the GGUF it writes from a safetensors model: dcoder's own cache,
//! next to (never inside) the Hugging Face cache, keyed by repo, revision and type.
//!
//! `$DCODER_CACHE`, else `$XDG_CACHE_HOME/dcoder`, else `~/.cache/dcoder`, then
//! `quantized/<org>--<name>/<commit>/<type>.gguf` for hub models (the commit of the snapshot
//! the weights came from) and `quantized/local/<folder name>-<key>/<type>.gguf` for folders,
//! where the key hashes the folder's path and its weights' sizes and modification times, so an
//! edited checkpoint gets a new file.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use candle_core::quantized::GgmlDType;

use super::file::lower_name;
use crate::hub::{ModelFiles, Source};

fn root() -> Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("DCODER_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("dcoder")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/dcoder")))
        .ok_or_else(|| anyhow!("no cache folder: set DCODER_CACHE or HOME"))
}

/// The cached GGUF of `source` in `ty` (its folder created).
pub fn path_for(source: &Source, files: &ModelFiles, ty: GgmlDType) -> Result<PathBuf> {
    let snapshot = files.config.parent();
    let dir = match source {
        Source::Registry(_) | Source::Repo { .. } => {
            let repo = source.label().replace('/', "--");
            let commit = snapshot
                .and_then(|d| d.file_name())
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_else(|| "unknown".into());
            // A registry entry's label is its name; key by the repo it downloads.
            let repo = match source {
                Source::Registry(spec) => spec.repo.replace('/', "--"),
                _ => repo,
            };
            root()?.join("quantized").join(repo).join(commit)
        }
        Source::Dir(dir) => {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::fs::canonicalize(dir)
                .unwrap_or_else(|_| dir.clone())
                .hash(&mut hasher);
            for w in &files.weights {
                let meta =
                    std::fs::metadata(w).with_context(|| format!("reading {}", w.display()))?;
                meta.len().hash(&mut hasher);
                meta.modified().ok().hash(&mut hasher);
            }
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            root()?
                .join("quantized/local")
                .join(format!("{name}-{:016x}", hasher.finish()))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("{}.gguf", lower_name(ty))))
}
