//! The bridge's turn limits end to end: one turn at a time per session in FIFO order, the queue bound, the
//! three clocks and heartbeats. First in process with tokio's paused clock, then once each over a real
//! socket with a slow backend.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use synthesis_bridge::ReplyEvent;
use synthesis_bridge::http::{Bridge, BridgeBuilder, ResponseBody};
use synthesis_bridge::metrics::TurnOutcome;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::ServiceExt;

use support::{
    PATIENCE, ScriptedBackend, ScriptedTurn, SseReader, TestServer, chat_request, config_in,
    expect_error, simple_body,
};

/// A bridge over a scripted backend, as `configure` sets it up.
fn scripted_bridge(
    dir: &tempfile::TempDir,
    configure: impl FnOnce(BridgeBuilder) -> BridgeBuilder,
) -> (Bridge, mpsc::UnboundedReceiver<ScriptedTurn>) {
    let (backend, turns) = ScriptedBackend::new();
    let bridge = configure(Bridge::builder(backend, config_in(dir.path()))).build();
    (bridge, turns)
}

async fn ask(bridge: &Bridge, session: &str, text: &str, stream: bool) -> Response<ResponseBody> {
    bridge
        .clone()
        .oneshot(chat_request(simple_body(session, text, stream)))
        .await
        .unwrap()
}

/// Reads an in-process streaming response event by event, with no timeouts of its own (the clock is
/// paused: any timeout would simply fire).
struct Events {
    body: ResponseBody,
    buffer: String,
}

impl Events {
    fn new(response: Response<ResponseBody>) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                return Some(event.trim_end().strip_prefix("data: ").unwrap().to_owned());
            }
            let frame = self.body.frame().await?.unwrap();
            let data = frame.into_data().unwrap();
            self.buffer.push_str(std::str::from_utf8(&data).unwrap());
        }
    }

    async fn chunk(&mut self) -> Value {
        serde_json::from_str(&self.next().await.expect("another event")).unwrap()
    }
}

async fn json_error(response: Response<ResponseBody>, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"]["code"], code, "{json}");
    json
}

/// Lets other tasks run until `done` holds. Each step moves the paused clock by a millisecond, which also
/// waits for blocking work (resolving the workspace) in between.
async fn eventually(done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened");
}

fn is_heartbeat(chunk: &Value) -> bool {
    chunk["choices"][0]["delta"] == serde_json::json!({"content": ""})
        && chunk["choices"][0]["finish_reason"].is_null()
}

#[tokio::test(start_paused = true)]
async fn turns_of_one_session_run_one_at_a_time_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut turns) = scripted_bridge(&dir, |b| b);
    let mut waiting = Vec::new();
    for text in ["one", "two", "three"] {
        let client = bridge.clone();
        let queued = bridge.waiting();
        waiting.push(tokio::spawn(
            async move { ask(&client, "s", text, false).await },
        ));
        // Arrival order is what FIFO is about: let each request get in line before the next.
        let expected = queued + usize::from(text != "one");
        eventually(|| bridge.active_sessions() == 1 && bridge.waiting() == expected).await;
    }
    for text in ["one", "two", "three"] {
        let turn = turns.recv().await.unwrap();
        assert_eq!(turn.turn.text, text);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(turns.try_recv().is_err(), "a second turn reached the agent");
        turn.events.send(ReplyEvent::text(text)).await.unwrap();
        turn.events.send(ReplyEvent::end()).await.unwrap();
        drop(turn);
        let response = waiting.remove(0).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["choices"][0]["message"]["content"], text);
    }
    assert_eq!(bridge.active_sessions(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_gets_429_with_retry_after_and_other_sessions_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut turns) = scripted_bridge(&dir, |b| {
        b.queue_depth(1).busy_retry_after(Duration::from_secs(20))
    });
    let running = Events::new(ask(&bridge, "s", "running", true).await);
    let first = turns.recv().await.unwrap();
    let queued = tokio::spawn({
        let bridge = bridge.clone();
        async move { ask(&bridge, "s", "queued", true).await }
    });
    eventually(|| bridge.waiting() == 1).await;

    let refused = ask(&bridge, "s", "one too many", true).await;
    assert_eq!(refused.headers()["retry-after"], "20");
    let json = json_error(refused, StatusCode::TOO_MANY_REQUESTS, "session_busy").await;
    assert_eq!(json["error"]["type"], "rate_limit_error");
    assert!(json["error"]["message"].as_str().unwrap().contains("busy"));

    // Another session is neither queued nor refused.
    let _other = Events::new(ask(&bridge, "t", "elsewhere", true).await);
    assert_eq!(turns.recv().await.unwrap().turn.text, "elsewhere");
    assert_eq!(bridge.metrics().turns(TurnOutcome::Rejected), 1);

    drop((running, first));
    let _queued = Events::new(queued.await.unwrap());
    assert_eq!(turns.recv().await.unwrap().turn.text, "queued");
}

#[tokio::test(start_paused = true)]
async fn a_turn_that_waits_too_long_gets_504_before_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut turns) =
        scripted_bridge(&dir, |b| b.admission_timeout(Some(Duration::from_secs(60))));
    let _running = Events::new(ask(&bridge, "s", "running", true).await);
    let _first = turns.recv().await.unwrap();
    let started = Instant::now();
    let response = ask(&bridge, "s", "late", true).await;
    assert_eq!(started.elapsed(), Duration::from_secs(60));
    let json = json_error(response, StatusCode::GATEWAY_TIMEOUT, "admission_timeout").await;
    assert!(
        json["error"]["message"].as_str().unwrap().contains("1m"),
        "{json}"
    );
    assert_eq!(bridge.waiting(), 0);
    assert_eq!(bridge.metrics().turns(TurnOutcome::TimedOut), 1);
}

#[tokio::test(start_paused = true)]
async fn a_disconnected_clients_slot_is_freed_only_when_the_agent_ends_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut turns) = scripted_bridge(&dir, |b| b);
    let mut first = Events::new(ask(&bridge, "s", "first", true).await);
    first.chunk().await;
    let turn = turns.recv().await.unwrap();
    let next = tokio::spawn({
        let bridge = bridge.clone();
        async move { ask(&bridge, "s", "second", true).await }
    });

    // The client goes away: the turn is cancelled, but the agent takes a while to stop.
    drop(first);
    tokio::time::timeout(Duration::from_secs(1), turn.turn.cancel.cancelled())
        .await
        .expect("the turn is cancelled");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        turns.try_recv().is_err(),
        "the next turn reached a busy agent"
    );
    // The agent may still say things; nobody is listening, and nothing blocks.
    turn.events
        .send(ReplyEvent::text("stopping"))
        .await
        .unwrap();

    // It acknowledges: the next turn goes in.
    turn.events
        .send(ReplyEvent::Error(synthesis_bridge::BackendError::Cancelled))
        .await
        .unwrap();
    drop(turn);
    assert_eq!(turns.recv().await.unwrap().turn.text, "second");
    let _next = Events::new(next.await.unwrap());
    assert_eq!(bridge.metrics().turns(TurnOutcome::ClientClosed), 1);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_quiet_stream_alive_and_use_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut turns) = scripted_bridge(&dir, |b| b.heartbeat(Some(Duration::from_secs(15))));
    let started = Instant::now();
    let mut events = Events::new(ask(&bridge, "s", "hi", true).await);
    let role = events.chunk().await;
    let turn = turns.recv().await.unwrap();

    let beat = events.chunk().await;
    assert!(is_heartbeat(&beat), "{beat}");
    assert_eq!(started.elapsed(), Duration::from_secs(15));
    for field in ["id", "created", "model", "object"] {
        assert_eq!(beat[field], role[field]);
    }

    // A real delta 5 s later restarts the interval.
    tokio::time::sleep(Duration::from_secs(5)).await;
    turn.events.send(ReplyEvent::text("hello")).await.unwrap();
    assert_eq!(
        events.chunk().await["choices"][0]["delta"]["content"],
        "hello"
    );
    assert!(is_heartbeat(&events.chunk().await));
    assert_eq!(started.elapsed(), Duration::from_secs(35));

    turn.events.send(ReplyEvent::end()).await.unwrap();
    assert_eq!(events.chunk().await["choices"][0]["finish_reason"], "stop");
    assert_eq!(events.next().await.as_deref(), Some("[DONE]"));
    // Nothing after [DONE], however long the agent stays connected.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(events.next().await, None);
}

#[tokio::test(start_paused = true)]
async fn an_idle_agent_ends_the_stream_with_a_final_chunk_and_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut turns) = scripted_bridge(&dir, |b| {
        b.heartbeat(Some(Duration::from_secs(4)))
            .idle_timeout(Some(Duration::from_secs(10)))
    });
    let started = Instant::now();
    let mut events = Events::new(ask(&bridge, "s", "hi", true).await);
    let role = events.chunk().await;
    let turn = turns.recv().await.unwrap();

    // Heartbeats at 4 s and 8 s do not count as output: the idle timeout fires at 10 s.
    assert!(is_heartbeat(&events.chunk().await));
    assert!(is_heartbeat(&events.chunk().await));
    let last = events.chunk().await;
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(last["id"], role["id"]);
    assert_eq!(last["error"]["code"], "idle_timeout");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last["error"]["message"].as_str().unwrap().contains("10s"));
    assert_eq!(events.next().await.as_deref(), Some("[DONE]"));
    assert_eq!(events.next().await, None);

    tokio::time::timeout(Duration::from_secs(1), turn.turn.cancel.cancelled())
        .await
        .expect("the agent's turn is cancelled");
    assert_eq!(bridge.metrics().turns(TurnOutcome::TimedOut), 1);
    assert_eq!(bridge.metrics().turns(TurnOutcome::ClientClosed), 0);
}

#[tokio::test(start_paused = true)]
async fn the_turn_deadline_ends_a_busy_stream_with_a_final_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut turns) = scripted_bridge(&dir, |b| {
        b.turn_timeout(Some(Duration::from_secs(20)))
            .idle_timeout(Some(Duration::from_secs(10)))
    });
    let started = Instant::now();
    let mut events = Events::new(ask(&bridge, "s", "hi", true).await);
    events.chunk().await;
    let turn = turns.recv().await.unwrap();
    let cancel = turn.turn.cancel.clone();
    let talker = tokio::spawn(async move {
        // Output every 6 s keeps the idle clock happy.
        while turn.events.send(ReplyEvent::text("more ")).await.is_ok() {
            tokio::time::sleep(Duration::from_secs(6)).await;
            if turn.turn.cancel.is_cancelled() {
                break;
            }
        }
    });
    let mut deltas = 0;
    let last = loop {
        let chunk = events.chunk().await;
        if chunk.get("error").is_some() {
            break chunk;
        }
        deltas += 1;
    };
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    assert_eq!(deltas, 4);
    assert_eq!(last["error"]["code"], "turn_timeout");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(events.next().await.as_deref(), Some("[DONE]"));
    assert!(cancel.is_cancelled());
    talker.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_turn_deadline_answers_a_non_streaming_request_with_504() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut turns) =
        scripted_bridge(&dir, |b| b.turn_timeout(Some(Duration::from_secs(20))));
    let asking = tokio::spawn({
        let bridge = bridge.clone();
        async move { ask(&bridge, "s", "hi", false).await }
    });
    let turn = turns.recv().await.unwrap();
    let response = asking.await.unwrap();
    json_error(response, StatusCode::GATEWAY_TIMEOUT, "turn_timeout").await;
    tokio::time::timeout(Duration::from_secs(1), turn.turn.cancel.cancelled())
        .await
        .expect("the agent's turn is cancelled");
}

#[tokio::test(start_paused = true)]
async fn the_session_table_is_empty_once_the_load_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut turns) = scripted_bridge(&dir, |b| b.queue_depth(16));
    let agent = tokio::spawn(async move {
        while let Some(turn) = turns.recv().await {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = turn.events.send(ReplyEvent::text("ok")).await;
                let _ = turn.events.send(ReplyEvent::end()).await;
            });
        }
    });
    let clients: Vec<_> = (0..120)
        .map(|i| {
            let bridge = bridge.clone();
            tokio::spawn(async move {
                let response = ask(&bridge, &format!("session-{}", i % 12), "hi", false).await;
                assert_eq!(response.status(), StatusCode::OK);
                response.into_body().collect().await.unwrap();
            })
        })
        .collect();
    eventually(|| bridge.active_sessions() > 0).await;
    for client in clients {
        client.await.unwrap();
    }
    // The drains behind the answers finish on their own tasks.
    eventually(|| bridge.active_sessions() == 0).await;
    assert_eq!(bridge.waiting(), 0);
    assert_eq!(bridge.metrics().turns(TurnOutcome::Ok), 120);
    agent.abort();
}

#[tokio::test(start_paused = true)]
async fn shutdown_refuses_queued_turns_and_ends_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut turns) = scripted_bridge(&dir, |b| b);
    let mut running = Events::new(ask(&bridge, "s", "running", true).await);
    running.chunk().await;
    let _turn = turns.recv().await.unwrap();
    let queued = tokio::spawn({
        let bridge = bridge.clone();
        async move { ask(&bridge, "s", "queued", true).await }
    });
    eventually(|| bridge.waiting() == 1).await;

    bridge.begin_shutdown();
    json_error(
        queued.await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
    )
    .await;
    assert_eq!(bridge.waiting(), 0);
    assert_eq!(running.chunk().await["error"]["code"], "shutting_down");
    assert_eq!(running.next().await.as_deref(), Some("[DONE]"));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_from_a_users_layer_is_a_504() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, mut turns) = scripted_bridge(&dir, |b| {
        b.layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
    });
    let asking = tokio::spawn({
        let bridge = bridge.clone();
        async move { ask(&bridge, "s", "hi", false).await }
    });
    let turn = turns.recv().await.unwrap();
    json_error(
        asking.await.unwrap(),
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
    )
    .await;
    tokio::time::timeout(Duration::from_secs(1), turn.turn.cancel.cancelled())
        .await
        .expect("the agent's turn is cancelled");
}

// Over a real socket, with real time and a backend that takes its time.

/// Answers each turn with its text after `delay`, unless cancelled first.
fn slow_agent(mut turns: mpsc::UnboundedReceiver<ScriptedTurn>, delay: Duration) {
    tokio::spawn(async move {
        while let Some(turn) = turns.recv().await {
            tokio::spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {
                        let _ = turn.events.send(ReplyEvent::text(turn.turn.text.clone())).await;
                        let _ = turn.events.send(ReplyEvent::end()).await;
                    }
                    () = turn.turn.cancel.cancelled() => {
                        let _ = turn.events.send(ReplyEvent::Error(synthesis_bridge::BackendError::Cancelled)).await;
                    }
                }
            });
        }
    });
}

async fn serve(
    configure: impl FnOnce(BridgeBuilder) -> BridgeBuilder,
) -> (
    TestServer,
    mpsc::UnboundedReceiver<ScriptedTurn>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let (bridge, turns) = scripted_bridge(&dir, configure);
    (TestServer::serve(bridge).await, turns, dir)
}

/// Waits (in real time, up to the test's patience) until `done` holds.
async fn wait_until(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never happened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn answer_text(response: http::Response<hyper::body::Incoming>) -> String {
    let mut sse = SseReader::new(response);
    let mut text = String::new();
    for event in sse.rest().await {
        if event == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&event).unwrap();
        assert!(chunk.get("error").is_none(), "{chunk}");
        if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(delta);
        }
    }
    text
}

#[tokio::test]
async fn over_a_socket_one_session_is_served_in_order_and_another_alongside() {
    let (server, turns, _dir) = serve(|b| b).await;
    let server = Arc::new(server);
    let (order_tx, mut order) = mpsc::unbounded_channel();
    // Records the order in which turns reach the agent, then answers slowly.
    let (forward, forwarded) = mpsc::unbounded_channel();
    tokio::spawn({
        let mut turns = turns;
        async move {
            while let Some(turn) = turns.recv().await {
                order_tx.send(turn.turn.text.clone()).unwrap();
                forward.send(turn).unwrap();
            }
        }
    });
    slow_agent(forwarded, Duration::from_millis(150));

    let mut clients = Vec::new();
    for text in ["a1", "a2", "a3"] {
        let client = server.clone();
        clients.push(tokio::spawn(async move {
            answer_text(client.chat(simple_body("a", text, true)).await).await
        }));
        // Arrival order is what FIFO is about: let each request get in line first.
        let expected = usize::from(text != "a1") + usize::from(text == "a3");
        wait_until(|| server.bridge.active_sessions() == 1 && server.bridge.waiting() == expected)
            .await;
    }
    let other = answer_text(server.chat(simple_body("b", "b1", true)).await).await;
    assert_eq!(other, "b1");
    let mut answers = Vec::new();
    for client in clients {
        answers.push(client.await.unwrap());
    }
    assert_eq!(answers, ["a1", "a2", "a3"]);
    let mut reached = Vec::new();
    while let Ok(text) = order.try_recv() {
        reached.push(text);
    }
    // b1 overtook the queued a2 and a3: sessions do not wait for each other.
    assert_eq!(reached, ["a1", "b1", "a2", "a3"]);
    assert_eq!(server.bridge.active_sessions(), 0);
}

#[tokio::test]
async fn over_a_socket_a_full_queue_gets_429() {
    let (server, turns, _dir) = serve(|b| b.queue_depth(1)).await;
    slow_agent(turns, Duration::from_millis(400));
    let send = |text: &'static str| {
        let addr = server.addr;
        tokio::spawn(async move {
            support::send_to(addr, chat_request(simple_body("q", text, true)))
                .await
                .unwrap()
        })
    };
    let running = send("1");
    wait_until(|| server.bridge.active_sessions() == 1).await;
    let queued = send("2");
    wait_until(|| server.bridge.waiting() == 1).await;
    let refused = server.chat(simple_body("q", "3", true)).await;
    assert_eq!(refused.headers()["retry-after"], "10");
    expect_error(refused, StatusCode::TOO_MANY_REQUESTS, "session_busy").await;
    assert_eq!(answer_text(running.await.unwrap()).await, "1");
    assert_eq!(answer_text(queued.await.unwrap()).await, "2");
}

#[tokio::test]
async fn over_a_socket_a_disconnected_clients_turn_keeps_the_session_until_the_agent_stops() {
    let (server, mut turns, _dir) = serve(|b| b).await;
    let mut sse = SseReader::new(server.chat(simple_body("d", "first", true)).await);
    sse.chunk().await;
    let first = turns.recv().await.unwrap();
    let next = tokio::spawn({
        let addr = server.addr;
        async move { support::send_to(addr, chat_request(simple_body("d", "second", true))).await }
    });
    drop(sse);
    tokio::time::timeout(PATIENCE, first.turn.cancel.cancelled())
        .await
        .expect("cancelled when the client left");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        turns.try_recv().is_err(),
        "the next turn reached a busy agent"
    );
    drop(first);
    let second = tokio::time::timeout(PATIENCE, turns.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.turn.text, "second");
    second.events.send(ReplyEvent::text("done")).await.unwrap();
    second.events.send(ReplyEvent::end()).await.unwrap();
    drop(second);
    assert_eq!(answer_text(next.await.unwrap().unwrap()).await, "done");
}

#[tokio::test]
async fn over_a_socket_heartbeats_flow_and_the_idle_timeout_ends_the_stream() {
    let (server, mut turns, _dir) = serve(|b| {
        b.heartbeat(Some(Duration::from_millis(100)))
            .idle_timeout(Some(Duration::from_millis(450)))
    })
    .await;
    let mut sse = SseReader::new(server.chat(simple_body("h", "hi", true)).await);
    let role = sse.chunk().await;
    let turn = turns.recv().await.unwrap();
    let mut beats = 0;
    let last = loop {
        let chunk = sse.chunk().await;
        if chunk.get("error").is_some() {
            break chunk;
        }
        assert!(is_heartbeat(&chunk), "{chunk}");
        assert_eq!(chunk["id"], role["id"]);
        beats += 1;
    };
    assert!(beats >= 3, "{beats} heartbeats");
    assert_eq!(last["error"]["code"], "idle_timeout");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(sse.rest().await, ["[DONE]"]);
    tokio::time::timeout(PATIENCE, turn.turn.cancel.cancelled())
        .await
        .expect("the agent's turn is cancelled");
}

#[tokio::test]
async fn over_a_socket_the_deadline_ends_a_stream_and_a_slow_non_streaming_turn() {
    let (server, turns, _dir) = serve(|b| b.turn_timeout(Some(Duration::from_millis(300)))).await;
    slow_agent(turns, Duration::from_secs(30));
    let mut sse = SseReader::new(server.chat(simple_body("t", "slow", true)).await);
    sse.chunk().await;
    let last = sse.chunk().await;
    assert_eq!(last["error"]["code"], "turn_timeout");
    assert_eq!(sse.rest().await, ["[DONE]"]);

    let response = server.chat(simple_body("t2", "slow", false)).await;
    expect_error(response, StatusCode::GATEWAY_TIMEOUT, "turn_timeout").await;
    // The cancelled turns acknowledged: nothing is left in the table.
    wait_until(|| server.bridge.active_sessions() == 0).await;
}

#[tokio::test]
async fn the_deadline_cuts_a_turn_whose_client_stopped_reading_and_frees_the_session() {
    stalled_client_is_cut(|b| b.turn_timeout(Some(Duration::from_secs(1)))).await;
}

#[tokio::test]
async fn the_idle_clock_cuts_a_turn_whose_client_stopped_reading_and_frees_the_session() {
    stalled_client_is_cut(|b| {
        b.turn_timeout(None)
            .idle_timeout(Some(Duration::from_secs(1)))
    })
    .await;
}

/// A client that sends its request and never reads a byte of the answer: the clock `configure` sets cuts
/// the turn though nobody polls the body, and the session takes its next turn.
async fn stalled_client_is_cut(configure: impl FnOnce(BridgeBuilder) -> BridgeBuilder) {
    use tokio::io::AsyncWriteExt;
    let (server, mut turns, _dir) = serve(configure).await;
    // A client that sends its request and never reads a byte of the answer.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let body = simple_body("reader", "a big answer", true).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let turn = turns.recv().await.unwrap();
    // 12 MB of answer, as in the report: more than the sockets and channels hold, so the agent blocks.
    let chunk = "x".repeat(8 << 10);
    let cancel = turn.turn.cancel.clone();
    let producer = tokio::spawn(async move {
        for _ in 0..1536 {
            if turn
                .events
                .send(ReplyEvent::text(chunk.clone()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio::time::timeout(PATIENCE, cancel.cancelled())
        .await
        .expect("the turn was cut by its clock");
    producer.abort();
    // The session takes its next turn while the stalled client is still connected.
    let next = tokio::spawn({
        let addr = server.addr;
        async move { support::send_to(addr, chat_request(simple_body("reader", "next", false))).await }
    });
    let second = tokio::time::timeout(PATIENCE, turns.recv())
        .await
        .expect("the session is free")
        .unwrap();
    assert_eq!(second.turn.text, "next");
    second.events.send(ReplyEvent::end()).await.unwrap();
    next.await.unwrap();
    drop(stalled);
}
