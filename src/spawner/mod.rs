//! [`Spawner`]: starts agent processes, so tests can swap real processes for mocks.
//!
//! # Example
//!
//! Describing a process; a [`Spawner`] implementation starts it:
//!
//! ```
//! use synthesis_bridge::spawner::{ProcessSpec, Stdio};
//!
//! let spec = ProcessSpec::new("claude", "/work/repo")
//!     .arg("--resume")
//!     .arg("2b1f0c3e-8d4f-4a5b-9c6d-7e8f9a0b1c2d")
//!     .env("SYNTHESIS_WS_URL", "ws://127.0.0.1:18791/bridge")
//!     .stdio(Stdio::terminal());
//! assert_eq!(spec.args.len(), 2);
//! ```

pub mod fake;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::AsyncRead;
use tokio::sync::watch;

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessSpec {
    /// The program, a path or a name looked up on `PATH`.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables added to (or overriding) the bridge's own environment.
    pub env: Vec<(OsString, OsString)>,
    /// Variables of the bridge's own environment the process must not inherit (secrets meant for the bridge
    /// alone, such as `SYNTHESIS_API_KEY`). Applied before [`ProcessSpec::env`].
    pub env_remove: Vec<OsString>,
    /// The working directory.
    pub cwd: PathBuf,
    /// How the process's standard streams are connected.
    pub stdio: Stdio,
}

impl ProcessSpec {
    /// `program` in `cwd`, no arguments, extra environment or terminal.
    pub fn new(program: impl Into<OsString>, cwd: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: cwd.into(),
            stdio: Stdio::Pipes,
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

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Keeps a variable of the bridge's environment from the process.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Chooses how standard streams are connected.
    pub fn stdio(mut self, stdio: Stdio) -> Self {
        self.stdio = stdio;
        self
    }
}

/// How a process's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stdio {
    /// A pseudo-terminal of the given size: interactive programs (the `claude` TUI) need one.
    Terminal {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// Three pipes, as programs that speak a protocol on their standard streams need: standard input takes
    /// [`ProcessHandle::write`] (and ends with [`ProcessHandle::close_input`]), standard output is a byte
    /// stream for whoever speaks the protocol ([`ProcessHandle::take_stdout`]), and standard error goes
    /// into [`ProcessHandle::output`], for error messages to quote. Take standard output and read it: a
    /// program whose output pipe is full waits.
    Pipes,
}

impl Stdio {
    /// A terminal wide enough that dialogs are not wrapped mid-sentence.
    pub fn terminal() -> Self {
        Self::Terminal {
            cols: 200,
            rows: 50,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessExit {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

impl ProcessExit {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// How it ended, in words to follow the program's name: `exited with code 1 (its last words:
    /// "…")` with `last_words` (a line of its output), or `was killed by signal 9 (SIGKILL)`. A process
    /// killed by a signal wrote nothing about it, so nothing is quoted then.
    pub fn reason(&self, last_words: Option<&str>) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => match last_words {
                Some(line) => format!("exited with code {code} (its last words: {line:?})"),
                None => format!("exited with code {code}"),
            },
            (None, Some(signal)) => match signal_name(signal) {
                Some(name) => format!("was killed by signal {signal} ({name})"),
                None => format!("was killed by signal {signal}"),
            },
            (None, None) => "ended".to_owned(),
        }
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

impl fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "signal {signal}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The program does not exist or is not executable.
    #[error("cannot run {program:?}: {source}")]
    NotFound {
        /// The program that was asked for.
        program: OsString,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Anything else that went wrong while starting it.
    #[error("failed to start process: {0}")]
    Io(#[from] std::io::Error),
}

/// A process's standard output as a byte stream ([`Stdio::Pipes`]).
pub type ProcessStdout = Pin<Box<dyn AsyncRead + Send>>;

/// A process's standard output read a line at a time, for agents that speak one JSON object a line.
///
/// ```
/// use synthesis_bridge::spawner::OutputLines;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut lines = OutputLines::new(Box::pin(&b"{\"a\":1}\r\n\xff\n"[..]));
/// assert_eq!(lines.next().await.as_deref(), Some("{\"a\":1}"));
/// assert_eq!(lines.next().await.as_deref(), Some("\u{fffd}"));
/// assert_eq!(lines.next().await, None);
/// # }
/// ```
#[derive(Debug)]
pub struct OutputLines<R = ProcessStdout> {
    reader: tokio::io::BufReader<R>,
    bytes: Vec<u8>,
}

impl<R: AsyncRead + Unpin> OutputLines<R> {
    /// Reads `output`.
    pub fn new(output: R) -> Self {
        Self {
            reader: tokio::io::BufReader::new(output),
            bytes: Vec::new(),
        }
    }

    /// The next line, without its line end; invalid UTF-8 (a tool's output may hold some) is replaced,
    /// not an error. `None` once the output ends, or cannot be read any more.
    pub async fn next(&mut self) -> Option<String> {
        use tokio::io::AsyncBufReadExt;
        self.bytes.clear();
        match self.reader.read_until(b'\n', &mut self.bytes).await {
            Ok(0) => None,
            Ok(_) => {
                let line = String::from_utf8_lossy(&self.bytes);
                Some(line.trim_end_matches(['\n', '\r']).to_owned())
            }
            Err(err) => {
                tracing::debug!(%err, "cannot read a process's output");
                None
            }
        }
    }
}

/// A running (or finished) process.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ProcessHandle: Send + Sync + fmt::Debug + 'static {
    /// The operating-system process id.
    fn pid(&self) -> u32;
    /// Writes to the process's input (typing, on a terminal). One call's bytes are written together,
    /// whoever else writes at the same time.
    async fn write(&self, bytes: &[u8]) -> std::io::Result<()>;
    /// Ends the process's input: on pipes the program reads end of file, as one reading its input to the end
    /// needs. Writing afterwards fails. A terminal has no end of input: there the program sees nothing.
    async fn close_input(&self) -> std::io::Result<()>;
    /// The standard output of a process on [`Stdio::Pipes`], for the one caller that reads it: `None` for a
    /// terminal, whose output is [`ProcessHandle::output`], and once taken.
    fn take_stdout(&self) -> Option<ProcessStdout>;
    /// The process's recent output, kept up to date while it runs: what a terminal showed, or what a
    /// program on pipes wrote to standard error.
    fn output(&self) -> OutputLog;
    /// Waits for the process to end. May be called any number of times, from anywhere.
    async fn wait(&self) -> ProcessExit;
    /// Stops the process and everything it started, then reaps it.
    async fn kill(&self) -> std::io::Result<()>;
}

/// Starts processes.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Spawner: Send + Sync + fmt::Debug + 'static {
    /// Starts `spec`.
    async fn spawn(&self, spec: ProcessSpec) -> Result<Box<dyn ProcessHandle>, SpawnError>;
}

/// The last few kilobytes a process printed, shared between whoever drains the output and whoever waits
/// for something to appear in it (a dialog, an error message).
#[derive(Clone)]
pub struct OutputLog {
    inner: Arc<OutputInner>,
}

struct OutputInner {
    capacity: usize,
    bytes: Mutex<Kept>,
    /// Bumped on every append so waiters wake up.
    version: watch::Sender<u64>,
}

impl OutputLog {
    /// An empty log that keeps the last `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(OutputInner {
                capacity,
                bytes: Mutex::new(Kept {
                    bytes: VecDeque::with_capacity(capacity),
                    appended: 0,
                }),
                version: watch::Sender::new(0),
            }),
        }
    }

    /// Appends output, dropping the oldest bytes beyond the capacity.
    pub fn append(&self, chunk: &[u8]) {
        let capacity = self.inner.capacity;
        let chunk = &chunk[chunk.len().saturating_sub(capacity)..];
        {
            let mut kept = self.inner.bytes.lock().unwrap_or_else(|e| e.into_inner());
            kept.appended += chunk.len() as u64;
            let overflow = (kept.bytes.len() + chunk.len()).saturating_sub(capacity);
            kept.bytes.drain(..overflow);
            kept.bytes.extend(chunk);
        }
        self.inner.version.send_modify(|v| *v += 1);
    }

    /// The kept output with terminal escape sequences removed, as text.
    pub fn text(&self) -> String {
        self.text_since(OutputMark(0))
    }

    /// A point in the output, to look only at what comes after it.
    pub fn mark(&self) -> OutputMark {
        OutputMark(
            self.inner
                .bytes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .appended,
        )
    }

    /// The kept output after `mark`, as [`OutputLog::text`].
    pub fn text_since(&self, mark: OutputMark) -> String {
        let bytes: Vec<u8> = {
            let kept = self.inner.bytes.lock().unwrap_or_else(|e| e.into_inner());
            let start = kept.appended - kept.bytes.len() as u64;
            let skip = usize::try_from(mark.0.saturating_sub(start)).unwrap_or(usize::MAX);
            kept.bytes.iter().skip(skip).copied().collect()
        };
        strip_terminal_escapes(&String::from_utf8_lossy(&bytes))
    }

    /// Waits until the kept output, as [`OutputLog::text`], contains `needle`, white space aside: a
    /// terminal program may draw a space as a cursor move, or wrap a line anywhere.
    pub async fn wait_for(&self, needle: &str) {
        self.wait_for_since(OutputMark(0), needle).await;
    }

    /// Waits until the output after `mark` contains `needle`, as [`OutputLog::wait_for`].
    pub async fn wait_for_since(&self, mark: OutputMark, needle: &str) {
        let needle = without_white_space(needle);
        let mut version = self.inner.version.subscribe();
        loop {
            if without_white_space(&self.text_since(mark)).contains(&needle) {
                return;
            }
            // The sender lives as long as `self`, so this cannot fail while we hold the log.
            let _ = version.changed().await;
        }
    }
}

/// The kept bytes, and how many were ever appended.
struct Kept {
    bytes: VecDeque<u8>,
    appended: u64,
}

/// A point in an [`OutputLog`]: how much had been appended when it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutputMark(u64);

impl fmt::Debug for OutputLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputLog")
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

fn without_white_space(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Removes ANSI escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL|ESC \`, and two-byte escapes) and
/// carriage returns, which is enough to search a TUI's output for the words it drew.
fn strip_terminal_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            // Cursor moves to the right stand for the spaces they skip.
                            if matches!(c, 'C' | 'G') {
                                out.push(' ');
                            }
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_log_keeps_only_the_newest_bytes() {
        let log = OutputLog::new(8);
        log.append(b"0123456789");
        assert_eq!(log.text(), "23456789");
        log.append(b"ab");
        assert_eq!(log.text(), "456789ab");
    }

    #[test]
    fn escapes_are_removed_before_searching() {
        let log = OutputLog::new(1024);
        log.append(b"\x1b[2J\x1b[1;1H\x1b[1mI am using\x1b[0m this\r\n\x1b]0;title\x07ok");
        assert_eq!(log.text(), "I am using this\nok");
    }

    #[test]
    fn text_since_a_mark_leaves_out_what_came_before() {
        let log = OutputLog::new(8);
        log.append(b"Interrupted ");
        let mark = log.mark();
        assert_eq!(log.text_since(mark), "");
        log.append(b"ok");
        assert_eq!(log.text_since(mark), "ok");
        log.append(b"0123456789");
        // Beyond the capacity, what is kept is all there is.
        assert_eq!(log.text_since(mark), "23456789");
    }

    #[tokio::test(start_paused = true)]
    async fn spaces_drawn_as_cursor_moves_or_wraps_do_not_hide_the_text() {
        // As the claude TUI draws its development-channels dialog.
        let log = OutputLog::new(1024);
        log.append(
            b"\x1b[3G1.\x1b[6GI\x1b[8Gam\x1b[11Gusing\x1b[1Cthis for local\r\n  development",
        );
        assert_eq!(log.text(), " 1. I am using this for local\n  development");
        tokio::time::timeout(
            Duration::from_secs(1),
            log.wait_for("I am using this for local development"),
        )
        .await
        .expect("found");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_wakes_when_the_text_appears() {
        let log = OutputLog::new(1024);
        let writer = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            writer.append(b"Loading...");
            tokio::time::sleep(Duration::from_secs(1)).await;
            writer.append(b" Exit\x1b[0m");
        });
        tokio::time::timeout(Duration::from_secs(5), log.wait_for("Loading... Exit"))
            .await
            .expect("the text appeared");
    }
}
