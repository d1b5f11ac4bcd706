//! A model behind an OpenAI-compatible endpoint (`--endpoint URL`): `dcoder serve`, Inception's
//! Mercury, or any chat-completions server. [`Remote::spawn`] answers the live view's
//! [`Request`]s with the same [`EngineEvent`]s the local engine sends, so the one-shot view and
//! the chat draw a remote model exactly as a local one.
//!
//! Multi-turn: the remote side keeps no state, so the conversation is the message list sent
//! with every request (system, then user and assistant turns).

mod client;
mod sse;
mod stream_canvas;

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use serde_json::{Map, Value};

use crate::api::{ChatMessage, Content};
use crate::engine::{EngineEvent, Request};

pub use client::Reply;

/// Where the model is and what every request carries.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The API base, e.g. `https://api.inceptionlabs.ai/v1`; requests go to
    /// `{base}/chat/completions`.
    pub base: String,
    pub api_key: Option<String>,
    /// The remote model id.
    pub model: String,
    pub system: Option<String>,
    /// Sampler fields sent with every request: only what the user set (`max_tokens`, `steps`,
    /// `temperature`, ...), so the server's own defaults apply otherwise.
    pub fields: Map<String, Value>,
}

fn message(role: &str, text: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: Content::Text(text.into()),
    }
}

impl Remote {
    /// The messages of a first turn asking `user`.
    pub fn first_turn(&self, user: &str) -> Vec<ChatMessage> {
        let mut messages: Vec<ChatMessage> =
            self.system.iter().map(|s| message("system", s)).collect();
        messages.push(message("user", user));
        messages
    }

    /// Runs requests until the request channel closes or `emit` reports the listener gone.
    pub fn spawn(
        self,
        requests: Receiver<Request>,
        emit: impl Fn(EngineEvent) -> bool + Send + 'static,
    ) -> JoinHandle<()> {
        std::thread::spawn(move || {
            // The turns answered so far, and the last user message (for regenerating it).
            let mut history: Vec<ChatMessage> = self.first_turn("");
            history.pop();
            let mut last: Option<(Vec<ChatMessage>, String)> = None;
            for request in requests {
                let (user, seed, cancel) = match request {
                    Request::Ask { user, seed, cancel } => {
                        last = Some((history.clone(), user.clone()));
                        (user, seed, cancel)
                    }
                    Request::Regenerate { seed, cancel } => match &last {
                        Some((before, user)) => {
                            history = before.clone();
                            (user.clone(), seed, cancel)
                        }
                        None => {
                            emit(EngineEvent::Failed("nothing to regenerate yet".into()));
                            continue;
                        }
                    },
                };
                let mut messages = history.clone();
                messages.push(message("user", &user));
                let event = match self.ask(&messages, seed, &cancel, &emit) {
                    Ok(reply) => {
                        if !reply.cancelled {
                            messages.push(message("assistant", &reply.answer));
                            history = messages;
                        }
                        reply.event()
                    }
                    Err(e) => EngineEvent::Failed(format!("{e:#}")),
                };
                if !emit(event) {
                    break;
                }
            }
        })
    }

    /// One streamed answer to `messages`: `Started` and every canvas go to `emit`; stops early
    /// (dropping the connection) when `cancel` is set or `emit` returns false.
    pub fn ask(
        &self,
        messages: &[ChatMessage],
        seed: u64,
        cancel: &AtomicBool,
        emit: &impl Fn(EngineEvent) -> bool,
    ) -> anyhow::Result<Reply> {
        client::stream(self, messages, seed, cancel, emit)
    }
}
