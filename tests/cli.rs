//! Black-box tests of the `dcoder` binary: flags, errors, output modes, and the parity cases
//! through the command line (README section 8 of the fixtures).

mod common;

use std::path::Path;

use serde_json::Value;

use common::{assert_clean_error, cli_args, dcoder, fixture, stderr, stdout, Result};

/// A copy of the LLaDA fixture in a temp dir, big files linked, so a test can break one file.
fn llada_copy() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for entry in std::fs::read_dir(fixture("llada-tiny"))? {
        let path = entry?.path();
        let name = path.file_name().ok_or("file name")?;
        std::os::unix::fs::symlink(&path, dir.path().join(name))?;
    }
    Ok(dir)
}

/// Replaces a linked file of a fixture copy by `bytes`.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result {
    let path = dir.join(name);
    std::fs::remove_file(&path)?;
    std::fs::write(&path, bytes)?;
    Ok(())
}

#[test]
fn help_lists_the_flags() -> Result {
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path()).arg("--help").output()?;
    assert!(out.status.success());
    let text = stdout(&out);
    for flag in [
        "--model",
        "--gen-length",
        "--block-length",
        "--steps",
        "--temperature",
        "--strategy",
        "--cfg-scale",
        "--suppress-eos",
        "--eos-last",
        "--seed",
        "--system",
        "--no-chat-template",
        "--json",
        "--dtype",
        "--threshold",
        "--entropy-bound",
        "--cache",
        "--steps-per-block",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    Ok(())
}

#[test]
fn models_lists_the_registry_and_the_cache_state() -> Result {
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path()).arg("models").output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("qwen3-0.6b-bd3lm *") && text.contains("GSAI-ML/LLaDA-8B-Instruct"),
        "{text}"
    );
    assert!(text.contains("llada-1.5"));
    assert!(
        !text.contains("downloaded"),
        "nothing is cached in an empty HF_HOME: {text}"
    );

    // A cached snapshot (what hf-hub leaves after a download) shows as downloaded.
    let repo = home.path().join("hub/models--GSAI-ML--LLaDA-1.5");
    let snap = repo.join("snapshots/abc123");
    std::fs::create_dir_all(&snap)?;
    std::fs::create_dir_all(repo.join("refs"))?;
    std::fs::write(repo.join("refs/main"), "abc123")?;
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(snap.join(name), "{}")?;
    }
    let text = stdout(&dcoder(home.path()).arg("models").output()?);
    let line = text
        .lines()
        .find(|l| l.starts_with("llada-1.5"))
        .ok_or("no llada-1.5 line")?;
    assert!(line.contains("downloaded"), "{line}");
    Ok(())
}

#[test]
fn unknown_model_names_suggest_the_closest() -> Result {
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path())
        .args(["--model", "llada-8b-instruc", "hi"])
        .output()?;
    assert_clean_error(&out, "did you mean 'llada-8b-instruct'");
    let out = dcoder(home.path())
        .args(["--model", "./no/such/dir", "hi"])
        .output()?;
    assert_clean_error(&out, "no such folder");
    Ok(())
}

#[test]
fn offline_without_cache_names_what_is_missing() -> Result {
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path())
        .args(["--model", "llada-1.5", "hi"])
        .output()?;
    assert_clean_error(&out, "HF_HUB_OFFLINE");
    assert!(stderr(&out).contains("config.json"), "{}", stderr(&out));
    Ok(())
}

#[test]
fn broken_weights_are_clear_errors() -> Result {
    let home = tempfile::tempdir()?;
    let good = std::fs::read(fixture("llada-tiny/model.safetensors"))?;
    let cases: [(&str, Option<Vec<u8>>); 3] = [
        ("no model.safetensors", None),
        (
            "truncated or corrupt",
            Some(good[..good.len() / 2].to_vec()),
        ),
        (
            "truncated or corrupt",
            Some(b"this is not a safetensors file".to_vec()),
        ),
    ];
    for (needle, bytes) in cases {
        let dir = llada_copy()?;
        match bytes {
            Some(bytes) => replace(dir.path(), "model.safetensors", &bytes)?,
            None => std::fs::remove_file(dir.path().join("model.safetensors"))?,
        }
        let out = dcoder(home.path())
            .args(["--model"])
            .arg(dir.path())
            .arg("hi")
            .output()?;
        assert_clean_error(&out, needle);
    }
    Ok(())
}

#[test]
fn a_config_that_does_not_match_the_weights_is_a_clear_error() -> Result {
    let home = tempfile::tempdir()?;
    let dir = llada_copy()?;
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("llada-tiny/config.json"))?)?;
    config["d_model"] = Value::from(32);
    replace(dir.path(), "config.json", config.to_string().as_bytes())?;
    let out = dcoder(home.path())
        .arg("--model")
        .arg(dir.path())
        .arg("hi")
        .output()?;
    assert_clean_error(&out, "do not match");
    Ok(())
}

#[test]
fn a_missing_tokenizer_is_a_clear_error() -> Result {
    let home = tempfile::tempdir()?;
    let dir = llada_copy()?;
    std::fs::remove_file(dir.path().join("tokenizer.json"))?;
    let out = dcoder(home.path())
        .arg("--model")
        .arg(dir.path())
        .arg("hi")
        .output()?;
    assert_clean_error(&out, "no tokenizer.json");
    Ok(())
}

#[test]
fn bad_sampler_flags_fail_before_loading() -> Result {
    let home = tempfile::tempdir()?;
    let model = fixture("llada-tiny");
    let run = |args: &[&str]| {
        dcoder(home.path())
            .arg("--model")
            .arg(&model)
            .args(args)
            .arg("hi")
            .output()
    };
    assert_clean_error(&run(&["--steps", "0"])?, "--steps");
    assert_clean_error(
        &run(&["--gen-length", "20", "--block-length", "8"])?,
        "not a multiple of --block-length",
    );
    assert_clean_error(
        &run(&["--gen-length", "16", "--block-length", "8", "--steps", "3"])?,
        "--steps 3",
    );
    assert_clean_error(&run(&["--temperature", "-1"])?, "--temperature");
    assert_clean_error(&run(&["--entropy-bound", "0"])?, "--entropy-bound");
    Ok(())
}

/// The entropy bound decides how many positions a step reveals: a huge bound reveals a block in
/// one step, a tiny one a position per step, whatever `--steps` says.
#[test]
fn entropy_bound_sets_the_tokens_per_step() -> Result {
    let home = tempfile::tempdir()?;
    let run = |bound: &str| -> Result<Value> {
        let out = dcoder(home.path())
            .arg("--model")
            .arg(fixture("llada-tiny"))
            .args(["--json", "--gen-length", "16", "--block-length", "8"])
            .args(["--steps", "4", "--entropy-bound", bound, "hello"])
            .output()?;
        assert!(out.status.success(), "{}", stderr(&out));
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let wide = run("1e9")?;
    assert_eq!(wide["settings"]["entropy_bound"].as_f64(), Some(1e9));
    assert_eq!(
        (wide["steps"].as_u64(), wide["tokens_per_forward"].as_f64()),
        (Some(2), Some(8.0))
    );
    let narrow = run("1e-9")?;
    assert_eq!(narrow["steps"].as_u64(), Some(16));
    assert_eq!(narrow["tokens"].as_array().map(Vec::len), Some(16));
    Ok(())
}

#[test]
fn a_prompt_longer_than_the_context_is_a_clear_error() -> Result {
    let home = tempfile::tempdir()?;
    let long = "word ".repeat(5000);
    let out = dcoder(home.path())
        .arg("--model")
        .arg(fixture("llada-tiny"))
        .arg(&long)
        .output()?;
    assert_clean_error(&out, "more than the 4096");
    Ok(())
}

#[test]
fn piped_stdout_holds_the_answer_only() -> Result {
    let home = tempfile::tempdir()?;
    let model = fixture("llada-tiny");
    let args = [
        "--gen-length",
        "16",
        "--steps",
        "16",
        "--block-length",
        "8",
        "Sort a list of tuples by the second element in Python.",
    ];
    let plain = dcoder(home.path())
        .arg("--model")
        .arg(&model)
        .args(args)
        .output()?;
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(
        plain.stderr.is_empty(),
        "no progress line when stderr is not a terminal: {}",
        stderr(&plain)
    );
    let json = dcoder(home.path())
        .arg("--model")
        .arg(&model)
        .arg("--json")
        .args(args)
        .output()?;
    let report: Value = serde_json::from_slice(&json.stdout)?;
    let text = report["text"].as_str().ok_or("text")?;
    // The fixture's canvas for this prompt (the chat case's first turn) has EOS at position 3:
    // the answer is the three tokens before it.
    assert_eq!(report["answer_tokens"], 3);
    assert!(!text.is_empty());
    assert_eq!(stdout(&plain), format!("{}\n", text.trim_end()));
    // Same prompt from stdin, same answer.
    let mut child = dcoder(home.path())
        .arg("--model")
        .arg(&model)
        .args(&args[..6])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().ok_or("stdin")?, args[6].as_bytes())?;
    drop(child.stdin.take());
    assert_eq!(stdout(&child.wait_with_output()?), stdout(&plain));
    Ok(())
}

#[test]
fn json_reports_every_documented_field() -> Result {
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path())
        .arg("--model")
        .arg(fixture("llada-tiny"))
        .args([
            "--json",
            "--gen-length",
            "8",
            "--steps",
            "4",
            "--block-length",
            "8",
            "hello",
        ])
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout)?;
    for key in [
        "text",
        "tokens",
        "prompt_tokens",
        "steps",
        "nfe",
        "load_s",
        "elapsed_s",
        "tokens_per_s",
        "tokens_per_forward",
        "nfe_saved",
        "model",
        "device",
        "dtype",
    ] {
        assert!(!r[key].is_null(), "missing {key}");
    }
    let s = &r["settings"];
    assert_eq!(
        (
            s["cache"].as_str(),
            s["block_length"].as_u64(),
            s["threshold"].is_null()
        ),
        (Some("none"), Some(8), true)
    );
    assert_eq!(r["tokens"].as_array().map(Vec::len), Some(8));
    assert_eq!((r["steps"].as_u64(), r["nfe"].as_u64()), (Some(4), Some(4)));
    assert_eq!(
        (r["device"].as_str(), r["dtype"].as_str()),
        (Some("cpu"), Some("f32"))
    );
    Ok(())
}

/// Every single-prompt parity case of every fixture family this build runs, through the CLI
/// exactly as the fixtures' README section 8 spells the flags.
#[test]
fn parity_cases_through_the_command_line() -> Result {
    let home = tempfile::tempdir()?;
    let mut ran = 0;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(fixture(""))? {
        let dir = entry?.path();
        for name in ["cases.json", "fastdllm-cases.json"] {
            if dir.join(name).is_file() {
                files.push((dir.clone(), dir.join(name)));
            }
        }
    }
    for (dir, file) in files {
        let cases: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        for case in cases["cases"].as_array().ok_or("cases")? {
            let Some(args) = cli_args(case) else { continue };
            let out = dcoder(home.path())
                .arg("--model")
                .arg(&dir)
                .args(&args)
                .output()?;
            assert!(out.status.success(), "{}: {}", case["id"], stderr(&out));
            let report: Value = serde_json::from_slice(&out.stdout)?;
            assert_eq!(
                report["tokens"], case["generated_ids"],
                "{} via {:?}",
                case["id"], args
            );
            ran += 1;
        }
    }
    assert!(ran >= 57, "only {ran} cases ran through the CLI");
    Ok(())
}
