//! A job's events as OpenAI responses: the whole answer (`stream: false`) or Server-Sent Events
//! in OpenAI's chunk format, with Mercury's diffusing chunks when asked for.
//!
//! A plain stream sends text as it becomes final: the blocks before the one being denoised
//! (LLaDA's semi-autoregressive blocks, block diffusion), cut at a stop string; whatever remains
//! comes with the end, so the deltas always add up to the whole answer. A diffusing stream sends
//! every step's whole canvas (masks as the placeholder), then the answer, then the finish chunk.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::Event as Sse;
use serde_json::{json, Value};
use tokio::sync::mpsc::Receiver;

use crate::api::{
    canvas_text, ChatChoice, ChatChunk, ChatCompletion, ChatMessage, ChunkChoice, Content, Delta,
    DiffusionMeta, TextChoice, TextCompletion, Usage, WireFrame,
};
use crate::diffusion::Plan;
use crate::report::{rates, Settings};

use super::error::ApiError;
use super::worker::{Event, Finished};

/// Chat or text completion: the shapes differ, the events do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Text,
}

/// What every chunk of one response repeats.
#[derive(Debug, Clone)]
pub struct Meta {
    pub shape: Shape,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub prompt_tokens: usize,
    pub plan: Plan,
    /// What a masked position shows in a diffusing chunk.
    pub placeholder: String,
}

impl Meta {
    fn usage(&self, done: &Finished) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: done.completion_tokens,
            total_tokens: self.prompt_tokens + done.completion_tokens,
        }
    }

    /// dcoder's numbers beside OpenAI's: the settings the run resolved to and what it did.
    fn run(&self, done: &Finished) -> Value {
        let g = &done.generation;
        let (tokens_per_forward, tokens_per_s) = rates(g);
        json!({
            "settings": Settings::from(&self.plan),
            "steps": g.steps,
            "nfe": g.nfe,
            "tokens_per_forward": tokens_per_forward,
            "elapsed_s": g.elapsed.as_secs_f64(),
            "tokens_per_s": tokens_per_s,
            "stopped_early": g.stopped_early,
            "edits": g.edits,
        })
    }

    /// The whole answer, as JSON.
    pub fn whole(&self, done: &Finished) -> Value {
        let usage = self.usage(done);
        let reason = Some(done.finish_reason.to_string());
        let result = match self.shape {
            Shape::Chat => serde_json::to_value(ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: ChatMessage {
                        role: "assistant".into(),
                        content: Content::Text(done.text.clone()),
                    },
                    finish_reason: reason,
                }],
                usage,
                dcoder: Some(self.run(done)),
            }),
            Shape::Text => serde_json::to_value(TextCompletion {
                id: self.id.clone(),
                object: "text_completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![TextChoice {
                    index: 0,
                    text: done.text.clone(),
                    logprobs: None,
                    finish_reason: reason,
                }],
                usage,
                dcoder: Some(self.run(done)),
            }),
        };
        result.unwrap_or_else(|e| json!({ "error": e.to_string() }))
    }

    /// One chunk carrying `text` (a delta, or a whole canvas when `diffusion` is set).
    fn chunk(&self, text: Option<String>, role: bool) -> ChatChunk {
        let (delta, text) = match self.shape {
            Shape::Chat => (
                Some(Delta {
                    role: role.then(|| "assistant".to_string()),
                    content: text,
                }),
                None,
            ),
            Shape::Text => (None, text),
        };
        ChatChunk {
            id: self.id.clone(),
            object: match self.shape {
                Shape::Chat => "chat.completion.chunk",
                Shape::Text => "text_completion",
            }
            .into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                text,
                finish_reason: None,
            }],
            diffusion_meta: None,
            dcoder: None,
            usage: None,
            dcoder_run: None,
        }
    }
}

/// The SSE events of one response, pulled one at a time by the HTTP body; dropping it (the
/// client went away) drops the job's channel, which stops the job at its next step.
pub struct Chunks {
    meta: Meta,
    events: Receiver<Event>,
    diffusing: bool,
    /// Text sent so far (plain streams).
    sent: String,
    started: bool,
    ready: VecDeque<Sse>,
    ended: bool,
}

impl Chunks {
    pub fn new(meta: Meta, events: Receiver<Event>, diffusing: bool) -> Chunks {
        Chunks {
            meta,
            events,
            diffusing,
            sent: String::new(),
            started: false,
            ready: VecDeque::new(),
            ended: false,
        }
    }

    /// The next event to send, `None` after `[DONE]`.
    pub async fn next(&mut self) -> Option<Result<Sse, Infallible>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            match self.events.recv().await {
                Some(event) => self.handle(event),
                None => self.fail(ApiError::internal("the model thread stopped")),
            }
        }
    }

    fn push(&mut self, chunk: &ChatChunk) {
        match Sse::default().json_data(chunk) {
            Ok(event) => self.ready.push_back(event),
            Err(e) => self.fail(ApiError::internal(format!("encoding a chunk: {e}"))),
        }
    }

    fn handle(&mut self, event: Event) {
        let role = !self.started;
        self.started = true;
        match event {
            Event::Step { frame, committed } => {
                if self.diffusing {
                    let Some(frame) = frame else { return };
                    let mut chunk = self
                        .meta
                        .chunk(Some(canvas_text(&frame, &self.meta.placeholder)), role);
                    let progress = if frame.total > 0 {
                        (frame.step as f64 / frame.total as f64).min(1.0)
                    } else {
                        0.0
                    };
                    chunk.diffusion_meta = Some(DiffusionMeta {
                        diffusion_content: true,
                        diffusion_progress: progress,
                    });
                    chunk.dcoder = Some(WireFrame::from(&frame));
                    self.push(&chunk);
                } else if let Some(delta) = committed.strip_prefix(self.sent.as_str()) {
                    if !delta.is_empty() || role {
                        let chunk = self.meta.chunk(Some(delta.to_string()), role);
                        self.sent = committed.clone();
                        self.push(&chunk);
                    }
                }
            }
            Event::Done(done) => {
                let text = if self.diffusing {
                    Some(done.text.clone())
                } else {
                    // Always a prefix: `committed` was the same decoding cut the same way.
                    let rest = done.text.strip_prefix(self.sent.as_str()).unwrap_or("");
                    (!rest.is_empty() || role).then(|| rest.to_string())
                };
                if let Some(text) = text {
                    let mut chunk = self.meta.chunk(Some(text), role);
                    if self.diffusing {
                        chunk.diffusion_meta = Some(DiffusionMeta {
                            diffusion_content: true,
                            diffusion_progress: 1.0,
                        });
                    }
                    self.push(&chunk);
                }
                let mut last = self.meta.chunk(None, false);
                last.choices[0].finish_reason = Some(done.finish_reason.to_string());
                last.usage = Some(self.meta.usage(&done));
                last.dcoder_run = Some(self.meta.run(&done));
                self.push(&last);
                self.ready.push_back(Sse::default().data("[DONE]"));
                self.ended = true;
            }
            Event::Failed(message) => self.fail(ApiError::internal(message)),
        }
    }

    /// An error in the middle of a stream: OpenAI's error object as the last event.
    fn fail(&mut self, error: ApiError) {
        let event = Sse::default()
            .json_data(error.body())
            .unwrap_or_else(|_| Sse::default().data("{\"error\":{}}"));
        self.ready.push_back(event);
        self.ended = true;
    }
}
