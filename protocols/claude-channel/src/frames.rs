//! The wire protocol between the bridge and agent-side plugins: JSON text frames, one object per
//! WebSocket message, told apart by `type`. `docs/protocol.md` describes it for plugin authors.
//!
//! It is the seed bridge's protocol, so that seed-era plugins keep working, with these additions: the
//! `token` of `hello`, the `message_id` of `reply`, the `error` frame, and the client's tool calls
//! (`tool_call` out, `tool_result` back). Beside it, the agent's hooks report over HTTP to [`HOOKS_PATH`]
//! (see [`hooks`](crate::hooks)).

use serde::{Deserialize, Serialize};
use synthesis_bridge::transport::InboundMessage;

/// The path the bridge serves WebSocket connections on.
pub const PATH: &str = "/bridge";

/// The path the agent's hooks post their reports to, on the same listener.
pub const HOOKS_PATH: &str = "/hooks";

/// The environment variable that carries the bridge's WebSocket URL into a spawned process.
pub const ENV_WS_URL: &str = "SYNTHESIS_WS_URL";
/// The environment variable that carries a spawned process's secret.
pub const ENV_TOKEN: &str = "SYNTHESIS_BRIDGE_TOKEN";
/// The environment variable that carries the session key a spawned process serves.
pub const ENV_SESSION: &str = "SYNTHESIS_OPENCLAW_SESSION";
/// The environment variable that carries the client's tools, when its requests offer some: a JSON array
/// of MCP tool definitions (`name`, `description`, `inputSchema`, …) for the plugin to list beside its own.
pub const ENV_CLIENT_TOOLS: &str = "SYNTHESIS_CLIENT_TOOLS";

/// A frame a plugin sends to the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PluginFrame {
    /// The first frame of a plugin connection.
    Hello {
        /// The plugin's process id, for logs.
        #[serde(default)]
        pid: Option<u32>,
        /// The session it serves (`SYNTHESIS_OPENCLAW_SESSION`).
        openclaw_session: String,
        /// Its secret (`SYNTHESIS_BRIDGE_TOKEN`). Seed-era plugins send none and are refused.
        #[serde(default)]
        token: Option<String>,
    },
    /// Part or all of the agent's answer.
    Reply {
        /// The text.
        #[serde(default)]
        content: String,
        /// Whether the answer is complete; absent means it is (the seed's rule).
        #[serde(default, rename = "final", skip_serializing_if = "Option::is_none")]
        is_final: Option<bool>,
        /// The `inbound.meta.message_id` this answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    /// The agent calls one of the client's tools; the bridge answers with `tool_result` once the client
    /// has run it.
    ToolCall {
        /// The call's id: the model's `tool_use` id when the agent gives it.
        id: String,
        /// The tool's name, as the client declared it.
        name: String,
        /// The arguments, a JSON object.
        #[serde(default)]
        arguments: serde_json::Value,
    },
    /// The agent failed the message in flight; the bridge ends the turn with this message.
    Error {
        /// What went wrong.
        message: String,
    },
    /// Liveness probe from the plugin; the bridge answers `pong`.
    Ping,
    /// The answer to the bridge's `ping`.
    Pong,
}

/// A frame the bridge sends to a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BridgeFrame {
    /// The `hello` was accepted.
    HelloAck,
    /// A user message for the agent.
    Inbound(InboundMessage),
    /// The answer to a `tool_call`.
    ToolResult {
        /// The call's id.
        id: String,
        /// The result's text.
        content: String,
        /// Whether the call failed (the client gave no result in time, the turn moved on, …).
        #[serde(default)]
        is_error: bool,
    },
    /// Liveness probe; answer `pong`.
    Ping,
    /// The answer to a plugin's `ping`.
    Pong,
}

impl BridgeFrame {
    /// The frame as the JSON text that goes on the wire.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("frames hold only strings and numbers")
    }
}

impl PluginFrame {
    /// The frame as the JSON text that goes on the wire.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("frames hold only strings and numbers")
    }
}

/// WebSocket close codes the bridge uses, beyond the standard ones.
pub mod close {
    /// The first frame was not `hello`.
    pub const EXPECTED_HELLO: u16 = 4001;
    /// A newer connection with the same secret took this one's place.
    pub const REPLACED: u16 = 4002;
    /// The session is unknown or the secret is wrong.
    pub const UNAUTHORIZED: u16 = 4003;
    /// The bridge stopped expecting this process (it was stopped or replaced).
    pub const REGISTRATION_ENDED: u16 = 4004;
    /// No `pong` came back in time.
    pub const NO_PONG: u16 = 4005;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> PluginFrame {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn seed_frames_parse() {
        assert_eq!(
            parse(r#"{"type":"hello","pid":42,"openclaw_session":"a::b"}"#),
            PluginFrame::Hello {
                pid: Some(42),
                openclaw_session: "a::b".into(),
                token: None
            }
        );
        assert_eq!(
            parse(r#"{"type":"reply","content":"hi"}"#),
            PluginFrame::Reply {
                content: "hi".into(),
                is_final: None,
                message_id: None
            }
        );
        assert_eq!(parse(r#"{"type":"pong"}"#), PluginFrame::Pong);
    }

    #[test]
    fn tool_calls_and_their_results_round_trip() {
        let call = parse(
            r#"{"type":"tool_call","id":"toolu_1","name":"read","arguments":{"path":"a.txt"}}"#,
        );
        assert_eq!(
            call,
            PluginFrame::ToolCall {
                id: "toolu_1".into(),
                name: "read".into(),
                arguments: serde_json::json!({"path": "a.txt"}),
            }
        );
        let result = BridgeFrame::ToolResult {
            id: "toolu_1".into(),
            content: "hello".into(),
            is_error: false,
        };
        assert_eq!(
            result.to_text(),
            r#"{"type":"tool_result","id":"toolu_1","content":"hello","is_error":false}"#
        );
    }

    #[test]
    fn wrong_types_and_unknown_frames_are_errors() {
        for bad in [
            r#"{"type":"reply","content":7}"#,
            r#"{"type":"reply","final":"yes"}"#,
            r#"{"type":"hello"}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"content":"no type"}"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<PluginFrame>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bridge_frames_have_the_seed_shape() {
        let inbound = InboundMessage::new("a::b", "hello");
        let json: serde_json::Value =
            serde_json::from_str(&BridgeFrame::Inbound(inbound.clone()).to_text()).unwrap();
        assert_eq!(json["type"], "inbound");
        assert_eq!(json["content"], "hello");
        assert_eq!(json["meta"]["chat_id"], "a::b");
        assert_eq!(json["meta"]["message_id"], inbound.meta.message_id.as_str());
        assert_eq!(BridgeFrame::HelloAck.to_text(), r#"{"type":"hello_ack"}"#);
        assert_eq!(BridgeFrame::Ping.to_text(), r#"{"type":"ping"}"#);
    }
}
