//! A stand-in network for the drivers' tests: its logits favour token `position % vocab` at
//! each row, more strongly for later positions, and it counts its forward passes.

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::rc::Rc;

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::plan::Plan;
use super::run::{biases, Outcome, Run};
use super::step::{Generation, SpecialIds, Step};
use crate::model::{Denoiser, Pass};

pub struct Fixed {
    pub vocab: usize,
    pub calls: usize,
    pub batch_seen: usize,
    pub rows_seen: Vec<u32>,
}

impl Fixed {
    pub fn new() -> Self {
        Self {
            vocab: 200,
            calls: 0,
            batch_seen: 0,
            rows_seen: Vec::new(),
        }
    }
}

impl Denoiser for Fixed {
    fn forward(&mut self, pass: &Pass, rows: &[u32]) -> candle_core::Result<Tensor> {
        self.calls += 1;
        let (batch, _) = pass.ids.dims2()?;
        self.batch_seen = batch;
        self.rows_seen = rows.to_vec();
        let mut data = Vec::new();
        for _ in 0..batch {
            for &r in rows {
                // Keyed on the absolute position, so passes through a cache agree.
                let pos = pass.positions[r as usize] as usize;
                let mut row = vec![0f32; self.vocab];
                row[pos % self.vocab] = 1.0 + pos as f32;
                data.extend(row);
            }
        }
        Tensor::from_vec(data, (batch, rows.len(), self.vocab), &Device::Cpu)
    }
    fn truncate_cache(&mut self, _: usize) {}
    fn clear_cache(&mut self) {}
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn device(&self) -> &Device {
        &Device::Cpu
    }
}

pub fn special() -> SpecialIds {
    SpecialIds {
        mask: 199,
        eos: 4,
        eot: None,
        pad: None,
        stops: vec![4],
    }
}

/// The step callback a test run uses.
pub type Callback = Box<dyn FnMut(&Step) -> ControlFlow<()>>;
/// A driver's `run`, as the tests call it.
pub type DriverFn = fn(&mut Fixed, &mut Run<'_, Callback>) -> Result<Outcome>;

/// Runs `plan` through `driver` and collects the canvas positions each step revealed and the
/// total each step reported.
pub fn run_collect(
    m: &mut Fixed,
    prompt: &[u32],
    plan: &Plan,
    driver: DriverFn,
) -> Result<(Generation, Vec<Vec<usize>>, Vec<usize>)> {
    let special = special();
    let (logit_bias, confidence_bias) = biases(plan, &special, m.vocab, &Device::Cpu)?;
    let rule = plan
        .decision
        .with_biases(logit_bias.as_ref(), confidence_bias.as_ref());
    let seen = Rc::new(RefCell::new((Vec::new(), Vec::new())));
    let log = seen.clone();
    let on_step: Callback = Box::new(move |s| {
        let mut log = log.borrow_mut();
        log.0.push(s.revealed.iter().map(|r| r.position).collect());
        log.1.push(s.total);
        ControlFlow::Continue(())
    });
    let mut state = Run::new(plan, &special, prompt, &[], rule, on_step);
    let outcome = driver(m, &mut state)?;
    let generation = state.finish(outcome);
    let (revealed, totals) = seen.take();
    Ok((generation, revealed, totals))
}
