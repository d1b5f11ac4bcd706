//! `dcoder eval BENCH`: generate a completion per problem (and sample), score each in the
//! sandbox while the next is generated, write the samples and results files, print pass@k.
//! With `--check-samples FILE` it scores an existing samples file and loads no model.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::EvalArgs;
use crate::eval::checker::Checker;
use crate::eval::dataset::Bench;
use crate::eval::generate::Generator;
use crate::eval::mode::Mode;
use crate::eval::problem::Problem;
use crate::eval::samples::{self, Appender, Sample};
use crate::eval::sandbox::{Limits, Sandbox};
use crate::eval::summary::{Context, Summary};
use crate::eval::verdict::Verdict;

pub fn run(args: &EvalArgs) -> Result<u8> {
    let started = Instant::now();
    ensure!(
        args.samples_per_task > 0,
        "--samples-per-task must be at least 1"
    );
    ensure!(
        args.timeout.is_finite() && args.timeout > 0.0,
        "--timeout must be a positive number of seconds"
    );
    ensure!(args.jobs != Some(0), "--jobs must be at least 1");
    ensure!(args.memory_mb >= 64, "--memory-mb must be at least 64");
    ensure!(!args.k.contains(&0), "--k: every k must be at least 1");
    let bench = Bench::parse(&args.bench)?;
    let problems = bench.problems(args.data.as_deref())?;
    let limits = Limits {
        timeout: Duration::from_secs_f64(args.timeout),
        memory_bytes: args.memory_mb << 20,
        ..Limits::default()
    };
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let run = Run {
        args,
        bench,
        problems,
        started,
    };
    match &args.check_samples {
        Some(path) => run.check(path, limits, jobs),
        None => run.generate(limits, jobs),
    }
}

struct Run<'a> {
    args: &'a EvalArgs,
    bench: Bench,
    problems: Vec<Problem>,
    started: Instant,
}

impl Run<'_> {
    /// `--check-samples`: every sample of the file, in its order.
    fn check(&self, path: &Path, limits: Limits, jobs: usize) -> Result<u8> {
        let samples = samples::read(path, false)?;
        if samples.is_empty() {
            bail!("{}: no samples in the file", path.display());
        }
        let by_id = self.by_id();
        let mut programs = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            let Some(problem) = by_id.get(s.task_id.as_str()) else {
                bail!(
                    "{} sample {}: task {} is not in {} (give its problems with --data FILE)",
                    path.display(),
                    i + 1,
                    s.task_id,
                    self.bench.name()
                );
            };
            programs.push(problem.program(&s.completion));
        }
        let sandbox = open_sandbox(limits.clone())?;
        let isolation = sandbox.isolation.clone();
        let mut checker = Checker::new(Arc::new(sandbox), jobs);
        for (i, program) in programs.into_iter().enumerate() {
            checker.submit(i, program)?;
        }
        let mut progress = Progress::new(samples.len(), self.args.quiet);
        let mut verdicts: Vec<Option<Verdict>> = vec![None; samples.len()];
        while let Some((i, verdict)) = checker.next() {
            progress.scored(verdict?, i, &mut verdicts);
        }
        progress.finish();
        let results = self.results_path(path);
        self.finish(
            &samples, verdicts, &results, path, None, None, None, &isolation, &limits,
        )
    }

    /// Generation: the selected problems, resuming from the samples file.
    fn generate(&self, limits: Limits, jobs: usize) -> Result<u8> {
        let selected = self.select()?;
        let sandbox = open_sandbox(limits.clone())?;
        let isolation = sandbox.isolation.clone();
        let mut generator = Generator::load(&self.args.model, &self.args.sampler)?;
        let mode = self
            .args
            .mode
            .unwrap_or_else(|| Mode::for_model(generator.has_chat_template()));
        let mode_name = match mode {
            Mode::Base => "base",
            Mode::Chat => "chat",
        };
        let settings = generator.settings()?;
        let config = samples::config(generator.label(), mode_name, &settings);
        let samples_path = self
            .args
            .samples
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}-samples.jsonl", self.bench.name())));
        let existing = match samples_path.exists() {
            true => samples::read(&samples_path, true)?,
            false => Vec::new(),
        };
        if let Some(other) = existing
            .iter()
            .find(|s| s.config.as_deref() != Some(config.as_str()))
        {
            bail!(
                "{}: written by another run ({}); give a new --samples FILE or delete it to start over",
                samples_path.display(),
                other.config.as_deref().unwrap_or("not by dcoder eval")
            );
        }
        let wanted: HashSet<&str> = selected.iter().map(|p| p.task_id.as_str()).collect();
        let mut kept: Vec<Sample> = existing
            .into_iter()
            .filter(|s| wanted.contains(s.task_id.as_str()))
            .collect();
        let mut have: HashMap<String, u64> = HashMap::new();
        for s in &kept {
            *have.entry(s.task_id.clone()).or_default() += 1;
        }
        let mut todo = Vec::new();
        for p in &selected {
            let done = have.get(&p.task_id).copied().unwrap_or(0);
            todo.extend((done..self.args.samples_per_task).map(|j| (*p, j)));
        }
        if !kept.is_empty() && !self.args.quiet {
            eprintln!(
                "resuming {}: {} samples there, {} to generate",
                samples_path.display(),
                kept.len(),
                todo.len()
            );
        }
        let by_id = self.by_id();
        let mut checker = Checker::new(Arc::new(sandbox), jobs);
        for (i, s) in kept.iter().enumerate() {
            if let Some(p) = by_id.get(s.task_id.as_str()) {
                checker.submit(i, p.program(&s.completion))?;
            }
        }
        let mut verdicts: Vec<Option<Verdict>> = vec![None; kept.len()];
        let mut progress = Progress::new(kept.len() + todo.len(), self.args.quiet);
        let mut appender = Appender::open(&samples_path)?;
        for (problem, j) in todo {
            progress.generating(&problem.task_id);
            let answer = generator.complete(&mode.prompt(problem), mode == Mode::Chat, j)?;
            let sample = Sample {
                task_id: problem.task_id.clone(),
                completion: mode.completion(problem, &answer.text),
                sample: Some(j),
                raw: Some(answer.text),
                tokens: Some(answer.tokens),
                nfe: Some(answer.nfe),
                elapsed_s: Some(answer.elapsed.as_secs_f64()),
                config: Some(config.clone()),
            };
            appender.push(&sample)?;
            progress.generated(answer.tokens, answer.elapsed);
            checker.submit(kept.len(), problem.program(&sample.completion))?;
            kept.push(sample);
            verdicts.push(None);
            while let Some((i, verdict)) = checker.try_next() {
                progress.scored(verdict?, i, &mut verdicts);
            }
        }
        while let Some((i, verdict)) = checker.next() {
            progress.scored(verdict?, i, &mut verdicts);
        }
        progress.finish();
        let results = self.results_path(&samples_path);
        self.finish(
            &kept,
            verdicts,
            &results,
            &samples_path,
            Some(generator.label().to_string()),
            Some(mode),
            Some(settings),
            &isolation,
            &limits,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        samples: &[Sample],
        verdicts: Vec<Option<Verdict>>,
        results: &Path,
        samples_path: &Path,
        model: Option<String>,
        mode: Option<Mode>,
        settings: Option<serde_json::Value>,
        isolation: &crate::eval::jail::Isolation,
        limits: &Limits,
    ) -> Result<u8> {
        let verdicts: Vec<Verdict> = verdicts
            .into_iter()
            .map(|v| {
                v.unwrap_or_else(|| {
                    Verdict::died(
                        crate::eval::verdict::Kind::SandboxKilled,
                        "never scored".into(),
                    )
                })
            })
            .collect();
        samples::write_results(results, samples, &verdicts)?;
        let ctx = Context {
            bench: self.bench.name(),
            model,
            mode,
            ks: self.args.k.clone(),
            wall_s: self.started.elapsed().as_secs_f64(),
            isolation: isolation.clone(),
            timeout_s: limits.timeout.as_secs_f64(),
            samples_file: samples_path.display().to_string(),
            results_file: results.display().to_string(),
            settings,
        };
        Summary::new(ctx, samples, &verdicts).print(self.args.json)?;
        Ok(0)
    }

    fn by_id(&self) -> HashMap<&str, &Problem> {
        self.problems
            .iter()
            .map(|p| (p.task_id.as_str(), p))
            .collect()
    }

    /// `--tasks` then `--limit`.
    fn select(&self) -> Result<Vec<&Problem>> {
        let mut selected: Vec<&Problem> = if self.args.tasks.is_empty() {
            self.problems.iter().collect()
        } else {
            let by_id = self.by_id();
            let mut chosen = Vec::new();
            for id in &self.args.tasks {
                match by_id.get(id.as_str()) {
                    Some(p) => chosen.push(*p),
                    None => bail!(
                        "--tasks {id}: no such task in {} (ids look like {})",
                        self.bench.name(),
                        self.problems[0].task_id
                    ),
                }
            }
            chosen
        };
        if let Some(n) = self.args.limit {
            ensure!(n > 0, "--limit must be at least 1");
            selected.truncate(n);
        }
        Ok(selected)
    }

    fn results_path(&self, samples: &Path) -> PathBuf {
        self.args
            .results
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}_results.jsonl", samples.display())))
    }
}

/// The sandbox, with one warning on stderr when it cannot keep samples off the network.
fn open_sandbox(limits: Limits) -> Result<Sandbox> {
    let sandbox = Sandbox::new(limits)?;
    let iso = &sandbox.isolation;
    if !iso.network_isolated {
        eprintln!(
            "warning: no network isolation for samples here (no network namespace, Landlock {}); they run with resource limits only",
            iso.landlock
        );
    }
    Ok(sandbox)
}

/// The progress bar: samples scored of all, ETA, running pass rate and generation speed.
struct Progress {
    bar: ProgressBar,
    passed: usize,
    scored: usize,
    tokens: usize,
    generating: Duration,
}

impl Progress {
    fn new(total: usize, quiet: bool) -> Progress {
        let target = match !quiet && std::io::stderr().is_terminal() {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::hidden(),
        };
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} ETA {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Progress {
            bar,
            passed: 0,
            scored: 0,
            tokens: 0,
            generating: Duration::ZERO,
        }
    }

    fn generating(&self, task: &str) {
        self.bar
            .set_message(format!("{} · generating {task}", self.rate()));
    }

    fn generated(&mut self, tokens: usize, elapsed: Duration) {
        self.tokens += tokens;
        self.generating += elapsed;
    }

    fn scored(&mut self, verdict: Verdict, index: usize, verdicts: &mut [Option<Verdict>]) {
        self.scored += 1;
        self.passed += usize::from(verdict.passed);
        if let Some(slot) = verdicts.get_mut(index) {
            *slot = Some(verdict);
        }
        self.bar.inc(1);
        self.bar.set_message(self.rate());
    }

    fn rate(&self) -> String {
        let pct = 100.0 * self.passed as f64 / self.scored.max(1) as f64;
        let speed = match self.generating.as_secs_f64() {
            s if s > 0.0 => format!(" · {:.1} tok/s", self.tokens as f64 / s),
            _ => String::new(),
        };
        format!("pass {}/{} ({pct:.1}%){speed}", self.passed, self.scored)
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
