//! `dcoder eval`: HumanEval and MBPP pass@k with the model's sampler settings, every generated
//! program run in a sandbox.
//!
//! - [`dataset`]: the benchmarks and where their problems come from (hub or `--data`), with
//!   [`parquet_rows`] for the hub's parquet files; [`problem`]: one problem and its check program.
//! - [`mode`]: base or chat prompting and completion extraction; [`generate`]: the engine.
//! - [`sandbox`] (the parent) and [`jail`] (the `dcoder __sandbox` child): running one program;
//!   [`checker`]: several at once; [`verdict`]: how one fared.
//! - [`samples`]: the samples and results files; [`pass_at_k`] and [`summary`]: the scores.

pub mod checker;
pub mod dataset;
pub mod generate;
pub mod jail;
pub mod mode;
pub mod parquet_rows;
pub mod pass_at_k;
pub mod problem;
pub mod samples;
pub mod sandbox;
pub mod summary;
pub mod verdict;
