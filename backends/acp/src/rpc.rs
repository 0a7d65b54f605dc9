//! A JSON-RPC 2.0 connection to an agent over its standard input and output, one message a line, as ACP
//! runs it.
//!
//! Our requests get ids of their own and their answers come back through [`Call`]s. Everything the agent
//! starts (notifications, and requests it waits on) arrives in [`Connection::incoming`], in order, for the
//! one turn or setup step that holds the agent to handle; a request the agent sends must be answered
//! ([`Connection::respond`]), or it waits for ever.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};
use synthesis_bridge::SessionKey;
use synthesis_bridge::spawner::{ProcessHandle, ProcessStdout};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace};

/// How many messages from the agent wait for the turn to take them before the reader holds back (and the
/// agent with it).
const INCOMING_BUFFER: usize = 256;

/// JSON-RPC's code for a method the receiver does not serve.
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;

/// A message the agent started.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// Needs no answer (`session/update`).
    Notification { method: String, params: Value },
    /// Waits for an answer under `id` (`session/request_permission`, `fs/…`, `terminal/…`).
    Request {
        id: Value,
        method: String,
        params: Value,
    },
}

/// Why a call got no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum CallError {
    /// The agent answered with a JSON-RPC error.
    #[error("{message} (JSON-RPC error {code}{})", data.as_ref().map(|data| format!(", {data}")).unwrap_or_default())]
    Rpc {
        code: i64,
        message: String,
        data: Option<Value>,
    },
    /// The agent's output ended first: it exited or closed it.
    #[error("the agent's output ended before it answered")]
    Closed,
    /// The request could not be written: the agent's input is closed.
    #[error("cannot write to the agent: {0}")]
    Write(String),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, CallError>>>>>;

/// The bridge's side of the connection.
pub(crate) struct Connection {
    process: Arc<dyn ProcessHandle>,
    next_id: AtomicU64,
    pending: Pending,
    /// What the agent started, in the order it sent it. Closed once its output ends.
    pub(crate) incoming: mpsc::Receiver<Incoming>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("pid", &self.process.pid())
            .finish_non_exhaustive()
    }
}

/// The answer to one request, once it comes.
#[derive(Debug)]
pub(crate) struct Call {
    answer: oneshot::Receiver<Result<Value, CallError>>,
}

impl Call {
    /// Waits for the answer.
    pub(crate) async fn answer(&mut self) -> Result<Value, CallError> {
        (&mut self.answer).await.unwrap_or(Err(CallError::Closed))
    }
}

impl Connection {
    /// Connects to `process`, reading `stdout` until it ends.
    pub(crate) fn new(
        process: Arc<dyn ProcessHandle>,
        stdout: ProcessStdout,
        session: SessionKey,
    ) -> Self {
        let pending = Pending::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (sender, incoming) = mpsc::channel(INCOMING_BUFFER);
        tokio::spawn(read(
            stdout,
            pending.clone(),
            sender,
            closed.clone(),
            session,
        ));
        Self {
            process,
            next_id: AtomicU64::new(0),
            pending,
            incoming,
            closed,
        }
    }

    /// Sends a request; its answer comes through the returned [`Call`].
    pub(crate) async fn call(&self, method: &str, params: impl Serialize) -> Call {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, answer) = oneshot::channel();
        self.lock_pending().insert(id, sender);
        // Checked after the call is registered: the reader, once closed, fails every call registered
        // before it cleared them, and this one sees it closed.
        if self.is_closed()
            && let Some(sender) = self.lock_pending().remove(&id)
        {
            let _ = sender.send(Err(CallError::Closed));
        }
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if let Err(err) = self.write(&message).await
            && let Some(sender) = self.lock_pending().remove(&id)
        {
            let _ = sender.send(Err(CallError::Write(err.to_string())));
        }
        Call { answer }
    }

    /// Sends a notification.
    pub(crate) async fn notify(&self, method: &str, params: impl Serialize) -> std::io::Result<()> {
        self.write(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }

    /// Answers the agent's request `id` with a result, or with an error `(code, message)`.
    pub(crate) async fn respond(&self, id: Value, answer: Result<Value, (i64, String)>) {
        let message = match answer {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err((code, message)) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
            }
        };
        if let Err(err) = self.write(&message).await {
            debug!(%err, "cannot answer the agent's request");
        }
    }

    /// Whether the agent's output has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    async fn write(&self, message: &Value) -> std::io::Result<()> {
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        trace!(message = %message, "to the agent");
        self.process.write(&line).await
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Value, CallError>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads the agent's output: answers go to their calls, the rest to `incoming`. At the end, every call
/// still waiting fails as [`CallError::Closed`] and `incoming` closes.
async fn read(
    stdout: ProcessStdout,
    pending: Pending,
    incoming: mpsc::Sender<Incoming>,
    closed: Arc<AtomicBool>,
    session: SessionKey,
) {
    let mut stdout = BufReader::new(stdout);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        match stdout.read_until(b'\n', &mut bytes).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) => {
                debug!(%session, %err, "cannot read the agent's output");
                break;
            }
        }
        let line = String::from_utf8_lossy(&bytes);
        let Ok(message) = serde_json::from_str::<Value>(line.trim()) else {
            // Agents log to standard error, but a stray line on standard output is not fatal.
            debug!(%session, line = %line.chars().take(200).collect::<String>(), "not a JSON-RPC message");
            continue;
        };
        trace!(%session, %message, "from the agent");
        match classify(message) {
            Some(Classified::Answer(id, answer)) => {
                let waiting = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                match waiting {
                    Some(call) => {
                        let _ = call.send(answer);
                    }
                    None => debug!(%session, id, "an answer to no request"),
                }
            }
            Some(Classified::Incoming(message)) => {
                if incoming.send(message).await.is_err() {
                    break;
                }
            }
            None => {
                debug!(%session, "a message that is neither a request, a notification nor an answer")
            }
        }
    }
    closed.store(true, Ordering::Release);
    // Dropping the senders fails the calls that wait.
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
    debug!(%session, "the agent's output ended");
}

enum Classified {
    Answer(u64, Result<Value, CallError>),
    Incoming(Incoming),
}

fn classify(mut message: Value) -> Option<Classified> {
    let params = message
        .get_mut("params")
        .map(Value::take)
        .unwrap_or(Value::Null);
    if let Some(method) = message["method"].as_str().map(str::to_owned) {
        return Some(Classified::Incoming(match message.get_mut("id") {
            Some(id) if !id.is_null() => Incoming::Request {
                id: id.take(),
                method,
                params,
            },
            _ => Incoming::Notification { method, params },
        }));
    }
    // Our ids are numbers; an answer to anything else is not ours.
    let id = message["id"].as_u64()?;
    if let Some(error) = message.get("error") {
        return Some(Classified::Answer(
            id,
            Err(CallError::Rpc {
                code: error["code"].as_i64().unwrap_or_default(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
                data: error.get("data").cloned(),
            }),
        ));
    }
    Some(Classified::Answer(
        id,
        Ok(message.get_mut("result")?.take()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_told_apart() {
        let notification =
            classify(json!({"jsonrpc": "2.0", "method": "session/update", "params": {"a": 1}}));
        assert!(matches!(
            notification,
            Some(Classified::Incoming(Incoming::Notification { method, params })) if method == "session/update" && params == json!({"a": 1})
        ));
        // Agents number their own requests from 0 too: a request is told apart by its method.
        let request = classify(
            json!({"jsonrpc": "2.0", "id": 0, "method": "session/request_permission", "params": {}}),
        );
        assert!(matches!(
            request,
            Some(Classified::Incoming(Incoming::Request { id, .. })) if id == json!(0)
        ));
        let answer =
            classify(json!({"jsonrpc": "2.0", "id": 3, "result": {"stopReason": "end_turn"}}));
        assert!(
            matches!(answer, Some(Classified::Answer(3, Ok(result))) if result["stopReason"] == "end_turn")
        );
        let error = classify(
            json!({"jsonrpc": "2.0", "id": 4, "error": {"code": -32603, "message": "Internal error", "data": "boom"}}),
        );
        let Some(Classified::Answer(4, Err(error))) = error else {
            panic!("not an error answer");
        };
        assert_eq!(
            error.to_string(),
            "Internal error (JSON-RPC error -32603, \"boom\")"
        );
        assert!(classify(json!({"jsonrpc": "2.0", "id": "theirs", "result": {}})).is_none());
    }
}
