//! Test fixtures for synthesis-bridge and its backends: a bridge served on 127.0.0.1:0 ([`TestServer`]), a
//! backend the test plays turn by turn ([`ScriptedBackend`]), a plain HTTP client with OpenAI's shapes
//! ([`chat_request`], [`SseReader`], [`expect_error`]), and the example programs built beside the tests
//! ([`examples::binary`]).
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod examples;
pub mod fake_claude;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use synthesis_bridge::http::{Bridge, BridgeConfig, WorkspacePolicy};
use synthesis_bridge::{AgentBackend, BackendError, BackendStatus, ReplyEvent, ReplyStream, Turn};
use tokio::sync::mpsc;

/// Fails a test that would otherwise hang.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A backend whose turns the test plays by hand: each `run_turn` hands the test the turn and a sender for
/// its reply events.
pub struct ScriptedBackend {
    turns: mpsc::UnboundedSender<ScriptedTurn>,
    running: AtomicUsize,
}

pub struct ScriptedTurn {
    pub turn: Turn,
    pub events: mpsc::Sender<ReplyEvent>,
}

impl ScriptedBackend {
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<ScriptedTurn>) {
        let (turns, receiver) = mpsc::unbounded_channel();
        (
            Arc::new(Self {
                turns,
                running: AtomicUsize::new(0),
            }),
            receiver,
        )
    }
}

#[async_trait]
impl AgentBackend for ScriptedBackend {
    async fn run_turn(&self, turn: Turn) -> Result<ReplyStream, BackendError> {
        let (events, mut receiver) = mpsc::channel(16);
        self.running.fetch_add(1, Ordering::SeqCst);
        self.turns
            .send(ScriptedTurn { turn, events })
            .map_err(|_| BackendError::unavailable("the test stopped listening"))?;
        Ok(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed())
    }

    async fn shutdown(&self) {}

    fn status(&self) -> BackendStatus {
        BackendStatus::new(1, self.running.load(Ordering::SeqCst), 0)
    }
}

/// A bridge serving on an ephemeral loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub bridge: Bridge,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(backend: Arc<dyn AgentBackend>, config: BridgeConfig) -> Self {
        Self::serve(Bridge::new(backend, config)).await
    }

    /// Serves `bridge`, however it was built.
    pub async fn serve(bridge: Bridge) -> Self {
        let listener = synthesis_bridge::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = bridge.clone();
        let task = tokio::spawn(synthesis_bridge::server::serve(
            listener,
            service,
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        Self {
            addr,
            bridge,
            stop: Some(stop),
            task,
        }
    }

    /// Stops accepting, like the binary on SIGTERM, and waits for the server to wind down.
    pub async fn shut_down(mut self) {
        self.bridge.begin_shutdown();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// Sends one request on a fresh connection and returns the response with its body still streaming.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        send_to(self.addr, request)
            .await
            .expect("a response in time")
    }

    /// POSTs `body` as JSON to the chat endpoint.
    pub async fn chat(&self, body: serde_json::Value) -> Response<Incoming> {
        self.send(chat_request(body)).await
    }
}

/// Sends one request to `addr` on a fresh connection; `None` if no response head came in time.
pub async fn send_to<B>(addr: SocketAddr, request: Request<B>) -> Option<Response<Incoming>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .ok()?;
    Some(response.unwrap())
}

pub fn chat_request(body: serde_json::Value) -> Request<Full<Bytes>> {
    chat_request_builder()
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

pub fn chat_request_builder() -> http::request::Builder {
    Request::post("/v1/chat/completions")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
}

/// A config whose only workspace root is `root`.
pub fn config_in(root: &Path) -> BridgeConfig {
    BridgeConfig::new(WorkspacePolicy::single(root).unwrap())
}

/// A minimal chat body for `user`.
pub fn simple_body(user: &str, text: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "claude",
        "stream": stream,
        "user": user,
        "messages": [{"role": "user", "content": text}],
    })
}

pub async fn body_bytes(response: Response<Incoming>) -> Bytes {
    tokio::time::timeout(PATIENCE, response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes()
}

pub async fn body_json(response: Response<Incoming>) -> serde_json::Value {
    let bytes = body_bytes(response).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

/// Asserts an OpenAI-shaped error with `status` and `code` and returns its message.
pub async fn expect_error(response: Response<Incoming>, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let json = body_json(response).await;
    let error = &json["error"];
    assert_eq!(error["code"], code, "{json}");
    assert!(error["type"].is_string(), "{json}");
    error["message"].as_str().expect("a message").to_owned()
}

/// Reads server-sent events from a streaming body, one `data:` payload at a time.
pub struct SseReader {
    body: Incoming,
    buffer: String,
}

impl SseReader {
    pub fn new(response: Response<Incoming>) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next event's data, or `None` at the end of the body.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data = event
                    .trim_end()
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data event: {event:?}"));
                return Some(data.to_owned());
            }
            match tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("an event in time")
            {
                Some(frame) => {
                    if let Ok(data) = frame.unwrap().into_data() {
                        self.buffer.push_str(std::str::from_utf8(&data).unwrap());
                    }
                }
                None => {
                    assert!(self.buffer.is_empty(), "trailing bytes: {:?}", self.buffer);
                    return None;
                }
            }
        }
    }

    /// The next event, parsed as a JSON chunk.
    pub async fn chunk(&mut self) -> serde_json::Value {
        let data = self.next().await.expect("another event");
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"))
    }

    /// Every remaining event.
    pub async fn rest(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}
