//! What the scripted model answers, decided from the request alone.

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

/// The model's closing words after a tool result.
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

/// The answer to a `POST /v1/messages` body:
/// - the last user turn holds a tool result: the closing text;
/// - it holds a `<channel>` message starting with `PLAIN`: a plain-text answer;
/// - it holds another `<channel>` message and a `mcp__…__reply` tool is offered: a call of that tool with
///   the message's `chat_id` and `message_id` and [`reply_text`];
/// - anything else: `ok`.
pub fn answer(body: &Value) -> Vec<Block> {
    if last_user_blocks(body)
        .iter()
        .any(|block| block["type"] == "tool_result")
    {
        return vec![Block::Text(CLOSING_TEXT.to_owned())];
    }
    let Some(message) = newest_channel_message(body) else {
        return vec![Block::Text("ok".to_owned())];
    };
    if message.content.starts_with("PLAIN") {
        return vec![Block::Text(plain_text(&message.content))];
    }
    let reply_tool = body["tools"].as_array().and_then(|tools| {
        tools
            .iter()
            .filter_map(|tool| tool["name"].as_str())
            .find(|name| name.starts_with("mcp__") && name.ends_with("__reply"))
    });
    let Some(reply_tool) = reply_tool else {
        return vec![Block::Text(format!(
            "no reply tool offered; I would say: {}",
            reply_text(&message.content)
        ))];
    };
    vec![Block::ToolUse {
        id: format!("toolu_{}", uuid::Uuid::new_v4().simple()),
        name: reply_tool.to_owned(),
        input: json!({
            "chat_id": message.attribute("chat_id").unwrap_or_default(),
            "message_id": message.attribute("message_id"),
            "text": reply_text(&message.content),
        }),
    }]
}

/// The content blocks of the last `user` message.
fn last_user_blocks(body: &Value) -> Vec<Value> {
    body["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .map(|message| content_blocks(&message["content"]))
        .unwrap_or_default()
}

/// The `<channel>` message the last user turn asks about, unless that turn is a tool result. An
/// interrupted prompt is merged into the next one, so the newest tag is the one to answer.
fn newest_channel_message(body: &Value) -> Option<ChannelMessage> {
    let blocks = last_user_blocks(body);
    if blocks.iter().any(|block| block["type"] == "tool_result") {
        return None;
    }
    let text = blocks
        .iter()
        .filter_map(|block| block["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    channel_messages(&text).pop()
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
            content: body
                .strip_prefix('\n')
                .unwrap_or(body)
                .trim_end_matches('\n')
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

    #[test]
    fn a_tool_result_gets_the_closing_text() {
        let content = json!([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sent"}]);
        assert_eq!(
            answer(&request(content)),
            vec![Block::Text(CLOSING_TEXT.to_owned())]
        );
    }
}
