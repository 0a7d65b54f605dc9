//! The claude CLI backend for real, with `fake_claude` (this crate's example) standing in for Claude Code: real processes under
//! pseudo-terminals, the real WebSocket transport and its hook endpoint, a real store on disk, and the
//! bridge over a loopback socket.

use synthesis_test_harness as support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::StatusCode;
use serde_json::json;
use support::fake_claude::{history, is_running};
use support::{
    PATIENCE, SseReader, TestServer, chat_request, config_in, expect_error, simple_body,
};
use synthesis_backend_claude_cli::{ClaudeCliBackend, ClaudeCliConfig};
use synthesis_bridge::{AgentBackend, ReplyEvent, SessionKey, SessionStore, Turn, TurnMeta};
use synthesis_spawner_process::ProcessSpawner;
use synthesis_store_json::JsonFileStore;
use synthesis_transport_ws::{WsConfig, WsTransport};
use tempfile::TempDir;

/// A directory tree for one test: the workspace, Claude Code's config (transcripts) and the bridge's state.
struct Dirs {
    root: TempDir,
}

impl Dirs {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        for dir in ["workspace", "claude", "state"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        Self { root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn config(&self) -> ClaudeCliConfig {
        let plugin = support::examples::binary("channel_plugin");
        ClaudeCliConfig::new(plugin.to_string_lossy())
            .program(support::examples::binary("fake_claude"))
            .env("CLAUDE_CONFIG_DIR", self.path("claude"))
            .ready_timeout(PATIENCE)
            .cancel_settle(Duration::from_millis(300))
    }
}

/// A bridge with the claude CLI backend, serving on a loopback port.
struct Harness {
    server: TestServer,
    backend: Arc<ClaudeCliBackend>,
    transport_endpoint: String,
}

impl Harness {
    async fn start(dirs: &Dirs, config: ClaudeCliConfig) -> Self {
        Self::start_with(dirs, config, WsConfig::default()).await
    }

    async fn start_with(dirs: &Dirs, config: ClaudeCliConfig, ws: WsConfig) -> Self {
        let transport = WsTransport::bind("127.0.0.1:0".parse().unwrap(), ws)
            .await
            .unwrap();
        let transport_endpoint =
            synthesis_bridge::transport::ChannelTransport::endpoint(&transport);
        let store = JsonFileStore::open(dirs.path("state")).await.unwrap();
        let backend = Arc::new(ClaudeCliBackend::new(
            config,
            Arc::new(ProcessSpawner::default()),
            Arc::new(transport),
            Arc::new(store),
        ));
        let server = TestServer::start(backend.clone(), config_in(&dirs.path("workspace"))).await;
        Self {
            server,
            backend,
            transport_endpoint,
        }
    }

    /// One streaming turn: the content deltas, and the error of the final chunk if the turn failed.
    async fn turn(&self, session: &str, text: &str) -> (Vec<String>, Option<String>) {
        let response = self.server.chat(simple_body(session, text, true)).await;
        let mut sse = SseReader::new(response);
        let mut deltas = Vec::new();
        let mut error = None;
        while let Some(event) = sse.next().await {
            if event == "[DONE]" {
                break;
            }
            let chunk: serde_json::Value = serde_json::from_str(&event).unwrap();
            if let Some(message) = chunk["error"]["message"].as_str() {
                error = Some(message.to_owned());
            }
            if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str()
                && !text.is_empty()
            {
                deltas.push(text.to_owned());
            }
        }
        (deltas, error)
    }

    /// The whole answer to a turn that must succeed.
    async fn answer(&self, session: &str, text: &str) -> String {
        let (deltas, error) = self.turn(session, text).await;
        assert_eq!(error, None, "the turn {text:?} failed");
        deltas.concat()
    }

    async fn pid(&self, session: &str) -> u32 {
        self.answer(session, "pid").await.parse().unwrap()
    }

    async fn processes(&self) -> usize {
        self.backend.status().processes
    }

    async fn wait_for_processes(&self, count: usize) {
        tokio::time::timeout(PATIENCE, async {
            while self.processes().await != count {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("never {count} processes"));
    }
}

#[tokio::test]
async fn a_reply_streams_in_pieces_and_later_turns_reuse_the_process() {
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config()).await;
    let (deltas, error) = harness.turn("agent::a", "stream one two three").await;
    assert_eq!(error, None);
    assert_eq!(deltas, ["one ", "two ", "three"]);

    let pid = harness.pid("agent::a").await;
    assert_eq!(harness.answer("agent::a", "hello").await, "echo: hello");
    assert_eq!(harness.pid("agent::a").await, pid);
    let (turn, _) = history(&harness.answer("agent::a", "history").await);
    assert_eq!(turn, 5);
    // A seed-era plugin's reply (no message_id, no `final`) still ends the turn.
    assert_eq!(harness.answer("agent::a", "legacy old").await, "echo: old");
}

#[tokio::test]
async fn an_answer_without_the_reply_tool_comes_from_the_stop_hook() {
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config()).await;
    assert_eq!(
        harness.answer("agent::a", "plain the answer itself").await,
        "the answer itself"
    );
    // The reports keep lining up with their turns afterwards.
    assert_eq!(harness.answer("agent::a", "next").await, "echo: next");
    assert_eq!(harness.answer("agent::a", "plain again").await, "again");
}

/// A transcript's channel prompts, as `fake_claude` records them.
fn prompts_in_transcripts(dirs: &Dirs, text: &str) -> usize {
    let mut count = 0;
    for project in std::fs::read_dir(dirs.path("claude").join("projects")).unwrap() {
        for transcript in std::fs::read_dir(project.unwrap().path()).unwrap() {
            let records = std::fs::read_to_string(transcript.unwrap().path()).unwrap();
            count += records
                .lines()
                .filter(|line| line.contains("\"type\":\"user\"") && line.contains(text))
                .count();
        }
    }
    count
}

#[tokio::test]
async fn a_push_that_is_lost_is_pushed_again_and_answered_once() {
    let dirs = Dirs::new();
    let config = dirs.config().delivery(Duration::from_millis(300), 3);
    let harness = Harness::start(&dirs, config).await;
    // fake_claude drops the first push of a `lost` message, as Claude Code drops one during a tool call.
    for round in 0..5 {
        let text = format!("lost message {round}");
        assert_eq!(
            harness.answer("agent::a", &text).await,
            format!("echo: {text}")
        );
        assert_eq!(prompts_in_transcripts(&dirs, &text), 1);
    }
}

#[tokio::test]
async fn a_push_confirmed_late_reaches_the_conversation_once() {
    let dirs = Dirs::new();
    let config = dirs.config().delivery(Duration::from_millis(200), 5);
    let harness = Harness::start(&dirs, config).await;
    let pid = harness.pid("agent::a").await;
    // The prompt starts after the bridge has pushed it again: the second start is blocked by the bridge.
    assert_eq!(
        harness.answer("agent::a", "late 500 slow to start").await,
        "echo: late 500 slow to start"
    );
    // The next turn waits for the blocked duplicate to be gone, and the conversation has each once.
    assert_eq!(harness.answer("agent::a", "after").await, "echo: after");
    let (turn, _) = history(&harness.answer("agent::a", "history").await);
    assert_eq!(turn, 4, "pid, the late one, after, history");
    assert_eq!(prompts_in_transcripts(&dirs, "slow to start"), 1);
    assert_eq!(harness.pid("agent::a").await, pid, "no restart");
}

#[tokio::test]
async fn a_message_never_taken_up_fails_the_turn_and_restarts_claude() {
    let dirs = Dirs::new();
    let config = dirs.config().delivery(Duration::from_millis(200), 1);
    let harness = Harness::start(&dirs, config).await;
    let pid = harness.pid("agent::a").await;
    let (_, error) = harness.turn("agent::a", "lost for good").await;
    let error = error.expect("the turn fails");
    assert!(
        error.starts_with("claude did not take the message up: pushed it once over 200ms"),
        "{error}"
    );
    // The error goes out first; the process is stopped while the session's slot is still held.
    harness.wait_for_processes(0).await;
    assert!(!is_running(pid));
    assert_eq!(prompts_in_transcripts(&dirs, "lost for good"), 0);
    assert_eq!(harness.answer("agent::a", "again").await, "echo: again");
}

#[tokio::test]
async fn a_retry_after_a_crash_carries_on_with_the_message_instead_of_asking_twice() {
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config()).await;
    assert_eq!(harness.answer("agent::a", "hello").await, "echo: hello");
    // The message reaches Claude, which dies on it: the client retries with the same text.
    let (_, error) = harness.turn("agent::a", "crash").await;
    assert!(error.is_some());
    assert_eq!(
        harness.answer("agent::a", "crash").await,
        "continued: crash"
    );
    assert_eq!(
        prompts_in_transcripts(&dirs, "\\ncrash\\n"),
        1,
        "asked once"
    );
    // Answered now: the same text again is a new message, as is any other.
    assert_eq!(harness.answer("agent::a", "hello").await, "echo: hello");
    assert_eq!(prompts_in_transcripts(&dirs, "\\nhello\\n"), 2);
    // Without a window, every turn is a new message.
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config().retry_window(None)).await;
    let (_, error) = harness.turn("agent::b", "crash").await;
    assert!(error.is_some());
    let (_, error) = harness.turn("agent::b", "crash").await;
    assert!(error.is_some(), "asked again, and it crashed again");
    assert_eq!(prompts_in_transcripts(&dirs, "\\ncrash\\n"), 2);
}

#[tokio::test]
async fn a_retry_is_recognised_after_the_idle_sweeper_has_been_round() {
    let dirs = Dirs::new();
    let config = dirs.config().process_idle(Duration::from_millis(40));
    let harness = Harness::start(&dirs, config).await;
    let (_, error) = harness.turn("agent::a", "crash").await;
    assert!(error.is_some());
    // The sweeper looks every 10 ms and forgets sessions with no process: not one a retry may still
    // come for.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        harness.answer("agent::a", "crash").await,
        "continued: crash"
    );
}

#[tokio::test]
async fn a_lost_stop_report_holds_the_next_message_only_until_prompt_end_wait() {
    let dirs = Dirs::new();
    let config = dirs.config().prompt_end_wait(Duration::from_millis(300));
    let harness = Harness::start(&dirs, config).await;
    assert_eq!(
        harness.answer("agent::a", "nostop first").await,
        "echo: first"
    );
    let started = std::time::Instant::now();
    assert_eq!(harness.answer("agent::a", "second").await, "echo: second");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it waited for the Stop first"
    );
    assert_eq!(harness.answer("agent::a", "third").await, "echo: third");
}

#[tokio::test]
async fn with_claudes_hooks_disabled_every_turn_is_still_answered() {
    let dirs = Dirs::new();
    let config = dirs
        .config()
        .env("FAKE_CLAUDE_NO_HOOKS", "1")
        .prompt_end_wait(Duration::from_millis(200));
    let harness = Harness::start(&dirs, config).await;
    // Each reply confirms its message; each next message waits prompt_end_wait for a Stop that never
    // comes.
    for text in ["one", "two", "three"] {
        assert_eq!(
            harness.answer("agent::a", text).await,
            format!("echo: {text}")
        );
    }
}

#[tokio::test]
async fn a_conversation_claude_cannot_resume_is_replaced_and_the_turn_is_answered() {
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config()).await;
    let (_, before) = history(&harness.answer("agent::a", "history").await);
    // A restarted bridge finds a transcript with a conversation that claude refuses to resume.
    drop(harness);
    let transcripts = dirs.path("claude").join("projects");
    for project in std::fs::read_dir(&transcripts).unwrap() {
        let path = project.unwrap().path().join(format!("{before}.jsonl"));
        if path.exists() {
            let mut records = std::fs::read_to_string(&path).unwrap();
            records.push_str("{\"type\":\"system\",\"content\":\"unresumable\"}\n");
            std::fs::write(&path, records).unwrap();
        }
    }
    let harness = Harness::start(&dirs, dirs.config()).await;
    let (turn, after) = history(&harness.answer("agent::a", "history").await);
    assert_ne!(after, before, "a new conversation");
    assert_eq!(turn, 1);
}

#[tokio::test]
async fn an_error_frame_fails_the_turn_with_its_message() {
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config()).await;
    let (_, error) = harness.turn("agent::a", "error out of tokens").await;
    assert!(error.unwrap().contains("out of tokens"));
    assert_eq!(harness.answer("agent::a", "fine").await, "echo: fine");
}

#[tokio::test]
async fn a_failed_model_request_fails_the_turn_at_once_through_the_stop_failure_hook() {
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config()).await;
    let (said, error) = harness.turn("agent::a", "api-error rate limited").await;
    assert!(said.is_empty(), "{said:?}");
    let error = error.expect("the turn fails");
    assert!(error.contains("API Error: 400 rate limited"), "{error}");
    assert_eq!(harness.answer("agent::a", "fine").await, "echo: fine");
}

#[tokio::test]
async fn a_crash_mid_turn_fails_it_at_once_and_the_next_turn_resumes_in_a_new_process() {
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config()).await;
    let (_, before) = history(&harness.answer("agent::a", "history").await);
    let pid = harness.pid("agent::a").await;

    let (_, error) = harness.turn("agent::a", "crash").await;
    let error = error.expect("the turn failed");
    assert!(
        error.starts_with(
            "claude exited with code 3 (its last words: \"fatal: simulated crash\") in the middle of the turn"
        ),
        "{error}"
    );
    assert!(!is_running(pid));

    let (turn, after) = history(&harness.answer("agent::a", "history").await);
    assert_eq!(after, before, "the same conversation, resumed");
    assert_eq!(turn, 4, "history, pid and crash came before");
    assert_ne!(harness.pid("agent::a").await, pid);
}

#[tokio::test]
async fn idle_processes_are_stopped_and_their_conversation_resumes() {
    let dirs = Dirs::new();
    let harness = Harness::start(
        &dirs,
        dirs.config().process_idle(Duration::from_millis(400)),
    )
    .await;
    let (_, conversation) = history(&harness.answer("agent::a", "history").await);
    let pid = harness.pid("agent::a").await;
    assert_eq!(harness.processes().await, 1);

    harness.wait_for_processes(0).await;
    assert!(!is_running(pid));
    let (turn, resumed) = history(&harness.answer("agent::a", "history").await);
    assert_eq!((turn, resumed), (3, conversation));
}

#[tokio::test]
async fn at_max_processes_the_longest_idle_one_makes_room() {
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config().max_processes(2)).await;
    let a = harness.pid("agent::a").await;
    let b = harness.pid("agent::b").await;
    let c = harness.pid("agent::c").await;
    assert_eq!(harness.processes().await, 2);
    assert!(!is_running(a), "a was idle longest");
    assert!(is_running(b) && is_running(c));

    // a comes back: b is now the longest idle, and a's conversation resumes.
    let (turn, _) = history(&harness.answer("agent::a", "history").await);
    assert_eq!(turn, 2);
    assert!(!is_running(b));
    assert!(is_running(c));
}

#[tokio::test]
async fn when_every_process_is_in_a_turn_a_new_session_gets_503_with_retry_after() {
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config().max_processes(1)).await;
    harness.pid("agent::a").await;
    let response = harness
        .server
        .chat(simple_body("agent::a", "slow 1000 done", true))
        .await;
    let mut slow = SseReader::new(response);
    // The first chunk comes once the turn holds a's process.
    slow.chunk().await;
    let refused = harness
        .server
        .chat(simple_body("agent::b", "hello", true))
        .await;
    assert_eq!(refused.headers()["retry-after"], "10");
    let message = expect_error(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
    )
    .await;
    assert!(message.contains("busy"), "{message}");
    let rest = slow.rest().await.concat();
    assert!(rest.contains("echo: done"), "{rest}");
    // Now a is idle and makes room.
    assert_eq!(harness.answer("agent::b", "hello").await, "echo: hello");
}

#[tokio::test]
async fn a_connection_with_a_forged_token_cannot_take_over_a_session() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config()).await;
    let pid = harness.pid("agent::a").await;

    let (mut intruder, _) = tokio_tungstenite::connect_async(&harness.transport_endpoint)
        .await
        .unwrap();
    let hello =
        json!({"type": "hello", "pid": 1, "openclaw_session": "agent::a", "token": "forged"});
    intruder
        .send(Message::text(hello.to_string()))
        .await
        .unwrap();
    let closed = tokio::time::timeout(PATIENCE, intruder.next())
        .await
        .unwrap();
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4003),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        harness.answer("agent::a", "still mine").await,
        "echo: still mine"
    );
    assert_eq!(harness.pid("agent::a").await, pid);
}

#[tokio::test]
async fn after_a_bridge_restart_the_session_resumes_its_conversation() {
    let dirs = Dirs::new();
    let first = Harness::start(&dirs, dirs.config()).await;
    let (turn, conversation) = history(&first.answer("agent::a", "history").await);
    assert_eq!(turn, 1);
    let pid = first.pid("agent::a").await;
    first.backend.shutdown().await;
    first.server.shut_down().await;
    assert!(!is_running(pid), "shutdown stops every child");

    let second = Harness::start(&dirs, dirs.config()).await;
    let (turn, resumed) = history(&second.answer("agent::a", "history").await);
    assert_eq!((turn, resumed), (3, conversation));
}

#[tokio::test]
async fn a_plugin_that_stops_answering_pings_fails_the_turn_at_once() {
    let dirs = Dirs::new();
    let config = dirs.config().env("FAKE_CLAUDE_NO_PONG", "1");
    let ws = WsConfig::default().ping_interval(Duration::from_millis(200));
    let harness = Harness::start_with(&dirs, config, ws).await;
    let (_, error) = harness.turn("agent::a", "slow 60000 never").await;
    let error = error.expect("the turn failed");
    assert!(error.contains("no pong"), "{error}");
}

#[tokio::test]
async fn a_cancelled_turn_interrupts_claude_and_frees_the_session() {
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config()).await;
    let pid = harness.pid("agent::a").await;
    let response = harness
        .server
        .chat(simple_body("agent::a", "silent", true))
        .await;
    let mut sse = SseReader::new(response);
    // The first chunk (the role) shows the turn is in flight; then the client goes away.
    sse.chunk().await;
    drop(sse);
    // The next turn is answered by the same process, once ESC has interrupted the silent one.
    assert_eq!(harness.answer("agent::a", "after").await, "echo: after");
    assert_eq!(harness.pid("agent::a").await, pid);
}

#[tokio::test]
async fn a_turn_cancelled_before_its_message_was_taken_up_restarts_claude_so_it_never_is() {
    let dirs = Dirs::new();
    // No second push within the test: the first is dropped (`lost`), the client leaves meanwhile.
    let config = dirs.config().delivery(Duration::from_secs(30), 5);
    let harness = Harness::start(&dirs, config).await;
    let pid = harness.pid("agent::a").await;
    let response = harness
        .server
        .chat(simple_body("agent::a", "lost and left", true))
        .await;
    let mut sse = SseReader::new(response);
    sse.chunk().await;
    // The client leaves once the push has come (and gone), not before it was made.
    let dropped = dirs.path("claude").join("dropped-pushes.log");
    tokio::time::timeout(PATIENCE, async {
        while !std::fs::read_to_string(&dropped).is_ok_and(|log| log.contains("lost and left")) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the push came");
    drop(sse);
    // Nothing to interrupt: after the settle rounds the process is stopped, so the message can never
    // start answering nobody; the next turn runs in a new one.
    assert_eq!(harness.answer("agent::a", "after").await, "echo: after");
    assert_ne!(harness.pid("agent::a").await, pid);
    assert_eq!(prompts_in_transcripts(&dirs, "lost and left"), 0);
}

#[tokio::test]
async fn a_process_stuck_before_its_plugin_connects_is_reported_with_its_screen() {
    let dirs = Dirs::new();
    let config = dirs
        .config()
        .env("FAKE_CLAUDE_STARTUP", "login")
        .ready_timeout(Duration::from_secs(1));
    let harness = Harness::start(&dirs, config).await;
    let response = harness
        .server
        .send(chat_request(simple_body("agent::a", "hello", true)))
        .await;
    let message = expect_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
    )
    .await;
    assert!(message.contains("did not connect within 1s"), "{message}");
    assert!(message.contains("not logged in"), "{message}");
    assert!(message.contains("Select login method"), "{message}");
    assert_eq!(harness.processes().await, 0, "the process was stopped");
}

#[tokio::test]
async fn a_new_client_conversation_starts_a_new_claude_conversation() {
    let dirs = Dirs::new();
    let harness = Harness::start(&dirs, dirs.config()).await;
    let session = SessionKey::new("agent::a").unwrap();
    let run = |conversation: &'static str| {
        let mut turn = Turn::new(session.clone(), dirs.path("workspace"), "history");
        turn.meta = TurnMeta::default().with_conversation(Some(conversation.into()));
        let backend = harness.backend.clone();
        async move {
            let mut reply = backend.run_turn(turn).await.unwrap();
            let mut text = String::new();
            while let Some(event) = reply.next().await {
                if let ReplyEvent::TextDelta(delta) = event {
                    text.push_str(&delta);
                }
            }
            history(&text)
        }
    };
    let (first_turn, first) = run("one").await;
    let (second_turn, same) = run("one").await;
    let (new_turn, other) = run("two").await;
    assert_eq!((first_turn, second_turn, new_turn), (1, 2, 1));
    assert_eq!(first, same);
    assert_ne!(first, other);
    let store = JsonFileStore::open(dirs.path("state")).await.unwrap();
    let record = store.get(&session).await.unwrap().unwrap();
    assert_eq!(record.conversation_id.as_deref().unwrap_or_default(), other);
    assert_eq!(record.client_conversation.as_deref(), Some("two"));
}
