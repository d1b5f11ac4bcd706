//! Parallel scoring: `--jobs` threads each run one sandboxed program at a time, so the tests of
//! earlier samples run while the model generates the next.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};

use super::sandbox::Sandbox;
use super::verdict::Verdict;

type Job = (usize, String);
type Done = (usize, Result<Verdict>);

pub struct Checker {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    pending: usize,
}

impl Checker {
    pub fn new(sandbox: Arc<Sandbox>, threads: usize) -> Checker {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let (done_tx, done) = mpsc::channel::<Done>();
        let workers = (0..threads.max(1))
            .map(|_| {
                let queue = Arc::clone(&queue);
                let sandbox = Arc::clone(&sandbox);
                let done = done_tx.clone();
                std::thread::spawn(move || loop {
                    let job = queue
                        .lock()
                        .map_err(|_| ())
                        .and_then(|q| q.recv().map_err(|_| ()));
                    let Ok((index, program)) = job else { return };
                    if done.send((index, sandbox.run(&program))).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Checker {
            jobs: Some(jobs),
            done,
            workers,
            pending: 0,
        }
    }

    /// Queues program number `index`.
    pub fn submit(&mut self, index: usize, program: String) -> Result<()> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| anyhow!("checker closed"))?;
        jobs.send((index, program))
            .map_err(|_| anyhow!("the checker threads stopped"))?;
        self.pending += 1;
        Ok(())
    }

    /// A finished check if one is ready.
    pub fn try_next(&mut self) -> Option<Done> {
        let done = self.done.try_recv().ok()?;
        self.pending -= 1;
        Some(done)
    }

    /// The next finished check, waiting for it; `None` when nothing is pending.
    pub fn next(&mut self) -> Option<Done> {
        if self.pending == 0 {
            return None;
        }
        let done = self.done.recv().ok()?;
        self.pending -= 1;
        Some(done)
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
