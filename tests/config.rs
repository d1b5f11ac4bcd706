//! The config file through the binary (flags > config file > model card, strict parsing, where
//! it is looked for) and `dcoder completions`.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

mod common;

use common::{dcoder, stderr, Result};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llada-tiny")
}

/// Writes `$home/dcoder/config.toml`, the default place under XDG_CONFIG_HOME.
fn write_config(home: &Path, text: &str) -> Result<PathBuf> {
    let dir = home.join("dcoder");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("config.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn json_run(home: &Path, args: &[&str]) -> Result<Value> {
    let out = dcoder(home)
        .args(["--json", "--block-length", "4"])
        .args(args)
        .arg("hello")
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn flags_beat_the_config_file_which_beats_the_model_card() -> Result {
    let home = tempfile::tempdir()?;
    let model = fixture();
    let model = model.to_str().ok_or("path")?;
    // The card (the LLaDA architecture's defaults): 128 tokens, one per step.
    let card = json_run(home.path(), &["--model", model, "--gen-length", "8"])?;
    assert_eq!(card["settings"]["steps"], 8, "{card}");
    write_config(
        home.path(),
        &format!("model = \"{model}\"\n[sampler]\ngen_length = 8\nsteps = 4\n"),
    )?;
    // The config's model and sampler settings apply to unset flags.
    let config = json_run(home.path(), &[])?;
    assert_eq!(
        config["tokens"].as_array().map(Vec::len),
        Some(8),
        "{config}"
    );
    assert_eq!(config["settings"]["steps"], 4);
    assert!(
        config["model"]
            .as_str()
            .is_some_and(|m| m.contains("llada-tiny")),
        "{config}"
    );
    // A flag wins over the file, field by field.
    let flags = json_run(home.path(), &["--steps", "8"])?;
    assert_eq!(
        (
            &flags["settings"]["steps"],
            &flags["settings"]["gen_length"]
        ),
        (&Value::from(8), &Value::from(8))
    );
    Ok(())
}

fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error line, got: {err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "expected {needle:?} in: {err}");
    }
}

#[test]
fn a_bad_config_file_is_a_one_line_error_naming_the_file_and_key() -> Result {
    let home = tempfile::tempdir()?;
    let path = write_config(
        home.path(),
        "theme = \"dark\"\n\n[sampler]\ngen_lenght = 8\n",
    )?;
    let file = path.display().to_string();
    let out = dcoder(home.path()).args(["--model", "x", "hi"]).output()?;
    assert_one_line_error(&out, &[&file, "line 4", "gen_lenght"]);
    write_config(home.path(), "theme = \"blue\"\n")?;
    let out = dcoder(home.path()).args(["--model", "x", "hi"]).output()?;
    assert_one_line_error(&out, &[&file, "blue", "dark or light"]);
    // --config names another file, which must exist.
    let missing = home.path().join("nope.toml");
    let out = dcoder(home.path())
        .arg("--config")
        .arg(&missing)
        .arg("hi")
        .output()?;
    assert_one_line_error(&out, &["--config", "nope.toml"]);
    // ...and replaces the default one (which is broken here).
    let other = home.path().join("other.toml");
    std::fs::write(&other, "[endpoint.x]\nurl = \"ftp://h\"\n")?;
    let out = dcoder(home.path())
        .arg("--config")
        .arg(&other)
        .args(["--endpoint", "x", "--model", "m", "hi"])
        .output()?;
    assert_one_line_error(&out, &["ftp://h", "http://"]);
    Ok(())
}

#[test]
fn completions_are_printed_for_every_shell() -> Result {
    let home = tempfile::tempdir()?;
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = dcoder(home.path()).args(["completions", shell]).output()?;
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8(out.stdout)?;
        assert!(script.contains("dcoder"), "{shell}: {script}");
        assert!(script.contains("endpoint"), "{shell}: no --endpoint");
    }
    let out = dcoder(home.path()).args(["completions", "tcsh"]).output()?;
    assert!(!out.status.success());
    Ok(())
}
