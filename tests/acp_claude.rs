//! The ACP backend with a real agent: the `bridge` binary runs the pinned Claude ACP agent
//! (`@zed-industries/claude-agent-acp`, installed by `scripts/install-claude-agent-acp`) with `--acp-agent`,
//! and the agent drives the pinned `claude` CLI against the project's scripted mock of the Anthropic API
//! on 127.0.0.1.
//!
//! Run it with `scripts/e2e-claude`, which installs both and sets `SYNTHESIS_E2E_CLAUDE` and
//! `SYNTHESIS_E2E_CLAUDE_ACP`.

mod support;

use http::StatusCode;
use serde_json::{Value, json};
use support::bridge_process::BridgeProcess;
use support::real_claude::{
    Mode, TURN_PATIENCE, World, acp_children, claude_acp_agent, history, kill, last_tool_result,
    last_user_message, post_json, post_turn, post_until_the_model_has_it, sse_events, text_deltas,
    turn,
};
use synthesis_mock_anthropic::script;

/// The agent processes of `bridge`.
fn agents(bridge: &BridgeProcess) -> Vec<(u32, Vec<String>)> {
    acp_children(bridge, &claude_acp_agent())
}

#[tokio::test]
#[ignore = "needs the pinned Claude ACP agent and claude CLI: run scripts/e2e-claude"]
async fn acp_streams_every_chunk_reports_usage_keeps_history_and_resumes_after_a_restart() {
    let world = World::new().await;
    let alice = "agent::acp-alice";
    let mut bridge = world.start_bridge_in(Mode::Acp).await;

    // Streaming, with usage asked for: one chunk per model delta (the mock streams one word per delta),
    // then the usage chunk.
    let first = "first question with several words";
    let (status, body) = post_json(
        &bridge,
        json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
               "user": alice, "messages": [{"role": "user", "content": first}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", bridge.stderr());
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
        usage["usage"]["completion_tokens"].as_u64() > Some(0),
        "{usage}"
    );
    // The agent's own session id is kept.
    let session_id = world.claude_session(alice);

    // Not streaming: the whole answer. Same process, and the model sees the first turn.
    let second = "second question";
    assert_eq!(
        turn(&bridge, alice, second, false).await,
        script::reply_text(second)
    );
    assert_eq!(history(&world.api, second), [first, second]);
    assert_eq!(agents(&bridge).len(), 1);

    // A failed model request fails the turn with the agent's words.
    let (status, body) = post_turn(&bridge, alice, "API_ERROR on purpose", false).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");

    // Another session has a process and a conversation of its own.
    let bob = "agent::acp-bob";
    assert_eq!(
        turn(&bridge, bob, "hello from bob", true).await,
        script::reply_text("hello from bob")
    );
    assert_eq!(history(&world.api, "hello from bob"), ["hello from bob"]);
    assert_ne!(world.claude_session(bob), session_id);
    assert_eq!(agents(&bridge).len(), 2);

    // After a restart, alice's ACP session is reopened in a new process: same id, same history.
    bridge.terminate();
    assert!(bridge.wait_exit().await.success(), "{}", bridge.stderr());
    let bridge = world.start_bridge_in(Mode::Acp).await;
    let third = "third question";
    assert_eq!(
        turn(&bridge, alice, third, true).await,
        script::reply_text(third)
    );
    assert_eq!(world.claude_session(alice), session_id);
    let third_history = history(&world.api, third);
    assert_eq!(third_history.first().map(String::as_str), Some(first));
    assert_eq!(third_history.last().map(String::as_str), Some(third));
}

#[tokio::test]
#[ignore = "needs the pinned Claude ACP agent and claude CLI: run scripts/e2e-claude"]
async fn acp_permission_requests_are_answered_by_the_policy() {
    let world = World::new().await;
    let user = "agent::acp-tools";

    // By default nothing the agent asks about is allowed: the call is rejected and the turn goes on.
    let bridge = world.start_bridge_in(Mode::Acp).await;
    let denied = "TOOL touch denied-by-the-bridge.txt";
    assert_eq!(
        turn(&bridge, user, denied, false).await,
        script::reply_text(denied)
    );
    assert!(
        !bridge.workspace().join("denied-by-the-bridge.txt").exists(),
        "a rejected tool did not run"
    );
    let result = last_tool_result(&world.requests_for(denied)[1].body);
    assert_eq!(result["is_error"], true, "{result}");
    let asked = bridge
        .stderr()
        .lines()
        .filter(|line| line.contains("the agent asked for permission"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(
        asked.len() == 1 && asked[0].contains("allowed=false"),
        "the agent asked once and was told no: {asked:?}"
    );
    drop(bridge);

    // With the tool allowed by the agent's own name for it, the call runs.
    let bridge = world
        .start_bridge_with(Mode::Acp, &["--allowed-tool", "Bash"])
        .await;
    let allowed = "TOOL touch allowed-by-the-bridge.txt";
    assert_eq!(
        turn(&bridge, user, allowed, true).await,
        script::reply_text(allowed)
    );
    assert!(
        bridge
            .workspace()
            .join("allowed-by-the-bridge.txt")
            .exists(),
        "the allowed tool ran in the session's workspace"
    );
    let result = last_tool_result(&world.requests_for(allowed)[1].body);
    assert_eq!(result["is_error"], false, "{result}");
}

#[tokio::test]
#[ignore = "needs the pinned Claude ACP agent and claude CLI: run scripts/e2e-claude"]
async fn acp_cancels_with_session_cancel_and_the_next_turn_goes_on_with_the_conversation() {
    let world = World::new().await;
    let bridge = world.start_bridge_in(Mode::Acp).await;
    let user = "agent::acp-cancel";
    assert_eq!(
        turn(&bridge, user, "warm up", true).await,
        script::reply_text("warm up")
    );
    let session_id = world.claude_session(user);
    for round in 0..5 {
        let slow = format!("STALL 20000 cancel me {round}");
        let pending = post_until_the_model_has_it(&world, &bridge, user, &slow).await;
        // The client goes away: the bridge sends session/cancel, and the agent ends the prompt.
        pending.abort();
        // The next turn gets its own answer, not an empty one (which the agent gives the prompt after a
        // cancelled one in the same process), and the conversation goes on.
        let next = format!("after the cancel {round}");
        assert_eq!(
            turn(&bridge, user, &next, round % 2 == 0).await,
            script::reply_text(&next)
        );
        assert_eq!(world.requests_for(&next).len(), 1);
        assert_eq!(
            history(&world.api, &next).first().map(String::as_str),
            Some("warm up")
        );
        assert_eq!(world.claude_session(user), session_id);
    }
    assert_eq!(agents(&bridge).len(), 1);
    assert!(
        !bridge.stderr().contains("did not end the cancelled prompt"),
        "every cancel ended the prompt:\n{}",
        bridge.stderr()
    );
}

#[tokio::test]
#[ignore = "needs the pinned Claude ACP agent and claude CLI: run scripts/e2e-claude"]
async fn acp_fails_a_turn_at_once_when_the_agent_dies_and_the_next_turn_reopens_the_session() {
    let world = World::new().await;
    let bridge = world.start_bridge_in(Mode::Acp).await;
    for round in 0..3 {
        let user = format!("agent::acp-kill-{round}");
        let others: Vec<u32> = agents(&bridge).into_iter().map(|(pid, _)| pid).collect();
        let before = format!("before the kill {round}");
        assert_eq!(
            turn(&bridge, &user, &before, true).await,
            script::reply_text(&before)
        );
        let doomed = format!("STALL 30000 doomed turn {round}");
        let pending = post_until_the_model_has_it(&world, &bridge, &user, &doomed).await;
        assert_eq!(kill(agents(&bridge), &others), 1);
        let (status, body) = tokio::time::timeout(TURN_PATIENCE, pending)
            .await
            .expect("the turn ended at once")
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains("was killed by signal 9 (SIGKILL) in the middle of the turn"),
            "{body}"
        );
        let next = format!("after the kill {round}");
        assert_eq!(
            turn(&bridge, &user, &next, false).await,
            script::reply_text(&next)
        );
        assert_eq!(
            history(&world.api, &next).first().map(String::as_str),
            Some(before.as_str()),
            "the conversation was reopened"
        );
    }
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI and Claude ACP agent: run scripts/e2e-claude"]
async fn acp_gives_the_agent_the_clients_instructions_with_the_first_message_and_a_change() {
    let world = World::new().await;
    let bridge = world.start_bridge_in(Mode::Acp).await;
    let ask = |system: &str, text: &str| {
        json!({"model": "claude", "user": "agent::acp-system", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": text},
        ]})
    };
    let told = |text: &str| last_user_message(&world.request_ending_with(text));
    let note = "in place of any it gave before";
    let rules = "You are the OpenClaw agent. Always answer in haiku.";
    let changed = "You are the OpenClaw agent. Answer in prose.";
    for (system, text) in [
        (rules, "first with rules"),
        (rules, "second with the same rules"),
        (changed, "third with new rules"),
    ] {
        let (status, body) = post_json(&bridge, ask(system, text)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let first = told("first with rules");
    assert!(first.contains(rules) && first.contains(note), "{first}");
    let second = told("second with the same rules");
    assert!(!second.contains(note), "told once: {second}");
    let third = told("third with new rules");
    assert!(third.contains(changed) && third.contains(note), "{third}");
    assert_eq!(agents(&bridge).len(), 1, "no restart for instructions");
}
