//! [`ClaudeCliBackend`]: one long-lived Claude Code process per session, in one of two modes.
//!
//! For each session key the backend keeps a `claude` process running in the session's workspace. What
//! both modes share: the pool (one process per session, [`ClaudeCliConfig::max_processes`], idle
//! processes stopped), the [`SessionStore`] that keeps each session's conversation id, the choice between
//! `--session-id` (a conversation Claude Code has no transcript of) and `--resume`, and failing a turn at
//! once when its process dies.
//!
//! - **Stream-json** ([`ClaudeCliBackend::stream_json`]): `claude -p` on pipes, speaking stream-json. A
//!   message is a line on its standard input; text deltas, permission requests and the prompt's `result`
//!   come back on its standard output. Works with every login; every token streams.
//! - **Channel** ([`ClaudeCliBackend::new`]): the interactive TUI under a pseudo-terminal (on pipes the
//!   CLI falls back to one-shot print mode). The process loads the bridge's channel plugin as its only MCP
//!   server; the plugin connects back over the [`ChannelTransport`] and turns each pushed message into a
//!   `notifications/claude/channel` notification. Claude answers by calling the plugin's `reply` tool,
//!   and the text streams back. Needs a login with Claude Code's channels feature.
//!
//! How a channel-mode process is launched (see `docs/protocol.md` and the facts it cites):
//! - `--mcp-config` with the plugin and `--strict-mcp-config`;
//!   `--dangerously-load-development-channels server:NAME` (never also `--channels`, which makes the CLI
//!   skip the server); the development-channels dialog is confirmed once it is drawn on the terminal;
//! - `--session-id U` for a conversation Claude Code has no transcript of, `--resume U` for one it has,
//!   where `U` is kept in the [`SessionStore`] so a restarted bridge resumes the same conversation;
//! - `--settings` installing three `http` hooks that report to the transport's
//!   [`hook_endpoint`](ChannelTransport::hook_endpoint): `UserPromptSubmit` confirms that a pushed message
//!   started a prompt, `Stop` that the prompt is over, `StopFailure` that its model request failed. A turn
//!   ends when the plugin sends its final reply, or when `Stop` comes: Claude answered without the reply
//!   tool, and its last words are the answer;
//! - `--permission-mode` (`dontAsk` by default) with `--allowedTools mcp__NAME__reply`, the client's
//!   tools (`mcp__NAME__TOOL`) and any extras;
//! - the environment `SYNTHESIS_WS_URL`, `SYNTHESIS_OPENCLAW_SESSION`, `SYNTHESIS_CLAUDE_SESSION`,
//!   `SYNTHESIS_BRIDGE_TOKEN` and, when the client offers tools, `SYNTHESIS_CLIENT_TOOLS` on top of the
//!   bridge's own.
//!
//! A message is pushed only once the previous prompt is over, and counts as delivered only when Claude
//! Code confirms it started a prompt; one that is not confirmed in time is pushed again (the transport
//! keeps it from starting twice), and after the last attempt the turn fails and the process is restarted.
//! A conversation whose transcript holds no conversation (Claude Code was killed before writing it) is
//! replaced by a new one rather than resumed.
//!
//! A channel-mode process is ready when its plugin has said hello with the right token; a stream-json one
//! as soon as it runs. A process idle for
//! [`ClaudeCliConfig::process_idle`] is stopped; at [`ClaudeCliConfig::max_processes`] the longest-idle one
//! makes room, never one in a turn (when all are busy the turn gets 503 with `Retry-After`). A process that
//! dies mid-turn fails that turn at once; the next turn resumes the conversation in a new one. Cancelling a
//! turn types ESC into the terminal, or sends stream-json's `interrupt` request.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use synthesis_backend_claude_cli::{ClaudeCliBackend, ClaudeCliConfig};
//! use synthesis_bridge::MemoryStore;
//! use synthesis_spawner_process::ProcessSpawner;
//! use synthesis_transport_ws::{WsConfig, WsTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let transport = WsTransport::bind("127.0.0.1:18791".parse().unwrap(), WsConfig::default()).await?;
//! let backend = ClaudeCliBackend::new(
//!     ClaudeCliConfig::new("/usr/local/bin/bridge"),
//!     Arc::new(ProcessSpawner::default()),
//!     Arc::new(transport),
//!     Arc::new(MemoryStore::new()),
//! );
//! # drop(backend);
//!
//! // The stream-json mode needs no plugin and no transport.
//! let backend = ClaudeCliBackend::stream_json(
//!     ClaudeCliConfig::default(),
//!     Arc::new(ProcessSpawner::default()),
//!     Arc::new(MemoryStore::new()),
//! );
//! # drop(backend);
//! # Ok(())
//! # }
//! ```
//!
//! # Testing with a fake `claude`
//!
//! A test suite swaps the spawner for a [`FakeSpawner`](synthesis_bridge::spawner::fake::FakeSpawner)
//! whose script plays `claude -p`: it reads each message line and prints stream-json records.
//!
//! ```
//! use std::sync::Arc;
//!
//! use futures::StreamExt;
//! use synthesis_backend_claude_cli::{ClaudeCliBackend, ClaudeCliConfig};
//! use synthesis_bridge::spawner::fake::FakeSpawner;
//! use synthesis_bridge::{AgentBackend, MemoryStore, ReplyEvent, SessionKey, Turn, Usage};
//!
//! const DELTA: &str = r#"{"type":"stream_event","parent_tool_use_id":null,"event":{"type":"content_block_delta","delta":{"type":"text_delta","text":"hi!"}}}"#;
//! const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"hi!","usage":{"input_tokens":3,"output_tokens":1}}"#;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let claude = FakeSpawner::new(|_spec, mut claude| async move {
//!     while let Some(_message) = claude.read_line().await {
//!         claude.print(&format!("{DELTA}\n{RESULT}\n")).await;
//!     }
//! });
//! let backend = ClaudeCliBackend::stream_json(
//!     ClaudeCliConfig::default(),
//!     Arc::new(claude.clone()),
//!     Arc::new(MemoryStore::new()),
//! );
//! let turn = Turn::new(SessionKey::new("test")?, std::env::temp_dir(), "hello");
//! let events: Vec<ReplyEvent> = backend.run_turn(turn).await?.collect().await;
//! let usage = ReplyEvent::Usage(Usage::new(3, 1));
//! assert_eq!(events, [ReplyEvent::text("hi!"), usage, ReplyEvent::end()]);
//! assert!(claude.spawned()[0].args.iter().any(|arg| arg == "stream-json"));
//! backend.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod agent;
mod channel;
mod client_tools;
mod config;
pub mod plugin;
mod pool;
mod retry;
mod screen;
mod stream_json;
mod transcript;
mod turn;

use std::sync::Arc;

use async_trait::async_trait;
use synthesis_bridge::store::{self, now_in_millis};
use synthesis_bridge::transport::{ChannelTransport, InboundMessage};
use synthesis_bridge::{
    AgentBackend, BackendError, BackendStatus, ReplyEvent, ReplyStream, SessionKey, SessionRecord,
    SessionStore, Spawner, ToolResult, Turn,
};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, debug, info, warn};
use uuid::Uuid;

pub use crate::config::{ClaudeCliConfig, PermissionMode, UnknownPermissionMode};

use crate::agent::{Agent, ClientSetup, Conversation, LaunchError, Mode, Services};
use crate::pool::{Connected, Permit, Pool, SessionState, Slot, SlotGuard};
use crate::transcript::Transcript;
use crate::turn::{Resumption, TurnRun};
use synthesis_bridge::instructions::fingerprint;
use synthesis_bridge::pool::Sweep;

/// How many reply events wait for a slow consumer before the turn holds back.
const EVENT_BUFFER: usize = 32;

/// One long-lived `claude` process per session; see the [crate docs](crate).
#[derive(Debug)]
pub struct ClaudeCliBackend {
    inner: Arc<Inner>,
    _stop_sweeping: DropGuard,
}

struct Inner {
    services: Services,
    store: Arc<dyn SessionStore>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.services.config)
            .field("pool", &self.services.pool)
            .finish_non_exhaustive()
    }
}

impl ClaudeCliBackend {
    /// A backend in the channel mode: it starts interactive processes with `spawner`, reaches their
    /// plugins through `transport` and remembers conversations in `store`. Must be called within a Tokio
    /// runtime: it starts the task that stops idle processes.
    pub fn new(
        config: ClaudeCliConfig,
        spawner: Arc<dyn Spawner>,
        transport: Arc<dyn ChannelTransport>,
        store: Arc<dyn SessionStore>,
    ) -> Self {
        Self::start(config, spawner, Mode::Channel(transport), store)
    }

    /// A backend in the stream-json mode: it starts `claude -p` processes on pipes with `spawner` (which
    /// must honour [`Stdio::Pipes`](synthesis_bridge::spawner::Stdio::Pipes)) and remembers
    /// conversations in `store`. Must be called within a Tokio runtime.
    pub fn stream_json(
        config: ClaudeCliConfig,
        spawner: Arc<dyn Spawner>,
        store: Arc<dyn SessionStore>,
    ) -> Self {
        Self::start(config, spawner, Mode::StreamJson, store)
    }

    fn start(
        config: ClaudeCliConfig,
        spawner: Arc<dyn Spawner>,
        mode: Mode,
        store: Arc<dyn SessionStore>,
    ) -> Self {
        let pool = Pool::new(config.max_processes, "claude");
        let retry_window = config.retry_window;
        let stop_sweeping = pool.sweep(Sweep {
            idle: config.process_idle,
            ttl: config.session_ttl,
            store: store.clone(),
            since: now_in_millis(),
            // A message a retry may still carry on with, or a new conversation still to start.
            keep: Box::new(move |session: &SessionState| {
                let retry_may_come = session.unanswered().is_some_and(|unanswered| {
                    retry_window.is_some_and(|window| unanswered.at.elapsed() <= window)
                });
                retry_may_come || session.new_conversation_wanted()
            }),
        });
        let inner = Arc::new(Inner {
            services: Services {
                config: Arc::new(config),
                spawner,
                mode,
                pool,
                connected: Connected::default(),
            },
            store,
            shutdown: CancellationToken::new(),
        });
        Self {
            inner,
            _stop_sweeping: stop_sweeping,
        }
    }
}

impl Inner {
    async fn run_turn(&self, mut turn: Turn) -> Result<ReplyStream, BackendError> {
        if self.shutdown.is_cancelled() {
            return Err(BackendError::unavailable("the bridge is shutting down"));
        }
        let slot = self.services.pool.slot(&turn.session);
        // A turn of this session waits for the client's tool results: these are they, or the client moved
        // on to a new message.
        if let Some(paused) = slot.state.take_paused() {
            if !turn.meta.tool_results.is_empty() && !turn.meta.one_off {
                let (events, reply) = mpsc::channel(EVENT_BUFFER);
                let resumption = Resumption::Results {
                    results: std::mem::take(&mut turn.meta.tool_results),
                    events,
                    cancel: turn.cancel.clone(),
                };
                match paused.send(resumption).await {
                    Ok(()) => return Ok(reply_stream(reply)),
                    // It gave up waiting meanwhile: the results become a message of their own.
                    Err(mpsc::error::SendError(Resumption::Results { results, .. })) => {
                        turn.meta.tool_results = results;
                    }
                    Err(_) => {}
                }
            } else {
                info!(session = %turn.session, "a new message instead of the tool results claude waits for: its calls get an error");
                let _ = paused.send(Resumption::Abandoned).await;
            }
        }
        if !turn.meta.tool_results.is_empty() {
            // Results for calls nobody waits on any more (they timed out, the bridge restarted): Claude
            // gets them as a message, rather than the client an error for what it did right.
            turn.text = ToolResult::as_message(&turn.meta.tool_results);
        }
        let Some(mut guard) = slot.lock_for_turn(&turn.cancel).await else {
            return Err(BackendError::Cancelled);
        };
        if self.shutdown.is_cancelled() {
            return Err(BackendError::unavailable("the bridge is shutting down"));
        }
        slot.touch();
        if turn.meta.one_off {
            return self.run_one_off(turn, slot, guard).await;
        }
        let (stored, mut record) = store::record_for_turn(self.store.as_ref(), &turn).await;
        // Kept until the new conversation is saved: a launch that fails must not forget it.
        let fresh = slot.state.new_conversation_wanted();
        if fresh {
            record.start_new_conversation(record.client_conversation.clone());
        }
        let conversation = claude_conversation(&mut record);

        let fits = guard
            .as_ref()
            .map(|agent| self.fits(agent, conversation, &turn));
        if fits != Some(true) {
            // A new process is needed: refuse what it could not take before the running one is stopped.
            self.services.mode.check_client_tools(&turn.meta.tools)?;
        }
        if fits == Some(false)
            && let Some(agent) = guard.take()
        {
            agent.stop().await;
        }
        if guard.is_none() {
            let agent = self.launch(&turn, &mut record).await?;
            if agent.started_conversation {
                slot.state
                    .instructions
                    .started_with(agent.client.system_prompt.as_deref());
            }
            *guard = Some(agent);
        }
        record.started = true;
        // The launch may have had to start a new conversation.
        let conversation = claude_conversation(&mut record);
        let ttl = self.services.config.session_ttl;
        store::save_if_needed(self.store.as_ref(), stored.as_ref(), record, ttl).await;
        if fresh {
            slot.state.new_conversation_started();
        }

        let continuing = self.continuing(&slot, &turn.text, conversation).await;
        // A retry's note replaces the text: the instructions wait for the next new message.
        let told = match continuing {
            None => {
                (slot.state.instructions).note_for(turn.meta.system_prompt.as_deref(), &turn.text)
            }
            Some(_) => None,
        };
        if told.is_some() {
            info!(session = %turn.session, "the client's instructions changed: claude gets them with the message");
        }
        let text = told.unwrap_or_else(|| turn.text.clone());
        let (message, original) =
            retry::message_for(turn.session.as_str(), text, continuing, self.wording());
        if let Some(retry_of) = &message.meta.retry_of {
            info!(session = %turn.session, %retry_of, "the client asked again for an answer claude did not finish; it carries on with the same message");
        }
        Ok(self.spawn_turn(slot, guard, turn, message, original, false))
    }

    /// A turn of a request that named no session: a new process in a new conversation, which is stopped
    /// once the turn is over; no record is kept and no retry carries on with it.
    async fn run_one_off(
        &self,
        turn: Turn,
        slot: Arc<Slot>,
        mut guard: SlotGuard,
    ) -> Result<ReplyStream, BackendError> {
        let permit = self.room(&turn.session).await?;
        let conversation = Conversation::Once(Uuid::new_v4());
        let services = &self.services;
        let agent = Agent::launch(
            services,
            &turn.session,
            conversation,
            &turn.workspace,
            &ClientSetup::of(&turn),
            permit,
            &turn.cancel,
        )
        .await?;
        *guard = Some(agent);
        let (message, _) = retry::message_for(
            turn.session.as_str(),
            turn.text.clone(),
            None,
            self.wording(),
        );
        Ok(self.spawn_turn(slot, guard, turn, message, None, true))
    }

    /// Runs the turn of `message` on the agent `guard` holds, in a task of its own; returns its reply.
    fn spawn_turn(
        &self,
        slot: Arc<Slot>,
        guard: SlotGuard,
        turn: Turn,
        message: InboundMessage,
        original: Option<retry::Unanswered>,
        one_off: bool,
    ) -> ReplyStream {
        let (events, reply) = mpsc::channel(EVENT_BUFFER);
        // Known to Claude once the message reaches it; a retry's note carries none.
        let instructions = original
            .is_none()
            .then(|| fingerprint(turn.meta.system_prompt.as_deref()));
        let run = TurnRun {
            session: slot,
            slot: guard,
            text: turn.text,
            original,
            delivered: false,
            answered: false,
            message,
            cancel: turn.cancel,
            shutdown: self.shutdown.clone(),
            config: self.services.config.clone(),
            events,
            one_off,
            instructions,
        };
        tokio::spawn(run.run().in_current_span());
        reply_stream(reply)
    }

    /// Whether a running agent can take `turn`, of `conversation`.
    fn fits(&self, agent: &Agent, conversation: Uuid, turn: &Turn) -> bool {
        let reason = if agent.conversation != conversation {
            "the conversation changed"
        } else if agent.workspace != turn.workspace {
            "the workspace changed"
        } else if let Some(reason) = agent.unfit_for(&turn.meta.tools) {
            // Claude Code takes an MCP server's tool list once: a change takes a new process, which
            // resumes the conversation.
            reason
        } else if let Some(reason) = agent.broken() {
            reason
        } else {
            return true;
        };
        info!(session = %agent.session(), reason, "restarting claude");
        false
    }

    /// The unanswered message of the session that a turn of `text` retries, if Claude's `conversation`
    /// holds it: claude writes a message down 0.2 to 0.5 s after it started it, and may have died in
    /// between.
    async fn continuing(
        &self,
        slot: &Slot,
        text: &str,
        conversation: Uuid,
    ) -> Option<retry::Unanswered> {
        let unanswered = slot.state.unanswered();
        let retried = retry::retried(text, unanswered.as_ref(), self.services.config.retry_window)?;
        let dir = self.services.config.claude_config_dir();
        // A channel message is found by its id; a stream-json prompt is the text as it was sent.
        let held = match self.services.mode {
            Mode::Channel(_) => {
                let id = retried.message_id.clone();
                transcript::Held::Message(id)
            }
            Mode::StreamJson => transcript::Held::Prompt(retried.text.clone()),
        };
        // Transcripts can be megabytes: read off the runtime's threads.
        let held =
            tokio::task::spawn_blocking(move || held.in_conversation(dir.as_deref(), conversation))
                .await
                .unwrap_or(false);
        held.then(|| retried.clone())
    }

    /// How a note to Claude names the message it is about.
    fn wording(&self) -> retry::Wording {
        match self.services.mode {
            Mode::Channel(_) => retry::Wording::Channel,
            Mode::StreamJson => retry::Wording::StreamJson,
        }
    }

    /// Starts a process for `record`'s conversation: resumed when Claude Code can resume it, else new
    /// (and then `record` names the new one).
    async fn launch(&self, turn: &Turn, record: &mut SessionRecord) -> Result<Agent, BackendError> {
        let (session, workspace, cancel) = (&turn.session, turn.workspace.as_path(), &turn.cancel);
        let client = &ClientSetup::of(turn);
        let config = &self.services.config;
        let permit = self.room(session).await?;
        let config_dir = config.claude_config_dir();
        let id = claude_conversation(record);
        // Transcripts can be megabytes: read off the runtime's threads.
        let state =
            tokio::task::spawn_blocking(move || transcript::state(config_dir.as_deref(), id))
                .await
                .unwrap_or(Transcript::Missing);
        let conversation = match state {
            Transcript::Conversation => Conversation::Resume(id),
            Transcript::Missing => Conversation::Start(id),
            Transcript::Empty => {
                warn!(%session, conversation = %id, "claude was stopped before it wrote the conversation; starting a new one");
                record.start_new_conversation(record.client_conversation.clone());
                Conversation::Start(claude_conversation(record))
            }
        };
        let services = &self.services;
        match Agent::launch(
            services,
            session,
            conversation,
            workspace,
            client,
            permit,
            cancel,
        )
        .await
        {
            Ok(agent) => Ok(agent),
            Err(LaunchError::Failed(error)) => Err(error),
            // The transcript looked resumable but is not: rather than fail every turn of the session for
            // ever, its conversation starts again.
            Err(LaunchError::NoConversation) => {
                warn!(%session, conversation = %id, "claude cannot resume the conversation (\"No conversation found\"); starting a new one");
                record.start_new_conversation(record.client_conversation.clone());
                let permit = self.room(session).await?;
                let fresh = Conversation::Start(claude_conversation(record));
                Agent::launch(services, session, fresh, workspace, client, permit, cancel)
                    .await
                    .map_err(BackendError::from)
            }
        }
    }

    /// A place in the pool for one more process of `session`, stopping the longest-idle other one when the
    /// pool is full.
    async fn room(&self, session: &SessionKey) -> Result<Permit, BackendError> {
        let retry_after = self.services.config.busy_retry_after;
        self.services.pool.room(session, retry_after).await
    }

    async fn shutdown(&self) {
        self.shutdown.cancel();
        self.services.pool.stop_all().await;
        debug!("every claude process is stopped");
    }
}

/// The stream of the events a turn sends on `reply`.
fn reply_stream(mut reply: mpsc::Receiver<ReplyEvent>) -> ReplyStream {
    Box::pin(futures::stream::poll_fn(move |cx| reply.poll_recv(cx)))
}

/// The Claude Code session id of `record`'s conversation. Claude Code takes the id it is given, so one is
/// picked for a record that has none; an id Claude Code would refuse (not a uuid) starts a new conversation.
fn claude_conversation(record: &mut SessionRecord) -> Uuid {
    if let Some(id) = record
        .conversation_id
        .as_deref()
        .and_then(|id| id.parse().ok())
    {
        return id;
    }
    if record.conversation_id.is_some() {
        warn!(session = %record.key, "the stored conversation id is not a Claude Code session id; starting a new conversation");
        record.start_new_conversation(record.client_conversation.clone());
    }
    let id = Uuid::new_v4();
    record.conversation_id = Some(id.to_string());
    id
}

#[async_trait]
impl AgentBackend for ClaudeCliBackend {
    async fn run_turn(&self, turn: Turn) -> Result<ReplyStream, BackendError> {
        let span = tracing::info_span!("claude_turn", session = %turn.session, turn_id = %turn.meta.turn_id);
        self.inner.run_turn(turn).instrument(span).await
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    fn status(&self) -> BackendStatus {
        let pool = &self.inner.services.pool;
        BackendStatus::new(
            pool.sessions(),
            pool.processes(),
            self.inner.services.connected.count(),
        )
    }
}
