//! The client's tools with the real Claude Code CLI, the same scenario in each Claude mode: Claude's calls
//! reach the client as OpenAI tool calls, and the client's results carry the same turn on.

use http::StatusCode;
use serde_json::{Value, json};
use synthesis_mock_anthropic::script;

use super::bridge_process::BridgeProcess;
use super::real_claude::{
    World, claude_children, last_tool_result, post_json, sse_events, turn, wait_until,
};

/// The client's one tool, as an OpenAI request declares it.
pub fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }})
}

/// The tool calls of a streamed answer, as the client reassembles them: `(id, name, arguments)`.
pub fn streamed_tool_calls(body: &str) -> (Vec<(String, String, Value)>, Option<String>) {
    let mut calls = Vec::new();
    let mut finish = None;
    for data in sse_events(body).iter().filter(|data| *data != "[DONE]") {
        let chunk: Value = serde_json::from_str(data).unwrap();
        let choice = &chunk["choices"][0];
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            calls.push((
                call["id"].as_str().unwrap().to_owned(),
                call["function"]["name"].as_str().unwrap().to_owned(),
                serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap(),
            ));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = Some(reason.to_owned());
        }
    }
    (calls, finish)
}

/// Two calls in one step, streamed, and their results; one call not streamed, and a new message instead of
/// its result. `user` names the session.
pub async fn round_trips(world: &World, bridge: &BridgeProcess, user: &str) {
    // Two calls in one step: the client gets both in one answer.
    let prompt = r#"CALL get_weather {"city":"Paris"} ; get_weather {"city":"Oslo"}"#;
    let asked = json!({"role": "user", "content": prompt});
    let (status, body) = post_json(
        bridge,
        json!({"model": "claude", "stream": true, "user": user, "tools": [weather_tool()],
               "messages": [asked]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (calls, finish) = streamed_tool_calls(&body);
    assert_eq!(finish.as_deref(), Some("tool_calls"), "{body}");
    assert_eq!(calls.len(), 2, "{body}");
    assert!(
        calls.iter().all(|(_, name, _)| name == "get_weather"),
        "{body}"
    );
    // Claude Code runs the calls of a step side by side: they may reach the bridge in either order.
    let mut asked_for: Vec<String> = calls
        .iter()
        .map(|(_, _, arguments)| arguments.to_string())
        .collect();
    asked_for.sort();
    assert_eq!(asked_for, [r#"{"city":"Oslo"}"#, r#"{"city":"Paris"}"#]);
    assert!(calls.iter().all(|(id, _, _)| id.starts_with("toolu_")));

    // The client runs them and sends the results: the same turn of Claude's goes on, into this answer.
    let assistant = json!({"role": "assistant", "content": null, "tool_calls": calls.iter().map(|(id, name, arguments)| json!({
        "id": id, "type": "function", "function": {"name": name, "arguments": arguments.to_string()}})).collect::<Vec<_>>()});
    let weather = |city: &Value| match city.as_str() {
        Some("Paris") => "sunny in Paris",
        _ => "rain in Oslo",
    };
    let results = [
        json!({"role": "tool", "tool_call_id": calls[0].0, "content": weather(&calls[0].2["city"])}),
        json!({"role": "tool", "tool_call_id": calls[1].0, "content": weather(&calls[1].2["city"])}),
    ];
    let (status, body) = post_json(
        bridge,
        json!({"model": "claude", "user": user, "tools": [weather_tool()],
               "messages": [asked, assistant, results[0], results[1]]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let completion: Value = serde_json::from_str(&body).unwrap();
    // The model reads the results in the order the calls finished, which side by side is either.
    let (paris, oslo) = ("sunny in Paris".to_owned(), "rain in Oslo".to_owned());
    let either = [
        script::reply_with_results(prompt, &[paris.clone(), oslo.clone()]),
        script::reply_with_results(prompt, &[oslo, paris]),
    ];
    let content = completion["choices"][0]["message"]["content"].as_str();
    assert!(
        either
            .iter()
            .any(|expected| Some(expected.as_str()) == content),
        "{body}"
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    // One process throughout, and the prompt reached the model once.
    assert_eq!(claude_children(bridge, &world.claude_bin).len(), 1);
    assert_eq!(
        world.requests_for(prompt).len(),
        2,
        "the calls, then the reply"
    );

    // Not streaming: the calls come as `message.tool_calls`.
    let single = r#"CALL get_weather {"city":"Rome"}"#;
    let (status, body) = post_json(
        bridge,
        json!({"model": "claude", "user": user, "tools": [weather_tool()],
               "messages": [{"role": "user", "content": single}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let completion: Value = serde_json::from_str(&body).unwrap();
    let message = &completion["choices"][0]["message"];
    assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    let id = message["tool_calls"][0]["id"].as_str().unwrap().to_owned();
    // A new user message instead of the result: the call gets an error, and the new message its answer.
    let instead = "never mind the weather";
    assert_eq!(
        turn(bridge, user, instead, true).await,
        script::reply_text(instead)
    );
    // The conversation the new message continues holds the call, failed.
    let next = &world.requests_for(instead)[0].body;
    let failed = next["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|message| script::content_blocks(&message["content"]))
        .find(|block| block["type"] == "tool_result" && block["tool_use_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no result for the abandoned call in {next}"));
    assert_eq!(failed["is_error"], true, "{failed}");
}

/// A call whose result never comes, with the bridge's `--tool-result-timeout` at 1 s: the call fails, Claude
/// finishes its turn, and the session takes its next one. `user` names the session.
pub async fn times_out(world: &World, bridge: &BridgeProcess, user: &str) {
    let prompt = r#"CALL get_weather {"city":"Lima"}"#;
    let (status, body) = post_json(
        bridge,
        json!({"model": "claude", "stream": true, "user": user, "tools": [weather_tool()],
               "messages": [{"role": "user", "content": prompt}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(streamed_tool_calls(&body).1.as_deref(), Some("tool_calls"));
    // No result comes: after the timeout the call fails and Claude finishes its turn on its own.
    wait_until("claude's answer after the failed call", || {
        world.requests_for(prompt).len() == 2
    })
    .await;
    let result = last_tool_result(&world.requests_for(prompt)[1].body);
    assert_eq!(result["is_error"], true, "{result}");
    assert!(result.to_string().contains("did not return"), "{result}");
    // The session is free again.
    let next = "and now something else";
    assert_eq!(
        turn(bridge, user, next, false).await,
        script::reply_text(next)
    );
}
