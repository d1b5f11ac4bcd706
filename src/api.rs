//! The OpenAI-compatible wire format that `dcoder serve` speaks and `--endpoint` reads: chat and
//! text completions, their streamed chunks, errors, and two extensions.
//!
//! - Inception's Mercury streams intermediate denoising states when a request says
//!   `"diffusing": true`: each chunk's `choices[0].delta.content` is the *whole* current canvas
//!   (it replaces the previous one), beside a top-level
//!   `"diffusion_meta": {"diffusion_content": true, "diffusion_progress": 0..1}`
//!   (platform.inceptionlabs.ai docs, "Diffusion streaming"). dcoder sends the same.
//! - dcoder adds a top-level `dcoder` object to each diffusing chunk: the step's [`WireFrame`]
//!   (every position's text, reveal step, confidence, edits; the block being denoised), which
//!   Mercury's clients ignore and dcoder's live view draws exactly as for a local model.
//!
//! Requests keep unknown fields (`user`, `stream_options`, `presence_penalty`, ...) in `extra`:
//! dcoder's sampler settings are read from there and the rest is ignored, as OpenAI-compatible
//! servers do.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canvas::{Cell, Frame};

/// A chat message; `content` is a string or OpenAI's list of `{"type": "text", "text": ...}`
/// parts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Content,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl Default for Content {
    fn default() -> Self {
        Content::Text(String::new())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    /// The text of every text part, joined.
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect(),
        }
    }
}

/// `stop`: one string or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn list(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }
}

/// What chat, text and FIM completion requests share.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Common {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The canvas length (`--gen-length`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// The newer name of `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Mercury's switch for streaming every denoising step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub diffusing: bool,
    /// Every other field: dcoder's sampler settings (`temperature`, `top_p`, `steps`,
    /// `block_length`, `threshold`, `cache`, ...) and fields dcoder ignores.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub common: Common,
}

/// `/v1/completions` and `/v1/fim/completions` (which adds `suffix`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(flatten)]
    pub common: Common,
}

/// A completion prompt: OpenAI allows a string or a list holding one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// A whole chat answer (`stream: false`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    /// The resolved sampler settings and the run's numbers (dcoder's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcoder: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ChatMessage,
    pub finish_reason: Option<String>,
}

/// A whole text completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<TextChoice>,
    pub usage: Usage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcoder: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextChoice {
    pub index: u32,
    pub text: String,
    #[serde(default)]
    pub logprobs: Option<Value>,
    pub finish_reason: Option<String>,
}

/// One streamed chat chunk (`chat.completion.chunk`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diffusion_meta: Option<DiffusionMeta>,
    /// The step in full (diffusing chunks from dcoder only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcoder: Option<WireFrame>,
    /// On the last chunk: the same as a whole answer's `usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// On the last chunk: what a whole answer's `dcoder` holds (settings and numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcoder_run: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    /// Chat chunks only (OpenAI's clients expect one on every chat chunk, empty or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    /// Text completions stream `text` instead of a delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Mercury's marker of a diffusing chunk.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct DiffusionMeta {
    /// The content is a whole canvas that replaces the previous one.
    pub diffusion_content: bool,
    /// From 0 (all masked) to 1 (final).
    pub diffusion_progress: f64,
}

/// One denoising step as dcoder streams it: a [`Frame`] in JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireFrame {
    pub step: usize,
    pub total: usize,
    pub block: usize,
    pub blocks: usize,
    /// The block being denoised, canvas positions `[start, end)`.
    pub block_span: [usize; 2],
    pub nfe: usize,
    pub elapsed_s: f64,
    #[serde(default)]
    pub edits: usize,
    pub cells: Vec<Cell>,
}

impl From<&Frame> for WireFrame {
    fn from(f: &Frame) -> Self {
        WireFrame {
            step: f.step,
            total: f.total,
            block: f.block,
            blocks: f.blocks,
            block_span: [f.block_span.start, f.block_span.end],
            nfe: f.nfe,
            elapsed_s: f.elapsed.as_secs_f64(),
            edits: f.edits,
            cells: f.cells.clone(),
        }
    }
}

impl WireFrame {
    /// The frame back, for the live view; `None` when the numbers do not make a frame.
    pub fn into_frame(self) -> Option<Frame> {
        let [start, end] = self.block_span;
        let sane = start <= end && end <= self.cells.len() && self.elapsed_s.is_finite();
        sane.then(|| Frame {
            step: self.step,
            total: self.total,
            block: self.block,
            blocks: self.blocks,
            block_span: start..end,
            nfe: self.nfe,
            elapsed: Duration::from_secs_f64(self.elapsed_s.max(0.0)),
            cells: self.cells,
            edits: self.edits,
        })
    }
}

/// The text a diffusing chunk carries: the answer so far, each masked position shown as
/// `placeholder`, up to the first revealed stop token.
pub fn canvas_text(frame: &Frame, placeholder: &str) -> String {
    frame
        .cells
        .iter()
        .take_while(|c| !c.stop)
        .map(|c| {
            if c.is_masked() {
                placeholder
            } else {
                c.text.as_str()
            }
        })
        .collect()
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelEntry {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_kept_for_the_sampler_and_content_parts_join() {
        let body = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
            "max_tokens":16,"stream":true,"user":"me","steps":8,"stream_options":{"include_usage":true}}"#;
        let req: ChatRequest = serde_json::from_str(body).expect("parses");
        assert_eq!(req.messages[0].content.text(), "ab");
        assert_eq!(req.common.max_tokens, Some(16));
        assert!(req.common.stream);
        assert_eq!(req.common.extra.get("steps"), Some(&Value::from(8)));
        assert!(req.common.extra.contains_key("user"));
    }

    #[test]
    fn a_wire_frame_round_trips_and_rejects_a_bad_block_span() {
        let mut frame = Frame::blank(4, 0..2, 2, 4);
        frame.cells[0].text = "fn".into();
        frame.cells[0].revealed_at = Some(1);
        frame.cells[2].stop = true;
        frame.cells[2].revealed_at = Some(1);
        let wire = WireFrame::from(&frame);
        let json = serde_json::to_string(&wire).expect("serialises");
        let back: WireFrame = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.clone().into_frame(), Some(frame.clone()));
        assert_eq!(canvas_text(&frame, "_"), "fn_");
        let bad = WireFrame {
            block_span: [3, 9],
            ..back
        };
        assert_eq!(bad.into_frame(), None);
    }
}
