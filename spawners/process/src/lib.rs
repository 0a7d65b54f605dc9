//! [`ProcessSpawner`]: the real [`Spawner`] of synthesis-bridge.
//!
//! It starts a [`ProcessSpec`] under a pseudo-terminal ([`Stdio::Terminal`], what interactive programs
//! such as the `claude` TUI need) or on three plain pipes ([`Stdio::Pipes`], for programs that speak a
//! protocol on standard input and output), and:
//! - keeps draining the terminal, or a piped program's standard error, into an [`OutputLog`] that keeps
//!   the last few kilobytes, for dialogs to wait on and error messages to quote (a program whose
//!   terminal fills up blocks);
//! - hands a piped program's standard output to the one caller that reads it
//!   ([`ProcessHandle::take_stdout`]);
//! - lets the caller write to its input ([`ProcessHandle::write`]) and end it
//!   ([`ProcessHandle::close_input`]);
//! - runs it as the leader of its own process group and stops the whole group: `SIGTERM`, then `SIGKILL`
//!   after a grace period. Dropping the handle kills the group at once. The process is always reaped, so
//!   no zombie is left.
//!
//! If the bridge itself dies, a terminal's programs get `SIGHUP` when its side of the terminal closes, and
//! a piped program sees its input end.
//!
//! Unix only.
//!
//! # Example
//!
//! ```
//! use synthesis_bridge::spawner::{ProcessSpec, Spawner, Stdio};
//! use synthesis_spawner_process::ProcessSpawner;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = ProcessSpec::new("sh", std::env::temp_dir())
//!     .args(["-c", "read name; echo \"hello, $name\""])
//!     .stdio(Stdio::terminal());
//! let process = ProcessSpawner::default().spawn(spec).await?;
//! process.write(b"world\r").await?;
//! process.output().wait_for("hello, world").await;
//! assert!(process.wait().await.success());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod process;

use std::io;
use std::time::Duration;

use async_trait::async_trait;
use synthesis_bridge::spawner::{
    OutputLog, ProcessHandle, ProcessSpec, SpawnError, Spawner, Stdio,
};

use crate::process::Process;

/// Starts processes under a pseudo-terminal or on pipes, as their [`ProcessSpec`] says; see the
/// [crate docs](crate).
#[derive(Debug, Clone)]
pub struct ProcessSpawner {
    output_bytes: usize,
    kill_grace: Duration,
}

impl Default for ProcessSpawner {
    fn default() -> Self {
        Self {
            output_bytes: Self::DEFAULT_OUTPUT_BYTES,
            kill_grace: Self::DEFAULT_KILL_GRACE,
        }
    }
}

impl ProcessSpawner {
    /// How much of its latest output each process keeps, unless set otherwise.
    pub const DEFAULT_OUTPUT_BYTES: usize = 16 << 10;
    /// How long a stopped process has between `SIGTERM` and `SIGKILL`, unless set otherwise.
    pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);

    /// Sets how many bytes of the latest output each process keeps.
    pub fn output_bytes(mut self, bytes: usize) -> Self {
        self.output_bytes = bytes;
        self
    }

    /// Sets how long a stopped process has to exit after `SIGTERM` before its group gets `SIGKILL`.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }
}

#[async_trait]
impl Spawner for ProcessSpawner {
    async fn spawn(&self, spec: ProcessSpec) -> Result<Box<dyn ProcessHandle>, SpawnError> {
        // Spawning in a missing directory fails with the same "not found" as a missing program.
        if !tokio::fs::metadata(&spec.cwd)
            .await
            .is_ok_and(|meta| meta.is_dir())
        {
            return Err(SpawnError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the working directory {} does not exist",
                    spec.cwd.display()
                ),
            )));
        }
        let output = OutputLog::new(self.output_bytes);
        let started = match spec.stdio {
            Stdio::Terminal { cols, rows } => {
                Process::in_terminal(&spec, cols, rows, output, self.kill_grace)
            }
            _ => Process::on_pipes(&spec, output, self.kill_grace),
        };
        match started {
            Ok(process) => Ok(Box::new(process)),
            Err(source)
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                Err(SpawnError::NotFound {
                    program: spec.program,
                    source,
                })
            }
            Err(err) => Err(SpawnError::Io(err)),
        }
    }
}
