//! # synthesis-bridge
//!
//! Makes a long-lived coding agent look like an OpenAI chat-completions model, so chat front ends such as
//! OpenClaw can talk to it unchanged.
//!
//! A request to `POST /v1/chat/completions` is turned into a [`Turn`] for a session (worked out from the
//! request by [`openai::extract`]) and handed to an [`AgentBackend`], whose [`ReplyStream`] goes back to
//! the client as server-sent events as it happens.
//!
//! The four traits that the rest plugs into:
//! - [`AgentBackend`]: runs turns (the default runs one `claude` process per session);
//! - [`ChannelTransport`]: connects the bridge to the plugin inside each agent process;
//! - [`SessionStore`]: remembers each session's agent conversation across restarts;
//! - [`Spawner`]: starts agent processes, so tests can swap in fakes.
//!
//! For test suites: [`spawner::fake::FakeSpawner`] starts processes that are scripts (alive until told,
//! their output scripted, exiting on demand), and with the `mock` feature `mockall` mocks of each trait
//! (`MockAgentBackend`, …) are exported.
//!
//! # Your own agent
//!
//! An agent is one trait. This one shouts each message back, served by the bridge's whole stack on a real
//! socket:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use async_trait::async_trait;
//! use futures::stream::{self, StreamExt};
//! use synthesis_bridge::http::{Bridge, BridgeConfig, WorkspacePolicy};
//! use synthesis_bridge::{AgentBackend, BackendError, BackendStatus, ReplyEvent, ReplyStream, Turn};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! struct Shout;
//!
//! #[async_trait]
//! impl AgentBackend for Shout {
//!     async fn run_turn(&self, turn: Turn) -> Result<ReplyStream, BackendError> {
//!         let reply = [ReplyEvent::text(turn.text.to_uppercase()), ReplyEvent::end()];
//!         Ok(stream::iter(reply).boxed())
//!     }
//!
//!     async fn shutdown(&self) {}
//!
//!     fn status(&self) -> BackendStatus {
//!         BackendStatus::default()
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let config = BridgeConfig::new(WorkspacePolicy::single(std::env::temp_dir())?);
//! let bridge = Bridge::builder(Arc::new(Shout), config).build();
//! let listener = synthesis_bridge::server::bind("127.0.0.1:0".parse().unwrap())?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let stopped = async { stopped.await.unwrap_or_default() };
//! let server = tokio::spawn(synthesis_bridge::server::serve(listener, bridge, stopped, Duration::from_secs(1)));
//!
//! let body = r#"{"model":"claude","user":"me","messages":[{"role":"user","content":"hello"}]}"#;
//! let request = format!(
//!     "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
//!      content-length: {}\r\nconnection: close\r\n\r\n{body}",
//!     body.len()
//! );
//! let mut client = tokio::net::TcpStream::connect(addr).await?;
//! client.write_all(request.as_bytes()).await?;
//! let mut response = String::new();
//! client.read_to_string(&mut response).await?;
//! assert!(response.contains(r#""content":"HELLO""#), "{response}");
//!
//! stop.send(()).unwrap();
//! server.await??;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod backend;
pub mod http;
pub mod instructions;
pub mod layers;
pub mod metrics;
pub mod openai;
pub mod pool;
pub mod server;
pub mod session;
pub mod spawner;
pub mod store;
pub mod transport;

pub use backend::{
    AgentBackend, BackendError, BackendStatus, ClientTool, FinishReason, ReplyEvent, ReplyStream,
    ToolCall, ToolResult, Turn, TurnMeta, Usage,
};
pub use session::{InvalidSessionKey, SessionKey, TurnId};
pub use spawner::{ProcessHandle, ProcessSpec, Spawner};
pub use store::{MemoryStore, SessionRecord, SessionStore, StoreError};
pub use transport::{ChannelLink, ChannelTransport};

#[cfg(any(test, feature = "mock"))]
pub use backend::MockAgentBackend;
#[cfg(any(test, feature = "mock"))]
pub use spawner::{MockProcessHandle, MockSpawner};
#[cfg(any(test, feature = "mock"))]
pub use store::MockSessionStore;
#[cfg(any(test, feature = "mock"))]
pub use transport::MockChannelTransport;

// Compiles the README's Rust examples as doctests, so the documented API cannot drift from the real one.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
