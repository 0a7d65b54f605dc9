//! The `bridge` example binary as a child process of a test: started on 127.0.0.1:0, its output kept,
//! stopped (and its output shown) when the test is over.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;
use tempfile::TempDir;

use super::{PATIENCE, body_json, chat_request, send_to};

/// The text that announces the listening address on standard error.
const READY: &str = "bridge ready: POST http://";

/// A running `bridge` process. Dropping it kills the process (and shows its output if the test failed).
pub struct BridgeProcess {
    child: Child,
    /// Holds the workspace root and the process's working directory.
    dir: TempDir,
    stdout: Capture,
    stderr: Capture,
    /// Resolves with the address from the `bridge ready` line; dropped unsent if the line never comes.
    ready: Option<tokio::sync::oneshot::Receiver<SocketAddr>>,
    addr: Option<SocketAddr>,
}

impl BridgeProcess {
    /// Starts the binary on 127.0.0.1:0 with a fresh workspace root and `args`, and waits until it listens.
    pub async fn start(args: &[&str]) -> Self {
        let mut bridge = Self::spawn(|command, workspace| {
            command
                .args(["--listen", "127.0.0.1:0", "--workspace-root"])
                .arg(workspace)
                .args(args);
        });
        bridge.wait_ready().await;
        bridge
    }

    /// Starts the binary without waiting for it: `configure` adds arguments and environment, given the
    /// workspace directory. The process runs in another directory, so a turn that runs in the workspace
    /// really was sent there. No `SYNTHESIS_*` variable is inherited from the test's environment.
    pub fn spawn(configure: impl FnOnce(&mut Command, &Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("workspace");
        std::fs::create_dir(&workspace).unwrap();
        let mut command = Command::new(super::examples::binary("bridge"));
        command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        remove_env_prefixed(&mut command, "SYNTHESIS_");
        // Never the fixed default port or the user's own state.
        command
            .env("SYNTHESIS_WS_LISTEN", "127.0.0.1:0")
            .env("SYNTHESIS_STATE_DIR", dir.path().join("state"));
        configure(&mut command, &workspace);
        let mut child = command.spawn().expect("starting the bridge binary");

        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let stdout = Capture::start(child.stdout.take().unwrap(), None);
        let stderr = Capture::start(child.stderr.take().unwrap(), Some(ready_tx));
        Self {
            child,
            dir,
            stdout,
            stderr,
            ready: Some(ready),
            addr: None,
        }
    }

    /// Waits for the `bridge ready` line and returns the address it names.
    pub async fn wait_ready(&mut self) -> SocketAddr {
        if let Some(ready) = self.ready.take() {
            match tokio::time::timeout(PATIENCE, ready).await {
                Ok(Ok(addr)) => self.addr = Some(addr),
                Ok(Err(_)) => panic!("the bridge never got ready:\n{}", self.stderr()),
                Err(_) => panic!("no `bridge ready` line in time:\n{}", self.stderr()),
            }
        }
        self.addr.expect("the bridge's address")
    }

    /// The bridge's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("call wait_ready first")
    }

    /// The directory turns run in when the request names no workspace.
    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    /// Everything the bridge has written to standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Sends SIGTERM, as a service manager stopping the bridge would.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGINT, as Ctrl-C in a terminal would.
    pub fn interrupt(&self) {
        self.signal("-INT");
    }

    /// Waits (boundedly) for the process to exit and for its output to be read to the end.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let waited = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let Ok(status) = waited else {
            panic!("the bridge did not exit in time:\n{}", self.stderr());
        };
        let drained = tokio::time::timeout(PATIENCE, async {
            while !(self.stdout.finished() && self.stderr.finished()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            drained.is_ok(),
            "the bridge exited but its output stayed open:\n{}",
            self.stderr()
        );
        status
    }

    /// Sends one request on a fresh connection; the response's body may still be streaming.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        send_to(self.addr(), request)
            .await
            .unwrap_or_else(|| panic!("no response in time:\n{}", self.stderr()))
    }

    pub async fn chat(&self, body: Value) -> Response<Incoming> {
        self.send(chat_request(body)).await
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        // SIGTERM first, so that the bridge stops its agents too (a failed test leaks no process); SIGKILL
        // if it is slow about it.
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The process is gone: its last lines are on their way.
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline && !(self.stdout.finished() && self.stderr.finished()) {
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!("--- bridge stderr ---\n{}", self.stderr.text());
            eprintln!("--- bridge stdout ---\n{}", self.stdout.text());
        }
    }
}

/// One of the process's output pipes, read to the end on a thread of its own and kept in full.
struct Capture {
    text: Arc<Mutex<String>>,
    thread: JoinHandle<()>,
}

impl Capture {
    /// Reads `pipe`; when `ready` is given, sends it the address of the first `bridge ready` line.
    fn start(
        mut pipe: impl Read + Send + 'static,
        mut ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    ) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let thread = std::thread::spawn({
            let text = text.clone();
            move || {
                let mut buffer = [0; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                    let mut text = text.lock().unwrap();
                    text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                    if let Some(addr) = ready.is_some().then(|| ready_addr(&text)).flatten() {
                        let _ = ready.take().unwrap().send(addr);
                    }
                }
            }
        });
        Self { text, thread }
    }

    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    fn finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// The address in a complete `bridge ready: POST http://ADDR/v1/chat/completions` line, if there is one.
fn ready_addr(output: &str) -> Option<SocketAddr> {
    let complete = &output[..output.rfind('\n')?];
    let line = complete.lines().find(|line| line.contains(READY))?;
    let rest = &line[line.find(READY)? + READY.len()..];
    let addr = &rest[..rest.find('/')?];
    Some(
        addr.parse()
            .unwrap_or_else(|e| panic!("{e}: bad address in {line:?}")),
    )
}

/// The text of a non-streaming completion, after checking its shape.
pub async fn completion_text(response: Response<Incoming>) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let json = body_json(response).await;
    assert_eq!(json["object"], "chat.completion", "{json}");
    assert_eq!(json["choices"][0]["message"]["role"], "assistant", "{json}");
    assert_eq!(json["choices"][0]["finish_reason"], "stop", "{json}");
    json["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {json}"))
        .to_owned()
}

/// Waits until `pid` has exited: no `/proc/PID`, or a zombie (`Z`, dead and waiting for its reaper).
pub async fn wait_process_gone(pid: u32) {
    let stat = format!("/proc/{pid}/stat");
    let gone = tokio::time::timeout(PATIENCE, async {
        loop {
            match std::fs::read_to_string(&stat) {
                Err(_) => return,
                // "PID (comm) STATE ...": comm may hold spaces or parentheses, the state follows the last ')'.
                Ok(line)
                    if line
                        .rsplit(')')
                        .next()
                        .unwrap()
                        .trim_start()
                        .starts_with('Z') =>
                {
                    return;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "process {pid} is still running");
}

/// Keeps the test's own `PREFIX*` variables (the developer's settings) away from `command`.
pub fn remove_env_prefixed(command: &mut Command, prefix: &str) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(prefix) {
            command.env_remove(key);
        }
    }
}
