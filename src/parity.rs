//! Parity with the authors' PyTorch code: the tiny random models in `tests/fixtures/*` carry
//! golden outputs of the reference samplers (format: the fixtures' README, "dcoder parity
//! fixtures"). Every case is reproduced token for token through the same code a real checkpoint
//! takes: folder → checkpoint → session → conversation → sampler.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, IndexOp, Tensor, D};
use serde_json::Value;

use crate::diffusion::{CacheMode, Generation, Plan, Strategy};
use crate::hub::Source;
use crate::model::{CacheOp, Pass};
use crate::session::{plan_for, Checkpoint, LoadOptions, Session};
use crate::settings::Defaults;

/// Fixture folders of one family, with their `cases.json`.
pub(crate) fn fixtures(family: &str) -> Result<Vec<(PathBuf, Value)>> {
    fixture_files(family, "cases.json")
}

/// Fixture folders of one family holding the cases file `name`, with it.
fn fixture_files(family: &str, name: &str) -> Result<Vec<(PathBuf, Value)>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let dir = entry?.path();
        let cases = dir.join(name);
        if !cases.is_file() {
            continue;
        }
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&cases)?)?;
        if json["family"] == family {
            found.push((dir, json));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    if found.is_empty() {
        bail!("no {family} fixtures under {}", root.display());
    }
    Ok(found)
}

pub(crate) fn open(dir: &std::path::Path) -> Result<Session> {
    let checkpoint = Checkpoint::locate(&Source::Dir(dir.to_path_buf()))?;
    Session::load(
        checkpoint,
        &LoadOptions {
            device: "cpu".into(),
            dtype: Some("f32".into()),
            no_repack: false,
        },
    )
}

/// The plan of a case: its flags over the session's defaults, seed 0.
pub(crate) fn plan(session: &Session, flags: &Defaults) -> Result<Plan> {
    plan_for(session.arch, &session.defaults, flags, 0)
}

pub(crate) fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// The command-line flags of a case (fixtures README section 8) as a settings layer, so that
/// the case runs through the same resolution as `dcoder --model DIR <flags>`.
fn case_flags(case: &Value) -> Result<Defaults> {
    let settings = &case["settings"];
    let usize_of = |k: &str| settings[k].as_u64().map(|v| v as usize);
    let strategy = match settings["remasking"].as_str().or(settings["alg"].as_str()) {
        // Fast-dLLM's Dream threshold rule compares token probabilities.
        Some("low_confidence" | "maskgit_plus" | "confidence_threshold") => Strategy::Confidence,
        Some("random") => Strategy::Random,
        Some("topk_margin") => Strategy::Margin,
        Some("entropy") => Strategy::Entropy,
        Some("origin") => Strategy::Origin,
        other => bail!("unknown remasking/alg {other:?}"),
    };
    let sampler = case["sampler"].as_str().unwrap_or_default();
    let cache = match sampler.rsplit('.').next() {
        _ if !sampler.starts_with("fastdllm.") => None,
        Some("generate_with_prefix_cache") => Some(CacheMode::Prefix),
        Some("generate_with_dual_cache") => Some(CacheMode::Dual),
        _ => Some(CacheMode::None),
    };
    Ok(Defaults {
        gen_length: usize_of("gen_length").or_else(|| usize_of("max_new_tokens")),
        steps: usize_of("steps"),
        block_length: usize_of("block_length").or_else(|| usize_of("block_size")),
        strategy: Some(strategy),
        temperature: settings["temperature"].as_f64(),
        cfg_scale: settings["cfg_scale"].as_f64().filter(|&w| w > 0.0),
        suppress_eos: settings["logits_eos_inf"].as_bool().filter(|&b| b),
        eos_last: settings["confidence_eos_eot_inf"].as_bool().filter(|&b| b),
        top_p: settings["top_p"].as_f64(),
        top_k: usize_of("top_k"),
        alg_temp: settings["alg_temp"].as_f64(),
        eps: settings["eps"].as_f64(),
        threshold: settings["threshold"].as_f64(),
        entropy_bound: None,
        cache,
        steps_per_block: usize_of("steps_per_block"),
        minimal_topk: None,
        edit_threshold: None,
        max_post_steps: None,
        num_to_transfer: None,
        early_stop: None,
    })
}

/// Per step, the `[position, token]` pairs revealed.
type Trace = Vec<Vec<[u32; 2]>>;

/// Runs `prompt` and returns the generation and its trace.
fn sample(session: &mut Session, prompt: &[u32], p: &Plan) -> Result<(Generation, Trace)> {
    let mut trace = Vec::new();
    let g = session.generate(prompt, p, |step| {
        trace.push(
            step.revealed
                .iter()
                .map(|r| [r.position as u32, r.token])
                .collect(),
        );
        ControlFlow::Continue(())
    })?;
    Ok((g, trace))
}

/// The first step where `ours` leaves the reference trace, for a readable failure.
fn divergence(reference: &Value, ours: &[Vec<[u32; 2]>]) -> String {
    let steps = reference
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["transfer"].as_array().is_some_and(|t| !t.is_empty()));
    for (i, step) in steps.enumerate() {
        let mut want: Vec<[u32; 2]> = step["transfer"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|pair| {
                [
                    pair[0].as_u64().unwrap_or(0) as u32,
                    pair[1].as_u64().unwrap_or(0) as u32,
                ]
            })
            .collect();
        want.sort();
        if ours.get(i) != Some(&want) {
            return format!(
                "first divergence at step {i}: reference {want:?}, dcoder {:?}",
                ours.get(i)
            );
        }
    }
    "traces agree".into()
}

/// Reference forward passes that committed nothing: dcoder skips them (nothing could change).
fn idle_steps(trace: &Value) -> usize {
    trace
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["transfer"].as_array().is_some_and(Vec::is_empty))
        .count()
}

/// The prompt of a single-turn case, through the session's conversation (template or raw).
fn case_prompt(session: &Session, case: &Value) -> Result<(String, Vec<u32>)> {
    let raw = !case["apply_chat_template"].as_bool().unwrap_or(true);
    if raw {
        // The text as the reference tokenized it (Dream's base-model eval puts its BOS first).
        let text = case["prompt_text"].as_str().context("no prompt_text")?;
        return session
            .conversation(true, None)?
            .prompt(text, &session.tokenizer);
    }
    let messages = case["messages"].as_array().context("no messages")?;
    let system = messages
        .iter()
        .find(|m| m["role"] == "system")
        .and_then(|m| m["content"].as_str());
    let user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .context("no user message")?;
    session
        .conversation(false, system.map(str::to_string))?
        .prompt(user, &session.tokenizer)
}

/// A forward check's pass: the tokens it lists as rows (pads left out, as dcoder's engine never
/// feeds them), at their position ids, with the block-causal mask when the check has one.
pub(crate) fn check_hidden(session: &mut Session, check: &Value) -> Result<Tensor> {
    let input = ids(&check["input_ids"]);
    let rows: Vec<usize> = match check["rows"].as_array() {
        Some(r) => r
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as usize)
            .collect(),
        None => (0..input.len()).collect(),
    };
    let tokens: Vec<u32> = rows.iter().map(|&r| input[r]).collect();
    let all_positions = ids(&check["position_ids"]);
    let positions: Vec<u32> = rows.iter().map(|&r| all_positions[r]).collect();
    let bias = match check["attention"]["block_size"].as_u64() {
        Some(bs) => {
            let blocks: Vec<u64> = rows.iter().map(|&r| r as u64 / bs).collect();
            let data: Vec<f32> = blocks
                .iter()
                .flat_map(|&q| {
                    blocks
                        .iter()
                        .map(move |&k| if k <= q { 0.0 } else { f32::NEG_INFINITY })
                })
                .collect();
            Some(Tensor::from_vec(
                data,
                (1, 1, rows.len(), rows.len()),
                &Device::Cpu,
            )?)
        }
        None => None,
    };
    let t = Tensor::from_vec(tokens.clone(), (1, tokens.len()), &Device::Cpu)?;
    let pass = Pass {
        ids: &t,
        positions: &positions,
        bias: bias.as_ref(),
        cache: CacheOp::None,
    };
    Ok(session.model.hidden(&pass)?.i(0)?)
}

pub(crate) fn forward_checks(family: &str) -> Result<usize> {
    let mut ran = 0;
    for (dir, cases) in fixtures(family)? {
        let mut session = open(&dir)?;
        let tol = cases["tolerances"]["final_norm_hidden_abs"]
            .as_f64()
            .unwrap_or(1e-4);
        let logit_tol = cases["tolerances"]["max_logit_abs"]
            .as_f64()
            .unwrap_or(1e-3);
        for check in cases["forward_checks"]
            .as_array()
            .context("forward_checks")?
        {
            let id = &check["id"];
            let hidden = check_hidden(&mut session, check)?;
            let want: Vec<Vec<f32>> = serde_json::from_value(check["final_norm_hidden"].clone())?;
            let want = Tensor::new(want, &Device::Cpu)?;
            let err = (&hidden - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                f64::from(err) <= tol,
                "{} {id}: hidden states differ by {err}",
                dir.display()
            );
            let logits = session.model.head(&hidden.unsqueeze(0)?)?.i(0)?;
            assert_eq!(
                ids(&check["argmax"]),
                logits.argmax(D::Minus1)?.to_vec1::<u32>()?,
                "{id}: argmax"
            );
            let max: Vec<f32> = logits.max(D::Minus1)?.to_vec1()?;
            let want_max: Vec<f64> = serde_json::from_value(check["max_logit"].clone())?;
            for (got, want) in max.iter().zip(&want_max) {
                assert!(
                    (f64::from(*got) - want).abs() <= logit_tol,
                    "{id}: max logit {got} vs {want}"
                );
            }
            ran += 1;
        }
    }
    Ok(ran)
}

/// Every single-prompt case of the `family` fixtures whose sampler starts with `sampler`:
/// prompt text and ids, the canvas token for token, the forward passes (or denoising steps for
/// block diffusion, whose reference counts them apart), and the decoded text. `flags` adjusts
/// each case's flags (to rerun it another way).
pub(crate) fn single_prompt_cases(
    family: &str,
    sampler: &str,
    flags: impl Fn(Defaults) -> Defaults,
) -> Result<usize> {
    cases_in("cases.json", family, sampler, flags)
}

/// The cases of `sampler` in the cases file `name` of the `family` fixtures, each run and
/// compared token for token, with its forward passes and its text.
fn cases_in(
    name: &str,
    family: &str,
    sampler: &str,
    flags: impl Fn(Defaults) -> Defaults,
) -> Result<usize> {
    let mut ran = 0;
    for (dir, cases) in fixture_files(family, name)? {
        let mut session = open(&dir)?;
        let matching = cases["cases"].as_array().context("cases")?.iter();
        for case in matching.filter(|c| {
            c["sampler"]
                .as_str()
                .is_some_and(|s| s.starts_with(sampler))
        }) {
            let id = &case["id"];
            let (text, prompt) = case_prompt(&session, case)?;
            assert_eq!(
                text,
                case["prompt_text"].as_str().unwrap_or_default(),
                "{id}: prompt text"
            );
            assert_eq!(prompt, ids(&case["prompt_ids"]), "{id}: prompt ids");
            let p = plan(&session, &flags(case_flags(case)?))?;
            let (g, trace) = sample(&mut session, &prompt, &p)?;
            assert_eq!(
                g.canvas,
                ids(&case["generated_ids"]),
                "{id}: {}",
                divergence(&case["trace"], &trace)
            );
            match case["nfe_denoise"].as_u64() {
                Some(steps) => assert_eq!(g.steps as u64, steps, "{id}: denoising steps"),
                None => {
                    let reference = case["nfe"].as_u64().context("nfe")? as usize;
                    let idle = match case["nfe_idle"].as_u64() {
                        Some(n) => n as usize,
                        None => idle_steps(&case["trace"]),
                    };
                    assert_eq!(g.nfe, reference - idle, "{id}: forward passes");
                }
            }
            let want_text = case["text_skip_special"].as_str().unwrap_or_default();
            assert_eq!(
                session.tokenizer.decode(&g.canvas)?,
                want_text,
                "{id}: text"
            );
            ran += 1;
        }
    }
    Ok(ran)
}

#[test]
fn llada_forward_checks_match_the_reference_hidden_states() -> Result<()> {
    assert!(forward_checks("llada")? >= 2);
    Ok(())
}

#[test]
fn dream_forward_checks_match_the_reference_hidden_states() -> Result<()> {
    assert!(forward_checks("dream")? >= 2);
    Ok(())
}

#[test]
fn block_diffusion_forward_checks_match_the_reference_hidden_states() -> Result<()> {
    assert!(forward_checks("bd3lm")? >= 3);
    Ok(())
}

#[test]
fn llada_generate_cases_are_token_exact() -> Result<()> {
    let ran = single_prompt_cases("llada", "llada.generate", |f| f)?;
    assert!(ran >= 7, "only {ran} llada.generate cases ran");
    Ok(())
}

#[test]
fn fast_dllm_threshold_and_cache_cases_are_token_exact() -> Result<()> {
    let ran = single_prompt_cases("llada", "fastdllm.", |f| f)?;
    assert!(ran >= 4, "only {ran} Fast-dLLM cases ran");
    Ok(())
}

/// `fastdllm-cases.json`: goldens of Fast-dLLM's own Dream code (its provenance is in the file).
#[test]
fn fast_dllm_dream_cache_cases_are_token_exact() -> Result<()> {
    let ran = cases_in("fastdllm-cases.json", "dream", "fastdllm.dream.", |f| f)?;
    assert!(ran >= 16, "only {ran} Fast-dLLM Dream cases ran");
    Ok(())
}

#[test]
fn dream_diffusion_generate_cases_are_token_exact() -> Result<()> {
    let ran = single_prompt_cases("dream", "dream.diffusion_generate", |f| f)?;
    assert!(ran >= 9, "only {ran} dream cases ran");
    Ok(())
}

#[test]
fn block_diffusion_cases_are_token_exact_with_the_cache() -> Result<()> {
    let ran = single_prompt_cases("bd3lm", "dllm.BD3LMSampler", |f| f)?;
    assert!(ran >= 7, "only {ran} block-diffusion cases ran");
    Ok(())
}

/// SDAR's sampler (its provenance is in the cases file): the grid from position 0 with the
/// prompt's tail in the first block, static counts and the dynamic threshold, with the exact
/// cache and with full recomputation.
#[test]
fn sdar_cases_are_token_exact_with_and_without_the_cache() -> Result<()> {
    for cache in [CacheMode::Prefix, CacheMode::None] {
        let ran = single_prompt_cases("sdar", "sdar.block_diffusion_generate", |f| Defaults {
            cache: Some(cache),
            ..f
        })?;
        assert!(ran >= 14, "only {ran} SDAR cases ran");
    }
    Ok(())
}

/// The exact cache is exact: the same runs with every prefix recomputed at every step give the
/// same tokens (the goldens).
#[test]
fn block_diffusion_cases_are_token_exact_without_the_cache() -> Result<()> {
    let ran = single_prompt_cases("bd3lm", "dllm.BD3LMSampler", |f| Defaults {
        cache: Some(CacheMode::None),
        ..f
    })?;
    assert!(ran >= 7, "only {ran} block-diffusion cases ran");
    Ok(())
}

/// The exact cache is exact in the hidden states too: a block's step against the cached prompt
/// and committed blocks equals the same rows of a full block-causal pass over everything.
/// The largest difference between the hidden states of `seq`'s last block computed in one pass
/// over everything (with `bias`, `[1, 1, n, n]`) and through the exact cache: `seq[..prompt]`
/// stored (its part of `bias`), the next `committed` tokens appended, the rest read against both.
pub(crate) fn cache_error(
    session: &mut Session,
    seq: &[u32],
    prompt: usize,
    committed: usize,
    bias: &Tensor,
) -> Result<f32> {
    let positions: Vec<u32> = (0..seq.len() as u32).collect();
    let ids = |r: std::ops::Range<usize>| {
        Tensor::from_vec(seq[r.clone()].to_vec(), (1, r.len()), &Device::Cpu)
    };
    let pass = |r: std::ops::Range<usize>, bias, cache| (ids(r.clone()), r, bias, cache);
    let full = session.model.hidden(&Pass {
        ids: &ids(0..seq.len())?,
        positions: &positions,
        bias: Some(bias),
        cache: CacheOp::None,
    })?;
    let prompt_bias = bias
        .narrow(2, 0, prompt)?
        .narrow(3, 0, prompt)?
        .contiguous()?;
    let split = prompt + committed;
    let mut cached = None;
    for (t, r, b, cache) in [
        pass(0..prompt, Some(&prompt_bias), CacheOp::Store),
        pass(prompt..split, None, CacheOp::Append),
        pass(split..seq.len(), None, CacheOp::Read),
    ] {
        cached = Some(session.model.hidden(&Pass {
            ids: &t?,
            positions: &positions[r],
            bias: b,
            cache,
        })?);
    }
    let cached = cached.context("three passes")?;
    Ok((full.narrow(1, split, seq.len() - split)? - cached)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?)
}

#[test]
fn block_diffusion_cache_matches_full_recomputation_hidden_states() -> Result<()> {
    let (dir, _) = fixtures("bd3lm")?.remove(0);
    let mut session = open(&dir)?;
    let mask = session.tokenizer.special.mask;
    let bs = 8;
    // A prompt of 13 tokens (end-aligned: blocks of 5 and 8), a committed block, a block of masks
    // with two tokens revealed.
    let prompt: Vec<u32> = (1000..1013).collect();
    let committed: Vec<u32> = (2000..2008).collect();
    let current = [mask, 3000, mask, mask, 3001, mask, mask, mask];
    let seq: Vec<u32> = prompt
        .iter()
        .chain(&committed)
        .chain(&current)
        .copied()
        .collect();
    let blocks: Vec<usize> = (0..seq.len()).map(|i| (3 + i) / bs).collect();
    let full_bias: Vec<f32> = blocks
        .iter()
        .flat_map(|&q| {
            blocks
                .iter()
                .map(move |&k| if k <= q { 0.0 } else { f32::NEG_INFINITY })
        })
        .collect();
    let full_bias = Tensor::from_vec(full_bias, (1, 1, seq.len(), seq.len()), &Device::Cpu)?;
    let err = cache_error(&mut session, &seq, 13, 8, &full_bias)?;
    assert!(
        err <= 1e-4,
        "cached block differs from full recomputation by {err}"
    );
    Ok(())
}

#[test]
fn llada_chat_carries_tokens_like_chat_py() -> Result<()> {
    let mut ran = 0;
    for (dir, cases) in fixtures("llada")? {
        let mut session = open(&dir)?;
        for case in cases["cases"]
            .as_array()
            .context("cases")?
            .iter()
            .filter(|c| c["sampler"] == "llada.chat")
        {
            let p = plan(&session, &case_flags(case)?)?;
            let mut conversation = session.conversation(false, None)?;
            for (turn, want) in case["turns"]
                .as_array()
                .context("turns")?
                .iter()
                .enumerate()
            {
                let user = want["user"].as_str().context("user")?;
                let (_, prompt) = conversation.prompt(user, &session.tokenizer)?;
                assert_eq!(
                    prompt,
                    ids(&want["prompt_ids"]),
                    "{} turn {turn}: prompt",
                    case["id"]
                );
                let (g, trace) = sample(&mut session, &prompt, &p)?;
                assert_eq!(
                    g.canvas,
                    ids(&want["generated_ids"]),
                    "turn {turn}: {}",
                    divergence(&want["trace"], &trace)
                );
                let answer = session.tokenizer.answer(&g.canvas)?;
                conversation.record(user, &prompt, &g.canvas, &answer, &session.tokenizer);
                assert_eq!(
                    conversation.carried(),
                    ids(&want["carried_ids"]).as_slice(),
                    "turn {turn}: carried ids"
                );
            }
            ran += 1;
        }
    }
    assert!(ran >= 1, "no llada.chat case ran");
    Ok(())
}
