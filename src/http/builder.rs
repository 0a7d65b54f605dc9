//! [`BridgeBuilder`]: the turn limits, and the order of the layers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceBuilder};

use super::chat::ChatRoute;
use super::front::Front;
use super::layer_errors::AnswerErrors;
use super::prepare::ChatTurn;
use super::turns::TurnService;
use super::{Bridge, BridgeConfig, KeyOf, RequestBody, Shared};
use crate::backend::AgentBackend;
use crate::layers::concurrency::ConcurrencyPerKeyLayer;
use crate::layers::heartbeat::HeartbeatLayer;
use crate::layers::timeout::StreamTimeoutLayer;
use crate::metrics::Metrics;

/// Builds a [`Bridge`]: its turn limits and timeouts, and layers of your own around it.
///
/// The stack, outermost first:
///
/// 1. your layers around everything ([`layer`](Self::layer)), in the order added: tracing, body limits…;
/// 2. the front: routing, the API key, `/v1/models`, `/health`, `/metrics`;
/// 3. on the chat route only, your route layers ([`route_layer`](Self::route_layer)): authentication of
///    your own, quotas, request logging: whatever should wrap turns and leave health checks alone;
/// 4. the [`ChatRoute`]: reading the chat request and working out its session. It is also the one place
///    where errors from the layers below become OpenAI errors: a status and error JSON before the head, a
///    final error chunk and `[DONE]` after it;
/// 5. [`heartbeat`](crate::layers::heartbeat): an empty chunk whenever the stream is quiet. It sits
///    outside the timeouts, so heartbeats never count as the agent's output;
/// 6. [`concurrency`](crate::layers::concurrency) per session: one turn at a time (by default), the others
///    waiting in FIFO order, a bounded queue (429 when full) and the admission timeout (504);
/// 7. [`timeout`](crate::layers::timeout): the turn deadline and the idle timeout. Inside the queue, so
///    time spent waiting is not taken from the turn's deadline;
/// 8. the turn service, which runs the turn on the [`AgentBackend`].
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use synthesis_bridge::http::{Bridge, BridgeConfig, WorkspacePolicy};
/// use synthesis_bridge::MockAgentBackend;
///
/// let config = BridgeConfig::new(WorkspacePolicy::single(std::env::temp_dir()).unwrap());
/// let bridge = Bridge::builder(Arc::new(MockAgentBackend::new()), config)
///     .queue_depth(4)
///     .turn_timeout(Some(Duration::from_secs(600)))
///     .heartbeat(Some(Duration::from_secs(10)))
///     // Any tower layer: here, one that stamps every response.
///     .layer(tower::util::MapResponseLayer::new(|mut response: http::Response<_>| {
///         response.headers_mut().insert("x-served-by", http::HeaderValue::from_static("bridge"));
///         response
///     }))
///     .build();
/// # let _ = bridge;
/// ```
pub struct BridgeBuilder {
    backend: Arc<dyn AgentBackend>,
    config: BridgeConfig,
    metrics: Metrics,
    limits: Limits,
    layers: Vec<Box<dyn FnOnce(Bridge) -> Bridge + Send>>,
    route_layers: Vec<Box<dyn FnOnce(ChatRoute) -> ChatRoute + Send>>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    turns_per_session: usize,
    queue_depth: usize,
    admission_timeout: Option<Duration>,
    busy_retry_after: Duration,
    turn_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    heartbeat: Option<Duration>,
}

impl BridgeBuilder {
    /// The defaults: one turn at a time per session with 8 waiting, a 5-minute admission timeout, a
    /// 30-minute turn deadline, a 10-minute idle timeout and a heartbeat after 15 quiet seconds.
    pub fn new(backend: Arc<dyn AgentBackend>, config: BridgeConfig) -> Self {
        Self {
            backend,
            config,
            metrics: Metrics::new(),
            limits: Limits {
                turns_per_session: 1,
                queue_depth: 8,
                admission_timeout: Some(Duration::from_secs(5 * 60)),
                busy_retry_after: Duration::from_secs(10),
                turn_timeout: Some(Duration::from_secs(30 * 60)),
                idle_timeout: Some(Duration::from_secs(10 * 60)),
                heartbeat: Some(Duration::from_secs(15)),
            },
            layers: Vec::new(),
            route_layers: Vec::new(),
        }
    }

    /// Records into `metrics`, which the backend may share.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// How many turns of one session run at once (at least one).
    pub fn turns_per_session(mut self, turns: usize) -> Self {
        self.limits.turns_per_session = turns.max(1);
        self
    }

    /// How many turns of one session may wait; one more is refused with 429 and `Retry-After`.
    pub fn queue_depth(mut self, depth: usize) -> Self {
        self.limits.queue_depth = depth;
        self
    }

    /// How long a turn may wait for its session before it is refused with 504; `None`: no limit.
    pub fn admission_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.limits.admission_timeout = timeout;
        self
    }

    /// The `Retry-After` sent with a 429 for a full queue.
    pub fn busy_retry_after(mut self, retry_after: Duration) -> Self {
        self.limits.busy_retry_after = retry_after;
        self
    }

    /// The most a turn may take from its start to the end of its answer; `None`: no limit.
    pub fn turn_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.limits.turn_timeout = timeout;
        self
    }

    /// The most time the agent may go without sending anything once the answer has started; `None`: no
    /// limit. Heartbeats do not count as sending.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.limits.idle_timeout = timeout;
        self
    }

    /// How long a stream may be quiet before a heartbeat chunk is sent; `None` (or zero): never.
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.limits.heartbeat = interval.filter(|interval| !interval.is_zero());
        self
    }

    /// Adds a layer around the bridge. The first added is outermost (as with [`ServiceBuilder`]); see
    /// [`Bridge::layer`] for what it may be.
    pub fn layer<L, B, E>(mut self, layer: L) -> Self
    where
        L: Layer<Bridge> + Send + 'static,
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
        self.layers
            .push(Box::new(move |bridge| bridge.layer(layer)));
        self
    }

    /// Adds a layer around the chat route only, inside the routing and the bridge's API key, outside the
    /// reading of the request: like axum's `route_layer`, it sees every chat turn and nothing else, so an
    /// authentication layer of your own leaves `/health` and `/metrics` to the machine's probes. The
    /// first added is outermost. An error from the layer is answered as an OpenAI error (500, or 504 for a
    /// timeout).
    pub fn route_layer<L, B, E>(mut self, layer: L) -> Self
    where
        L: Layer<ChatRoute> + Send + 'static,
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
        self.route_layers.push(Box::new(move |route| {
            ChatRoute::boxed(AnswerErrors::new(layer.layer(route)))
        }));
        self
    }

    /// Assembles the stack.
    pub fn build(self) -> Bridge {
        let limits = self.limits;
        let key_of: KeyOf = |request: &Request<ChatTurn>| Some(request.body().session.clone());
        let per_session = ConcurrencyPerKeyLayer::new(key_of)
            .max_in_flight(limits.turns_per_session)
            .queue_depth(limits.queue_depth)
            .admission_timeout(limits.admission_timeout)
            .retry_after(limits.busy_retry_after);
        let shared = Arc::new(Shared {
            config: self.config,
            backend: self.backend,
            metrics: self.metrics,
            shutdown: Default::default(),
            per_session: per_session.clone(),
            heartbeats: limits.heartbeat.is_some(),
        });
        let turns = ServiceBuilder::new()
            // Without heartbeats the turn service asks for none, and the layer passes responses through.
            .layer(HeartbeatLayer::new(
                limits.heartbeat.unwrap_or(Duration::MAX),
            ))
            .layer(per_session)
            .layer(
                StreamTimeoutLayer::new()
                    .deadline(limits.turn_timeout)
                    .idle(limits.idle_timeout),
            )
            .service(TurnService::new(shared.clone()));
        let mut chat = ChatRoute::new(shared.clone(), turns);
        // Applied innermost first, so that the first added ends up outermost.
        for wrap in self.route_layers.into_iter().rev() {
            chat = wrap(chat);
        }
        let mut bridge = Bridge {
            shared: shared.clone(),
            service: BoxCloneSyncService::new(Front::new(shared, chat)),
        };
        // Applied innermost first, so that the first added ends up outermost.
        for wrap in self.layers.into_iter().rev() {
            bridge = wrap(bridge);
        }
        bridge
    }
}

impl fmt::Debug for BridgeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeBuilder")
            .field("config", &self.config)
            .field("limits", &self.limits)
            .field("layers", &self.layers.len())
            .field("route_layers", &self.route_layers.len())
            .finish_non_exhaustive()
    }
}
