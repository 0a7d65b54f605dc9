//! One running turn: the task that owns the command's process, feeds its reply stream and reaps it.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::pin::pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use synthesis_bridge::{BackendError, ReplyEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Registration;
use crate::output::{Tail, Utf8Decoder};

/// How much standard output one read takes, and so the largest text delta.
const READ_BUFFER: usize = 8 * 1024;

/// Everything a turn's task needs; [`TurnTask::run`] consumes it.
pub(crate) struct TurnTask {
    pub(crate) child: Child,
    pub(crate) group: GroupGuard,
    /// The program as shown in error messages.
    pub(crate) program: Arc<str>,
    pub(crate) input: String,
    pub(crate) stderr_tail_bytes: usize,
    pub(crate) kill_grace: Duration,
    pub(crate) cancel: CancellationToken,
    pub(crate) shutdown: CancellationToken,
    /// Counts this turn in the backend's status until the process is reaped.
    pub(crate) registration: Registration,
    pub(crate) events: mpsc::Sender<ReplyEvent>,
}

/// How the wait for the command ended.
enum Outcome {
    /// The command exited (and its output was read) on its own.
    Exited(io::Result<ExitStatus>),
    /// The turn was cancelled, or the backend is shutting down.
    Cancelled,
    /// Nobody is listening to the reply any more.
    Abandoned,
}

impl TurnTask {
    /// Runs the turn to its end. The reply stream ends when this returns, after the process was reaped.
    pub(crate) async fn run(self) {
        let Self {
            mut child,
            mut group,
            program,
            input,
            stderr_tail_bytes,
            kill_grace,
            cancel,
            shutdown,
            registration,
            events,
        } = self;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let mut stderr_tail = Tail::new(stderr_tail_bytes);

        let outcome = {
            let mut io = pin!(async {
                tokio::join!(
                    feed_stdin(stdin, &input),
                    pump_stdout(stdout, &events),
                    drain_stderr(stderr, &mut stderr_tail),
                )
            });
            let mut io_done = false;
            // The exit status, and until when to wait for the output pipes to close after it.
            let mut exited: Option<(io::Result<ExitStatus>, Instant)> = None;
            loop {
                let straggler_deadline = exited.as_ref().map_or_else(Instant::now, |(_, at)| *at);
                tokio::select! {
                    _ = &mut io, if !io_done => io_done = true,
                    status = child.wait(), if exited.is_none() => {
                        exited = Some((status, Instant::now() + kill_grace));
                    }
                    () = sleep_until(straggler_deadline), if exited.is_some() && !io_done => {
                        // The command is gone but something it started still holds its output open. The
                        // turn is over; its leftovers must not outlive it.
                        warn!("the command exited but left processes holding its output; killing them");
                        group.signal(Signal::SIGKILL);
                        io_done = true;
                    }
                    () = cancel.cancelled() => break Outcome::Cancelled,
                    () = shutdown.cancelled() => break Outcome::Cancelled,
                    () = events.closed() => break Outcome::Abandoned,
                }
                if io_done && let Some((status, _)) = exited.take() {
                    break Outcome::Exited(status);
                }
            }
        };

        let event = match outcome {
            Outcome::Exited(Ok(status)) if status.success() => {
                debug!("the command finished");
                Some(ReplyEvent::end())
            }
            Outcome::Exited(Ok(status)) => {
                let message = failure_message(&program, status, &stderr_tail.text());
                warn!(%message, "the command failed");
                Some(ReplyEvent::Error(BackendError::Failed(message)))
            }
            Outcome::Exited(Err(err)) => {
                warn!(%err, "waiting for the command failed");
                Some(ReplyEvent::Error(BackendError::failed(format!(
                    "waiting for `{program}` failed: {err}"
                ))))
            }
            Outcome::Cancelled => {
                debug!("the turn was cancelled; stopping the command");
                terminate(&mut child, &group, kill_grace).await;
                Some(ReplyEvent::Error(BackendError::Cancelled))
            }
            Outcome::Abandoned => {
                debug!("the reply stream was dropped; stopping the command");
                terminate(&mut child, &group, kill_grace).await;
                None
            }
        };
        group.disarm();
        // The process is reaped: the turn no longer counts as running, even if the consumer is slow to
        // take the last event.
        drop(registration);
        if let Some(event) = event {
            // A send error means the consumer is gone, and with it anyone to tell.
            let _ = events.send(event).await;
        }
    }
}

/// Writes the user's text to the command, then closes its standard input.
async fn feed_stdin(stdin: Option<ChildStdin>, input: &str) {
    let Some(mut stdin) = stdin else { return };
    if let Err(err) = stdin.write_all(input.as_bytes()).await {
        // A command may answer without reading all of its input and close the pipe; that is its call.
        debug!(%err, "the command did not take all of its input");
    }
}

/// Sends standard output as text deltas, each as soon as it is read.
async fn pump_stdout(stdout: Option<ChildStdout>, events: &mpsc::Sender<ReplyEvent>) {
    let Some(mut stdout) = stdout else { return };
    let mut buffer = vec![0; READ_BUFFER];
    let mut decoder = Utf8Decoder::default();
    loop {
        let (text, ended) = match stdout.read(&mut buffer).await {
            Ok(0) => (decoder.finish(), true),
            Ok(n) => (decoder.decode(&buffer[..n]), false),
            Err(err) => {
                // The exit status still decides how the turn ends.
                warn!(%err, "reading the command's output failed");
                (decoder.finish(), true)
            }
        };
        // A read that ends inside a character yields nothing until the character is complete.
        if !text.is_empty() && events.send(ReplyEvent::TextDelta(text)).await.is_err() {
            return;
        }
        if ended {
            return;
        }
    }
}

/// Keeps the last bytes of standard error for the error message, reading all of it so the command never
/// blocks on a full pipe.
async fn drain_stderr(stderr: Option<ChildStderr>, tail: &mut Tail) {
    let Some(mut stderr) = stderr else { return };
    let mut buffer = vec![0; READ_BUFFER];
    loop {
        match stderr.read(&mut buffer).await {
            Ok(0) => return,
            Ok(n) => tail.push(&buffer[..n]),
            Err(err) => {
                debug!(%err, "reading the command's standard error failed");
                return;
            }
        }
    }
}

/// Stops the command's whole process group and reaps the command.
///
/// `SIGTERM` first, so the agent can clean up; `SIGKILL` for whatever is left of the group once the
/// command has exited or the grace period is over, so nothing it started outlives the turn.
async fn terminate(child: &mut Child, group: &GroupGuard, grace: Duration) {
    group.signal(Signal::SIGTERM);
    if timeout(grace, child.wait()).await.is_err() {
        debug!(?grace, "the command ignored SIGTERM");
    }
    group.signal(Signal::SIGKILL);
    match child.wait().await {
        Ok(status) => debug!(%status, "the command was stopped"),
        Err(err) => warn!(%err, "reaping the stopped command failed"),
    }
}

/// "`program` exited with code 3: <stderr>".
fn failure_message(program: &str, status: ExitStatus, stderr: &str) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(signal) => format!("was killed by {signal}"),
            Err(_) => format!("was killed by signal {signal}"),
        },
        (None, None) => format!("ended with {status}"),
    };
    if stderr.is_empty() {
        format!("`{program}` {how}")
    } else {
        format!("`{program}` {how}: {stderr}")
    }
}

/// The command's process group, killed outright if the turn's task is dropped before the command was
/// reaped (the runtime shutting down), so that an aborted turn leaks no processes either.
#[derive(Debug)]
pub(crate) struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl GroupGuard {
    /// Guards the group led by the process `pid` (spawned with `process_group(0)`).
    pub(crate) fn new(pid: Pid) -> Self {
        Self {
            pgid: pid,
            armed: true,
        }
    }

    /// Sends `signal` to every process in the group.
    fn signal(&self, signal: Signal) {
        match killpg(self.pgid, signal) {
            // Everyone has already gone.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(err) => {
                warn!(%err, pgid = %self.pgid, %signal, "signalling the command's process group failed")
            }
        }
    }

    /// The turn ended in an orderly way; dropping the guard no longer kills anything.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::SIGKILL);
        }
    }
}
