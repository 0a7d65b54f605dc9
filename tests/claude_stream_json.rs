//! The stream-json mode with the real Claude Code CLI: the `bridge` binary runs the pinned `claude -p`
//! (installed by `scripts/install-claude`) on pipes, speaking stream-json, against the project's scripted
//! mock of the Anthropic API on 127.0.0.1. The CLI's config does not turn the channels feature on: this
//! mode must work for every login.
//!
//! Run it with `scripts/e2e-claude`, which installs the CLI and sets `SYNTHESIS_E2E_CLAUDE` to its path.

mod support;

use http::StatusCode;
use serde_json::{Value, json};
use support::client_tools::{self, weather_tool};
use support::real_claude::{
    Mode, TURN_PATIENCE, World, claude_children, history, kill_claude, last_tool_result,
    last_user_message, post_json, post_to, post_turn, post_until_the_model_has_it, sse_events,
    text_deltas, transcripts, turn, wait_until,
};
use synthesis_mock_anthropic::script;

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn stream_json_streams_every_delta_reports_usage_keeps_history_and_resumes_after_a_restart() {
    let world = World::new().await;
    let alice = "agent::sj-alice";
    let mut bridge = world.start_bridge_in(Mode::StreamJson).await;

    // Streaming, with usage asked for: one chunk per model delta (the mock streams one word per delta),
    // then the usage chunk.
    let first = "first question with several words";
    let (status, body) = post_json(
        &bridge,
        json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
               "user": alice, "messages": [{"role": "user", "content": first}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deltas = text_deltas(&body);
    let expected = script::reply_text(first);
    assert_eq!(deltas.concat(), expected);
    assert_eq!(
        deltas.len(),
        script::text_deltas(&expected).len(),
        "every model delta is relayed on its own: {deltas:?}"
    );
    let events = sse_events(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]), "{usage}");
    assert!(
        usage["usage"]["prompt_tokens"].as_u64() > Some(0),
        "{usage}"
    );
    assert!(
        usage["usage"]["completion_tokens"].as_u64() > Some(0),
        "{usage}"
    );
    let conversation = world.claude_session(alice);

    // Not streaming: the whole answer and its usage. Same process, and the model sees the first turn.
    let second = "second question";
    let (status, body) = post_json(
        &bridge,
        json!({"model": "claude", "user": alice, "messages": [{"role": "user", "content": second}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let completion: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        script::reply_text(second)
    );
    assert!(
        completion["usage"]["total_tokens"].as_u64() > Some(0),
        "{completion}"
    );
    assert_eq!(history(&world.api, second), [first, second]);
    let processes = claude_children(&bridge, &world.claude_bin);
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert!(
        processes[0].1.iter().any(|arg| arg == "stream-json"),
        "{processes:?}"
    );

    // A failed model request (HTTP 400, which the CLI does not retry) fails the turn with its message.
    let (status, body) = post_turn(&bridge, alice, "API_ERROR on purpose", false).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body.contains("scripted failure for: API_ERROR on purpose"),
        "{body}"
    );

    // Another session has a process and a conversation of its own.
    let bob = "agent::sj-bob";
    assert_eq!(
        turn(&bridge, bob, "hello from bob", false).await,
        script::reply_text("hello from bob")
    );
    assert_eq!(history(&world.api, "hello from bob"), ["hello from bob"]);
    assert_ne!(world.claude_session(bob), conversation);

    // After a restart, alice's conversation is resumed in a new process.
    bridge.terminate();
    assert!(bridge.wait_exit().await.success(), "{}", bridge.stderr());
    let bridge = world.start_bridge_in(Mode::StreamJson).await;
    let third = "third question";
    assert_eq!(
        turn(&bridge, alice, third, true).await,
        script::reply_text(third)
    );
    assert_eq!(world.claude_session(alice), conversation);
    let third_history = history(&world.api, third);
    assert_eq!(third_history.first().map(String::as_str), Some(first));
    assert_eq!(third_history.last().map(String::as_str), Some(third));
    let processes = claude_children(&bridge, &world.claude_bin);
    assert!(
        processes[0]
            .1
            .windows(2)
            .any(|pair| pair[0] == "--resume" && pair[1] == conversation),
        "{processes:?}"
    );
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn stream_json_runs_tools_and_denies_what_the_permission_policy_did_not_allow() {
    let world = World::new().await;
    // `default` asks before a tool that changes anything: the bridge answers over stdio, by the policy.
    let bridge = world
        .start_bridge_with(Mode::StreamJson, &["--permission-mode", "default"])
        .await;
    let user = "agent::sj-tools";

    // A read-only command needs no permission: it runs, and the model gets its output.
    let echo = "TOOL echo hi-from-bash";
    assert_eq!(
        turn(&bridge, user, echo, true).await,
        script::reply_text(echo)
    );
    let requests = world.requests_for(echo);
    assert_eq!(requests.len(), 2, "the tool call, then the reply");
    let result = last_tool_result(&requests[1].body);
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(
        script::content_blocks(&result["content"])[0]["text"],
        "hi-from-bash",
        "the tool's output reached the model: {result}"
    );

    // One that writes a file is asked about; it is not allowed, so it is denied at once and the turn
    // goes on without it.
    let touch = "TOOL touch made-by-claude.txt";
    assert_eq!(
        turn(&bridge, user, touch, false).await,
        script::reply_text(touch)
    );
    assert!(
        !bridge.workspace().join("made-by-claude.txt").exists(),
        "a denied tool did not run"
    );
    let after_denial = world.requests_for(touch);
    let result = last_tool_result(&after_denial[1].body);
    assert_eq!(result["is_error"], true, "{result}");
    assert!(
        result.to_string().contains("does not allow this Bash call"),
        "{result}"
    );
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn stream_json_answers_a_request_that_names_no_session_and_keeps_nothing() {
    let world = World::new().await;
    let bridge = world.start_bridge_in(Mode::StreamJson).await;
    let text = "a background question";
    let (status, body) = post_json(
        &bridge,
        json!({"model": "claude", "messages": [{"role": "user", "content": text}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let completion: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        script::reply_text(text)
    );
    // Its claude stopped after the turn, wrote no transcript, and the bridge kept no record.
    wait_until("the one-off claude to stop", || {
        claude_children(&bridge, &world.claude_bin).is_empty()
    })
    .await;
    assert_eq!(transcripts(&world), Vec::<std::path::PathBuf>::new());
    let state = world.state_dir();
    for file in ["sessions.json", "sessions.journal"] {
        let kept = std::fs::read_to_string(state.join(file)).unwrap_or_default();
        assert!(!kept.contains("one-off"), "{file}: {kept}");
    }
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn stream_json_cancels_by_interrupt_and_the_next_turn_is_clean() {
    let world = World::new().await;
    let bridge = world.start_bridge_in(Mode::StreamJson).await;
    let user = "agent::sj-cancel";
    assert_eq!(
        turn(&bridge, user, "warm up", true).await,
        script::reply_text("warm up")
    );
    let pid = claude_children(&bridge, &world.claude_bin)[0].0;
    for round in 0..5 {
        let slow = format!("STALL 20000 cancel me {round}");
        let pending = post_until_the_model_has_it(&world, &bridge, user, &slow).await;
        // The client goes away: the bridge interrupts the prompt over stdin.
        pending.abort();
        let next = format!("after the cancel {round}");
        assert_eq!(
            turn(&bridge, user, &next, round % 2 == 0).await,
            script::reply_text(&next)
        );
        // The next prompt is the next message alone: the interrupted one is not answered again.
        assert_eq!(world.requests_for(&next).len(), 1);
    }
    let processes = claude_children(&bridge, &world.claude_bin);
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(processes[0].0, pid, "the same process throughout");
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn stream_json_fails_a_turn_at_once_when_claude_dies_and_the_next_turn_resumes() {
    let world = World::new().await;
    let bridge = world.start_bridge_in(Mode::StreamJson).await;
    // Killed during the first turn of a session (no transcript yet), and during a later one.
    for (user, warm_up) in [
        ("agent::sj-kill-first", None),
        ("agent::sj-kill-later", Some("before")),
    ] {
        // Other sessions' processes are spared.
        let others: Vec<u32> = claude_children(&bridge, &world.claude_bin)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        if let Some(text) = warm_up {
            assert_eq!(
                turn(&bridge, user, text, true).await,
                script::reply_text(text)
            );
        }
        let doomed = format!("STALL 30000 doomed turn of {user}");
        let pending = post_until_the_model_has_it(&world, &bridge, user, &doomed).await;
        assert_eq!(kill_claude(&bridge, &world.claude_bin, &others), 1);
        let (status, body) = tokio::time::timeout(TURN_PATIENCE, pending)
            .await
            .expect("the turn ended at once")
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains("claude was killed by signal 9 (SIGKILL) in the middle of the turn"),
            "{body}"
        );
        let next = format!("after the kill of {user}");
        assert_eq!(
            turn(&bridge, user, &next, false).await,
            script::reply_text(&next)
        );
        if let Some(text) = warm_up {
            assert_eq!(
                history(&world.api, &next).first().map(String::as_str),
                Some(text),
                "the conversation was resumed"
            );
        }
    }
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn stream_json_a_retry_after_claude_died_mid_answer_asks_the_question_once() {
    let world = World::new().await;
    let bridge = world.start_bridge_in(Mode::StreamJson).await;
    let user = "agent::sj-retry";
    assert_eq!(
        turn(&bridge, user, "before", true).await,
        script::reply_text("before")
    );
    let doomed = "STALL 30000 the doomed question";
    let pending = {
        let addr = bridge.addr();
        tokio::spawn(async move { post_to(addr, user, doomed, true).await })
    };
    // Killed once Claude Code has written the question down (about 0.2 s after it took it, N5).
    wait_until("the question in the transcript", || {
        transcripts(&world).iter().any(|path| {
            std::fs::read_to_string(path).is_ok_and(|text| {
                text.lines()
                    .any(|line| line.contains("\"type\":\"user\"") && line.contains(doomed))
            })
        })
    })
    .await;
    assert_eq!(kill_claude(&bridge, &world.claude_bin, &[]), 1);
    let (_, body) = tokio::time::timeout(TURN_PATIENCE, pending)
        .await
        .expect("the turn ended at once")
        .unwrap();
    assert!(body.contains("killed by signal 9"), "{body}");

    // The client asks again: Claude carries on with the question its conversation holds.
    let answer = turn(&bridge, user, doomed, false).await;
    assert!(
        answer.starts_with("reply to: The person's connection broke"),
        "{answer}"
    );
    let retried = world
        .api
        .requests()
        .into_iter()
        .rfind(|request| {
            request
                .prompt()
                .is_some_and(|prompt| prompt.content.contains("connection broke"))
        })
        .expect("the model saw the note");
    let asked: Vec<String> = retried
        .prompts()
        .into_iter()
        .map(|prompt| prompt.content)
        .filter(|prompt| prompt == doomed)
        .collect();
    assert_eq!(asked.len(), 1, "the question is in the conversation once");
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn stream_json_hands_the_clients_tool_calls_to_the_client_and_goes_on_with_their_results() {
    let world = World::new().await;
    let bridge = world.start_bridge_in(Mode::StreamJson).await;
    client_tools::round_trips(&world, &bridge, "agent::sj-client-tools").await;
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn stream_json_gives_a_tool_call_without_a_result_an_error_after_the_timeout() {
    let world = World::new().await;
    let bridge = world
        .start_bridge_with(Mode::StreamJson, &["--tool-result-timeout", "1s"])
        .await;
    client_tools::times_out(&world, &bridge, "agent::sj-tool-timeout").await;
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn stream_json_tool_round_trip_with_async_openai() {
    use async_openai::types::chat::{ChatCompletionMessageToolCalls, CreateChatCompletionRequest};

    let world = World::new().await;
    let bridge = world.start_bridge_in(Mode::StreamJson).await;
    let client = async_openai::Client::with_config(
        async_openai::config::OpenAIConfig::new()
            .with_api_base(format!("http://{}/v1", bridge.addr()))
            .with_api_key("unused"),
    );
    let prompt = r#"CALL get_weather {"city":"Lima"}"#;
    let mut messages = vec![json!({"role": "user", "content": prompt})];
    let request = |messages: &[Value]| -> CreateChatCompletionRequest {
        serde_json::from_value(
            json!({"model": "claude", "user": "rust-tools", "messages": messages,
                                      "tools": [weather_tool()]}),
        )
        .unwrap()
    };
    let response = client.chat().create(request(&messages)).await.unwrap();
    let choice = &response.choices[0];
    assert_eq!(
        choice.finish_reason,
        Some(async_openai::types::chat::FinishReason::ToolCalls)
    );
    let calls = choice.message.tool_calls.clone().unwrap();
    let ChatCompletionMessageToolCalls::Function(call) = &calls[0] else {
        panic!("a function call: {calls:?}");
    };
    assert_eq!(call.function.name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&call.function.arguments).unwrap(),
        json!({"city": "Lima"})
    );
    messages.push(json!({"role": "assistant", "tool_calls": calls}));
    messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": "foggy in Lima"}));
    let response = client.chat().create(request(&messages)).await.unwrap();
    assert_eq!(
        response.choices[0].message.content.as_deref(),
        Some(script::reply_with_results(prompt, &["foggy in Lima".into()]).as_str())
    );
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn stream_json_gives_claude_the_clients_instructions_and_a_change_of_them_with_the_message() {
    let world = World::new().await;
    let bridge = world.start_bridge_in(Mode::StreamJson).await;
    let user = "agent::sj-system";
    let ask = |system: &str, text: &str| {
        json!({"model": "claude", "user": user, "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": text},
        ]})
    };
    let rules = "You are the OpenClaw agent. Always answer in haiku.";
    for (n, text) in ["first with rules", "second with rules"].iter().enumerate() {
        let (status, body) = post_json(&bridge, ask(rules, text)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // On top of Claude Code's own system prompt.
        let system = world.request_ending_with(text)["system"].to_string();
        assert!(system.contains(rules), "turn {n}: {system}");
        assert!(system.contains("Claude"), "turn {n}: {system}");
    }
    let pid = claude_children(&bridge, &world.claude_bin)[0].0;
    // New instructions: the conversation keeps the system prompt it began with, so they come with the
    // message, once; the process stays.
    let changed = "You are the OpenClaw agent. Answer in prose.";
    let text = "third with new rules";
    let (status, body) = post_json(&bridge, ask(changed, text)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let told = last_user_message(&world.request_ending_with(text));
    assert!(
        told.contains(changed) && told.contains("in place of any it gave before"),
        "{told}"
    );
    let text = "fourth with the same new rules";
    let (status, body) = post_json(&bridge, ask(changed, text)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let told = last_user_message(&world.request_ending_with(text));
    assert!(
        !told.contains("in place of any it gave before"),
        "told once: {told}"
    );
    let processes = claude_children(&bridge, &world.claude_bin);
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(processes[0].0, pid, "no restart for new instructions");
}
