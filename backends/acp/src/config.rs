//! [`AcpConfig`]: which agent to run and how its processes are managed.

use std::ffi::OsString;
use std::time::Duration;

use crate::permission::PermissionPolicy;

/// How [`AcpBackend`](crate::AcpBackend) runs its agent.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcpConfig {
    /// The agent's program: a path, or a name looked up on `PATH`.
    pub program: OsString,
    /// Its arguments, e.g. `--experimental-acp`.
    pub args: Vec<OsString>,
    /// Variables set for every agent process, on top of the bridge's own environment.
    pub env: Vec<(OsString, OsString)>,
    /// How the agent's permission requests are answered.
    pub permissions: PermissionPolicy,
    /// How long a new process has to answer `initialize` and open its session (`session/new`, or
    /// `session/resume` / `session/load` after a restart).
    pub ready_timeout: Duration,
    /// A process idle this long is stopped (its session is resumed or loaded on the next turn).
    pub process_idle: Duration,
    /// At most this many agent processes run at once; the longest-idle one makes room for a new one.
    pub max_processes: usize,
    /// The `Retry-After` of a turn refused because every process is busy.
    pub busy_retry_after: Duration,
    /// How long a cancelled prompt may take to end after `session/cancel` before its process is stopped.
    pub cancel_grace: Duration,
    /// A session unused this long is forgotten: its record is removed from the store and its process
    /// stopped. `None`: sessions are kept for ever.
    pub session_ttl: Option<Duration>,
}

/// A command line that cannot be split into words (an unclosed quote).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the agent's command line {line:?}: {reason}")]
pub struct BadCommandLine {
    line: String,
    reason: String,
}

impl AcpConfig {
    /// A configuration that runs `program` with `args`.
    pub fn new<I, S>(program: impl Into<OsString>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            permissions: PermissionPolicy::default(),
            ready_timeout: Duration::from_secs(60),
            process_idle: Duration::from_secs(30 * 60),
            max_processes: 16,
            busy_retry_after: Duration::from_secs(10),
            cancel_grace: Duration::from_secs(5),
            session_ttl: None,
        }
    }

    /// A configuration from one command line, split into words as a shell would (quotes and backslashes,
    /// no variables or globs): `npx @zed-industries/claude-agent-acp`, `gemini --experimental-acp`.
    pub fn from_command_line(line: &str) -> Result<Self, BadCommandLine> {
        let bad = |reason: String| BadCommandLine {
            line: line.to_owned(),
            reason,
        };
        let mut words = shell_words::split(line)
            .map_err(|err| bad(err.to_string()))?
            .into_iter();
        let program = words.next().ok_or_else(|| bad("it is empty".to_owned()))?;
        Ok(Self::new(program, words))
    }

    /// Sets a variable for every agent process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets how long a new process has to open its session.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Sets how long an idle process lives.
    pub fn process_idle(mut self, idle: Duration) -> Self {
        self.process_idle = idle;
        self
    }

    /// Sets how many processes run at most.
    pub fn max_processes(mut self, max: usize) -> Self {
        self.max_processes = max;
        self
    }

    /// Sets how long an unused session is kept (`None`: for ever).
    pub fn session_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Sets how long a cancelled prompt may take to end.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// Sets how permission requests are answered.
    pub fn permissions(mut self, permissions: PermissionPolicy) -> Self {
        self.permissions = permissions;
        self
    }

    /// The agent's name for messages: its program's file name.
    pub(crate) fn agent_name(&self) -> String {
        std::path::Path::new(&self.program)
            .file_name()
            .unwrap_or(self.program.as_os_str())
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_is_split_as_a_shell_would() {
        let config =
            AcpConfig::from_command_line("node '/opt/my agent/index.js' --flag=\"a b\"").unwrap();
        assert_eq!(config.program, "node");
        assert_eq!(config.args, ["/opt/my agent/index.js", "--flag=a b"]);
        assert_eq!(config.agent_name(), "node");
        assert!(AcpConfig::from_command_line("   ").is_err());
        let unclosed = AcpConfig::from_command_line("agent 'oops").unwrap_err();
        assert!(unclosed.to_string().contains("agent 'oops"), "{unclosed}");
    }
}
