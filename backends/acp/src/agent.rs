//! One agent process: starting it (`initialize`), opening its session (`session/new`, or `session/resume`
//! / `session/load` for a conversation it had before), and stopping it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_client_protocol_schema::ProtocolVersion;
use agent_client_protocol_schema::v1::{
    AgentCapabilities, ClientCapabilities, FileSystemCapabilities, Implementation,
    InitializeRequest, InitializeResponse, LoadSessionRequest, NewSessionRequest,
    NewSessionResponse, ResumeSessionRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use synthesis_bridge::pool::{Permit, Pooled};
use synthesis_bridge::spawner::{ProcessHandle, ProcessSpec, SpawnError, Spawner, Stdio};
use synthesis_bridge::{BackendError, SessionKey};
use tracing::{debug, info, warn};

use crate::config::AcpConfig;
use crate::rpc::{CallError, Connection};

/// A running agent process with its connection, serving one chat session.
pub(crate) struct Agent {
    pub(crate) process: Arc<dyn ProcessHandle>,
    pub(crate) rpc: Connection,
    /// The ACP session this process serves, once opened.
    pub(crate) session_id: Option<String>,
    pub(crate) workspace: PathBuf,
    pub(crate) session: SessionKey,
    /// What the agent calls itself (`agentInfo.name`), or its program's name.
    pub(crate) name: String,
    capabilities: AgentCapabilities,
    permit: Option<Permit>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("pid", &self.process.pid())
            .field("session", &self.session)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// How a session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opened {
    New,
    Resumed,
    Loaded,
}

impl Agent {
    /// Starts the agent in `workspace` and initializes the connection.
    pub(crate) async fn launch(
        config: &AcpConfig,
        spawner: &dyn Spawner,
        session: &SessionKey,
        workspace: &Path,
        permit: Permit,
    ) -> Result<Self, BackendError> {
        let program = config.agent_name();
        info!(%session, workspace = %workspace.display(), "starting the ACP agent {program}");
        let process: Arc<dyn ProcessHandle> = spawner
            .spawn(spec(config, workspace))
            .await
            .map_err(|err| spawn_error(config, err))?
            .into();
        let Some(stdout) = process.take_stdout() else {
            let _ = process.kill().await;
            return Err(BackendError::unavailable(
                "the spawner gave the ACP agent no standard output to read: ACP runs on pipes (Stdio::Pipes)",
            ));
        };
        let rpc = Connection::new(process.clone(), stdout, session.clone());
        let mut agent = Self {
            process,
            rpc,
            session_id: None,
            workspace: workspace.to_owned(),
            session: session.clone(),
            name: program,
            capabilities: AgentCapabilities::default(),
            permit: Some(permit),
        };
        let initialized: InitializeResponse =
            match agent.setup_call("initialize", initialize_request()).await {
                Ok(initialized) => initialized,
                Err(err) => {
                    agent.stop().await;
                    return Err(err);
                }
            };
        if let Some(info) = &initialized.agent_info {
            agent.name = info.name.clone();
        }
        debug!(%session, agent = %agent.name, capabilities = ?initialized.agent_capabilities, "the ACP agent is initialized");
        agent.capabilities = initialized.agent_capabilities;
        Ok(agent)
    }

    /// Opens the session this process serves: `wanted`, the conversation the chat session had, when the
    /// agent can resume or load it; else a new one.
    pub(crate) async fn open(&mut self, wanted: Option<&str>) -> Result<Opened, BackendError> {
        let cwd = self.workspace.clone();
        if let Some(id) = wanted {
            let reopened = if self.capabilities.session_capabilities.resume.is_some() {
                self.setup_call::<Value>(
                    "session/resume",
                    ResumeSessionRequest::new(id.to_owned(), &cwd),
                )
                .await
                .map(|_| Opened::Resumed)
            } else if self.capabilities.load_session {
                self.setup_call::<Value>(
                    "session/load",
                    LoadSessionRequest::new(id.to_owned(), &cwd),
                )
                .await
                .map(|_| Opened::Loaded)
            } else {
                warn!(session = %self.session, agent = %self.name, "the agent can neither resume nor load a session; its conversation starts again");
                return self.open_new().await;
            };
            match reopened {
                Ok(opened) => {
                    self.session_id = Some(id.to_owned());
                    return Ok(opened);
                }
                // The process is gone: a new session could not be opened either.
                Err(err) if self.rpc.is_closed() => return Err(err),
                Err(err) => {
                    warn!(session = %self.session, agent = %self.name, %err, "the agent cannot reopen the session's conversation; starting a new one");
                }
            }
        }
        self.open_new().await
    }

    async fn open_new(&mut self) -> Result<Opened, BackendError> {
        let opened: NewSessionResponse = self
            .setup_call("session/new", NewSessionRequest::new(&self.workspace))
            .await?;
        self.session_id = Some(opened.session_id.to_string());
        Ok(Opened::New)
    }

    /// Sends a request of the start-up and waits for its answer. (What the agent starts meanwhile, such as
    /// a loaded session's replay, the reader declines: no turn is running.)
    async fn setup_call<R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: impl Serialize,
    ) -> Result<R, BackendError> {
        let value = match self.rpc.call(method, params).answer().await {
            Ok(value) => value,
            Err(err @ CallError::Rpc { code, .. }) => {
                let hint = if code == AUTH_REQUIRED {
                    ". Log in to the agent first (run it once by hand), or give it its API key"
                } else {
                    ""
                };
                return Err(BackendError::unavailable(format!(
                    "the ACP agent {} refused {method}: {err}{hint}{}",
                    self.name,
                    self.last_words()
                )));
            }
            Err(CallError::Closed) => {
                let how = self.how_it_ended().await;
                return Err(BackendError::unavailable(format!(
                    "the ACP agent {} {how} before it answered {method}",
                    self.name
                )));
            }
        };
        serde_json::from_value(value).map_err(|err| {
            BackendError::unavailable(format!(
                "the ACP agent {} answered {method} with something that is not ACP: {err}",
                self.name
            ))
        })
    }

    /// How the process ended, once its output did: `exited with code 1 (its last words: "…")`, `was killed
    /// by signal 9 (SIGKILL)`, or that it closed its output when it still runs.
    pub(crate) async fn how_it_ended(&self) -> String {
        match tokio::time::timeout(EXIT_SETTLE, self.process.wait()).await {
            Ok(exit) => exit.reason(last_line(&self.process.output().text()).as_deref()),
            Err(_) => "closed its output".to_owned(),
        }
    }

    /// `; its last words: "…"` with the last line of its standard error, if it wrote any.
    pub(crate) fn last_words(&self) -> String {
        last_line(&self.process.output().text())
            .map(|line| format!("; its last words: {line:?}"))
            .unwrap_or_default()
    }

    /// Why this agent cannot take another turn, if it cannot.
    pub(crate) fn broken(&self) -> Option<&'static str> {
        self.rpc.is_closed().then_some("its output has ended")
    }

    /// Stops the process and everything it started.
    pub(crate) async fn stop(self) {
        debug!(session = %self.session, pid = self.process.pid(), "stopping the ACP agent");
        if let Err(err) = self.process.kill().await {
            warn!(session = %self.session, %err, "cannot stop the ACP agent");
        }
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

/// How long a process whose output ended has to be seen exiting.
pub(crate) const EXIT_SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

/// ACP's error code for a request that needs the client to authenticate first.
const AUTH_REQUIRED: i64 = -32000;

/// What the bridge says about itself. It offers no file system and no terminal: the agent works in the
/// session's workspace with its own tools, on the same machine, so serving them would add nothing but a
/// second place to enforce the workspace's bounds.
fn initialize_request() -> InitializeRequest {
    InitializeRequest::new(ProtocolVersion::V1)
        .client_capabilities(
            ClientCapabilities::new()
                .fs(FileSystemCapabilities::new()
                    .read_text_file(false)
                    .write_text_file(false))
                .terminal(false),
        )
        .client_info(Implementation::new(
            "synthesis-bridge",
            env!("CARGO_PKG_VERSION"),
        ))
}

/// The agent's command line, in `workspace`, on pipes.
fn spec(config: &AcpConfig, workspace: &Path) -> ProcessSpec {
    let mut spec = ProcessSpec::new(config.program.clone(), workspace)
        .args(&config.args)
        // The key clients use to reach the bridge is not the agent's business, nor its tools'.
        .env_remove("SYNTHESIS_API_KEY")
        .stdio(Stdio::Pipes);
    for (key, value) in &config.env {
        spec = spec.env(key, value);
    }
    spec
}

fn spawn_error(config: &AcpConfig, err: SpawnError) -> BackendError {
    let program = config.program.to_string_lossy();
    match err {
        SpawnError::NotFound { .. } => BackendError::unavailable(format!(
            "cannot run the ACP agent `{program}`: not found or not executable. Check --acp-agent."
        )),
        other => {
            BackendError::unavailable(format!("cannot start the ACP agent `{program}`: {other}"))
        }
    }
}

/// The last non-blank line of standard error, at most 500 characters.
fn last_line(output: &str) -> Option<String> {
    let line = output.lines().rev().find(|line| !line.trim().is_empty())?;
    Some(line.trim().chars().take(500).collect())
}
