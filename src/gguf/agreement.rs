//! How close quantized weights keep a network to its f32 self, on the tiny BD3LM fixture: the
//! fixture written as GGUFs of several types (`writer.rs`), loaded back, and one forward pass of
//! the fixture's own check sequence compared with the safetensors model's logits.

use std::path::Path;

use anyhow::Result;
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor, D};

use crate::hub::Source;
use crate::model::{Denoiser, Pass};
use crate::session::{Checkpoint, LoadOptions, Session, SourceOptions};

fn logits(session: &mut Session, ids: &[u32]) -> Result<Tensor> {
    let t = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
    let positions: Vec<u32> = (0..ids.len() as u32).collect();
    let rows: Vec<u32> = positions.clone();
    Ok(session
        .model
        .forward(&Pass::full(&t, &positions), &rows)?
        .squeeze(0)?)
}

/// (share of positions whose top token is f32's, relative L2 error of the logits).
fn compare(reference: &Tensor, other: &Tensor) -> Result<(f64, f64)> {
    let a: Vec<u32> = reference.argmax(D::Minus1)?.to_vec1()?;
    let b: Vec<u32> = other.argmax(D::Minus1)?.to_vec1()?;
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
    let err = (reference - other)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f32>()?
        .sqrt()
        / reference.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
    Ok((same, err as f64))
}

#[test]
fn quantized_logits_stay_close_to_f32() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bd3lm-tiny");
    let opts = LoadOptions {
        device: "cpu".into(),
        dtype: Some("f32".into()),
        no_repack: false,
    };
    let source = Source::Dir(dir.clone());
    let checkpoint = Checkpoint::locate(&source)?;
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json"))?)?;
    let ids: Vec<u32> = cases["forward_checks"][0]["input_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_u64().map(|v| v as u32))
        .collect();
    assert!(ids.len() >= 8, "no forward check sequence");
    let tmp = tempfile::tempdir()?;
    let mut f32_model = Session::load(Checkpoint::locate(&source)?, &opts)?;
    let reference = logits(&mut f32_model, &ids)?;
    // (type, least top-1 agreement, largest relative error): below what they reach (measured:
    // Q8_0 91% / 0.033, Q4_0 53% / 0.24), above what a wrong layout or kernel gives (~0
    // agreement, error ~1). F32 must be exact. The fixture's rows of 32 are too short for the
    // 256-value K-quant blocks, which the zoo test covers instead.
    for (ty, least, most) in [
        (GgmlDType::F32, 1.0, 0.0),
        (GgmlDType::Q8_0, 0.75, 0.05),
        (GgmlDType::Q4_0, 0.4, 0.3),
    ] {
        let path = tmp.path().join(format!("{ty:?}.gguf"));
        checkpoint.write_gguf(ty, &path)?;
        let family = SourceOptions {
            family: Some(crate::registry::Arch::Bd3lm),
            quant: None,
        };
        let gguf = Checkpoint::locate_with(&Source::Dir(path), &family)?;
        let mut session = Session::load(gguf, &opts)?;
        let (same, err) = compare(&reference, &logits(&mut session, &ids)?)?;
        println!(
            "{ty:?}: top-1 agreement {:.1}%, relative logit error {err:.4}",
            100.0 * same
        );
        assert!(same >= least && err <= most, "{ty:?}: {same} {err}");
    }
    Ok(())
}
