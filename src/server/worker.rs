//! The model thread of `dcoder serve`: the one loaded model runs one job at a time, in arrival
//! order, from a bounded queue. Every job reports back through its own channel; a job whose
//! channel is closed (the client went away) is skipped if it has not started and stopped at the
//! next step if it has, so the model is free for the next request.

use std::ops::ControlFlow;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use tokio::runtime::Handle;
use tokio::sync::mpsc::Sender;

use crate::canvas::{Frame, FrameBuilder};
use crate::diffusion::{Generation, Plan};
use crate::session::Session;
use crate::tokenizer::Tokenizer;

/// How long a step waits for a client that stopped reading before the job is dropped.
const STALLED_CLIENT: Duration = Duration::from_secs(60);

/// One request, ready to run.
pub struct Job {
    pub prompt: Vec<u32>,
    /// Text after the canvas, for infilling (empty otherwise).
    pub suffix: Vec<u32>,
    pub plan: Plan,
    /// `stop` strings: the answer ends before the first one.
    pub stops: Vec<String>,
    pub reports: Reports,
    pub events: Sender<Event>,
}

/// Which steps a job reports besides its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reports {
    /// None (`stream: false`).
    End,
    /// The steps that make more of the answer final (a plain stream).
    Text,
    /// Every step (`diffusing: true`).
    Steps,
}

/// What a job reports.
#[derive(Debug)]
pub enum Event {
    /// After a step: the canvas, and the answer's text that can no longer change (the blocks
    /// before the current one, cut at a stop string, less any tail that may begin one).
    /// The frame only for [`Reports::Steps`].
    Step {
        frame: Option<Frame>,
        committed: String,
    },
    Done(Finished),
    Failed(String),
}

/// A finished job.
#[derive(Debug, Clone)]
pub struct Finished {
    pub text: String,
    /// `stop` (a stop token or string ended the answer) or `length` (the canvas filled up).
    pub finish_reason: &'static str,
    pub completion_tokens: usize,
    pub generation: Generation,
}

/// The sending end of the queue.
#[derive(Clone)]
pub struct Queue {
    jobs: SyncSender<Job>,
}

/// Why a job was not queued.
pub enum Refused {
    Full,
    Closed,
}

impl Queue {
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Refused::Full,
            TrySendError::Disconnected(_) => Refused::Closed,
        })
    }
}

/// Starts the model thread; at most `capacity` jobs wait beside the one running.
pub fn spawn(session: Session, capacity: usize, runtime: Handle) -> (Queue, JoinHandle<()>) {
    let (jobs, queue) = sync_channel(capacity);
    let handle = std::thread::spawn(move || serve_jobs(session, queue, runtime));
    (Queue { jobs }, handle)
}

fn serve_jobs(mut session: Session, queue: Receiver<Job>, runtime: Handle) {
    for job in queue {
        if job.events.is_closed() {
            continue;
        }
        let events = job.events.clone();
        let event = match run(&mut session, job, &runtime) {
            Ok(Some(done)) => Event::Done(done),
            // The client is gone: nobody to tell.
            Ok(None) => continue,
            Err(e) => Event::Failed(format!("{e:#}")),
        };
        // A client that left at the last moment needs no answer.
        let _ = runtime.block_on(events.send_timeout(event, STALLED_CLIENT));
    }
}

/// Runs one job; `None` when its client went away.
fn run(session: &mut Session, job: Job, runtime: &Handle) -> Result<Option<Finished>> {
    let tokenizer = session.tokenizer.clone();
    let mut frames = FrameBuilder::new(&tokenizer, job.plan.gen_length);
    let mut failure = None;
    let mut gone = false;
    let mut stopped_by_string = false;
    let mut sent = String::new();
    let generation = session.infill(&job.prompt, &job.suffix, &job.plan, |step| {
        if job.events.is_closed() {
            gone = true;
            return ControlFlow::Break(());
        }
        if job.reports == Reports::End && job.stops.is_empty() {
            return ControlFlow::Continue(());
        }
        let committed = match tokenizer.answer(&step.canvas[..step.block_span.start]) {
            Ok(text) => text,
            Err(e) => {
                failure = Some(e);
                return ControlFlow::Break(());
            }
        };
        let (committed, hit) = cut_at_stop(&committed, &job.stops);
        if hit {
            // The rest of the canvas would be cut off anyway.
            stopped_by_string = true;
        }
        let committed = settled(committed, &job.stops).to_string();
        let wanted = match job.reports {
            Reports::End => false,
            Reports::Text => committed != sent,
            Reports::Steps => true,
        };
        if wanted {
            let frame = match job.reports {
                Reports::Steps => match frames.frame(step) {
                    Ok(frame) => Some(frame),
                    Err(e) => {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                },
                _ => None,
            };
            sent.clone_from(&committed);
            let event = Event::Step { frame, committed };
            if runtime
                .block_on(job.events.send_timeout(event, STALLED_CLIENT))
                .is_err()
            {
                gone = true;
                return ControlFlow::Break(());
            }
        }
        if stopped_by_string {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if gone {
        return Ok(None);
    }
    Ok(Some(finish(&tokenizer, generation, &job.stops)?))
}

/// The answer of a finished generation.
fn finish(tokenizer: &Tokenizer, generation: Generation, stops: &[String]) -> Result<Finished> {
    let canvas = &generation.canvas;
    let answer_tokens = canvas
        .iter()
        .position(|t| tokenizer.special.stops.contains(t))
        .unwrap_or(canvas.len());
    let text = tokenizer.answer(canvas)?;
    let (text, hit) = cut_at_stop(&text, stops);
    let finish_reason = if hit || answer_tokens < canvas.len() {
        "stop"
    } else {
        "length"
    };
    Ok(Finished {
        text: text.to_string(),
        finish_reason,
        completion_tokens: answer_tokens,
        generation,
    })
}

/// `text` before the first of the `stops`, and whether one was found.
pub fn cut_at_stop<'a>(text: &'a str, stops: &[String]) -> (&'a str, bool) {
    match stops.iter().filter_map(|s| text.find(s.as_str())).min() {
        Some(at) => (&text[..at], true),
        None => (text, false),
    }
}

/// `text` less a tail that a later token could still turn into a stop string, or that holds
/// the first half of a split character: what a stream can send and never take back.
pub fn settled<'a>(text: &'a str, stops: &[String]) -> &'a str {
    let text = text.trim_end_matches('\u{FFFD}');
    let hold = stops
        .iter()
        .flat_map(|stop| {
            (1..stop.len())
                .filter(|&n| stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
                .max()
        })
        .max()
        .unwrap_or(0);
    &text[..text.len() - hold]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_cut_the_text_and_hold_back_a_possible_start() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(cut_at_stop("a\n\nb END", &stops), ("a", true));
        assert_eq!(cut_at_stop("abc", &stops), ("abc", false));
        assert_eq!(settled("fn x\n", &stops), "fn x");
        assert_eq!(settled("fn xEN", &stops), "fn x");
        assert_eq!(settled("fn x", &stops), "fn x");
        assert_eq!(settled("caf\u{FFFD}", &[]), "caf");
    }
}
