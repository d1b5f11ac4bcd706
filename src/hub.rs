//! Where a model's files come from: a local Hugging Face folder, or a hub repository through the
//! standard HF cache (`$HF_HOME/hub`, shared with Python tools).
//!
//! Downloads go through hf-hub, which writes each file to `<blob>.sync.part` and renames it only
//! when complete, then links it into `snapshots/<commit>/`. dcoder additionally checks every
//! downloaded file's size against the hub's, so a cut connection never leaves a file that a later
//! run takes for complete. `HF_HUB_OFFLINE=1` (or no network) uses the cache alone.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::api::sync::{Api, ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::registry::{ModelSpec, Registry};

const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
const TOKENIZER: &str = "tokenizer.json";
/// A slow byte-level BPE tokenizer, for repos without tokenizer.json (Dream, DiffuCoder).
const SLOW_TOKENIZER: [&str; 3] = ["vocab.json", "merges.txt", "added_tokens.json"];
/// Files used when present.
const OPTIONAL: [&str; 3] = [
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
];

/// What `--model` names.
#[derive(Debug, Clone)]
pub enum Source {
    Registry(&'static ModelSpec),
    /// A hub repository that is not in the registry (`org/name`).
    Repo {
        repo: String,
        revision: String,
    },
    /// A local path: a Hugging Face model folder, a GGUF file, or a folder holding one.
    Dir(PathBuf),
}

impl Source {
    /// Reads `--model`: an existing folder, a registry name, or `org/name[@revision]`.
    pub fn parse(arg: Option<&str>, registry: &'static Registry) -> Result<Source> {
        let Some(arg) = arg else {
            return Ok(Source::Registry(registry.default_model()?));
        };
        let path = Path::new(arg);
        if path.is_dir() || path.is_file() {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        if let Some(spec) = registry.find(arg) {
            return Ok(Source::Registry(spec));
        }
        let looks_like_path = arg.starts_with('.')
            || arg.starts_with('/')
            || arg.starts_with('~')
            || arg.matches('/').count() > 1;
        if looks_like_path || path.exists() {
            bail!("--model {arg}: no such folder");
        }
        if let Some((repo, revision)) = arg.split_once('@').or(Some((arg, "main"))) {
            if repo.split('/').filter(|p| !p.is_empty()).count() == 2 {
                return Ok(Source::Repo {
                    repo: repo.to_string(),
                    revision: revision.to_string(),
                });
            }
        }
        let hint = match registry.suggest(arg).first() {
            Some(best) => format!("did you mean '{best}'? "),
            None => String::new(),
        };
        bail!("--model {arg}: unknown model; {hint}`dcoder models` lists the registry, or give a model folder or an org/name hub repo")
    }

    /// The name reports use.
    pub fn label(&self) -> String {
        match self {
            Source::Registry(spec) => spec.name.clone(),
            Source::Repo { repo, .. } => repo.clone(),
            Source::Dir(dir) => dir.display().to_string(),
        }
    }

    pub fn spec(&self) -> Option<&'static ModelSpec> {
        match self {
            Source::Registry(spec) => Some(spec),
            _ => None,
        }
    }

    fn repo(&self) -> Option<(&str, &str)> {
        match self {
            Source::Registry(spec) => Some((&spec.repo, &spec.revision)),
            Source::Repo { repo, revision } => Some((repo, revision)),
            Source::Dir(_) => None,
        }
    }
}

/// The files of one model, all present on disk.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub generation_config: Option<PathBuf>,
    pub tokenizer_json: Option<PathBuf>,
    pub vocab_json: Option<PathBuf>,
    pub merges_txt: Option<PathBuf>,
    pub added_tokens_json: Option<PathBuf>,
    pub tokenizer_config: Option<PathBuf>,
    pub chat_template: Option<PathBuf>,
    pub weights: Vec<PathBuf>,
}

impl ModelFiles {
    /// The files of a Hugging Face model folder.
    pub fn in_dir(dir: &Path) -> Result<ModelFiles> {
        let file = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let config = file(CONFIG).ok_or_else(|| {
            anyhow!("{}: no config.json here; a model folder holds config.json, tokenizer files and *.safetensors weights", dir.display())
        })?;
        let weights = match file(WEIGHTS_INDEX) {
            Some(index) => {
                let shards = shard_names(&index)?;
                let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
                if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
                    bail!(
                        "{}: weight shard {} listed in {WEIGHTS_INDEX} is missing",
                        dir.display(),
                        missing.display()
                    );
                }
                paths
            }
            None => match file(WEIGHTS) {
                Some(w) => vec![w],
                None => bail!(
                    "{}: no {WEIGHTS} or {WEIGHTS_INDEX}; dcoder loads safetensors weights only",
                    dir.display()
                ),
            },
        };
        Ok(ModelFiles {
            config,
            generation_config: file("generation_config.json"),
            tokenizer_json: file(TOKENIZER),
            vocab_json: file(SLOW_TOKENIZER[0]),
            merges_txt: file(SLOW_TOKENIZER[1]),
            added_tokens_json: file(SLOW_TOKENIZER[2]),
            tokenizer_config: file("tokenizer_config.json"),
            chat_template: file("chat_template.jinja"),
            weights,
        })
    }
}

/// The shard file names in a `model.safetensors.index.json`, each once.
fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("{}: no weight_map", index.display()))?;
    let names: BTreeSet<String> = map
        .values()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    Ok(names.into_iter().collect())
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

fn cache_repo(repo: &str, revision: &str) -> hf_hub::CacheRepo {
    Cache::from_env().repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ))
}

/// Where the HF cache lives, for messages.
pub fn cache_dir() -> PathBuf {
    Cache::from_env().path().clone()
}

/// How much of a model is in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    Complete,
    Partial,
    Missing,
}

/// Files of `repo` the cache lacks for a run; empty when it holds everything. Without the hub's
/// file list, "everything" is config, weights and a tokenizer (tokenizer.json, or vocab.json
/// with merges.txt).
fn missing_in_cache(repo: &str, revision: &str) -> Vec<String> {
    let cache = cache_repo(repo, revision);
    let mut missing = Vec::new();
    if cache.get(CONFIG).is_none() {
        missing.push(CONFIG.to_string());
    }
    let slow = SLOW_TOKENIZER[..2].iter().all(|f| cache.get(f).is_some());
    if cache.get(TOKENIZER).is_none() && !slow {
        missing.push(format!("{TOKENIZER} (or vocab.json and merges.txt)"));
    }
    match (cache.get(WEIGHTS_INDEX), cache.get(WEIGHTS)) {
        (Some(index), _) => match shard_names(&index) {
            Ok(shards) => missing.extend(shards.into_iter().filter(|s| cache.get(s).is_none())),
            Err(_) => missing.push(WEIGHTS_INDEX.to_string()),
        },
        (None, Some(_)) => {}
        (None, None) => missing.push(format!("{WEIGHTS} (or {WEIGHTS_INDEX} and its shards)")),
    }
    missing
}

pub fn cached(spec: &ModelSpec) -> Cached {
    let missing = missing_in_cache(&spec.repo, &spec.revision);
    if missing.is_empty() {
        Cached::Complete
    } else if cache_repo(&spec.repo, &spec.revision).get(CONFIG).is_some() {
        Cached::Partial
    } else {
        Cached::Missing
    }
}

/// The files of `source`, downloading what the cache lacks unless offline.
pub fn locate(source: &Source) -> Result<ModelFiles> {
    let Some((repo, revision)) = source.repo() else {
        let Source::Dir(dir) = source else {
            unreachable!("only folders have no repo")
        };
        return ModelFiles::in_dir(dir);
    };
    let missing = missing_in_cache(repo, revision);
    if missing.is_empty() {
        return from_cache(repo, revision);
    }
    if offline() {
        bail!(
            "{} is not fully downloaded and HF_HUB_OFFLINE is set; missing from {}: {}. Run `dcoder pull {}` with network access",
            source.label(),
            cache_dir().display(),
            missing.join(", "),
            source.label()
        );
    }
    download(repo, revision).with_context(|| {
        format!(
            "downloading {repo} (cache {} lacks {})",
            cache_dir().display(),
            missing.join(", ")
        )
    })?;
    from_cache(repo, revision)
}

fn from_cache(repo: &str, revision: &str) -> Result<ModelFiles> {
    let config = cache_repo(repo, revision)
        .get(CONFIG)
        .ok_or_else(|| anyhow!("{repo}: config.json vanished from the cache"))?;
    let dir = config
        .parent()
        .ok_or_else(|| anyhow!("{}: no parent folder", config.display()))?;
    ModelFiles::in_dir(dir)
}

/// The GGUF file of `repo` whose name carries quant type `quant` (`--quant Q4_K_M`), from the
/// cache or downloaded (with the size check of every download).
pub fn locate_gguf(repo: &str, revision: &str, quant: &str) -> Result<PathBuf> {
    let cache = cache_repo(repo, revision);
    let cached = cached_file_names(repo, revision);
    if let Ok(name) = crate::gguf::choose_file(repo, &cached, quant) {
        if let Some(path) = cache.get(&name) {
            return Ok(path);
        }
    }
    if offline() {
        bail!("{repo}: no {quant} GGUF file in the cache ({}) and HF_HUB_OFFLINE is set; run once with network access", cache_dir().display());
    }
    let api = client()?;
    let (remote, listed) = listing(&api, repo, revision)?;
    let name = crate::gguf::choose_file(repo, &listed, quant)?;
    fetch(&api, &remote, &name)
}

/// Whether `repo` is a Hugging Face model folder (config.json), not a repo of GGUF files: from
/// the cache when it holds the repo, else from the hub's file list (offline: assume so).
pub fn repo_has_config(repo: &str, revision: &str) -> bool {
    let cached = cached_file_names(repo, revision);
    if !cached.is_empty() {
        return cached.iter().any(|f| f == CONFIG);
    }
    if offline() {
        return true;
    }
    let listed = client().ok().and_then(|api| {
        api.repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ))
        .info()
        .ok()
    });
    listed.is_none_or(|info| info.siblings.iter().any(|s| s.rfilename == CONFIG))
}

/// Names of the files in the cached snapshot of `repo@revision` (none when not cached).
fn cached_file_names(repo: &str, revision: &str) -> Vec<String> {
    let folder = Cache::from_env()
        .path()
        .join(format!("models--{}", repo.replace('/', "--")));
    let commit = std::fs::read_to_string(folder.join("refs").join(revision))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    std::fs::read_dir(folder.join("snapshots").join(commit))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A hub client from the environment: `HF_HOME` (cache), `HF_ENDPOINT`, and `HF_TOKEN` or the
/// token file `huggingface-cli login` writes.
fn client() -> Result<Api> {
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| Cache::from_env().token());
    ApiBuilder::from_env()
        .with_token(token)
        .with_progress(false)
        .with_retries(2)
        .build()
        .context("setting up the Hugging Face client")
}

/// `repo` at `revision` on the hub, and the names of its files.
fn listing(api: &Api, repo: &str, revision: &str) -> Result<(ApiRepo, Vec<String>)> {
    let remote = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info = remote
        .info()
        .map_err(|e| anyhow!("cannot list the files of {repo}@{revision}: {e}"))?;
    let listed = info.siblings.into_iter().map(|s| s.rfilename).collect();
    Ok((remote, listed))
}

/// Downloads every file of `repo` that a run uses and the cache lacks.
pub fn download(repo: &str, revision: &str) -> Result<()> {
    let api = client()?;
    let (remote, listed) = listing(&api, repo, revision)?;
    let listed: BTreeSet<String> = listed.into_iter().collect();
    let mut wanted: Vec<String> = vec![CONFIG.to_string()];
    wanted.extend(
        OPTIONAL
            .iter()
            .chain([&TOKENIZER])
            .filter(|f| listed.contains(**f))
            .map(|f| f.to_string()),
    );
    if !listed.contains(TOKENIZER) {
        wanted.extend(
            SLOW_TOKENIZER
                .iter()
                .filter(|f| listed.contains(**f))
                .map(|f| f.to_string()),
        );
    }
    if listed.contains(WEIGHTS_INDEX) {
        let index = fetch(&api, &remote, WEIGHTS_INDEX)?;
        wanted.extend(shard_names(&index)?);
    } else if listed.contains(WEIGHTS) {
        wanted.push(WEIGHTS.to_string());
    } else {
        bail!("{repo} has no {WEIGHTS} or {WEIGHTS_INDEX}; dcoder loads safetensors weights only");
    }
    let cached = cache_repo(repo, revision);
    for name in wanted.iter().filter(|n| cached.get(n).is_none()) {
        fetch(&api, &remote, name)?;
    }
    Ok(())
}

/// Downloads one file with a progress bar on stderr and checks its size against the hub's.
fn fetch(api: &Api, remote: &ApiRepo, name: &str) -> Result<PathBuf> {
    let expected = api
        .metadata(&remote.url(name))
        .map_err(|e| anyhow!("asking the hub for {name}: {e}"))?
        .size() as u64;
    let path = remote
        .download_with_progress(name, FileProgress::new())
        .map_err(|e| anyhow!("downloading {name}: {e}"))?;
    let got = std::fs::metadata(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if got != expected {
        // Take the file out of the cache so that no later run mistakes it for complete.
        let blob = std::fs::canonicalize(&path).ok();
        let _ = std::fs::remove_file(&path);
        if let Some(blob) = blob {
            let _ = std::fs::remove_file(blob);
        }
        bail!("downloading {name}: got {got} of {expected} bytes; the connection was cut, run the command again to resume");
    }
    Ok(path)
}

/// hf-hub progress reporting as an indicatif bar on stderr; a plain line when stderr is not a
/// terminal.
struct FileProgress {
    bar: ProgressBar,
}

impl FileProgress {
    fn new() -> Self {
        let target = match std::io::stderr().is_terminal() {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::hidden(),
        };
        Self {
            bar: ProgressBar::with_draw_target(Some(0), target),
        }
    }
}

impl hf_hub::api::Progress for FileProgress {
    fn init(&mut self, size: usize, filename: &str) {
        if self.bar.is_hidden() && self.bar.length() == Some(0) {
            eprintln!(
                "downloading {filename} ({})",
                indicatif::HumanBytes(size as u64)
            );
        }
        self.bar.set_length(size as u64);
        self.bar.set_position(0);
        self.bar.set_style(
            ProgressStyle::with_template(
                "{msg:<28!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.bar.set_message(filename.to_string());
    }

    fn update(&mut self, size: usize) {
        self.bar.inc(size as u64);
    }

    fn finish(&mut self) {
        self.bar.finish();
    }
}
