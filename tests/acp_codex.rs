//! The ACP backend with an agent that is not Claude: the `bridge` binary runs the pinned Codex ACP agent
//! (`@zed-industries/codex-acp`, installed by `scripts/install-codex-acp`) with `--acp-agent`, its model
//! provider the project's mock of OpenAI's Responses API on 127.0.0.1 (`docs/acp-measurements.md`, A2).
//!
//! Run it with `scripts/e2e-acp`, which installs the agent and sets `SYNTHESIS_E2E_CODEX_ACP`.

mod support;

use std::path::{Path, PathBuf};

use http::StatusCode;
use serde_json::json;
use support::bridge_process::BridgeProcess;
use support::real_claude::{
    TURN_PATIENCE, children, history, kill, post_body, post_turn, post_until_asked,
    stored_conversation, text_deltas, turn,
};
use synthesis_mock_anthropic::{MockAnthropic, script};
use tempfile::TempDir;

/// The variable `scripts/e2e-acp` sets to the pinned agent's binary.
const CODEX_ACP_VAR: &str = "SYNTHESIS_E2E_CODEX_ACP";

/// The agent, its state (`CODEX_HOME`) and the mock model, for one test.
struct Codex {
    bin: PathBuf,
    api: MockAnthropic,
    dir: TempDir,
}

impl Codex {
    async fn new() -> Self {
        let bin = std::env::var_os(CODEX_ACP_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!("{CODEX_ACP_VAR} is not set: run scripts/e2e-acp, which installs the pinned codex-acp")
            });
        assert!(bin.is_file(), "{} does not exist", bin.display());
        let api = MockAnthropic::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("codex-home");
        std::fs::create_dir(&home).unwrap();
        // A provider that is not `openai` needs no login. A known model slug keeps Codex from prefixing a
        // warning to every answer; no retries, so that a failure shows at once.
        let config = format!(
            r#"model = "gpt-5.4-mini"
model_provider = "mock"

[model_providers.mock]
name = "Mock"
base_url = "{}/v1"
wire_api = "responses"
env_key = "MOCK_API_KEY"
stream_max_retries = 0
request_max_retries = 0
"#,
            api.base_url()
        );
        std::fs::write(home.join("config.toml"), config).unwrap();
        Self { bin, api, dir }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    async fn start_bridge(&self) -> BridgeProcess {
        let mut bridge = BridgeProcess::spawn(|command, workspace| {
            command
                .args(["--listen", "127.0.0.1:0", "--workspace-root"])
                .arg(workspace)
                .arg("--acp-agent")
                .arg(format!("'{}'", self.bin.display()))
                .arg("--state-dir")
                .arg(self.state_dir())
                .args(["--heartbeat", "5s"])
                .env("CODEX_HOME", self.dir.path().join("codex-home"))
                .env("HOME", self.dir.path())
                .env("MOCK_API_KEY", "sk-mock-e2e")
                .env("SYNTHESIS_LOG", "info");
        });
        bridge.wait_ready().await;
        bridge
    }

    fn requests_for(&self, text: &str) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|request| {
                request
                    .prompt()
                    .is_some_and(|prompt| prompt.content == text)
            })
            .count()
    }

    /// The agent processes of `bridge`.
    fn agents(&self, bridge: &BridgeProcess) -> Vec<(u32, Vec<String>)> {
        children(bridge, |args| {
            args.first()
                .is_some_and(|program| Path::new(program) == self.bin)
        })
    }
}

#[tokio::test]
#[ignore = "needs the pinned codex-acp: run scripts/e2e-acp"]
async fn codex_streams_keeps_history_and_resumes_after_a_restart() {
    let codex = Codex::new().await;
    let alice = "agent::codex-alice";
    let mut bridge = codex.start_bridge().await;

    let first = "first question with several words";
    let (status, body) = tokio::time::timeout(
        TURN_PATIENCE,
        post_body(
            bridge.addr(),
            json!({"model": "codex", "stream": true, "user": alice,
                   "messages": [{"role": "user", "content": first}]}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}\n{}", bridge.stderr());
    let deltas = text_deltas(&body);
    let expected = script::reply_text(first);
    assert_eq!(deltas.concat(), expected, "{}", bridge.stderr());
    assert_eq!(
        deltas.len(),
        script::text_deltas(&expected).len(),
        "every model delta is relayed on its own: {deltas:?}"
    );
    let session_id = stored_conversation(&codex.state_dir(), alice);

    let second = "second question";
    assert_eq!(
        turn(&bridge, alice, second, false).await,
        script::reply_text(second)
    );
    assert_eq!(history(&codex.api, second), [first, second]);
    assert_eq!(codex.agents(&bridge).len(), 1);

    // A failed model request fails the turn with the agent's words.
    let (status, body) = post_turn(&bridge, alice, "API_ERROR on purpose", false).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");

    // After a restart the session is reopened in a new process: same id, same history.
    bridge.terminate();
    assert!(bridge.wait_exit().await.success(), "{}", bridge.stderr());
    let bridge = codex.start_bridge().await;
    let third = "third question";
    assert_eq!(
        turn(&bridge, alice, third, true).await,
        script::reply_text(third)
    );
    assert_eq!(stored_conversation(&codex.state_dir(), alice), session_id);
    let third_history = history(&codex.api, third);
    assert_eq!(third_history.first().map(String::as_str), Some(first));
    assert_eq!(third_history.last().map(String::as_str), Some(third));
}

#[tokio::test]
#[ignore = "needs the pinned codex-acp: run scripts/e2e-acp"]
async fn codex_cancels_and_survives_a_kill() {
    let codex = Codex::new().await;
    let bridge = codex.start_bridge().await;
    let user = "agent::codex-cancel";
    assert_eq!(
        turn(&bridge, user, "warm up", true).await,
        script::reply_text("warm up")
    );
    let session_id = stored_conversation(&codex.state_dir(), user);
    // A client that goes away mid-turn: session/cancel, and the next turn goes on with the conversation.
    for round in 0..3 {
        let slow = format!("STALL 20000 cancel me {round}");
        let pending = post_until_asked(&codex.api, &bridge, user, &slow).await;
        pending.abort();
        let next = format!("after the cancel {round}");
        assert_eq!(
            turn(&bridge, user, &next, round % 2 == 0).await,
            script::reply_text(&next)
        );
        assert_eq!(codex.requests_for(&next), 1);
        assert_eq!(
            history(&codex.api, &next).first().map(String::as_str),
            Some("warm up")
        );
    }
    assert!(
        !bridge.stderr().contains("did not end the cancelled prompt"),
        "every cancel ended the prompt:\n{}",
        bridge.stderr()
    );
    // The agent killed mid-turn: the turn fails at once with the cause, the next one reopens the session.
    let doomed = "STALL 30000 doomed turn";
    let pending = post_until_asked(&codex.api, &bridge, user, doomed).await;
    assert_eq!(kill(codex.agents(&bridge), &[]), 1);
    let (status, body) = tokio::time::timeout(TURN_PATIENCE, pending)
        .await
        .expect("the turn ended at once")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(
            "the ACP agent codex-acp was killed by signal 9 (SIGKILL) in the middle of the turn"
        ),
        "{body}"
    );
    let next = "after the kill";
    assert_eq!(
        turn(&bridge, user, next, false).await,
        script::reply_text(next)
    );
    assert_eq!(
        history(&codex.api, next).first().map(String::as_str),
        Some("warm up")
    );
    assert_eq!(stored_conversation(&codex.state_dir(), user), session_id);
}
