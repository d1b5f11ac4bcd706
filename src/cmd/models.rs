//! `dcoder models`: the registry, with what is already in the local cache.

use std::io::Write;

use anyhow::Result;

use crate::hub::{self, Cached};
use crate::registry::Registry;

pub fn run() -> Result<()> {
    let registry = Registry::builtin()?;
    let names: Vec<String> = registry
        .models
        .iter()
        .map(|m| {
            if m.default {
                format!("{} *", m.name)
            } else {
                m.name.clone()
            }
        })
        .collect();
    let w = names.iter().map(String::len).max().unwrap_or(4).max(4);
    let license_w = registry
        .models
        .iter()
        .map(|m| m.license.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<w$}  {:<6}  {:<6}  {:<license_w$}  {:<10}  REPO",
        "NAME", "PARAMS", "ARCH", "LICENSE", "CACHED"
    )?;
    for (m, name) in registry.models.iter().zip(&names) {
        let cached = match hub::cached(m) {
            Cached::Complete => "downloaded",
            Cached::Partial => "partial",
            Cached::Missing => "-",
        };
        writeln!(
            out,
            "{name:<w$}  {:<6}  {:<6}  {:<license_w$}  {cached:<10}  {}",
            m.params,
            m.arch.name(),
            m.license,
            m.repo
        )?;
        writeln!(out, "{:<w$}  {}", "", m.about)?;
    }
    writeln!(
        out,
        "\n* default model. Cache: {}",
        hub::cache_dir().display()
    )?;
    writeln!(out, "Also accepted by --model: a local Hugging Face folder, or any org/name hub repo of a supported architecture.")?;
    if !registry.endpoints.is_empty() {
        writeln!(
            out,
            "\nEndpoints (--endpoint NAME --model ID; * the default id):"
        )?;
    }
    for (name, e) in &registry.endpoints {
        let ids: Vec<String> = e
            .models
            .iter()
            .map(|m| match e.model.as_ref() == Some(m) {
                true => format!("{m} *"),
                false => m.clone(),
            })
            .collect();
        let key = e
            .api_key_env
            .as_deref()
            .map_or(String::new(), |k| format!("  key: ${k}"));
        writeln!(
            out,
            "{name:<w$}  {}  {}{key}",
            e.url.as_deref().unwrap_or_default(),
            ids.join(", ")
        )?;
        if let Some(about) = &e.about {
            writeln!(out, "{:<w$}  {about}", "")?;
        }
    }
    Ok(())
}
