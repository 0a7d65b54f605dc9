//! Conformance with a real OpenAI client library: `async-openai`, unmodified, against the real `bridge`
//! binary with `fake_claude` as its agent (real processes, real WebSocket, real HTTP). The same checks run
//! with the official Python and Node packages in `scripts/conformance`.

mod support;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs, FinishReason, Role,
};
use futures::StreamExt;
use support::bridge_process::BridgeProcess;

const KEY: &str = "sk-conformance";

async fn bridge() -> BridgeProcess {
    bridge_with(&[]).await
}

async fn bridge_with(extra: &[&str]) -> BridgeProcess {
    let mut bridge = BridgeProcess::spawn(|command, workspace| {
        command
            .args(extra)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--api-key",
                KEY,
                "--workspace-root",
            ])
            .arg(workspace)
            .arg("--claude-bin")
            .arg(support::examples::binary("fake_claude"))
            .env("CLAUDE_CONFIG_DIR", workspace.with_file_name("claude"));
    });
    bridge.wait_ready().await;
    bridge
}

fn client(bridge: &BridgeProcess, key: &str) -> Client<OpenAIConfig> {
    let config = OpenAIConfig::new()
        .with_api_base(format!("http://{}/v1", bridge.addr()))
        .with_api_key(key);
    Client::with_config(config)
}

/// A one-message request for session `user` (`None`: a request that names no session).
fn ask(user: Option<&str>, text: &str) -> CreateChatCompletionRequest {
    let message = ChatCompletionRequestUserMessageArgs::default()
        .content(text)
        .build()
        .unwrap();
    let mut request = CreateChatCompletionRequestArgs::default();
    request.model("claude").messages([message.into()]);
    if let Some(user) = user {
        #[allow(deprecated)] // still how OpenAI-compatible servers are told the end user
        request.user(user);
    }
    request.build().unwrap()
}

/// The status and message of an API error, or a panic naming what came instead.
fn api_error(error: OpenAIError) -> (u16, String) {
    match error {
        OpenAIError::ApiError(response) => (
            response.status_code.as_u16(),
            response.api_error.message.clone(),
        ),
        other => panic!("expected an API error with a status, got {other:?}"),
    }
}

#[tokio::test]
async fn a_completion_is_the_agents_answer() {
    let bridge = bridge().await;
    let response = client(&bridge, KEY)
        .chat()
        .create(ask(Some("rust-sdk"), "hello from async-openai"))
        .await
        .unwrap();
    let choice = &response.choices[0];
    assert_eq!(choice.message.role, Role::Assistant);
    assert_eq!(
        choice.message.content.as_deref(),
        Some("echo: hello from async-openai")
    );
    assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
    assert_eq!(response.model, "claude");
}

#[tokio::test]
async fn a_streamed_completion_arrives_in_pieces_and_ends_with_stop() {
    let bridge = bridge().await;
    let mut stream = client(&bridge, KEY)
        .chat()
        .create_stream(ask(Some("rust-sdk"), "stream one two three"))
        .await
        .unwrap();
    let (mut text, mut pieces, mut finish) = (String::new(), 0, None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        let choice = &chunk.choices[0];
        if let Some(content) = choice.delta.content.as_deref().filter(|c| !c.is_empty()) {
            text.push_str(content);
            pieces += 1;
        }
        finish = finish.or(choice.finish_reason);
    }
    assert_eq!(text, "one two three");
    assert_eq!(pieces, 3, "each word the agent sent is its own delta");
    assert_eq!(finish, Some(FinishReason::Stop));
}

#[tokio::test]
async fn a_request_that_names_no_session_is_a_one_off_turn() {
    let bridge = bridge().await;
    for n in 0..2 {
        let text = format!("hello without a session {n}");
        let response = client(&bridge, KEY)
            .chat()
            .create(ask(None, &text))
            .await
            .unwrap();
        assert_eq!(
            response.choices[0].message.content.as_deref(),
            Some(format!("echo: {text}").as_str())
        );
    }
    // Each had a process of its own, stopped once its turn was over, and nothing was kept.
    let fake_claude = support::examples::binary("fake_claude");
    support::real_claude::wait_until("the one-off processes to stop", || {
        support::real_claude::children(&bridge, |args| {
            args.first()
                .is_some_and(|program| std::path::Path::new(program) == fake_claude)
        })
        .is_empty()
    })
    .await;
    let state = bridge.workspace().with_file_name("state");
    for file in ["sessions.json", "sessions.journal"] {
        let kept = std::fs::read_to_string(state.join(file)).unwrap_or_default();
        assert!(!kept.contains("one-off"), "{file}: {kept}");
    }
}

#[tokio::test]
async fn refusals_are_status_errors_carrying_the_bridges_message() {
    let bridge = bridge_with(&["--require-session"]).await;

    let no_session = client(&bridge, KEY)
        .chat()
        .create(ask(None, "hello"))
        .await
        .unwrap_err();
    let (status, message) = api_error(no_session);
    assert_eq!(status, 400);
    assert!(message.contains("cannot tell which session"), "{message}");

    let wrong_key = client(&bridge, "sk-wrong")
        .chat()
        .create_stream(ask(Some("rust-sdk"), "hello"))
        .await
        .err()
        .expect("a stream refused before it starts");
    let (status, message) = api_error(wrong_key);
    assert_eq!(status, 401);
    assert!(message.contains("API key"), "{message}");
}

#[tokio::test]
async fn an_agent_failure_is_a_502_carrying_the_agents_message() {
    // async-openai retries a 5xx (3 times by default): with the retry window on, the bridge would have
    // the agent carry on with the failed message (the next test), so it is off here.
    let bridge = bridge_with(&["--retry-window", "off"]).await;
    let failed = client(&bridge, KEY)
        .chat()
        .create(ask(Some("rust-sdk"), "error the workspace is on fire"))
        .await
        .unwrap_err();
    let (status, message) = api_error(failed);
    assert_eq!(status, 502);
    assert!(message.contains("the workspace is on fire"), "{message}");
}

#[tokio::test]
async fn the_clients_own_retry_of_a_failure_has_the_agent_carry_on_with_the_message() {
    let bridge = bridge().await;
    // The agent dies on the message (502); async-openai's default retry sends it again, and the resumed
    // agent is told to carry on with the message it has rather than being asked it twice.
    let answer = client(&bridge, KEY)
        .chat()
        .create(ask(Some("rust-sdk"), "crash"))
        .await
        .expect("the retry is answered");
    assert_eq!(
        answer.choices[0].message.content.as_deref(),
        Some("continued: crash")
    );
}
