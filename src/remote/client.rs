//! One streamed chat completion over HTTP (`ureq`, blocking): the request, the status, the
//! event stream read on a thread of its own so that cancelling answers at once (the connection
//! is dropped with the reader), and every chunk turned into a frame.

use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::sse::Events;
use super::stream_canvas::StreamCanvas;
use super::Remote;
use crate::api::{ChatChunk, ChatMessage, ChatRequest, Common, ErrorBody, Usage};
use crate::canvas::Frame;
use crate::engine::{EngineEvent, Stats};

/// How long the endpoint may stay silent, connecting or in the middle of an answer.
const CONNECT: Duration = Duration::from_secs(30);
const SILENCE: Duration = Duration::from_secs(300);
/// How often a waiting answer looks at its cancel flag.
const POLL: Duration = Duration::from_millis(50);
/// Most of an error body shown or parsed.
const ERROR_BODY: u64 = 1 << 20;

/// A finished (or cancelled) answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub answer: String,
    pub stats: Stats,
    pub cancelled: bool,
    /// The last chunk's `usage`, when the server sent one.
    pub usage: Option<Usage>,
    /// The model id the server answered with.
    pub model: Option<String>,
}

impl Reply {
    pub fn event(self) -> EngineEvent {
        EngineEvent::Finished {
            answer: self.answer,
            stats: self.stats,
            cancelled: self.cancelled,
        }
    }
}

/// What the reading thread hands over.
enum Message {
    Chunk(Box<ChatChunk>),
    Done,
    Failed(anyhow::Error),
}

/// `{base}/chat/completions`; a URL without a path gets OpenAI's `/v1`.
pub fn chat_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let after_scheme = base.split_once("://").map_or(base, |(_, rest)| rest);
    match after_scheme.contains('/') {
        true => format!("{base}/chat/completions"),
        false => format!("{base}/v1/chat/completions"),
    }
}

pub fn stream(
    remote: &Remote,
    messages: &[ChatMessage],
    seed: u64,
    cancel: &AtomicBool,
    emit: &impl Fn(EngineEvent) -> bool,
) -> Result<Reply> {
    let url = chat_url(&remote.base);
    let mut fields = remote.fields.clone();
    // Seed 0 is the flag's default: sent only when chosen (or a chat regenerates).
    if seed != 0 {
        fields.insert("seed".into(), seed.into());
    }
    let request = ChatRequest {
        messages: messages.to_vec(),
        common: Common {
            model: Some(remote.model.clone()),
            stream: true,
            diffusing: true,
            extra: fields,
            ..Common::default()
        },
    };
    let body = serde_json::to_vec(&request)?;
    let started = Instant::now();
    emit(EngineEvent::Started(Frame::blank(0, 0..0, 1, 0)));
    let (tx, rx) = channel();
    let key = remote.api_key.clone();
    let thread_url = url.clone();
    std::thread::spawn(move || {
        let send = |m: Message| tx.send(m).is_ok();
        if let Err(e) = read(&thread_url, key.as_deref(), &body, &send) {
            send(Message::Failed(e));
        }
    });
    let mut canvas = StreamCanvas::new(started);
    let mut usage = None;
    let mut model = None;
    let mut finish_reason = None;
    let cancelled = loop {
        if cancel.load(Ordering::Relaxed) {
            break true;
        }
        let message = match rx.recv_timeout(POLL) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                bail!("{url}: the reading thread stopped")
            }
        };
        match message {
            Message::Chunk(chunk) => {
                let chunk = *chunk;
                usage = chunk.usage.or(usage);
                model.get_or_insert_with(|| chunk.model.clone());
                if let Some(reason) = chunk.choices.first().and_then(|c| c.finish_reason.clone()) {
                    finish_reason = Some(reason);
                }
                if let Some(frame) = canvas.apply(chunk) {
                    if !emit(EngineEvent::Frame(frame)) {
                        break true;
                    }
                }
            }
            Message::Done => break false,
            Message::Failed(e) if finish_reason.is_some() && is_eof(&e) => break false,
            Message::Failed(e) => return Err(e),
        }
    };
    let elapsed = canvas.elapsed();
    let tokens_per_s = match usage {
        Some(u) if elapsed > Duration::ZERO => u.completion_tokens as f64 / elapsed.as_secs_f64(),
        _ => 0.0,
    };
    Ok(Reply {
        answer: canvas.answer(),
        stats: Stats {
            steps: canvas.steps(),
            nfe: canvas.nfe(),
            nfe_saved: 0,
            elapsed,
            tokens_per_s,
            stopped_early: false,
        },
        cancelled,
        usage,
        model,
    })
}

/// The stream ended without `[DONE]`.
#[derive(Debug)]
struct Ended;

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection closed before the answer ended (no [DONE])")
    }
}

impl std::error::Error for Ended {}

fn is_eof(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Ended>().is_some()
}

/// Sends the request and hands every chunk to `send` until `[DONE]`, an error, or `send`
/// returns false (the answer was cancelled: returning drops the connection).
fn read(url: &str, key: Option<&str>, body: &[u8], send: &impl Fn(Message) -> bool) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT))
        .timeout_per_read(Some(SILENCE))
        .build()
        .into();
    let mut request = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "text/event-stream");
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let response = request
        .send(body)
        .map_err(|e| anyhow!("{url}: the request failed: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response
            .into_body()
            .into_with_config()
            .limit(ERROR_BODY)
            .read_to_string()
            .unwrap_or_default();
        let hint = match status.as_u16() {
            401 | 403 => " (give the key with --api-key or DCODER_API_KEY)",
            _ => "",
        };
        bail!(
            "{url}: HTTP {}: {}{hint}",
            status.as_u16(),
            error_message(&text)
        );
    }
    let reader = BufReader::new(response.into_body().into_reader());
    for event in Events::new(reader) {
        let event = event.with_context(|| format!("{url}: the stream broke off"))?;
        let data = event.data.trim();
        if data == "[DONE]" {
            send(Message::Done);
            return Ok(());
        }
        if let Ok(error) = serde_json::from_str::<ErrorBody>(data) {
            bail!(
                "{url}: the server reported: {}",
                one_line(&error.error.message)
            );
        }
        let chunk: ChatChunk = serde_json::from_str(data)
            .map_err(|e| anyhow!("{url}: a malformed chunk ({e}): {}", snippet(data)))?;
        if !send(Message::Chunk(Box::new(chunk))) {
            return Ok(());
        }
    }
    Err(anyhow::Error::new(Ended).context(url.to_string()))
}

/// OpenAI's error message from an error body, else the body's start.
fn error_message(body: &str) -> String {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => one_line(&e.error.message),
        Err(_) if body.trim().is_empty() => "no error message".into(),
        Err(_) => snippet(body),
    }
}

/// Text from the server made safe for one terminal line: controls and newlines as spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

fn snippet(text: &str) -> String {
    let line = one_line(text);
    match line.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chat_url_follows_the_base() {
        assert_eq!(
            chat_url("https://api.inceptionlabs.ai/v1/"),
            "https://api.inceptionlabs.ai/v1/chat/completions"
        );
        assert_eq!(
            chat_url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
    }

    #[test]
    fn error_bodies_give_one_safe_line() {
        let body = r#"{"error":{"message":"Invalid\nAPI key \u001b[31m","type":"auth","param":null,"code":null}}"#;
        assert_eq!(error_message(body), "Invalid API key  [31m");
        assert_eq!(error_message("<html>\n502\n</html>"), "<html> 502 </html>");
        assert_eq!(error_message(""), "no error message");
    }
}
