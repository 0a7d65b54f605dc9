//! The `bridge` example binary as operators run it: a real process on a real loopback socket.

mod support;

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

use serde_json::{Value, json};
use support::fake_claude::history;
use support::{PATIENCE, SseReader, body_json, chat_request, expect_error, send_to, simple_body};
use tempfile::TempDir;

/// The text that announces the listening address on standard error.
const READY: &str = "bridge ready: POST http://";

/// A running `bridge` process. Dropping it kills the process (and shows its output if the test failed).
struct Bridge {
    child: Child,
    /// Holds the workspace root and the process's working directory.
    dir: TempDir,
    stdout: Capture,
    stderr: Capture,
    /// Resolves with the address from the `bridge ready` line; dropped unsent if the line never comes.
    ready: Option<tokio::sync::oneshot::Receiver<SocketAddr>>,
    addr: Option<SocketAddr>,
}

impl Bridge {
    /// Starts the binary on 127.0.0.1:0 with a fresh workspace root and `args`, and waits until it listens.
    async fn start(args: &[&str]) -> Self {
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
    fn spawn(configure: impl FnOnce(&mut Command, &Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("workspace");
        std::fs::create_dir(&workspace).unwrap();
        let mut command = Command::new(support::examples::binary("bridge"));
        command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SYNTHESIS_") {
                command.env_remove(key);
            }
        }
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
    async fn wait_ready(&mut self) -> SocketAddr {
        if let Some(ready) = self.ready.take() {
            match tokio::time::timeout(PATIENCE, ready).await {
                Ok(Ok(addr)) => self.addr = Some(addr),
                Ok(Err(_)) => panic!("the bridge never got ready:\n{}", self.stderr()),
                Err(_) => panic!("no `bridge ready` line in time:\n{}", self.stderr()),
            }
        }
        self.addr.expect("the bridge's address")
    }

    fn addr(&self) -> SocketAddr {
        self.addr.expect("call wait_ready first")
    }

    /// The directory turns run in when the request names no workspace.
    fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    /// Everything the bridge has written to standard error so far.
    fn stderr(&self) -> String {
        self.stderr.text()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Sends SIGTERM, as a service manager stopping the bridge would.
    fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGINT, as Ctrl-C in a terminal would.
    fn interrupt(&self) {
        self.signal("-INT");
    }

    /// Waits (boundedly) for the process to exit and for its output to be read to the end.
    async fn wait_exit(&mut self) -> ExitStatus {
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
    async fn send(&self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        send_to(self.addr(), request)
            .await
            .unwrap_or_else(|| panic!("no response in time:\n{}", self.stderr()))
    }

    async fn chat(&self, body: Value) -> Response<Incoming> {
        self.send(chat_request(body)).await
    }
}

impl Drop for Bridge {
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
async fn completion_text(response: Response<Incoming>) -> String {
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
async fn wait_process_gone(pid: u32) {
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

#[tokio::test]
async fn a_shell_agent_answers_streaming_and_non_streaming_turns() {
    let bridge = Bridge::start(&["--agent-command", "tr a-z A-Z"]).await;

    let mut sse = SseReader::new(
        bridge
            .chat(simple_body("stream", "hello, bridge", true))
            .await,
    );
    let mut events = Vec::new();
    while let Some(event) = sse.next().await {
        events.push(event);
    }
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|data| serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")))
        .collect();
    assert!(chunks.len() >= 3, "role, content and finish: {chunks:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let id = &chunks[0]["id"];
    assert!(id.is_string(), "{}", chunks[0]);
    for chunk in &chunks {
        assert_eq!(&chunk["id"], id, "{chunk}");
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
    }
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "HELLO, BRIDGE");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );

    let answer = bridge
        .chat(simple_body("plain", "quiet please", false))
        .await;
    assert_eq!(completion_text(answer).await, "QUIET PLEASE");
}

#[tokio::test]
async fn sigterm_ends_the_open_stream_stops_the_agent_and_exits_0() {
    let mut bridge = Bridge::start(&[
        "--agent-command",
        r#"echo started; sleep 300 & echo $! > "$PWD/sleep.pid"; wait"#,
    ])
    .await;

    let mut sse = SseReader::new(bridge.chat(simple_body("busy", "work", true)).await);
    let role = sse.chunk().await;
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
    let started = sse.chunk().await;
    assert_eq!(started["choices"][0]["delta"]["content"], "started\n");

    let pid_file = bridge.workspace().join("sleep.pid");
    let sleep_pid = tokio::time::timeout(PATIENCE, async {
        loop {
            let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if text.ends_with('\n') {
                return text.trim().parse::<u32>().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the agent writes its sleep's pid");
    assert!(
        Path::new(&format!("/proc/{sleep_pid}")).exists(),
        "the agent's sleep runs until the bridge stops it"
    );

    bridge.terminate();

    let rest = sse.rest().await;
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    assert!(rest.len() >= 2, "an ending chunk before [DONE]: {rest:?}");
    let ending: Value = serde_json::from_str(&rest[rest.len() - 2]).unwrap();
    assert_eq!(ending["error"]["code"], "shutting_down", "{ending}");
    assert_eq!(ending["id"], role["id"], "{ending}");

    let status = bridge.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", bridge.stderr());
    wait_process_gone(sleep_pid).await;
}

#[tokio::test]
async fn sigint_right_after_start_exits_0() {
    let mut bridge = Bridge::start(&["--agent-command", "cat"]).await;
    // Signalled the moment the ready line appears: the handlers must already be installed by then (they
    // once were not, and ~15% of such signals killed the bridge without a clean shutdown).
    bridge.interrupt();

    let status = bridge.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", bridge.stderr());
    assert!(
        bridge.stderr().contains("shutting down"),
        "{}",
        bridge.stderr()
    );
}

#[tokio::test]
async fn a_public_listen_address_without_an_api_key_is_refused_in_one_line() {
    let mut bridge = Bridge::spawn(|command, workspace| {
        command
            .args([
                "--listen",
                "0.0.0.0:0",
                "--agent-command",
                "cat",
                "--workspace-root",
            ])
            .arg(workspace)
            .env("RUST_BACKTRACE", "1");
    });

    let status = bridge.wait_exit().await;
    let stderr = bridge.stderr();
    assert!(!status.success(), "{status}\n{stderr}");
    assert_eq!(status.code(), Some(1), "{status}\n{stderr}");
    assert!(stderr.contains("--api-key"), "{stderr}");
    assert!(!stderr.contains("Stack backtrace"), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn a_missing_claude_gets_a_503_with_an_install_hint() {
    let bridge = Bridge::start(&["--claude-bin", "/nonexistent/claude"]).await;

    let response = bridge
        .chat(json!({"user": "u", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let message = expect_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
    )
    .await;
    assert!(message.contains("npm install"), "{message}");
    assert!(message.contains("/nonexistent/claude"), "{message}");
}

#[tokio::test]
async fn an_api_key_is_required_when_set() {
    let bridge = Bridge::start(&["--agent-command", "cat", "--api-key", "k"]).await;

    let anonymous = bridge.chat(simple_body("u", "echo me", false)).await;
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "invalid_api_key").await;

    let mut request = chat_request(simple_body("u", "echo me", false));
    request
        .headers_mut()
        .insert("authorization", "Bearer k".parse().unwrap());
    let answer = bridge.send(request).await;
    assert_eq!(completion_text(answer).await, "echo me");
}

#[tokio::test]
async fn synthesis_environment_variables_stand_in_for_flags() {
    let mut bridge = Bridge::spawn(|command, workspace| {
        command
            .env("SYNTHESIS_LISTEN", "127.0.0.1:0")
            .env("SYNTHESIS_AGENT_COMMAND", "printf env-ok; : > ran-here")
            .env("SYNTHESIS_WORKSPACE_ROOT", workspace);
    });
    bridge.wait_ready().await;

    let answer = bridge.chat(simple_body("u", "hi", false)).await;
    assert_eq!(completion_text(answer).await, "env-ok");
    assert!(
        bridge.workspace().join("ran-here").exists(),
        "the turn ran in SYNTHESIS_WORKSPACE_ROOT"
    );
}

#[tokio::test]
async fn an_empty_api_key_does_not_open_a_public_address() {
    let mut bridge = Bridge::spawn(|command, workspace| {
        command
            .args([
                "--listen",
                "0.0.0.0:0",
                "--api-key",
                " ",
                "--agent-command",
                "cat",
                "--workspace-root",
            ])
            .arg(workspace);
    });
    let status = bridge.wait_exit().await;
    assert_eq!(status.code(), Some(1), "{status}\n{}", bridge.stderr());
    assert!(bridge.stderr().contains("--api-key"), "{}", bridge.stderr());
}

#[tokio::test]
async fn the_agent_does_not_inherit_the_bridge_api_key() {
    let mut bridge = Bridge::spawn(|command, workspace| {
        command
            .env("SYNTHESIS_LISTEN", "127.0.0.1:0")
            .env("SYNTHESIS_API_KEY", "k")
            .env(
                "SYNTHESIS_AGENT_COMMAND",
                r#"printf '%s' "${SYNTHESIS_API_KEY-unset}""#,
            )
            .env("SYNTHESIS_WORKSPACE_ROOT", workspace);
    });
    bridge.wait_ready().await;

    let mut request = chat_request(simple_body("u", "hi", false));
    request
        .headers_mut()
        .insert("authorization", "Bearer k".parse().unwrap());
    assert_eq!(completion_text(bridge.send(request).await).await, "unset");
}

#[tokio::test]
async fn turn_limit_flags_heartbeat_idle_timeout_and_queue_depth() {
    let bridge = Bridge::start(&[
        "--agent-command",
        "sleep 30",
        "--heartbeat",
        "100ms",
        "--idle-timeout",
        "800ms",
        "--queue-depth",
        "0",
    ])
    .await;
    let mut sse = SseReader::new(bridge.chat(simple_body("a", "hi", true)).await);
    let role = sse.chunk().await;

    // The session is busy and nobody may wait.
    let refused = bridge.chat(simple_body("a", "again", true)).await;
    assert!(refused.headers().contains_key("retry-after"));
    expect_error(refused, StatusCode::TOO_MANY_REQUESTS, "session_busy").await;

    // The silent agent gets heartbeats, then the idle timeout ends the stream.
    let mut heartbeats = 0;
    let last = loop {
        let chunk = sse.chunk().await;
        if chunk.get("error").is_some() {
            break chunk;
        }
        assert_eq!(chunk["id"], role["id"]);
        assert_eq!(chunk["choices"][0]["delta"], json!({"content": ""}));
        heartbeats += 1;
    };
    assert!(heartbeats >= 3, "{heartbeats}");
    assert_eq!(last["error"]["code"], "idle_timeout");
    assert_eq!(sse.rest().await, ["[DONE]"]);

    // Once the agent has been stopped (the process group killed and reaped) the session takes turns again;
    // until then it is still busy, as a client retrying on 429 would see.
    let deadline = Instant::now() + PATIENCE;
    let response = loop {
        let response = bridge.chat(simple_body("a", "once more", true)).await;
        if response.status() != StatusCode::TOO_MANY_REQUESTS || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    SseReader::new(response).chunk().await;
}

#[tokio::test]
async fn a_zero_timeout_is_refused_with_a_hint() {
    let mut bridge = Bridge::spawn(|command, workspace| {
        command
            .args([
                "--agent-command",
                "cat",
                "--turn-timeout",
                "0s",
                "--workspace-root",
            ])
            .arg(workspace);
    });
    let status = bridge.wait_exit().await;
    let stderr = bridge.stderr();
    assert_eq!(status.code(), Some(2), "{status}\n{stderr}");
    assert!(stderr.contains("--turn-timeout"), "{stderr}");
    assert!(stderr.contains("`off`"), "{stderr}");
}

#[tokio::test]
async fn long_lived_claude_sessions_survive_a_bridge_restart() {
    let shared = tempfile::tempdir().unwrap();
    let (state, claude) = (shared.path().join("state"), shared.path().join("claude"));
    let start = |state: PathBuf, claude: PathBuf| {
        Bridge::spawn(move |command, workspace| {
            command
                .args(["--listen", "127.0.0.1:0", "--workspace-root"])
                .arg(workspace)
                .arg("--claude-bin")
                .arg(support::examples::binary("fake_claude"))
                .arg("--state-dir")
                .arg(state)
                .env("CLAUDE_CONFIG_DIR", claude);
        })
    };
    let ask = |text: &str| json!({"user": "agent::a", "stream": false, "messages": [{"role": "user", "content": text}]});
    let reply = |json: Value| {
        json["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let mut first = start(state.clone(), claude.clone());
    first.wait_ready().await;
    // Answered without the reply tool: the text comes through `bridge hook stop`.
    assert_eq!(
        reply(body_json(first.chat(ask("plain from the hook")).await).await),
        "from the hook"
    );
    let (turn, conversation) = history(&reply(body_json(first.chat(ask("history")).await).await));
    assert_eq!(turn, 2);
    let pid: u32 = reply(body_json(first.chat(ask("pid")).await).await)
        .parse()
        .unwrap();
    first.terminate();
    assert!(first.wait_exit().await.success(), "{}", first.stderr());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "claude stopped with the bridge"
    );

    let mut second = start(state, claude);
    second.wait_ready().await;
    let (turn, resumed) = history(&reply(body_json(second.chat(ask("history")).await).await));
    assert_eq!((turn, resumed), (4, conversation));
}
