//! The parts of a chat-completions request body the bridge reads.
//!
//! Text fields borrow from the request bytes where JSON escaping allows, because OpenClaw resends the whole
//! history (often 50–100 KB) on every turn and the bridge only needs one message of it.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// A `POST /v1/chat/completions` body. Fields the bridge does not use (`temperature`, …) are accepted and
/// ignored.
#[derive(Debug, Deserialize)]
pub struct ChatRequest<'a> {
    /// The requested model id.
    #[serde(default, borrow)]
    pub model: Option<Cow<'a, str>>,
    /// The conversation so far.
    #[serde(borrow)]
    pub messages: Vec<Message<'a>>,
    /// Whether to answer with server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// The end user's id, used as a session key when nothing better is sent.
    #[serde(default, borrow)]
    pub user: Option<Cow<'a, str>>,
    /// The client's tools (`{"type": "function", "function": {name, description, parameters}}`).
    #[serde(default)]
    pub tools: Option<Vec<ToolDefinition>>,
    /// `"none"`, `"auto"`, `"required"` or a named function; only `"none"` changes what is offered.
    #[serde(default)]
    pub tool_choice: Option<serde_json::Value>,
}

/// One entry of a request's `tools`.
#[derive(Debug, Deserialize)]
pub struct ToolDefinition {
    /// `function` (other kinds are not offered to the agent).
    #[serde(rename = "type")]
    pub kind: String,
    /// The function, for `type: "function"`.
    #[serde(default)]
    pub function: Option<FunctionDefinition>,
}

/// A function tool's declaration.
#[derive(Debug, Deserialize)]
pub struct FunctionDefinition {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// Its parameters, a JSON Schema object.
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a usage chunk before `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// One entry of `messages`.
#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    /// `system`, `user`, `assistant`, `tool`, …
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    /// The content; absent or null for assistant tool calls.
    #[serde(default, borrow)]
    pub content: Option<Content<'a>>,
    /// For `role: "tool"`: the call this message answers.
    #[serde(default, borrow)]
    pub tool_call_id: Option<Cow<'a, str>>,
}

/// Message content: a string, or an array of typed parts of which only `text` parts carry text.
#[derive(Debug, PartialEq)]
pub enum Content<'a> {
    /// `"content": "…"`.
    Text(Cow<'a, str>),
    /// `"content": [{"type": "text", "text": "…"}, …]`.
    Parts(Vec<ContentPart<'a>>),
}

/// One element of an array content.
#[derive(Debug, PartialEq, Deserialize)]
pub struct ContentPart<'a> {
    /// The part's type: `text`, `image_url`, …
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// The text of a `text` part.
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
}

impl ChatRequest<'_> {
    /// Whether the client asked for server-sent events.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for a usage chunk at the end of the stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

impl Content<'_> {
    /// The text: a string content as is, the `text` parts of an array joined by newlines.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Content::Text(text) => Cow::Borrowed(text),
            Content::Parts(parts) => {
                let mut texts = parts
                    .iter()
                    .filter(|part| part.kind == "text")
                    .filter_map(|part| part.text.as_deref());
                match (texts.next(), texts.next()) {
                    (None, _) => Cow::Borrowed(""),
                    (Some(only), None) => Cow::Borrowed(only),
                    (Some(first), Some(second)) => {
                        let mut joined = format!("{first}\n{second}");
                        for text in texts {
                            joined.push('\n');
                            joined.push_str(text);
                        }
                        Cow::Owned(joined)
                    }
                }
            }
        }
    }
}

// Written by hand rather than `#[serde(untagged)]` so that a wrong type gets a message that says what is
// expected, and so that strings still borrow.
impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;

        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(text)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }

        deserializer.deserialize_any(ContentVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_borrow_from_the_body() {
        let body = r#"{"messages":[{"role":"user","content":"hi there"}]}"#;
        let request: ChatRequest<'_> = serde_json::from_str(body).unwrap();
        let Some(Content::Text(Cow::Borrowed(text))) = &request.messages[0].content else {
            panic!("expected borrowed text: {:?}", request.messages[0].content);
        };
        assert_eq!(*text, "hi there");
        assert!(!request.is_stream());
    }

    #[test]
    fn array_content_joins_only_text_parts() {
        let body = r#"{"messages":[{"role":"user","content":[
            {"type":"text","text":"one"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"two\n"}]}]}"#;
        let request: ChatRequest<'_> = serde_json::from_str(body).unwrap();
        assert_eq!(
            request.messages[0].content.as_ref().unwrap().text(),
            "one\ntwo\n"
        );
    }

    #[test]
    fn wrong_content_type_says_what_is_expected() {
        let body = r#"{"messages":[{"role":"user","content":42}]}"#;
        let err = serde_json::from_str::<ChatRequest<'_>>(body).unwrap_err();
        assert!(
            err.to_string()
                .contains("a string or an array of content parts"),
            "{err}"
        );
    }

    #[test]
    fn null_content_and_unknown_fields_are_accepted() {
        let body = r#"{"model":"claude","stream":true,"stream_options":{"include_usage":true},
            "tools":[{"type":"function"}],"messages":[{"role":"assistant","content":null,"tool_calls":[]}]}"#;
        let request: ChatRequest<'_> = serde_json::from_str(body).unwrap();
        assert!(request.is_stream() && request.wants_stream_usage());
        assert_eq!(request.messages[0].content, None);
    }
}
