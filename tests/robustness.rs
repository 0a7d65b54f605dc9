//! Inputs no test author would think of: property tests of what reads untrusted input (the chat request
//! and its session key, the agent's frames) and of what writes the stream (the SSE encoder). Bounded: a
//! fixed number of cases each (`PROPTEST_CASES`, 300 by default), no time limit to race. Part of
//! `scripts/robustness`.

mod support;

use http::HeaderMap;
use proptest::prelude::*;
use synthesis_bridge::openai::extract::extract;
use synthesis_bridge::openai::{ApiError, ChatRequest, ChunkEncoder};
use synthesis_claude_channel_protocol::{BridgeFrame, PluginFrame};

/// JSON values of any shape, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("model".to_owned()),
                    Just("messages".to_owned()),
                    Just("role".to_owned()),
                    Just("content".to_owned()),
                    Just("user".to_owned()),
                    Just("stream".to_owned()),
                    Just("text".to_owned()),
                    Just("type".to_owned()),
                    ".{0,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A chat body that parses as a request, with user texts of any content (OpenClaw's runtime line and
/// internal-context markers included).
fn chat_body() -> impl Strategy<Value = serde_json::Value> {
    let text = prop_oneof![
        ".{0,80}",
        ".{0,20}".prop_map(|t| format!(
            "{t}\n\nRuntime: agent=main | session={t} | sessionId={t} | repo=/{t}"
        )),
        ".{0,20}".prop_map(|t| format!("<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>{t}")),
    ];
    let message = (
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("system"),
            Just("tool")
        ],
        text,
    )
        .prop_map(|(role, content)| serde_json::json!({"role": role, "content": content}));
    (prop::collection::vec(message, 0..5), proptest::option::of(".{0,30}")).prop_map(
        |(messages, user)| serde_json::json!({"model": "claude", "messages": messages, "user": user}),
    )
}

proptest! {
    // 300 cases each by default; scripts/robustness asks for more (PROPTEST_CASES).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(300),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_json_body_is_parsed_or_refused_never_a_panic(body in json_value()) {
        let text = body.to_string();
        if let Ok(request) = serde_json::from_str::<ChatRequest<'_>>(&text) {
            let _ = extract(&request, &HeaderMap::new(), None);
        }
    }

    #[test]
    fn any_chat_body_and_headers_give_a_turn_or_a_clear_error(
        body in chat_body(),
        agent in proptest::option::of(".{0,12}"),
        chat in proptest::option::of(".{0,12}"),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in [("x-openclaw-agent-id", agent), ("x-openclaw-chat-id", chat)] {
            if let Some(value) = value.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
                headers.insert(name, value);
            }
        }
        let text = body.to_string();
        let request: ChatRequest<'_> = serde_json::from_str(&text).unwrap();
        match extract(&request, &headers, None) {
            Ok(turn) => {
                prop_assert!(!turn.text.trim().is_empty());
                prop_assert!(!turn.session.as_str().is_empty());
            }
            // Each error is the client's, and says what to do.
            Err(error) => prop_assert_eq!(ApiError::from(error).status, http::StatusCode::BAD_REQUEST),
        }
    }

    #[test]
    fn every_delta_is_one_json_chunk_that_gives_back_its_text(
        model in ".{0,20}",
        deltas in prop::collection::vec(any::<String>(), 0..8),
    ) {
        let encoder = ChunkEncoder::new(&model);
        let mut streamed = String::new();
        for delta in &deltas {
            let bytes = encoder.delta(delta);
            let event = std::str::from_utf8(&bytes).unwrap();
            let data = event.strip_prefix("data: ").and_then(|e| e.strip_suffix("\n\n"));
            let data = data.expect("one SSE event");
            prop_assert!(!data.contains('\n'), "an event's data is one line");
            let chunk: serde_json::Value = serde_json::from_str(data).unwrap();
            prop_assert_eq!(&chunk["model"], &serde_json::Value::from(model.clone()));
            streamed.push_str(chunk["choices"][0]["delta"]["content"].as_str().unwrap());
        }
        prop_assert_eq!(streamed, deltas.concat());
    }

    #[test]
    fn any_text_from_a_plugin_is_a_frame_or_ignored_never_a_panic(text in ".{0,200}", value in json_value()) {
        let _ = serde_json::from_str::<PluginFrame>(&text);
        let _ = serde_json::from_value::<PluginFrame>(value);
    }

    #[test]
    fn frames_survive_the_wire(content in any::<String>(), id in proptest::option::of(".{0,16}")) {
        let frame = serde_json::json!({"type": "reply", "content": content, "message_id": id, "final": true});
        let parsed: PluginFrame = serde_json::from_value(frame).unwrap();
        let again: PluginFrame = serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
        prop_assert_eq!(parsed, again);
        let _ = serde_json::to_string(&BridgeFrame::Ping).unwrap();
    }
}
