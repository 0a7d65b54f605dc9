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
//! Turns go through the [`layers`](crate::layers): one turn at a time per session (the rest queue), a
//! deadline and an idle timeout, and heartbeats while the agent is quiet. [`BridgeBuilder`] sets them up and
//! documents their order.
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
//! let bridge = Bridge::builder(Arc::new(MockAgentBackend::new()), config).build();
//! let request = http::Request::get("/v1/models").body(Full::<bytes::Bytes>::default()).unwrap();
//! let response = bridge.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert!(std::str::from_utf8(&body).unwrap().contains(r#""id":"claude""#));
//! # }
//! ```

mod auth;
mod browsers;
mod builder;
mod chat;
mod config;
mod endpoints;
mod front;
mod layer_errors;
mod outcome;
mod prepare;
mod routes;
mod sse;
mod turn_stream;
mod turns;
mod workspace;

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tokio_util::sync::CancellationToken;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service};

pub use builder::BridgeBuilder;
pub use chat::ChatRoute;
pub use config::{BridgeConfig, DEFAULT_MAX_BODY_BYTES, SessionKeyRule};
pub use workspace::WorkspacePolicy;

use crate::backend::{AgentBackend, BackendError};
use crate::layers::concurrency::{ConcurrencyPerKey, ConcurrencyPerKeyLayer};
use crate::layers::heartbeat::Heartbeat;
use crate::layers::timeout::StreamTimeout;
use crate::metrics::Metrics;
use crate::openai::ApiError;
use crate::session::SessionKey;
use prepare::ChatTurn;
use turns::TurnService;

/// The body of every request the bridge's layers see (any request body is boxed into one).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// The body of every response the bridge sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// Names a chat turn's concurrency key: its session.
type KeyOf = fn(&Request<ChatTurn>) -> Option<SessionKey>;

/// The layers around the turn service, outermost first (see [`BridgeBuilder`]).
type TurnStack = Heartbeat<ConcurrencyPerKey<StreamTimeout<TurnService>, KeyOf, SessionKey>>;

type BoxedService = BoxCloneSyncService<Request<RequestBody>, Response<ResponseBody>, Infallible>;

/// The OpenAI-compatible service in front of an [`AgentBackend`], built by [`BridgeBuilder`]. Cheap to
/// clone; clones share everything. It accepts any request body.
#[derive(Clone)]
pub struct Bridge {
    shared: Arc<Shared>,
    service: BoxedService,
}

pub(crate) struct Shared {
    config: BridgeConfig,
    backend: Arc<dyn AgentBackend>,
    metrics: Metrics,
    shutdown: CancellationToken,
    /// Kept for its gauges: keys in flight, requests waiting.
    per_session: ConcurrencyPerKeyLayer<KeyOf, SessionKey>,
    /// Whether streams ask the heartbeat layer for heartbeats.
    heartbeats: bool,
}

impl Bridge {
    /// Starts building a bridge answering with `backend`.
    pub fn builder(backend: Arc<dyn AgentBackend>, config: BridgeConfig) -> BridgeBuilder {
        BridgeBuilder::new(backend, config)
    }

    /// A bridge answering with `backend`, with the default limits and timeouts.
    pub fn new(backend: Arc<dyn AgentBackend>, config: BridgeConfig) -> Self {
        Self::builder(backend, config).build()
    }

    /// The metrics this bridge records.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn AgentBackend> {
        &self.shared.backend
    }

    /// Sessions with a turn in flight or waiting. An idle session is forgotten, so this drops back to zero
    /// when the load is gone.
    pub fn active_sessions(&self) -> usize {
        self.shared.per_session.active_keys()
    }

    /// Requests waiting for their session's turn.
    pub fn waiting(&self) -> usize {
        self.shared.per_session.waiting()
    }

    /// Starts shutting down: open streams end with a final error chunk and `[DONE]`, their turns are
    /// cancelled, and new or waiting turns are refused with 503. Stopping the agents is
    /// [`AgentBackend::shutdown`].
    pub fn begin_shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Wraps the whole bridge in `layer` (auth, tracing, body limits, …) and returns the result as a bridge
    /// again. Each call wraps what is there, so the layer added last is outermost.
    ///
    /// An error from the layer is answered as an OpenAI error (500, or 504 for a timeout); an error in its
    /// response body aborts the response, as hyper does.
    pub fn layer<L, B, E>(self, layer: L) -> Self
    where
        L: Layer<Bridge>,
        L::Service: Service<Request<RequestBody>, Response = Response<B>, Error = E>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request<RequestBody>>>::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
        E: Into<BoxError>,
    {
        let shared = self.shared.clone();
        let service = layer_errors::AnswerErrors::new(layer.layer(self));
        Self {
            shared,
            service: BoxCloneSyncService::new(service),
        }
    }
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("config", &self.shared.config)
            .field("limits", &self.shared.per_session)
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
    type Future = <BoxedService as Service<Request<RequestBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.service
            .call(request.map(|body| body.map_err(Into::into).boxed_unsync()))
    }
}

fn respond(error: ApiError) -> Response<ResponseBody> {
    error_response(error).map(box_body)
}

/// The response for `error`, tagged with the turn outcome it stands for (see [`outcome`]).
fn error_response(error: ApiError) -> Response<Full<Bytes>> {
    let outcome = outcome::outcome_of(&error);
    let mut response = error.into_response();
    response.extensions_mut().insert(outcome);
    response
}

fn full(body: impl Into<Bytes>) -> ResponseBody {
    box_body(Full::new(body.into()))
}

fn box_body<B>(body: B) -> ResponseBody
where
    B: Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    body.map_err(|never| match never {}).boxed_unsync()
}

/// A turn refused, or ended, because the bridge is shutting down.
fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "shutting_down",
        "the bridge is shutting down",
    )
}

/// A reply stream that stopped without saying the answer was complete.
fn broken_off() -> BackendError {
    BackendError::failed("the agent's reply ended before it was complete")
}
