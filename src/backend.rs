//! [`AgentBackend`]: the agent that answers turns.
//!
//! A backend owns whatever runs the conversation (a long-lived `claude` process per session in the default
//! implementation) and turns one user message into a stream of [`ReplyEvent`]s.
//!
//! # Example
//!
//! A backend that answers every turn by echoing the user's text in two deltas:
//!
//! ```
//! use async_trait::async_trait;
//! use futures::stream::{self, StreamExt};
//! use synthesis_bridge::{AgentBackend, BackendError, BackendStatus, ReplyEvent, ReplyStream, Turn};
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl AgentBackend for Echo {
//!     async fn run_turn(&self, turn: Turn) -> Result<ReplyStream, BackendError> {
//!         let events = vec![
//!             ReplyEvent::text("you said: "),
//!             ReplyEvent::text(turn.text),
//!             ReplyEvent::end(),
//!         ];
//!         Ok(stream::iter(events).boxed())
//!     }
//!
//!     async fn shutdown(&self) {}
//!
//!     fn status(&self) -> BackendStatus {
//!         BackendStatus::default()
//!     }
//! }
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::session::{SessionKey, TurnId};

/// One user message for one session, as handed to [`AgentBackend::run_turn`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Turn {
    /// Which conversation this turn belongs to.
    pub session: SessionKey,
    /// The directory the agent works in. It exists and lies inside one of the configured workspace roots.
    pub workspace: PathBuf,
    /// The user's text, with client bookkeeping (OpenClaw's runtime line) removed.
    pub text: String,
    /// Everything else known about the request.
    pub meta: TurnMeta,
    /// Fired when nobody wants the answer any more (the client went away, a deadline passed, the bridge
    /// is shutting down). The backend should stop the agent's turn and then end the stream.
    pub cancel: CancellationToken,
}

impl Turn {
    /// A turn with fresh metadata and its own cancellation token.
    pub fn new(
        session: SessionKey,
        workspace: impl Into<PathBuf>,
        text: impl Into<String>,
    ) -> Self {
        Self {
            session,
            workspace: workspace.into(),
            text: text.into(),
            meta: TurnMeta::default(),
            cancel: CancellationToken::new(),
        }
    }
}

/// Request metadata that comes with a [`Turn`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TurnMeta {
    /// This turn's id, also used as the log field `turn_id`.
    pub turn_id: TurnId,
    /// The model id the client asked for.
    pub model: String,
    /// The client's own id for the current conversation within the session (OpenClaw's `sessionId`),
    /// when it sends one. It changes when the user starts a new conversation under the same session key
    /// (`/new`), and a backend should then start a new agent conversation.
    pub conversation: Option<String>,
    /// When the bridge received the request.
    pub received_at: SystemTime,
    /// The request named no session: the turn is answered in a fresh conversation that the backend does
    /// not keep (no record, no process left running) and that no later turn continues.
    pub one_off: bool,
    /// The client's function tools the agent may call (none when the request sets `tool_choice: "none"`).
    pub tools: Vec<ClientTool>,
    /// The client's instructions for the agent: its `system` and `developer` messages, without the parts
    /// that change from turn to turn (see [`crate::openai::extract::stable_instructions`]).
    pub system_prompt: Option<String>,
    /// The results of the agent's earlier tool calls that this request carries (its trailing `role: "tool"`
    /// messages). A request with results and no new user message continues the turn that made the calls.
    pub tool_results: Vec<ToolResult>,
}

/// A function tool the client offers (an OpenAI `tools` entry of type `function`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClientTool {
    /// Its name, exactly as the client declared it.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// Its parameters as a JSON Schema object.
    pub parameters: serde_json::Value,
}

impl ClientTool {
    /// A tool called `name` taking `parameters` (a JSON Schema object).
    pub fn new(name: impl Into<String>, parameters: serde_json::Value) -> Self {
        Self {
            name: name.into(),
            description: None,
            parameters,
        }
    }

    /// Sets its description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

/// A call of one of the client's tools, for the client to run (OpenAI `tool_calls`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolCall {
    /// The call's id; the client's result names it (`tool_call_id`).
    pub id: String,
    /// The tool's name, as the client declared it.
    pub name: String,
    /// The arguments, as a JSON text.
    pub arguments: String,
}

impl ToolCall {
    /// A call `id` of `name` with `arguments` (JSON text).
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// What one of the client's tools returned (a `role: "tool"` message).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolResult {
    /// The call it answers.
    pub call_id: String,
    /// The result's text.
    pub content: String,
}

impl ToolResult {
    /// The result of call `call_id`.
    pub fn new(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            call_id: call_id.into(),
            content: content.into(),
        }
    }

    /// `results` as a message to an agent with no call waiting for them (the calls were given up, or it
    /// never made them): better it reads them than gets the question they answer a second time.
    pub fn as_message(results: &[ToolResult]) -> String {
        let mut text = String::from(
            "The results of earlier tool calls came after those calls had been given up:",
        );
        for result in results {
            let _ = write!(text, "\n\n[{}]\n{}", result.call_id, result.content);
        }
        text
    }
}

impl Default for TurnMeta {
    fn default() -> Self {
        Self {
            turn_id: TurnId::new(),
            model: String::new(),
            conversation: None,
            received_at: SystemTime::now(),
            one_off: false,
            tools: Vec::new(),
            system_prompt: None,
            tool_results: Vec::new(),
        }
    }
}

impl TurnMeta {
    /// Sets the requested model id.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Sets the client's conversation id.
    pub fn with_conversation(mut self, conversation: Option<String>) -> Self {
        self.conversation = conversation;
        self
    }

    /// Marks the turn as one-off.
    pub fn with_one_off(mut self, one_off: bool) -> Self {
        self.one_off = one_off;
        self
    }

    /// Sets the client's tools.
    pub fn with_tools(mut self, tools: Vec<ClientTool>) -> Self {
        self.tools = tools;
        self
    }

    /// Sets the client's instructions.
    pub fn with_system_prompt(mut self, prompt: Option<String>) -> Self {
        self.system_prompt = prompt;
        self
    }

    /// Sets the tool results the request carries.
    pub fn with_tool_results(mut self, results: Vec<ToolResult>) -> Self {
        self.tool_results = results;
        self
    }
}

/// The reply to one turn, as it happens.
///
/// The contract a consumer relies on:
/// - [`ReplyEvent::TextDelta`]s arrive as soon as the agent produces them;
/// - a successful turn yields [`ReplyEvent::End`], a failed one [`ReplyEvent::Error`]; a stream that stops
///   without either is treated as a failure (the backend broke off mid-reply);
/// - the stream itself ends (yields `None`) only when the agent's turn is really over, which may be after
///   `End` (the agent may still be wrapping up), or paused: after [`ReplyEvent::ToolCall`]s and
///   `End(FinishReason::ToolCalls)` the agent waits for the client's results, which come with the session's
///   next turn ([`TurnMeta::tool_results`]), and that turn's stream carries on with the answer. A consumer that stops listening fires [`Turn::cancel`] and
///   keeps draining the stream, so the end of the stream is the signal that the agent is free again.
pub type ReplyStream = BoxStream<'static, ReplyEvent>;

/// One event of a [`ReplyStream`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ReplyEvent {
    /// More text of the answer.
    TextDelta(String),
    /// Token counts for the turn, when the agent reports them.
    Usage(Usage),
    /// The agent calls one of the client's tools; the answer ends with `End(FinishReason::ToolCalls)`.
    ToolCall(ToolCall),
    /// The answer is complete.
    End(FinishReason),
    /// The turn failed; nothing more will be said.
    Error(BackendError),
}

impl ReplyEvent {
    /// A text delta.
    pub fn text(text: impl Into<String>) -> Self {
        Self::TextDelta(text.into())
    }

    /// A normal end of the answer.
    pub fn end() -> Self {
        Self::End(FinishReason::Stop)
    }
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FinishReason {
    /// The agent finished its answer.
    #[default]
    Stop,
    /// The agent hit an output limit.
    Length,
    /// The agent called the client's tools and waits for their results.
    ToolCalls,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
        }
    }
}

/// Token counts in OpenAI's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    /// Tokens read by the model.
    pub prompt_tokens: u64,
    /// Tokens written by the model.
    pub completion_tokens: u64,
    /// The sum of both.
    pub total_tokens: u64,
}

impl Usage {
    /// Usage from prompt and completion counts.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Why a backend could not run a turn, or why a running turn failed.
///
/// The variant decides what the client sees: before the response head it picks the HTTP status, after it
/// the error travels in the final SSE chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The agent cannot be reached or started at all, e.g. its program is not installed. HTTP 503.
    #[error("{message}")]
    Unavailable {
        /// What is wrong and, where possible, how to fix it.
        message: String,
        /// When a retry may succeed, for `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The turn took too long. HTTP 504.
    #[error("{0}")]
    Timeout(String),
    /// The agent refused this input. HTTP 400.
    #[error("{0}")]
    Rejected(String),
    /// The agent failed while answering (it crashed, its connection dropped, it reported an error). HTTP 502.
    #[error("{0}")]
    Failed(String),
    /// The turn was cancelled before it finished.
    #[error("the turn was cancelled")]
    Cancelled,
}

impl BackendError {
    /// An [`BackendError::Unavailable`] without a retry hint.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A [`BackendError::Failed`].
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}

/// A point-in-time view of a backend, for `/health` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct BackendStatus {
    /// Sessions the backend knows about.
    pub sessions: usize,
    /// Agent processes running now.
    pub processes: usize,
    /// Agent-side plugins connected now.
    pub connections: usize,
}

impl BackendStatus {
    /// A status from its three counts.
    pub fn new(sessions: usize, processes: usize, connections: usize) -> Self {
        Self {
            sessions,
            processes,
            connections,
        }
    }
}

/// Runs turns for sessions: the agent side of the bridge.
///
/// Implementations are shared by every request (`Arc<dyn AgentBackend>`) and must serve different sessions
/// concurrently. The bridge never runs two turns of one session at once when its concurrency layer is in
/// place, but a backend should not rely on that for memory safety.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait AgentBackend: Send + Sync + 'static {
    /// Starts one turn and returns its reply as it happens.
    ///
    /// Resolve once the turn has been handed to the agent (after starting it, if needed); an `Err` here is
    /// answered with an HTTP error status before any response is sent. Failures after that go into the
    /// stream as [`ReplyEvent::Error`].
    async fn run_turn(&self, turn: Turn) -> Result<ReplyStream, BackendError>;

    /// Stops every agent this backend started. Called once when the bridge shuts down.
    async fn shutdown(&self);

    /// A cheap snapshot of the backend's state.
    fn status(&self) -> BackendStatus;
}
