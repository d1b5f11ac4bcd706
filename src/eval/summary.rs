//! The summary of an eval run: pass@k, failure counts, cost, and how it ran. `--json` prints it
//! as one object; otherwise a few lines on stdout.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::jail::Isolation;
use super::mode::Mode;
use super::pass_at_k;
use super::samples::Sample;
use super::verdict::{Kind, Verdict};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub bench: String,
    /// The model, or null when scoring a samples file (`--check-samples`).
    pub model: Option<String>,
    pub mode: Option<Mode>,
    pub tasks: usize,
    pub samples: usize,
    pub passed: usize,
    pub pass_at_1: Option<f64>,
    /// pass@k for every asked k that each task has samples for ("1", "10", ...).
    pub pass_at_k: BTreeMap<String, f64>,
    /// Samples per failure kind (and "passed").
    pub kinds: BTreeMap<&'static str, usize>,
    /// Canvas tokens generated, forward passes, and their rates over generation time.
    pub tokens: usize,
    pub nfe: usize,
    pub tokens_per_s: f64,
    pub tokens_per_forward: f64,
    pub generation_s: f64,
    pub wall_s: f64,
    pub network_isolated: bool,
    pub isolation: Isolation,
    pub timeout_s: f64,
    pub samples_file: String,
    pub results_file: String,
    /// The resolved sampler settings (null with `--check-samples`).
    pub settings: Option<Value>,
}

/// The per-run facts a summary states beside the scores.
pub struct Context {
    pub bench: String,
    pub model: Option<String>,
    pub mode: Option<Mode>,
    pub ks: Vec<u64>,
    pub wall_s: f64,
    pub isolation: Isolation,
    pub timeout_s: f64,
    pub samples_file: String,
    pub results_file: String,
    pub settings: Option<Value>,
}

impl Summary {
    pub fn new(ctx: Context, samples: &[Sample], verdicts: &[Verdict]) -> Summary {
        let mut per_task: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (s, v) in samples.iter().zip(verdicts) {
            let entry = per_task.entry(&s.task_id).or_default();
            entry.0 += 1;
            entry.1 += u64::from(v.passed);
        }
        let counts: Vec<(u64, u64)> = per_task.values().copied().collect();
        let pass_at_k: BTreeMap<String, f64> = ctx
            .ks
            .iter()
            .filter_map(|&k| pass_at_k::mean(&counts, k).map(|p| (k.to_string(), p)))
            .collect();
        let mut kinds: BTreeMap<&'static str, usize> =
            Kind::ALL.iter().map(|k| (k.name(), 0)).collect();
        for v in verdicts {
            *kinds.entry(v.kind.name()).or_default() += 1;
        }
        let tokens: usize = samples.iter().filter_map(|s| s.tokens).sum();
        let nfe: usize = samples.iter().filter_map(|s| s.nfe).sum();
        let generation_s: f64 = samples.iter().filter_map(|s| s.elapsed_s).sum();
        Summary {
            bench: ctx.bench,
            model: ctx.model,
            mode: ctx.mode,
            tasks: per_task.len(),
            samples: samples.len(),
            passed: verdicts.iter().filter(|v| v.passed).count(),
            pass_at_1: pass_at_k::mean(&counts, 1),
            pass_at_k,
            kinds,
            tokens,
            nfe,
            tokens_per_s: ratio(tokens as f64, generation_s),
            tokens_per_forward: ratio(tokens as f64, nfe as f64),
            generation_s,
            wall_s: ctx.wall_s,
            network_isolated: ctx.isolation.network_isolated,
            isolation: ctx.isolation,
            timeout_s: ctx.timeout_s,
            samples_file: ctx.samples_file,
            results_file: ctx.results_file,
            settings: ctx.settings,
        }
    }

    pub fn print(&self, json: bool) -> Result<()> {
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer(&mut out, self)?;
            writeln!(out)?;
            return Ok(out.flush()?);
        }
        let model = self.model.as_deref().unwrap_or("samples file");
        writeln!(
            out,
            "{} on {model}: {}/{} samples passed over {} tasks",
            self.bench, self.passed, self.samples, self.tasks
        )?;
        for (k, p) in &self.pass_at_k {
            writeln!(out, "pass@{k} {:.2}%", p * 100.0)?;
        }
        let failed: Vec<String> = self
            .kinds
            .iter()
            .filter(|(k, n)| **k != "passed" && **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if !failed.is_empty() {
            writeln!(out, "failed: {}", failed.join(", "))?;
        }
        if self.tokens > 0 {
            writeln!(
                out,
                "{} tokens, {:.1} tok/s, {:.2} tokens per forward, {:.1} s generating, {:.1} s wall",
                self.tokens, self.tokens_per_s, self.tokens_per_forward, self.generation_s, self.wall_s
            )?;
        }
        writeln!(out, "results: {}", self.results_file)?;
        Ok(out.flush()?)
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(task: &str) -> Sample {
        Sample {
            task_id: task.into(),
            completion: String::new(),
            sample: None,
            raw: None,
            tokens: Some(10),
            nfe: Some(5),
            elapsed_s: Some(2.0),
            config: None,
        }
    }

    #[test]
    fn counts_pass_at_k_and_kinds() {
        let ctx = Context {
            bench: "b".into(),
            model: None,
            mode: None,
            ks: vec![1, 2, 10],
            wall_s: 1.0,
            isolation: Isolation::default(),
            timeout_s: 3.0,
            samples_file: "s".into(),
            results_file: "r".into(),
            settings: None,
        };
        let samples = [sample("A"), sample("A"), sample("B"), sample("B")];
        let pass = Verdict::reported("passed".into(), Kind::Passed);
        let fail = Verdict::reported("failed: ".into(), Kind::Assertion);
        let s = Summary::new(
            ctx,
            &samples,
            &[pass.clone(), fail.clone(), fail.clone(), fail],
        );
        assert_eq!((s.tasks, s.samples, s.passed), (2, 4, 1));
        assert_eq!(s.pass_at_1, Some(0.25));
        assert_eq!(s.pass_at_k.get("2"), Some(&0.5));
        assert!(!s.pass_at_k.contains_key("10"));
        assert_eq!(s.kinds["assertion"], 3);
        assert_eq!((s.tokens_per_s, s.tokens_per_forward), (5.0, 2.0));
    }
}
