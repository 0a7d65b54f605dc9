//! [`FakeSpawner`]: processes that are scripts, for test suites that swap the spawner.
//!
//! Each spawn runs the script given to [`FakeSpawner::new`] with the [`ProcessSpec`] and a [`FakeProcess`],
//! the process's side: it reads what the caller writes ([`FakeProcess::read_line`]), writes standard output
//! ([`FakeProcess::print`]) or the terminal and standard error ([`FakeProcess::show`]), and exits when it
//! says so ([`FakeProcess::exit`]) or when the script returns (code 0). Until then it is alive. Killing
//! the handle stops the script and ends the process with `SIGTERM`'s status, as a real group would.
//!
//! # Example
//!
//! A process that answers each line of its input:
//!
//! ```
//! use synthesis_bridge::spawner::fake::FakeSpawner;
//! use synthesis_bridge::spawner::{ProcessSpec, Spawner, Stdio};
//! use tokio::io::{AsyncBufReadExt, BufReader};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let spawner = FakeSpawner::new(|_spec, mut process| async move {
//!     while let Some(line) = process.read_line().await {
//!         process.print(&format!("you said {line}\n")).await;
//!     }
//! });
//! let process = spawner.spawn(ProcessSpec::new("agent", "/work").stdio(Stdio::Pipes)).await?;
//! let mut stdout = BufReader::new(process.take_stdout().unwrap()).lines();
//! process.write(b"hello\n").await?;
//! assert_eq!(stdout.next_line().await?.as_deref(), Some("you said hello"));
//! process.close_input().await?;
//! assert!(process.wait().await.success());
//! assert_eq!(spawner.spawned()[0].program, "agent");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::{
    OutputLog, ProcessExit, ProcessHandle, ProcessSpec, ProcessStdout, SpawnError, Spawner, Stdio,
};

/// How much standard output a fake process can write before its reader takes it.
const STDOUT_BUFFER: usize = 64 << 10;
/// How much of its latest terminal or standard-error text a fake process keeps.
const OUTPUT_BYTES: usize = 16 << 10;
/// Fake pids start above the largest pid Linux hands out (2^22), clear of real ones in a test's logs.
static NEXT_PID: AtomicU32 = AtomicU32::new(1 << 30);

type Script = dyn Fn(ProcessSpec, FakeProcess) -> BoxFuture<'static, ()> + Send + Sync;

/// A [`Spawner`] whose processes run a script; see the [module docs](self).
#[derive(Clone)]
pub struct FakeSpawner {
    script: Arc<Script>,
    spawned: Arc<Mutex<Vec<ProcessSpec>>>,
}

impl fmt::Debug for FakeSpawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeSpawner")
            .field("spawned", &self.spawned().len())
            .finish_non_exhaustive()
    }
}

impl FakeSpawner {
    /// A spawner whose every process runs `script`. Must be used within a Tokio runtime.
    pub fn new<F, Fut>(script: F) -> Self
    where
        F: Fn(ProcessSpec, FakeProcess) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            script: Arc::new(move |spec, process| Box::pin(script(spec, process))),
            spawned: Arc::default(),
        }
    }

    /// What was started so far, oldest first.
    pub fn spawned(&self) -> Vec<ProcessSpec> {
        self.spawned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl Spawner for FakeSpawner {
    async fn spawn(&self, spec: ProcessSpec) -> Result<Box<dyn ProcessHandle>, SpawnError> {
        self.spawned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(spec.clone());
        let (input, input_lines) = mpsc::unbounded_channel();
        let output = OutputLog::new(OUTPUT_BYTES);
        let (stdout_writer, stdout_reader) = match spec.stdio {
            Stdio::Pipes => {
                let (writer, reader) = tokio::io::duplex(STDOUT_BUFFER);
                (Some(writer), Some(Box::pin(reader) as ProcessStdout))
            }
            _ => (None, None),
        };
        let exit = watch::Sender::new(None);
        let exited = exit.clone();
        let process = FakeProcess {
            input: input_lines,
            pending: Vec::new(),
            stdout: stdout_writer,
            output: output.clone(),
            exited: exited.clone(),
        };
        let script = (self.script)(spec, process);
        let task = tokio::spawn(async move {
            let _ends = EndsWithScript(exited);
            script.await;
        });
        Ok(Box::new(FakeHandle {
            pid: NEXT_PID.fetch_add(1, Ordering::Relaxed),
            input: Mutex::new(Some(input)),
            stdout: Mutex::new(stdout_reader),
            output,
            exited: exit,
            task: task.abort_handle(),
        }))
    }
}

/// The process's side of a fake process, handed to its script.
pub struct FakeProcess {
    input: mpsc::UnboundedReceiver<Vec<u8>>,
    /// Input received but not yet returned as a line.
    pending: Vec<u8>,
    /// `None` on a terminal: what is printed goes to the output log.
    stdout: Option<DuplexStream>,
    output: OutputLog,
    exited: watch::Sender<Option<ProcessExit>>,
}

impl fmt::Debug for FakeProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeProcess")
            .field("pipes", &self.stdout.is_some())
            .finish_non_exhaustive()
    }
}

impl FakeProcess {
    /// The next line written to the process, without its line end; `None` once its input is closed (and
    /// everything before was read).
    pub async fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]);
                return Some(line.trim_end_matches('\r').to_owned());
            }
            match self.input.recv().await {
                Some(bytes) => self.pending.extend_from_slice(&bytes),
                None if self.pending.is_empty() => return None,
                None => {
                    let rest = std::mem::take(&mut self.pending);
                    return Some(String::from_utf8_lossy(&rest).into_owned());
                }
            }
        }
    }

    /// Writes to standard output; on a terminal, to the screen ([`ProcessHandle::output`]). Waits while
    /// the reader is 64 KiB behind, as a pipe would.
    pub async fn print(&mut self, text: &str) {
        match &mut self.stdout {
            // A reader that went away is the caller's business, as a closed pipe is a real process's.
            Some(stdout) => {
                let _ = stdout.write_all(text.as_bytes()).await;
            }
            None => self.output.append(text.as_bytes()),
        }
    }

    /// Writes to the terminal's screen, or to standard error on pipes ([`ProcessHandle::output`]).
    pub fn show(&self, text: &str) {
        self.output.append(text.as_bytes());
    }

    /// Exits with `code`: standard output ends and [`ProcessHandle::wait`] returns.
    pub fn exit(self, code: i32) {
        end(&self.exited, Some(code), None);
    }
}

/// Ends the process the first time only: how it ended first is how it ended.
fn end(exited: &watch::Sender<Option<ProcessExit>>, code: Option<i32>, signal: Option<i32>) {
    exited.send_if_modified(|exit| {
        let first = exit.is_none();
        exit.get_or_insert(ProcessExit { code, signal });
        first
    });
}

/// Ends the process when its script does: with code 0 when it returns without saying how it ends, 101
/// (Rust's code for a panic) when it panics. A kill has said so first.
struct EndsWithScript(watch::Sender<Option<ProcessExit>>);

impl Drop for EndsWithScript {
    fn drop(&mut self) {
        let code = if std::thread::panicking() { 101 } else { 0 };
        end(&self.0, Some(code), None);
    }
}

/// The caller's side of a fake process.
struct FakeHandle {
    pid: u32,
    /// `None` once closed.
    input: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    stdout: Mutex<Option<ProcessStdout>>,
    output: OutputLog,
    /// Set by the script's end, or by a kill.
    exited: watch::Sender<Option<ProcessExit>>,
    task: AbortHandle,
}

impl fmt::Debug for FakeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeHandle")
            .field("pid", &self.pid)
            .field("exit", &*self.exited.borrow())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ProcessHandle for FakeHandle {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "the process's input is closed");
        if self.exited.borrow().is_some() {
            return Err(closed());
        }
        let input = self.input.lock().unwrap_or_else(|e| e.into_inner());
        let sender = input.as_ref().ok_or_else(closed)?;
        sender.send(bytes.to_vec()).map_err(|_| closed())
    }

    async fn close_input(&self) -> io::Result<()> {
        self.input.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(())
    }

    fn take_stdout(&self) -> Option<ProcessStdout> {
        self.stdout.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn output(&self) -> OutputLog {
        self.output.clone()
    }

    async fn wait(&self) -> ProcessExit {
        let mut exit = self.exited.subscribe();
        // The handle holds a sender, so the channel cannot close under this wait.
        let exited = exit
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|exit| *exit);
        exited.expect("the handle holds a sender")
    }

    async fn kill(&self) -> io::Result<()> {
        // Said before the script is stopped, whose end would otherwise say code 0.
        end(&self.exited, None, Some(15));
        self.task.abort();
        Ok(())
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        // As a real process group dies with its handle.
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    fn spec(stdio: Stdio) -> ProcessSpec {
        ProcessSpec::new("agent", "/work").stdio(stdio)
    }

    #[tokio::test]
    async fn a_process_lives_until_its_script_says_and_exits_with_the_code_it_gives() {
        let spawner = FakeSpawner::new(|_, mut process| async move {
            let line = process.read_line().await.unwrap();
            process.show(&format!("bye {line}"));
            process.exit(3);
        });
        let process = spawner.spawn(spec(Stdio::Pipes)).await.unwrap();
        let alive = tokio::time::timeout(Duration::from_millis(50), process.wait()).await;
        assert!(alive.is_err(), "alive until told");
        process.write(b"now\n").await.unwrap();
        assert_eq!(process.wait().await.code, Some(3));
        assert_eq!(process.output().text(), "bye now");
        let mut rest = String::new();
        let mut stdout = process.take_stdout().unwrap();
        stdout.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "", "standard output ended with the process");
        assert!(process.write(b"late\n").await.is_err());
    }

    #[tokio::test]
    async fn kill_stops_the_script_and_a_terminal_shows_what_is_printed() {
        let spawner = FakeSpawner::new(|_, mut process| async move {
            process.print("drawn").await;
            std::future::pending::<()>().await;
        });
        let process = spawner.spawn(spec(Stdio::terminal())).await.unwrap();
        assert!(process.take_stdout().is_none());
        process.output().wait_for("drawn").await;
        process.kill().await.unwrap();
        assert_eq!(process.wait().await.signal, Some(15));
    }

    #[tokio::test]
    async fn a_script_that_panics_exits_with_101() {
        let spawner = FakeSpawner::new(|_, _| async { panic!("the script broke") });
        let process = spawner.spawn(spec(Stdio::Pipes)).await.unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(5), process.wait()).await;
        assert_eq!(exit.expect("it ended").code, Some(101));
    }

    #[tokio::test]
    async fn input_that_ends_ends_the_lines_and_an_unfinished_last_line_is_kept() {
        let spawner = FakeSpawner::new(|_, mut process| async move {
            let mut lines = Vec::new();
            while let Some(line) = process.read_line().await {
                lines.push(line);
            }
            process.print(&lines.join("|")).await;
        });
        let process = spawner.spawn(spec(Stdio::Pipes)).await.unwrap();
        process.write(b"a\nb").await.unwrap();
        process.write(b"c\r\nd").await.unwrap();
        process.close_input().await.unwrap();
        let mut out = String::new();
        process
            .take_stdout()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert_eq!(out, "a|bc|d");
        assert!(process.wait().await.success());
    }
}
