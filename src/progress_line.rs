//! The one-line progress indicator on stderr for plain runs: rewritten in place with `\r`,
//! throttled so that drawing never slows the sampler (every step is still computed).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::diffusion::Step;

/// Redraws at most this often.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

pub struct ProgressLine {
    enabled: bool,
    drawn: Option<Instant>,
    width: usize,
}

impl ProgressLine {
    /// Draws only when `wanted` and stderr is a terminal.
    pub fn new(wanted: bool) -> Self {
        Self {
            enabled: wanted && std::io::stderr().is_terminal(),
            drawn: None,
            width: 0,
        }
    }

    pub fn update(&mut self, step: &Step, mask: u32) {
        if self.enabled {
            self.show(step.index + 1 == step.total, || describe(step, mask));
        }
    }

    /// Draws `line()` unless the last draw was too recent (`last` always draws).
    pub fn show(&mut self, last: bool, line: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        if !last && self.drawn.is_some_and(|t| t.elapsed() < MIN_INTERVAL) {
            return;
        }
        self.drawn = Some(Instant::now());
        let line = line();
        let pad = self.width.saturating_sub(line.chars().count());
        self.width = line.chars().count();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}{}", " ".repeat(pad));
        let _ = err.flush();
    }

    /// Erases the line so the answer starts on a clean terminal.
    pub fn clear(&mut self) {
        if self.enabled && self.drawn.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}\r", " ".repeat(self.width));
            let _ = err.flush();
        }
    }
}

/// `step 12/128 · block 1/4 · 37/128 revealed · 4.1 tok/s · 9.0 s`
pub fn describe(step: &Step, mask: u32) -> String {
    let revealed = step.canvas.iter().filter(|&&t| t != mask).count();
    let secs = step.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        revealed as f64 / secs
    } else {
        0.0
    };
    format!(
        "step {}/{} · block {}/{} · {revealed}/{} revealed · TPF {:.1} · {rate:.1} tok/s · {secs:.1} s",
        step.index + 1,
        step.total,
        step.block + 1,
        step.blocks,
        step.canvas.len(),
        revealed as f64 / step.nfe.max(1) as f64
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::step::Reveal;

    #[test]
    fn describes_counts_and_rate() {
        let canvas = [5, 9, 9, 7];
        let revealed = [Reveal {
            position: 3,
            token: 7,
            confidence: 0.9,
        }];
        let step = Step {
            index: 1,
            total: 4,
            block: 0,
            blocks: 2,
            block_span: 0..2,
            canvas: &canvas,
            revealed: &revealed,
            edited: &[],
            nfe: 2,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            describe(&step, 9),
            "step 2/4 · block 1/2 · 2/4 revealed · TPF 1.0 · 1.0 tok/s · 2.0 s"
        );
    }
}
