//! The Claude Code side of synthesis-bridge: the channel MCP server (`bridge channel`) that Claude Code
//! starts inside every session the bridge runs.
//!
//! It has two ends:
//! - **Claude Code**, over MCP on standard input and output. It declares the `claude/channel` capability,
//!   hands each chat message to Claude as a `notifications/claude/channel` notification, and offers the
//!   `reply` tool through which Claude answers, and the client's tools (`SYNTHESIS_CLIENT_TOOLS`), whose
//!   calls wait for the client's results.
//! - **The bridge**, over the WebSocket protocol of `synthesis-transport-ws` (`docs/protocol.md`): it
//!   connects to `SYNTHESIS_WS_URL` with the process's secret, receives `inbound` messages, sends `reply`
//!   frames, relays the client's tool calls (`tool_call` out, `tool_result` back), and reconnects with
//!   backoff when the bridge goes away.
//!
//! Two facts about the real CLI shape it (`docs/claude-cli-measurements.md`): Claude Code probes with a
//! `server/discover` request, which must fail at once with -32601 (a success disables channels); and a
//! notification sent before Claude Code has registered the channel is dropped, so messages wait until
//! `tools/list` has been answered and a short settle delay has passed.
//!
//! Standard output is the JSON-RPC stream: everything else goes to standard error through `tracing`.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), synthesis_plugin_claude_channel::ChannelError> {
//! // What `bridge channel` does: read the bridge's variables, serve MCP on stdin/stdout until it closes.
//! let config = synthesis_plugin_claude_channel::ChannelConfig::from_env()?;
//! synthesis_plugin_claude_channel::serve_stdio(config).await
//! # }
//! ```

mod ledger;
mod link;
mod push;
mod server;
mod written;

use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::service::ServerInitializeError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::{debug, info};

use rmcp::model::Tool;
pub use server::{ChannelServer, ReplyArgs};
use synthesis_claude_channel_protocol::{ENV_CLIENT_TOOLS, ENV_SESSION, ENV_TOKEN, ENV_WS_URL};

/// How the channel server reaches the bridge and paces its pushes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChannelConfig {
    /// The bridge's WebSocket URL (`SYNTHESIS_WS_URL`).
    pub ws_url: String,
    /// The session this process serves (`SYNTHESIS_OPENCLAW_SESSION`); also the `chat_id` of its messages.
    pub session: String,
    /// This process's secret (`SYNTHESIS_BRIDGE_TOKEN`).
    pub token: String,
    /// How long after `tools/list` was answered the first message is pushed. Claude Code starts taking
    /// channel notifications 5 to 132 ms after that answer and drops, without a trace, any that comes
    /// earlier (16 of 17 pushed at once were lost); nothing it sends says when
    /// (`docs/claude-cli-measurements.md`, section L4). 200 ms clears every start measured, and the bridge
    /// pushes again a message that was not confirmed.
    pub settle: Duration,
    /// The first wait before reconnecting to the bridge; it doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// The longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// How long a `reply` call waits for the bridge to be reachable before it fails.
    pub reply_wait: Duration,
    /// The client's tools (`SYNTHESIS_CLIENT_TOOLS`), listed beside `reply`. A call of one goes to the
    /// bridge, which hands it to the client, and waits for the client's result.
    pub client_tools: Vec<Tool>,
}

impl ChannelConfig {
    /// A configuration with the default timings.
    pub fn new(
        ws_url: impl Into<String>,
        session: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        Self {
            ws_url: ws_url.into(),
            session: session.into(),
            token: token.into(),
            settle: Duration::from_millis(200),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            reply_wait: Duration::from_secs(10),
            client_tools: Vec::new(),
        }
    }

    /// Reads the variables the bridge gives every process it starts.
    pub fn from_env() -> Result<Self, ChannelError> {
        let var = |name: &'static str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.is_empty())
                .ok_or(ChannelError::MissingEnv(name))
        };
        let config = Self::new(var(ENV_WS_URL)?, var(ENV_SESSION)?, var(ENV_TOKEN)?);
        let client_tools = match std::env::var(ENV_CLIENT_TOOLS) {
            Ok(tools) if !tools.trim().is_empty() => serde_json::from_str(&tools)
                .map_err(|error| ChannelError::BadEnv(ENV_CLIENT_TOOLS, error.to_string()))?,
            _ => Vec::new(),
        };
        Ok(config.client_tools(client_tools))
    }

    /// Sets [`ChannelConfig::client_tools`].
    pub fn client_tools(mut self, tools: Vec<Tool>) -> Self {
        self.client_tools = tools;
        self
    }

    /// Sets [`ChannelConfig::settle`].
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Sets the reconnection backoff bounds.
    pub fn reconnect(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }

    /// Sets [`ChannelConfig::reply_wait`].
    pub fn reply_wait(mut self, wait: Duration) -> Self {
        self.reply_wait = wait;
        self
    }
}

/// Why the channel server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A variable the bridge sets is missing: the server was not started by the bridge.
    #[error(
        "{0} is not set: `bridge channel` is started by Claude Code in a session the bridge runs, not by hand"
    )]
    MissingEnv(&'static str),
    /// A variable the bridge sets does not hold what it should.
    #[error("{0} is not valid: {1}")]
    BadEnv(&'static str, String),
    /// The MCP session with Claude Code failed.
    #[error("the MCP session with Claude Code failed: {0}")]
    Mcp(String),
}

/// Serves MCP on this process's standard input and output until standard input closes.
pub async fn serve_stdio(config: ChannelConfig) -> Result<(), ChannelError> {
    serve(config, tokio::io::stdin(), tokio::io::stdout()).await
}

/// Serves MCP over `reader`/`writer` until `reader` ends, relaying between Claude Code and the bridge.
///
/// The bridge connection starts at once, so messages can arrive before the MCP handshake is over; they are
/// queued and pushed in order once the reply tool is registered.
pub async fn serve<R, W>(config: ChannelConfig, reader: R, writer: W) -> Result<(), ChannelError>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
    let link = link::BridgeLink::start(config.clone(), inbound_tx);
    let server = ChannelServer::new(&config, link.clone());
    let tools_listed = server.tools_listed();
    let ledger = server.ledger();
    let writer = written::WatchedWriter::new(writer, ledger.clone());

    let running = match server.serve((reader, writer)).await {
        Ok(running) => running,
        Err(error) => {
            link.stop();
            // Claude Code closing the pipe before the handshake is a normal way to end.
            return if matches!(error, ServerInitializeError::ConnectionClosed(_)) {
                debug!(%error, "standard input closed before the MCP handshake");
                Ok(())
            } else {
                Err(ChannelError::Mcp(error.to_string()))
            };
        }
    };
    let pusher = tokio::spawn(push::push_when_ready(
        running.peer().clone(),
        tools_listed,
        config.settle,
        inbound_rx,
        ledger,
    ));
    let outcome = running.waiting().await;
    pusher.abort();
    link.stop();
    match outcome {
        Ok(reason) => {
            info!(?reason, "the MCP session ended");
            Ok(())
        }
        Err(error) => Err(ChannelError::Mcp(error.to_string())),
    }
}
