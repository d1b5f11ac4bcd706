//! The only place `dcoder eval` touches the engine: load a model, and turn one prompt into one
//! answer with the resolved sampler settings.

use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::cli::{ModelArgs, SamplerArgs};
use crate::diffusion::Plan;
use crate::report::Settings;
use crate::session::Session;

/// A loaded model and the sampler settings every sample uses.
pub struct Generator {
    session: Session,
    plan: Plan,
}

/// One answer and what it cost.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The answer text (before the first EOS/EOT/pad).
    pub text: String,
    /// Canvas tokens generated.
    pub tokens: usize,
    pub nfe: usize,
    pub elapsed: Duration,
}

impl Generator {
    /// Resolves `--model` and the sampler flags as a one-shot run does, and loads the model.
    pub fn load(model: &ModelArgs, sampler: &SamplerArgs) -> Result<Generator> {
        let (session, plan) = crate::cmd::load(model, sampler)?;
        Ok(Generator { session, plan })
    }

    /// What reports call the model.
    pub fn label(&self) -> &str {
        &self.session.label
    }

    pub fn has_chat_template(&self) -> bool {
        self.session.template.is_some()
    }

    /// The resolved sampler settings, as `dcoder --json` reports them.
    pub fn settings(&self) -> Result<Value> {
        Ok(serde_json::to_value(Settings::from(&self.plan))?)
    }

    /// One answer to `prompt`: through the chat template when `chat`, else as raw text to
    /// continue. `sample` offsets the seed, so the samples of one task differ when the sampler
    /// draws (temperature above 0) and repeat exactly across runs.
    pub fn complete(&mut self, prompt: &str, chat: bool, sample: u64) -> Result<Completion> {
        let mut plan = self.plan.clone();
        plan.seed = plan.seed.wrapping_add(sample);
        let conversation = self.session.conversation(!chat, None)?;
        let (_, ids) = conversation.prompt(prompt, &self.session.tokenizer)?;
        let generation = self
            .session
            .generate(&ids, &plan, |_| ControlFlow::Continue(()))?;
        let text = self.session.tokenizer.answer(&generation.canvas)?;
        Ok(Completion {
            text,
            tokens: generation.canvas.len(),
            nfe: generation.nfe,
            elapsed: generation.elapsed,
        })
    }
}
