//! [`WsTransport`]: the bridge's [`ChannelTransport`] over WebSocket.
//!
//! Every agent process the bridge spawns runs a plugin that connects back to `ws://HOST:PORT/bridge`,
//! says `hello` with the session it serves and the secret it was given, and then carries messages one way
//! and replies the other. The agent's hooks post their reports to `http://HOST:PORT/hooks` on the same
//! listener. [`protocol`] has the frames; `docs/protocol.md` describes them and the hooks for plugin
//! authors.
//!
//! What the transport guarantees:
//! - only a connection presenting the secret of a live registration is attached to a session, and only
//!   such a connection may replace the one serving it (a plugin that reconnects);
//! - a malformed or unknown frame is logged and ignored; a frame over the size limit closes the
//!   connection;
//! - a connection that stops answering pings is closed, and the backend hears
//!   [`ChannelEvent::Disconnected`](synthesis_bridge::transport::ChannelEvent::Disconnected) at once;
//! - a hook report reaches the backend only with the process's secret; a message starts at most one
//!   prompt (a second start is blocked);
//! - a `Stop` report reaches the backend after every reply the plugin sent before the agent finished,
//!   although the two come over different connections (a ping round trip on the plugin's connection
//!   orders them when the report comes first).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use synthesis_bridge::transport::ChannelTransport;
//! use synthesis_bridge::SessionKey;
//! use synthesis_transport_ws::{WsConfig, WsTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let transport = WsTransport::bind("127.0.0.1:0".parse().unwrap(), WsConfig::default()).await?;
//! let ticket = transport.register(&SessionKey::new("agent::chat").unwrap());
//! // Spawn the agent with SYNTHESIS_WS_URL = transport.endpoint() and SYNTHESIS_BRIDGE_TOKEN =
//! // ticket.token, then wait for its plugin:
//! let waited = transport.accept(&ticket, Duration::from_millis(10)).await;
//! assert!(waited.is_err(), "nobody connected");
//! assert!(transport.endpoint().ends_with("/bridge"));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod connection;
mod hooks;
mod listener;
/// Claude Code's channel protocol, which this transport speaks (`synthesis-claude-channel-protocol`).
pub use synthesis_claude_channel_protocol as protocol;
mod registry;
mod turn_end_order;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use synthesis_bridge::SessionKey;
use synthesis_bridge::transport::{ChannelLink, ChannelTicket, ChannelTransport, TransportError};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::registry::Registry;

/// How the transport treats connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WsConfig {
    /// How often each connection is pinged; one that has said nothing since the previous ping is dead.
    pub ping_interval: Duration,
    /// How long a new connection has to send its first frame.
    pub hello_timeout: Duration,
    /// The largest frame (and message) accepted from a plugin, in bytes.
    pub max_frame_bytes: usize,
    /// Connections served at once (plugins and hook reports); one more is answered 503 and closed, so that
    /// connections that say nothing cannot use up the process's file descriptors.
    pub max_connections: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(15),
            hello_timeout: Duration::from_secs(10),
            max_frame_bytes: 4 << 20,
            max_connections: 512,
        }
    }
}

impl WsConfig {
    /// Sets [`WsConfig::max_connections`] (at least 1).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Sets [`WsConfig::ping_interval`].
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets [`WsConfig::hello_timeout`].
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout = timeout;
        self
    }

    /// Sets [`WsConfig::max_frame_bytes`].
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    pub(crate) fn websocket(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            // tungstenite's default read buffer is 128 KiB, allocated per connection and zeroed on every
            // read: with hundreds of plugins that is most of the bridge's memory and a good part of its CPU.
            // Frames here are small.
            .read_buffer_size(4 << 10)
            .write_buffer_size(0)
            .max_frame_size(Some(self.max_frame_bytes))
            .max_message_size(Some(self.max_frame_bytes))
    }
}

/// The WebSocket [`ChannelTransport`]; see the [crate docs](crate). Dropping it (or
/// [`WsTransport::shutdown`]) stops listening and closes every connection.
#[derive(Debug)]
pub struct WsTransport {
    registry: Arc<Registry>,
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl WsTransport {
    /// Listens on `addr` and serves plugin connections at [`protocol::PATH`].
    pub async fn bind(addr: SocketAddr, config: WsConfig) -> io::Result<Self> {
        let listener = synthesis_bridge::server::bind(addr)?;
        Self::serve(listener, config)
    }

    /// Serves plugin connections on an already bound listener.
    pub fn serve(listener: TcpListener, config: WsConfig) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let registry = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let accepting = accept_loop(
            listener,
            listener::Shared {
                registry: registry.clone(),
                config: Arc::new(config),
                shutdown: shutdown.clone(),
            },
        );
        tokio::spawn(accepting.in_current_span());
        Ok(Self {
            registry,
            local_addr,
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where agents reach the listener: they run on this machine, so an all-interfaces listener is
    /// reached through loopback.
    fn agent_addr(&self) -> SocketAddr {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        addr
    }

    /// Stops listening, ends every registration and closes every connection (code 1001).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
        self.registry.clear();
    }
}

async fn accept_loop(listener: TcpListener, shared: listener::Shared) {
    let max = shared.config.max_connections;
    let refusal = bytes::Bytes::from_static(
        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    );
    let mut acceptor = synthesis_bridge::server::Acceptor::new(listener, max, refusal);
    loop {
        let (stream, _, permit) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = shared.shutdown.cancelled() => return,
        };
        let serving = listener::serve(stream, shared.clone());
        tokio::spawn(
            async move {
                serving.await;
                drop(permit);
            }
            .in_current_span(),
        );
    }
}

#[async_trait]
impl ChannelTransport for WsTransport {
    fn endpoint(&self) -> String {
        format!("ws://{}{}", self.agent_addr(), protocol::PATH)
    }

    fn hook_endpoint(&self) -> Option<String> {
        Some(format!(
            "http://{}{}",
            self.agent_addr(),
            protocol::HOOKS_PATH
        ))
    }

    fn register(&self, session: &SessionKey) -> ChannelTicket {
        self.registry.register(session)
    }

    async fn accept(
        &self,
        ticket: &ChannelTicket,
        timeout: Duration,
    ) -> Result<ChannelLink, TransportError> {
        self.registry.accept(ticket, timeout).await
    }

    fn revoke(&self, ticket: &ChannelTicket) {
        self.registry.revoke(ticket);
    }
}
