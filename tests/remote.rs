//! `--endpoint` against local test servers: one that replays Mercury's documented diffusing
//! stream (whole-canvas chunks with `diffusion_meta`, noise and control characters in the early
//! canvases, a final chunk, `[DONE]`), one that speaks plain OpenAI streaming, and broken ones
//! (HTTP errors, a connection dropped mid-stream, a malformed chunk); see
//! `support/openai_server.rs`.

#[path = "support/openai_server.rs"]
mod openai_server;

use std::net::TcpListener;
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};

use openai_server::{
    canvas, chunk, done, gated_mercury, mercury, sse, stream_head, Part, Reply, Server, FINAL,
};

mod common;

use common::tmux::{exited, Tmux};
use common::{dcoder, stderr, Result};

/// A failed run: non-zero exit, one `error:` line containing every needle, stdout empty.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "expected {needle:?} in: {err}");
    }
    assert!(out.stdout.is_empty(), "stdout should be empty on error");
    assert!(
        !lines[0].chars().any(|c| c.is_control()),
        "control characters in the error line: {err:?}"
    );
}

#[test]
fn mercury_stream_plain_output_holds_only_the_final_text() -> Result {
    let server = Server::start(vec![mercury()])?;
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path())
        .env("DCODER_API_KEY", "k-123")
        .args(["--endpoint", &server.url, "--model", "mercury-coder"])
        .args(["--gen-length", "64", "--steps", "16", "write add"])
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout)?, format!("{FINAL}\n"));
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].head.starts_with("POST /v1/chat/completions "),
        "{}",
        seen[0].head
    );
    assert!(seen[0].head.contains("Bearer k-123"), "{}", seen[0].head);
    let body = &seen[0].body;
    assert_eq!(body["model"], "mercury-coder");
    assert_eq!(
        (&body["stream"], &body["diffusing"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "write add"}])
    );
    // Only the sampler flags given: --gen-length as max_tokens, --steps; nothing else.
    assert_eq!(
        (&body["max_tokens"], &body["steps"]),
        (&json!(64), &json!(16))
    );
    for absent in [
        "threshold",
        "temperature",
        "seed",
        "gen_length",
        "block_length",
    ] {
        assert!(body.get(absent).is_none(), "{absent} sent: {body}");
    }
    Ok(())
}

#[test]
fn plain_openai_deltas_are_appended() -> Result {
    let mut parts = sse(&[
        chunk(Some("fn "), None),
        chunk(Some("main() "), None),
        chunk(Some("{}"), None),
        chunk(None, Some("stop")),
    ]);
    parts.push(done());
    let server = Server::start(vec![Reply {
        head: stream_head(),
        parts,
    }])?;
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path())
        .args([
            "--endpoint",
            &server.url,
            "--model",
            "gpt-x",
            "--system",
            "be brief",
        ])
        .arg("hi")
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout)?, "fn main() {}\n");
    assert_eq!(
        server.seen()[0].body["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    Ok(())
}

#[test]
fn json_keeps_the_report_fields_with_client_side_timings() -> Result {
    let server = Server::start(vec![mercury()])?;
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path())
        .args(["--endpoint", &server.url, "--model", "mercury-coder"])
        .args(["--json", "--threshold", "0.9", "write add"])
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout)?;
    // The local report's fields, every one present.
    for key in [
        "model",
        "arch",
        "device",
        "dtype",
        "text",
        "tokens",
        "prompt_tokens",
        "answer_tokens",
        "steps",
        "nfe",
        "tokens_per_forward",
        "load_s",
        "elapsed_s",
        "tokens_per_s",
        "nfe_saved",
        "stopped_early",
        "cancelled",
        "edits",
        "settings",
    ] {
        assert!(!r[key].is_null(), "missing {key}: {r}");
    }
    assert_eq!(r["text"], FINAL);
    assert_eq!(r["model"], "mercury-coder");
    assert_eq!(r["device"], server.url.as_str());
    assert_eq!(
        (&r["tokens"], &r["prompt_tokens"]),
        (&json!([]), &json!([]))
    );
    // Three canvases; usage from the final chunk.
    assert_eq!((&r["steps"], &r["answer_tokens"]), (&json!(3), &json!(12)));
    assert!(r["elapsed_s"].as_f64().is_some_and(|s| s > 0.0), "{r}");
    assert_eq!(r["settings"], json!({"threshold": 0.9}));
    Ok(())
}

#[test]
fn http_errors_dropped_connections_and_malformed_chunks_are_one_line_errors() -> Result {
    let unauthorized = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
    let with_length = |status: &str, body: &str| {
        Reply {
        head: format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        parts: Vec::new(),
    }
    };
    let mut dropped = sse(&[canvas("d\u{7}f", 0.2), canvas("def add", 0.5)]);
    dropped.truncate(2);
    let mut malformed = sse(&[canvas("de", 0.2)]);
    malformed.push(Part::Bytes(
        b"data: {\"id\": \"x\", \"choices\": 7\n\n".to_vec(),
    ));
    let cases: Vec<(Reply, Vec<&str>)> = vec![
        (
            with_length("401 Unauthorized", unauthorized),
            vec!["HTTP 401", "Incorrect API key provided", "--api-key"],
        ),
        (
            with_length("500 Internal Server Error", "boom\n\u{1b}[31m"),
            vec!["HTTP 500", "boom"],
        ),
        (
            Reply {
                head: stream_head(),
                parts: dropped,
            },
            vec!["closed before the answer ended"],
        ),
        (
            Reply {
                head: stream_head(),
                parts: malformed,
            },
            vec!["malformed chunk"],
        ),
    ];
    for (reply, needles) in cases {
        let server = Server::start(vec![reply])?;
        let home = tempfile::tempdir()?;
        let out = dcoder(home.path())
            .args(["--endpoint", &server.url, "--model", "m", "hi"])
            .output()?;
        assert_one_line_error(&out, &needles);
    }
    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let home = tempfile::tempdir()?;
    let url = format!("http://127.0.0.1:{port}/v1");
    let out = dcoder(home.path())
        .args(["--endpoint", &url, "--model", "m", "hi"])
        .output()?;
    assert_one_line_error(&out, &[&url]);
    Ok(())
}

#[test]
fn bad_endpoint_flags_are_clear_errors() -> Result {
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path())
        .args(["--endpoint", "nowhere", "--model", "m", "hi"])
        .output()?;
    assert_one_line_error(&out, &["--endpoint nowhere", "inception"]);
    let out = dcoder(home.path())
        .args(["--endpoint", "http://127.0.0.1:9/v1", "hi"])
        .output()?;
    assert_one_line_error(&out, &["--model"]);
    let out = dcoder(home.path())
        .args(["--endpoint", "http://127.0.0.1:9/v1", "--model", "m"])
        .args(["--trace", "t.jsonl", "hi"])
        .output()?;
    assert_one_line_error(&out, &["--trace"]);
    Ok(())
}

#[test]
fn a_config_preset_names_the_url_model_and_key_variable() -> Result {
    let server = Server::start(vec![mercury()])?;
    let home = tempfile::tempdir()?;
    let config = home.path().join("my.toml");
    std::fs::write(
        &config,
        format!(
            "[endpoint.box]\nurl = \"{}\"\nmodel = \"mercury-coder-small\"\napi_key_env = \"BOX_KEY\"\n",
            server.url
        ),
    )?;
    let out = dcoder(home.path())
        .env("BOX_KEY", "s3cret")
        .arg("--config")
        .arg(&config)
        .args(["--endpoint", "box", "write add"])
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout)?, format!("{FINAL}\n"));
    let seen = server.seen();
    assert!(seen[0].head.contains("Bearer s3cret"), "{}", seen[0].head);
    assert_eq!(seen[0].body["model"], "mercury-coder-small");
    Ok(())
}

#[test]
fn the_inception_preset_reads_inception_api_key() -> Result {
    // The preset's URL is Inception's; a config preset of the same name points it here, and
    // the key variable still comes from the built-in preset.
    let server = Server::start(vec![mercury()])?;
    let home = tempfile::tempdir()?;
    std::fs::create_dir_all(home.path().join("dcoder"))?;
    std::fs::write(
        home.path().join("dcoder/config.toml"),
        format!(
            "default_endpoint = \"inception\"\n[endpoint.inception]\nurl = \"{}\"\n",
            server.url
        ),
    )?;
    let out = dcoder(home.path())
        .env("INCEPTION_API_KEY", "inc-key")
        .arg("write add")
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = server.seen();
    assert!(seen[0].head.contains("Bearer inc-key"), "{}", seen[0].head);
    assert_eq!(seen[0].body["model"], "mercury-coder");
    Ok(())
}

// ---- The live view, in a pseudo-terminal (tmux), as tests/tui.rs drives it. ----

/// How long the live view may take to show what a test waits for.
const LONG: Duration = Duration::from_secs(60);

#[test]
fn the_live_view_shows_the_intermediate_canvases_then_the_answer() -> Result {
    let (reply, open) = gated_mercury();
    let server = Server::start(vec![reply])?;
    let home = tempfile::tempdir()?;
    let t = Tmux::start(home.path())?;
    t.line(&format!(
        "{} --endpoint {} --model mercury-coder 'write add'; echo status:$?",
        env!("CARGO_BIN_EXE_dcoder"),
        server.url
    ))?;
    // The first canvas: its text, its noise drawn as masks, and the step count in the status.
    let first = t.wait_for("the first canvas", LONG, |s| s.contains("step 1/4"))?;
    assert!(first.contains('░'), "noise is drawn masked:\n{first}");
    assert!(first.contains("mercury-coder"), "{first}");
    assert!(first.contains("step 1/4 · "), "{first}");
    assert!(
        !first.contains("NFE"),
        "a remote canvas has no forward-pass count:\n{first}"
    );
    // ESC never reached the terminal: what followed it is plain text, not a screen clear or a
    // window title.
    assert!(
        first.contains("[2Jdd(") && first.contains("]0;x"),
        "{first}"
    );
    open.send(())?;
    let done = t.wait_for("the run to end", LONG, |s| exited(s).is_some())?;
    assert_eq!(exited(&done), Some(0), "{done}");
    assert!(done.contains("return a + b"), "the answer stays:\n{done}");
    assert!(!done.contains('░'), "the view is gone:\n{done}");
    Ok(())
}

#[test]
fn the_chat_sends_the_earlier_turns_and_esc_cancels() -> Result {
    let (held, open) = gated_mercury();
    let server = Server::start(vec![mercury(), held])?;
    let home = tempfile::tempdir()?;
    let t = Tmux::start(home.path())?;
    t.line(&format!(
        "{} chat --endpoint {} --model mercury-coder; echo status:$?",
        env!("CARGO_BIN_EXE_dcoder"),
        server.url
    ))?;
    t.wait_for("the chat", LONG, |s| s.contains("Ask for some code"))?;
    t.line("write add")?;
    t.wait_for("the first answer", LONG, |s| {
        s.contains("return a + b") && s.contains("steps")
    })?;
    t.line("now subtract")?;
    t.wait_for("the second answer's first canvas", LONG, |s| {
        s.contains("step 1/4")
    })?;
    t.keys(&["Escape"])?;
    t.wait_for("the cancel", LONG, |s| s.contains("cancelled"))?;
    drop(open);
    t.keys(&["C-c"])?;
    let done = t.wait_for("the chat to end", LONG, |s| exited(s).is_some())?;
    assert_eq!(exited(&done), Some(0), "{done}");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].body["messages"],
        json!([
            {"role": "user", "content": "write add"},
            {"role": "assistant", "content": FINAL},
            {"role": "user", "content": "now subtract"},
        ])
    );
    Ok(())
}

#[test]
fn models_lists_the_built_in_endpoints() -> Result {
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path()).arg("models").output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout)?;
    let line = text
        .lines()
        .find(|l| l.starts_with("inception "))
        .ok_or(format!("no inception line:\n{text}"))?;
    for needle in [
        "https://api.inceptionlabs.ai/v1",
        "mercury-coder *",
        "INCEPTION_API_KEY",
    ] {
        assert!(line.contains(needle), "{needle}: {line}");
    }
    Ok(())
}
