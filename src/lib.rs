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
#![forbid(unsafe_code)]

pub mod backend;
pub mod http;
pub mod layers;
pub mod metrics;
pub mod openai;
pub mod server;
pub mod session;
pub mod spawner;
pub mod store;
pub mod transport;

pub use backend::{
    AgentBackend, BackendError, BackendStatus, FinishReason, ReplyEvent, ReplyStream, Turn,
    TurnMeta, Usage,
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
