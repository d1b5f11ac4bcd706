//! `dcoder serve`: loads the model once and answers OpenAI-compatible requests over HTTP.

use std::net::ToSocketAddrs;

use anyhow::{anyhow, bail, Context, Result};

use crate::cli::ServeArgs;
use crate::server::request::Served;
use crate::server::{serve, worker, App};

pub fn run(args: &ServeArgs) -> Result<()> {
    if args.queue == 0 {
        bail!("--queue must be at least 1");
    }
    if args.api_key.as_deref() == Some("") {
        bail!("--api-key (or DCODER_API_KEY) is empty; give a key or leave it unset");
    }
    let addr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .with_context(|| format!("--host {}: not an address to listen on", args.host))?
        .next()
        .ok_or_else(|| anyhow!("--host {}: resolves to no address", args.host))?;
    // The flags are checked here, before the model loads; each request resolves its own plan.
    let (session, _plan) = crate::cmd::load(&args.model, &args.sampler)?;
    let served = Served::new(&session, args.sampler.overrides(), args.sampler.seed)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let (queue, _worker) = worker::spawn(session, args.queue, runtime.handle().clone());
    let app = App {
        served,
        queue,
        api_key: args.api_key.clone(),
        placeholder: args.mask_placeholder.clone(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    serve(app, addr, &runtime)
}
