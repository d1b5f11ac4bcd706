//! The engine thread: owns the loaded model and the conversation, runs one generation per
//! request, and sends display-ready events ([`Frame`]s) out. Whoever listens (the live view)
//! never touches the model, the tokenizer or a tensor.
//!
//! Cancelling is a per-request flag checked after every step; a closed event channel (the UI is
//! gone) stops the generation at the next step as well.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

use crate::canvas::{Frame, FrameBuilder};
use crate::conversation::Conversation;
use crate::diffusion::Plan;
use crate::session::Session;
use crate::trace::TraceWriter;

/// What the UI asks the engine for.
#[derive(Debug, Clone)]
pub enum Request {
    /// Answer `user` as the next turn.
    Ask {
        user: String,
        seed: u64,
        cancel: Arc<AtomicBool>,
    },
    /// Answer the last turn's message again with another seed; the new answer replaces it.
    Regenerate { seed: u64, cancel: Arc<AtomicBool> },
}

/// Numbers of a finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub steps: usize,
    pub nfe: usize,
    /// Forward passes the reference schedule would have run beyond these.
    pub nfe_saved: usize,
    pub elapsed: Duration,
    pub tokens_per_s: f64,
    pub stopped_early: bool,
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A generation begins: the fully masked canvas.
    Started(Frame),
    /// The canvas after a step.
    Frame(Frame),
    /// The generation ended (completed, stopped early or cancelled).
    Finished {
        answer: String,
        stats: Stats,
        cancelled: bool,
    },
    /// The request failed; the conversation is unchanged.
    Failed(String),
}

/// Everything the engine thread owns.
pub struct Engine {
    pub session: Session,
    pub conversation: Conversation,
    /// Sampler parameters; each request sets its own seed.
    pub plan: Plan,
    /// Writes every step of the first generation as JSON lines (`--trace`).
    pub trace: Option<PathBuf>,
    /// Ids after the canvas when infilling (`--suffix`); empty otherwise.
    pub suffix: Vec<u32>,
}

impl Engine {
    /// Runs requests until the request channel closes or `emit` reports the listener gone.
    pub fn spawn(
        mut self,
        requests: Receiver<Request>,
        emit: impl Fn(EngineEvent) -> bool + Send + 'static,
    ) -> JoinHandle<()> {
        std::thread::spawn(move || {
            // (conversation before the last turn, its user message), for regenerating it.
            let mut last: Option<(Conversation, String)> = None;
            for request in requests {
                let (user, seed, cancel) = match request {
                    Request::Ask { user, seed, cancel } => {
                        last = Some((self.conversation.clone(), user.clone()));
                        (user, seed, cancel)
                    }
                    Request::Regenerate { seed, cancel } => match &last {
                        Some((before, user)) => {
                            self.conversation = before.clone();
                            (user.clone(), seed, cancel)
                        }
                        None => {
                            emit(EngineEvent::Failed("nothing to regenerate yet".into()));
                            continue;
                        }
                    },
                };
                let event = match self.answer(&user, seed, &cancel, &emit) {
                    Ok(event) => event,
                    Err(e) => EngineEvent::Failed(format!("{e:#}")),
                };
                if !emit(event) {
                    break;
                }
            }
        })
    }

    /// One generation; the conversation records the turn unless it was cancelled.
    fn answer(
        &mut self,
        user: &str,
        seed: u64,
        cancel: &AtomicBool,
        emit: &impl Fn(EngineEvent) -> bool,
    ) -> Result<EngineEvent> {
        let (prompt_text, prompt) = self.conversation.prompt(user, &self.session.tokenizer)?;
        let plan = Plan {
            seed,
            ..self.plan.clone()
        };
        let blocks = plan.blocks(prompt.len());
        // The same count every step reports, so the gauge does not jump after the first.
        let total = plan.total_steps(prompt.len());
        emit(EngineEvent::Started(Frame::blank(
            plan.gen_length,
            blocks[0].clone(),
            blocks.len(),
            total,
        )));
        let mut trace = match self.trace.take() {
            Some(path) => Some(TraceWriter::create(
                &path,
                &self.session,
                &prompt_text,
                &prompt,
                &plan,
            )?),
            None => None,
        };
        // A second handle on the tokenizer, so the frame builder can read it while the session
        // runs the model.
        let tokenizer = self.session.tokenizer.clone();
        let mut builder = FrameBuilder::new(&tokenizer, plan.gen_length);
        let mut failure = None;
        let suffix = self.suffix.clone();
        let generation = self.session.infill(&prompt, &suffix, &plan, |step| {
            let frame = match builder.frame(step) {
                Ok(frame) => frame,
                Err(e) => {
                    failure = Some(e);
                    return ControlFlow::Break(());
                }
            };
            if let Some(trace) = trace.as_mut() {
                if let Err(e) = trace.step(step, &frame) {
                    failure = Some(e);
                    return ControlFlow::Break(());
                }
            }
            if !emit(EngineEvent::Frame(frame)) || cancel.load(Ordering::Relaxed) {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let answer = tokenizer.answer(&generation.canvas)?;
        if let Some(trace) = trace.as_mut() {
            trace.end(&generation, &answer)?;
        }
        let cancelled = generation.cancelled;
        if !cancelled {
            self.conversation
                .record(user, &prompt, &generation.canvas, &answer, &tokenizer);
        }
        let (_, tokens_per_s) = crate::report::rates(&generation);
        let stats = Stats {
            steps: generation.steps,
            nfe: generation.nfe,
            nfe_saved: plan.steps.saturating_sub(generation.nfe),
            elapsed: generation.elapsed,
            tokens_per_s,
            stopped_early: generation.stopped_early,
        };
        Ok(EngineEvent::Finished {
            answer,
            stats,
            cancelled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_total_is_the_same_from_the_blank_frame_to_the_last_step() -> Result<()> {
        use crate::parity::{open, plan};
        use crate::settings::Defaults;
        use std::sync::atomic::AtomicBool;
        use std::sync::{mpsc, Arc, Mutex};
        // Steps beyond a block's positions reveal nothing and are skipped (LLaDA), and SDAR never
        // runs more steps per block than the block has positions: the planned count is below
        // `--steps` in both, and the blank frame must already show it.
        let cases = [
            ("llada-tiny", "--gen-length 8 --block-length 4 --steps 16"),
            ("sdar-tiny", "--gen-length 8 --block-length 4 --steps 32"),
        ];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for (dir, flags) in cases {
            let session = open(&root.join(dir))?;
            let words: Vec<&str> = flags.split(' ').collect();
            let value = |flag: &str| -> Option<usize> {
                let i = words.iter().position(|w| *w == flag)?;
                words.get(i + 1)?.parse().ok()
            };
            let flags = Defaults {
                gen_length: value("--gen-length"),
                block_length: value("--block-length"),
                steps: value("--steps"),
                ..Default::default()
            };
            let plan = plan(&session, &flags)?;
            assert!(
                plan.total_steps(8) < plan.steps,
                "{dir}: the case must plan fewer steps than --steps"
            );
            let conversation = session.conversation(true, None)?;
            let engine = Engine {
                session,
                conversation,
                plan,
                trace: None,
                suffix: Vec::new(),
            };
            let (ask, requests) = mpsc::channel();
            let totals = Arc::new(Mutex::new(Vec::new()));
            let seen = totals.clone();
            let handle = engine.spawn(requests, move |event| {
                if let EngineEvent::Started(f) | EngineEvent::Frame(f) = &event {
                    if let Ok(mut t) = seen.lock() {
                        t.push(f.total);
                    }
                }
                true
            });
            ask.send(Request::Ask {
                user: "hello".into(),
                seed: 0,
                cancel: Arc::new(AtomicBool::new(false)),
            })?;
            drop(ask);
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("engine thread panicked"))?;
            let totals = totals.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
            assert!(totals.len() > 1, "{dir}: {totals:?}");
            assert!(
                totals.iter().all(|&t| t == totals[0]),
                "{dir}: the total jumped: {totals:?}"
            );
        }
        Ok(())
    }
}
