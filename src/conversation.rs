//! A conversation: turns of user prompts and model answers, and the prompt ids of the next turn.
//!
//! The multi-turn rule is the model family's (models.toml `chat`):
//! - `carry-tokens` (ML-GSAI/LLaDA `chat.py`): the template is rendered for the new
//!   user message alone; from the second turn its leading BOS is dropped and it is appended to
//!   the previous prompt + answer tokens, from which every EOS has been removed;
//! - `rerender` (Dream demos): the whole message list is rendered again each turn, the
//!   previous answers as assistant messages.
//!
//! Without a chat template (`--no-chat-template`, or a base model) the text is sent as is.

use anyhow::Result;
use serde_json::Value;

use crate::chat_template::{ChatTemplate, Message};
use crate::registry::ChatRule;
use crate::tokenizer::Tokenizer;

#[derive(Clone)]
pub struct Conversation {
    template: Option<ChatTemplate>,
    rule: ChatRule,
    system: Option<String>,
    /// Extra template variables (`enable_thinking`, ...).
    kwargs: Value,
    messages: Vec<Message>,
    /// `carry-tokens`: the previous prompt and answer, EOS removed.
    carried: Vec<u32>,
}

impl Conversation {
    /// `template` is `None` to send prompts as raw text.
    pub fn new(
        template: Option<ChatTemplate>,
        rule: ChatRule,
        system: Option<String>,
        kwargs: Value,
    ) -> Self {
        Self {
            template,
            rule,
            system,
            kwargs,
            messages: Vec::new(),
            carried: Vec::new(),
        }
    }

    /// The prompt text and ids for the next turn, whose user message is `user`.
    pub fn prompt(&self, user: &str, tok: &Tokenizer) -> Result<(String, Vec<u32>)> {
        let Some(template) = &self.template else {
            return Ok((user.to_string(), tok.encode(user)?));
        };
        let first = self.messages.is_empty();
        let system = self
            .system
            .iter()
            .filter(|_| first || self.rule == ChatRule::Rerender);
        let mut messages: Vec<Message> = system.map(|s| Message::new("system", s)).collect();
        match self.rule {
            ChatRule::CarryTokens => messages.push(Message::new("user", user)),
            ChatRule::Rerender => {
                messages.extend(self.messages.iter().cloned());
                messages.push(Message::new("user", user));
            }
        }
        let text = template.render(&messages, true, &self.kwargs)?;
        let mut ids = tok.encode(&text)?;
        if self.rule == ChatRule::CarryTokens && !first {
            if ids.first().is_some_and(|t| Some(*t) == tok.special.bos) {
                ids.remove(0);
            }
            let mut all = self.carried.clone();
            all.extend(ids);
            ids = all;
        }
        Ok((text, ids))
    }

    /// Records a finished turn: `prompt` as returned by [`Self::prompt`], the generated `canvas`
    /// and the answer text shown to the user.
    pub fn record(
        &mut self,
        user: &str,
        prompt: &[u32],
        canvas: &[u32],
        answer: &str,
        tok: &Tokenizer,
    ) {
        let eos = tok.special.eos;
        self.carried = prompt
            .iter()
            .chain(canvas)
            .copied()
            .filter(|&t| t != eos)
            .collect();
        self.messages.push(Message::new("user", user));
        self.messages.push(Message::new("assistant", answer.trim()));
    }

    /// The ids `carry-tokens` will put before the next turn.
    #[cfg(test)]
    pub fn carried(&self) -> &[u32] {
        &self.carried
    }
}
