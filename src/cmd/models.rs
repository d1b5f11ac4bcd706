//! `dcoder models`: the registry, with what is already in the local cache.

use std::io::Write;

use anyhow::Result;

use crate::hub::{self, Cached};
use crate::registry::Registry;

pub fn run() -> Result<()> {
    let registry = Registry::builtin()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<20} {:<7} {:<6} {:<10} {:<11} REPO",
        "NAME", "PARAMS", "ARCH", "LICENSE", "CACHED"
    )?;
    for m in &registry.models {
        let cached = match hub::cached(m) {
            Cached::Complete => "downloaded",
            Cached::Partial => "partial",
            Cached::Missing => "-",
        };
        let name = if m.default {
            format!("{} *", m.name)
        } else {
            m.name.clone()
        };
        writeln!(
            out,
            "{name:<20} {:<7} {:<6} {:<10} {cached:<11} {}",
            m.params,
            m.arch.name(),
            m.license,
            m.repo
        )?;
        writeln!(out, "{:<20} {}", "", m.about)?;
    }
    writeln!(
        out,
        "\n* default model. Cache: {}",
        hub::cache_dir().display()
    )?;
    writeln!(out, "Also accepted by --model: a local Hugging Face folder, or any org/name hub repo of a supported architecture.")?;
    Ok(())
}
