//! Hugging Face chat templates rendered the way transformers renders them.
//!
//! transformers compiles `chat_template` with Jinja2 `trim_blocks=True, lstrip_blocks=True`, a
//! `raise_exception` global and Python string methods (`tokenization_utils_base.py`,
//! `_compile_jinja_template`); minijinja with `pycompat` and the same settings renders the
//! LLaDA, ChatML and Qwen3 templates byte for byte. The context holds `messages`,
//! `add_generation_prompt`, `bos_token` and `eos_token` plus any extra keyword arguments.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use minijinja::{syntax::SyntaxConfig, value::Serde, Environment, Error, ErrorKind};
use serde::Serialize;
use serde_json::{json, Value};

use crate::tokenizer::token_text;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A checkpoint's chat template with the token texts it refers to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// The template of a model folder: `chat_template.jinja` if present (newer transformers
    /// save it there), else `chat_template` in tokenizer_config.json (a string, or a list of
    /// named templates of which `default` is used). `None` when the model has none.
    pub fn find(
        tokenizer_config: Option<&Value>,
        jinja_file: Option<&Path>,
    ) -> Result<Option<Self>> {
        let source = match jinja_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            ),
            None => tokenizer_config.and_then(|tc| match tc.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(named)) => named
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
                _ => None,
            }),
        };
        let text = |key: &str| {
            tokenizer_config
                .and_then(|tc| tc.get(key))
                .and_then(token_text)
                .unwrap_or("")
                .to_string()
        };
        Ok(source.map(|source| Self {
            source,
            bos_token: text("bos_token"),
            eos_token: text("eos_token"),
        }))
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; `kwargs` (a JSON object) adds variables such as `enable_thinking`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        kwargs: &Value,
    ) -> Result<String> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| anyhow!("chat template syntax: {e}"))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        let template = env
            .template_from_str(&self.source)
            .map_err(|e| anyhow!("chat template does not parse: {e}"))?;
        let mut ctx = json!({
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        });
        if let (Some(ctx), Some(extra)) = (ctx.as_object_mut(), kwargs.as_object()) {
            ctx.extend(extra.clone());
        }
        template
            .render(Serde(ctx))
            .map_err(|e| anyhow!("rendering the chat template: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLADA: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}";

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate {
            source: source.into(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        }
    }

    #[test]
    fn llada_template_trims_content_and_always_opens_the_answer() -> Result<()> {
        let out = template(LLADA).render(&[Message::new("user", "  hi  ")], false, &json!({}))?;
        assert_eq!(out, "<s><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
        Ok(())
    }

    #[test]
    fn block_whitespace_follows_transformers() -> Result<()> {
        let src = "{% for m in messages %}\n  {{ m.content.strip() }}|\n{% endfor %}\n{% if add_generation_prompt %}GO{% endif %}\n";
        let out = template(src).render(
            &[Message::new("user", " a "), Message::new("user", "b")],
            true,
            &json!({}),
        )?;
        // trim_blocks eats the newline after a block tag, lstrip_blocks the indent before it,
        // and the template's final newline is dropped (keep_trailing_newline=False).
        assert_eq!(out, "  a|\n  b|\nGO");
        Ok(())
    }

    #[test]
    fn raise_exception_and_kwargs_reach_the_template() -> Result<()> {
        let src = "{% if enable_thinking is defined and not enable_thinking %}no-think{% endif %}{% if messages|length > 1 %}{{ raise_exception('one message only') }}{% endif %}";
        let t = template(src);
        assert_eq!(
            t.render(
                &[Message::new("user", "x")],
                true,
                &json!({"enable_thinking": false})
            )?,
            "no-think"
        );
        let err = t
            .render(
                &[Message::new("user", "x"), Message::new("user", "y")],
                true,
                &json!({}),
            )
            .expect_err("must fail");
        assert!(err.to_string().contains("one message only"), "{err}");
        Ok(())
    }

    #[test]
    fn finds_string_and_named_templates() -> Result<()> {
        let tc = json!({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}], "bos_token": {"content": "<b>"}});
        let t = ChatTemplate::find(Some(&tc), None)?.expect("template");
        assert_eq!((t.source.as_str(), t.bos_token.as_str()), ("D", "<b>"));
        assert!(ChatTemplate::find(Some(&json!({})), None)?.is_none());
        Ok(())
    }
}
