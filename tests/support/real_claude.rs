//! The real Claude Code CLI behind the `bridge` binary, against the project's mock Anthropic API: a test
//! directory with the CLI's config, a bridge to start in either mode, and turns to send it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use synthesis_mock_anthropic::{MockAnthropic, RecordedRequest, script};
use tempfile::TempDir;

use super::bridge_process::{BridgeProcess, remove_env_prefixed};
use super::chat_request;

/// The variable `scripts/e2e-claude` sets to the pinned CLI's binary.
pub const CLAUDE_BIN_VAR: &str = "SYNTHESIS_E2E_CLAUDE";

/// The variable `scripts/e2e-claude` sets to the pinned Claude ACP agent's entry point, which `node` runs.
pub const CLAUDE_ACP_VAR: &str = "SYNTHESIS_E2E_CLAUDE_ACP";

/// The key the CLI sends to the mock; the seeded config approves it.
pub const API_KEY: &str = "sk-ant-e2e-0123456789abcdefghijklmnopqrstuvwxyz";

/// How long one turn may take, a cold `claude` start included. Generous: CI machines are slow and this only
/// bounds a hang, it measures nothing.
pub const TURN_PATIENCE: Duration = Duration::from_secs(120);

/// One test directory: the CLI's config, the bridge's state, a workspace per bridge run.
pub struct World {
    pub claude_bin: PathBuf,
    pub api: MockAnthropic,
    dir: TempDir,
}

/// How the bridge talks to Claude Code: `--claude-mode`, or through the Claude ACP agent (`--acp-agent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Channel,
    StreamJson,
    Acp,
}

impl World {
    pub async fn new() -> Self {
        let claude_bin = std::env::var_os(CLAUDE_BIN_VAR).map(PathBuf::from).unwrap_or_else(|| {
            panic!("{CLAUDE_BIN_VAR} is not set: run scripts/e2e-claude, which installs the pinned claude CLI")
        });
        assert!(
            claude_bin.is_file(),
            "{} does not exist",
            claude_bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("claude-config")).unwrap();
        Self {
            claude_bin,
            api: MockAnthropic::start().await.unwrap(),
            dir,
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("claude-config")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts the bridge in the channel mode; see [`World::start_bridge_in`].
    pub async fn start_bridge(&self) -> BridgeProcess {
        self.start_bridge_in(Mode::Channel).await
    }

    /// Starts the bridge with the real CLI in `mode`, its config seeded so that no first-run dialog stops
    /// it (`../shared/facts/claude-code-cli.md`: onboarding done, the API key approved, the workspace
    /// trusted), and the channels feature on for the channel mode only: the stream-json mode must work
    /// for logins that do not have it.
    pub async fn start_bridge_in(&self, mode: Mode) -> BridgeProcess {
        self.start_bridge_with(mode, &[]).await
    }

    /// [`World::start_bridge_in`] with more flags for the bridge.
    pub async fn start_bridge_with(&self, mode: Mode, flags: &[&str]) -> BridgeProcess {
        let mut bridge = BridgeProcess::spawn(|command, workspace| {
            self.seed_config(workspace, mode == Mode::Channel);
            remove_env_prefixed(command, "ANTHROPIC_");
            remove_env_prefixed(command, "CLAUDE_");
            match mode {
                Mode::Channel => {}
                Mode::StreamJson => {
                    command.args(["--claude-mode", "stream-json"]);
                }
                Mode::Acp => {
                    let agent = claude_acp_agent();
                    command
                        .arg("--acp-agent")
                        .arg(format!("node '{}'", agent.display()))
                        // The agent drives the pinned CLI, not the Claude Code its SDK bundles.
                        .env("CLAUDE_CODE_EXECUTABLE", &self.claude_bin)
                        // As root, its SDK refuses to start Claude Code without it
                        // (`../shared/facts/acp-agents.md`).
                        .env("IS_SANDBOX", "1");
                }
            }
            command.args(flags);
            command
                .args(["--listen", "127.0.0.1:0", "--workspace-root"])
                .arg(workspace)
                .arg("--claude-bin")
                .arg(&self.claude_bin)
                .arg("--state-dir")
                .arg(self.state_dir())
                .args(["--ready-timeout", "90s", "--heartbeat", "5s"])
                .env("ANTHROPIC_BASE_URL", self.api.base_url())
                .env("ANTHROPIC_API_KEY", API_KEY)
                .env("CLAUDE_CONFIG_DIR", self.config_dir())
                .env("CLAUDE_CODE_GB_DISK_CACHE_WHEN_TELEMETRY_OFF", "1")
                .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
                .env("CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL", "1")
                .env("DISABLE_AUTOUPDATER", "1")
                .env("ENABLE_TOOL_SEARCH", "false")
                .env(
                    "SYNTHESIS_LOG",
                    "info,synthesis_plugin_claude_channel=debug",
                );
        });
        bridge.wait_ready().await;
        bridge
    }

    /// Adds `workspace` to the trusted projects of `.claude.json`, keeping what the CLI wrote there.
    pub fn seed_config(&self, workspace: &Path, channels: bool) {
        let path = self.config_dir().join(".claude.json");
        let mut config: Value = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_else(|| json!({}));
        config["hasCompletedOnboarding"] = json!(true);
        config["customApiKeyResponses"] =
            json!({"approved": [&API_KEY[API_KEY.len() - 20..]], "rejected": []});
        if channels {
            config["cachedGrowthBookFeatures"]["tengu_harbor"] = json!(true);
        }
        let workspace = workspace.canonicalize().unwrap();
        config["projects"][workspace.to_str().unwrap()]["hasTrustDialogAccepted"] = json!(true);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }

    /// The body of the first model request whose newest prompt ends with `text` (a note may come before
    /// it).
    pub fn request_ending_with(&self, text: &str) -> Value {
        self.api
            .requests()
            .into_iter()
            .find(|request| request.prompt().is_some_and(|p| p.content.ends_with(text)))
            .unwrap_or_else(|| panic!("the mock never saw {text:?}"))
            .body
    }

    /// The requests whose newest prompt is `content`.
    pub fn requests_for(&self, content: &str) -> Vec<RecordedRequest> {
        self.api
            .requests()
            .into_iter()
            .filter(|request| {
                request
                    .prompt()
                    .is_some_and(|prompt| prompt.content == content)
            })
            .collect()
    }

    /// The conversation id the bridge keeps for `session`.
    pub fn claude_session(&self, session: &str) -> String {
        stored_conversation(&self.state_dir(), session)
    }
}

/// The conversation id the bridge keeps for `session`, read from its state directory `state` as the store
/// left it: the snapshot, then the journal's changes.
pub fn stored_conversation(state: &Path, session: &str) -> String {
    let mut records: Vec<Value> = std::fs::read(state.join("sessions.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|snapshot| snapshot["sessions"].as_array().cloned())
        .unwrap_or_default();
    let journal = std::fs::read_to_string(state.join("sessions.journal")).unwrap_or_default();
    for change in journal
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
    {
        let key = match change["change"].as_str() {
            Some("put") => change["record"]["key"].clone(),
            _ => change["key"].clone(),
        };
        records.retain(|record| record["key"] != key);
        if change["change"] == "put" {
            records.push(change["record"].clone());
        }
    }
    let record = records
        .iter()
        .find(|record| {
            record["key"]
                .as_str()
                .is_some_and(|key| key.contains(session))
        })
        .unwrap_or_else(|| panic!("no record of {session} in {records:?}"));
    record["conversation_id"].as_str().unwrap().to_owned()
}

/// The pinned Claude ACP agent's entry point.
pub fn claude_acp_agent() -> PathBuf {
    let agent = std::env::var_os(CLAUDE_ACP_VAR).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{CLAUDE_ACP_VAR} is not set: run scripts/e2e-claude, which installs the pinned Claude ACP agent")
    });
    assert!(agent.is_file(), "{} does not exist", agent.display());
    agent
}

/// The `claude` processes the bridge runs, as (pid, command line).
pub fn claude_children(bridge: &BridgeProcess, claude_bin: &Path) -> Vec<(u32, Vec<String>)> {
    children(bridge, |args| {
        args.first()
            .is_some_and(|program| Path::new(program) == claude_bin)
    })
}

/// The ACP agent processes the bridge runs (`node` with `entry`), as (pid, command line).
pub fn acp_children(bridge: &BridgeProcess, entry: &Path) -> Vec<(u32, Vec<String>)> {
    children(bridge, |args| {
        args.iter().any(|arg| Path::new(arg) == entry)
    })
}

/// The bridge's living child processes whose command line `wanted` picks, as (pid, command line).
pub fn children(
    bridge: &BridgeProcess,
    wanted: impl Fn(&[String]) -> bool,
) -> Vec<(u32, Vec<String>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "PID (comm) STATE PPID …": comm may hold spaces, the fields after the last ')' do not.
        let after = stat.rsplit(')').next().unwrap_or_default();
        let mut fields = after.split_whitespace();
        let (state, ppid) = (
            fields.next(),
            fields.next().and_then(|ppid| ppid.parse().ok()),
        );
        if ppid != Some(bridge.pid()) || state == Some("Z") {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        if wanted(&args) {
            found.push((pid, args));
        }
    }
    found
}

/// Runs one turn for `user` and returns the answer's text. A streaming turn must be well formed: chunks
/// of one id, ending with `finish_reason: "stop"` and `[DONE]`.
pub async fn turn(bridge: &BridgeProcess, user: &str, text: &str, stream: bool) -> String {
    let (status, body) = post_turn(bridge, user, text, stream).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", bridge.stderr());
    if !stream {
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["choices"][0]["finish_reason"], "stop", "{json}");
        return json["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("no content: {json}"))
            .to_owned();
    }
    let events: Vec<&str> = body
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert!(
        chunks.iter().all(|chunk| chunk["id"] == chunks[0]["id"]),
        "{body}"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop",
        "{body}"
    );
    chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// Sends one turn and returns the status and the whole body.
pub async fn post_turn(
    bridge: &BridgeProcess,
    user: &str,
    text: &str,
    stream: bool,
) -> (StatusCode, String) {
    tokio::time::timeout(TURN_PATIENCE, post_to(bridge.addr(), user, text, stream))
        .await
        .unwrap_or_else(|_| panic!("no answer to {text:?} in time:\n{}", bridge.stderr()))
}

/// [`post_turn`] to the bridge at `addr`, for a task of its own.
pub async fn post_to(
    addr: std::net::SocketAddr,
    user: &str,
    text: &str,
    stream: bool,
) -> (StatusCode, String) {
    let body = json!({
        "model": "claude",
        "stream": stream,
        "user": user,
        "messages": [{"role": "user", "content": text}],
    });
    post_body(addr, body).await
}

/// Sends the chat request `body` to the bridge at `addr`; returns the status and the whole response body.
pub async fn post_body(addr: std::net::SocketAddr, body: Value) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(chat_request(body)).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// Sends `text` for `user` in a task of its own and returns once the model has its request: the turn is in
/// the model's hands (a `STALL` prompt keeps it there).
pub async fn post_until_the_model_has_it(
    world: &World,
    bridge: &BridgeProcess,
    user: &str,
    text: &str,
) -> tokio::task::JoinHandle<(StatusCode, String)> {
    post_until_asked(&world.api, bridge, user, text).await
}

/// [`post_until_the_model_has_it`] for any agent on the mock `api`.
pub async fn post_until_asked(
    api: &MockAnthropic,
    bridge: &BridgeProcess,
    user: &str,
    text: &str,
) -> tokio::task::JoinHandle<(StatusCode, String)> {
    let pending = {
        let (addr, user, text) = (bridge.addr(), user.to_owned(), text.to_owned());
        tokio::spawn(async move { post_to(addr, &user, &text, true).await })
    };
    wait_until("the model's request", || {
        api.requests().iter().any(|request| {
            request
                .prompt()
                .is_some_and(|prompt| prompt.content == text)
        })
    })
    .await;
    pending
}

/// SIGKILLs every `claude` the bridge runs but those in `spared`; returns how many.
pub fn kill_claude(bridge: &BridgeProcess, claude_bin: &Path, spared: &[u32]) -> usize {
    kill(claude_children(bridge, claude_bin), spared)
}

/// SIGKILLs the processes of `children` but those in `spared`; returns how many.
pub fn kill(children: Vec<(u32, Vec<String>)>, spared: &[u32]) -> usize {
    let children: Vec<_> = children
        .into_iter()
        .filter(|(pid, _)| !spared.contains(pid))
        .collect();
    for (pid, _) in &children {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(*pid).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    children.len()
}

/// Waits until `found` says yes, checking every few milliseconds.
pub async fn wait_until(what: &str, mut found: impl FnMut() -> bool) {
    tokio::time::timeout(TURN_PATIENCE, async {
        while !found() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never saw {what}"));
}

/// The transcript files under the CLI's config directory.
pub fn transcripts(world: &World) -> Vec<PathBuf> {
    let Ok(projects) = std::fs::read_dir(world.config_dir().join("projects")) else {
        return Vec::new();
    };
    projects
        .flatten()
        .flat_map(|project| {
            std::fs::read_dir(project.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect()
}

/// Sends `body` and returns the status and the whole response body.
pub async fn post_json(bridge: &BridgeProcess, body: Value) -> (StatusCode, String) {
    tokio::time::timeout(TURN_PATIENCE, post_body(bridge.addr(), body))
        .await
        .unwrap_or_else(|_| panic!("no answer in time:\n{}", bridge.stderr()))
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
pub fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The text deltas of an SSE body, one string per chunk that carried text.
pub fn text_deltas(body: &str) -> Vec<String> {
    sse_events(body)
        .iter()
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| {
            let chunk: Value = serde_json::from_str(data).unwrap();
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .filter(|text| !text.is_empty())
                .map(str::to_owned)
        })
        .collect()
}

/// The newest user message of a model request, as JSON text.
pub fn last_user_message(body: &Value) -> String {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|message| message["role"] == "user")
        .unwrap_or_else(|| panic!("no user message in {body}"))
        .to_string()
}

/// The newest `tool_result` block of a model request.
pub fn last_tool_result(body: &Value) -> Value {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|message| script::content_blocks(&message["content"]))
        .rfind(|block| block["type"] == "tool_result")
        .unwrap_or_else(|| panic!("no tool result in {body}"))
}

/// The prompts the model saw in the first request `api` got for `text`.
pub fn history(api: &MockAnthropic, text: &str) -> Vec<String> {
    let request = api
        .requests()
        .into_iter()
        .find(|request| {
            request
                .prompt()
                .is_some_and(|prompt| prompt.content == text)
        })
        .unwrap_or_else(|| panic!("the mock never saw {text:?}"));
    request
        .prompts()
        .into_iter()
        .map(|prompt| prompt.content)
        .collect()
}
