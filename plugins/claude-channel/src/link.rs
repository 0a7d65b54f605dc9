//! The plugin's WebSocket connection to the bridge: hello, inbound messages in, reply frames out, the
//! client's tool calls out and their results in, and a reconnect with backoff whenever the connection is
//! lost, unless the bridge refused or stopped this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use synthesis_bridge::transport::InboundMessage;
use synthesis_claude_channel_protocol::{BridgeFrame, PluginFrame, close};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tracing::{debug, info, warn};

use crate::ChannelConfig;

/// How long the bridge may take to acknowledge a `hello`.
const HELLO_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A frame on its way to the bridge, and who waits to hear that it was written.
#[derive(Debug)]
struct Outgoing {
    frame: PluginFrame,
    /// The connection it was meant for: a frame must not reach the bridge on a later connection, after
    /// the bridge has failed the turn it belonged to.
    connection: u64,
    written: oneshot::Sender<Result<(), String>>,
}

/// A handle on the connection task; clones share it.
#[derive(Debug, Clone)]
pub(crate) struct BridgeLink {
    outgoing: mpsc::Sender<Outgoing>,
    /// The number of the connection that is up, if one is.
    connected: watch::Receiver<Option<u64>>,
    calls: Calls,
    task: Arc<AbortHandle>,
}

/// The client's result for a tool call: its text, and whether the call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolOutcome {
    pub(crate) content: String,
    pub(crate) is_error: bool,
}

/// The tool calls sent to the bridge that wait for their result, by id. A connection that ends drops
/// them: the bridge fails the turn they belonged to, and no result comes for them on a later connection.
type Calls = Arc<Mutex<HashMap<String, oneshot::Sender<ToolOutcome>>>>;

fn lock(calls: &Calls) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<ToolOutcome>>> {
    calls.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a frame did not reach the bridge.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("the bridge did not take it within {0:?}")]
    Unreachable(Duration),
    #[error("the connection to the bridge was lost: {0}")]
    Lost(String),
}

impl BridgeLink {
    /// Starts connecting to the bridge; every `inbound` message goes to `inbound`.
    pub(crate) fn start(
        config: ChannelConfig,
        inbound: mpsc::UnboundedSender<InboundMessage>,
    ) -> Self {
        let (outgoing, outgoing_rx) = mpsc::channel(64);
        let (connected_tx, connected) = watch::channel(None);
        let calls = Calls::default();
        let ends = Ends {
            inbound,
            calls: calls.clone(),
        };
        let task = tokio::spawn(run(config, ends, outgoing_rx, connected_tx));
        Self {
            outgoing,
            connected,
            calls,
            task: Arc::new(task.abort_handle()),
        }
    }

    /// Sends the client's tool call `id` (within `wait`, as [`send`](Self::send)) and waits for its
    /// result, however long the client takes.
    pub(crate) async fn call_tool(
        &self,
        id: String,
        name: String,
        arguments: serde_json::Value,
        wait: Duration,
    ) -> Result<ToolOutcome, SendError> {
        let (answer, outcome) = oneshot::channel();
        lock(&self.calls).insert(id.clone(), answer);
        // However the wait ends, the call is not waited on any more.
        let _forget = Forget {
            calls: &self.calls,
            id: &id,
        };
        let frame = PluginFrame::ToolCall {
            id: id.clone(),
            name,
            arguments,
        };
        self.send(frame, wait).await?;
        outcome.await.map_err(|_| {
            SendError::Lost("the connection dropped before the result came".to_owned())
        })
    }

    /// Sends `frame` once the bridge is reachable and returns when it has been written to the socket, all
    /// within `wait`.
    pub(crate) async fn send(&self, frame: PluginFrame, wait: Duration) -> Result<(), SendError> {
        let ended = || SendError::Lost("the connection task ended".to_owned());
        let exchange = async {
            let mut connected = self.connected.clone();
            let connection = connected
                .wait_for(Option::is_some)
                .await
                .map_err(|_| ended())?
                .expect("waited for a connection");
            let (written, result) = oneshot::channel();
            let outgoing = Outgoing {
                frame,
                connection,
                written,
            };
            self.outgoing.send(outgoing).await.map_err(|_| ended())?;
            match result.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => Err(SendError::Lost(reason)),
                Err(_) => Err(ended()),
            }
        };
        tokio::time::timeout(wait, exchange)
            .await
            .unwrap_or(Err(SendError::Unreachable(wait)))
    }

    /// Closes the connection for good.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

/// Removes a tool call from the waiting ones when its wait ends.
struct Forget<'a> {
    calls: &'a Calls,
    id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.calls).remove(self.id);
    }
}

/// Where what the bridge sends goes: messages to the pusher, tool results to the calls waiting for them.
struct Ends {
    inbound: mpsc::UnboundedSender<InboundMessage>,
    calls: Calls,
}

/// How one connection ended.
enum Ended {
    /// Try again after a pause.
    Lost { reason: String, was_up: bool },
    /// Do not reconnect: the bridge ended this process's registration, another connection took over, or
    /// nobody is left to hand messages to.
    Final(String),
}

async fn run(
    config: ChannelConfig,
    ends: Ends,
    mut outgoing: mpsc::Receiver<Outgoing>,
    connected: watch::Sender<Option<u64>>,
) {
    let mut backoff = config.reconnect_min;
    let mut failures = 0_u32;
    for number in 0_u64.. {
        let ended = connection(number, &config, &ends, &mut outgoing, &connected).await;
        connected.send_replace(None);
        // Their results would have come on this connection.
        lock(&ends.calls).clear();
        // Frames queued for a connection that is gone would reach the bridge late, after it failed their
        // turn: tell their senders instead.
        while let Ok(pending) = outgoing.try_recv() {
            let _ = pending
                .written
                .send(Err("the bridge connection dropped".to_owned()));
        }
        match ended {
            Ended::Final(reason) => {
                info!(session = %config.session, %reason, "not reconnecting to the bridge");
                return;
            }
            Ended::Lost { reason, was_up } => {
                if was_up {
                    backoff = config.reconnect_min;
                    failures = 0;
                }
                failures += 1;
                // The first failure is news; a bridge that stays away is not, each time.
                if failures == 1 {
                    warn!(session = %config.session, %reason, retry_in = ?backoff, "lost the bridge connection; reconnecting");
                } else {
                    debug!(session = %config.session, %reason, retry_in = ?backoff, "still no bridge connection");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.reconnect_max);
    }
}

async fn connection(
    number: u64,
    config: &ChannelConfig,
    ends: &Ends,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    connected: &watch::Sender<Option<u64>>,
) -> Ended {
    let lost = |reason: String, was_up: bool| Ended::Lost { reason, was_up };
    // No Nagle: a reply is a small frame that must leave at once, not wait for the bridge's ACK.
    let connecting =
        tokio_tungstenite::connect_async_with_config(config.ws_url.as_str(), None, true);
    let mut socket = match connecting.await {
        Ok((socket, _)) => socket,
        Err(error) => {
            return lost(
                format!("cannot connect to {}: {error}", config.ws_url),
                false,
            );
        }
    };
    let hello = PluginFrame::Hello {
        pid: Some(std::process::id()),
        openclaw_session: config.session.clone(),
        token: Some(config.token.clone()),
    };
    if let Err(error) = socket.send(Message::text(hello.to_text())).await {
        return lost(format!("cannot send the hello: {error}"), false);
    }
    let mut up = false;
    let hello_deadline = tokio::time::sleep(HELLO_ACK_TIMEOUT);
    tokio::pin!(hello_deadline);
    loop {
        tokio::select! {
            message = socket.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => return closed_by_bridge(frame, up),
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return lost(error.to_string(), up),
                    None => return lost("the bridge closed the connection".to_owned(), up),
                };
                match serde_json::from_str::<BridgeFrame>(text.as_str()) {
                    Ok(BridgeFrame::HelloAck) => {
                        up = true;
                        connected.send_replace(Some(number));
                        info!(session = %config.session, url = %config.ws_url, "connected to the bridge");
                    }
                    Ok(BridgeFrame::Inbound(message)) => {
                        debug!(session = %config.session, message_id = %message.meta.message_id, "inbound message");
                        if ends.inbound.send(message).is_err() {
                            return Ended::Final("the MCP session is over".to_owned());
                        }
                    }
                    Ok(BridgeFrame::ToolResult { id, content, is_error }) => {
                        debug!(session = %config.session, call = %id, is_error, "a tool result");
                        match lock(&ends.calls).remove(&id) {
                            Some(waiting) => {
                                let _ = waiting.send(ToolOutcome { content, is_error });
                            }
                            None => debug!(session = %config.session, call = %id, "a result for a call nobody waits on"),
                        }
                    }
                    Ok(BridgeFrame::Ping) => {
                        if let Err(error) = socket.send(Message::text(PluginFrame::Pong.to_text())).await {
                            return lost(format!("cannot answer a ping: {error}"), up);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => warn!(session = %config.session, %error, "ignored a frame the bridge sent"),
                }
            }
            pending = outgoing.recv(), if up => {
                let Some(pending) = pending else {
                    return Ended::Final("the MCP session is over".to_owned());
                };
                if pending.connection != number {
                    let _ = pending.written.send(Err("the bridge connection dropped".to_owned()));
                    continue;
                }
                let written = socket.send(Message::text(pending.frame.to_text())).await;
                let failure = written.as_ref().err().map(ToString::to_string);
                let _ = pending.written.send(written.map_err(|error| error.to_string()));
                if let Some(error) = failure {
                    return lost(format!("cannot send a frame: {error}"), up);
                }
            }
            () = &mut hello_deadline, if !up => {
                return lost(format!("the bridge did not acknowledge the hello within {HELLO_ACK_TIMEOUT:?}"), false);
            }
        }
    }
}

fn closed_by_bridge(frame: Option<CloseFrame>, was_up: bool) -> Ended {
    let Some(frame) = frame else {
        return Ended::Lost {
            reason: "the bridge closed the connection".to_owned(),
            was_up,
        };
    };
    let reason = format!("closed by the bridge: {} ({})", frame.reason, frame.code);
    // Refused (expected hello, wrong token: a restarted bridge does not know this process), replaced or
    // stopped: trying again cannot help.
    match u16::from(frame.code) {
        close::EXPECTED_HELLO
        | close::REPLACED
        | close::UNAUTHORIZED
        | close::REGISTRATION_ENDED => Ended::Final(reason),
        _ => Ended::Lost { reason, was_up },
    }
}
