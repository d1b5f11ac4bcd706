//! `dcoder serve`: an OpenAI-compatible HTTP server over one loaded model.
//!
//! - [`request`]: a request body checked and resolved into a job (prompt ids, plan, stops);
//! - [`worker`]: the model thread and its bounded queue;
//! - [`stream`]: a job's events as a whole response or as Server-Sent Events (OpenAI's chunks,
//!   Mercury's diffusing chunks);
//! - [`error`]: OpenAI's error body with the right status.
//!
//! The HTTP side (axum on a small tokio runtime) never touches the model: it tokenizes, resolves
//! settings, queues the job and relays what the worker sends back.

pub mod error;
pub mod request;
pub mod stream;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::{ChatRequest, Common, CompletionRequest, ModelEntry, ModelList};

use error::ApiError;
use request::{Prepared, Served};
use stream::{Chunks, Meta, Shape};
use worker::{Job, Queue, Refused, Reports};

/// Events a job may buffer before the model waits for its client.
const EVENT_BUFFER: usize = 32;

/// What every handler shares.
pub struct App {
    pub served: Served,
    pub queue: Queue,
    pub api_key: Option<String>,
    pub placeholder: String,
    pub started: u64,
}

/// The routes, with the API key checked on every `/v1` route when one is set.
pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/fim/completions", post(fim))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .fallback(|request: Request| async move {
            ApiError::not_found(format!(
                "no such endpoint: {} {}",
                request.method(),
                request.uri().path()
            ))
        })
        .with_state(app)
}

/// Serves on `addr` until Ctrl-C; prints the address it listens on (port 0 picks a free one).
pub fn serve(app: App, addr: SocketAddr, runtime: &tokio::runtime::Runtime) -> Result<()> {
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--host/--port: cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!(
            "dcoder serve: {} on http://{local}/v1 (Ctrl-C stops)",
            app.served.id
        );
        axum::serve(listener, router(Arc::new(app)))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving HTTP")
    })
}

async fn authorize(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

async fn health(State(app): State<Arc<App>>) -> Response {
    Json(json!({ "status": "ok", "model": app.served.id })).into_response()
}

async fn models(State(app): State<Arc<App>>) -> Response {
    Json(ModelList {
        object: "list".into(),
        data: vec![ModelEntry {
            id: app.served.id.clone(),
            object: "model".into(),
            created: app.started,
            owned_by: "dcoder".into(),
        }],
    })
    .into_response()
}

/// The body as `T`, or a 400 saying what is wrong with it.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError {
        status: e.status(),
        ..ApiError::bad_request(e.body_text())
    })?;
    serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_request(format!("request body: {e}")),
        _ => ApiError::bad_request(format!("request body is not valid JSON: {e}")),
    })
}

async fn chat(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let run = async {
        let req: ChatRequest = parse(body)?;
        let prompt = app.served.chat_prompt(&req.messages)?;
        let prepared = app.served.prepare(&req.common, prompt, 0)?;
        respond(&app, Shape::Chat, &req.common, prepared, Vec::new()).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let run = async {
        let req: CompletionRequest = parse(body)?;
        complete(&app, req).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Mercury's FIM endpoint: `prompt` before the canvas, `suffix` after it.
async fn fim(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let run = async {
        let req: CompletionRequest = parse(body)?;
        if req.suffix.is_none() {
            return Err(ApiError::bad_field(
                "suffix",
                "suffix: fill-in-the-middle needs the text after the gap",
            ));
        }
        complete(&app, req).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// A text completion; with a `suffix`, the canvas between prompt and suffix (infilling).
async fn complete(app: &App, req: CompletionRequest) -> Result<Response, ApiError> {
    let prompt = app.served.text_prompt(&req.prompt)?;
    let suffix = match req.suffix.as_deref().filter(|s| !s.is_empty()) {
        Some(_) if !app.served.infills => {
            return Err(ApiError::bad_field(
                "suffix",
                format!(
                    "suffix: {} is a block-diffusion model and cannot infill (its attention never sees text after the block); use a LLaDA or Dream model",
                    app.served.id
                ),
            ))
        }
        Some(text) => app.served.encode(text)?,
        None => Vec::new(),
    };
    let prepared = app.served.prepare(&req.common, prompt, suffix.len())?;
    respond(app, Shape::Text, &req.common, prepared, suffix).await
}

/// Queues the job and answers: the whole response, or the stream of its steps.
async fn respond(
    app: &App,
    shape: Shape,
    common: &Common,
    prepared: Prepared,
    suffix: Vec<u32>,
) -> Result<Response, ApiError> {
    let reports = match (common.stream, common.diffusing) {
        (false, _) => Reports::End,
        (true, false) => Reports::Text,
        (true, true) => Reports::Steps,
    };
    let meta = Meta {
        shape,
        id: format!(
            "{}-{:016x}",
            match shape {
                Shape::Chat => "chatcmpl",
                Shape::Text => "cmpl",
            },
            rand::random::<u64>()
        ),
        created: unix_now(),
        model: app.served.id.clone(),
        prompt_tokens: prepared.prompt.len() + suffix.len(),
        plan: prepared.plan.clone(),
        placeholder: app.placeholder.clone(),
    };
    let (events, mut receiver) = tokio::sync::mpsc::channel(EVENT_BUFFER);
    let job = Job {
        prompt: prepared.prompt,
        suffix,
        plan: prepared.plan,
        stops: prepared.stops,
        reports,
        events,
    };
    app.queue.submit(job).map_err(|refused| match refused {
        Refused::Full => ApiError::busy(1),
        Refused::Closed => ApiError::internal("the model thread stopped"),
    })?;
    if reports != Reports::End {
        let chunks = Chunks::new(meta, receiver, reports == Reports::Steps);
        let body = futures_util::stream::unfold(chunks, |mut chunks| async move {
            chunks.next().await.map(|event| (event, chunks))
        });
        return Ok(Sse::new(body)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    loop {
        match receiver.recv().await {
            Some(worker::Event::Step { .. }) => {}
            Some(worker::Event::Done(done)) => {
                return Ok((StatusCode::OK, Json(meta.whole(&done))).into_response())
            }
            Some(worker::Event::Failed(message)) => return Err(ApiError::internal(message)),
            None => return Err(ApiError::internal("the model thread stopped")),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
