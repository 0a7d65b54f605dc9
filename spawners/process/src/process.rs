//! One started process: its input, its drained output, its exit, and how to stop its group.

use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use synthesis_bridge::spawner::{
    OutputLog, ProcessExit, ProcessHandle, ProcessSpec, ProcessStdout,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::{Mutex, watch};
use tracing::{debug, warn};

type Input = Pin<Box<dyn AsyncWrite + Send>>;
type Output = Pin<Box<dyn AsyncRead + Send>>;

/// A process started by [`ProcessSpawner`](crate::ProcessSpawner).
pub(crate) struct Process {
    pid: u32,
    /// `None` once closed.
    input: Mutex<Option<Input>>,
    /// A piped process's standard output, until its reader takes it.
    stdout: std::sync::Mutex<Option<ProcessStdout>>,
    output: OutputLog,
    exit: watch::Receiver<Option<ProcessExit>>,
    kill_grace: Duration,
}

impl Process {
    /// Starts `spec` as the session leader of a new pseudo-terminal of `cols` x `rows`.
    pub(crate) fn in_terminal(
        spec: &ProcessSpec,
        cols: u16,
        rows: u16,
        output: OutputLog,
        kill_grace: Duration,
    ) -> io::Result<Self> {
        let (terminal, pts) = pty_process::open().map_err(into_io)?;
        terminal
            .resize(pty_process::Size::new(rows, cols))
            .map_err(into_io)?;
        let mut command = pty_process::Command::new(&spec.program)
            .args(&spec.args)
            .current_dir(&spec.cwd);
        for key in &spec.env_remove {
            command = command.env_remove(key);
        }
        for (key, value) in &spec.env {
            command = command.env(key, value);
        }
        // The child is made a session leader, so its process group is its own.
        let child = command.spawn(pts).map_err(into_io)?;
        let (reader, writer) = terminal.into_split();
        Ok(Self::start(
            child,
            Box::pin(writer),
            Box::pin(reader),
            None,
            output,
            kill_grace,
        ))
    }

    /// Starts `spec` on pipes, in a process group of its own: standard output for its reader, standard
    /// error into the log.
    pub(crate) fn on_pipes(
        spec: &ProcessSpec,
        output: OutputLog,
        kill_grace: Duration,
    ) -> io::Result<Self> {
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .current_dir(&spec.cwd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        for key in &spec.env_remove {
            command.env_remove(key);
        }
        command.envs(spec.env.iter().map(|(key, value)| (key, value)));
        let mut child = command.spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("all three streams were asked for as pipes");
        };
        Ok(Self::start(
            child,
            Box::pin(stdin),
            Box::pin(stderr),
            Some(Box::pin(stdout)),
            output,
            kill_grace,
        ))
    }

    /// Watches `child`: `logged` drains into the log, `stdout` waits for its reader.
    fn start(
        mut child: Child,
        input: Input,
        logged: Output,
        stdout: Option<ProcessStdout>,
        log: OutputLog,
        kill_grace: Duration,
    ) -> Self {
        let pid = child
            .id()
            .expect("a child that nobody has waited for has a pid");
        tokio::spawn(drain(logged, log.clone()));
        let (exited, exit) = watch::channel(None);
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => ProcessExit {
                    code: status.code(),
                    signal: status.signal(),
                },
                Err(err) => {
                    warn!(pid, %err, "cannot wait for a child process");
                    ProcessExit {
                        code: None,
                        signal: None,
                    }
                }
            };
            debug!(pid, %exit, "process ended");
            // Whatever the leader started and left behind goes too. Right after the reap, so the id still
            // names this group (an id is not reused while a group of that id has members).
            let _ = signal_group(pid, Signal::SIGKILL);
            exited.send_replace(Some(exit));
        });
        Self {
            pid,
            input: Mutex::new(Some(input)),
            stdout: std::sync::Mutex::new(stdout),
            output: log,
            exit,
            kill_grace,
        }
    }

    fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

/// Signals the process group led by `pid`. A group that no longer exists has nothing left to stop.
fn signal_group(pid: u32, signal: Signal) -> io::Result<()> {
    let group = Pid::from_raw(i32::try_from(pid).expect("pids fit in an i32"));
    match killpg(group, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Copies a process's output into its log until the output ends (a terminal reports an error once the
/// process and its children have closed it; that is its end too).
async fn drain(mut output: Output, log: OutputLog) {
    let mut buffer = [0u8; 4096];
    while let Ok(read @ 1..) = output.read(&mut buffer).await {
        log.append(&buffer[..read]);
    }
}

fn into_io(err: pty_process::Error) -> io::Error {
    match err {
        pty_process::Error::Io(err) => err,
        pty_process::Error::Rustix(errno) => io::Error::from_raw_os_error(errno.raw_os_error()),
        other => io::Error::other(other.to_string()),
    }
}

#[async_trait]
impl ProcessHandle for Process {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut input = self.input.lock().await;
        let Some(input) = input.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the process's input is closed",
            ));
        };
        input.write_all(bytes).await?;
        input.flush().await
    }

    async fn close_input(&self) -> io::Result<()> {
        match self.input.lock().await.take() {
            Some(mut input) => input.shutdown().await,
            None => Ok(()),
        }
    }

    fn take_stdout(&self) -> Option<ProcessStdout> {
        self.stdout.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn output(&self) -> OutputLog {
        self.output.clone()
    }

    async fn wait(&self) -> ProcessExit {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(exit) => exit.expect("waited for it to be set"),
            // The reaper sets the exit before it goes away.
            Err(_) => self
                .exit
                .borrow()
                .expect("set before the sender was dropped"),
        }
    }

    async fn kill(&self) -> io::Result<()> {
        if self.has_exited() {
            return Ok(());
        }
        signal_group(self.pid, Signal::SIGTERM)?;
        if tokio::time::timeout(self.kill_grace, self.wait())
            .await
            .is_err()
        {
            debug!(pid = self.pid, "no exit after SIGTERM; sending SIGKILL");
            signal_group(self.pid, Signal::SIGKILL)?;
            self.wait().await;
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The group must not outlive its handle; the reaper task still reaps the leader. Once the leader
        // has been reaped its id may name someone else's group, so it is left alone then.
        if !self.has_exited() {
            let _ = signal_group(self.pid, Signal::SIGKILL);
        }
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("exit", &*self.exit.borrow())
            .finish_non_exhaustive()
    }
}
