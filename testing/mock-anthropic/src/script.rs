//! What the scripted model answers, decided from the request alone.

use std::time::Duration;

use serde_json::{Value, json};

/// One content block of the model's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Plain text.
    Text(String),
    /// A tool call.
    ToolUse {
        /// `toolu_…`
        id: String,
        /// The tool's name as the CLI listed it.
        name: String,
        /// Its arguments.
        input: Value,
    },
}

/// The text a `<channel>` message gets as its reply: what the tests expect back.
pub fn reply_text(content: &str) -> String {
    format!("reply to: {content}")
}

/// The text a `<channel>` message that starts with `PLAIN` gets, without calling any tool.
pub fn plain_text(content: &str) -> String {
    format!("plain answer to: {content}")
}

/// The model's closing words after its last step.
pub const CLOSING_TEXT: &str = "done";

/// The API error a `<channel>` message starting with `API_ERROR` gets (HTTP 400, `invalid_request_error`,
/// which the CLI does not retry).
pub fn failure(body: &Value) -> Option<String> {
    let message = newest_channel_message(body)?;
    message
        .content
        .starts_with("API_ERROR")
        .then(|| format!("scripted failure for: {}", message.content))
}

/// A `<channel …>` message as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage {
    /// `(name, value)` of the tag's attributes, in order.
    pub attributes: Vec<(String, String)>,
    /// The text between the tags.
    pub content: String,
}

impl ChannelMessage {
    /// The value of attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// How long the model takes before it answers `body`: `STALL MS …` stalls its first answer MS
/// milliseconds, `SLOWCLOSE MS …` its closing text after the reply.
pub fn delay(body: &Value) -> Duration {
    // A note that carries on with an earlier message does not stall again.
    let Some((message, step)) = newest_with_steps(body) else {
        return Duration::ZERO;
    };
    let mut words = message.content.split_whitespace();
    let (command, ms) = (words.next(), words.next().and_then(|ms| ms.parse().ok()));
    match (command, ms, step) {
        (Some("STALL"), Some(ms), 0) => Duration::from_millis(ms),
        (Some("SLOWCLOSE"), Some(ms), step) if step == plan(&message).len() => {
            Duration::from_millis(ms)
        }
        _ => Duration::ZERO,
    }
}

/// The answer to a `POST /v1/messages` body. The newest prompt sets a plan, and each request after it
/// takes the next step (counted by the model's tool calls since the prompt), then the closing text:
/// - `PLAIN …`: a plain-text answer ([`plain_text`]), no tool;
/// - `TOOL COMMAND…`: a call of the built-in `Bash` tool with COMMAND, then the reply;
/// - `PARTS A B C`: a reply in parts, one call per word (`partial: true` but the last);
/// - `LONG BYTES`: a plain-text answer of about BYTES bytes ([`long_text`]);
/// - `CALL NAME {JSON} [; NAME {JSON} …]`: one step calling each tool NAME of the request's `tools` (the one
///   whose name is NAME or ends with `__NAME`, as Claude Code prefixes MCP tools) with the JSON input, all
///   in one message (parallel calls); then the reply, [`reply_with_results`], quoting the tool results;
/// - a prompt that holds `HISTORY`: `history: A | B | …`, every prompt of the conversation as the model
///   saw it, oldest first;
/// - anything else (`STALL MS …` and `SLOWCLOSE MS …` too): the reply, [`reply_text`].
///
/// A prompt is the newest `<channel>` message when Claude Code offers the bridge's `mcp__…__reply` tool
/// (the channel mode): the reply is a call of that tool with the message's `chat_id` and `message_id`.
/// Without that tool (the stream-json mode) a prompt is the user's plain text, and the reply is plain
/// text. Without a prompt the answer is `ok`.
pub fn answer(body: &Value) -> Vec<Block> {
    let Some((message, step)) = position(body) else {
        return vec![Block::Text("ok".to_owned())];
    };
    let reply_tool = body["tools"].as_array().and_then(|tools| {
        tools
            .iter()
            .filter_map(|tool| tool["name"].as_str())
            .find(|name| name.starts_with("mcp__") && name.ends_with("__reply"))
    });
    if message.content.contains("HISTORY") && step == 0 {
        let seen: Vec<String> = prompts(body)
            .into_iter()
            .map(|prompt| prompt.content)
            .collect();
        return vec![Block::Text(format!("history: {}", seen.join(" | ")))];
    }
    let Some(step) = plan(&message).into_iter().nth(step) else {
        return vec![Block::Text(CLOSING_TEXT.to_owned())];
    };
    let tool = |name: &str, input: Value| Block::ToolUse {
        id: format!("toolu_{}", uuid::Uuid::new_v4().simple()),
        name: name.to_owned(),
        input,
    };
    match step {
        Step::Calls(calls) => calls
            .into_iter()
            .map(|(name, input)| tool(&offered_tool(body, &name), input))
            .collect(),
        Step::ReplyWithResults => vec![Block::Text(reply_with_results(
            &message.content,
            &latest_tool_results(body),
        ))],
        Step::Plain => vec![Block::Text(plain_text(&message.content))],
        Step::Bash(command) => vec![tool(
            "Bash",
            json!({"command": command, "description": "run it"}),
        )],
        Step::Long(bytes) => vec![Block::Text(long_text(bytes))],
        Step::Reply { text, partial } => {
            let Some(reply_tool) = reply_tool else {
                return vec![Block::Text(text)];
            };
            let mut input = json!({
                "chat_id": message.attribute("chat_id").unwrap_or_default(),
                "message_id": message.attribute("message_id"),
                "text": text,
            });
            if partial {
                input["partial"] = json!(true);
            }
            vec![tool(reply_tool, input)]
        }
    }
}

/// One step of the model's plan for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Calls(Vec<(String, Value)>),
    ReplyWithResults,
    Plain,
    Bash(String),
    Long(usize),
    Reply { text: String, partial: bool },
}

/// The reply to a `CALL …` prompt once its tools answered: [`reply_text`], then each result's text.
pub fn reply_with_results(content: &str, results: &[String]) -> String {
    format!(
        "{} (tools said: {})",
        reply_text(content),
        results.join(" | ")
    )
}

/// The name of the request's tool that `name` stands for: `name` itself, or one ending in `__name`.
fn offered_tool(body: &Value, name: &str) -> String {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|tool| tool["name"].as_str())
        .find(|offered| *offered == name || offered.ends_with(&format!("__{name}")))
        .unwrap_or(name)
        .to_owned()
}

/// The texts of the tool results in the last user message, in order.
fn latest_tool_results(body: &Value) -> Vec<String> {
    last_user_blocks(body)
        .iter()
        .filter(|block| block["type"] == "tool_result")
        .map(|block| {
            let texts: Vec<String> = content_blocks(&block["content"])
                .iter()
                .filter_map(|part| part["text"].as_str().map(str::to_owned))
                .collect();
            texts.join(" ")
        })
        .collect()
}

/// The answer to `LONG BYTES`: numbered words (`w0 w1 …`) up to BYTES bytes.
pub fn long_text(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 8);
    let mut n = 0;
    while text.len() < bytes {
        let _ = std::fmt::Write::write_fmt(&mut text, format_args!("w{n} "));
        n += 1;
    }
    text
}

/// How a text block is streamed: one delta per word, each with the white space after it, as a model
/// writes a few characters at a time.
pub fn text_deltas(text: &str) -> Vec<&str> {
    let mut deltas = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (at, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            deltas.push(&text[start..at]);
            start = at;
            in_space = false;
        }
    }
    if start < text.len() || deltas.is_empty() {
        deltas.push(&text[start..]);
    }
    deltas
}

/// What the model does about `message`, step by step, before its closing text.
fn plan(message: &ChannelMessage) -> Vec<Step> {
    let content = message.content.as_str();
    let reply = Step::Reply {
        text: reply_text(content),
        partial: false,
    };
    if content.starts_with("PLAIN") {
        return vec![Step::Plain];
    }
    if let Some(bytes) = content
        .strip_prefix("LONG ")
        .and_then(|bytes| bytes.trim().parse().ok())
    {
        return vec![Step::Long(bytes)];
    }
    if let Some(command) = content.strip_prefix("TOOL ") {
        return vec![Step::Bash(command.to_owned()), reply];
    }
    if let Some(calls) = content.strip_prefix("CALL ") {
        let calls = calls
            .split(" ; ")
            .filter_map(|call| {
                let (name, input) = call.trim().split_once(' ')?;
                Some((name.to_owned(), serde_json::from_str(input).ok()?))
            })
            .collect();
        return vec![Step::Calls(calls), Step::ReplyWithResults];
    }
    if let Some(words) = content.strip_prefix("PARTS ") {
        let words: Vec<&str> = words.split_whitespace().collect();
        return words
            .iter()
            .enumerate()
            .map(|(at, word)| Step::Reply {
                text: format!("{word} "),
                partial: at + 1 < words.len(),
            })
            .collect();
    }
    vec![reply]
}

/// The newest `<channel>` message of the conversation and how many of the model's tool-calling turns
/// followed it (the step its plan is at). A message with `retry_of` (the bridge's note that the client
/// asked again for an unfinished answer) stands for the message it names, as a model would read it: its
/// content is that message's, its ids its own.
fn position(body: &Value) -> Option<(ChannelMessage, usize)> {
    let (mut newest, steps) = newest_with_steps(body)?;
    if let Some(original) = newest.attribute("retry_of").map(str::to_owned) {
        let mut history = body["messages"].as_array()?.iter().flat_map(|message| {
            content_blocks(&message["content"])
                .into_iter()
                .filter_map(|block| block["text"].as_str().map(channel_messages))
                .flatten()
                .collect::<Vec<_>>()
        });
        if let Some(earlier) =
            history.find(|message| message.attribute("message_id") == Some(original.as_str()))
        {
            newest.content = earlier.content;
        }
    }
    Some((newest, steps))
}

fn newest_with_steps(body: &Value) -> Option<(ChannelMessage, usize)> {
    let messages = body["messages"].as_array()?;
    let plain = plain_prompts(body);
    let mut steps = 0;
    for message in messages.iter().rev() {
        let blocks = content_blocks(&message["content"]);
        if message["role"] == "assistant" {
            if blocks.iter().any(|block| block["type"] == "tool_use") {
                steps += 1;
            }
            continue;
        }
        if message["role"] != "user" {
            continue;
        }
        if let Some(newest) = prompts_in(&blocks, plain).pop() {
            return Some((newest, steps));
        }
    }
    None
}

/// Whether prompts are plain text: Claude Code offers no `mcp__…__reply` tool, so it is not on the
/// bridge's channel (the stream-json mode).
fn plain_prompts(body: &Value) -> bool {
    !body["tools"].as_array().is_some_and(|tools| {
        tools
            .iter()
            .filter_map(|tool| tool["name"].as_str())
            .any(|name| name.starts_with("mcp__") && name.ends_with("__reply"))
    })
}

/// The prompts in a user message's blocks: its `<channel>` messages, or with `plain` prompts its last
/// text that Claude Code did not add itself (a `<system-reminder>`, the note of an interruption).
fn prompts_in(blocks: &[Value], plain: bool) -> Vec<ChannelMessage> {
    let texts = blocks.iter().filter_map(|block| block["text"].as_str());
    if !plain {
        return channel_messages(&texts.collect::<Vec<_>>().join("\n"));
    }
    texts
        .map(|text| without_stamp(text.trim()))
        .rfind(|text| {
            !text.is_empty()
                && !text.starts_with("<system-reminder>")
                && !text.starts_with("[Request interrupted")
        })
        .map(|text| ChannelMessage {
            attributes: Vec::new(),
            content: text.to_owned(),
        })
        .into_iter()
        .collect()
}

/// `text` without the time OpenClaw puts before every prompt (`[Sun 2026-12-06 07:03 UTC] `), which a
/// model reads past: the commands of the script come after it.
fn without_stamp(text: &str) -> &str {
    let Some((stamp, rest)) = text
        .strip_prefix('[')
        .and_then(|text| text.split_once("] "))
    else {
        return text;
    };
    let mut words = stamp.split(' ');
    let weekday = words
        .next()
        .is_some_and(|day| day.len() == 3 && day.chars().all(char::is_alphabetic));
    let date = words
        .next()
        .is_some_and(|date| date.len() == 10 && date.as_bytes()[4] == b'-');
    if weekday && date {
        rest.trim_start()
    } else {
        text
    }
}

/// The newest prompt in a request's history: what [`answer`] answers, unless the model is past it.
pub fn newest_prompt(body: &Value) -> Option<ChannelMessage> {
    newest_with_steps(body).map(|(prompt, _)| prompt)
}

/// Every prompt in a request's history, oldest first.
pub fn prompts(body: &Value) -> Vec<ChannelMessage> {
    let plain = plain_prompts(body);
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|message| message["role"] == "user")
        .flat_map(|message| prompts_in(&content_blocks(&message["content"]), plain))
        .collect()
}

/// The content blocks of the last `user` message.
fn last_user_blocks(body: &Value) -> Vec<Value> {
    body["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .map(|message| content_blocks(&message["content"]))
        .unwrap_or_default()
}

/// The prompt the last user turn asks about, unless that turn is a tool result. An interrupted prompt is
/// merged into the next one, so the newest is the one to answer.
fn newest_channel_message(body: &Value) -> Option<ChannelMessage> {
    let blocks = last_user_blocks(body);
    if blocks.iter().any(|block| block["type"] == "tool_result") {
        return None;
    }
    prompts_in(&blocks, plain_prompts(body)).pop()
}

/// A message's `content`: a string is one text block.
pub fn content_blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(text) => vec![json!({"type": "text", "text": text})],
        Value::Array(blocks) => blocks.clone(),
        _ => Vec::new(),
    }
}

/// Every `<channel …>…</channel>` in `text`, in order.
pub fn channel_messages(text: &str) -> Vec<ChannelMessage> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<channel") {
        let after = &rest[start + "<channel".len()..];
        let Some(tag_end) = after.find('>') else {
            break;
        };
        let Some(close) = after[tag_end..].find("</channel>") else {
            break;
        };
        let body = &after[tag_end + 1..tag_end + close];
        found.push(ChannelMessage {
            attributes: attributes(&after[..tag_end]),
            content: without_stamp(
                body.strip_prefix('\n')
                    .unwrap_or(body)
                    .trim_end_matches('\n'),
            )
            .to_owned(),
        });
        rest = &after[tag_end + close + "</channel>".len()..];
    }
    found
}

/// `key="value"` pairs, as Claude Code writes them (double quotes, no escapes inside).
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().to_owned();
        let value_start = &rest[eq + 2..];
        let Some(end) = value_start.find('"') else {
            break;
        };
        pairs.push((name, value_start[..end].to_owned()));
        rest = &value_start[end + 1..];
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(content: Value) -> Value {
        json!({
            "messages": [{"role": "user", "content": content}],
            "tools": [{"name": "Read"}, {"name": "mcp__synthesis__reply"}],
        })
    }

    #[test]
    fn a_channel_message_gets_a_reply_tool_call_with_its_ids() {
        let text = "<channel source=\"synthesis\" chat_id=\"agent::a\" message_id=\"m1\" ts=\"t\">\nhello\n</channel>";
        let blocks = answer(&request(json!([{"type": "text", "text": text}])));
        let [Block::ToolUse { name, input, .. }] = blocks.as_slice() else {
            panic!("expected one tool call, got {blocks:?}");
        };
        assert_eq!(name, "mcp__synthesis__reply");
        assert_eq!(
            input,
            &json!({"chat_id": "agent::a", "message_id": "m1", "text": "reply to: hello"})
        );
    }

    #[test]
    fn the_newest_tag_of_a_merged_prompt_is_answered() {
        let text = "<channel source=\"s\" chat_id=\"c\" message_id=\"old\">\nslow\n</channel>[Request interrupted by user]\n<channel source=\"s\" chat_id=\"c\" message_id=\"new\">\nPLAIN next\n</channel>";
        assert_eq!(
            answer(&request(json!(text))),
            vec![Block::Text("plain answer to: PLAIN next".to_owned())]
        );
    }

    /// A conversation after `message`: each step's tool call and its result.
    fn after(message: &str, calls: usize) -> Value {
        let tag =
            format!("<channel source=\"s\" chat_id=\"c\" message_id=\"m\">\n{message}\n</channel>");
        let mut messages = vec![json!({"role": "user", "content": tag})];
        for n in 0..calls {
            messages.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": format!("t{n}"), "name": "x", "input": {}}]}));
            messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("t{n}"), "content": "sent"}]}));
        }
        json!({"messages": messages, "tools": [{"name": "Bash"}, {"name": "mcp__synthesis__reply"}]})
    }

    fn input_of(blocks: &[Block]) -> (String, Value) {
        match blocks {
            [Block::ToolUse { name, input, .. }] => (name.clone(), input.clone()),
            other => panic!("expected one tool call, got {other:?}"),
        }
    }

    #[test]
    fn each_step_of_a_plan_follows_the_last_then_the_closing_text() {
        assert_eq!(
            answer(&after("hi", 1)),
            vec![Block::Text(CLOSING_TEXT.to_owned())]
        );

        let (name, input) = input_of(&answer(&after("TOOL echo hi", 0)));
        assert_eq!(
            (name.as_str(), &input["command"]),
            ("Bash", &json!("echo hi"))
        );
        let (name, input) = input_of(&answer(&after("TOOL echo hi", 1)));
        assert_eq!(
            (name.as_str(), &input["text"]),
            ("mcp__synthesis__reply", &json!("reply to: TOOL echo hi"))
        );
        assert_eq!(
            answer(&after("TOOL echo hi", 2)),
            vec![Block::Text(CLOSING_TEXT.to_owned())]
        );

        let parts: Vec<Value> = (0..3)
            .map(|step| input_of(&answer(&after("PARTS a b c", step))).1)
            .collect();
        assert_eq!(
            parts
                .iter()
                .map(|p| p["text"].as_str().unwrap())
                .collect::<String>(),
            "a b c "
        );
        assert_eq!(
            parts
                .iter()
                .map(|p| p["partial"] == true)
                .collect::<Vec<_>>(),
            [true, true, false]
        );
    }

    #[test]
    fn a_note_that_retries_a_message_is_answered_as_that_message() {
        let original = "<channel source=\"s\" chat_id=\"c\" message_id=\"m1\">\nrun it\n</channel>";
        let note = "<channel source=\"s\" chat_id=\"c\" message_id=\"m2\" retry_of=\"m1\">\ncarry on\n</channel>";
        let body = json!({
            "messages": [
                {"role": "user", "content": original},
                {"role": "assistant", "content": "No response requested."},
                {"role": "user", "content": note},
            ],
            "tools": [{"name": "mcp__synthesis__reply"}],
        });
        let (_, input) = input_of(&answer(&body));
        assert_eq!(input["text"], "reply to: run it");
        assert_eq!(input["message_id"], "m2");
    }

    /// A request as Claude Code's stream-json mode sends it: no reply tool, the prompt after a reminder,
    /// and a `system` message after it.
    fn plain(prompt: &str, calls: usize) -> Value {
        let mut messages = vec![
            json!({"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\nskills\n</system-reminder>"},
                {"type": "text", "text": prompt}]}),
            json!({"role": "system", "content": "# Environment"}),
        ];
        for n in 0..calls {
            messages.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": format!("t{n}"), "name": "Bash", "input": {}}]}));
            messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("t{n}"), "content": "hi"}]}));
        }
        json!({"messages": messages, "tools": [{"name": "Bash"}, {"name": "Read"}]})
    }

    #[test]
    fn without_the_channel_the_users_plain_text_is_the_prompt_and_the_reply_is_text() {
        assert_eq!(
            answer(&plain("hello there", 0)),
            vec![Block::Text("reply to: hello there".to_owned())]
        );
        let (name, _) = input_of(&answer(&plain("TOOL echo hi", 0)));
        assert_eq!(name, "Bash");
        assert_eq!(
            answer(&plain("TOOL echo hi", 1)),
            vec![Block::Text("reply to: TOOL echo hi".to_owned())]
        );
        assert_eq!(delay(&plain("STALL 700 x", 0)), Duration::from_millis(700));
        let interrupted = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "[Request interrupted by user]\n"},
            {"type": "text", "text": "next one"}]}]});
        assert_eq!(
            newest_prompt(&interrupted).map(|prompt| prompt.content),
            Some("next one".to_owned())
        );
    }

    #[test]
    fn history_lists_every_prompt_the_model_saw() {
        let mut body = plain("first", 0);
        let messages = body["messages"].as_array_mut().unwrap();
        messages.push(json!({"role": "assistant", "content": "reply to: first"}));
        messages.push(json!({"role": "user", "content": "[Sun 12:00] HISTORY please"}));
        assert_eq!(
            answer(&body),
            vec![Block::Text(
                "history: first | [Sun 12:00] HISTORY please".to_owned()
            )]
        );
    }

    #[test]
    fn a_model_reads_past_openclaws_time_stamp() {
        assert_eq!(
            answer(&plain("[Sun 2026-12-06 07:03 UTC] LONG 20", 0)),
            vec![Block::Text(long_text(20))]
        );
        assert_eq!(without_stamp("[not a stamp] x"), "[not a stamp] x");
    }

    #[test]
    fn long_answers_stream_one_word_per_delta() {
        let text = long_text(10_000);
        assert!((10_000..10_010).contains(&text.len()), "{}", text.len());
        let deltas = text_deltas(&text);
        assert_eq!(deltas.concat(), text);
        assert_eq!(deltas[..2], ["w0 ", "w1 "]);
        assert_eq!(text_deltas("reply to: x"), ["reply ", "to: ", "x"]);
        assert_eq!(text_deltas(""), [""]);
    }

    #[test]
    fn stalls_and_slow_closings_delay_their_own_step_only() {
        assert_eq!(delay(&after("STALL 700 x", 0)), Duration::from_millis(700));
        assert_eq!(delay(&after("STALL 700 x", 1)), Duration::ZERO);
        assert_eq!(delay(&after("SLOWCLOSE 300 x", 0)), Duration::ZERO);
        assert_eq!(
            delay(&after("SLOWCLOSE 300 x", 1)),
            Duration::from_millis(300)
        );
    }
}
