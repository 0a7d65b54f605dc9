//! One running `claude` process in either mode: what every mode shares (its conversation, workspace and
//! place in the pool), and starting and stopping it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use synthesis_bridge::pool::Pooled;
use synthesis_bridge::spawner::{ProcessHandle, SpawnError, Spawner};
use synthesis_bridge::transport::ChannelTransport;
use synthesis_bridge::{BackendError, ClientTool, SessionKey};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::channel::{self, ChannelIo};
use crate::config::ClaudeCliConfig;
use crate::pool::{Connected, Permit, Pool};
use crate::stream_json::{self, StreamJsonIo};

/// Whether a process starts a conversation or continues one. Claude Code refuses `--session-id` for an id
/// it has a transcript of, and `--resume` for one it has none of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conversation {
    Start(Uuid),
    Resume(Uuid),
    /// A one-off turn's: started, and not kept (in the stream-json mode, not even written down).
    Once(Uuid),
}

impl Conversation {
    pub(crate) fn id(self) -> Uuid {
        match self {
            Self::Start(id) | Self::Resume(id) | Self::Once(id) => id,
        }
    }

    /// The command-line flag and value that choose it.
    pub(crate) fn flag(self) -> [String; 2] {
        match self {
            Self::Start(id) | Self::Once(id) => ["--session-id".to_owned(), id.to_string()],
            Self::Resume(id) => ["--resume".to_owned(), id.to_string()],
        }
    }
}

/// What the client asks of a process besides its conversation: its tools and its instructions, both given
/// when the process starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientSetup {
    pub(crate) tools: Vec<ClientTool>,
    /// Added to Claude Code's own system prompt (`--append-system-prompt`).
    pub(crate) system_prompt: Option<String>,
}

impl ClientSetup {
    /// What `turn` asks for.
    pub(crate) fn of(turn: &synthesis_bridge::Turn) -> Self {
        Self {
            tools: turn.meta.tools.clone(),
            system_prompt: turn.meta.system_prompt.clone(),
        }
    }

    /// `--append-system-prompt` with the client's instructions, if it has any. Claude Code 2.1.329 keeps the
    /// system prompt a conversation started with: a resumed one ignores the flag
    /// (`docs/claude-cli-measurements.md`, N9).
    pub(crate) fn system_prompt_args(&self) -> Vec<String> {
        match &self.system_prompt {
            Some(prompt) => vec!["--append-system-prompt".to_owned(), prompt.clone()],
            None => Vec::new(),
        }
    }
}

/// Why a process did not come up.
#[derive(Debug)]
pub(crate) enum LaunchError {
    /// Claude Code has no conversation to resume under that id: the caller starts a new one.
    NoConversation,
    /// Anything else; the turn fails with it.
    Failed(BackendError),
}

impl From<BackendError> for LaunchError {
    fn from(error: BackendError) -> Self {
        Self::Failed(error)
    }
}

impl From<LaunchError> for BackendError {
    fn from(error: LaunchError) -> Self {
        match error {
            LaunchError::Failed(error) => error,
            LaunchError::NoConversation => BackendError::unavailable(
                "claude has no conversation to resume under this id (\"No conversation found\")",
            ),
        }
    }
}

/// How the backend talks to Claude Code.
#[derive(Clone)]
pub(crate) enum Mode {
    /// The interactive TUI under a terminal, messages through the channel plugin over `transport`.
    Channel(Arc<dyn ChannelTransport>),
    /// `claude -p` over stream-json on pipes.
    StreamJson,
}

impl Mode {
    /// Refuses client `tools` that a process of this mode could not be started with.
    pub(crate) fn check_client_tools(&self, tools: &[ClientTool]) -> Result<(), BackendError> {
        match self {
            Mode::Channel(_) => crate::channel::check_client_tools(tools),
            Mode::StreamJson => Ok(()),
        }
    }
}

/// The services an agent needs, shared by every agent of a backend.
#[derive(Clone)]
pub(crate) struct Services {
    pub(crate) config: Arc<ClaudeCliConfig>,
    pub(crate) spawner: Arc<dyn Spawner>,
    pub(crate) mode: Mode,
    pub(crate) pool: Pool,
    /// How many processes have their plugin connected.
    pub(crate) connected: Connected,
}

/// How the bridge talks to one process: the mode's own state.
pub(crate) enum Io {
    Channel(ChannelIo),
    StreamJson(StreamJsonIo),
}

/// A `claude` process that can take turns.
pub(crate) struct Agent {
    pub(crate) process: Box<dyn ProcessHandle>,
    /// The client's tools and instructions it was started with.
    pub(crate) client: ClientSetup,
    /// Whether its conversation began with it: then it has the instructions it was started with.
    pub(crate) started_conversation: bool,
    pub(crate) conversation: Uuid,
    pub(crate) workspace: PathBuf,
    pub(crate) io: Io,
    pub(crate) session: SessionKey,
    permit: Option<Permit>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("pid", &self.process.pid())
            .field("session", &self.session)
            .field("conversation", &self.conversation)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Starts `claude` for `session` and waits until it can take a turn.
    pub(crate) async fn launch(
        services: &Services,
        session: &SessionKey,
        conversation: Conversation,
        workspace: &Path,
        client: &ClientSetup,
        permit: Permit,
        cancel: &CancellationToken,
    ) -> Result<Self, LaunchError> {
        let (process, io) = match &services.mode {
            Mode::Channel(transport) => {
                let (process, io) = channel::launch(
                    services,
                    transport,
                    session,
                    conversation,
                    workspace,
                    client,
                    cancel,
                )
                .await?;
                (process, Io::Channel(io))
            }
            Mode::StreamJson => {
                let (process, io) =
                    stream_json::launch(services, session, conversation, workspace, client).await?;
                (process, Io::StreamJson(io))
            }
        };
        Ok(Self {
            process,
            client: client.clone(),
            started_conversation: !matches!(conversation, Conversation::Resume(_)),
            conversation: conversation.id(),
            workspace: workspace.to_owned(),
            io,
            session: session.clone(),
            permit: Some(permit),
        })
    }

    /// Why it cannot serve a turn that offers `tools`, if it cannot: the client's tools are listed once,
    /// at start-up. (Instructions are not a reason: a resumed conversation keeps those it started with,
    /// so a change goes to Claude as a note instead.)
    pub(crate) fn unfit_for(&self, tools: &[ClientTool]) -> Option<&'static str> {
        (self.client.tools != tools).then_some("the client's tools changed")
    }

    /// Why this agent cannot take another turn, if it cannot.
    pub(crate) fn broken(&self) -> Option<&'static str> {
        match &self.io {
            Io::Channel(channel) if !channel.link.is_connected() => {
                Some("its channel plugin is not connected")
            }
            Io::StreamJson(io) if io.is_closed() => Some("its output has ended"),
            _ => None,
        }
    }

    /// Stops the process (and everything it started) and ends its channel registration.
    pub(crate) async fn stop(self) {
        debug!(session = %self.session, pid = self.process.pid(), "stopping claude");
        if let Io::Channel(channel) = &self.io {
            channel.revoke();
        }
        if let Err(err) = self.process.kill().await {
            warn!(session = %self.session, %err, "cannot stop claude");
        }
    }

    pub(crate) fn session(&self) -> &SessionKey {
        &self.session
    }
}

impl Pooled for Agent {
    fn session(&self) -> &SessionKey {
        &self.session
    }

    fn take_permit(&mut self) -> Option<Permit> {
        self.permit.take()
    }

    fn stop(self) -> impl Future<Output = ()> + Send {
        Agent::stop(self)
    }
}

/// The error of a `claude` that cannot be started at all.
pub(crate) fn spawn_error(config: &ClaudeCliConfig, err: SpawnError) -> BackendError {
    let program = config.program.to_string_lossy();
    match err {
        SpawnError::NotFound { .. } => BackendError::unavailable(format!(
            "cannot run `{program}`: not found or not executable. Install Claude Code (`npm install -g @anthropic-ai/claude-code`) or point --claude-bin at it."
        )),
        other => BackendError::unavailable(format!("cannot start `{program}`: {other}")),
    }
}
