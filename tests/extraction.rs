//! User text, session key, conversation and workspace, extracted from real OpenClaw-shaped requests and
//! from the seed's header convention.

mod support;

use http::HeaderMap;
use serde_json::json;
use support::openclaw::{self, SESSION, SESSION_ID};
use synthesis_bridge::SessionKey;
use synthesis_bridge::openai::extract::{ExtractError, KeySource, extract};
use synthesis_bridge::openai::{ChatRequest, ExtractedTurn};

fn run(
    body: &serde_json::Value,
    headers: &[(&str, &str)],
    fallback: Option<&str>,
) -> Result<ExtractedTurn, ExtractError> {
    let text = body.to_string();
    let request: ChatRequest<'_> = serde_json::from_str(&text).unwrap();
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let fallback = fallback.map(|f| SessionKey::new(f).unwrap());
    extract(&request, &map, fallback.as_ref())
}

#[test]
fn first_turn_of_an_openclaw_conversation() {
    let body = openclaw::body(&["fix the failing test"], SESSION_ID, "/srv/repo", 20_000);
    let turn = run(&body, &[], None).unwrap();
    // The runtime line is gone, the timestamp stays, the internal-context block is not the user's text.
    assert_eq!(turn.text, "[Sat 2026-11-21 05:10 UTC] fix the failing test");
    assert_eq!(turn.session.as_str(), SESSION);
    assert_eq!(turn.key_source, KeySource::RuntimeLine);
    assert_eq!(turn.conversation.as_deref(), Some(SESSION_ID));
    assert_eq!(
        turn.workspace.as_deref(),
        Some(std::path::Path::new("/srv/repo"))
    );
}

#[test]
fn later_turns_take_the_newest_user_text_and_the_runtime_line_of_the_first() {
    let body = openclaw::body(
        &["first", "second", "third: what now?"],
        SESSION_ID,
        "/srv/repo",
        49_000,
    );
    let turn = run(&body, &[], None).unwrap();
    assert_eq!(turn.text, "[Sat 2026-11-21 05:12 UTC] third: what now?");
    assert_eq!(turn.session.as_str(), SESSION);
    assert_eq!(turn.conversation.as_deref(), Some(SESSION_ID));
}

#[test]
fn a_new_conversation_in_the_same_session_has_a_new_conversation_id() {
    let before = run(
        &openclaw::body(&["a", "b"], SESSION_ID, "/r", 100),
        &[],
        None,
    )
    .unwrap();
    let after = run(
        &openclaw::body(&["/new started"], "9f0e1d2c", "/r", 100),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(before.session, after.session);
    assert_ne!(before.conversation, after.conversation);
}

#[test]
fn the_seed_header_convention_wins() {
    let body = openclaw::body(&["hi"], SESSION_ID, "/r", 100);
    let headers = [
        ("x-openclaw-agent-id", "coder"),
        ("x-openclaw-chat-id", "chat-7"),
        ("x-openclaw-workspace", "/w/coder"),
    ];
    let turn = run(&body, &headers, None).unwrap();
    assert_eq!(turn.session.as_str(), "coder::chat-7");
    assert_eq!(turn.key_source, KeySource::OpenClawHeaders);
    assert_eq!(
        turn.workspace.as_deref(),
        Some(std::path::Path::new("/w/coder"))
    );
    // The agent id alone is a key too, as in the seed.
    let turn = run(&body, &[("x-openclaw-agent-id", "coder")], None).unwrap();
    assert_eq!(turn.session.as_str(), "coder");
}

#[test]
fn the_two_parts_of_a_header_key_cannot_be_confused() {
    let body = openclaw::body(&["hi"], SESSION_ID, "/r", 100);
    let key = |agent, chat| {
        let headers = [("x-openclaw-agent-id", agent), ("x-openclaw-chat-id", chat)];
        run(&body, &headers, None).unwrap().session
    };
    assert_ne!(key("a::b", "c"), key("a", "b::c"));
    assert_ne!(key("a:", ":c"), key("a", "::c"));
    assert_eq!(key("a::b", "c").as_str(), "a%3A%3Ab::c");
    assert_eq!(
        key("a%3A", "c").as_str(),
        "a%253A::c",
        "an escape cannot be forged either"
    );
}

#[test]
fn affinity_headers_come_before_the_runtime_line() {
    let body = openclaw::body(&["hi"], SESSION_ID, "/r", 100);
    let affinity = format!("{SESSION_ID}:0");
    for header in ["x-session-affinity", "session_id"] {
        let turn = run(&body, &[(header, &affinity)], None).unwrap();
        assert_eq!(turn.session.as_str(), affinity);
        assert_eq!(turn.key_source, KeySource::AffinityHeader);
    }
}

#[test]
fn without_runtime_line_the_user_field_then_the_fallback() {
    let plain = json!({"messages": [{"role": "user", "content": "hello"}]});
    let mut with_user = plain.clone();
    with_user["user"] = json!("user-123");
    let turn = run(&with_user, &[], Some("shared")).unwrap();
    assert_eq!(
        (turn.session.as_str(), turn.key_source),
        ("user-123", KeySource::User)
    );
    let turn = run(&plain, &[], Some("shared")).unwrap();
    assert_eq!(
        (turn.session.as_str(), turn.key_source),
        ("shared", KeySource::Fallback)
    );
    assert_eq!(
        run(&plain, &[], None).unwrap_err(),
        ExtractError::NoSessionKey
    );
}

#[test]
fn text_parts_tool_messages_and_a_trailing_internal_block() {
    let body = json!({"user": "u", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "look at"}, {"type": "image_url", "image_url": {"url": "data:"}}, {"type": "text", "text": "this"}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "x", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "result"},
        openclaw::internal_context(),
    ]});
    assert_eq!(run(&body, &[], None).unwrap().text, "look at\nthis");
}

#[test]
fn no_user_text_is_an_error() {
    for body in [
        json!({"user": "u", "messages": []}),
        json!({"user": "u", "messages": [{"role": "system", "content": "s"}, openclaw::internal_context()]}),
        json!({"user": "u", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        // Only a runtime line: nothing the user said.
        json!({"user": "u", "messages": [{"role": "user", "content": openclaw::runtime_line("s", "i", "/r")}]}),
    ] {
        assert_eq!(
            run(&body, &[], None).unwrap_err(),
            ExtractError::NoUserText,
            "{body}"
        );
    }
}

#[test]
fn text_that_merely_mentions_runtime_is_kept() {
    let body = json!({"user": "u", "messages": [{"role": "user", "content": "why is it slow?\n\nRuntime: about 3 seconds"}]});
    assert_eq!(
        run(&body, &[], None).unwrap().text,
        "why is it slow?\n\nRuntime: about 3 seconds"
    );
}

#[test]
fn a_sixty_kilobyte_openclaw_body_parses() {
    let body = openclaw::body(&["one", "two", "three"], SESSION_ID, "/r", 60_000);
    let text = body.to_string();
    assert!(text.len() > 60_000);
    let request: ChatRequest<'_> = serde_json::from_str(&text).unwrap();
    assert_eq!(request.messages.len(), 1 + 3 + 2 * 3 + 1);
}

#[test]
fn header_values_may_be_utf8() {
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let headers = [
        ("x-openclaw-agent-id", "café"),
        ("x-openclaw-workspace", "/home/josé/ws"),
    ];
    let turn = run(&body, &headers, None).unwrap();
    assert_eq!(turn.session.as_str(), "café");
    assert_eq!(
        turn.workspace.as_deref(),
        Some(std::path::Path::new("/home/josé/ws"))
    );
}
