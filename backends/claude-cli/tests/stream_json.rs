//! The stream-json mode's turns against scripted `claude -p` processes ([`FakeSpawner`]), for what the real
//! CLI cannot be made to do on demand: a request the bridge does not serve, an interrupt that goes
//! unanswered, output that ends without an exit, a conversation that cannot be resumed. The real CLI's
//! behaviour is covered by the root package's `tests/claude_stream_json.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use synthesis_backend_claude_cli::{ClaudeCliBackend, ClaudeCliConfig};
use synthesis_bridge::spawner::fake::{FakeProcess, FakeSpawner};
use synthesis_bridge::{
    AgentBackend, BackendError, MemoryStore, ReplyEvent, SessionKey, SessionStore, Turn,
};

const PATIENCE: Duration = Duration::from_secs(10);

fn delta(text: &str) -> String {
    json!({"type": "stream_event", "parent_tool_use_id": null,
           "event": {"type": "content_block_delta", "delta": {"type": "text_delta", "text": text}}})
    .to_string()
}

fn result(text: &str) -> String {
    json!({"type": "result", "subtype": "success", "is_error": false, "num_turns": 1, "result": text})
        .to_string()
}

async fn say(claude: &mut FakeProcess, records: &[String]) {
    for record in records {
        claude.print(&format!("{record}\n")).await;
    }
}

fn backend(spawner: &FakeSpawner, store: Arc<MemoryStore>) -> ClaudeCliBackend {
    let config = ClaudeCliConfig::default()
        .allow_tool("Read")
        .cancel_settle(Duration::from_millis(50));
    ClaudeCliBackend::stream_json(config, Arc::new(spawner.clone()), store)
}

fn turn(text: &str) -> Turn {
    Turn::new(
        SessionKey::new("agent::test").unwrap(),
        std::env::temp_dir(),
        text,
    )
}

/// Runs `turn` to the end of its stream.
async fn events(backend: &ClaudeCliBackend, turn: Turn) -> Vec<ReplyEvent> {
    let reply = backend.run_turn(turn).await.expect("the turn was accepted");
    tokio::time::timeout(PATIENCE, reply.collect())
        .await
        .expect("the turn ended")
}

#[tokio::test]
async fn permission_requests_are_denied_by_the_policy_and_other_requests_refused() {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let seen = answers.clone();
    let spawner = FakeSpawner::new(move |_, mut claude| {
        let seen = seen.clone();
        async move {
            claude.read_line().await;
            let ask = |id: &str, tool: &str| {
                json!({"type": "control_request", "request_id": id,
                       "request": {"subtype": "can_use_tool", "tool_name": tool, "input": {"file_path": "a"}}})
                .to_string()
            };
            let other = json!({"type": "control_request", "request_id": "r3",
                               "request": {"subtype": "mcp_message", "server_name": "x"}});
            say(
                &mut claude,
                &[ask("r1", "Read"), ask("r2", "Write"), other.to_string()],
            )
            .await;
            for _ in 0..3 {
                let answer: Value =
                    serde_json::from_str(&claude.read_line().await.unwrap()).unwrap();
                seen.lock().unwrap().push(answer);
            }
            say(&mut claude, &[delta("done"), result("done")]).await;
            claude.read_line().await;
        }
    });
    let backend = backend(&spawner, Arc::new(MemoryStore::new()));
    assert_eq!(
        events(&backend, turn("edit a")).await,
        [ReplyEvent::text("done"), ReplyEvent::end()]
    );
    // Claude Code asks only about calls its own rules did not allow, even for `Read`, which the policy
    // allows by name (a path outside the workspace): the answer never widens the policy.
    let answers = answers.lock().unwrap().clone();
    assert_eq!(answers[0]["response"]["request_id"], "r1");
    assert_eq!(answers[0]["response"]["response"]["behavior"], "deny");
    assert_eq!(answers[1]["response"]["request_id"], "r2");
    assert_eq!(answers[1]["response"]["response"]["behavior"], "deny");
    assert_eq!(answers[2]["response"]["subtype"], "error");
    assert_eq!(answers[2]["response"]["request_id"], "r3");
}

#[tokio::test]
async fn a_failed_prompt_fails_the_turn_with_claudes_words_and_the_process_stays() {
    let spawner = FakeSpawner::new(|_, mut claude| async move {
        claude.read_line().await;
        let failed = json!({"type": "result", "subtype": "success", "is_error": true, "num_turns": 1,
                            "result": "API Error: 529 overloaded"});
        say(&mut claude, &[failed.to_string()]).await;
        claude.read_line().await;
        say(&mut claude, &[delta("fine now"), result("fine now")]).await;
        claude.read_line().await;
    });
    let backend = backend(&spawner, Arc::new(MemoryStore::new()));
    assert_eq!(
        events(&backend, turn("one")).await,
        [ReplyEvent::Error(BackendError::failed(
            "claude could not answer: API Error: 529 overloaded"
        ))]
    );
    assert_eq!(
        events(&backend, turn("two")).await,
        [ReplyEvent::text("fine now"), ReplyEvent::end()]
    );
    assert_eq!(spawner.spawned().len(), 1, "the same process");
}

#[tokio::test]
async fn text_blocks_are_paragraphs_and_a_subagents_stream_is_not_the_answer() {
    let spawner = FakeSpawner::new(|_, mut claude| async move {
        claude.read_line().await;
        let start = json!({"type": "stream_event", "parent_tool_use_id": null,
                           "event": {"type": "content_block_start", "content_block": {"type": "text"}}})
        .to_string();
        let subagent = delta("inner").replace(
            r#""parent_tool_use_id":null"#,
            r#""parent_tool_use_id":"toolu_1""#,
        );
        say(
            &mut claude,
            &[
                start.clone(),
                delta("Looking."),
                subagent,
                start,
                delta("Found it."),
                result("Found it."),
            ],
        )
        .await;
        claude.read_line().await;
    });
    let backend = backend(&spawner, Arc::new(MemoryStore::new()));
    assert_eq!(
        events(&backend, turn("find it")).await,
        [
            ReplyEvent::text("Looking."),
            ReplyEvent::text("\n\nFound it."),
            ReplyEvent::end()
        ]
    );
}

#[tokio::test]
async fn a_cancelled_turn_is_interrupted_and_a_claude_that_ignores_it_is_stopped() {
    let interrupts = Arc::new(Mutex::new(0));
    let counted = interrupts.clone();
    let (prompted, mut prompts) = tokio::sync::mpsc::unbounded_channel();
    // Claude honours the first interrupt and ignores every later one.
    let spawner = FakeSpawner::new(move |_, mut claude| {
        let (counted, prompted) = (counted.clone(), prompted.clone());
        async move {
            while let Some(line) = claude.read_line().await {
                let line: Value = serde_json::from_str(&line).unwrap();
                if line["type"] != "control_request" {
                    let _ = prompted.send(());
                    continue;
                }
                let count = {
                    let mut count = counted.lock().unwrap();
                    *count += 1;
                    *count
                };
                if count == 1 {
                    let aborted = json!({"type": "result", "subtype": "error_during_execution",
                                         "is_error": true, "num_turns": 1});
                    say(&mut claude, &[aborted.to_string()]).await;
                }
            }
        }
    });
    let backend = backend(&spawner, Arc::new(MemoryStore::new()));
    for processes_after in [1, 0] {
        let turn = turn("stall");
        let cancel = turn.cancel.clone();
        let reply = backend.run_turn(turn).await.unwrap();
        // Claude is on the message when the client leaves.
        prompts.recv().await.unwrap();
        cancel.cancel();
        let events: Vec<ReplyEvent> = tokio::time::timeout(PATIENCE, reply.collect())
            .await
            .unwrap();
        assert_eq!(events, [ReplyEvent::Error(BackendError::Cancelled)]);
        assert_eq!(backend.status().processes, processes_after);
    }
    // One interrupt for the first turn; five for the second, after which claude was stopped.
    assert_eq!(*interrupts.lock().unwrap(), 6);
    assert_eq!(spawner.spawned().len(), 1);
}

#[tokio::test]
async fn output_that_ends_mid_turn_fails_the_turn_with_claudes_last_words() {
    let spawner = FakeSpawner::new(|_, mut claude| async move {
        claude.read_line().await;
        say(&mut claude, &[delta("half an ans")]).await;
        claude.show("Error: out of memory\n");
        claude.exit(3);
    });
    let backend = backend(&spawner, Arc::new(MemoryStore::new()));
    let events = events(&backend, turn("go")).await;
    assert_eq!(events[0], ReplyEvent::text("half an ans"));
    let ReplyEvent::Error(BackendError::Failed(message)) = &events[1] else {
        panic!("{events:?}");
    };
    assert!(
        message.contains("claude exited with code 3 (its last words: \"Error: out of memory\")"),
        "{message}"
    );
}

#[tokio::test]
async fn a_conversation_claude_cannot_resume_is_replaced_on_the_next_turn() {
    let spawner = FakeSpawner::new(|spec, mut claude| async move {
        claude.read_line().await;
        if spec.args.iter().any(|arg| arg == "--resume") {
            claude.show("No conversation found with session ID: x\n");
            let failed = json!({"type": "result", "subtype": "error_during_execution",
                                "is_error": true, "num_turns": 0});
            say(&mut claude, &[failed.to_string()]).await;
            claude.exit(1);
            return;
        }
        say(&mut claude, &[delta("new"), result("new")]).await;
        claude.read_line().await;
    });
    let store = Arc::new(MemoryStore::new());
    let key = SessionKey::new("agent::test").unwrap();
    let backend = backend(&spawner, store.clone());
    assert_eq!(
        events(&backend, turn("first")).await,
        [ReplyEvent::text("new"), ReplyEvent::end()]
    );
    let first = store.get(&key).await.unwrap().unwrap().conversation_id;
    // A restarted bridge resumes what its store says, and claude has no such conversation after all (the
    // transcript check is not consulted: there is no transcript, so this forces `--resume` by hand).
    backend.shutdown().await;
    let mut record = store.get(&key).await.unwrap().unwrap();
    record.started = true;
    store.put(record).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let uuid = first.clone().unwrap();
    let project = dir.path().join("projects").join("-w");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join(format!("{uuid}.jsonl")),
        "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"first\"}}\n",
    )
    .unwrap();
    let config = ClaudeCliConfig::default()
        .env("CLAUDE_CONFIG_DIR", dir.path())
        .cancel_settle(Duration::from_millis(50));
    let backend = ClaudeCliBackend::stream_json(config, Arc::new(spawner.clone()), store.clone());
    let events_ = events(&backend, turn("second")).await;
    assert!(
        matches!(&events_[..], [ReplyEvent::Error(BackendError::Failed(message))] if message.contains("No conversation found")),
        "{events_:?}"
    );
    assert_eq!(
        events(&backend, turn("third")).await,
        [ReplyEvent::text("new"), ReplyEvent::end()]
    );
    let third = store.get(&key).await.unwrap().unwrap().conversation_id;
    assert_ne!(third, first, "a new conversation");
    let args = &spawner.spawned()[2].args;
    assert!(args.iter().any(|arg| arg == "--session-id"), "{args:?}");
}

#[tokio::test]
async fn a_claude_that_cannot_start_is_unavailable_with_its_words() {
    let spawner = FakeSpawner::new(|_, claude| async move {
        claude.show("error: unknown option '--verbos'\n");
        claude.exit(1);
    });
    let backend = backend(&spawner, Arc::new(MemoryStore::new()));
    let events = events(&backend, turn("hello")).await;
    let [ReplyEvent::Error(BackendError::Unavailable { message, .. })] = &events[..] else {
        panic!("{events:?}");
    };
    assert!(
        message.contains("claude exited with code 1 (its last words: \"error: unknown option '--verbos'\") before it took the message"),
        "{message}"
    );
}

#[tokio::test]
async fn a_session_unused_for_its_ttl_is_forgotten_and_its_process_stopped() {
    let spawner = FakeSpawner::new(|_, mut claude| async move {
        while claude.read_line().await.is_some() {
            say(&mut claude, &[delta("hi"), result("hi")]).await;
        }
    });
    let store = Arc::new(MemoryStore::new());
    let config = ClaudeCliConfig::default().session_ttl(Some(Duration::from_millis(300)));
    let backend = ClaudeCliBackend::stream_json(config, Arc::new(spawner.clone()), store.clone());
    let key = SessionKey::new("agent::test").unwrap();
    assert_eq!(
        events(&backend, turn("hello")).await,
        [ReplyEvent::text("hi"), ReplyEvent::end()]
    );
    let first = store.get(&key).await.unwrap().unwrap().conversation_id;
    assert_eq!(backend.status().processes, 1);
    tokio::time::timeout(PATIENCE, async {
        while store.get(&key).await.unwrap().is_some() || backend.status().processes > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the unused session was forgotten");
    assert_eq!(backend.status().sessions, 0);
    // Used again, it is a new session with a new conversation.
    assert_eq!(
        events(&backend, turn("again")).await,
        [ReplyEvent::text("hi"), ReplyEvent::end()]
    );
    assert_ne!(
        store.get(&key).await.unwrap().unwrap().conversation_id,
        first
    );
}

#[tokio::test]
async fn a_full_disk_does_not_cost_the_turn() {
    let spawner = FakeSpawner::new(|_, mut claude| async move {
        while claude.read_line().await.is_some() {
            say(&mut claude, &[delta("still here"), result("still here")]).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    // Every write of the session store fails as on a full disk.
    std::os::unix::fs::symlink(
        "/dev/full",
        dir.path().join(synthesis_store_json::JOURNAL_NAME),
    )
    .unwrap();
    let store = synthesis_store_json::JsonFileStore::open(dir.path())
        .await
        .unwrap();
    let config = ClaudeCliConfig::default();
    let backend = ClaudeCliBackend::stream_json(config, Arc::new(spawner), Arc::new(store));
    for _ in 0..2 {
        assert_eq!(
            events(&backend, turn("hello")).await,
            [ReplyEvent::text("still here"), ReplyEvent::end()]
        );
    }
}
