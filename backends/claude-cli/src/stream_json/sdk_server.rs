//! The client's function tools as an in-process (`sdk`) MCP server of Claude Code's, in the bridge itself.
//!
//! Claude Code's `sdk` MCP servers live in the program that drives it: a process started with
//! `--mcp-config {"mcpServers":{"client":{"type":"sdk","name":"client"}}}` sends its MCP client's messages
//! for that server as `mcp_message` control requests on its output, and takes the server's answers as
//! control responses on its input (`docs/claude-cli-measurements.md`, N8). No socket and no token: the
//! pipes are the process's own. The model sees each tool as `mcp__client__NAME`; a `tools/call` carries the
//! model's `tool_use` id in `_meta["claudecode/toolUseId"]`, which becomes the OpenAI tool call's id, and
//! stays unanswered until the client sends the result ([`Calls`](crate::client_tools::Calls)).

use serde_json::{Value, json};
use synthesis_bridge::ClientTool;

use crate::client_tools::{Answer, tool_json};

/// The server's name in Claude Code.
pub(crate) const SERVER: &str = "client";

/// How Claude Code names the server's tools: `mcp__client__NAME`.
pub(crate) const PREFIX: &str = "mcp__client__";

/// The `--mcp-config` that declares the server.
pub(crate) fn mcp_config() -> String {
    json!({"mcpServers": {SERVER: {"type": "sdk", "name": SERVER}}}).to_string()
}

/// The `--allowedTools` entry that lets the model call every tool of the server without asking: the client
/// offered them, and runs them itself.
pub(crate) fn allowed() -> String {
    format!("mcp__{SERVER}")
}

/// What to do with one MCP message of Claude Code's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum McpReply {
    /// Answer at once with this JSON-RPC message (`None` for a notification, which needs only the control
    /// response).
    Now(Option<Value>),
    /// A call of a client tool: answered when the client sends its result.
    Call(OpenCall),
}

/// A `tools/call` Claude Code waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenCall {
    /// The control request to answer.
    pub(crate) request_id: String,
    /// The JSON-RPC id inside it.
    pub(crate) rpc_id: Value,
    /// The model's `tool_use` id: the OpenAI tool call's id.
    pub(crate) tool_use_id: String,
}

/// The server's answer to `message`, with `tools` on offer.
pub(crate) fn reply(request_id: &str, message: &Value, tools: &[ClientTool]) -> McpReply {
    let Some(rpc_id) = message.get("id").filter(|id| !id.is_null()).cloned() else {
        return McpReply::Now(None);
    };
    let result = match message["method"].as_str().unwrap_or_default() {
        "initialize" => json!({
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": SERVER, "version": env!("CARGO_PKG_VERSION")},
        }),
        "tools/list" => json!({"tools": tools.iter().map(tool_json).collect::<Vec<_>>()}),
        "tools/call" => {
            let tool_use_id = message["params"]["_meta"]["claudecode/toolUseId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            return McpReply::Call(OpenCall {
                request_id: request_id.to_owned(),
                rpc_id,
                tool_use_id,
            });
        }
        "ping" => json!({}),
        method => {
            return McpReply::Now(Some(json!({
                "jsonrpc": "2.0",
                "id": rpc_id,
                "error": {"code": -32601, "message": format!("the client's tools serve no {method}")},
            })));
        }
    };
    McpReply::Now(Some(
        json!({"jsonrpc": "2.0", "id": rpc_id, "result": result}),
    ))
}

impl crate::client_tools::OpenCall for OpenCall {
    fn tool_use_id(&self) -> &str {
        &self.tool_use_id
    }
}

/// The answer to an open call: the client's result, or an error the model reads as the tool's failure.
pub(crate) fn call_result(call: &OpenCall, answer: &Answer) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": call.rpc_id,
        "result": {"content": [{"type": "text", "text": answer.text}], "isError": answer.is_error},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> ClientTool {
        ClientTool::new(
            "get_weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        )
        .with_description("Weather for a city")
    }

    #[test]
    fn the_handshake_and_the_list_are_answered_and_a_call_waits() {
        let init = json!({"method": "initialize", "params": {"protocolVersion": "2025-11-25"}, "jsonrpc": "2.0", "id": 0});
        let McpReply::Now(Some(answer)) = reply("r-0", &init, &[]) else {
            panic!("initialize is answered at once");
        };
        assert_eq!(answer["result"]["protocolVersion"], "2025-11-25");
        assert_eq!(
            reply(
                "r-1",
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                &[]
            ),
            McpReply::Now(None)
        );
        let list = json!({"method": "tools/list", "jsonrpc": "2.0", "id": 1});
        let McpReply::Now(Some(listed)) = reply("r-2", &list, &[weather()]) else {
            panic!("tools/list is answered at once");
        };
        let tool = &listed["result"]["tools"][0];
        assert_eq!(tool["name"], "get_weather");
        assert_eq!(tool["inputSchema"]["properties"]["city"]["type"], "string");
        assert_eq!(tool["annotations"]["readOnlyHint"], true);
        assert_eq!(tool["_meta"]["anthropic/alwaysLoad"], true);
        // As Claude Code 2.1.329 sends it.
        let call = json!({"method": "tools/call", "params": {"name": "get_weather", "arguments": {"city": "Paris"},
                          "_meta": {"claudecode/toolUseId": "toolu_1", "progressToken": 2}}, "jsonrpc": "2.0", "id": 2});
        let McpReply::Call(open) = reply("r-3", &call, &[weather()]) else {
            panic!("a call waits for the client");
        };
        assert_eq!(open.tool_use_id, "toolu_1");
        let answered = call_result(&open, &Answer::result("sunny"));
        assert_eq!(answered["id"], 2);
        assert_eq!(answered["result"]["content"][0]["text"], "sunny");
    }
}
