//! LLaDA-MoE parity against the authors' `modeling_lladamoe.py` with ML-GSAI/LLaDA's
//! `generate()` on the tiny fixture (`tests/fixtures/llada-moe-tiny`; provenance in its README):
//! final-norm hidden states, logits and the router's experts and weights per layer, and every
//! `generate()` case token for token. The Fast-dLLM caches, which have no golden on this body,
//! are checked to be as exact as they are on dense LLaDA where they must be.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::diffusion::CacheMode;
use crate::model::{CacheOp, Pass};
use crate::parity::{fixtures, forward_checks, ids, open, single_prompt_cases};
use crate::settings::Defaults;

#[test]
fn llada_moe_forward_checks_match_hidden_states_and_logits() -> Result<()> {
    assert!(forward_checks("llada-moe")? >= 2);
    Ok(())
}

/// Per layer and position, the experts chosen equal the reference's as sets and their weights
/// (softmax probabilities, not renormalised) agree within the fixture's tolerance.
#[test]
fn llada_moe_router_chooses_the_reference_experts_with_its_weights() -> Result<()> {
    let mut checked = 0;
    for (dir, cases) in fixtures("llada-moe")? {
        let session = open(&dir)?;
        let tol = cases["tolerances"]["router_weights_abs"]
            .as_f64()
            .unwrap_or(1e-5);
        for check in cases["forward_checks"].as_array().context("checks")? {
            let input = ids(&check["input_ids"]);
            let n = input.len();
            let t = Tensor::from_vec(input, (1, n), &Device::Cpu)?;
            let positions: Vec<u32> = ids(&check["position_ids"]);
            let pass = Pass {
                ids: &t,
                positions: &positions,
                bias: None,
                cache: CacheOp::None,
            };
            let routes = session.model.routes(&pass)?;
            for router in check["router"].as_array().context("router")? {
                let layer = router["layer"].as_u64().context("layer")? as usize;
                let ours = routes
                    .get(layer)
                    .and_then(Option::as_ref)
                    .context("a mixture-of-experts layer")?;
                let experts = router["chosen_experts_sorted"]
                    .as_array()
                    .context("experts")?;
                let weights = router["chosen_weights"].as_array().context("weights")?;
                assert_eq!(ours.len(), experts.len(), "layer {layer}: positions");
                for (pos, ((chosen, want), want_w)) in
                    ours.iter().zip(experts).zip(weights).enumerate()
                {
                    let mut chosen = chosen.clone();
                    chosen.sort_by_key(|c| c.0);
                    let got: Vec<u32> = chosen.iter().map(|c| c.0 as u32).collect();
                    assert_eq!(got, ids(want), "layer {layer} position {pos}: experts");
                    for ((_, w), want) in chosen.iter().zip(want_w.as_array().context("w")?) {
                        let want = want.as_f64().context("weight")?;
                        assert!(
                            (f64::from(*w) - want).abs() <= tol,
                            "layer {layer} position {pos}: weight {w} vs {want}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0);
    Ok(())
}

#[test]
fn llada_moe_generate_cases_are_token_exact() -> Result<()> {
    let ran = single_prompt_cases("llada-moe", "llada.generate", |f| f)?;
    assert!(ran >= 6, "only {ran} llada-moe generate() cases ran");
    Ok(())
}

/// Fast-dLLM's dual cache reuses the prompt's and the later blocks' keys and values across a
/// block's steps, so it is approximate (the reference's own caveat); its first step recomputes
/// everything and must reveal the same token as the uncached run. Both runs must fill the canvas
/// with real tokens.
#[test]
fn llada_moe_runs_with_the_fast_dllm_caches() -> Result<()> {
    let (dir, cases) = fixtures("llada-moe")?.remove(0);
    let mut session = open(&dir)?;
    let case: &Value = &cases["cases"][0];
    let prompt = ids(&case["prompt_ids"]);
    let mut first = Vec::new();
    for cache in [CacheMode::None, CacheMode::Prefix, CacheMode::Dual] {
        let flags = Defaults {
            gen_length: Some(16),
            steps: Some(16),
            block_length: Some(8),
            temperature: Some(0.0),
            cache: Some(cache),
            ..Defaults::default()
        };
        let plan = crate::parity::plan(&session, &flags)?;
        let mut step0 = None;
        let g = session.generate(&prompt, &plan, |step| {
            if step0.is_none() {
                step0 = step.revealed.first().map(|r| (r.position, r.token));
            }
            std::ops::ControlFlow::Continue(())
        })?;
        assert_eq!(g.canvas.len(), 16, "{cache:?}");
        assert!(g.canvas.iter().all(|&t| t != 503), "{cache:?}: masks left");
        first.push(step0);
    }
    assert!(
        first.iter().all(|f| f.is_some() && *f == first[0]),
        "{first:?}"
    );
    Ok(())
}
