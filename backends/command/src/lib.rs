//! An [`AgentBackend`] that runs an external command once per turn.
//!
//! Any CLI agent that reads a prompt on standard input and writes its answer to standard output can
//! answer the bridge's turns this way: `claude -p`, `llm`, a shell script. The command starts afresh for
//! every turn, so it keeps no conversation in memory; the environment tells it which conversation a turn
//! belongs to, so it can keep its own (`claude -p --resume`, a file per session, …).
//!
//! For each turn the command gets:
//! - the user's text on standard input, which is then closed;
//! - the turn's workspace as its working directory;
//! - the bridge's environment, the variables set with [`CommandBackend::env`], and
//!   `SYNTHESIS_SESSION_KEY`, `SYNTHESIS_TURN_ID` and (when the client sent one)
//!   `SYNTHESIS_CONVERSATION`.
//!
//! Standard output is the answer, streamed as it is written. Exit code 0 ends the answer; any other end
//! fails the turn with the exit status and the last lines of standard error. Cancelling the turn, dropping
//! its stream or shutting the backend down stops the command's whole process group (`SIGTERM`, then
//! `SIGKILL` after a grace period), and the reply stream ends only once the command has been reaped.
//!
//! The command is started by a [`Spawner`] on pipes ([`ProcessSpawner`] unless set otherwise with
//! [`CommandBackend::spawner`]), so it runs in a process group of its own and whatever it starts stops
//! with it. Unix only.
//!
//! # Example
//!
//! ```
//! use futures::StreamExt;
//! use synthesis_backend_command::CommandBackend;
//! use synthesis_bridge::{AgentBackend, ReplyEvent, SessionKey, Turn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = CommandBackend::new("sh")
//!     .args(["-c", "printf 'you said: '; cat"])
//!     .install_hint("Install a POSIX shell.");
//!
//! let turn = Turn::new(SessionKey::new("docs")?, std::env::temp_dir(), "hello");
//! let mut reply = backend.run_turn(turn).await?;
//! let mut text = String::new();
//! while let Some(event) = reply.next().await {
//!     match event {
//!         ReplyEvent::TextDelta(delta) => text.push_str(&delta),
//!         ReplyEvent::End(_) => assert_eq!(text, "you said: hello"),
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! backend.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod output;
mod turn;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::OsString;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use synthesis_bridge::spawner::{ProcessSpec, SpawnError, Stdio};
use synthesis_bridge::{
    AgentBackend, BackendError, BackendStatus, ReplyStream, SessionKey, Spawner, Turn,
};
use synthesis_spawner_process::ProcessSpawner;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

use crate::turn::TurnTask;

/// How many events may wait in a reply stream for a slow consumer before the command is held up.
const EVENT_BUFFER: usize = 32;

/// Runs an external command once per turn; see the [crate docs](crate).
#[derive(Debug)]
pub struct CommandBackend {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    install_hint: Option<String>,
    stderr_tail_bytes: usize,
    kill_grace: Duration,
    /// Starts the command; `None`: a [`ProcessSpawner`] with this backend's settings.
    spawner: Option<Arc<dyn Spawner>>,
    /// Running turns per session; [`CommandBackend::shutdown`] waits for it to empty.
    running: watch::Sender<HashMap<SessionKey, usize>>,
    /// Fired once by [`CommandBackend::shutdown`]: stops every turn and refuses new ones.
    shutdown: CancellationToken,
}

impl CommandBackend {
    /// How much of the end of standard error goes into an error message, unless set otherwise.
    pub const DEFAULT_STDERR_TAIL_BYTES: usize = 4096;
    /// How long a stopped command has between `SIGTERM` and `SIGKILL`, unless set otherwise.
    pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

    /// A backend that runs `program` (a path, or a name looked up on `PATH`) without arguments.
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            install_hint: None,
            stderr_tail_bytes: Self::DEFAULT_STDERR_TAIL_BYTES,
            kill_grace: Self::DEFAULT_KILL_GRACE,
            spawner: None,
            running: watch::Sender::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the command, on top of the bridge's own environment. The
    /// `SYNTHESIS_*` variables of each turn take precedence.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Tells users how to install the program; appended to the error when it cannot be found.
    pub fn install_hint(mut self, hint: impl Into<String>) -> Self {
        self.install_hint = Some(hint.into());
        self
    }

    /// How many bytes from the end of standard error a failed turn reports
    /// ([`CommandBackend::DEFAULT_STDERR_TAIL_BYTES`] by default).
    pub fn stderr_tail_bytes(mut self, bytes: usize) -> Self {
        self.stderr_tail_bytes = bytes;
        self
    }

    /// How long a stopped command may take to exit after `SIGTERM` before its process group gets `SIGKILL`
    /// ([`CommandBackend::DEFAULT_KILL_GRACE`] by default). A spawner set with [`CommandBackend::spawner`]
    /// has its own.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Starts the command with `spawner` (on [`Stdio::Pipes`]) instead of a [`ProcessSpawner`]: a test
    /// suite's fake, or a spawner that sandboxes.
    pub fn spawner(mut self, spawner: Arc<dyn Spawner>) -> Self {
        self.spawner = Some(spawner);
        self
    }

    /// The program as error messages name it.
    fn program_name(&self) -> Arc<str> {
        self.program.to_string_lossy().into()
    }

    /// Counts a turn of `session` as running, unless the backend is shutting down.
    fn register(&self, session: &SessionKey) -> Result<Registration, BackendError> {
        let mut accepted = false;
        // Checking under the same lock that `shutdown` waits on: a turn either sees the shutdown or is
        // counted before `shutdown` starts waiting.
        self.running.send_if_modified(|running| {
            accepted = !self.shutdown.is_cancelled();
            if accepted {
                *running.entry(session.clone()).or_default() += 1;
            }
            accepted
        });
        if !accepted {
            return Err(BackendError::unavailable(format!(
                "cannot run `{}`: the bridge is shutting down",
                self.program_name()
            )));
        }
        Ok(Registration {
            running: self.running.clone(),
            session: session.clone(),
        })
    }

    fn spec(&self, turn: &Turn) -> ProcessSpec {
        let mut spec = ProcessSpec::new(self.program.clone(), &turn.workspace)
            .args(&self.args)
            // The key clients use to reach the bridge is not the agent's business, nor its tools'.
            .env_remove("SYNTHESIS_API_KEY")
            // An inherited value would name some other conversation.
            .env_remove("SYNTHESIS_CONVERSATION")
            .stdio(Stdio::Pipes);
        for (key, value) in &self.env {
            spec = spec.env(key, value);
        }
        spec = spec
            .env("SYNTHESIS_SESSION_KEY", turn.session.as_str())
            .env("SYNTHESIS_TURN_ID", turn.meta.turn_id.to_string());
        if let Some(conversation) = &turn.meta.conversation {
            spec = spec.env("SYNTHESIS_CONVERSATION", conversation);
        }
        spec
    }

    fn spawn_error(&self, err: &SpawnError) -> BackendError {
        let program = self.program_name();
        let source = match err {
            SpawnError::NotFound { source, .. } => source,
            SpawnError::Io(source) => {
                return BackendError::failed(format!("cannot run `{program}`: {source}"));
            }
            other => return BackendError::failed(format!("cannot run `{program}`: {other}")),
        };
        let reason = match source.kind() {
            io::ErrorKind::NotFound if program.contains('/') => "not found",
            io::ErrorKind::NotFound => "not found on PATH",
            io::ErrorKind::PermissionDenied => "permission denied",
            _ => return BackendError::failed(format!("cannot run `{program}`: {source}")),
        };
        let mut message = format!("cannot run `{program}`: {reason}.");
        if let Some(hint) = &self.install_hint {
            message.push(' ');
            message.push_str(hint);
        }
        BackendError::unavailable(message)
    }

    async fn start(&self, turn: Turn) -> Result<ReplyStream, BackendError> {
        let registration = self.register(&turn.session)?;
        let spawner = self.spawner.clone().unwrap_or_else(|| {
            Arc::new(
                ProcessSpawner::default()
                    .kill_grace(self.kill_grace)
                    .output_bytes(self.stderr_tail_bytes),
            )
        });
        let process = spawner.spawn(self.spec(&turn)).await.map_err(|err| {
            warn!(%err, "cannot start the command");
            self.spawn_error(&err)
        })?;
        debug!(pid = process.pid(), "started the command");

        let (events, mut reply) = mpsc::channel(EVENT_BUFFER);
        let task = TurnTask {
            process,
            program: self.program_name(),
            input: turn.text,
            stderr_tail_bytes: self.stderr_tail_bytes,
            kill_grace: self.kill_grace,
            cancel: turn.cancel,
            shutdown: self.shutdown.clone(),
            registration,
            events,
        };
        tokio::spawn(task.run().in_current_span());
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            reply.poll_recv(cx)
        })))
    }
}

#[async_trait]
impl AgentBackend for CommandBackend {
    async fn run_turn(&self, turn: Turn) -> Result<ReplyStream, BackendError> {
        let span = tracing::info_span!(
            "command_turn",
            session = %turn.session,
            turn_id = %turn.meta.turn_id,
        );
        self.start(turn).instrument(span).await
    }

    async fn shutdown(&self) {
        self.shutdown.cancel();
        let mut running = self.running.subscribe();
        // Fails only if the sender is gone, and `self` holds it.
        let _ = running.wait_for(HashMap::is_empty).await;
    }

    fn status(&self) -> BackendStatus {
        let running = self.running.borrow();
        BackendStatus::new(running.len(), running.values().sum(), 0)
    }
}

/// One running turn as counted in [`CommandBackend::status`]; dropping it uncounts the turn.
#[derive(Debug)]
pub(crate) struct Registration {
    running: watch::Sender<HashMap<SessionKey, usize>>,
    session: SessionKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.running.send_modify(|running| {
            if let Entry::Occupied(mut entry) = running.entry(self.session.clone()) {
                *entry.get_mut() -= 1;
                if *entry.get() == 0 {
                    entry.remove();
                }
            }
        });
    }
}
