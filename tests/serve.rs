//! `dcoder serve` through HTTP: the real binary on a free loopback port with the tiny fixture
//! models, spoken to over plain TCP so that a test can stop reading or hang up mid-stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::{dcoder, fixture, Result};

/// The flags every test serves and runs with: short canvases so the tests stay fast.
const FLAGS: [&str; 6] = ["--gen-length", "16", "--steps", "16", "--block-length", "8"];

/// A running `dcoder serve`, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    _home: tempfile::TempDir,
}

impl Server {
    fn start(model: &str, extra: &[&str]) -> Result<Server> {
        let home = tempfile::tempdir()?;
        let mut child = dcoder(home.path())
            .arg("serve")
            .arg("--model")
            .arg(fixture(model))
            .args(["--port", "0"])
            .args(FLAGS)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                return Err("dcoder serve exited before listening".into());
            };
            let line = line?;
            if let Some(at) = line.find("http://") {
                let rest = &line[at + 7..];
                break rest.split('/').next().ok_or("address")?.to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            addr,
            _home: home,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 response.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn json(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.body).map_err(|e| format!("{e}: body was {}", self.body))?)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of an event stream, `[DONE]` included.
    fn events(&self) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

/// Opens a connection and sends a request; the caller reads the answer.
fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    Ok(stream)
}

/// A whole request and response (chunked bodies are de-chunked).
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response> {
    let mut stream = send(addr, method, path, headers, body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = String::from_utf8(raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .ok_or("no status")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("chunk size")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or("short chunk")?);
        body = rest.get(size + 2..).ok_or("chunk end")?;
    }
}

fn post(addr: &str, path: &str, body: &Value) -> Result<Response> {
    request(addr, "POST", path, &[], &body.to_string())
}

fn chat_body(user: &str) -> Value {
    json!({ "model": "llada-tiny", "messages": [{ "role": "user", "content": user }] })
}

/// `dcoder --json` for the same model and flags (`args` may set the same flags again).
fn cli_json(model: &str, args: &[&str]) -> Result<Value> {
    let home = tempfile::tempdir()?;
    let flags = FLAGS
        .chunks(2)
        .filter(|pair| !args.contains(&pair[0]))
        .flatten();
    let out = dcoder(home.path())
        .arg("--model")
        .arg(fixture(model))
        .args(flags)
        .arg("--json")
        .args(args)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The content deltas of a chat stream, joined; checks the stream's framing on the way.
fn streamed_text(events: &[String]) -> Result<(String, Value)> {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e))
        .collect::<std::result::Result<_, _>>()?;
    let last = chunks.last().ok_or("no chunks")?.clone();
    assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    Ok((text, last))
}

#[test]
fn a_chat_completion_equals_the_cli_answer_streamed_or_not() -> Result {
    let server = Server::start("llada-tiny", &[])?;
    let cli = cli_json("llada-tiny", &["hello"])?;
    let whole = post(&server.addr, "/v1/chat/completions", &chat_body("hello"))?;
    assert_eq!(whole.status, 200, "{}", whole.body);
    let whole = whole.json()?;
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["content"], cli["text"]);
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    let prompt_tokens = cli["prompt_tokens"]
        .as_array()
        .ok_or("prompt_tokens")?
        .len();
    assert_eq!(whole["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(whole["usage"]["completion_tokens"], cli["answer_tokens"]);
    // The resolved settings are echoed, and are the CLI's.
    assert_eq!(whole["dcoder"]["settings"], cli["settings"]);

    let mut body = chat_body("hello");
    body["stream"] = json!(true);
    let streamed = post(&server.addr, "/v1/chat/completions", &body)?;
    assert_eq!(streamed.status, 200);
    assert!(streamed
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/event-stream")));
    let (text, last) = streamed_text(&streamed.events())?;
    assert_eq!(text, cli["text"].as_str().ok_or("text")?);
    assert_eq!(last["usage"]["completion_tokens"], cli["answer_tokens"]);
    Ok(())
}

#[test]
fn a_plain_stream_sends_each_block_when_it_is_final() -> Result {
    // 32 positions in blocks of 8, no stop token among them (checked below): the first blocks'
    // text arrives before the end.
    let server = Server::start("llada-tiny", &["--suppress-eos"])?;
    let mut body = chat_body("hello");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(32);
    body["steps"] = json!(32);
    let cli = cli_json(
        "llada-tiny",
        &[
            "--suppress-eos",
            "--gen-length",
            "32",
            "--steps",
            "32",
            "hello",
        ],
    )?;
    assert_eq!(
        cli["answer_tokens"], 32,
        "the case needs an answer over every block"
    );
    let events = post(&server.addr, "/v1/chat/completions", &body)?.events();
    let (text, _) = streamed_text(&events)?;
    assert_eq!(text, cli["text"].as_str().ok_or("text")?);
    let deltas = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    // One delta as each of the first three blocks is final, the last block's with the end.
    assert_eq!(deltas, 4, "{events:?}");
    Ok(())
}

#[test]
fn diffusing_chunks_carry_every_canvas_in_mercurys_format() -> Result {
    let server = Server::start("llada-tiny", &[])?;
    let mut body = chat_body("hello");
    body["stream"] = json!(true);
    body["diffusing"] = json!(true);
    let cli = cli_json("llada-tiny", &["hello"])?;
    let events = post(&server.addr, "/v1/chat/completions", &body)?.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e))
        .collect::<std::result::Result<_, _>>()?;
    let frames: Vec<&Value> = chunks.iter().filter(|c| c["dcoder"].is_object()).collect();
    // One chunk per denoising step (16 steps, one token each).
    assert_eq!(frames.len(), cli["steps"].as_u64().ok_or("steps")? as usize);
    let mut progress = 0.0;
    for (i, c) in frames.iter().enumerate() {
        assert_eq!(c["diffusion_meta"]["diffusion_content"], true);
        let p = c["diffusion_meta"]["diffusion_progress"]
            .as_f64()
            .ok_or("progress")?;
        assert!(
            (progress..=1.0).contains(&p),
            "progress went from {progress} to {p}"
        );
        progress = p;
        let frame = &c["dcoder"];
        assert_eq!(frame["step"], i + 1);
        assert_eq!(frame["cells"].as_array().ok_or("cells")?.len(), 16);
        let revealed = frame["cells"]
            .as_array()
            .ok_or("cells")?
            .iter()
            .filter(|cell| !cell["revealed_at"].is_null())
            .count();
        assert_eq!(revealed, i + 1, "one token per step");
    }
    // Masks show as the placeholder early on; the last content chunk is the answer.
    let first = frames[0]["choices"][0]["delta"]["content"]
        .as_str()
        .ok_or("content")?;
    assert!(first.contains('\u{2591}') || first.is_empty(), "{first}");
    let contents: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(contents.last().copied(), cli["text"].as_str());
    let last = chunks.last().ok_or("chunks")?;
    assert!(last["choices"][0]["finish_reason"].is_string());
    Ok(())
}

#[test]
fn completions_and_fim_equal_the_cli_with_and_without_a_suffix() -> Result {
    let server = Server::start("llada-tiny", &[])?;
    let plain = post(
        &server.addr,
        "/v1/completions",
        &json!({ "prompt": "def add(a, b):" }),
    )?;
    assert_eq!(plain.status, 200, "{}", plain.body);
    let plain = plain.json()?;
    assert_eq!(plain["object"], "text_completion");
    let cli = cli_json("llada-tiny", &["--no-chat-template", "def add(a, b):"])?;
    assert_eq!(plain["choices"][0]["text"], cli["text"]);

    let fim = post(
        &server.addr,
        "/v1/fim/completions",
        &json!({ "prompt": "def add(a, b):", "suffix": "\n    return c\n" }),
    )?;
    assert_eq!(fim.status, 200, "{}", fim.body);
    let fim = fim.json()?;
    let cli_fim = cli_json(
        "llada-tiny",
        &["--suffix", "\n    return c\n", "def add(a, b):"],
    )?;
    assert_eq!(fim["choices"][0]["text"], cli_fim["text"]);
    // The suffix is seen: the same prompt without it gives other tokens.
    assert_ne!(
        cli_fim["tokens"], cli["tokens"],
        "the suffix changed nothing"
    );
    let missing = post(
        &server.addr,
        "/v1/fim/completions",
        &json!({ "prompt": "x" }),
    )?;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()?["error"]["param"], "suffix");
    Ok(())
}

#[test]
fn a_block_diffusion_model_refuses_to_infill() -> Result {
    let server = Server::start("bd3lm-tiny", &[])?;
    let r = post(
        &server.addr,
        "/v1/fim/completions",
        &json!({ "prompt": "a", "suffix": "b" }),
    )?;
    assert_eq!(r.status, 400, "{}", r.body);
    let message = r.json()?["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("cannot infill"), "{message}");
    Ok(())
}

/// Checks an OpenAI-shaped error with this status.
fn assert_error(r: &Response, status: u16, needle: &str) -> Result {
    assert_eq!(r.status, status, "{}", r.body);
    let body = r.json()?;
    let message = body["error"]["message"].as_str().ok_or("error.message")?;
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(
        message.contains(needle),
        "'{message}' should mention '{needle}'"
    );
    Ok(())
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() -> Result {
    let server = Server::start("llada-tiny", &[])?;
    let a = &server.addr;
    let chat = "/v1/chat/completions";
    assert_error(
        &request(a, "POST", chat, &[], "{not json")?,
        400,
        "not valid JSON",
    )?;
    assert_error(
        &post(a, chat, &json!({ "messages": "hello" }))?,
        400,
        "invalid type",
    )?;
    assert_error(&post(a, chat, &json!({}))?, 400, "messages")?;
    let mut n = chat_body("hi");
    n["n"] = json!(2);
    assert_error(&post(a, chat, &n)?, 400, "one choice")?;
    let mut steps = chat_body("hi");
    steps["steps"] = json!("eight");
    let r = post(a, chat, &steps)?;
    assert_error(&r, 400, "steps")?;
    assert_eq!(r.json()?["error"]["param"], "steps");
    let mut blocks = chat_body("hi");
    blocks["max_tokens"] = json!(12);
    assert_error(&post(a, chat, &blocks)?, 400, "max_tokens")?;
    let mut other = chat_body("hi");
    other["model"] = json!("gpt-4");
    assert_error(&post(a, chat, &other)?, 404, "not served here")?;
    assert_error(
        &request(a, "GET", "/v1/nothing", &[], "")?,
        404,
        "no such endpoint",
    )?;
    let long = "word ".repeat(5000);
    assert_error(&post(a, chat, &chat_body(&long))?, 413, "more than")?;
    let mut role = chat_body("hi");
    role["messages"][0]["role"] = json!("tool");
    assert_error(&post(a, chat, &role)?, 400, "role")?;

    // Fields dcoder does not use are accepted and ignored.
    let mut ok = chat_body("hello");
    ok["user"] = json!("someone");
    ok["stream_options"] = json!({ "include_usage": true });
    ok["presence_penalty"] = json!(0.5);
    ok["logit_bias"] = json!({});
    let r = post(a, chat, &ok)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()?["choices"][0]["finish_reason"].is_string());
    let models = request(a, "GET", "/v1/models", &[], "")?.json()?;
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(request(a, "GET", "/health", &[], "")?.status, 200);
    Ok(())
}

#[test]
fn an_api_key_is_required_when_set() -> Result {
    let server = Server::start("llada-tiny", &["--api-key", "sekrit"])?;
    let a = &server.addr;
    let body = chat_body("hello").to_string();
    let chat = "/v1/chat/completions";
    assert_error(&request(a, "POST", chat, &[], &body)?, 401, "API key")?;
    let wrong = [("Authorization", "Bearer nope")];
    assert_error(&request(a, "POST", chat, &wrong, &body)?, 401, "API key")?;
    assert_error(&request(a, "GET", "/v1/models", &[], "")?, 401, "API key")?;
    let right = [("Authorization", "Bearer sekrit")];
    assert_eq!(request(a, "POST", chat, &right, &body)?.status, 200);
    // Health checks need no key.
    assert_eq!(request(a, "GET", "/health", &[], "")?.status, 200);
    Ok(())
}

#[test]
fn four_concurrent_clients_all_get_their_own_answers() -> Result {
    let server = Server::start("llada-tiny", &[])?;
    let prompts = ["hello", "write a sort", "fizzbuzz", "a quine"];
    let expected: Vec<Value> = prompts
        .iter()
        .map(|p| cli_json("llada-tiny", &["--seed", "3", p]))
        .collect::<Result<_>>()?;
    let answers: Vec<std::thread::JoinHandle<std::result::Result<(u16, String), String>>> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let addr = server.addr.clone();
            let mut body = chat_body(p);
            body["seed"] = json!(3);
            // Half of them stream.
            body["stream"] = json!(i % 2 == 1);
            std::thread::spawn(move || -> std::result::Result<(u16, String), String> {
                let r = post(&addr, "/v1/chat/completions", &body).map_err(|e| e.to_string())?;
                let text = if i % 2 == 1 {
                    streamed_text(&r.events()).map_err(|e| e.to_string())?.0
                } else {
                    let v = r.json().map_err(|e| e.to_string())?;
                    v["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                };
                Ok((r.status, text))
            })
        })
        .collect();
    for (handle, want) in answers.into_iter().zip(&expected) {
        let (status, text) = handle.join().map_err(|_| "client thread panicked")??;
        assert_eq!(status, 200);
        assert_eq!(text, want["text"].as_str().ok_or("text")?);
    }
    Ok(())
}

/// A diffusing stream over a long canvas, of which only the first chunk is read: the job runs
/// (or waits on its client) until the connection closes.
fn hold_a_long_job(addr: &str) -> Result<BufReader<TcpStream>> {
    let body = json!({
        "messages": [{ "role": "user", "content": "hold" }],
        "stream": true, "diffusing": true,
        "max_tokens": 512, "steps": 512, "block_length": 512, "suppress_eos": true,
    });
    let stream = send(addr, "POST", "/v1/chat/completions", &[], &body.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err("the stream ended before its first chunk".into());
        }
    }
    Ok(reader)
}

#[test]
fn a_full_queue_answers_503_and_a_client_that_hangs_up_frees_the_model() -> Result {
    let server = Server::start("llada-tiny", &["--queue", "1"])?;
    let running = hold_a_long_job(&server.addr)?;
    // Two more: one waits in the queue, the other finds it full.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                post(&addr, "/v1/chat/completions", &chat_body("hello"))
                    .map(|r| {
                        (
                            r.status,
                            r.header("retry-after").map(str::to_string),
                            r.body,
                        )
                    })
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let start = Instant::now();
    while !waiting.iter().any(|h| h.is_finished()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no request was refused"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Hanging up on the long job lets the queued request run.
    drop(running);
    let mut statuses = Vec::new();
    for handle in waiting {
        let (status, retry, body) = handle.join().map_err(|_| "client thread panicked")??;
        if status == 503 {
            assert!(retry.is_some(), "503 without Retry-After");
            let v: Value = serde_json::from_str(&body)?;
            assert!(v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("queue")));
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 503]);
    // And the model serves the next one too.
    assert_eq!(
        post(&server.addr, "/v1/chat/completions", &chat_body("hello"))?.status,
        200
    );
    Ok(())
}

/// The venv where .ci/run installs the `openai` package: `DCODER_SERVE_VENV`, else
/// `target/venv-serve`.
fn openai_python() -> Option<PathBuf> {
    let venv = std::env::var_os("DCODER_SERVE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv-serve"));
    Some(venv.join("bin/python")).filter(|p| p.is_file())
}

#[test]
fn the_official_openai_client_talks_to_dcoder_serve() -> Result {
    let Some(python) = openai_python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: target/venv-serve/bin/python is missing; .ci/run installs openai there"
        );
        eprintln!("skipped: no openai client (python3 -m venv target/venv-serve && target/venv-serve/bin/pip install openai)");
        return Ok(());
    };
    let server = Server::start("llada-tiny", &["--api-key", "k"])?;
    let cli = cli_json("llada-tiny", &["hello"])?;
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py"))
        .arg(format!("http://{}/v1", server.addr))
        .env("OPENAI_API_KEY", "k")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(report["whole"], cli["text"]);
    assert_eq!(report["streamed"], cli["text"]);
    assert_eq!(
        report["models"],
        json!([fixture("llada-tiny").display().to_string()])
    );
    assert_eq!(report["wrong_key"], 401);
    Ok(())
}

#[test]
fn dcoder_itself_is_a_client_of_dcoder_serve() -> Result {
    let server = Server::start("llada-tiny", &[])?;
    let local = cli_json("llada-tiny", &["hello"])?;
    let home = tempfile::tempdir()?;
    let out = dcoder(home.path())
        .args(["--endpoint", &format!("http://{}/v1", server.addr)])
        .args(["--model", "llada-tiny", "--json", "hello"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let remote: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(remote["text"], local["text"]);
    // The server's frames carry its step count.
    assert_eq!(remote["steps"], local["steps"]);
    Ok(())
}
