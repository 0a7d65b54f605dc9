//! A JSON-RPC 2.0 connection to an agent over its standard input and output, one message a line, as ACP
//! runs it.
//!
//! Our requests get ids of their own and their answers come back through [`Call`]s. What the agent starts
//! (notifications, and requests it waits on) goes, during a turn ([`Connection::begin_turn`]), to
//! [`Connection::incoming`] in order, for the turn to handle; a request the agent sends there must be
//! answered ([`Connection::respond`]). Outside a turn the reader answers requests itself ([`decline`]) and
//! drops notifications (a loaded session's replay, late updates), so the agent never waits on nobody.
//!
//! Writing never blocks the caller: lines go to a writer task, so an agent that stops reading its input
//! cannot keep a turn from seeing its cancellation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};
use synthesis_bridge::SessionKey;
use synthesis_bridge::spawner::{OutputLines, ProcessHandle, ProcessStdout};
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
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, CallError>>>>>;

/// The bridge's side of the connection.
pub(crate) struct Connection {
    pid: u32,
    next_id: AtomicU64,
    pending: Pending,
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    /// What the agent started during a turn, in the order it sent it. Closed once its output ends.
    pub(crate) incoming: mpsc::Receiver<Incoming>,
    in_turn: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("pid", &self.pid)
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
        let in_turn = Arc::new(AtomicBool::new(false));
        let (sender, incoming) = mpsc::channel(INCOMING_BUFFER);
        let (outgoing, lines) = mpsc::unbounded_channel();
        let pid = process.pid();
        tokio::spawn(write(process, lines, session.clone()));
        let reader = Reader {
            pending: pending.clone(),
            incoming: sender,
            outgoing: outgoing.clone(),
            in_turn: in_turn.clone(),
            closed: closed.clone(),
            session,
        };
        tokio::spawn(reader.run(stdout));
        Self {
            pid,
            next_id: AtomicU64::new(0),
            pending,
            outgoing,
            incoming,
            in_turn,
            closed,
        }
    }

    /// Sends a request; its answer comes through the returned [`Call`].
    pub(crate) fn call(&self, method: &str, params: impl Serialize) -> Call {
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
        send(
            &self.outgoing,
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        );
        Call { answer }
    }

    /// Sends a notification.
    pub(crate) fn notify(&self, method: &str, params: impl Serialize) {
        send(
            &self.outgoing,
            &json!({"jsonrpc": "2.0", "method": method, "params": params}),
        );
    }

    /// Answers the agent's request `id` with a result, or with an error `(code, message)`.
    pub(crate) fn respond(&self, id: Value, answer: Result<Value, (i64, String)>) {
        respond(&self.outgoing, id, answer);
    }

    /// From now on, what the agent starts goes to [`Connection::incoming`]; what it started before, and
    /// is still there, is declined.
    pub(crate) fn begin_turn(&mut self) {
        self.in_turn.store(true, Ordering::SeqCst);
        while let Ok(left) = self.incoming.try_recv() {
            decline(&self.outgoing, left);
        }
    }

    /// From now on, the reader answers what the agent starts.
    pub(crate) fn end_turn(&self) {
        self.in_turn.store(false, Ordering::SeqCst);
    }

    /// Whether the agent's output has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Value, CallError>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The answer to a permission request that nobody will decide: cancelled, as ACP has a client answer
/// once the prompt is cancelled.
pub(crate) fn cancelled_permission() -> Value {
    json!({"outcome": {"outcome": "cancelled"}})
}

/// The error answer to a request the bridge does not serve.
pub(crate) fn not_served(method: &str) -> (i64, String) {
    (
        METHOD_NOT_FOUND,
        format!("the bridge does not serve {method}: it offers no client capabilities"),
    )
}

/// Answers what the agent started while no turn takes it: a permission request is cancelled, any other
/// request is not served, a notification needs nothing.
fn decline(outgoing: &mpsc::UnboundedSender<Vec<u8>>, message: Incoming) {
    let Incoming::Request { id, method, .. } = message else {
        return;
    };
    debug!(%method, "declined a request outside a turn");
    let answer = if method == "session/request_permission" {
        Ok(cancelled_permission())
    } else {
        Err(not_served(&method))
    };
    respond(outgoing, id, answer);
}

fn respond(
    outgoing: &mpsc::UnboundedSender<Vec<u8>>,
    id: Value,
    answer: Result<Value, (i64, String)>,
) {
    let message = match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
        }
    };
    send(outgoing, &message);
}

/// Queues `message` for the writer. Once the agent's input is gone, nothing is sent; its output ending
/// tells the calls that wait.
fn send(outgoing: &mpsc::UnboundedSender<Vec<u8>>, message: &Value) {
    trace!(%message, "to the agent");
    let mut line = message.to_string().into_bytes();
    line.push(b'\n');
    let _ = outgoing.send(line);
}

/// Writes the queued lines to the agent's input, in order, until it is closed or every sender is gone.
async fn write(
    process: Arc<dyn ProcessHandle>,
    mut lines: mpsc::UnboundedReceiver<Vec<u8>>,
    session: SessionKey,
) {
    while let Some(line) = lines.recv().await {
        if let Err(err) = process.write(&line).await {
            debug!(%session, %err, "cannot write to the agent");
            return;
        }
    }
}

/// Reads the agent's output: answers go to their calls; what the agent starts goes to the turn, or is
/// declined outside one. At the end, every call still waiting fails as [`CallError::Closed`] and
/// `incoming` closes.
struct Reader {
    pending: Pending,
    incoming: mpsc::Sender<Incoming>,
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    in_turn: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    session: SessionKey,
}

impl Reader {
    async fn run(self, stdout: ProcessStdout) {
        let session = &self.session;
        let mut lines = OutputLines::new(stdout);
        while let Some(line) = lines.next().await {
            let Ok(message) = serde_json::from_str::<Value>(line.trim()) else {
                // Agents log to standard error, but a stray line on standard output is not fatal.
                debug!(%session, line = %line.chars().take(200).collect::<String>(), "not a JSON-RPC message");
                continue;
            };
            trace!(%session, %message, "from the agent");
            match classify(message) {
                Some(Classified::Answer(id, answer)) => {
                    let waiting = self
                        .pending
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
                Some(Classified::Incoming(message)) if self.in_turn.load(Ordering::SeqCst) => {
                    if self.incoming.send(message).await.is_err() {
                        break;
                    }
                }
                Some(Classified::Incoming(message)) => decline(&self.outgoing, message),
                None => {
                    debug!(%session, "a message that is neither a request, a notification nor an answer")
                }
            }
        }
        self.closed.store(true, Ordering::Release);
        // Dropping the senders fails the calls that wait.
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        debug!(%session, "the agent's output ended");
    }
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
    // A handler that returns nothing leaves `result` out (JavaScript's `JSON.stringify` drops
    // `undefined`): that is an answer too.
    Some(Classified::Answer(
        id,
        Ok(message
            .get_mut("result")
            .map(Value::take)
            .unwrap_or(Value::Null)),
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
        let bare = classify(json!({"jsonrpc": "2.0", "id": 5}));
        assert!(matches!(bare, Some(Classified::Answer(5, Ok(Value::Null)))));
    }
}
