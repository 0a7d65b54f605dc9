//! [`ChannelTransport`]: the bridge's end of the connection to the plugin that runs inside an agent.
//!
//! The flow for one spawned agent process:
//! 1. [`ChannelTransport::register`] issues a [`ChannelTicket`]: a per-process secret that goes into the
//!    process's environment together with [`ChannelTransport::endpoint`];
//! 2. the plugin connects and authenticates with that secret; [`ChannelTransport::accept`] resolves with a
//!    [`ChannelLink`];
//! 3. the backend sends [`InboundMessage`]s and reads [`ChannelEvent`]s on the link. A plugin that
//!    reconnects with the same secret is put behind the same link, so the backend never notices;
//! 4. dropping the link (or calling [`ChannelTransport::revoke`] with the ticket) ends the registration and
//!    closes the connection.
//!
//! Transport implementations build links with [`ChannelLink::pair`] and drive the [`LinkPeer`] half.
//!
//! # Example
//!
//! The backend's side of one exchange, over an in-process pair standing in for a real connection:
//!
//! ```
//! use synthesis_bridge::transport::{ChannelEvent, ChannelLink, InboundMessage, ReplyFrame, ToPlugin};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (mut link, mut peer) = ChannelLink::pair(8);
//! link.send(InboundMessage::new("agent::chat", "hello")).await.unwrap();
//!
//! // The transport forwards the message to the plugin and relays its answer.
//! let Some(ToPlugin::Message(inbound)) = peer.messages.recv().await else {
//!     panic!("the message was not delivered");
//! };
//! peer.events
//!     .send(ChannelEvent::Reply(ReplyFrame::last(format!("echo: {}", inbound.content))))
//!     .await
//!     .unwrap();
//!
//! match link.recv().await {
//!     Some(ChannelEvent::Reply(frame)) => assert_eq!(frame.content, "echo: hello"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # }
//! ```

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::backend::ToolCall;
use crate::session::SessionKey;

/// A message for the agent, pushed to its plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The user's text.
    pub content: String,
    /// Where it comes from.
    pub meta: InboundMeta,
}

/// Routing data that travels with an [`InboundMessage`] (the seed's `inbound.meta`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMeta {
    /// The conversation the agent should answer to (the session key).
    pub chat_id: String,
    /// Unique per message; a reply that names it belongs to this message.
    pub message_id: String,
    /// When the bridge sent it, RFC 3339.
    pub ts: String,
    /// The earlier message this one continues: the client asked again for an answer the agent had
    /// started on and not finished (its process died, the turn was cut), so the agent carries on with
    /// that message instead of being given the question a second time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
}

impl InboundMessage {
    /// A message with a fresh id, stamped now.
    pub fn new(chat_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            meta: InboundMeta {
                chat_id: chat_id.into(),
                message_id: Uuid::new_v4().to_string(),
                ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                retry_of: None,
            },
        }
    }
}

/// What the backend hands a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToPlugin {
    /// A user message for the agent.
    Message(InboundMessage),
    /// The answer to the agent's call of one of the client's tools ([`ChannelEvent::ToolCall`]).
    ToolAnswer(ToolAnswer),
}

/// The answer to the agent's call of one of the client's tools.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolAnswer {
    /// The [`ToolCall::id`] it answers.
    pub call_id: String,
    /// The result's text, or why there is none.
    pub content: String,
    /// Whether the call failed: the client gave no result, or the turn moved on.
    pub is_error: bool,
}

impl ToolAnswer {
    /// The client's result `content` for call `call_id`.
    pub fn new(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            call_id: call_id.into(),
            content: content.into(),
            is_error: false,
        }
    }

    /// The call `call_id` failed, for the reason `why`.
    pub fn failed(call_id: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            is_error: true,
            ..Self::new(call_id, why)
        }
    }
}

/// Part or all of the agent's answer, as the plugin sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyFrame {
    /// The text.
    pub content: String,
    /// Whether this frame completes the answer.
    pub last: bool,
    /// The [`InboundMeta::message_id`] this answers, when the plugin says.
    pub message_id: Option<String>,
}

impl ReplyFrame {
    /// A frame that completes the answer.
    pub fn last(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            last: true,
            message_id: None,
        }
    }

    /// A frame with more to come.
    pub fn partial(content: impl Into<String>) -> Self {
        Self {
            last: false,
            ..Self::last(content)
        }
    }
}

/// What the plugin side of a link reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// The agent answered (in part).
    Reply(ReplyFrame),
    /// The plugin reported an error; the turn in flight has failed.
    Error {
        /// The plugin's message.
        message: String,
    },
    /// The connection was lost (closed, or no answer to pings). The plugin may reconnect with its ticket,
    /// after which the link carries on.
    Disconnected {
        /// Why, for logs and error messages.
        reason: String,
    },
    /// The plugin reconnected after a [`ChannelEvent::Disconnected`].
    Reconnected,
    /// The agent took message `message_id` up: it started working on it (an agent-side hook reported
    /// it). This is the positive sign that a pushed message was delivered; a push that never gets one was
    /// lost. A transport reports each message at most once per registration, and keeps a message that
    /// was pushed again from being taken up a second time.
    Started {
        /// The [`InboundMeta::message_id`] of the message.
        message_id: String,
    },
    /// The agent finished working on a message (an agent-side hook reported it), whether or not it
    /// answered through the plugin. A transport delivers it after every [`ChannelEvent::Reply`] the
    /// plugin sent before the agent finished, even when the report travels another way than the replies:
    /// a backend may take a report that finds no reply to mean the agent answered without the plugin.
    /// (Replies lost with a dropped connection are the exception: the report then comes after
    /// [`ChannelEvent::Disconnected`].)
    TurnEnded(TurnEnd),
    /// The agent calls one of the client's tools and waits for its [`ToolAnswer`]
    /// ([`ChannelLink::answer`]).
    ToolCall(ToolCall),
}

/// The agent's report that it finished working on a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TurnEnd {
    /// The [`InboundMeta::message_id`] of the message it finished, when the reporter could tell.
    pub message_id: Option<String>,
    /// The agent's last words in that turn: its whole answer when it answered without the plugin.
    pub last_message: Option<String>,
    /// Why the turn failed, when it did (the agent's request to its model ended in an error).
    pub error: Option<String>,
}

impl TurnEnd {
    /// A report naming the message it ends and the agent's last words.
    pub fn new(message_id: Option<String>, last_message: Option<String>) -> Self {
        Self {
            message_id,
            last_message,
            error: None,
        }
    }

    /// The same report for a turn that failed with `error`.
    pub fn failed(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

/// The credential one spawned process uses to connect back.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelTicket {
    /// The session the process serves.
    pub session: SessionKey,
    /// The secret the process presents (`SYNTHESIS_BRIDGE_TOKEN`).
    pub token: String,
}

impl ChannelTicket {
    /// A ticket with a fresh random secret.
    pub fn generate(session: SessionKey) -> Self {
        let token = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        Self { session, token }
    }
}

impl std::fmt::Debug for ChannelTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: keep it out of logs.
        f.debug_struct("ChannelTicket")
            .field("session", &self.session)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why a transport operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No plugin completed an authenticated handshake in time.
    #[error("no plugin connected for session {session} within {waited:?}")]
    ConnectTimeout {
        /// The session whose plugin was awaited.
        session: SessionKey,
        /// How long the transport waited.
        waited: Duration,
    },
    /// The ticket is unknown or was revoked.
    #[error("no registration for session {0}")]
    NotRegistered(SessionKey),
    /// The link is gone: the plugin is not connected and the registration has ended.
    #[error("the channel for this session is closed")]
    Closed,
    /// The transport itself failed (it could not listen, for instance).
    #[error("{0}")]
    Io(String),
}

/// The bridge's end of the connection to agent-side plugins.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ChannelTransport: Send + Sync + 'static {
    /// Where spawned processes connect to (`SYNTHESIS_WS_URL`), e.g. `ws://127.0.0.1:18791/bridge`.
    fn endpoint(&self) -> String;

    /// Where the agent's hooks post their reports over HTTP (message taken up, work on it over), e.g.
    /// `http://127.0.0.1:18791/hooks`, if this transport takes them. A request there names its session
    /// with the `session` query parameter and carries the process's secret as `Authorization: Bearer`.
    fn hook_endpoint(&self) -> Option<String> {
        None
    }

    /// Expects one process for `session` and issues its credential. A new registration for the same
    /// session replaces the old one, whose link is closed.
    fn register(&self, session: &SessionKey) -> ChannelTicket;

    /// Waits up to `timeout` for the plugin holding `ticket` to connect and authenticate.
    async fn accept(
        &self,
        ticket: &ChannelTicket,
        timeout: Duration,
    ) -> Result<ChannelLink, TransportError>;

    /// Ends the registration `ticket` was issued for and closes its connection, if any. A ticket that a
    /// newer registration for the same session has replaced is ignored, so tearing down an old process
    /// never cuts off its successor.
    fn revoke(&self, ticket: &ChannelTicket);
}

/// The backend's handle on one plugin connection: send messages, receive events.
#[derive(Debug)]
pub struct ChannelLink {
    messages: mpsc::Sender<ToPlugin>,
    events: mpsc::Receiver<ChannelEvent>,
    connected: watch::Receiver<bool>,
}

/// The transport's half of a [`ChannelLink`].
#[derive(Debug)]
#[non_exhaustive]
pub struct LinkPeer {
    /// What the backend wants delivered to the plugin.
    pub messages: mpsc::Receiver<ToPlugin>,
    /// Where to put what the plugin says.
    pub events: mpsc::Sender<ChannelEvent>,
    /// Whether a plugin connection is up right now.
    pub connected: watch::Sender<bool>,
}

impl ChannelLink {
    /// A connected link and its transport half, each direction buffering up to `capacity` items.
    pub fn pair(capacity: usize) -> (Self, LinkPeer) {
        let (message_tx, message_rx) = mpsc::channel(capacity);
        let (event_tx, event_rx) = mpsc::channel(capacity);
        let (connected_tx, connected_rx) = watch::channel(true);
        let link = Self {
            messages: message_tx,
            events: event_rx,
            connected: connected_rx,
        };
        let peer = LinkPeer {
            messages: message_rx,
            events: event_tx,
            connected: connected_tx,
        };
        (link, peer)
    }

    /// Hands `message` to the transport for delivery.
    pub async fn send(&self, message: InboundMessage) -> Result<(), TransportError> {
        self.deliver(ToPlugin::Message(message)).await
    }

    /// Hands the answer to a [`ChannelEvent::ToolCall`] to the transport for delivery.
    pub async fn answer(&self, answer: ToolAnswer) -> Result<(), TransportError> {
        self.deliver(ToPlugin::ToolAnswer(answer)).await
    }

    async fn deliver(&self, item: ToPlugin) -> Result<(), TransportError> {
        self.messages
            .send(item)
            .await
            .map_err(|_| TransportError::Closed)
    }

    /// The next event; `None` once the transport has dropped its half (the registration ended).
    pub async fn recv(&mut self) -> Option<ChannelEvent> {
        self.events.recv().await
    }

    /// The next event if one is waiting, without waiting for one.
    pub fn try_recv(&mut self) -> Option<ChannelEvent> {
        self.events.try_recv().ok()
    }

    /// Whether a plugin is connected right now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }
}

impl LinkPeer {
    /// Resolves when the backend has dropped its [`ChannelLink`], so the transport can close the connection.
    pub async fn closed(&self) {
        self.events.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_peer_ends_the_link() {
        let (mut link, peer) = ChannelLink::pair(1);
        peer.connected.send(false).unwrap();
        assert!(!link.is_connected());
        drop(peer);
        assert_eq!(link.recv().await, None);
        let err = link.send(InboundMessage::new("k", "x")).await.unwrap_err();
        assert_eq!(err, TransportError::Closed);
    }

    #[tokio::test]
    async fn dropping_the_link_is_seen_by_the_peer() {
        let (link, peer) = ChannelLink::pair(1);
        drop(link);
        peer.closed().await;
    }

    #[test]
    fn tickets_are_unique_and_their_secret_stays_out_of_debug_output() {
        let key = SessionKey::new("s").unwrap();
        let a = ChannelTicket::generate(key.clone());
        let b = ChannelTicket::generate(key);
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), 64);
        assert!(!format!("{a:?}").contains(&a.token));
    }
}
