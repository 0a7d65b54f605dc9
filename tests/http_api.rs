//! The OpenAI-compatible API over a real socket, with a backend the test scripts turn by turn.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use support::*;
use synthesis_bridge::{
    BackendError, FinishReason, MockAgentBackend, ReplyEvent, SessionKey, ToolCall, ToolResult,
    Usage,
};

#[tokio::test]
async fn streams_deltas_as_the_agent_yields_them() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let server = TestServer::start(backend, config_in(dir.path())).await;

    let mut sse = SseReader::new(server.chat(simple_body("alice", "hello", true)).await);
    let role = sse.chunk().await;
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant");

    let turn = turns.recv().await.unwrap();
    assert_eq!(turn.turn.text, "hello");
    assert_eq!(turn.turn.session.as_str(), "alice");
    assert_eq!(turn.turn.workspace, dir.path().canonicalize().unwrap());

    // Each delta reaches the client before the next one is even produced: nothing is buffered.
    for piece in ["Hel", "lo ", "there"] {
        turn.events.send(ReplyEvent::text(piece)).await.unwrap();
        let chunk = sse.chunk().await;
        assert_eq!(chunk["choices"][0]["delta"]["content"], piece);
        assert_eq!(chunk["id"], role["id"]);
    }
    turn.events.send(ReplyEvent::end()).await.unwrap();
    let finish = sse.chunk().await;
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(sse.rest().await, ["[DONE]"]);
}

#[tokio::test]
async fn sse_framing_every_chunk_is_json_with_one_id_role_first_done_last() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let server = TestServer::start(backend, config_in(dir.path())).await;
    let mut body = simple_body("bob", "hi", true);
    body["stream_options"] = json!({"include_usage": true});
    let response = server.chat(body).await;
    let turn = turns.recv().await.unwrap();
    for event in [
        ReplyEvent::text("a"),
        ReplyEvent::text(""),
        ReplyEvent::Usage(Usage::new(10, 2)),
        ReplyEvent::text("b\n\"c\""),
        ReplyEvent::End(FinishReason::Length),
    ] {
        turn.events.send(event).await.unwrap();
    }
    drop(turn);

    let events = SseReader::new(response).rest().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = &chunks[0]["id"];
    assert!(id.as_str().unwrap().starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(&chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "claude");
        assert_eq!(chunk["created"], chunks[0]["created"]);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "ab\n\"c\"");
    // The empty delta is not forwarded: role, a, b, finish, usage.
    assert_eq!(chunks.len(), 5);
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(
        chunks[4]["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12})
    );
}

#[tokio::test]
async fn non_streaming_answers_one_completion_with_usage() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let server = TestServer::start(backend, config_in(dir.path())).await;
    let body = json!({"model": "claude", "user": "carol", "messages": [{"role": "user", "content": "sum?"}]});
    let answer = tokio::spawn(async move {
        let response = server.chat(body).await;
        assert_eq!(response.status(), StatusCode::OK);
        body_json(response).await
    });
    let turn = turns.recv().await.unwrap();
    turn.events.send(ReplyEvent::text("4")).await.unwrap();
    turn.events.send(ReplyEvent::text("2")).await.unwrap();
    turn.events
        .send(ReplyEvent::Usage(Usage::new(5, 1)))
        .await
        .unwrap();
    turn.events.send(ReplyEvent::end()).await.unwrap();
    let json = answer.await.unwrap();
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(
        json["choices"][0]["message"],
        json!({"role": "assistant", "content": "42"})
    );
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
    assert_eq!(json["usage"]["total_tokens"], 6);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_cancels_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let server = TestServer::start(backend, config_in(dir.path())).await;
    let mut sse = SseReader::new(server.chat(simple_body("dave", "long task", true)).await);
    sse.chunk().await;
    let turn = turns.recv().await.unwrap();
    turn.events.send(ReplyEvent::text("working")).await.unwrap();
    sse.chunk().await;
    assert!(!turn.turn.cancel.is_cancelled());

    drop(sse);
    tokio::time::timeout(PATIENCE, turn.turn.cancel.cancelled())
        .await
        .expect("the turn was cancelled");
    // The backend can keep talking while it winds down: the bridge drains instead of blocking it.
    for _ in 0..32 {
        turn.events.send(ReplyEvent::text("ignored")).await.unwrap();
    }
    turn.events
        .send(ReplyEvent::Error(BackendError::Cancelled))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_non_streaming_client_that_disconnects_cancels_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let server = Arc::new(TestServer::start(backend, config_in(dir.path())).await);
    let request = tokio::spawn({
        let server = server.clone();
        async move {
            let _ = server.chat(simple_body("erin", "x", false)).await;
        }
    });
    let turn = turns.recv().await.unwrap();
    request.abort();
    tokio::time::timeout(PATIENCE, turn.turn.cancel.cancelled())
        .await
        .expect("the turn was cancelled");
    // Counted once, as abandoned by the client, though it never had a response.
    let metrics = server.bridge.metrics();
    tokio::time::timeout(PATIENCE, async {
        while metrics.turns(synthesis_bridge::metrics::TurnOutcome::ClientClosed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the abandoned turn was counted");
    assert_eq!(metrics.turns(synthesis_bridge::metrics::TurnOutcome::Ok), 0);
}

#[tokio::test]
async fn failures_after_the_head_end_with_an_error_chunk_then_done() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let server = TestServer::start(backend, config_in(dir.path())).await;

    // An error reported by the agent.
    let mut sse = SseReader::new(server.chat(simple_body("f", "x", true)).await);
    let turn = turns.recv().await.unwrap();
    turn.events.send(ReplyEvent::text("partial")).await.unwrap();
    turn.events
        .send(ReplyEvent::Error(BackendError::failed(
            "claude exited with code 1",
        )))
        .await
        .unwrap();
    sse.chunk().await;
    assert_eq!(
        sse.chunk().await["choices"][0]["delta"]["content"],
        "partial"
    );
    let last = sse.chunk().await;
    assert_eq!(last["error"]["message"], "claude exited with code 1");
    assert_eq!(last["error"]["code"], "agent_failed");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(sse.rest().await, ["[DONE]"]);
    // The agent's turn is over (until then the session's next turn waits).
    drop(turn);

    // A reply stream that stops without saying it is complete.
    let mut sse = SseReader::new(server.chat(simple_body("f", "y", true)).await);
    drop(turns.recv().await.unwrap());
    sse.chunk().await;
    let last = sse.chunk().await;
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ended before it was complete")
    );
    assert_eq!(sse.rest().await, ["[DONE]"]);
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_a_final_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let server = TestServer::start(backend, config_in(dir.path())).await;
    let mut sse = SseReader::new(server.chat(simple_body("g", "x", true)).await);
    sse.chunk().await;
    let turn = turns.recv().await.unwrap();

    server.bridge.begin_shutdown();
    let last = sse.chunk().await;
    assert_eq!(last["error"]["code"], "shutting_down");
    assert_eq!(sse.rest().await, ["[DONE]"]);
    tokio::time::timeout(PATIENCE, turn.turn.cancel.cancelled())
        .await
        .expect("the turn was cancelled");
    expect_error(
        server.chat(simple_body("g", "again", true)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
    )
    .await;
    server.shut_down().await;
}

#[tokio::test]
async fn models_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let config = config_in(dir.path())
        .models(["claude", "claude-opus"])
        .api_key(Some("sekrit".into()));
    let server = TestServer::start(backend, config).await;
    let get = |path: &str| {
        Request::get(path)
            .header("host", "x")
            .header("authorization", "Bearer sekrit")
    };

    let models = body_json(
        server
            .send(get("/v1/models").body(Full::default()).unwrap())
            .await,
    )
    .await;
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][1]["id"], "claude-opus");
    let one = body_json(
        server
            .send(get("/v1/models/claude").body(Full::default()).unwrap())
            .await,
    )
    .await;
    assert_eq!(one["id"], "claude");
    let missing = server
        .send(get("/v1/models/gpt-4").body(Full::default()).unwrap())
        .await;
    expect_error(missing, StatusCode::NOT_FOUND, "model_not_found").await;

    // Health and metrics need no key: probes and scrapers should not hold one.
    let health = server
        .send(
            Request::get("/health")
                .header("host", "x")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(health.status(), StatusCode::OK);
    let health = body_json(health).await;
    assert_eq!(health["ok"], true);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["sessions"], 1);

    let mut request = chat_request(simple_body("h", "x", false));
    request
        .headers_mut()
        .insert("authorization", "Bearer sekrit".parse().unwrap());
    let answer =
        tokio::spawn(async move { (body_bytes(server.send(request).await).await, server) });
    let turn = turns.recv().await.unwrap();
    turn.events.send(ReplyEvent::text("ok")).await.unwrap();
    turn.events.send(ReplyEvent::end()).await.unwrap();
    let (_, server) = answer.await.unwrap();
    let metrics = server
        .send(
            Request::get("/metrics")
                .header("host", "x")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(
        metrics.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    let text = String::from_utf8(body_bytes(metrics).await.to_vec()).unwrap();
    assert!(
        text.contains("bridge_turns_total{outcome=\"ok\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("bridge_first_delta_seconds_count 1\n"),
        "{text}"
    );
    assert!(text.contains("bridge_processes 1\n"), "{text}");
}

/// Every refusal before the response head, each over a real socket.
#[tokio::test]
async fn error_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let mut backend = MockAgentBackend::new();
    backend.expect_run_turn().returning(|turn| match turn.text.as_str() {
        "unavailable" => Err(BackendError::Unavailable {
            message: "cannot run `claude`: not found on PATH. Install it with: npm install -g @anthropic-ai/claude-code".into(),
            retry_after: Some(Duration::from_secs(3)),
        }),
        "slow" => Err(BackendError::Timeout("the agent did not start answering within 5m".into())),
        other => panic!("unexpected turn {other}"),
    });
    backend.expect_status().returning(Default::default);
    let config = config_in(dir.path())
        .api_key(Some("key".into()))
        .max_body_bytes(64 * 1024)
        .require_session(true);
    let server = TestServer::start(Arc::new(backend), config).await;
    let authed = || chat_request_builder().header("authorization", "Bearer key");
    let send = |builder: http::request::Builder, body: &str| {
        builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    };
    let ok_body = simple_body("u", "hi", true).to_string();

    // 400s: bad JSON, wrong types, no user text, no session.
    let message = expect_error(
        server.send(send(authed(), "{not json")).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    assert!(message.contains("not valid JSON"), "{message}");
    let wrong =
        json!({"user": "u", "stream": "yes", "messages": [{"role": "user", "content": "x"}]})
            .to_string();
    let message = expect_error(
        server.send(send(authed(), &wrong)).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert!(message.contains("expected a boolean"), "{message}");
    let wrong = json!({"user": "u", "messages": {"role": "user"}}).to_string();
    expect_error(
        server.send(send(authed(), &wrong)).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    let no_user = json!({"user": "u", "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "  "}]});
    expect_error(
        server.send(send(authed(), &no_user.to_string())).await,
        StatusCode::BAD_REQUEST,
        "no_user_message",
    )
    .await;
    let no_session = json!({"messages": [{"role": "user", "content": "hi"}]});
    let message = expect_error(
        server.send(send(authed(), &no_session.to_string())).await,
        StatusCode::BAD_REQUEST,
        "no_session_key",
    )
    .await;
    assert!(message.contains("\"user\" field"), "{message}");
    let long_user = simple_body(&"u".repeat(SessionKey::MAX_LEN + 1), "hi", false);
    expect_error(
        server.send(send(authed(), &long_user.to_string())).await,
        StatusCode::BAD_REQUEST,
        "invalid_session_key",
    )
    .await;

    // 401: no key, wrong key.
    let message = expect_error(
        server.send(send(chat_request_builder(), &ok_body)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    assert!(message.contains("Authorization: Bearer"), "{message}");
    let wrong_key = chat_request_builder().header("authorization", "Bearer nope");
    expect_error(
        server.send(send(wrong_key, &ok_body)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;

    // 403: outside the roots, missing, relative.
    for workspace in [
        outside.path().to_str().unwrap(),
        "/definitely/not/here",
        "relative/path",
    ] {
        let request = authed().header("x-openclaw-workspace", workspace);
        expect_error(
            server.send(send(request, &ok_body)).await,
            StatusCode::FORBIDDEN,
            "workspace_not_allowed",
        )
        .await;
    }
    // A path that spells its way out of the root with `..` is resolved first.
    let sneaky = format!(
        "{}/../{}",
        dir.path().display(),
        outside.path().file_name().unwrap().to_str().unwrap()
    );
    expect_error(
        server
            .send(send(
                authed().header("x-openclaw-workspace", sneaky),
                &ok_body,
            ))
            .await,
        StatusCode::FORBIDDEN,
        "workspace_not_allowed",
    )
    .await;

    // 404, 405.
    let unknown = Request::post("/v1/completions")
        .header("host", "x")
        .body(Full::default())
        .unwrap();
    expect_error(
        server.send(unknown).await,
        StatusCode::NOT_FOUND,
        "unknown_url",
    )
    .await;
    let get = Request::get("/v1/chat/completions")
        .header("host", "x")
        .body(Full::default())
        .unwrap();
    let response = server.send(get).await;
    assert_eq!(response.headers()["allow"], "POST");
    expect_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;

    // 413, declared up front and discovered while reading a chunked body.
    let big = format!(
        "{{\"user\":\"u\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "x".repeat(70 * 1024)
    );
    expect_error(
        server.send(send(authed(), &big)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
    )
    .await;
    let chunked = futures::stream::iter((0..80).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![b' '; 1024])))
    }));
    let request = authed()
        .body(http_body_util::StreamBody::new(chunked))
        .unwrap();
    let response = send_to(server.addr, request).await.unwrap();
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large").await;

    // 503 with Retry-After and a message that says how to fix it; 504 before any output.
    let response = server
        .send(send(
            authed(),
            &simple_body("u", "unavailable", true).to_string(),
        ))
        .await;
    assert_eq!(response.headers()["retry-after"], "3");
    let message = expect_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
    )
    .await;
    assert!(message.contains("npm install"), "{message}");
    expect_error(
        server
            .send(send(authed(), &simple_body("u", "slow", true).to_string()))
            .await,
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
    )
    .await;
}

/// Hands the test each turn's cancellation token, then never finishes starting the turn (an agent that is
/// still booting) until it is cancelled.
struct NeverStarts(tokio::sync::mpsc::UnboundedSender<tokio_util::sync::CancellationToken>);

#[async_trait::async_trait]
impl synthesis_bridge::AgentBackend for NeverStarts {
    async fn run_turn(
        &self,
        turn: synthesis_bridge::Turn,
    ) -> Result<synthesis_bridge::ReplyStream, BackendError> {
        let _ = self.0.send(turn.cancel.clone());
        // Acknowledges cancellation, as the backend contract asks: until then the session stays taken.
        turn.cancel.cancelled().await;
        Err(BackendError::Cancelled)
    }

    async fn shutdown(&self) {}

    fn status(&self) -> synthesis_bridge::BackendStatus {
        Default::default()
    }
}

#[tokio::test]
async fn a_turn_still_starting_is_cancelled_when_the_client_leaves_or_the_bridge_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, mut started) = tokio::sync::mpsc::unbounded_channel();
    let server =
        Arc::new(TestServer::start(Arc::new(NeverStarts(tokens)), config_in(dir.path())).await);

    let client = server.clone();
    let request = tokio::spawn(async move { client.chat(simple_body("i", "x", true)).await });
    let token = started.recv().await.unwrap();
    request.abort();
    tokio::time::timeout(PATIENCE, token.cancelled())
        .await
        .expect("cancelled when the client left");

    let client = server.clone();
    let request = tokio::spawn(async move { client.chat(simple_body("i", "y", true)).await });
    let token = started.recv().await.unwrap();
    server.bridge.begin_shutdown();
    let response = tokio::time::timeout(PATIENCE, request)
        .await
        .unwrap()
        .unwrap();
    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "shutting_down").await;
    tokio::time::timeout(PATIENCE, token.cancelled())
        .await
        .expect("cancelled on shutdown");
}

#[tokio::test]
async fn a_request_naming_no_model_works_even_with_no_configured_models() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let mut config = config_in(dir.path());
    config.models.clear();
    let server = TestServer::start(backend, config).await;
    let body = json!({"stream": true, "user": "j", "messages": [{"role": "user", "content": "x"}]});
    let mut sse = SseReader::new(server.chat(body).await);
    assert_eq!(sse.chunk().await["model"], "");
    let turn = turns.recv().await.unwrap();
    turn.events.send(ReplyEvent::end()).await.unwrap();
    sse.chunk().await;
    assert_eq!(sse.rest().await, ["[DONE]"]);
}

/// A route layer that wants `x-tenant` on every chat turn: what a library user's own authentication looks
/// like.
#[derive(Clone)]
struct RequireTenant<S>(S);

impl<S> tower::Service<Request<synthesis_bridge::http::RequestBody>> for RequireTenant<S>
where
    S: tower::Service<
            Request<synthesis_bridge::http::RequestBody>,
            Response = http::Response<synthesis_bridge::http::ResponseBody>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<synthesis_bridge::http::ResponseBody>;
    type Error = tower::BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, tower::BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), tower::BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<synthesis_bridge::http::RequestBody>) -> Self::Future {
        use futures::FutureExt;
        match request.headers().get("x-tenant").map(|v| v.as_bytes()) {
            None => {
                use http_body_util::BodyExt;
                let body = Full::new(Bytes::from_static(b"tenant required"))
                    .map_err(|never| match never {})
                    .boxed_unsync();
                let mut response = http::Response::new(body);
                *response.status_mut() = StatusCode::FORBIDDEN;
                std::future::ready(Ok(response)).boxed()
            }
            Some(b"broken") => std::future::ready(Err("the tenant service is down".into())).boxed(),
            Some(_) => self
                .0
                .call(request)
                .map(|answered| answered.map_err(Into::into))
                .boxed(),
        }
    }
}

#[tokio::test]
async fn a_route_layer_wraps_chat_turns_and_leaves_the_other_endpoints_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let bridge = synthesis_bridge::http::Bridge::builder(backend, config_in(dir.path()))
        .route_layer(tower::layer::layer_fn(RequireTenant))
        .build();
    let server = TestServer::serve(bridge).await;

    let refused = server.chat(simple_body("alice", "hello", false)).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    for path in ["/health", "/v1/models", "/metrics"] {
        let request = Request::get(path).body(Full::<Bytes>::default()).unwrap();
        assert_eq!(
            server.send(request).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
    // An error out of the layer is answered in OpenAI's shape.
    let request = chat_request_builder()
        .header("x-tenant", "broken")
        .body(Full::new(Bytes::from(
            simple_body("alice", "hi", false).to_string(),
        )))
        .unwrap();
    let message = expect_error(
        server.send(request).await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    )
    .await;
    assert!(message.contains("the tenant service is down"), "{message}");

    let request = chat_request_builder()
        .header("x-tenant", "acme")
        .body(Full::new(Bytes::from(
            simple_body("alice", "hi", false).to_string(),
        )))
        .unwrap();
    let (completion, ()) = tokio::join!(
        async { body_json(server.send(request).await).await },
        async {
            let turn = turns.recv().await.unwrap();
            turn.events
                .send(ReplyEvent::text("hello acme"))
                .await
                .unwrap();
            turn.events.send(ReplyEvent::end()).await.unwrap();
        }
    );
    assert_eq!(completion["choices"][0]["message"]["content"], "hello acme");
}

#[tokio::test]
async fn a_session_rule_of_ones_own_comes_before_the_built_in_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let config = config_in(dir.path()).session_key(|parts, _request| {
        let tenant = parts.headers.get("x-tenant")?.to_str().ok()?;
        SessionKey::new(format!("tenant::{tenant}")).ok()
    });
    let server = TestServer::start(backend, config).await;
    for (tenant, expected) in [(Some("acme"), "tenant::acme"), (None, "alice")] {
        let mut request = chat_request_builder();
        if let Some(tenant) = tenant {
            request = request.header("x-tenant", tenant);
        }
        let body = simple_body("alice", "hi", false).to_string();
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let (completion, ()) = tokio::join!(
            async { body_json(server.send(request).await).await },
            async {
                let turn = turns.recv().await.unwrap();
                assert_eq!(turn.turn.session.as_str(), expected);
                turn.events.send(ReplyEvent::end()).await.unwrap();
            }
        );
        assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    }
}

#[tokio::test]
async fn a_request_that_names_no_session_is_a_one_off_turn_unless_sessions_are_required() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let server = TestServer::start(backend, config_in(dir.path())).await;
    let unnamed = json!({"messages": [{"role": "user", "content": "hi"}]});
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (completion, ()) = tokio::join!(
            async { body_json(server.send(chat_request(unnamed.clone())).await).await },
            async {
                let turn = turns.recv().await.unwrap();
                assert!(turn.turn.meta.one_off);
                keys.push(turn.turn.session.clone());
                turn.events
                    .send(ReplyEvent::text("answered"))
                    .await
                    .unwrap();
                turn.events.send(ReplyEvent::end()).await.unwrap();
            }
        );
        assert_eq!(completion["choices"][0]["message"]["content"], "answered");
    }
    assert_ne!(
        keys[0], keys[1],
        "each one-off turn is a session of its own"
    );
    // A request that names its session is not one-off, even one named like a one-off key.
    let named = simple_body(keys[0].as_str(), "hi", false);
    let ((), ()) = tokio::join!(
        async {
            server.send(chat_request(named)).await;
        },
        async {
            let turn = turns.recv().await.unwrap();
            assert!(!turn.turn.meta.one_off);
            turn.events.send(ReplyEvent::end()).await.unwrap();
        }
    );

    let (backend, _turns) = ScriptedBackend::new();
    let strict = TestServer::start(backend, config_in(dir.path()).require_session(true)).await;
    let message = expect_error(
        strict.send(chat_request(unnamed)).await,
        StatusCode::BAD_REQUEST,
        "no_session_key",
    )
    .await;
    assert!(message.contains("\"user\" field"), "{message}");
}

#[tokio::test]
async fn the_agents_calls_of_the_clients_tools_are_answered_as_openai_tool_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut turns) = ScriptedBackend::new();
    let server = TestServer::start(backend, config_in(dir.path())).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "get_time"}}]);
    let calls = [
        ToolCall::new("call_1", "get_weather", r#"{"city":"Paris"}"#),
        ToolCall::new("call_2", "get_time", "{}"),
    ];
    for stream in [true, false] {
        let body = json!({"user": "tools", "stream": stream, "tools": tools,
                          "messages": [{"role": "user", "content": "what now?"}]});
        let (response, ()) = tokio::join!(server.send(chat_request(body)), async {
            let turn = turns.recv().await.unwrap();
            let offered: Vec<&str> = turn
                .turn
                .meta
                .tools
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            assert_eq!(offered, ["get_weather", "get_time"]);
            assert_eq!(turn.turn.meta.tools[1].parameters["type"], "object");
            turn.events
                .send(ReplyEvent::text("Let me look. "))
                .await
                .unwrap();
            for call in &calls {
                turn.events
                    .send(ReplyEvent::ToolCall(call.clone()))
                    .await
                    .unwrap();
            }
            turn.events
                .send(ReplyEvent::End(FinishReason::ToolCalls))
                .await
                .unwrap();
        });
        if stream {
            let mut sse = SseReader::new(response);
            let mut seen = Vec::new();
            let mut finish = None;
            for data in sse.rest().await.iter().filter(|data| *data != "[DONE]") {
                let chunk: Value = serde_json::from_str(data).unwrap();
                let choice = &chunk["choices"][0];
                for call in choice["delta"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    seen.push(call.clone());
                }
                if !choice["finish_reason"].is_null() {
                    finish = Some(choice["finish_reason"].clone());
                }
            }
            assert_eq!(finish, Some(json!("tool_calls")));
            assert_eq!(
                seen[0],
                json!({"index": 0, "id": "call_1", "type": "function",
                                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}})
            );
            assert_eq!(seen[1]["index"], 1);
            assert_eq!(seen[1]["function"]["name"], "get_time");
        } else {
            let completion = body_json(response).await;
            let choice = &completion["choices"][0];
            assert_eq!(choice["finish_reason"], "tool_calls");
            assert_eq!(choice["message"]["content"], "Let me look. ");
            assert_eq!(
                choice["message"]["tool_calls"][1],
                json!({"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}})
            );
        }
    }

    // The results come back as `role: "tool"` messages: a turn without new user text.
    let body = json!({"user": "tools", "tools": tools, "messages": [
        {"role": "user", "content": "what now?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]});
    let (completion, ()) = tokio::join!(
        async { body_json(server.send(chat_request(body)).await).await },
        async {
            let turn = turns.recv().await.unwrap();
            assert_eq!(turn.turn.text, "what now?");
            assert_eq!(
                turn.turn.meta.tool_results,
                [ToolResult::new("call_1", "sunny")]
            );
            turn.events
                .send(ReplyEvent::text("It is sunny."))
                .await
                .unwrap();
            turn.events.send(ReplyEvent::end()).await.unwrap();
        }
    );
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        "It is sunny."
    );

    // `tool_choice: "none"` offers no tools.
    let body = json!({"user": "tools", "tools": tools, "tool_choice": "none",
                      "messages": [{"role": "user", "content": "no tools please"}]});
    let (_, ()) = tokio::join!(server.send(chat_request(body)), async {
        let turn = turns.recv().await.unwrap();
        assert!(turn.turn.meta.tools.is_empty());
        turn.events.send(ReplyEvent::end()).await.unwrap();
    });
}
