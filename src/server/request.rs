//! A request body turned into a [`Job`]: the prompt's ids, the plan and the stop strings, with
//! every problem answered before the job queues (400 for a field, 404 for another model, 413 for
//! a prompt beyond the context).
//!
//! Settings stack as for a run: the request's fields over `dcoder serve`'s flags over the model
//! card's defaults, resolved once into the [`Plan`] that the response echoes.

use serde_json::{Map, Value};

use crate::api::{ChatMessage, Common, Prompt};
use crate::chat_template::{ChatTemplate, Message};
use crate::diffusion::Plan;
use crate::registry::Arch;
use crate::session::{plan_for, Session};
use crate::settings::{Defaults, Family};
use crate::tokenizer::Tokenizer;

use super::error::ApiError;

/// What the HTTP side knows of the served model (the model itself lives on the worker thread).
#[derive(Clone)]
pub struct Served {
    /// The id `/v1/models` lists and responses carry.
    pub id: String,
    arch: Arch,
    /// The model card's sampler defaults.
    card: Defaults,
    /// `dcoder serve`'s sampler flags.
    flags: Defaults,
    seed: u64,
    pub tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    kwargs: Value,
    max_positions: usize,
    /// Whether the model sees the canvas's both sides (FIM).
    pub infills: bool,
}

/// A request ready for the queue, less its channel.
pub struct Prepared {
    pub prompt: Vec<u32>,
    pub plan: Plan,
    pub stops: Vec<String>,
}

impl Served {
    pub fn new(session: &Session, flags: Defaults, seed: u64) -> anyhow::Result<Served> {
        Ok(Served {
            id: served_id(&session.label),
            arch: session.arch,
            card: session.defaults.clone(),
            flags,
            seed,
            tokenizer: session.tokenizer.clone(),
            template: session.template.clone(),
            kwargs: serde_json::to_value(&session.arch_spec.template_kwargs)?,
            max_positions: session.max_positions,
            infills: matches!(session.arch.family(), Family::Llada | Family::Dream),
        })
    }

    /// The ids of a chat: the whole message list through the model's template, as
    /// `apply_chat_template(messages, add_generation_prompt=True)` renders it.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, ApiError> {
        if messages.is_empty() {
            return Err(ApiError::bad_field(
                "messages",
                "messages: the list is empty",
            ));
        }
        let Some(template) = &self.template else {
            return Err(ApiError::bad_request(format!(
                "{} has no chat template; send the prompt to /v1/completions",
                self.id
            )));
        };
        let messages = messages
            .iter()
            .map(|m| {
                let role = match m.role.as_str() {
                    "system" | "developer" => "system",
                    "user" => "user",
                    "assistant" => "assistant",
                    other => {
                        return Err(ApiError::bad_field(
                            "messages",
                            format!(
                            "messages: role '{other}' is not supported (system, user, assistant)"
                        ),
                        ))
                    }
                };
                Ok(Message::new(role, &m.content.text()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let text = template
            .render(&messages, true, &self.kwargs)
            .map_err(|e| ApiError::bad_field("messages", format!("messages: {e:#}")))?;
        self.encode(&text)
    }

    /// The ids of a completion prompt, sent as is.
    pub fn text_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
        let text = match prompt {
            Prompt::One(text) => text.as_str(),
            Prompt::Many(list) if list.len() == 1 => list[0].as_str(),
            Prompt::Many(_) => {
                return Err(ApiError::bad_field(
                    "prompt",
                    "prompt: send one prompt per request (a string)",
                ))
            }
        };
        if text.is_empty() {
            return Err(ApiError::bad_field("prompt", "prompt: it is empty"));
        }
        self.encode(text)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.tokenizer
            .encode(text)
            .map_err(|e| ApiError::bad_request(format!("{e:#}")))
    }

    /// Checks the fields every request has and resolves the plan for a prompt of
    /// `prompt_tokens` (plus `suffix_tokens` after the canvas, for infilling).
    pub fn prepare(
        &self,
        common: &Common,
        prompt: Vec<u32>,
        suffix_tokens: usize,
    ) -> Result<Prepared, ApiError> {
        if let Some(model) = &common.model {
            if !self.answers_to(model) {
                return Err(ApiError::not_found(format!(
                    "model '{model}' is not served here; this server runs '{}' (GET /v1/models)",
                    self.id
                )));
            }
        }
        if let Some(n) = common.n.filter(|&n| n != 1) {
            return Err(ApiError::bad_field(
                "n",
                format!("n: dcoder serve returns one choice per request, not {n}; send n=1 or leave it out"),
            ));
        }
        let layer = sampler_layer(common)?;
        let plan = plan_for(
            self.arch,
            &self.card,
            &layer.over(&self.flags),
            common.seed.unwrap_or(self.seed),
        )
        .map_err(|e| ApiError::bad_request(sampler_message(&format!("{e:#}"))))?;
        let total = prompt.len() + plan.gen_length + suffix_tokens;
        if total > self.max_positions {
            return Err(ApiError::too_long(format!(
                "the prompt ({} tokens) and max_tokens {} make {total} tokens, more than the {} this model handles; shorten the prompt or lower max_tokens",
                prompt.len() + suffix_tokens,
                plan.gen_length,
                self.max_positions
            )));
        }
        Ok(Prepared {
            prompt,
            plan,
            stops: common.stop.as_ref().map(|s| s.list()).unwrap_or_default(),
        })
    }

    /// The served id, or its last path component (a folder given as `--model ./dir`).
    fn answers_to(&self, model: &str) -> bool {
        let short = std::path::Path::new(&self.id)
            .file_name()
            .and_then(|n| n.to_str());
        model == self.id || Some(model) == short
    }
}

/// The id a model is served under: its label, less the type a quantized model's label names
/// ("llada-8b-instruct (q8_0)"), since clients ask for a model by its name.
fn served_id(label: &str) -> String {
    label
        .strip_suffix(')')
        .and_then(|l| l.rsplit_once(" ("))
        .filter(|(_, ty)| crate::gguf::file::parse_type(ty).is_ok())
        .map_or_else(|| label.to_string(), |(name, _)| name.to_string())
}

/// The request's sampler settings: every extra field that names one (`temperature`, `top_p`,
/// `steps`, `block_length`, `threshold`, `cache`, ...), with `max_tokens` as the canvas length.
/// Fields that are not settings are ignored; a setting of the wrong type is a 400 naming it.
fn sampler_layer(common: &Common) -> Result<Defaults, ApiError> {
    let mut known = Map::new();
    for (key, value) in &common.extra {
        let alone = Map::from_iter([(key.clone(), value.clone())]);
        match serde_json::from_value::<Defaults>(Value::Object(alone)) {
            Ok(_) => {
                known.insert(key.clone(), value.clone());
            }
            // `Defaults` refuses fields it does not have: those are not sampler settings.
            Err(e) if e.to_string().starts_with("unknown field") => {}
            Err(e) => return Err(ApiError::bad_field(key, format!("{key}: {e}"))),
        }
    }
    let mut layer: Defaults = serde_json::from_value(Value::Object(known))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(n) = common.max_completion_tokens.or(common.max_tokens) {
        layer.gen_length = Some(n);
    }
    Ok(layer)
}

/// A settings error in the request's words: `--gen-length` is `max_tokens` here, and every other
/// flag is the field of the same name with underscores.
fn sampler_message(message: &str) -> String {
    let message = message.replace("--gen-length", "max_tokens");
    let mut out = String::with_capacity(message.len());
    let mut rest = message.as_str();
    while let Some(at) = rest.find("--") {
        out.push_str(&rest[..at]);
        let flag = &rest[at + 2..];
        let end = flag
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(flag.len());
        out.push_str(&flag[..end].replace('-', "_"));
        rest = &flag[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(json: &str) -> Common {
        serde_json::from_str(json).expect("parses")
    }

    #[test]
    fn a_quantized_model_is_served_under_its_name() {
        assert_eq!(served_id("llada-8b-instruct (q8_0)"), "llada-8b-instruct");
        assert_eq!(served_id("dream-7b (Q4_K)"), "dream-7b");
        assert_eq!(served_id("/models/my (copy)"), "/models/my (copy)");
        assert_eq!(served_id("bd3lm-tiny"), "bd3lm-tiny");
    }

    #[test]
    fn extra_fields_that_name_settings_become_the_request_layer() -> Result<(), String> {
        let layer = sampler_layer(&common(
            r#"{"max_tokens":16,"steps":8,"cache":"dual","temperature":0.5,"user":"me","presence_penalty":1}"#,
        ))
        .map_err(|e| e.message)?;
        assert_eq!(layer.gen_length, Some(16));
        assert_eq!(layer.steps, Some(8));
        assert_eq!(layer.temperature, Some(0.5));
        assert!(layer.cache.is_some());
        let bad = sampler_layer(&common(r#"{"steps":"eight"}"#)).map(|_| ());
        let Err(bad) = bad else {
            return Err("a string for steps must be refused".into());
        };
        assert_eq!(bad.param.as_deref(), Some("steps"));
        Ok(())
    }

    #[test]
    fn flag_names_in_settings_errors_become_field_names() {
        assert_eq!(
            sampler_message("--gen-length 10 is not a multiple of --block-length 4"),
            "max_tokens 10 is not a multiple of block_length 4"
        );
    }
}
