//! Works out, from a chat-completions request, what the user said and which session it belongs to.
//!
//! The rules follow what real clients send (see OpenClaw's measured behaviour in the project docs):
//! - **The user's text** is the latest `user` message that is not OpenClaw's internal-context block (which
//!   OpenClaw appends after the real message), with OpenClaw's `Runtime: …` line removed.
//! - **The session key** is the first that applies of: the `x-openclaw-agent-id` (+ `x-openclaw-chat-id`)
//!   headers, as `agent::chat`; the `x-session-affinity` or `session_id` header; `session=` of OpenClaw's
//!   runtime line; the body's `user`; the configured fallback. With none, the request is never mixed into
//!   a shared default session: it is a one-off turn with a key of its own ([`Unnamed::OneOff`]), or
//!   refused ([`Unnamed::Refused`]), as the caller chooses.
//! - **The workspace** asked for is the `x-openclaw-workspace` header, else the runtime line's `repo=`.
//!
//! # Example
//!
//! ```
//! use http::HeaderMap;
//! use synthesis_bridge::openai::{ChatRequest, extract::{extract, KeySource}};
//!
//! let body = r#"{"messages":[
//!     {"role":"system","content":"You are a helpful agent."},
//!     {"role":"user","content":"[Sat 2026-11-21 05:18 UTC] fix the build\n\nRuntime: agent=main | session=agent:main:main | sessionId=5aedb614 | repo=/work/repo"},
//!     {"role":"user","content":[{"type":"text","text":"<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>\n…\n<<<END_OPENCLAW_INTERNAL_CONTEXT>>>"}]}
//! ]}"#;
//! let request: ChatRequest<'_> = serde_json::from_str(body).unwrap();
//! let turn = extract(&request, &HeaderMap::new(), None).unwrap();
//! assert_eq!(turn.text, "[Sat 2026-11-21 05:18 UTC] fix the build");
//! assert_eq!(turn.session.as_str(), "agent:main:main");
//! assert_eq!(turn.key_source, KeySource::RuntimeLine);
//! assert_eq!(turn.conversation.as_deref(), Some("5aedb614"));
//! assert_eq!(turn.workspace.as_deref(), Some(std::path::Path::new("/work/repo")));
//! ```

use std::path::PathBuf;

use http::HeaderMap;

use super::request::{ChatRequest, Message};
use crate::backend::{ClientTool, ToolResult};
use crate::session::{InvalidSessionKey, SessionKey};

/// Header naming the OpenClaw agent (the seed's convention).
pub const AGENT_ID_HEADER: &str = "x-openclaw-agent-id";
/// Header naming the chat within the agent (the seed's convention).
pub const CHAT_ID_HEADER: &str = "x-openclaw-chat-id";
/// Header naming the workspace directory.
pub const WORKSPACE_HEADER: &str = "x-openclaw-workspace";
/// Session-affinity headers sent by OpenClaw with `compat.sendSessionAffinityHeaders`, first match wins.
pub const AFFINITY_HEADERS: [&str; 2] = ["x-session-affinity", "session_id"];

/// `text` without the timestamp OpenClaw puts before each user message (`[Sat 2026-11-21 05:18 UTC] `),
/// which a retry of the same message may carry too or not.
///
/// ```
/// use synthesis_bridge::openai::extract::without_openclaw_timestamp;
///
/// assert_eq!(without_openclaw_timestamp("[Sat 2026-11-21 05:18 UTC] fix it"), "fix it");
/// assert_eq!(without_openclaw_timestamp("[draft] fix it"), "[draft] fix it");
/// ```
pub fn without_openclaw_timestamp(text: &str) -> &str {
    let Some((stamp, rest)) = text.strip_prefix('[').and_then(|t| t.split_once("] ")) else {
        return text;
    };
    let mut words = stamp.split(' ');
    let weekday = words.next().is_some_and(|w| w.len() == 3);
    let date = words
        .next()
        .is_some_and(|w| w.len() == 10 && w.bytes().all(|b| b.is_ascii_digit() || b == b'-'));
    if weekday && date { rest } else { text }
}

const INTERNAL_CONTEXT_BEGIN: &str = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>";
const RUNTIME_PREFIX: &str = "Runtime: ";
/// The field names OpenClaw writes in its runtime line, in its order.
const RUNTIME_FIELDS: [&str; 15] = [
    "name",
    "agent",
    "session",
    "sessionId",
    "sessionUrl",
    "host",
    "repo",
    "os",
    "node",
    "active_node",
    "model",
    "default_model",
    "shell",
    "channel",
    "capabilities",
];

/// What a request asks of the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExtractedTurn {
    /// The user's text.
    pub text: String,
    /// The session the turn belongs to.
    pub session: SessionKey,
    /// Where the session key came from, for logs.
    pub key_source: KeySource,
    /// The client's id for the current conversation (OpenClaw's `sessionId`).
    pub conversation: Option<String>,
    /// The workspace the client named, not yet checked against the allowed roots.
    pub workspace: Option<PathBuf>,
    /// The client's function tools on offer (none with `tool_choice: "none"`).
    pub tools: Vec<ClientTool>,
    /// The stable part of the client's `system` and `developer` messages ([`stable_instructions`]).
    pub system_prompt: Option<String>,
    /// The results of earlier tool calls at the end of the conversation (its trailing `role: "tool"`
    /// messages): the request carries no new user message, and `text` is the latest earlier one.
    pub tool_results: Vec<ToolResult>,
}

/// Where a session key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// `x-openclaw-agent-id` and `x-openclaw-chat-id`.
    OpenClawHeaders,
    /// `x-session-affinity` or `session_id`.
    AffinityHeader,
    /// `session=` of OpenClaw's runtime line.
    RuntimeLine,
    /// The body's `user`.
    User,
    /// The configured fallback.
    Fallback,
    /// Nothing named a session: a one-off turn, with a key made for it ([`SessionKey::one_off`]).
    OneOff,
    /// The library user's own rule ([`BridgeConfig::session_key`](crate::http::BridgeConfig::session_key)).
    Custom,
}

/// Why a request cannot be turned into a turn. Each is the client's mistake (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// No `user` message with text.
    #[error(
        "no user text found: send at least one message with role \"user\" whose content is a non-empty string or has a text part"
    )]
    NoUserText,
    /// Nothing names the session, and the caller refuses such requests ([`Unnamed::Refused`]).
    #[error(
        "cannot tell which session this request belongs to, and this bridge answers only requests that name one: set the \"user\" field, or the x-session-affinity header, or the x-openclaw-agent-id and x-openclaw-chat-id headers"
    )]
    NoSessionKey,
    /// A session key was given but is not acceptable.
    #[error("invalid session key from {origin}: {reason}")]
    InvalidSessionKey {
        /// Where it came from.
        origin: &'static str,
        /// What is wrong with it.
        reason: InvalidSessionKey,
    },
    /// A header the bridge reads is not valid UTF-8.
    #[error("header {0} is not valid UTF-8")]
    InvalidHeader(&'static str),
}

/// What a request that names no session gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unnamed<'a> {
    /// Refused ([`ExtractError::NoSessionKey`]).
    Refused,
    /// This session.
    Fallback(&'a SessionKey),
    /// A session of its own, used once ([`KeySource::OneOff`]).
    OneOff,
}

/// Extracts the user's text, session key, conversation and requested workspace from a request. A request
/// that names no session gets `fallback_session`, or is refused.
pub fn extract(
    request: &ChatRequest<'_>,
    headers: &HeaderMap,
    fallback_session: Option<&SessionKey>,
) -> Result<ExtractedTurn, ExtractError> {
    let unnamed = fallback_session.map_or(Unnamed::Refused, Unnamed::Fallback);
    extract_with(request, headers, None, unnamed)
}

/// [`extract`] with the session already `chosen` by a rule of the caller's, which then wins over the
/// built-in ones, and `unnamed` for a request that names none.
pub fn extract_with(
    request: &ChatRequest<'_>,
    headers: &HeaderMap,
    chosen: Option<SessionKey>,
    unnamed: Unnamed<'_>,
) -> Result<ExtractedTurn, ExtractError> {
    let tool_results = trailing_tool_results(&request.messages);
    // A request of tool results carries no new user text: its text is the latest one, which asked for them.
    let text = latest_user_text(&request.messages).ok_or(ExtractError::NoUserText)?;
    let runtime = request
        .messages
        .iter()
        .filter(|message| message.role == "user")
        .find_map(|message| {
            RuntimeLine::find(&message.content.as_ref()?.text()).map(RuntimeLine::into_owned)
        });
    let (session, key_source) = match chosen {
        Some(session) => (session, KeySource::Custom),
        None => session_key(request, headers, runtime.as_ref(), unnamed)?,
    };
    let workspace = match header(headers, WORKSPACE_HEADER)? {
        Some(path) => Some(PathBuf::from(path)),
        None => runtime
            .as_ref()
            .and_then(|r| r.get("repo"))
            .map(PathBuf::from),
    };
    Ok(ExtractedTurn {
        text,
        session,
        key_source,
        conversation: runtime
            .as_ref()
            .and_then(|r| r.get("sessionId"))
            .map(str::to_owned),
        workspace,
        tools: offered_tools(request),
        system_prompt: stable_instructions(&request.messages),
        tool_results,
    })
}

/// The client's instructions: its `system` and `developer` messages, in order, joined by blank lines,
/// without the lines that change from turn to turn, so that a long-lived agent gets the same instructions
/// each turn (a change costs a restart). `None` when there are none.
pub fn stable_instructions(messages: &[Message<'_>]) -> Option<String> {
    // Built in place, with one buffer for each message's lines: OpenClaw's system prompt is some 50 KB on
    // every request.
    let mut instructions = String::new();
    let mut part = String::new();
    let contents = messages
        .iter()
        .filter(|message| matches!(message.role.as_ref(), "system" | "developer"))
        .filter_map(|message| message.content.as_ref());
    for content in contents {
        let text = content.text();
        part.clear();
        part.reserve(text.len());
        for (n, line) in text.lines().filter(|line| !is_volatile(line)).enumerate() {
            if n > 0 {
                part.push('\n');
            }
            part.push_str(line);
        }
        let kept = part.trim();
        if kept.is_empty() {
            continue;
        }
        if !instructions.is_empty() {
            instructions.push_str("\n\n");
        }
        instructions.push_str(kept);
    }
    (!instructions.is_empty()).then_some(instructions)
}

/// The prefixes of the volatile lines ([`is_volatile`]).
const VOLATILE: [&str; 3] = [RUNTIME_PREFIX, "Current date: ", "Time zone: "];

/// Whether a line of the instructions changes by itself from turn to turn or day to day: OpenClaw's runtime
/// line, and the date and time zone of its system prompt's dynamic section (measured in
/// `docs/openclaw-measurements.md`; the user messages carry the time anyway).
fn is_volatile(line: &str) -> bool {
    let line = line.trim_start();
    VOLATILE.iter().any(|prefix| line.starts_with(prefix))
}

/// The client's function tools, unless `tool_choice` is `"none"`.
fn offered_tools(request: &ChatRequest<'_>) -> Vec<ClientTool> {
    if request
        .tool_choice
        .as_ref()
        .is_some_and(|choice| choice == "none")
    {
        return Vec::new();
    }
    request
        .tools
        .iter()
        .flatten()
        .filter(|tool| tool.kind == "function")
        .filter_map(|tool| tool.function.as_ref())
        .map(|function| ClientTool {
            name: function.name.clone(),
            description: function.description.clone(),
            parameters: function
                .parameters
                .clone()
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
        })
        .collect()
}

/// The `role: "tool"` messages after the conversation's last assistant message, when no user message
/// follows them (OpenClaw's internal-context block aside): the results of the agent's last tool calls.
fn trailing_tool_results(messages: &[Message<'_>]) -> Vec<ToolResult> {
    let mut results = Vec::new();
    for message in messages.iter().rev() {
        match message.role.as_ref() {
            "tool" => results.push(ToolResult {
                call_id: message
                    .tool_call_id
                    .as_deref()
                    .unwrap_or_default()
                    .to_owned(),
                content: message
                    .content
                    .as_ref()
                    .map(|content| content.text().into_owned())
                    .unwrap_or_default(),
            }),
            "user" if results.is_empty() && is_internal_context(message) => {}
            // A reminder some frameworks append after the results.
            "system" | "developer" if results.is_empty() => {}
            _ => break,
        }
    }
    results.reverse();
    results
}

fn is_internal_context(message: &Message<'_>) -> bool {
    message.content.as_ref().is_some_and(|content| {
        content
            .text()
            .trim_start()
            .starts_with(INTERNAL_CONTEXT_BEGIN)
    })
}

/// The latest user message that is not OpenClaw's internal context, without the runtime line; `None` if
/// that message has no text.
fn latest_user_text(messages: &[Message<'_>]) -> Option<String> {
    let content = messages
        .iter()
        .rev()
        .filter(|message| message.role == "user")
        .filter_map(|message| message.content.as_ref())
        .find(|content| {
            !content
                .text()
                .trim_start()
                .starts_with(INTERNAL_CONTEXT_BEGIN)
        })?;
    let text = content.text();
    let text = match RuntimeLine::find(&text) {
        Some(runtime) => text[..runtime.starts_at].trim_end(),
        None => text.trim_end(),
    };
    (!text.trim_start().is_empty()).then(|| text.to_owned())
}

fn session_key(
    request: &ChatRequest<'_>,
    headers: &HeaderMap,
    runtime: Option<&RuntimeLine<String>>,
    unnamed: Unnamed<'_>,
) -> Result<(SessionKey, KeySource), ExtractError> {
    let key = |source: &'static str, value: &str| {
        SessionKey::new(value).map_err(|reason| ExtractError::InvalidSessionKey {
            origin: source,
            reason,
        })
    };
    if let Some(agent) = header(headers, AGENT_ID_HEADER)? {
        let session = match header(headers, CHAT_ID_HEADER)? {
            Some(chat) => key(
                "x-openclaw-chat-id",
                &format!("{}::{}", key_part(agent), key_part(chat)),
            )?,
            None => key(AGENT_ID_HEADER, agent)?,
        };
        return Ok((session, KeySource::OpenClawHeaders));
    }
    for name in AFFINITY_HEADERS {
        if let Some(value) = header(headers, name)? {
            return Ok((key(name, value)?, KeySource::AffinityHeader));
        }
    }
    if let Some(session) = runtime.and_then(|r| r.get("session")) {
        return Ok((
            key("the runtime line's session=", session)?,
            KeySource::RuntimeLine,
        ));
    }
    if let Some(user) = request.user.as_deref().filter(|u| !u.trim().is_empty()) {
        return Ok((key("the \"user\" field", user)?, KeySource::User));
    }
    match unnamed {
        Unnamed::Fallback(fallback) => Ok((fallback.clone(), KeySource::Fallback)),
        Unnamed::OneOff => Ok((SessionKey::one_off(), KeySource::OneOff)),
        Unnamed::Refused => Err(ExtractError::NoSessionKey),
    }
}

/// One part of a key joined from two with `::`, its own `:` and `%` escaped: otherwise agent `a::b` with
/// chat `c` and agent `a` with chat `b::c` would be the same session.
fn key_part(part: &str) -> String {
    part.trim().replace('%', "%25").replace(':', "%3A")
}

/// A header's value, `None` when absent or blank.
fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, ExtractError> {
    match headers.get(name) {
        None => Ok(None),
        // Not `HeaderValue::to_str`, which refuses anything but ASCII: agent ids and paths may be UTF-8.
        Some(value) => std::str::from_utf8(value.as_bytes())
            .map(|v| Some(v).filter(|v| !v.trim().is_empty()))
            .map_err(|_| ExtractError::InvalidHeader(name)),
    }
}

/// OpenClaw's runtime line: `Runtime: agent=main | session=agent:main:main | sessionId=… | repo=/path …`,
/// appended after a blank line to the first user message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeLine<S> {
    fields: Vec<(S, S)>,
    /// Where the blank line before the runtime line starts in the message.
    starts_at: usize,
}

impl<'t> RuntimeLine<&'t str> {
    /// Finds the runtime line at the end of `text`: its last non-empty line, after a blank line (or alone),
    /// starting with `Runtime: ` and made of `key=value` fields separated by ` | `, at least one of them one
    /// that OpenClaw writes. Anything else is left alone, so a user who types "Runtime: …" keeps their text.
    pub fn find(text: &'t str) -> Option<Self> {
        let body = text.trim_end();
        let line_start = body.rfind('\n').map_or(0, |i| i + 1);
        let fields_text = body[line_start..].strip_prefix(RUNTIME_PREFIX)?;
        let before = &body[..line_start];
        let starts_at = if before.is_empty() {
            0
        } else {
            // The line before must be blank: `…text\n\nRuntime: …`.
            let before = before.strip_suffix('\n')?;
            let before = before.strip_suffix('\r').unwrap_or(before);
            let blank_start = before.rfind('\n').map_or(0, |i| i + 1);
            if !before[blank_start..].trim().is_empty() {
                return None;
            }
            blank_start
        };
        let fields: Vec<(&str, &str)> = fields_text
            .split(" | ")
            .map(|field| field.trim().split_once('='))
            .collect::<Option<_>>()?;
        fields
            .iter()
            .any(|(key, _)| RUNTIME_FIELDS.contains(key))
            .then_some(Self { fields, starts_at })
    }

    fn into_owned(self) -> RuntimeLine<String> {
        RuntimeLine {
            fields: self
                .fields
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            starts_at: self.starts_at,
        }
    }
}

impl<S: AsRef<str>> RuntimeLine<S> {
    /// The value of field `name`, if present and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key.as_ref() == name)
            .map(|(_, value)| value.as_ref().trim())
            .filter(|value| !value.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instructions as the bridge first built them: each message's kept lines joined and trimmed, the
    /// messages joined by blank lines.
    fn instructions_by_joining(texts: &[&str]) -> Option<String> {
        let parts: Vec<String> = texts
            .iter()
            .map(|text| {
                let kept: Vec<&str> = text.lines().filter(|line| !is_volatile(line)).collect();
                kept.join("\n").trim().to_owned()
            })
            .filter(|text| !text.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    #[test]
    fn instructions_are_the_kept_lines_joined_and_trimmed() {
        let cases: &[&[&str]] = &[
            &["You are helpful.\nBe brief."],
            &[
                "\n\n  \n  Indented first line\nsecond\r\nthird\r\n\n \n",
                "Current date: today\nTime zone: UTC",
            ],
            &["Runtime: agent=main\n", "  developer rules  \n\n", ""],
            &["a\n\n\nb", "   ", "\tc\t\n  Time zone: UTC\nd  \n"],
            &["Time zone: UTC\nfirst\n\nCurrent date: today\nlast\nRuntime: agent=main"],
            &["keep Time zone: in the middle\n Current date: x\nTime zone: a Time zone: b\n\n"],
            &["Current date: only"],
            &["x\r\nTime zone: UTC\r\ny"],
            &[],
        ];
        for texts in cases {
            let json: Vec<String> = texts
                .iter()
                .map(|text| serde_json::json!({"role": "system", "content": text}).to_string())
                .collect();
            let messages: Vec<Message<'_>> = json
                .iter()
                .map(|message| serde_json::from_str(message).unwrap())
                .collect();
            assert_eq!(
                stable_instructions(&messages),
                instructions_by_joining(texts),
                "{texts:?}"
            );
        }
    }

    #[test]
    fn instructions_are_the_system_and_developer_messages_without_lines_that_change_each_turn() {
        let body = r#"{"messages":[
            {"role":"system","content":"You are the agent.\nRuntime: agent=main | session=agent:main:main\nBe brief.\nCurrent date: 2026-12-06\nTime zone: UTC"},
            {"role":"user","content":"hi"},
            {"role":"developer","content":[{"type":"text","text":"Use tools."}]},
            {"role":"system","content":"  "}
        ]}"#;
        let request: ChatRequest<'_> = serde_json::from_str(body).unwrap();
        assert_eq!(
            stable_instructions(&request.messages).as_deref(),
            Some("You are the agent.\nBe brief.\n\nUse tools.")
        );
        let none: ChatRequest<'_> =
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(stable_instructions(&none.messages), None);
    }

    #[test]
    fn trailing_tool_messages_are_results_and_a_later_user_message_is_a_new_turn() {
        let results = r#"{"user":"u","messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"w","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"sunny"},
            {"role":"user","content":[{"type":"text","text":"<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>> x <<<END_OPENCLAW_INTERNAL_CONTEXT>>>"}]}
        ]}"#;
        let request: ChatRequest<'_> = serde_json::from_str(results).unwrap();
        let turn = extract(&request, &HeaderMap::new(), None).unwrap();
        assert_eq!(turn.text, "weather?");
        assert_eq!(turn.tool_results, [ToolResult::new("c1", "sunny")]);
        let moved_on = r#"{"user":"u","messages":[
            {"role":"tool","tool_call_id":"c1","content":"sunny"},
            {"role":"user","content":"never mind"}
        ]}"#;
        let request: ChatRequest<'_> = serde_json::from_str(moved_on).unwrap();
        let turn = extract(&request, &HeaderMap::new(), None).unwrap();
        assert_eq!(turn.text, "never mind");
        assert!(turn.tool_results.is_empty());
    }

    #[test]
    fn runtime_line_needs_a_blank_line_and_known_fields() {
        let found =
            RuntimeLine::find("hello\n\nRuntime: agent=main | session=s | repo=/a=b").unwrap();
        assert_eq!(found.get("session"), Some("s"));
        assert_eq!(found.get("repo"), Some("/a=b"));
        assert_eq!(found.starts_at, 6);
        assert!(
            RuntimeLine::find("hello\nRuntime: agent=main").is_none(),
            "no blank line"
        );
        assert!(
            RuntimeLine::find("Runtime: is slow today").is_none(),
            "not fields"
        );
        assert!(
            RuntimeLine::find("x\n\nRuntime: colour=blue").is_none(),
            "unknown fields"
        );
        assert!(
            RuntimeLine::find("Runtime: session=s").is_some(),
            "alone in the message"
        );
        assert!(
            RuntimeLine::find("x\r\n\r\nRuntime: session=s\r\n").is_some(),
            "CRLF"
        );
    }
}
