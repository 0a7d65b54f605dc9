//! The `bridge` example binary as operators run it: a real process on a real loopback socket.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use serde_json::{Value, json};
use support::bridge_process::{BridgeProcess, completion_text, wait_process_gone};
use support::fake_claude::history;
use support::{PATIENCE, SseReader, body_json, chat_request, expect_error, simple_body};

#[tokio::test]
async fn a_shell_agent_answers_streaming_and_non_streaming_turns() {
    let bridge = BridgeProcess::start(&["--agent-command", "tr a-z A-Z"]).await;

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
    let mut bridge = BridgeProcess::start(&[
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
    let mut bridge = BridgeProcess::start(&["--agent-command", "cat"]).await;
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
    let mut bridge = BridgeProcess::spawn(|command, workspace| {
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
    let bridge = BridgeProcess::start(&["--claude-bin", "/nonexistent/claude"]).await;

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
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), "k\n").unwrap();
    // On the command line, or from a file (which no other user can read in `ps`).
    for flags in [
        ["--api-key", "k"],
        ["--api-key-file", key_file.path().to_str().unwrap()],
    ] {
        let mut args = vec!["--agent-command", "cat"];
        args.extend(flags);
        let bridge = BridgeProcess::start(&args).await;

        let anonymous = bridge.chat(simple_body("u", "echo me", false)).await;
        expect_error(anonymous, StatusCode::UNAUTHORIZED, "invalid_api_key").await;

        let mut request = chat_request(simple_body("u", "echo me", false));
        request
            .headers_mut()
            .insert("authorization", "Bearer k".parse().unwrap());
        let answer = bridge.send(request).await;
        assert_eq!(completion_text(answer).await, "echo me");
    }
}

#[tokio::test]
async fn synthesis_environment_variables_stand_in_for_flags() {
    let mut bridge = BridgeProcess::spawn(|command, workspace| {
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
    let mut bridge = BridgeProcess::spawn(|command, workspace| {
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
    let mut bridge = BridgeProcess::spawn(|command, workspace| {
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
    let bridge = BridgeProcess::start(&[
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
    let mut bridge = BridgeProcess::spawn(|command, workspace| {
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

/// The bridge with `fake_claude` for its agent, its state and the agent's config in directories that
/// outlive it.
fn start(state: PathBuf, claude: PathBuf) -> BridgeProcess {
    BridgeProcess::spawn(move |command, workspace| {
        command
            .args(["--listen", "127.0.0.1:0", "--workspace-root"])
            .arg(workspace)
            .arg("--claude-bin")
            .arg(support::examples::binary("fake_claude"))
            .arg("--state-dir")
            .arg(state)
            .env("CLAUDE_CONFIG_DIR", claude);
    })
}

/// A non-streaming chat body of `text` for `user`.
fn non_streaming(user: &str, text: &str) -> Value {
    json!({"user": user, "stream": false, "messages": [{"role": "user", "content": text}]})
}

/// The text of a non-streaming completion.
fn reply(json: Value) -> String {
    json["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {json}"))
        .to_owned()
}

#[tokio::test]
async fn long_lived_claude_sessions_survive_a_bridge_restart() {
    let shared = tempfile::tempdir().unwrap();
    let (state, claude) = (shared.path().join("state"), shared.path().join("claude"));
    let ask = |text: &str| non_streaming("agent::a", text);

    let mut first = start(state.clone(), claude.clone());
    first.wait_ready().await;
    // Answered without the reply tool: the text comes through the Stop hook's report.
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

#[tokio::test]
async fn a_bridge_killed_at_any_moment_keeps_its_sessions() {
    let shared = tempfile::tempdir().unwrap();
    let (state, claude) = (shared.path().join("state"), shared.path().join("claude"));
    let ask = non_streaming;
    let mut known = None;
    let mut turns = 0;
    for round in 0..6u64 {
        let mut bridge = start(state.clone(), claude.clone());
        bridge.wait_ready().await;
        // The session and its conversation outlive every kill, and so does what it was told.
        let (turn, conversation) = history(&reply(
            body_json(bridge.chat(ask("agent::kept", "history")).await).await,
        ));
        assert_eq!(
            conversation,
            *known.get_or_insert(conversation.clone()),
            "round {round}"
        );
        assert!(turn > turns, "round {round}: turn {turn} after {turns}");
        turns = turn;
        // A new session each round, and a turn in flight when the kill lands, at a different moment.
        let user = format!("agent::new-{round}");
        let in_flight = bridge.chat(ask(&user, "slow 400 midway"));
        let _ =
            tokio::time::timeout(Duration::from_millis(50 + (round * 97) % 500), in_flight).await;
        bridge.signal("-KILL");
        bridge.wait_exit().await;
    }
}

#[tokio::test]
async fn bridge_channel_serves_mcp_on_stdio_and_exits_when_its_input_closes() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let run = |env: &[(&str, &str)]| {
        let mut command = Command::new(support::examples::binary("bridge"));
        command
            .arg("channel")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        support::bridge_process::remove_env_prefixed(&mut command, "SYNTHESIS_");
        command.envs(env.iter().copied());
        command.spawn().unwrap()
    };

    // Started by hand, without the bridge's variables: one line saying what is missing.
    let output = run(&[]).wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SYNTHESIS_WS_URL is not set"), "{stderr}");

    // As Claude Code starts it: MCP on stdout only (logs go to stderr), and gone once stdin closes, even
    // though the bridge it should connect to is not there.
    let mut child = run(&[
        ("SYNTHESIS_WS_URL", "ws://127.0.0.1:9/bridge"),
        ("SYNTHESIS_OPENCLAW_SESSION", "agent::main"),
        ("SYNTHESIS_BRIDGE_TOKEN", "secret"),
    ]);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"test","version":"1"}}}}}}"#
    )
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let response: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(
        response["result"]["capabilities"]["experimental"]["claude/channel"],
        json!({}),
        "{response}"
    );
    drop(stdin);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "bridge channel outlived its input"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(rest.is_empty(), "only MCP on stdout: {rest:?}");
}

#[tokio::test]
async fn a_web_page_cannot_send_the_bridge_prompts() {
    // The agent leaves a mark in the workspace whenever it runs.
    let bridge = BridgeProcess::start(&["--agent-command", "touch ran; cat"]).await;
    let body = r#"{"user":"agent:main:main","messages":[{"role":"user","content":"x"}]}"#;
    let attempt = |headers: &[(&str, &str)]| {
        let mut request = http::Request::post("/v1/chat/completions");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let host = format!("{}", bridge.addr());
    // As the report's repro sent it, and each of its parts alone.
    type Case<'a> = (Vec<(&'a str, &'a str)>, StatusCode, &'a str);
    let cases: [Case; 4] = [
        (
            vec![
                ("content-type", "text/plain"),
                ("origin", "http://evil.example"),
                ("host", "attacker.example"),
            ],
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
        ),
        (
            vec![
                ("content-type", "application/json"),
                ("host", "attacker.example:18790"),
            ],
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
        ),
        (
            vec![("content-type", "text/plain"), ("host", &host)],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            vec![
                ("content-type", "application/json"),
                ("origin", "http://evil.example"),
                ("host", &host),
            ],
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
        ),
    ];
    for (headers, status, code) in cases {
        expect_error(bridge.send(attempt(&headers)).await, status, code).await;
    }
    assert!(
        !bridge.workspace().join("ran").exists(),
        "the agent never ran"
    );
    // A client that is not a browser, by any loopback name, is answered.
    let allowed = attempt(&[("content-type", "application/json"), ("host", "localhost")]);
    assert_eq!(completion_text(bridge.send(allowed).await).await, "x");
    assert!(bridge.workspace().join("ran").exists());
}
