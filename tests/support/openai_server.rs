//! A test server on a free loopback port that speaks OpenAI's streamed chat completions: a
//! `TcpListener` in a thread writing canned HTTP responses, one per connection, recording each
//! request. Replies: Mercury's documented diffusing stream (whole-canvas chunks with
//! `diffusion_meta`, noise and control characters in the early canvases, a final chunk,
//! `[DONE]`), plain OpenAI deltas, or anything a test writes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// What the server writes for one connection.
pub enum Part {
    Bytes(Vec<u8>),
    /// Waits until the test sends on the gate's channel (or drops it).
    Gate(Receiver<()>),
}

pub struct Reply {
    pub head: String,
    pub parts: Vec<Part>,
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: Value,
}

pub struct Server {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Answers one connection per reply, in order, then stops listening.
    pub fn start(replies: Vec<Reply>) -> Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/v1", listener.local_addr()?);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for reply in replies {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                if let Ok(request) = read_request(&stream) {
                    if let Ok(mut log) = log.lock() {
                        log.push(request);
                    }
                }
                let _ = write_reply(stream, reply);
            }
        });
        Ok(Server { url, seen })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn read_request(stream: &TcpStream) -> Result<Seen> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Seen {
        head,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

fn write_reply(mut stream: TcpStream, reply: Reply) -> Result {
    stream.write_all(reply.head.as_bytes())?;
    stream.flush()?;
    for part in reply.parts {
        match part {
            Part::Bytes(b) => {
                stream.write_all(&b)?;
                stream.flush()?;
            }
            Part::Gate(gate) => {
                let _ = gate.recv();
            }
        }
    }
    // Dropping the stream closes the connection: the end of a close-delimited body.
    Ok(())
}

/// A 200 event stream whose body ends when the connection closes.
pub fn stream_head() -> String {
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n".into()
}

pub fn sse(reply_parts: &[Value]) -> Vec<Part> {
    reply_parts
        .iter()
        .map(|v| Part::Bytes(format!("data: {v}\n\n").into_bytes()))
        .collect()
}

pub fn done() -> Part {
    Part::Bytes(b"data: [DONE]\n\n".to_vec())
}

pub fn chunk(content: Option<&str>, finish: Option<&str>) -> Value {
    let delta = match content {
        Some(c) => json!({"role": "assistant", "content": c}),
        None => json!({}),
    };
    json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
        "model": "mercury-coder",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
}

/// Mercury's diffusing chunk: the whole canvas, and its progress.
pub fn canvas(content: &str, progress: f64) -> Value {
    let mut c = chunk(Some(content), None);
    c["diffusion_meta"] = json!({"diffusion_content": true, "diffusion_progress": progress});
    c
}

pub const FINAL: &str = "def add(a, b):\n    return a + b";

/// Mercury's documented stream: noisy canvases (control characters included) that converge,
/// then a final chunk with an empty delta and a finish reason (and usage), then `[DONE]`.
pub fn mercury_parts() -> Vec<Part> {
    let mut last = chunk(None, Some("stop"));
    last["usage"] = json!({"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21});
    let mut parts = sse(&[
        canvas(
            "d\u{7}f \u{1b}[2Jdd(\u{0}, \u{fffd}):\n  \u{8}  re\u{1b}]0;x\u{7}n a",
            0.25,
        ),
        canvas("def add(a, b):\n    ret\u{c}rn a \u{1f} b", 0.6),
        canvas(FINAL, 1.0),
        last,
    ]);
    parts.push(done());
    parts
}

pub fn mercury() -> Reply {
    Reply {
        head: stream_head(),
        parts: mercury_parts(),
    }
}

/// Mercury's stream, held after its first (noisy) canvas until the gate opens.
pub fn gated_mercury() -> (Reply, Sender<()>) {
    let (open, gate) = channel();
    let mut parts = mercury_parts();
    parts.insert(1, Part::Gate(gate));
    (
        Reply {
            head: stream_head(),
            parts,
        },
        open,
    )
}
