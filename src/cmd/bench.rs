//! `dcoder bench`: time per forward pass, or a whole generation, on a model or on random weights
//! of a named real shape (`--random llada-small`). Prints text or one `--json` object. Ratios
//! against the PyTorch reference come from `benches/vs_torch.py`, which runs both in one go.

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Tensor;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;

use crate::cli::{BenchArgs, QMatmul};
use crate::device::{
    available_memory, describe, ensure_fits, ensure_quantized_fits, pick_device, pick_dtype,
};
use crate::diffusion::{self, SpecialIds};
use crate::gguf::file::{lower_name, parse_type};
use crate::hub::Source;
use crate::model::random_weights::{random_var_builder, RandomQuantized};
use crate::model::{amx_matmul, quant_kernel};
use crate::model::{CacheOp, Config, Denoiser, Model, Pass, Precision};
use crate::registry::{Arch, Registry};
use crate::report::rates;
use crate::session::{plan_for, Checkpoint, LoadOptions, Session};
use crate::settings::Defaults;

#[derive(Debug, Serialize)]
struct BenchReport {
    model: String,
    params: usize,
    device: String,
    dtype: &'static str,
    threads: usize,
    /// `forward` or `generate`.
    mode: &'static str,
    /// Tokens through the model per forward pass (forward mode), or prompt + canvas.
    seq: usize,
    /// Cached tokens before the `seq` ones (forward mode, `--past`).
    past: usize,
    /// Rows through the LM head per forward pass.
    head_rows: usize,
    /// Seconds per forward pass: the median of the timed runs (forward mode), or the loop
    /// time divided by the forward passes (generate mode).
    forward_s: f64,
    min_s: f64,
    runs: usize,
    nfe: usize,
    /// Generated tokens per second (generate mode); sequence tokens per second (forward mode).
    tokens_per_s: f64,
    tokens_per_forward: f64,
    load_s: f64,
    peak_rss_bytes: u64,
    /// The matmul weights' type (`f32`, `bf16`, `q8_0`, ...).
    weights: &'static str,
    /// The matmul kernel path (`gemm`, `avx512bf16`, `avx2`, `neon`, `scalar`).
    kernel: &'static str,
    /// Bytes of the weights as held: quantized matmul weights as stored, the rest in the
    /// activation dtype.
    weight_bytes: u64,
}

/// Peak resident memory of this process (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

struct Loaded {
    weight_bytes: u64,
    label: String,
    model: Model,
    special: SpecialIds,
    arch: Arch,
    defaults: Defaults,
    params: usize,
    load: Duration,
}

fn load(args: &BenchArgs) -> Result<Loaded> {
    let registry = Registry::builtin()?;
    if let Some(shape_name) = &args.random {
        if args.model.model.is_some() {
            bail!("--random and --model are exclusive: time either random weights or a model");
        }
        let shape = registry.shape(shape_name)?;
        let json = serde_json::to_value(&shape.config)?;
        let config = Config::parse(shape.arch.body(), &json)
            .with_context(|| format!("shape {shape_name} in models.toml"))?;
        let device = pick_device(&args.model.device)?;
        let dtype = pick_dtype(args.model.dtype.as_deref(), &device, false)?;
        let quantized = match args.model.quant.as_deref() {
            Some(q) if args.model.dtype.is_some() => {
                bail!("--quant {q} and --dtype are exclusive: quantized weights run with f32 activations")
            }
            Some(q) => {
                let ty = parse_type(q)?;
                ensure_quantized_fits(config.parameters(), ty, lower_name(ty), &device)?;
                Some((Arc::new(RandomQuantized::new(ty)), lower_name(ty)))
            }
            None => {
                ensure_fits(config.parameters(), dtype, &device)?;
                None
            }
        };
        let precision = match &quantized {
            Some((source, name)) => Precision::quantized(source.clone(), name),
            None => Precision::new(dtype, &device),
        };
        let start = Instant::now();
        let vb = random_var_builder(&shape.absent, precision.activations, &device);
        let model = Model::new(&config, vb, precision).map_err(|e| anyhow!("{e}"))?;
        let elements = config.parameters() as u64;
        let weight_bytes = match &quantized {
            Some((source, _)) => {
                let (bytes, quantized_elements) = source.made();
                bytes + elements.saturating_sub(quantized_elements) * 4
            }
            None => elements * dtype.size_in_bytes() as u64,
        };
        if quantized.is_some() && device.is_cpu() {
            quant_kernel::plan_copies(weight_bytes, available_memory(), !args.model.no_repack);
        }
        let id = |key: &str| json.get(key).and_then(Value::as_u64).map(|v| v as u32);
        let vocab = config.vocab_size() as u32;
        let eos = id("eos_token_id").unwrap_or(0);
        let special = SpecialIds {
            mask: id("mask_token_id").unwrap_or(vocab - 1),
            eos,
            eot: None,
            pad: None,
            stops: vec![eos],
        };
        return Ok(Loaded {
            weight_bytes,
            label: format!("{shape_name} (random weights)"),
            params: config.parameters(),
            model,
            special,
            arch: shape.arch,
            defaults: registry.arch(shape.arch)?.defaults.clone(),
            load: start.elapsed(),
        });
    }
    let source = Source::parse(args.model.model.as_deref(), registry)?;
    let checkpoint = Checkpoint::locate_with(&source, &super::source_options(&args.model)?)?;
    let params = checkpoint.parameters();
    let weight_bytes = checkpoint.weight_bytes();
    let opts = LoadOptions {
        device: args.model.device.clone(),
        dtype: args.model.dtype.clone(),
        no_repack: args.model.no_repack,
    };
    let session = Session::load(checkpoint, &opts)?;
    let weight_bytes = weight_bytes.unwrap_or_else(|| {
        params as u64 * session.model.precision().activations.size_in_bytes() as u64
    });
    Ok(Loaded {
        weight_bytes,
        label: session.label.clone(),
        special: session.tokenizer.special.ids(),
        arch: session.arch,
        defaults: session.defaults.clone(),
        load: session.load_time,
        params,
        model: session.model,
    })
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    if args.qmatmul == QMatmul::Amx && !amx_matmul::available() {
        bail!("--qmatmul amx: this CPU has no AMX-INT8 tiles (or the OS did not grant them); use auto, tiled, dots or candle");
    }
    quant_kernel::choose(match args.qmatmul {
        QMatmul::Auto => quant_kernel::Choice::Auto,
        QMatmul::Candle => quant_kernel::Choice::Candle,
        QMatmul::Dots => quant_kernel::Choice::Dots,
        QMatmul::Tiled => quant_kernel::Choice::Tiled,
        QMatmul::Amx => quant_kernel::Choice::Amx,
    });
    let Loaded {
        label,
        mut model,
        special,
        arch,
        defaults,
        params,
        load,
        weight_bytes,
    } = load(args)?;
    let weights = model.precision().name();
    let kernel = model.precision().kernel();
    let device = model.device().clone();
    let mut rng = StdRng::seed_from_u64(args.sampler.seed);
    let vocab = model.vocab_size() as u32;
    let mut random_ids = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| rng.random_range(0..vocab))
            .filter(|&t| t != special.mask)
            .collect()
    };
    let report = match args.forward {
        Some(0) => bail!("--forward must be at least 1 token"),
        Some(seq) => {
            let mut ids = random_ids(seq + 8);
            ids.truncate(seq);
            let ids = Tensor::from_vec(ids, (1, seq), &device)?;
            let head_rows = args.head_rows.unwrap_or(seq).min(seq);
            // --past N: a cached prefix of N tokens, as one block-diffusion step sees it.
            let past = args.past;
            if past > 0 {
                let mut prefix = random_ids(past + 8);
                prefix.truncate(past);
                let prefix = Tensor::from_vec(prefix, (1, past), &device)?;
                let positions: Vec<u32> = (0..past as u32).collect();
                let pass = Pass {
                    ids: &prefix,
                    positions: &positions,
                    bias: None,
                    cache: CacheOp::Store,
                };
                model.hidden(&pass)?;
            }
            let positions: Vec<u32> = (past as u32..(past + seq) as u32).collect();
            let op = if past > 0 {
                CacheOp::Read
            } else {
                CacheOp::None
            };
            let pass = Pass {
                ids: &ids,
                positions: &positions,
                bias: None,
                cache: op,
            };
            // One warm-up, then timed runs. By default the LM head covers every row, as the
            // PyTorch reference's `logits(forward(...))`; --head-rows K times the sampler's
            // forward, which needs logits for the K positions of the current block only.
            let mut times = Vec::with_capacity(args.repeats);
            for run in 0..=args.repeats {
                let start = Instant::now();
                let hidden = model.hidden(&pass)?;
                let logits = model.head(&hidden.narrow(1, seq - head_rows, head_rows)?)?;
                device.synchronize()?;
                drop(logits);
                if run > 0 {
                    times.push(start.elapsed().as_secs_f64());
                }
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            BenchReport {
                model: label,
                params,
                device: describe(&device),
                dtype: model.precision().name(),
                threads: candle_core::utils::get_num_threads(),
                mode: "forward",
                seq,
                past,
                head_rows,
                forward_s: median,
                min_s: times[0],
                runs: times.len(),
                nfe: 1,
                tokens_per_s: seq as f64 / median,
                tokens_per_forward: 0.0,
                load_s: load.as_secs_f64(),
                peak_rss_bytes: peak_rss(),
                weights,
                kernel,
                weight_bytes,
            }
        }
        None => {
            let p = plan_for(
                arch,
                &defaults,
                &args.sampler.overrides(),
                args.sampler.seed,
            )?;
            let mut prompt = random_ids(args.prompt_tokens + 8);
            prompt.truncate(args.prompt_tokens);
            let g = diffusion::generate(&mut model, &prompt, &p, &special, |_| {
                ControlFlow::Continue(())
            })?;
            let (tokens_per_forward, tokens_per_s) = rates(&g);
            let secs = g.elapsed.as_secs_f64();
            BenchReport {
                model: label,
                params,
                device: describe(&device),
                dtype: model.precision().name(),
                threads: candle_core::utils::get_num_threads(),
                mode: "generate",
                seq: prompt.len() + p.gen_length,
                past: 0,
                head_rows: p.blocks(prompt.len())[0].len(),
                forward_s: secs / g.nfe.max(1) as f64,
                min_s: secs / g.nfe.max(1) as f64,
                runs: 1,
                nfe: g.nfe,
                tokens_per_s,
                tokens_per_forward,
                load_s: load.as_secs_f64(),
                peak_rss_bytes: peak_rss(),
                weights,
                kernel,
                weight_bytes,
            }
        }
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &report)?;
    }
    Ok(())
}

fn print_text(out: &mut impl Write, r: &BenchReport) -> Result<()> {
    writeln!(
        out,
        "model      {} ({:.2}B params), {} {}, {} threads",
        r.model,
        r.params as f64 / 1e9,
        r.device,
        r.dtype,
        r.threads
    )?;
    writeln!(
        out,
        "load       {:.2} s, peak RSS {}, weights {} ({}, {} kernel)",
        r.load_s,
        indicatif::HumanBytes(r.peak_rss_bytes),
        indicatif::HumanBytes(r.weight_bytes),
        r.weights,
        r.kernel
    )?;
    match r.mode {
        "forward" => writeln!(
            out,
            "forward    {} tokens, LM head on {} rows: {:.4} s median, {:.4} s min over {} runs ({:.0} tokens/s through the model)",
            r.seq, r.head_rows, r.forward_s, r.min_s, r.runs, r.tokens_per_s
        )?,
        _ => writeln!(
            out,
            "generate   {} tokens (prompt + canvas): {} forwards, {:.4} s per forward, {:.2} tokens/s, {:.2} tokens per forward",
            r.seq, r.nfe, r.forward_s, r.tokens_per_s, r.tokens_per_forward
        )?,
    }
    Ok(())
}
