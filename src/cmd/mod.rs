//! One file per subcommand; each exposes `run`.

pub mod bench;
pub mod models;
pub mod oneshot;
pub mod pull;
