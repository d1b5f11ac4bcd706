//! LLaDA2.0 / LLaDA2.1 through the binary, with the flags the fixtures README maps the authors'
//! `generate()` arguments to; and token edits in `--json` and `--trace`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn dcoder(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dcoder"));
    cmd.env("HF_HOME", home)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("DCODER_MODEL");
    cmd
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

fn ids(v: &Value) -> Vec<u64> {
    parsed(v)
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// The command line of a case: the prompt as the stand-in tokenizer's words, then the flags.
fn args(kwargs: &Value, prompt: &[u64]) -> Vec<String> {
    let mut a: Vec<String> = ["--no-chat-template", "--json", "--temperature", "0"]
        .map(String::from)
        .to_vec();
    for (key, flag) in [
        ("gen_length", "--gen-length"),
        ("block_length", "--block-length"),
        ("steps", "--steps"),
        ("threshold", "--threshold"),
        ("minimal_topk", "--minimal-topk"),
        ("editing_threshold", "--edit-threshold"),
        ("max_post_steps", "--max-post-steps"),
        ("num_to_transfer", "--num-to-transfer"),
    ] {
        if let Some(v) = kwargs.get(key).filter(|v| !v.is_null()) {
            a.extend([flag.to_string(), v.to_string()]);
        }
    }
    a.push(match kwargs["eos_early_stop"].as_bool() {
        Some(true) => "--early-stop".into(),
        _ => "--no-early-stop".into(),
    });
    a.push(
        prompt
            .iter()
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    a
}

/// Cases run, cases whose canvas starts with the golden, and golden tokens matched.
#[derive(Debug, Default)]
struct Agreement {
    cases: usize,
    exact: usize,
    tokens: usize,
    same: usize,
}

/// Every CLI-runnable case of both fixtures on the model `model(fixture name)` gives.
fn run_cases(model: impl Fn(&str) -> PathBuf) -> Result<Agreement> {
    let home = tempfile::tempdir()?;
    let mut a = Agreement::default();
    for name in ["llada2.0-tiny", "llada2.1-tiny"] {
        let dir = fixture(name);
        let cases: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json"))?)?;
        for case in cases["cases"].as_array().ok_or("cases")? {
            let kwargs = parsed(&case["generate_kwargs"]);
            // A custom EOS id has no flag: those cases run in-process (src/llada2_parity.rs).
            if kwargs["eos_id"].as_u64() != Some(500) {
                continue;
            }
            let prompt = ids(&case["prompt_ids"]);
            let mut want = match case.get("mask_fixed") {
                Some(fixed) => ids(&fixed["output_ids"]),
                None => ids(&case["output_ids"]),
            };
            if name == "llada2.0-tiny"
                && kwargs["eos_early_stop"] == true
                && want.starts_with(&prompt)
            {
                want.drain(..prompt.len());
            }
            let out = dcoder(home.path())
                .arg("--model")
                .arg(model(name))
                .args(args(&kwargs, &prompt))
                .output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{}: {err}", case["name"]);
            let report: Value = serde_json::from_slice(&out.stdout)?;
            assert_eq!(ids(&report["prompt_tokens"]), prompt, "{}", case["name"]);
            let got = ids(&report["tokens"]);
            a.cases += 1;
            a.exact += usize::from(got.starts_with(&want));
            a.tokens += want.len();
            a.same += got.iter().zip(&want).filter(|(x, y)| x == y).count();
        }
    }
    Ok(a)
}

#[test]
fn llada2_cases_through_the_command_line() -> Result {
    let a = run_cases(fixture)?;
    assert_eq!(a.cases, 20, "10 cases of each fixture run through the CLI");
    assert_eq!(a.exact, a.cases, "{a:?}");
    Ok(())
}

/// `dcoder quantize FIXTURE --quant TYPE -o FILE` for both fixtures, into `dir`.
fn quantized(dir: &Path, ty: &str) -> Result<impl Fn(&str) -> PathBuf> {
    for name in ["llada2.0-tiny", "llada2.1-tiny"] {
        let out = dcoder(dir)
            .arg("quantize")
            .arg(fixture(name))
            .args(["--quant", ty, "-o"])
            .arg(dir.join(format!("{name}-{ty}.gguf")))
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} {ty}: {err}");
    }
    let dir = dir.to_path_buf();
    let ty = ty.to_string();
    Ok(move |name: &str| dir.join(format!("{name}-{ty}.gguf")))
}

/// LLaDA2 GGUFs as dcoder writes them (experts stacked per layer, Bailing-MoE-V2 names, the
/// word-level stand-in tokenizer carried whole): unquantized, every golden token for token;
/// Q8_0 and Q4_0 run and report their agreement (random tiny weights have small logit margins).
#[test]
fn llada2_ggufs_run_the_cases() -> Result {
    let tmp = tempfile::tempdir()?;
    let a = run_cases(quantized(tmp.path(), "f32")?)?;
    assert_eq!((a.cases, a.exact), (20, 20), "f32 GGUF: {a:?}");
    for (ty, floor) in [("q8_0", 0.3), ("q4_0", 0.05)] {
        let a = run_cases(quantized(tmp.path(), ty)?)?;
        println!(
            "llada2 {ty} GGUF: {}/{} golden tokens ({:.1}%), {}/{} cases exact",
            a.same,
            a.tokens,
            100.0 * a.same as f64 / a.tokens.max(1) as f64,
            a.exact,
            a.cases
        );
        assert!(a.same as f64 >= floor * a.tokens as f64, "{ty}: {a:?}");
    }
    Ok(())
}

#[test]
fn token_edits_reach_the_json_and_the_trace() -> Result {
    let home = tempfile::tempdir()?;
    let trace = home.path().join("run.jsonl");
    // LLaDA2.1's S-mode case: an edit threshold of 0 rewrites every changed argmax.
    let out = dcoder(home.path())
        .arg("--model")
        .arg(fixture("llada2.1-tiny"))
        .args(["--no-chat-template", "--json", "--temperature", "0"])
        .args(["--gen-length", "24", "--block-length", "8", "--steps", "8"])
        .args([
            "--threshold",
            "0.5",
            "--edit-threshold",
            "0",
            "--max-post-steps",
            "16",
        ])
        .arg("--trace")
        .arg(&trace)
        .arg("t1 t2 t3 t4 t5 t6 t7 t8 t9 t10 t11 t12")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let edits = report["edits"].as_u64().ok_or("edits")?;
    assert!(edits > 0, "this case edits tokens: {report}");
    assert_eq!(report["settings"]["edit_threshold"], 0.0);
    let lines: Vec<Value> = std::fs::read_to_string(&trace)?
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(lines[0]["version"], 2);
    let edited: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l["edited"].as_array())
        .flatten()
        .collect();
    assert!(!edited.is_empty(), "the trace records the edits");
    for e in &edited {
        assert_ne!(e["old"], e["new"], "an edit changes the token: {e}");
        assert!(e["old_text"].is_string() && e["text"].is_string());
    }
    // Edits past --gen-length (the grid's whole last block) are not shown, so at most `edits`.
    assert!(edited.len() as u64 <= edits);
    Ok(())
}

#[test]
fn editing_flags_belong_to_llada2() -> Result {
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path())
        .arg("--model")
        .arg(fixture("llada-tiny"))
        .args(["--edit-threshold", "0.5", "hello"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--edit-threshold") && !err.contains("panicked"),
        "{err}"
    );
    let out = dcoder(home.path())
        .arg("--model")
        .arg(fixture("llada2.0-tiny"))
        .args(["--max-post-steps", "4", "t1"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--edit-threshold"),
        "{err}"
    );
    Ok(())
}
