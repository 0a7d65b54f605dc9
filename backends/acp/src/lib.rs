//! [`AcpBackend`]: any [Agent Client Protocol](https://agentclientprotocol.com) agent behind the bridge,
//! one long-lived agent process and ACP session per chat session.
//!
//! ACP is how editors drive coding agents: JSON-RPC 2.0 over the agent's standard input and output. For
//! each session key the backend keeps the agent running in the session's workspace:
//! - the process starts with `initialize` (the bridge offers no file system and no terminal: the agent
//!   works in the workspace with its own tools);
//! - its session is opened with `session/new`, and the agent's own session id is kept in the
//!   [`SessionStore`]. After a restart (of the bridge, or of a process stopped while idle) the same
//!   conversation is reopened with `session/resume` where the agent advertises it, else with
//!   `session/load`; an agent that can do neither, or refuses, starts a new one;
//! - a turn is a `session/prompt` with the user's text (after a note of the client's instructions, when
//!   the session must be told of them: ACP has no system prompt); each `agent_message_chunk` streams as a
//!   delta; the prompt's answer ends the turn, with its token usage where the agent reports it;
//! - the agent's `session/request_permission` requests are answered at once by the
//!   [`PermissionPolicy`]; nobody is there to click;
//! - a cancelled turn sends `session/cancel` and waits for the prompt to end, for
//!   [`AcpConfig::cancel_grace`] at most, then the process is stopped.
//!
//! **One process per session**, not one process serving every session (which ACP allows): a process that
//! crashes fails one conversation instead of all, its workspace is its working directory, and the pool
//! stops idle ones to give their memory back. Agents that run a model client per session (the Claude
//! agent starts a Claude Code per session) cost about the same either way. The pool rules are the Claude
//! backend's ([`synthesis_bridge::pool`]): idle processes are stopped, at most
//! [`AcpConfig::max_processes`] run and the longest-idle one makes room (never one in a turn), and a
//! process that dies mid-turn fails that turn at once with the cause; the next turn starts a new one and
//! reopens the conversation.
//!
//! # Example
//!
//! A scripted agent (a [`FakeSpawner`](synthesis_bridge::spawner::fake::FakeSpawner) that speaks just
//! enough ACP) through a whole turn:
//!
//! ```
//! use std::sync::Arc;
//!
//! use futures::StreamExt;
//! use serde_json::{Value, json};
//! use synthesis_backend_acp::{AcpBackend, AcpConfig};
//! use synthesis_bridge::spawner::fake::FakeSpawner;
//! use synthesis_bridge::{AgentBackend, MemoryStore, ReplyEvent, SessionKey, Turn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let agent = FakeSpawner::new(|_spec, mut agent| async move {
//!     while let Some(line) = agent.read_line().await {
//!         let request: Value = serde_json::from_str(&line).unwrap();
//!         let result = match request["method"].as_str().unwrap() {
//!             "initialize" => json!({"protocolVersion": 1, "agentCapabilities": {}}),
//!             "session/new" => json!({"sessionId": "s-1"}),
//!             "session/prompt" => {
//!                 let chunk = json!({"jsonrpc": "2.0", "method": "session/update", "params": {
//!                     "sessionId": "s-1",
//!                     "update": {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "hi!"}},
//!                 }});
//!                 agent.print(&format!("{chunk}\n")).await;
//!                 json!({"stopReason": "end_turn"})
//!             }
//!             _ => continue,
//!         };
//!         let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": result});
//!         agent.print(&format!("{answer}\n")).await;
//!     }
//! });
//! let backend = AcpBackend::new(
//!     AcpConfig::new("my-agent", ["--acp"]),
//!     Arc::new(agent.clone()),
//!     Arc::new(MemoryStore::new()),
//! );
//! let turn = Turn::new(SessionKey::new("test")?, std::env::temp_dir(), "hello");
//! let events: Vec<ReplyEvent> = backend.run_turn(turn).await?.collect().await;
//! assert_eq!(events, [ReplyEvent::text("hi!"), ReplyEvent::end()]);
//! assert_eq!(agent.spawned()[0].args, ["--acp"]);
//! backend.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Why not the `agent-client-protocol` SDK
//!
//! The SDK (5.2) runs on a multi-threaded runtime (its futures are `Send`), but its client holds a
//! connection inside a `connect_with` closure and a session inside `run_until`, while the bridge keeps
//! each one in a pool across many HTTP requests, and it would own the child process, which here comes from
//! the [`Spawner`] (process-group kill, standard error in the log, fake processes in tests). The backend
//! uses the SDK's schema crate for every message it sends and reads, and a small connection of its own
//! (`rpc.rs`).
#![forbid(unsafe_code)]

mod agent;
mod config;
mod permission;
mod pool;
mod rpc;
mod turn;

use std::sync::Arc;

use async_trait::async_trait;
use synthesis_bridge::instructions::fingerprint;
use synthesis_bridge::pool::Sweep;
use synthesis_bridge::store::{self, now_in_millis};
use synthesis_bridge::{
    AgentBackend, BackendError, BackendStatus, ReplyStream, SessionRecord, SessionStore, Spawner,
    ToolResult, Turn,
};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, debug, info};

pub use crate::config::{AcpConfig, BadCommandLine};
pub use crate::permission::{Allow, PermissionPolicy};

use crate::agent::{Agent, Opened};
use crate::pool::{Pool, SessionState};
use crate::turn::TurnRun;

/// How many reply events wait for a slow consumer before the turn holds back.
const EVENT_BUFFER: usize = 32;

/// One long-lived ACP agent process per session; see the [crate docs](crate).
#[derive(Debug)]
pub struct AcpBackend {
    inner: Arc<Inner>,
    _stop_sweeping: DropGuard,
}

struct Inner {
    config: Arc<AcpConfig>,
    spawner: Arc<dyn Spawner>,
    store: Arc<dyn SessionStore>,
    pool: Pool,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl AcpBackend {
    /// A backend that starts the agent with `spawner` (which must honour
    /// [`Stdio::Pipes`](synthesis_bridge::spawner::Stdio::Pipes)) and keeps each session's ACP session id
    /// in `store`. Must be called within a Tokio runtime: it starts the task that stops idle processes.
    pub fn new(config: AcpConfig, spawner: Arc<dyn Spawner>, store: Arc<dyn SessionStore>) -> Self {
        let pool = Pool::new(config.max_processes, "ACP agent");
        let stop_sweeping = pool.sweep(Sweep {
            idle: config.process_idle,
            ttl: config.session_ttl,
            store: store.clone(),
            since: now_in_millis(),
            // A slot without a process is kept only for a new session still to start.
            keep: Box::new(SessionState::new_session_wanted),
        });
        Self {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                spawner,
                store,
                pool,
                shutdown: CancellationToken::new(),
            }),
            _stop_sweeping: stop_sweeping,
        }
    }
}

impl Inner {
    async fn run_turn(&self, mut turn: Turn) -> Result<ReplyStream, BackendError> {
        // An ACP agent is offered no client tools, so results are for calls it did not make (the client
        // switched agents mid-loop): it reads them rather than get the question again.
        if !turn.meta.tool_results.is_empty() {
            turn.text = ToolResult::as_message(&turn.meta.tool_results);
        }
        if self.shutdown.is_cancelled() {
            return Err(BackendError::unavailable("the bridge is shutting down"));
        }
        let slot = self.pool.slot(&turn.session);
        let Some(mut guard) = slot.lock_for_turn(&turn.cancel).await else {
            return Err(BackendError::Cancelled);
        };
        if self.shutdown.is_cancelled() {
            return Err(BackendError::unavailable("the bridge is shutting down"));
        }
        slot.touch();
        // A request that named no session: a new process and ACP session, not kept.
        let one_off = turn.meta.one_off;
        let (stored, mut record) = if one_off {
            let record = SessionRecord::new(turn.session.clone(), &turn.workspace);
            (None, record)
        } else {
            store::record_for_turn(self.store.as_ref(), &turn).await
        };
        // Kept until the new session is saved: a launch that fails must not forget it.
        let fresh = slot.state.new_session_wanted();
        if fresh {
            record.start_new_conversation(record.client_conversation.clone());
        }
        if let Some(agent) = guard.as_ref()
            && let Some(reason) = unfit(agent, record.conversation_id.as_deref(), &turn)
        {
            info!(session = %turn.session, reason, "restarting the ACP agent");
            if let Some(agent) = guard.take() {
                agent.stop().await;
            }
        }
        if guard.is_none() {
            let ready = self.start(&turn, record.conversation_id.as_deref());
            let (agent, opened) = tokio::select! {
                agent = tokio::time::timeout(self.config.ready_timeout, ready) => agent.unwrap_or_else(|_| Err(BackendError::unavailable(format!(
                    "the ACP agent {} did not open its session within {:?}",
                    self.config.agent_name(),
                    self.config.ready_timeout
                ))))?,
                () = turn.cancel.cancelled() => return Err(BackendError::Cancelled),
            };
            if opened == Opened::New {
                // ACP has no system prompt: the client's instructions come with the first message.
                slot.state.instructions.started_without();
            }
            record.conversation_id = agent.session_id.clone();
            *guard = Some(agent);
        }
        record.started = true;
        if !one_off {
            let ttl = self.config.session_ttl;
            store::save_if_needed(self.store.as_ref(), stored.as_ref(), record, ttl).await;
        }
        if fresh {
            slot.state.new_session_started();
        }

        let system_prompt = turn.meta.system_prompt.as_deref();
        let told = slot.state.instructions.note_for(system_prompt, &turn.text);
        if told.is_some() {
            info!(session = %turn.session, "the agent gets the client's instructions with the message");
        }
        let (events, mut reply) = mpsc::channel(EVENT_BUFFER);
        let run = TurnRun {
            instructions: fingerprint(system_prompt),
            slot,
            agent: guard,
            text: told.unwrap_or(turn.text),
            delivered: false,
            cancel: turn.cancel,
            shutdown: self.shutdown.clone(),
            config: self.config.clone(),
            events,
            one_off,
        };
        tokio::spawn(run.run().in_current_span());
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            reply.poll_recv(cx)
        })))
    }

    /// Starts an agent for `turn`'s session and opens its conversation: `wanted`, when it had one. Says
    /// how it was opened.
    async fn start(
        &self,
        turn: &Turn,
        wanted: Option<&str>,
    ) -> Result<(Agent, Opened), BackendError> {
        let permit = self
            .pool
            .room(&turn.session, self.config.busy_retry_after)
            .await?;
        let spawner = self.spawner.as_ref();
        let mut agent = Agent::launch(
            &self.config,
            spawner,
            &turn.session,
            &turn.workspace,
            permit,
        )
        .await?;
        match agent.open(wanted).await {
            Ok(opened) => {
                info!(session = %turn.session, agent = %agent.name, session_id = ?agent.session_id, ?opened, "the ACP agent's session is open");
                if wanted.is_some() && opened == Opened::New {
                    info!(session = %turn.session, "the conversation starts again in a new ACP session");
                }
                Ok((agent, opened))
            }
            Err(err) => {
                agent.stop().await;
                Err(err)
            }
        }
    }

    async fn shutdown(&self) {
        self.shutdown.cancel();
        self.pool.stop_all().await;
        debug!("every ACP agent is stopped");
    }
}

/// Why a running agent cannot take `turn` of the conversation `wanted`, if it cannot.
fn unfit(agent: &Agent, wanted: Option<&str>, turn: &Turn) -> Option<&'static str> {
    if agent.session_id.as_deref() != wanted {
        Some("the conversation changed")
    } else if agent.workspace != turn.workspace {
        Some("the workspace changed")
    } else {
        agent.broken()
    }
}

#[async_trait]
impl AgentBackend for AcpBackend {
    async fn run_turn(&self, turn: Turn) -> Result<ReplyStream, BackendError> {
        let span =
            tracing::info_span!("acp_turn", session = %turn.session, turn_id = %turn.meta.turn_id);
        self.inner.run_turn(turn).instrument(span).await
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    fn status(&self) -> BackendStatus {
        let pool = &self.inner.pool;
        BackendStatus::new(pool.sessions(), pool.processes(), 0)
    }
}
