//! The OpenAI Responses API (`POST /v1/responses`), as Codex uses it, so that tests can drive a
//! non-Claude agent too (`docs/acp-measurements.md`, A2). The same script as the Messages API, for plain
//! text: the newest user prompt gets [`script::reply_text`] streamed one word per delta, `HISTORY` lists
//! the conversation's prompts, `STALL MS …` waits first, `API_ERROR …` fails with HTTP 400. No tools.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::script::{self, ChannelMessage};

/// Every user prompt of a request's `input`, oldest first. Codex's own context (`<environment_context>`,
/// `<turn_aborted>`, …) is not a prompt.
pub fn prompts(body: &Value) -> Vec<ChannelMessage> {
    body["input"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["type"] == "message" && item["role"] == "user")
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["text"].as_str().map(str::to_owned))
        .filter(|text| !text.trim_start().starts_with('<'))
        .map(|content| ChannelMessage {
            attributes: Vec::new(),
            content,
        })
        .collect()
}

/// The scripted failure of a request whose newest prompt starts with `API_ERROR`.
pub fn failure(body: &Value) -> Option<String> {
    let newest = prompts(body).pop()?;
    newest
        .content
        .starts_with("API_ERROR")
        .then(|| format!("scripted failure for: {}", newest.content))
}

/// How long the model waits before it answers: `STALL MS …`.
pub fn delay(body: &Value) -> Duration {
    let Some(newest) = prompts(body).pop() else {
        return Duration::ZERO;
    };
    let mut words = newest.content.split_whitespace();
    match (words.next(), words.next().and_then(|ms| ms.parse().ok())) {
        (Some("STALL"), Some(ms)) => Duration::from_millis(ms),
        _ => Duration::ZERO,
    }
}

/// The answer's text.
pub fn answer(body: &Value) -> String {
    let prompts = prompts(body);
    let Some(newest) = prompts.last() else {
        return script::CLOSING_TEXT.to_owned();
    };
    if newest.content.contains("HISTORY") {
        let seen: Vec<&str> = prompts.iter().map(|p| p.content.as_str()).collect();
        return format!("history: {}", seen.join(" | "));
    }
    script::reply_text(&newest.content)
}

/// The answer as the Responses API streams it: the message item added, one `output_text.delta` per word,
/// the item done, and `response.completed` with usage.
pub fn stream(text: &str) -> String {
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let mut events = String::new();
    let mut event = |data: Value| {
        let name = data["type"].as_str().unwrap_or_default().to_owned();
        let _ = write!(events, "event: {name}\ndata: {data}\n\n");
    };
    event(
        json!({"type": "response.output_item.added", "output_index": 0,
                 "item": {"type": "message", "id": id, "role": "assistant", "status": "in_progress", "content": []}}),
    );
    for delta in script::text_deltas(text) {
        event(
            json!({"type": "response.output_text.delta", "item_id": id, "output_index": 0,
                     "content_index": 0, "delta": delta}),
        );
    }
    event(
        json!({"type": "response.output_item.done", "output_index": 0,
                 "item": {"type": "message", "id": id, "role": "assistant", "status": "completed",
                          "content": [{"type": "output_text", "text": text, "annotations": []}]}}),
    );
    event(json!({"type": "response.completed",
                 "response": {"id": format!("resp_{}", uuid::Uuid::new_v4().simple()),
                              "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                                        "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
                                        "total_tokens": 15}}}));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second-turn body as Codex 0.137 (codex-acp 0.16.0) sends it, shortened.
    fn body() -> Value {
        json!({"model": "gpt-5.4-mini", "stream": true, "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "reply to: first"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "STALL 70 HISTORY"}]}
        ]})
    }

    #[test]
    fn the_newest_user_prompt_is_answered_and_codexs_context_is_not_a_prompt() {
        let prompts: Vec<String> = prompts(&body()).into_iter().map(|p| p.content).collect();
        assert_eq!(prompts, ["first", "STALL 70 HISTORY"]);
        assert_eq!(answer(&body()), "history: first | STALL 70 HISTORY");
        assert_eq!(delay(&body()), Duration::from_millis(70));
        assert_eq!(failure(&body()), None);
    }

    #[test]
    fn the_stream_has_one_delta_per_word_and_completes() {
        let events = stream("reply to: hi there");
        assert_eq!(events.matches("response.output_text.delta").count() / 2, 4);
        assert!(events.trim_end().ends_with("}"));
        assert!(events.contains("\"type\":\"response.completed\""));
    }
}
