//! One running turn: the task that owns the command's process, feeds its reply stream and reaps it.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use synthesis_bridge::spawner::{ProcessExit, ProcessHandle, ProcessStdout};
use synthesis_bridge::{BackendError, ReplyEvent};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Registration;
use crate::output::{Tail, Utf8Decoder};

/// How much standard output one read takes, and so the largest text delta.
const READ_BUFFER: usize = 8 * 1024;

/// Everything a turn's task needs; [`TurnTask::run`] consumes it.
pub(crate) struct TurnTask {
    /// Started on pipes; dropping it stops the command's whole process group, so a task dropped before
    /// the command was reaped (the runtime shutting down) leaks no processes either.
    pub(crate) process: Box<dyn ProcessHandle>,
    /// The program as shown in error messages.
    pub(crate) program: Arc<str>,
    pub(crate) input: String,
    pub(crate) stderr_tail_bytes: usize,
    /// How long after the command exited its output may stay open (held by something it started outside
    /// its process group, which the spawner's stop does not reach) before the turn ends without it.
    pub(crate) kill_grace: Duration,
    pub(crate) cancel: CancellationToken,
    pub(crate) shutdown: CancellationToken,
    /// Counts this turn in the backend's status until the process is reaped.
    pub(crate) registration: Registration,
    pub(crate) events: mpsc::Sender<ReplyEvent>,
}

/// How the wait for the command ended.
enum Outcome {
    /// The command exited and its output was read.
    Exited(ProcessExit),
    /// The turn was cancelled, or the backend is shutting down.
    Cancelled,
    /// Nobody is listening to the reply any more.
    Abandoned,
}

impl TurnTask {
    /// Runs the turn to its end. The reply stream ends when this returns, after the process was reaped.
    pub(crate) async fn run(self) {
        let Self {
            process,
            program,
            input,
            stderr_tail_bytes,
            kill_grace,
            cancel,
            shutdown,
            registration,
            events,
        } = self;
        let Some(stdout) = process.take_stdout() else {
            let _ = process.kill().await;
            drop(registration);
            let error = BackendError::failed(format!(
                "`{program}` was started without a standard output to read: the spawner must honour Stdio::Pipes"
            ));
            let _ = events.send(ReplyEvent::Error(error)).await;
            return;
        };
        let outcome = {
            // The spawner stops the command's process group as soon as the command is reaped, so its
            // output ends then, unless something that left the group holds it: that gets `kill_grace`.
            let mut io = pin!(async {
                tokio::join!(feed_stdin(&*process, &input), pump_stdout(stdout, &events))
            });
            let mut io_done = false;
            let mut exit = None;
            let mut stragglers = pin!(tokio::time::sleep(Duration::MAX));
            loop {
                tokio::select! {
                    _ = &mut io, if !io_done => io_done = true,
                    status = process.wait(), if exit.is_none() => {
                        exit = Some(status);
                        stragglers.as_mut().reset(tokio::time::Instant::now() + kill_grace);
                    }
                    () = &mut stragglers, if exit.is_some() && !io_done => {
                        warn!("the command exited but something it started outside its process group holds its output; ending the turn without it");
                        io_done = true;
                    }
                    () = cancel.cancelled() => break Outcome::Cancelled,
                    () = shutdown.cancelled() => break Outcome::Cancelled,
                    () = events.closed() => break Outcome::Abandoned,
                }
                if io_done && let Some(exit) = exit {
                    break Outcome::Exited(exit);
                }
            }
        };

        let event = match outcome {
            Outcome::Exited(exit) if exit.success() => {
                debug!("the command finished");
                Some(ReplyEvent::end())
            }
            Outcome::Exited(exit) => {
                let mut stderr = Tail::new(stderr_tail_bytes);
                stderr.push(process.output().text().as_bytes());
                let message = failure_message(&program, exit, &stderr.text());
                warn!(%message, "the command failed");
                Some(ReplyEvent::Error(BackendError::Failed(message)))
            }
            Outcome::Cancelled => {
                debug!("the turn was cancelled; stopping the command");
                stop(&*process).await;
                Some(ReplyEvent::Error(BackendError::Cancelled))
            }
            Outcome::Abandoned => {
                debug!("the reply stream was dropped; stopping the command");
                stop(&*process).await;
                None
            }
        };
        // The process is reaped: the turn no longer counts as running, even if the consumer is slow to
        // take the last event.
        drop(registration);
        if let Some(event) = event {
            // A send error means the consumer is gone, and with it anyone to tell.
            let _ = events.send(event).await;
        }
    }
}

/// Stops the command's whole process group (`SIGTERM`, then `SIGKILL` after the spawner's grace) and
/// reaps it.
async fn stop(process: &dyn ProcessHandle) {
    if let Err(err) = process.kill().await {
        warn!(%err, "stopping the command failed");
    }
}

/// Writes the user's text to the command, then closes its standard input.
async fn feed_stdin(process: &dyn ProcessHandle, input: &str) {
    if let Err(err) = process.write(input.as_bytes()).await {
        // A command may answer without reading all of its input and close the pipe; that is its call.
        debug!(%err, "the command did not take all of its input");
    }
    if let Err(err) = process.close_input().await {
        debug!(%err, "cannot close the command's input");
    }
}

/// Sends standard output as text deltas, each as soon as it is read.
async fn pump_stdout(mut stdout: ProcessStdout, events: &mpsc::Sender<ReplyEvent>) {
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

/// "`program` exited with code 3: <stderr>".
fn failure_message(program: &str, exit: ProcessExit, stderr: &str) -> String {
    let how = match (exit.code, exit.signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
            Ok(signal) => format!("was killed by {signal}"),
            Err(_) => format!("was killed by signal {signal}"),
        },
        (None, None) => "ended".to_owned(),
    };
    if stderr.is_empty() {
        format!("`{program}` {how}")
    } else {
        format!("`{program}` {how}: {stderr}")
    }
}
