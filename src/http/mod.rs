//! The OpenAI-compatible HTTP front: [`Bridge`], a tower [`Service`] that answers
//!
//! - `POST /v1/chat/completions` (also `/chat/completions`): a turn for the request's session, streamed
//!   as server-sent events or answered as one JSON object;
//! - `GET /v1/models` (also `/models`, `/v1/models/{id}`): the configured model ids;
//! - `GET /health`: `{ok, version, sessions, processes, connections}`;
//! - `GET /metrics`: Prometheus text.
//!
//! Every error is an OpenAI-shaped `{"error": {"message", "type", "code"}}` with the matching status; once
//! a stream has started, an error is its final chunk instead (see [`crate::openai::chunk`]).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use http_body_util::{BodyExt, Full};
//! use synthesis_bridge::http::{Bridge, BridgeConfig, WorkspacePolicy};
//! use synthesis_bridge::MockAgentBackend;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = BridgeConfig::new(WorkspacePolicy::single(std::env::temp_dir()).unwrap());
//! let bridge = Bridge::new(Arc::new(MockAgentBackend::new()), config);
//! let request = http::Request::get("/v1/models").body(Full::<bytes::Bytes>::default()).unwrap();
//! let response = bridge.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert!(std::str::from_utf8(&body).unwrap().contains(r#""id":"claude""#));
//! # }
//! ```

mod chat;
mod record;
mod sse;
mod turn_stream;
mod workspace;

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower::{BoxError, Service};

pub use workspace::WorkspacePolicy;

use crate::backend::{AgentBackend, BackendError};
use crate::metrics::Metrics;
use crate::openai::ApiError;
use crate::session::SessionKey;

/// The body of every response the bridge sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// The default request body limit: OpenClaw resends 50–100 KB of history per turn, so leave ample room.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// How the HTTP front behaves.
#[derive(Clone)]
#[non_exhaustive]
pub struct BridgeConfig {
    /// Model ids listed by `/v1/models`; the first is reported when a request names none.
    pub models: Vec<String>,
    /// When set, requests to `/v1/*` must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Where agents may work.
    pub workspaces: WorkspacePolicy,
    /// The session for requests that name none; without it they are refused (400).
    pub fallback_session: Option<SessionKey>,
}

impl BridgeConfig {
    /// Model `claude`, no API key, the default body limit, no fallback session.
    pub fn new(workspaces: WorkspacePolicy) -> Self {
        Self {
            models: vec!["claude".to_owned()],
            api_key: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            workspaces,
            fallback_session: None,
        }
    }

    /// Sets the model ids (at least one; an empty list keeps the current ones).
    pub fn models(mut self, models: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let models: Vec<String> = models.into_iter().map(Into::into).collect();
        if !models.is_empty() {
            self.models = models;
        }
        self
    }

    /// Requires this bearer key.
    pub fn api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|key| !key.is_empty());
        self
    }

    /// Sets the body limit.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Sets the fallback session.
    pub fn fallback_session(mut self, key: Option<SessionKey>) -> Self {
        self.fallback_session = key;
        self
    }
}

impl fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("models", &self.models)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("workspaces", &self.workspaces)
            .field("fallback_session", &self.fallback_session)
            .finish()
    }
}

/// The OpenAI-compatible service in front of an [`AgentBackend`]. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Bridge {
    shared: Arc<Shared>,
}

struct Shared {
    config: BridgeConfig,
    backend: Arc<dyn AgentBackend>,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl Bridge {
    /// A bridge answering with `backend`.
    pub fn new(backend: Arc<dyn AgentBackend>, config: BridgeConfig) -> Self {
        Self::with_metrics(backend, config, Metrics::new())
    }

    /// A bridge recording into `metrics`, which the backend and layers may share.
    pub fn with_metrics(
        backend: Arc<dyn AgentBackend>,
        config: BridgeConfig,
        metrics: Metrics,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                backend,
                metrics,
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The metrics this bridge records.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn AgentBackend> {
        &self.shared.backend
    }

    /// Starts shutting down: open streams end with a final error chunk and `[DONE]`, their turns are
    /// cancelled, and new turns are refused with 503. Stopping the agents is [`AgentBackend::shutdown`].
    pub fn begin_shutdown(&self) {
        self.shared.shutdown.cancel();
    }
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("config", &self.shared.config)
            .field("shutting_down", &self.shared.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for Bridge
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(route(shared, request).await) })
    }
}

async fn route<B>(shared: Arc<Shared>, request: Request<B>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let path = request.uri().path();
    let endpoint = match path {
        "/v1/chat/completions" | "/chat/completions" => Endpoint::Chat,
        "/v1/models" | "/models" => Endpoint::Models(None),
        "/health" => Endpoint::Health,
        "/metrics" => Endpoint::Metrics,
        _ => match path
            .strip_prefix("/v1/models/")
            .or_else(|| path.strip_prefix("/models/"))
        {
            Some(id) if !id.is_empty() => Endpoint::Models(Some(id.to_owned())),
            _ => {
                return respond(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "unknown_url",
                    format!(
                        "unknown path {path}: this bridge serves /v1/chat/completions and /v1/models"
                    ),
                ));
            }
        },
    };
    let allowed = if endpoint == Endpoint::Chat {
        Method::POST
    } else {
        Method::GET
    };
    if request.method() != allowed {
        let mut response = respond(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("{path} accepts {allowed} only"),
        ));
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_str(allowed.as_str()).expect("a method name is a valid header"),
        );
        return response;
    }
    if matches!(endpoint, Endpoint::Chat | Endpoint::Models(_)) {
        if let Err(error) = authorize(&shared.config, request.headers()) {
            return respond(error);
        }
    }
    match endpoint {
        Endpoint::Chat => chat::handle(shared, request).await,
        Endpoint::Models(id) => models(&shared.config, id.as_deref()),
        Endpoint::Health => health(&shared),
        Endpoint::Metrics => {
            let text = shared.metrics.render(&shared.backend.status());
            let mut response = Response::new(full(text));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Models(Option<String>),
    Health,
    Metrics,
}

fn authorize(config: &BridgeConfig, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &config.api_key else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(key) if constant_time_eq(key.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(unauthorized("invalid API key")),
        None => Err(unauthorized(
            "missing API key: send the header `Authorization: Bearer <key>`",
        )),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid_api_key",
        message,
    )
}

/// Compares without an early exit, so response timing does not reveal how much of a guessed key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn models(config: &BridgeConfig, id: Option<&str>) -> Response<ResponseBody> {
    let model = |id: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": "synthesis-bridge"});
    let body = match id {
        None => {
            json!({"object": "list", "data": config.models.iter().map(|id| model(id)).collect::<Vec<_>>()})
        }
        Some(id) if config.models.iter().any(|known| known == id) => model(id),
        Some(id) => {
            return respond(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!(
                    "the model {id} does not exist; this bridge serves {}",
                    config.models.join(", ")
                ),
            ));
        }
    };
    json_response(StatusCode::OK, &body)
}

fn health(shared: &Shared) -> Response<ResponseBody> {
    let status = shared.backend.status();
    let ok = !shared.shutdown.is_cancelled();
    let body = json!({
        "ok": ok,
        "version": env!("CARGO_PKG_VERSION"),
        "sessions": status.sessions,
        "processes": status.processes,
        "connections": status.connections,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(code, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn respond(error: ApiError) -> Response<ResponseBody> {
    error.into_response().map(box_body)
}

fn full(body: impl Into<Bytes>) -> ResponseBody {
    box_body(Full::new(body.into()))
}

fn box_body<B>(body: B) -> ResponseBody
where
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    body.boxed_unsync()
}

/// The `code` of the refusal or final chunk sent while the bridge shuts down.
const SHUTTING_DOWN: &str = "shutting_down";

/// A turn refused, or ended, because the bridge is shutting down.
fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        SHUTTING_DOWN,
        "the bridge is shutting down",
    )
}

/// A reply stream that stopped without saying the answer was complete.
fn broken_off() -> BackendError {
    BackendError::failed("the agent's reply ended before it was complete")
}
