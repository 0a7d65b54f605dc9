//! [`ClaudeCliConfig`]: how the backend launches and manages `claude` processes.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Claude Code's `--permission-mode`: what the agent may do without asking. A process has no human at its
/// terminal, so a mode that asks blocks until the turn times out, unless the tool was allowed in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PermissionMode {
    /// Never asks: tools not allowed in advance are denied. The default; nothing blocks.
    #[default]
    DontAsk,
    /// Allows file edits, asks for the rest.
    AcceptEdits,
    /// Asks for everything not allowed in advance.
    Default,
    /// Plans only, changes nothing.
    Plan,
    /// Allows everything. Claude Code refuses it as root unless `IS_SANDBOX=1` is set.
    BypassPermissions,
}

impl PermissionMode {
    /// Every mode, in the order the help lists them.
    pub const ALL: [Self; 5] = [
        Self::DontAsk,
        Self::AcceptEdits,
        Self::Default,
        Self::Plan,
        Self::BypassPermissions,
    ];

    /// The CLI's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DontAsk => "dontAsk",
            Self::AcceptEdits => "acceptEdits",
            Self::Default => "default",
            Self::Plan => "plan",
            Self::BypassPermissions => "bypassPermissions",
        }
    }
}

impl fmt::Display for PermissionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--permission-mode` that Claude Code does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown permission mode {0:?}: use one of dontAsk, acceptEdits, default, plan, bypassPermissions"
)]
pub struct UnknownPermissionMode(String);

impl FromStr for PermissionMode {
    type Err = UnknownPermissionMode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == text)
            .ok_or_else(|| UnknownPermissionMode(text.to_owned()))
    }
}

/// How [`ClaudeCliBackend`](crate::ClaudeCliBackend) launches and manages `claude` processes.
///
/// The one command the channel mode needs besides `claude` itself is the channel plugin (the MCP server
/// Claude Code starts inside each session): the `bridge` binary serves it as `bridge channel`, and
/// [`ClaudeCliConfig::new`] takes the binary's path. Claude Code's hooks report to the transport over
/// HTTP, so they need no command. The stream-json mode needs nothing but `claude`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaudeCliConfig {
    /// The `claude` program: a path, or a name looked up on `PATH`.
    pub program: OsString,
    /// The channel's MCP server name: the model calls `mcp__NAME__reply`.
    pub channel_name: String,
    /// The channel plugin's program and arguments.
    pub plugin_command: Vec<String>,
    /// `--permission-mode`.
    pub permission_mode: PermissionMode,
    /// Tools allowed without asking, besides the channel's reply tool (`--allowedTools`).
    pub allowed_tools: Vec<String>,
    /// More arguments for every launch, e.g. `--model opus`.
    pub extra_args: Vec<OsString>,
    /// Variables set for every process, on top of the bridge's own environment.
    pub env: Vec<(OsString, OsString)>,
    /// How long a new process has to get its plugin connected (channel mode).
    pub ready_timeout: Duration,
    /// A process idle this long is stopped (its conversation resumes on the next turn).
    pub process_idle: Duration,
    /// At most this many processes run at once; the longest-idle one makes room for a new one.
    pub max_processes: usize,
    /// The `Retry-After` of a turn refused because every process is busy.
    pub busy_retry_after: Duration,
    /// How long a cancelled turn waits for Claude Code to show it stopped after ESC (channel mode) or to end
    /// the prompt after an `interrupt` request (stream-json mode), before trying again (an ESC typed before
    /// Claude Code picked the message up is lost). After five, the process is stopped.
    pub cancel_settle: Duration,
    /// How long a pushed message may take to start a prompt (channel mode) (Claude Code's `UserPromptSubmit` hook)
    /// before it is pushed again; the wait doubles with each attempt. An idle Claude Code confirms within
    /// 40 to 150 ms; a push it drops (the first one after start-up can be) is never confirmed
    /// (`docs/claude-cli-measurements.md`, section L).
    pub delivery_timeout: Duration,
    /// How many times a message is pushed before the turn fails and the process is restarted: by default
    /// 5, over 1 + 2 + 4 + 8 + 16 = 31 s.
    pub delivery_attempts: u32,
    /// How long after a message was pushed (channel mode) the next one waits for Claude to finish it (its `Stop` report):
    /// Claude may go on working after it answered. Past that the report is taken as lost and the next
    /// message is pushed anyway; delivery is still confirmed, and a push that would join a prompt still
    /// running is kept out of it.
    pub prompt_end_wait: Duration,
    /// A session unused this long is forgotten: its record is removed from the store and its process
    /// stopped, so that the store does not grow for ever. `None`: sessions are kept for ever.
    pub session_ttl: Option<Duration>,
    /// How long after a turn whose message reached Claude ended without an answer the same text, sent
    /// again for the same session, is taken as the client's retry (channel mode): Claude then carries on with the
    /// earlier message rather than get it twice. `None`: every turn is a new message.
    pub retry_window: Option<Duration>,
    /// How long a turn that called the client's tools waits for their results, which
    /// come with the session's next request. Then each open call gets an error result and Claude goes on.
    pub tool_result_timeout: Duration,
}

impl Default for ClaudeCliConfig {
    /// A configuration whose channel plugin is `bridge channel` found on `PATH`; the stream-json mode
    /// does not use it.
    fn default() -> Self {
        Self::new("bridge")
    }
}

impl ClaudeCliConfig {
    /// A configuration whose channel plugin is served by the `bridge` binary at `bridge` (the channel mode
    /// starts it as `bridge channel`).
    pub fn new(bridge: impl Into<String>) -> Self {
        let bridge = bridge.into();
        Self {
            program: "claude".into(),
            channel_name: "synthesis".to_owned(),
            plugin_command: vec![bridge, "channel".to_owned()],
            permission_mode: PermissionMode::default(),
            allowed_tools: Vec::new(),
            extra_args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            process_idle: Duration::from_secs(30 * 60),
            max_processes: 16,
            busy_retry_after: Duration::from_secs(10),
            cancel_settle: Duration::from_secs(1),
            delivery_timeout: Duration::from_secs(1),
            delivery_attempts: 5,
            prompt_end_wait: Duration::from_secs(5 * 60),
            retry_window: Some(Duration::from_secs(3 * 60)),
            tool_result_timeout: Duration::from_secs(10 * 60),
            session_ttl: None,
        }
    }

    /// Sets [`ClaudeCliConfig::program`].
    pub fn program(mut self, program: impl Into<OsString>) -> Self {
        self.program = program.into();
        self
    }

    /// Sets [`ClaudeCliConfig::channel_name`].
    pub fn channel_name(mut self, name: impl Into<String>) -> Self {
        self.channel_name = name.into();
        self
    }

    /// Sets [`ClaudeCliConfig::permission_mode`].
    pub fn permission_mode(mut self, mode: PermissionMode) -> Self {
        self.permission_mode = mode;
        self
    }

    /// Adds a tool to [`ClaudeCliConfig::allowed_tools`].
    pub fn allow_tool(mut self, tool: impl Into<String>) -> Self {
        self.allowed_tools.push(tool.into());
        self
    }

    /// Adds an argument to [`ClaudeCliConfig::extra_args`].
    pub fn extra_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Sets a variable for every process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets [`ClaudeCliConfig::ready_timeout`].
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Sets [`ClaudeCliConfig::process_idle`].
    pub fn process_idle(mut self, idle: Duration) -> Self {
        self.process_idle = idle;
        self
    }

    /// Sets [`ClaudeCliConfig::max_processes`] (at least 1).
    pub fn max_processes(mut self, max: usize) -> Self {
        self.max_processes = max.max(1);
        self
    }

    /// Sets [`ClaudeCliConfig::busy_retry_after`].
    pub fn busy_retry_after(mut self, after: Duration) -> Self {
        self.busy_retry_after = after;
        self
    }

    /// Sets [`ClaudeCliConfig::cancel_settle`].
    pub fn cancel_settle(mut self, settle: Duration) -> Self {
        self.cancel_settle = settle;
        self
    }

    /// Sets [`ClaudeCliConfig::delivery_timeout`] and [`ClaudeCliConfig::delivery_attempts`] (at least 1).
    pub fn delivery(mut self, timeout: Duration, attempts: u32) -> Self {
        self.delivery_timeout = timeout;
        self.delivery_attempts = attempts.max(1);
        self
    }

    /// Sets [`ClaudeCliConfig::prompt_end_wait`].
    pub fn prompt_end_wait(mut self, wait: Duration) -> Self {
        self.prompt_end_wait = wait;
        self
    }

    /// Sets [`ClaudeCliConfig::session_ttl`].
    pub fn session_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Sets [`ClaudeCliConfig::retry_window`].
    pub fn retry_window(mut self, window: Option<Duration>) -> Self {
        self.retry_window = window;
        self
    }

    /// Sets [`ClaudeCliConfig::tool_result_timeout`].
    pub fn tool_result_timeout(mut self, timeout: Duration) -> Self {
        self.tool_result_timeout = timeout;
        self
    }

    /// The name of the reply tool as the model calls it.
    pub fn reply_tool(&self) -> String {
        format!("mcp__{}__reply", self.channel_name)
    }

    /// Where Claude Code keeps its configuration and transcripts for the processes this backend starts.
    pub fn claude_config_dir(&self) -> Option<PathBuf> {
        let configured = self
            .env
            .iter()
            .rev()
            .find(|(key, _)| key == "CLAUDE_CONFIG_DIR")
            .map(|(_, value)| PathBuf::from(value));
        configured
            .or_else(|| std::env::var_os("CLAUDE_CONFIG_DIR").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".claude")))
    }
}
