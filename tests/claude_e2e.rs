//! The whole chain with the real Claude Code CLI: the `bridge` binary starts the pinned `claude` (installed by
//! `scripts/install-claude`) under a pseudo-terminal, `claude` starts `bridge channel`, and the model is the
//! project's scripted mock of the Anthropic API on 127.0.0.1.
//!
//! Run it with `scripts/e2e-claude`, which installs the CLI and sets `SYNTHESIS_E2E_CLAUDE` to its path.

mod support;

use http::StatusCode;
use serde_json::Value;
use support::client_tools;
use support::real_claude::{
    Mode, TURN_PATIENCE, World, claude_children, kill_claude, post_to, post_turn,
    post_until_the_model_has_it, transcripts, turn, wait_until,
};
use synthesis_mock_anthropic::script;

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn the_real_claude_cli_answers_through_the_channel_and_resumes_after_a_restart() {
    let world = World::new().await;
    let alice = "agent::e2e-alice";

    let mut bridge = world.start_bridge().await;
    // The first turn starts claude, confirms its development-channels dialog, waits for `bridge channel`
    // to connect, and streams the reply the model sent through the reply tool.
    assert_eq!(
        turn(&bridge, alice, "first question", true).await,
        script::reply_text("first question")
    );
    let conversation = world.claude_session(alice);

    // The second turn goes to the same process and conversation: the model sees the first in its history.
    assert_eq!(
        turn(&bridge, alice, "second question", true).await,
        script::reply_text("second question")
    );
    let second = world.requests_for("second question");
    assert!(!second.is_empty(), "the mock never saw the second question");
    let history: Vec<String> = second[0]
        .channel_messages()
        .into_iter()
        .map(|message| message.content)
        .collect();
    assert_eq!(history, ["first question", "second question"]);
    let processes = claude_children(&bridge, &world.claude_bin);
    assert_eq!(processes.len(), 1, "{processes:?}");

    // An answer without the reply tool comes back through the Stop hook.
    assert_eq!(
        turn(&bridge, alice, "PLAIN no tool this time", false).await,
        script::plain_text("PLAIN no tool this time")
    );

    // A request to the model that fails (HTTP 400, which the CLI does not retry) fails the turn at once,
    // through the StopFailure hook, with the API's message; the session carries on.
    let (status, body) = post_turn(&bridge, alice, "API_ERROR on purpose", false).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("scripted failure for: API_ERROR on purpose"),
        "{error}"
    );

    // A second session runs in a process and conversation of its own.
    let bob = "agent::e2e-bob";
    assert_eq!(
        turn(&bridge, bob, "hello from bob", false).await,
        script::reply_text("hello from bob")
    );
    let bobs = world.requests_for("hello from bob");
    assert_eq!(
        bobs[0].channel_messages().len(),
        1,
        "bob's conversation holds only bob's message"
    );
    assert_ne!(world.claude_session(bob), conversation);
    let processes = claude_children(&bridge, &world.claude_bin);
    assert_eq!(processes.len(), 2, "{processes:?}");

    // After a restart, alice's next turn resumes her conversation in a new process.
    bridge.terminate();
    assert!(bridge.wait_exit().await.success(), "{}", bridge.stderr());
    let bridge = world.start_bridge().await;
    assert_eq!(
        turn(&bridge, alice, "third question", true).await,
        script::reply_text("third question")
    );
    assert_eq!(world.claude_session(alice), conversation);
    let third = world.requests_for("third question");
    let history: Vec<String> = third[0]
        .channel_messages()
        .into_iter()
        .map(|message| message.content)
        .collect();
    assert_eq!(
        history,
        [
            "first question",
            "second question",
            "PLAIN no tool this time",
            "API_ERROR on purpose",
            "third question"
        ]
    );
    let processes = claude_children(&bridge, &world.claude_bin);
    assert_eq!(processes.len(), 1, "{processes:?}");
    let args = &processes[0].1;
    assert!(
        args.windows(2)
            .any(|pair| pair[0] == "--resume" && pair[1] == conversation),
        "{args:?}"
    );
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn the_channel_hands_the_clients_tool_calls_to_the_client_and_goes_on_with_their_results() {
    let world = World::new().await;
    let bridge = world.start_bridge().await;
    client_tools::round_trips(&world, &bridge, "agent::e2e-client-tools").await;
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn the_channel_gives_a_tool_call_without_a_result_an_error_after_the_timeout() {
    let world = World::new().await;
    let bridge = world
        .start_bridge_with(Mode::Channel, &["--tool-result-timeout", "1s"])
        .await;
    client_tools::times_out(&world, &bridge, "agent::e2e-tool-timeout").await;
}

/// What the model answers `text` with, as the client sees it.
fn expected_answer(text: &str) -> String {
    if text.starts_with("PLAIN") {
        return script::plain_text(text);
    }
    match text.strip_prefix("PARTS ") {
        Some(words) => words
            .split_whitespace()
            .map(|word| format!("{word} "))
            .collect(),
        None => script::reply_text(text),
    }
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn two_hundred_turns_sent_back_to_back_are_all_answered() {
    let world = World::new().await;
    let bridge = world.start_bridge().await;
    let user = "agent::e2e-back-to-back";
    // Each turn is sent the moment the previous answer's [DONE] arrives. Some answers go on after the
    // reply (a slow closing text), use a built-in tool first, come in parts, or come without the tool:
    // the next message must neither be lost nor folded into the running prompt.
    let mut text = String::new();
    for n in 0..200 {
        text = match n % 10 {
            3 => format!("SLOWCLOSE 400 turn {n}"),
            5 => format!("TOOL echo turn {n}"),
            7 => format!("PARTS turn {n} in parts"),
            9 => format!("PLAIN turn {n}"),
            _ => format!("turn {n}"),
        };
        assert_eq!(
            turn(&bridge, user, &text, n % 2 == 0).await,
            expected_answer(&text),
            "turn {n}"
        );
    }
    // One prompt per message: none was lost, none merged with another.
    let last = world.requests_for(&text);
    let history: Vec<String> = last[0]
        .channel_messages()
        .into_iter()
        .map(|message| message.content)
        .collect();
    assert_eq!(history.len(), 200, "{history:?}");
    assert_eq!(claude_children(&bridge, &world.claude_bin).len(), 1);
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn claude_killed_during_a_first_turn_is_followed_by_a_good_next_turn() {
    let world = World::new().await;
    let bridge = world.start_bridge().await;
    // Where the kill lands: before claude wrote a transcript, as soon as the transcript appears (often
    // inside the window where it holds metadata only), and in the middle of the model's answer.
    for point in ["before-transcript", "transcript-appears", "mid-answer"] {
        let user = format!("agent::e2e-kill-{point}");
        let first = format!("STALL 30000 first turn {point}");
        let before = transcripts(&world).len();
        let others: Vec<u32> = claude_children(&bridge, &world.claude_bin)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        let pending = {
            let (user, first) = (user.clone(), first.clone());
            let addr = bridge.addr();
            tokio::spawn(async move {
                tokio::time::timeout(TURN_PATIENCE, post_to(addr, &user, &first, true))
                    .await
                    .expect("the killed turn ends")
            })
        };
        match point {
            "before-transcript" => {
                wait_until("a claude process", || {
                    claude_children(&bridge, &world.claude_bin).len() > others.len()
                })
                .await;
            }
            "transcript-appears" => {
                wait_until("a new transcript", || transcripts(&world).len() > before).await;
            }
            _ => {
                wait_until("the model's request", || {
                    !world.requests_for(&first).is_empty()
                })
                .await
            }
        }
        assert_eq!(
            kill_claude(&bridge, &world.claude_bin, &others),
            1,
            "{point}"
        );
        let (status, body) = pending.await.unwrap();
        assert!(
            status != StatusCode::OK || body.contains("\"error\""),
            "{point}: the killed turn must fail: {body}"
        );
        // The cause, and what claude last showed without the terminal's drawing.
        assert!(
            body.contains("was killed by signal 9 (SIGKILL)"),
            "{point}: {body}"
        );
        // The session goes on: resumed when the conversation was written, started again when not.
        let next = format!("after the kill {point}");
        assert_eq!(
            turn(&bridge, &user, &next, true).await,
            script::reply_text(&next),
            "{point}"
        );
        let again = format!("and once more {point}");
        assert_eq!(
            turn(&bridge, &user, &again, false).await,
            script::reply_text(&again),
            "{point}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn a_cancelled_turn_is_followed_by_a_clean_next_turn() {
    let world = World::new().await;
    let bridge = world.start_bridge().await;
    let user = "agent::e2e-cancel";
    assert_eq!(
        turn(&bridge, user, "warm up", true).await,
        script::reply_text("warm up")
    );
    for round in 0..3 {
        let slow = format!("STALL 20000 cancel me {round}");
        let pending = post_until_the_model_has_it(&world, &bridge, user, &slow).await;
        // The client goes away: the bridge interrupts claude (ESC) before the next turn.
        pending.abort();
        let next = format!("after the cancel {round}");
        assert_eq!(
            turn(&bridge, user, &next, true).await,
            script::reply_text(&next)
        );
    }
    assert_eq!(
        claude_children(&bridge, &world.claude_bin).len(),
        1,
        "no restart"
    );
}

/// Whether a transcript holds `text` as a prompt.
fn transcript_holds(world: &World, text: &str) -> bool {
    transcripts(world).iter().any(|path| {
        std::fs::read_to_string(path).is_ok_and(|records| {
            records
                .lines()
                .any(|line| line.contains("\"type\":\"user\"") && line.contains(text))
        })
    })
}

#[tokio::test]
#[ignore = "needs the pinned claude CLI: run scripts/e2e-claude"]
async fn a_retry_after_claude_died_mid_answer_puts_the_question_into_the_conversation_once() {
    let world = World::new().await;
    let bridge = world.start_bridge().await;
    // Killed once the question is written to the conversation, and (most often) before it is: either
    // way the retry is answered and the conversation holds the question once.
    for written in [true, false] {
        let user = format!("agent::e2e-retry-{written}");
        let user = user.as_str();
        assert_eq!(
            turn(&bridge, user, "warm up", true).await,
            script::reply_text("warm up")
        );
        let question = format!("STALL 30000 run the migration ({written})");
        let pending = {
            let (addr, user, question) = (bridge.addr(), user.to_owned(), question.clone());
            tokio::spawn(async move {
                tokio::time::timeout(TURN_PATIENCE, post_to(addr, &user, &question, true))
                    .await
                    .expect("the killed turn ends")
            })
        };
        wait_until("the model's request", || {
            !world.requests_for(&question).is_empty()
        })
        .await;
        if written {
            wait_until("the question in the transcript", || {
                transcript_holds(&world, &question)
            })
            .await;
        }
        assert_eq!(kill_claude(&bridge, &world.claude_bin, &[]), 1);
        let (status, body) = pending.await.unwrap();
        assert!(
            status != StatusCode::OK || body.contains("\"error\""),
            "{body}"
        );
        let was_written = transcript_holds(&world, &question);
        assert!(!written || was_written);

        // The client retries with the same message.
        assert_eq!(
            turn(&bridge, user, &question, true).await,
            script::reply_text(&question),
            "written: {written}"
        );
        let last = world.api.requests().pop().unwrap();
        let history = last.channel_messages();
        let asked: Vec<_> = history.iter().filter(|m| m.content == question).collect();
        assert_eq!(asked.len(), 1, "written: {written}: {history:?}");
        let newest = history.last().unwrap();
        // Where the kill landed decides: claude writes the prompt down 0.2 to 0.5 s after it started it.
        if was_written {
            // A note that carries on with the question the conversation has.
            assert_eq!(
                newest.attribute("retry_of"),
                asked[0].attribute("message_id")
            );
        } else {
            assert_eq!(
                newest.content, question,
                "the question, asked where it was lost"
            );
        }
        kill_claude(&bridge, &world.claude_bin, &[]);
    }
}
