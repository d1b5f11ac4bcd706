//! What the CLI test files share: the binary in an empty HF cache, clean-error checks, and the
//! flags of a parity case.

// Each test file uses a part of what is here.
#![allow(dead_code)]

pub mod tmux;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The binary with `home` as HOME, config folder and HF cache, no network use, and none of the
/// user's model, endpoint or key variables, so tests never touch real caches or settings.
pub fn dcoder(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dcoder"));
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("HF_HOME", home)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("DCODER_CACHE")
        .env_remove("DCODER_MODEL")
        .env_remove("DCODER_ENDPOINT")
        .env_remove("DCODER_API_KEY")
        .env_remove("INCEPTION_API_KEY");
    cmd
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failed run: non-zero exit, exactly one `error: ...` line on stderr containing `needle`,
/// nothing on stdout, no panic.
pub fn assert_clean_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        lines[0].contains(needle),
        "error should mention '{needle}': {err}"
    );
    assert!(out.stdout.is_empty(), "stdout should be empty on error");
}

/// The flags for a case (fixtures README section 8), or `None` for samplers this build does
/// not run from the command line (multi-turn chat is checked in the crate's own tests).
pub fn cli_args(case: &Value) -> Option<Vec<String>> {
    let s = &case["settings"];
    let strategy = match case["sampler"].as_str()? {
        "llada.generate" => match s["remasking"].as_str()? {
            "random" => "random",
            _ => "confidence",
        },
        "fastdllm.generate"
        | "fastdllm.generate_with_prefix_cache"
        | "fastdllm.generate_with_dual_cache"
        | "dllm.BD3LMSampler.sample"
        | "sdar.block_diffusion_generate" => match s["remasking"].as_str()? {
            "random" => "random",
            _ => "confidence",
        },
        "dream.diffusion_generate"
        | "fastdllm.dream.generate_with_prefix_cache"
        | "fastdllm.dream.generate_with_dual_cache" => match s["alg"].as_str()? {
            "maskgit_plus" | "confidence_threshold" => "confidence",
            "topk_margin" => "margin",
            other => other,
        },
        _ => return None,
    };
    let mut args: Vec<String> = vec![
        "--json".into(),
        "--temperature".into(),
        "0".into(),
        "--seed".into(),
        "0".into(),
    ];
    let mut flag = |name: &str, value: &Value| {
        if !value.is_null() {
            args.push(format!("--{name}"));
            args.push(value.to_string());
        }
    };
    flag("gen-length", &s["gen_length"]);
    flag("gen-length", &s["max_new_tokens"]);
    flag("steps", &s["steps"]);
    flag("block-length", &s["block_length"]);
    flag("block-length", &s["block_size"]);
    flag("steps-per-block", &s["steps_per_block"]);
    flag("threshold", &s["threshold"]);
    if s["cfg_scale"].as_f64().is_some_and(|w| w > 0.0) {
        flag("cfg-scale", &s["cfg_scale"]);
    }
    flag("eps", &s["eps"]);
    flag("alg-temp", &s["alg_temp"]);
    flag("top-p", &s["top_p"]);
    flag("top-k", &s["top_k"]);
    args.push("--strategy".into());
    args.push(strategy.into());
    let cache = match case["sampler"].as_str()? {
        "fastdllm.generate_with_prefix_cache" | "fastdllm.dream.generate_with_prefix_cache" => {
            Some("prefix")
        }
        "fastdllm.generate_with_dual_cache" | "fastdllm.dream.generate_with_dual_cache" => {
            Some("dual")
        }
        "fastdllm.generate" => Some("none"),
        _ => None,
    };
    if let Some(cache) = cache {
        args.push("--cache".into());
        args.push(cache.into());
    }
    if s["logits_eos_inf"] == true {
        args.push("--suppress-eos".into());
    }
    if s["confidence_eos_eot_inf"] == true {
        args.push("--eos-last".into());
    }
    if case["apply_chat_template"] == false {
        args.push("--no-chat-template".into());
        args.push(case["prompt_text"].as_str()?.to_string());
    } else {
        let messages = case["messages"].as_array()?;
        if let Some(system) = messages.iter().find(|m| m["role"] == "system") {
            args.push("--system".into());
            args.push(system["content"].as_str()?.to_string());
        }
        args.push(
            messages.iter().rev().find(|m| m["role"] == "user")?["content"]
                .as_str()?
                .to_string(),
        );
    }
    Some(args)
}
