//! The ACP backend against scripted agents ([`FakeSpawner`]), for what real agents cannot be made to do on
//! demand: ignore a cancel, fail to start, refuse to reopen a session, replay history, ask for the file
//! system, die in the middle of a prompt. Real agents are covered by the root package's
//! `tests/acp_claude.rs` and `tests/acp_codex.rs`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use synthesis_backend_acp::{AcpBackend, AcpConfig};
use synthesis_bridge::spawner::fake::{FakeProcess, FakeSpawner};
use synthesis_bridge::{
    AgentBackend, BackendError, FinishReason, MemoryStore, ReplyEvent, SessionKey, SessionRecord,
    SessionStore, ToolResult, Turn, Usage,
};

const PATIENCE: Duration = Duration::from_secs(10);

/// Everything scripted agents received, in order, across processes.
type Log = Arc<Mutex<Vec<Value>>>;

async fn read(agent: &mut FakeProcess, log: &Log) -> Option<Value> {
    let line = agent.read_line().await?;
    let message: Value = serde_json::from_str(&line).expect("the bridge writes JSON lines");
    log.lock().unwrap().push(message.clone());
    Some(message)
}

async fn send(agent: &mut FakeProcess, message: Value) {
    agent.print(&format!("{message}\n")).await;
}

async fn answer(agent: &mut FakeProcess, request: &Value, result: Value) {
    send(
        agent,
        json!({"jsonrpc": "2.0", "id": request["id"], "result": result}),
    )
    .await;
}

fn chunk(session: &str, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": session,
           "update": {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}}}})
}

/// Answers `initialize` with `capabilities` and each session request with session `id`; returns the first
/// message that is neither (a prompt, a cancel), or `None` once the input ends.
async fn serve_setup(
    agent: &mut FakeProcess,
    log: &Log,
    capabilities: &Value,
    id: &str,
) -> Option<Value> {
    loop {
        let message = read(agent, log).await?;
        match message["method"].as_str() {
            Some("initialize") => {
                answer(
                    agent,
                    &message,
                    json!({"protocolVersion": 1, "agentCapabilities": capabilities,
                           "agentInfo": {"name": "scripted", "version": "1"}}),
                )
                .await;
            }
            Some("session/new") => answer(agent, &message, json!({"sessionId": id})).await,
            Some("session/resume" | "session/load") => answer(agent, &message, json!({})).await,
            _ => return Some(message),
        }
    }
}

/// A spawner whose every process runs `script`, with a share of `log`.
fn logging<F, Fut>(log: &Log, script: F) -> FakeSpawner
where
    F: Fn(FakeProcess, Log) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let log = log.clone();
    FakeSpawner::new(move |_spec, agent| script(agent, log.clone()))
}

/// An agent that answers every prompt with `reply to: TEXT` and `end_turn`.
fn echo_agent(log: &Log, capabilities: Value) -> FakeSpawner {
    logging(log, move |mut agent, log| {
        let capabilities = capabilities.clone();
        async move {
            while let Some(message) = serve_setup(&mut agent, &log, &capabilities, "s-1").await {
                if message["method"] == "session/prompt" {
                    let text = message["params"]["prompt"][0]["text"]
                        .as_str()
                        .unwrap_or_default();
                    send(&mut agent, chunk("s-1", &format!("reply to: {text}"))).await;
                    answer(&mut agent, &message, json!({"stopReason": "end_turn"})).await;
                }
            }
        }
    })
}

fn config() -> AcpConfig {
    AcpConfig::new("scripted-agent", ["--acp"]).cancel_grace(Duration::from_millis(100))
}

fn backend(spawner: &FakeSpawner, store: Arc<MemoryStore>) -> AcpBackend {
    AcpBackend::new(config(), Arc::new(spawner.clone()), store)
}

fn turn(user: &str, text: &str) -> Turn {
    Turn::new(SessionKey::new(user).unwrap(), std::env::temp_dir(), text)
}

/// Runs `turn` to the end of its stream.
async fn events(backend: &AcpBackend, turn: Turn) -> Vec<ReplyEvent> {
    let reply = backend.run_turn(turn).await.expect("the turn was accepted");
    tokio::time::timeout(PATIENCE, reply.collect())
        .await
        .expect("the turn ended")
}

fn methods(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|message| message["method"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_turn_streams_chunks_and_ends_with_the_usage_and_the_stop_reason() {
    let log = Log::default();
    let agent = logging(&log, |mut agent, log| async move {
        while let Some(prompt) = serve_setup(&mut agent, &log, &json!({}), "s-1").await {
            let text = prompt["params"]["prompt"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned();
            // Another session's chunk, an update of a kind this ACP version does not know, a
            // thought: none of them is the answer.
            send(&mut agent, chunk("s-other", "not mine")).await;
            send(&mut agent, json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "s-1", "update": {"sessionUpdate": "something_new"}}})).await;
            send(&mut agent, json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "s-1", "update": {"sessionUpdate": "agent_thought_chunk", "content": {"type": "text", "text": "hmm"}}}})).await;
            send(&mut agent, chunk("s-1", "")).await;
            send(&mut agent, chunk("s-1", "one ")).await;
            send(&mut agent, chunk("s-1", "two")).await;
            let result = match text.as_str() {
                "long" => json!({"stopReason": "max_tokens"}),
                "refuse" => json!({"stopReason": "refusal"}),
                "give up" => json!({"stopReason": "cancelled"}),
                _ => {
                    json!({"stopReason": "end_turn", "usage": {"inputTokens": 10, "outputTokens": 5, "cachedReadTokens": 3, "cachedWriteTokens": 2, "totalTokens": 20}})
                }
            };
            answer(&mut agent, &prompt, result).await;
        }
    });
    let backend = backend(&agent, Arc::new(MemoryStore::new()));
    assert_eq!(
        events(&backend, turn("a", "hello")).await,
        [
            ReplyEvent::text("one "),
            ReplyEvent::text("two"),
            ReplyEvent::Usage(Usage::new(15, 5)),
            ReplyEvent::end()
        ]
    );
    let long = events(&backend, turn("a", "long")).await;
    assert_eq!(long.last(), Some(&ReplyEvent::End(FinishReason::Length)));
    let refused = events(&backend, turn("a", "refuse")).await;
    assert!(
        matches!(
            refused.last(),
            Some(ReplyEvent::Error(BackendError::Rejected(_)))
        ),
        "{refused:?}"
    );
    assert_eq!(agent.spawned().len(), 1, "one process for the session");
    // A prompt the agent cancels on its own is its failure, not the client's cancel.
    let gave_up = events(&backend, turn("a", "give up")).await;
    assert_eq!(
        gave_up.last(),
        Some(&ReplyEvent::Error(BackendError::failed(
            "the agent cancelled the prompt on its own"
        )))
    );
    // The bridge offered no file system and no terminal.
    let initialize = log.lock().unwrap()[0].clone();
    let offered = &initialize["params"]["clientCapabilities"];
    assert_eq!(
        offered["fs"],
        json!({"readTextFile": false, "writeTextFile": false})
    );
    assert_eq!(offered["terminal"], false);
    backend.shutdown().await;
}

#[tokio::test]
async fn requests_for_client_capabilities_are_refused_and_permissions_answered_by_the_policy() {
    let log = Log::default();
    let agent = logging(&log, |mut agent, log| async move {
        while let Some(prompt) = serve_setup(&mut agent, &log, &json!({}), "s-1").await {
            send(&mut agent, json!({"jsonrpc": "2.0", "id": "fs-1", "method": "fs/read_text_file", "params": {"sessionId": "s-1", "path": "/etc/passwd"}})).await;
            let refusal = read(&mut agent, &log).await.unwrap();
            send(&mut agent, json!({"jsonrpc": "2.0", "id": 7, "method": "session/request_permission", "params": {
                        "sessionId": "s-1",
                        "toolCall": {"toolCallId": "call-1", "title": "rm -rf /", "kind": "execute"},
                        "options": [{"optionId": "yes", "name": "Allow", "kind": "allow_once"},
                                    {"optionId": "no", "name": "Reject", "kind": "reject_once"}]}})).await;
            let permission = read(&mut agent, &log).await.unwrap();
            let said = format!(
                "{} / {}",
                refusal["error"]["code"], permission["result"]["outcome"]["optionId"]
            );
            send(&mut agent, chunk("s-1", &said)).await;
            answer(&mut agent, &prompt, json!({"stopReason": "end_turn"})).await;
        }
    });
    let backend = backend(&agent, Arc::new(MemoryStore::new()));
    assert_eq!(
        events(&backend, turn("a", "go")).await,
        [ReplyEvent::text("-32601 / \"no\""), ReplyEvent::end()]
    );
    backend.shutdown().await;
}

#[tokio::test]
async fn an_agent_that_ignores_the_cancel_is_stopped_and_the_next_turn_reopens_its_session() {
    let log = Log::default();
    let agent = logging(&log, |mut agent, log| {
        let capabilities = json!({"sessionCapabilities": {"resume": {}}});
        async move {
            while let Some(prompt) = serve_setup(&mut agent, &log, &capabilities, "s-1").await {
                if prompt["params"]["prompt"][0]["text"] == "hang" {
                    // Reads the cancel, and never answers.
                    while read(&mut agent, &log).await.is_some() {}
                    return;
                }
                answer(&mut agent, &prompt, json!({"stopReason": "end_turn"})).await;
            }
        }
    });
    let store = Arc::new(MemoryStore::new());
    let backend = backend(&agent, store.clone());
    let hung = turn("a", "hang");
    let cancel = hung.cancel.clone();
    let reply = backend.run_turn(hung).await.unwrap();
    // Cancelled once the agent has the prompt (before, nothing would need cancelling).
    while !methods(&log).contains(&"session/prompt".to_owned()) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cancel.cancel();
    let cancelled: Vec<ReplyEvent> = tokio::time::timeout(PATIENCE, reply.collect())
        .await
        .unwrap();
    assert_eq!(cancelled, [ReplyEvent::Error(BackendError::Cancelled)]);
    assert!(methods(&log).contains(&"session/cancel".to_owned()));

    assert_eq!(
        events(&backend, turn("a", "again")).await,
        [ReplyEvent::end()]
    );
    assert_eq!(agent.spawned().len(), 2, "the hung process was replaced");
    let calls = methods(&log);
    assert_eq!(
        calls.iter().filter(|m| *m == "session/resume").count(),
        1,
        "the new process resumed the session: {calls:?}"
    );
    backend.shutdown().await;
}

#[tokio::test]
async fn an_agent_that_cannot_start_is_unavailable_with_its_words() {
    let agent = FakeSpawner::new(|_spec, agent| async move {
        agent.show("error: no API key configured\n");
        agent.exit(1);
    });
    let backend = backend(&agent, Arc::new(MemoryStore::new()));
    let Err(BackendError::Unavailable { message, .. }) = backend.run_turn(turn("a", "hi")).await
    else {
        panic!("an agent that cannot start is unavailable");
    };
    assert!(
        message.contains("exited with code 1") && message.contains("no API key configured"),
        "{message}"
    );
    assert_eq!(
        backend.status().processes,
        0,
        "its place in the pool is free again"
    );
}

#[tokio::test]
async fn an_agent_that_dies_mid_turn_fails_it_at_once_with_the_cause() {
    let log = Log::default();
    let agent = logging(&log, |mut agent, log| async move {
        while let Some(prompt) =
            serve_setup(&mut agent, &log, &json!({"loadSession": true}), "s-1").await
        {
            if prompt["params"]["prompt"][0]["text"] == "die" {
                send(&mut agent, chunk("s-1", "partial ")).await;
                agent.show("panic: out of memory\n");
                agent.exit(3);
                return;
            }
            answer(&mut agent, &prompt, json!({"stopReason": "end_turn"})).await;
        }
    });
    let backend = backend(&agent, Arc::new(MemoryStore::new()));
    let died = events(&backend, turn("a", "die")).await;
    let Some(ReplyEvent::Error(BackendError::Failed(message))) = died.last() else {
        panic!("{died:?}");
    };
    assert!(
        message.contains("the ACP agent scripted exited with code 3")
            && message.contains("out of memory")
            && message.contains("in the middle of the turn"),
        "{message}"
    );
    assert_eq!(
        events(&backend, turn("a", "next")).await,
        [ReplyEvent::end()]
    );
    assert!(
        methods(&log).contains(&"session/load".to_owned()),
        "reopened with session/load"
    );
    backend.shutdown().await;
}

#[tokio::test]
async fn a_session_the_agent_cannot_reopen_starts_again_and_a_replay_is_not_an_answer() {
    let log = Log::default();
    let agent = logging(&log, |mut agent, log| async move {
        while let Some(message) = read(&mut agent, &log).await {
            match message["method"].as_str().unwrap_or_default() {
                "initialize" => {
                    answer(
                        &mut agent,
                        &message,
                        json!({"protocolVersion": 1, "agentCapabilities": {"loadSession": true}}),
                    )
                    .await
                }
                "session/load" if message["params"]["sessionId"] == "gone" => {
                    send(&mut agent, json!({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32002, "message": "Resource not found"}})).await;
                }
                "session/load" => {
                    // A load replays the conversation before it answers.
                    send(&mut agent, chunk("kept", "an old answer")).await;
                    answer(&mut agent, &message, json!({})).await;
                }
                "session/new" => answer(&mut agent, &message, json!({"sessionId": "fresh"})).await,
                "session/prompt" => {
                    send(
                        &mut agent,
                        chunk(
                            message["params"]["sessionId"].as_str().unwrap(),
                            "new answer",
                        ),
                    )
                    .await;
                    answer(&mut agent, &message, json!({"stopReason": "end_turn"})).await;
                }
                _ => {}
            }
        }
    });
    let store = Arc::new(MemoryStore::new());
    for (user, id) in [("gone-user", "gone"), ("kept-user", "kept")] {
        let mut record = SessionRecord::new(SessionKey::new(user).unwrap(), std::env::temp_dir());
        record.conversation_id = Some(id.to_owned());
        record.started = true;
        store.put(record).await.unwrap();
    }
    let backend = backend(&agent, store.clone());
    assert_eq!(
        events(&backend, turn("gone-user", "hi")).await,
        [ReplyEvent::text("new answer"), ReplyEvent::end()]
    );
    let record = store
        .get(&SessionKey::new("gone-user").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.conversation_id.as_deref(), Some("fresh"));
    assert_eq!(
        events(&backend, turn("kept-user", "hi")).await,
        [ReplyEvent::text("new answer"), ReplyEvent::end()]
    );
    let record = store
        .get(&SessionKey::new("kept-user").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.conversation_id.as_deref(), Some("kept"));
    backend.shutdown().await;
}

#[tokio::test]
async fn a_prompt_the_agent_fails_fails_the_turn_and_the_process_stays() {
    let log = Log::default();
    let agent = logging(&log, |mut agent, log| async move {
        while let Some(prompt) = serve_setup(&mut agent, &log, &json!({}), "s-1").await {
            if prompt["params"]["prompt"][0]["text"] == "fail" {
                send(&mut agent, json!({"jsonrpc": "2.0", "id": prompt["id"], "error": {"code": -32603, "message": "model overloaded"}})).await;
            } else {
                answer(&mut agent, &prompt, json!({"stopReason": "end_turn"})).await;
            }
        }
    });
    let backend = backend(&agent, Arc::new(MemoryStore::new()));
    let failed = events(&backend, turn("a", "fail")).await;
    assert_eq!(
        failed,
        [ReplyEvent::Error(BackendError::failed(
            "the ACP agent scripted could not answer: model overloaded (JSON-RPC error -32603)"
        ))]
    );
    assert_eq!(events(&backend, turn("a", "ok")).await, [ReplyEvent::end()]);
    assert_eq!(agent.spawned().len(), 1);
    backend.shutdown().await;
}

#[tokio::test]
async fn at_the_process_limit_the_longest_idle_session_makes_room_and_a_busy_one_never_does() {
    let log = Log::default();
    let agent = echo_agent(&log, json!({"sessionCapabilities": {"resume": {}}}));
    let backend = AcpBackend::new(
        config().max_processes(1),
        Arc::new(agent.clone()),
        Arc::new(MemoryStore::new()),
    );
    assert_eq!(events(&backend, turn("a", "one")).await.len(), 2);
    assert_eq!(events(&backend, turn("b", "two")).await.len(), 2);
    assert_eq!(agent.spawned().len(), 2);
    assert_eq!(
        backend.status().processes,
        1,
        "a's process made room for b's"
    );

    // While b is in a turn, a finds no room.
    let busy = FakeSpawner::new(move |_spec, mut agent| {
        let log = Log::default();
        async move {
            while let Some(prompt) = serve_setup(&mut agent, &log, &json!({}), "s-1").await {
                if prompt["params"]["prompt"][0]["text"] == "slow" {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                answer(&mut agent, &prompt, json!({"stopReason": "end_turn"})).await;
            }
        }
    });
    let backend = AcpBackend::new(
        config().max_processes(1),
        Arc::new(busy),
        Arc::new(MemoryStore::new()),
    );
    let slow = backend.run_turn(turn("b", "slow")).await.unwrap();
    let refused = backend.run_turn(turn("a", "hi")).await;
    let Err(BackendError::Unavailable {
        message,
        retry_after,
    }) = refused
    else {
        panic!("a turn with no room is refused");
    };
    assert!(
        message.contains("all 1 ACP agent processes are busy"),
        "{message}"
    );
    assert!(retry_after.is_some());
    drop(slow);
    backend.shutdown().await;
}

#[tokio::test]
async fn a_request_between_turns_is_answered_at_once() {
    let log = Log::default();
    let (asked, answered) = tokio::sync::oneshot::channel::<Value>();
    let asked = Arc::new(Mutex::new(Some(asked)));
    let agent = logging(&log, move |mut agent, log| {
        let asked = asked.clone();
        async move {
            let prompt = serve_setup(&mut agent, &log, &json!({}), "s-1")
                .await
                .unwrap();
            answer(&mut agent, &prompt, json!({"stopReason": "end_turn"})).await;
            // After its answer, no turn runs: the agent asks anyway, and a file read.
            send(&mut agent, json!({"jsonrpc": "2.0", "id": "late-1", "method": "session/request_permission", "params": {
                    "sessionId": "s-1", "toolCall": {"toolCallId": "c"},
                    "options": [{"optionId": "yes", "name": "Allow", "kind": "allow_once"}]}})).await;
            let permission = read(&mut agent, &log).await.unwrap();
            let _ = asked.lock().unwrap().take().unwrap().send(permission);
            while read(&mut agent, &log).await.is_some() {}
        }
    });
    let backend = backend(&agent, Arc::new(MemoryStore::new()));
    assert_eq!(events(&backend, turn("a", "hi")).await, [ReplyEvent::end()]);
    let permission = tokio::time::timeout(PATIENCE, answered)
        .await
        .expect("answered without another turn")
        .unwrap();
    assert_eq!(
        permission,
        json!({"jsonrpc": "2.0", "id": "late-1", "result": {"outcome": {"outcome": "cancelled"}}})
    );
    backend.shutdown().await;
}

#[tokio::test]
async fn a_session_the_agent_lost_after_reopening_it_is_replaced_on_the_next_turn() {
    let log = Log::default();
    let agent = logging(&log, |mut agent, log| async move {
        let capabilities = json!({"sessionCapabilities": {"resume": {}}});
        while let Some(prompt) = serve_setup(&mut agent, &log, &capabilities, "s-new").await {
            if prompt["params"]["sessionId"] == "lost" {
                send(&mut agent, json!({"jsonrpc": "2.0", "id": prompt["id"], "error": {"code": -32002, "message": "Resource not found"}})).await;
            } else {
                answer(&mut agent, &prompt, json!({"stopReason": "end_turn"})).await;
            }
        }
    });
    let store = Arc::new(MemoryStore::new());
    let key = SessionKey::new("a").unwrap();
    let mut record = SessionRecord::new(key.clone(), std::env::temp_dir());
    record.conversation_id = Some("lost".to_owned());
    record.started = true;
    store.put(record).await.unwrap();
    let backend = backend(&agent, store.clone());
    let failed = events(&backend, turn("a", "hi")).await;
    let Some(ReplyEvent::Error(BackendError::Failed(message))) = failed.last() else {
        panic!("{failed:?}");
    };
    assert!(
        message.contains("Resource not found") && message.contains("starts a new conversation"),
        "{message}"
    );
    assert_eq!(
        events(&backend, turn("a", "again")).await,
        [ReplyEvent::end()]
    );
    let record = store.get(&key).await.unwrap().unwrap();
    assert_eq!(record.conversation_id.as_deref(), Some("s-new"));
    backend.shutdown().await;
}

#[tokio::test]
async fn tool_results_for_calls_the_agent_never_made_reach_it_as_a_message() {
    let log = Log::default();
    let agent = echo_agent(&log, json!({}));
    let backend = backend(&agent, Arc::new(MemoryStore::new()));
    let mut results = turn("a", "what is the weather?");
    results.meta = results
        .meta
        .with_tool_results(vec![ToolResult::new("call_1", "sunny")]);
    let events = events(&backend, results).await;
    let ReplyEvent::TextDelta(text) = &events[0] else {
        panic!("{events:?}");
    };
    assert!(
        text.starts_with("reply to: The results of earlier tool calls")
            && text.ends_with("[call_1]\nsunny"),
        "{text}"
    );
    backend.shutdown().await;
}

/// The texts of the prompts the agents got, in order.
fn prompts(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|message| message["method"] == "session/prompt")
        .filter_map(|message| {
            message["params"]["prompt"][0]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn the_clients_instructions_come_with_the_first_message_and_again_only_when_they_change() {
    let log = Log::default();
    let agent = echo_agent(&log, json!({"sessionCapabilities": {"resume": {}}}));
    let store = Arc::new(MemoryStore::new());
    let instructed = |text: &str, instructions: Option<&str>| {
        let mut turn = turn("a", text);
        turn.meta = turn
            .meta
            .with_system_prompt(instructions.map(str::to_owned));
        turn
    };
    let first = backend(&agent, store.clone());
    for (text, instructions) in [
        ("one", Some("Be brief.")),
        ("two", Some("Be brief.")),
        ("three", Some("Be kind.")),
        ("four", None),
        ("five", None),
    ] {
        events(&first, instructed(text, instructions)).await;
    }
    first.shutdown().await;
    // A restarted bridge resumes the session without knowing what it was told: it tells it once more.
    let restarted = backend(&agent, store);
    for text in ["six", "seven"] {
        events(&restarted, instructed(text, Some("Be kind."))).await;
    }
    restarted.shutdown().await;

    let prompts = prompts(&log);
    let told = |prompt: &str, instructions: &str, text: &str| {
        prompt.starts_with("[The app you are working in gives you these instructions")
            && prompt.contains(instructions)
            && prompt.ends_with(&format!("\n\n{text}"))
    };
    assert!(told(&prompts[0], "Be brief.", "one"), "{}", prompts[0]);
    assert_eq!(prompts[1], "two");
    assert!(told(&prompts[2], "Be kind.", "three"), "{}", prompts[2]);
    assert!(
        prompts[3].contains("withdrawn its earlier instructions") && prompts[3].ends_with("four"),
        "{}",
        prompts[3]
    );
    assert_eq!(prompts[4], "five");
    assert!(told(&prompts[5], "Be kind.", "six"), "{}", prompts[5]);
    assert_eq!(prompts[6], "seven");
    assert!(methods(&log).contains(&"session/resume".to_owned()));
}
