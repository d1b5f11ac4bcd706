//! LLaDA2.0 / LLaDA2.1 parity against the authors' `modeling_llada2_moe.py` on the tiny
//! fixtures (`tests/fixtures/llada2.0-tiny`, `llada2.1-tiny`; provenance in
//! `tests/fixtures/README.md`): forward logits and the router's experts, every `generate()`
//! case token for token (LLaDA2.1: the `mask_fixed` goldens, the block-causal semantics), and
//! the exact cache against full recomputation.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{Device, IndexOp, Tensor};
use serde_json::Value;

use crate::diffusion::CacheMode;
use crate::hub::Source;
use crate::model::{CacheOp, Pass};
use crate::parity::cache_error;
use crate::session::{plan_for, Checkpoint, LoadOptions, Session};
use crate::settings::Defaults;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn open(name: &str) -> Result<(Session, Value)> {
    let dir = fixture(name);
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json"))?)?;
    let checkpoint = Checkpoint::locate(&Source::Dir(dir))?;
    let session = Session::load(
        checkpoint,
        &LoadOptions {
            device: "cpu".into(),
            dtype: Some("f32".into()),
            no_repack: false,
        },
    )?;
    Ok((session, cases))
}

/// Numbers written either as JSON or as a Python literal string (the fixtures do both).
fn parsed(v: &Value) -> Value {
    match v.as_str() {
        Some(s) => serde_json::from_str(
            &s.replace('\'', "\"")
                .replace("True", "true")
                .replace("False", "false"),
        )
        .unwrap_or(Value::Null),
        None => v.clone(),
    }
}

fn ids(v: &Value) -> Vec<u32> {
    crate::parity::ids(&parsed(v))
}

/// The additive block-causal bias (0 / -inf) of `n` positions in blocks of `bs` from 0.
fn block_causal(n: usize, bs: usize) -> Result<Tensor> {
    additive(n, bs, 0.0, f32::NEG_INFINITY)
}

/// `visible` where key block <= query block, else `hidden`, added to the attention scores.
fn additive(n: usize, bs: usize, visible: f32, hidden: f32) -> Result<Tensor> {
    let data: Vec<f32> = (0..n)
        .flat_map(|q| (0..n).map(move |k| if k / bs <= q / bs { visible } else { hidden }))
        .collect();
    Ok(Tensor::from_vec(data, (1, 1, n, n), &Device::Cpu)?)
}

#[test]
fn llada2_forward_checks_match_logits_and_router_experts() -> Result<()> {
    for name in ["llada2.0-tiny", "llada2.1-tiny"] {
        let (mut session, cases) = open(name)?;
        let checks = cases["forward_checks"]
            .as_array()
            .context("forward_checks")?;
        assert!(!checks.is_empty());
        for check in checks {
            let input = ids(&check["input_ids"]);
            let bs = parsed(&check["block_length"])
                .as_u64()
                .context("block_length")? as usize;
            let n = input.len();
            let t = Tensor::from_vec(input, (1, n), &Device::Cpu)?;
            let positions: Vec<u32> = (0..n as u32).collect();
            // LLaDA2.1's own file adds its raw 0/1 mask to the scores (`raw_0_1`); one check
            // records that forward too, and the network must give it as well.
            let bias = match check["mask_kind"].as_str() {
                Some("raw_0_1") => additive(n, bs, 1.0, 0.0)?,
                _ => block_causal(n, bs)?,
            };
            let pass = Pass {
                ids: &t,
                positions: &positions,
                bias: Some(&bias),
                cache: CacheOp::None,
            };
            let hidden = session.model.hidden(&pass)?;
            let logits: Vec<Vec<f32>> = session.model.head(&hidden)?.i(0)?.to_vec2()?;
            let want = parsed(&check["logits"]);
            let want = want.as_array().context("logits")?;
            let mut worst = 0f32;
            for (row, w) in logits.iter().zip(want) {
                for (a, b) in row.iter().zip(w.as_array().context("row")?) {
                    worst = worst.max((a - b.as_f64().unwrap_or(f64::NAN) as f32).abs());
                }
            }
            assert!(worst <= 1e-4, "{name}: logits differ by {worst}");
            let routes = session.model.routes(&pass)?;
            for router in parsed(&check["router"]).as_array().context("router")? {
                let layer = router["layer"].as_u64().context("layer")? as usize;
                let ours: Vec<Vec<usize>> = routes
                    .get(layer)
                    .and_then(Option::as_ref)
                    .context("a MoE layer")?
                    .iter()
                    .map(|r| r.iter().map(|c| c.0).collect())
                    .collect();
                let theirs = router["topk_idx"].as_array().context("topk_idx")?;
                assert_eq!(ours.len(), theirs.len());
                for (pos, (a, b)) in ours.iter().zip(theirs).enumerate() {
                    let mut a = a.clone();
                    let mut b: Vec<usize> = ids(b).into_iter().map(|x| x as usize).collect();
                    a.sort_unstable();
                    b.sort_unstable();
                    assert_eq!(a, b, "{name}: layer {layer} position {pos} experts");
                }
            }
        }
    }
    Ok(())
}

/// A case's flags, as the fixtures README maps the authors' arguments.
fn flags(kwargs: &Value, cache: Option<CacheMode>) -> Defaults {
    let u = |k: &str| kwargs[k].as_u64().map(|v| v as usize);
    Defaults {
        gen_length: u("gen_length"),
        block_length: u("block_length"),
        steps: u("steps"),
        temperature: Some(0.0),
        threshold: kwargs["threshold"].as_f64(),
        minimal_topk: u("minimal_topk"),
        edit_threshold: kwargs["editing_threshold"].as_f64(),
        max_post_steps: u("max_post_steps"),
        num_to_transfer: u("num_to_transfer"),
        early_stop: Some(kwargs["eos_early_stop"].as_bool().unwrap_or(false)),
        cache,
        ..Default::default()
    }
}

/// Every case of both fixtures, custom EOS ids included, with the exact cache and with full
/// recomputation: the same golden tokens both ways.
#[test]
fn llada2_generate_cases_are_token_exact_with_and_without_the_cache() -> Result<()> {
    let mut ran = 0;
    for name in ["llada2.0-tiny", "llada2.1-tiny"] {
        let (mut session, cases) = open(name)?;
        let (eos, stops) = (
            session.tokenizer.special.eos,
            session.tokenizer.special.stops.clone(),
        );
        for case in cases["cases"].as_array().context("cases")? {
            let id = case["name"].as_str().unwrap_or_default();
            let kwargs = parsed(&case["generate_kwargs"]);
            let prompt = ids(&case["prompt_ids"]);
            let golden = match case.get("mask_fixed") {
                Some(fixed) => ids(&fixed["output_ids"]),
                None => ids(&case["output_ids"]),
            };
            // LLaDA2.0's early stop returns the prompt too (the authors' `x[:, :eos_pos + 1]`).
            let golden = match golden.starts_with(&prompt) && name == "llada2.0-tiny" {
                true if kwargs["eos_early_stop"] == true => golden[prompt.len()..].to_vec(),
                _ => golden,
            };
            // A custom `eos_id` is the run's only stop id.
            let case_eos = kwargs["eos_id"].as_u64().map_or(eos, |e| e as u32);
            session.tokenizer.special.eos = case_eos;
            session.tokenizer.special.stops = if case_eos == eos {
                stops.clone()
            } else {
                vec![case_eos]
            };
            for cache in [CacheMode::Prefix, CacheMode::None] {
                let plan = plan_for(
                    session.arch,
                    &session.defaults,
                    &flags(&kwargs, Some(cache)),
                    0,
                )?;
                let g = session.generate(&prompt, &plan, |_| ControlFlow::Continue(()))?;
                assert!(
                    g.canvas.starts_with(&golden),
                    "{name} {id} ({cache:?}):\n want {golden:?}\n  got {:?}",
                    g.canvas
                );
                ran += 1;
            }
        }
    }
    assert_eq!(ran, 2 * 24, "every LLaDA2 case runs twice");
    Ok(())
}

/// A block after the prompt and a committed block, through the cache, against one pass over
/// everything with the block-causal bias.
#[test]
fn llada2_cache_matches_full_recomputation_hidden_states() -> Result<()> {
    let (mut session, _) = open("llada2.0-tiny")?;
    let mask = session.tokenizer.special.mask;
    let bs = 8;
    let seq: Vec<u32> = (10..26)
        .chain([mask, 40, mask, mask, 41, mask, mask, mask])
        .collect();
    let err = cache_error(&mut session, &seq, 8, 8, &block_causal(seq.len(), bs)?)?;
    assert!(
        err <= 1e-4,
        "cached block differs from full recomputation by {err}"
    );
    Ok(())
}
