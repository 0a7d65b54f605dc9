//! A scripted stand-in for the Anthropic Messages API, so that tests can drive the real Claude Code CLI
//! without a model or a network.
//!
//! Point the CLI at it with `ANTHROPIC_BASE_URL=`[`MockAnthropic::base_url`] and any
//! `ANTHROPIC_API_KEY`. It answers `POST /v1/messages` (streamed as server-sent events when the request
//! asks for it) as [`script::answer`] decides, and records every request so that a test can look at the
//! conversation history the CLI sent. For agents on OpenAI's models it also answers `POST /v1/responses`
//! (Codex's wire API; [`responses`]) with the same script, for plain text.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let api = synthesis_mock_anthropic::MockAnthropic::start().await?;
//! assert!(api.base_url().starts_with("http://127.0.0.1:"));
//! assert!(api.requests().is_empty());
//! # Ok(())
//! # }
//! ```

pub mod responses;
pub mod script;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use script::Block;

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// The JSON body (`null` when it was not JSON).
    pub body: Value,
    /// What the mock answered (nothing for a scripted API error).
    pub answer: Vec<Block>,
    /// When it arrived.
    pub received_at: std::time::SystemTime,
}

impl RecordedRequest {
    /// The newest prompt of the request's history: a `<channel>` message, or the user's plain text when
    /// Claude Code is not on the bridge's channel.
    pub fn prompt(&self) -> Option<script::ChannelMessage> {
        if self.is_responses() {
            return responses::prompts(&self.body).pop();
        }
        script::newest_prompt(&self.body)
    }

    /// Whether it came to the Responses API.
    fn is_responses(&self) -> bool {
        self.path.starts_with("/v1/responses")
    }

    /// The last text block of the request's system prompt: Claude Code ends it with what
    /// `--append-system-prompt` adds to its own.
    pub fn system_tail(&self) -> Option<String> {
        self.body["system"]
            .as_array()?
            .iter()
            .rev()
            .find_map(|block| block["text"].as_str())
            .map(str::to_owned)
    }

    /// Every prompt of the request's history, oldest first, as [`RecordedRequest::prompt`].
    pub fn prompts(&self) -> Vec<script::ChannelMessage> {
        if self.is_responses() {
            return responses::prompts(&self.body);
        }
        script::prompts(&self.body)
    }

    /// Every `<channel>` message in the request's history, oldest first.
    pub fn channel_messages(&self) -> Vec<script::ChannelMessage> {
        let mut found = Vec::new();
        for message in self.body["messages"].as_array().into_iter().flatten() {
            for block in script::content_blocks(&message["content"]) {
                if let Some(text) = block["text"].as_str() {
                    found.extend(script::channel_messages(text));
                }
            }
        }
        found
    }
}

/// The running mock; it stops when dropped.
#[derive(Debug)]
pub struct MockAnthropic {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    server: JoinHandle<()>,
}

impl MockAnthropic {
    /// Starts the mock on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(accept(listener, requests.clone()));
        Ok(Self {
            addr,
            requests,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`, the value for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .expect("never poisoned: no panics under the lock")
            .clone()
    }
}

impl Drop for MockAnthropic {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn accept(listener: TcpListener, requests: Arc<Mutex<Vec<RecordedRequest>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely: give connections in flight a moment to finish.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, requests.clone()));
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "mock API connection ended");
            }
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_owned(), ToString::to_string);
    let body = match request.into_body().collect().await {
        Ok(collected) => serde_json::from_slice(&collected.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let route = path.split('?').next().unwrap_or_default();
    let response = match route {
        "/v1/messages/count_tokens" => json_response(&json!({"input_tokens": 10})),
        "/v1/messages" => {
            let failure = script::failure(&body);
            let answer = match failure {
                Some(_) => Vec::new(),
                None => script::answer(&body),
            };
            let delay = script::delay(&body);
            record(&requests, path, &body, answer.clone());
            tokio::time::sleep(delay).await;
            if let Some(message) = failure {
                let error = json!({"type": "error",
                                   "error": {"type": "invalid_request_error", "message": message}});
                let mut response = json_response(&error);
                *response.status_mut() = StatusCode::BAD_REQUEST;
                response
            } else if body["stream"] == true {
                sse_response(&body, &answer)
            } else {
                json_response(&message(&body, &answer))
            }
        }
        "/v1/responses" => {
            let failure = responses::failure(&body);
            let text = responses::answer(&body);
            let delay = responses::delay(&body);
            record(&requests, path, &body, vec![Block::Text(text.clone())]);
            tokio::time::sleep(delay).await;
            match failure {
                Some(message) => {
                    let error = json!({"error": {"type": "invalid_request_error", "code": null,
                                                 "message": message, "param": null}});
                    let mut response = json_response(&error);
                    *response.status_mut() = StatusCode::BAD_REQUEST;
                    response
                }
                None => Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .header(header::CACHE_CONTROL, "no-cache")
                    .body(Full::new(Bytes::from(responses::stream(&text))))
                    .expect("a valid response"),
            }
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"type":"error","error":{"type":"not_found_error","message":"not found"}}"#,
            )))
            .expect("a valid response"),
    };
    Ok(response)
}

/// Records a request on arrival, before any scripted stall, so that a test can act while the model stalls.
fn record(requests: &Mutex<Vec<RecordedRequest>>, path: String, body: &Value, answer: Vec<Block>) {
    requests
        .lock()
        .expect("never poisoned: no panics under the lock")
        .push(RecordedRequest {
            path,
            body: body.clone(),
            answer,
            received_at: std::time::SystemTime::now(),
        });
}

fn json_response(value: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("a valid response")
}

fn stop_reason(answer: &[Block]) -> &'static str {
    if answer
        .iter()
        .any(|block| matches!(block, Block::ToolUse { .. }))
    {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn usage(output_tokens: u32) -> Value {
    json!({"input_tokens": 10, "output_tokens": output_tokens,
           "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
}

fn block_json(block: &Block) -> Value {
    match block {
        Block::Text(text) => json!({"type": "text", "text": text}),
        Block::ToolUse { id, name, input } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
    }
}

/// The whole answer as one (non-streamed) message.
fn message(request: &Value, answer: &[Block]) -> Value {
    json!({
        "id": format!("msg_{}", uuid::Uuid::new_v4().simple()),
        "type": "message",
        "role": "assistant",
        "model": request["model"].as_str().unwrap_or("claude-mock"),
        "content": answer.iter().map(block_json).collect::<Vec<_>>(),
        "stop_reason": stop_reason(answer),
        "stop_sequence": null,
        "usage": usage(5),
    })
}

/// The answer as the Messages API streams it: `message_start`, a start/delta/stop triple per block,
/// `message_delta` with the stop reason, `message_stop`.
fn sse_response(request: &Value, answer: &[Block]) -> Response<Full<Bytes>> {
    let mut events = String::new();
    let mut event = |name: &str, data: Value| {
        let _ = write!(events, "event: {name}\ndata: {data}\n\n");
    };
    let mut start = message(request, &[]);
    start["stop_reason"] = Value::Null;
    start["usage"] = usage(1);
    event(
        "message_start",
        json!({"type": "message_start", "message": start}),
    );
    for (index, block) in answer.iter().enumerate() {
        let (opening, delta) = match block {
            Block::Text(text) => (
                json!({"type": "text", "text": ""}),
                script::text_deltas(text)
                    .into_iter()
                    .map(|delta| json!({"type": "text_delta", "text": delta}))
                    .collect(),
            ),
            Block::ToolUse { id, name, input } => (
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                vec![json!({"type": "input_json_delta", "partial_json": input.to_string()})],
            ),
        };
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": opening}),
        );
        for delta in delta {
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            );
        }
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
    }
    event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason(answer), "stop_sequence": null},
               "usage": {"output_tokens": 5}}),
    );
    event("message_stop", json!({"type": "message_stop"}));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Full::new(Bytes::from(events)))
        .expect("a valid response")
}
