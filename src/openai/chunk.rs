//! Encoding of the answer: `chat.completion.chunk` server-sent events and the `chat.completion` object.
//!
//! Every chunk of one stream shares its `id`, `created` and `model`, so their JSON prefix is rendered once
//! per stream and each chunk only appends its `choices`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use uuid::Uuid;

use super::error::ApiError;
use crate::backend::{FinishReason, ToolCall, Usage};

/// The last event of every stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Renders the events of one streamed answer.
#[derive(Debug, Clone)]
pub struct ChunkEncoder {
    id: String,
    created: u64,
    model: String,
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,`
    prefix: Bytes,
}

impl ChunkEncoder {
    /// An encoder for a new answer from `model`, with a fresh `chatcmpl-…` id.
    pub fn new(model: &str) -> Self {
        let id = format!("chatcmpl-{}", Uuid::new_v4().simple());
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut prefix = Vec::with_capacity(96 + model.len());
        prefix.extend_from_slice(b"data: {\"id\":\"");
        prefix.extend_from_slice(id.as_bytes());
        prefix.extend_from_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":");
        prefix.extend_from_slice(created.to_string().as_bytes());
        prefix.extend_from_slice(b",\"model\":");
        write_json(&mut prefix, model);
        prefix.push(b',');
        Self {
            id,
            created,
            model: model.to_owned(),
            prefix: prefix.into(),
        }
    }

    /// The answer's `id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The first chunk: the assistant role, no text yet.
    pub fn role(&self) -> Bytes {
        self.choice(br#"{"role":"assistant","content":""}"#, None)
    }

    /// A chunk carrying more text.
    pub fn delta(&self, text: &str) -> Bytes {
        let mut delta = Vec::with_capacity(text.len() + 16);
        delta.extend_from_slice(br#"{"content":"#);
        write_json(&mut delta, text);
        delta.push(b'}');
        self.choice(&delta, None)
    }

    /// A chunk carrying the `index`th tool call of the answer, whole: its id, the function's name and all its
    /// arguments at once.
    pub fn tool_call(&self, index: usize, call: &ToolCall) -> Bytes {
        let delta = serde_json::json!({"tool_calls": [{
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }]});
        self.choice(&serde_json::to_vec(&delta).expect("plain data"), None)
    }

    /// A chunk with empty content: it says "still working" to clients whose idle watchdog ignores SSE
    /// comments (OpenClaw's does).
    pub fn heartbeat(&self) -> Bytes {
        self.choice(br#"{"content":""}"#, None)
    }

    /// The chunk that ends the answer.
    pub fn finish(&self, reason: FinishReason) -> Bytes {
        self.choice(b"{}", Some(reason))
    }

    /// The usage chunk (`stream_options.include_usage`): no choices, only `usage`.
    pub fn usage(&self, usage: &Usage) -> Bytes {
        let mut out = self.start(64);
        out.extend_from_slice(br#""choices":[],"usage":"#);
        write_json(&mut out, usage);
        self.end(out)
    }

    /// The final chunk of a failed answer: it carries the error (SDKs raise on an `error` member) and a
    /// `finish_reason`, so lenient clients also see the stream end cleanly. [`DONE`] follows it.
    pub fn error(&self, error: &ApiError) -> Bytes {
        let mut out = self.start(128 + error.message.len());
        out.extend_from_slice(
            br#""choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"error":"#,
        );
        error.write_body(&mut out);
        self.end(out)
    }

    /// The non-streaming answer: one `chat.completion` object.
    pub fn completion(&self, text: &str, finish: FinishReason, usage: &Usage) -> Bytes {
        self.completion_with_calls(text, &[], finish, usage)
    }

    /// The non-streaming answer with the agent's calls of the client's tools (`message.tool_calls`; the
    /// content is `null` when the agent said nothing before calling).
    pub fn completion_with_calls(
        &self,
        text: &str,
        calls: &[ToolCall],
        finish: FinishReason,
        usage: &Usage,
    ) -> Bytes {
        let tool_calls: Vec<CompletionToolCall<'_>> = calls
            .iter()
            .map(|call| CompletionToolCall {
                id: &call.id,
                kind: "function",
                function: CompletionFunction {
                    name: &call.name,
                    arguments: &call.arguments,
                },
            })
            .collect();
        let completion = Completion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices: [CompletionChoice {
                index: 0,
                message: CompletionMessage {
                    role: "assistant",
                    content: (!text.is_empty() || calls.is_empty()).then_some(text),
                    tool_calls,
                },
                finish_reason: finish.as_str(),
            }],
            usage,
        };
        serde_json::to_vec(&completion)
            .expect("serialising plain data cannot fail")
            .into()
    }

    fn choice(&self, delta: &[u8], finish: Option<FinishReason>) -> Bytes {
        let mut out = self.start(delta.len() + 64);
        out.extend_from_slice(br#""choices":[{"index":0,"delta":"#);
        out.extend_from_slice(delta);
        out.extend_from_slice(br#","finish_reason":"#);
        match finish {
            Some(reason) => write_json(&mut out, reason.as_str()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]");
        self.end(out)
    }

    fn start(&self, extra: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + extra + 4);
        out.extend_from_slice(&self.prefix);
        out
    }

    fn end(&self, mut out: Vec<u8>) -> Bytes {
        out.extend_from_slice(b"}\n\n");
        Bytes::from(out)
    }
}

/// Concatenates already-encoded events into one buffer, for writes that belong together.
pub fn concat(events: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(events.iter().map(Bytes::len).sum());
    for event in events {
        out.put_slice(event);
    }
    out.freeze()
}

fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("serialising plain data cannot fail");
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: &'a Usage,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: CompletionMessage<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct CompletionMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<CompletionToolCall<'a>>,
}

#[derive(Serialize)]
struct CompletionToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: CompletionFunction<'a>,
}

#[derive(Serialize)]
struct CompletionFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(event: &Bytes) -> Value {
        let text = std::str::from_utf8(event).unwrap();
        let json = text
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn chunks_share_id_created_and_model() {
        let encoder = ChunkEncoder::new("claude \"quoted\"");
        let chunks = [
            encoder.role(),
            encoder.delta("a\n\"b\" é"),
            encoder.finish(FinishReason::Stop),
        ];
        let parsed: Vec<Value> = chunks.iter().map(parse).collect();
        for chunk in &parsed {
            assert_eq!(chunk["id"], encoder.id());
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["model"], "claude \"quoted\"");
            assert_eq!(chunk["created"], parsed[0]["created"]);
        }
        assert_eq!(
            parsed[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(parsed[1]["choices"][0]["delta"]["content"], "a\n\"b\" é");
        assert_eq!(parsed[1]["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(parsed[2]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn usage_and_error_chunks() {
        let encoder = ChunkEncoder::new("m");
        let usage = parse(&encoder.usage(&Usage::new(3, 4)));
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
        let error = ApiError::invalid_request("x", "bad \"thing\"");
        let chunk = parse(&encoder.error(&error));
        assert_eq!(chunk["error"]["message"], "bad \"thing\"");
        assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn completion_object() {
        let encoder = ChunkEncoder::new("m");
        let body = encoder.completion("hi", FinishReason::Length, &Usage::default());
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["object"], "chat.completion");
        assert_eq!(
            json["choices"][0]["message"],
            json!({"role": "assistant", "content": "hi"})
        );
        assert_eq!(json["choices"][0]["finish_reason"], "length");
        assert_eq!(json["usage"]["total_tokens"], 0);
    }
}
