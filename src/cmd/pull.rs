//! `dcoder pull NAME`: download a model into the cache without generating.

use anyhow::{bail, Result};

use crate::hub::{self, Source};
use crate::registry::Registry;

pub fn run(name: &str) -> Result<()> {
    let source = Source::parse(Some(name), Registry::builtin()?)?;
    if let Source::Dir(dir) = &source {
        bail!(
            "{} is a local folder; pull downloads registry models and hub repos",
            dir.display()
        );
    }
    let files = hub::locate(&source)?;
    let dir = files
        .config
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    eprintln!("{} is ready in {dir}", source.label());
    Ok(())
}
