//! The client's function tools as an MCP server of Claude Code's, in the bridge itself.
//!
//! Claude Code's `sdk` MCP servers live in the program that drives it: a process started with
//! `--mcp-config {"mcpServers":{"client":{"type":"sdk","name":"client"}}}` sends its MCP client's messages
//! for that server as `mcp_message` control requests on its output, and takes the server's answers as
//! control responses on its input (`docs/claude-cli-measurements.md`, N8). No socket and no token: the
//! pipes are the process's own. The model sees each tool as `mcp__client__NAME`; a `tools/call` carries the
//! model's `tool_use` id in `_meta["claudecode/toolUseId"]`, which becomes the OpenAI tool call's id, and
//! stays unanswered until the client sends the result.
//!
//! Tools are marked read-only (`readOnlyHint`), so that Claude Code runs calls of one step side by side:
//! the client gets them all in one answer, as OpenAI's parallel tool calls; and always loaded
//! (`_meta["anthropic/alwaysLoad"]`), so that the model sees them as it would a hosted model's tools.

use std::collections::HashMap;

use serde_json::{Value, json};
use synthesis_bridge::{ClientTool, ToolCall, ToolResult};

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

/// The answer to an open call: the client's result, or an error the model reads as the tool's failure.
pub(crate) fn call_result(call: &OpenCall, text: &str, is_error: bool) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": call.rpc_id,
        "result": {"content": [{"type": "text", "text": text}], "isError": is_error},
    })
}

/// The client's tool calls of one turn: what the model called in its current step, the calls Claude Code
/// waits on, and the answers for calls Claude Code has not asked for yet.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    step: Vec<ToolCall>,
    /// The ids of the calls last handed to the client, in order.
    handed: Vec<String>,
    open: Vec<OpenCall>,
    /// Answers waiting for their call: `(text, is_error)` by `tool_use` id.
    ready: HashMap<String, (String, bool)>,
    /// The client will not answer (it timed out, or sent a new message instead): every call gets an error.
    orphaned: Option<String>,
}

/// The result of a handed call the client's results said nothing about.
const NO_RESULT: &str = "The client returned no result for this call.";

/// The result of a call the main agent did not make in its own message (a subagent's): it never reaches
/// the client, who could not tell it apart.
const NOT_HANDED: &str = "The client's tools can be called only by the main agent.";

impl Calls {
    /// The model called client tool `name` with `input` (a `tool_use` block of id `id`).
    pub(crate) fn announce(&mut self, id: String, name: String, input: &Value) {
        self.step.push(ToolCall::new(id, name, input.to_string()));
    }

    /// The calls of the model's message that just ended, for the client, unless nobody will answer them.
    pub(crate) fn take_step(&mut self) -> Vec<ToolCall> {
        let step = std::mem::take(&mut self.step);
        if self.orphaned.is_some() {
            return Vec::new();
        }
        self.handed = step.iter().map(|call| call.id.clone()).collect();
        step
    }

    /// Claude Code waits on `call`: its answer if it can be given now. Claude Code writes a block's
    /// `assistant` record before it calls the tool, so a call of no announced block is not the main
    /// agent's.
    pub(crate) fn open(&mut self, call: OpenCall) -> Option<Value> {
        if let Some((text, is_error)) = self.ready.remove(&call.tool_use_id) {
            return Some(call_result(&call, &text, is_error));
        }
        if let Some(why) = &self.orphaned {
            return Some(call_result(&call, why, true));
        }
        let announced = self.handed.contains(&call.tool_use_id)
            || self.step.iter().any(|step| step.id == call.tool_use_id);
        if !announced {
            return Some(call_result(&call, NOT_HANDED, true));
        }
        self.open.push(call);
        None
    }

    /// The client's `results` for the handed calls: the answers to the open calls (the others are answered
    /// when Claude Code asks). A handed call without a result gets an error: the client has moved on.
    pub(crate) fn resolve(&mut self, results: Vec<ToolResult>) -> Vec<(OpenCall, Value)> {
        // A client may renumber the calls (OpenClaw does): a result for an id it was not given answers the
        // first handed call that has none yet, in order.
        let mut unanswered: Vec<String> = self
            .handed
            .iter()
            .filter(|id| !results.iter().any(|result| &result.call_id == *id))
            .cloned()
            .collect();
        unanswered.reverse();
        for result in results {
            let id = if self.handed.contains(&result.call_id) {
                result.call_id
            } else {
                let Some(taken) = unanswered.pop() else {
                    tracing::debug!(given = %result.call_id, "a result for no call of this turn");
                    continue;
                };
                tracing::debug!(given = %result.call_id, %taken, "a result under an id the bridge did not hand out");
                taken
            };
            self.ready.insert(id, (result.content, false));
        }
        for id in std::mem::take(&mut self.handed) {
            self.ready
                .entry(id)
                .or_insert_with(|| (NO_RESULT.to_owned(), true));
        }
        let (answerable, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|call| self.ready.contains_key(&call.tool_use_id));
        self.open = waiting;
        answerable
            .into_iter()
            .map(|call| {
                let (text, is_error) = self.ready.remove(&call.tool_use_id).unwrap_or_default();
                let answer = call_result(&call, &text, is_error);
                (call, answer)
            })
            .collect()
    }

    /// Nobody will send results (`why`): every open call, and every later one, gets an error.
    pub(crate) fn orphan(&mut self, why: &str) -> Vec<(OpenCall, Value)> {
        self.orphaned = Some(why.to_owned());
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|call| {
                let answer = call_result(&call, why, true);
                (call, answer)
            })
            .collect()
    }
}

fn tool_json(tool: &ClientTool) -> Value {
    let mut schema = tool.parameters.clone();
    // MCP wants an object schema; a client may declare none, or leave out `type`.
    if !schema.is_object() {
        schema = json!({"type": "object", "properties": {}});
    }
    if schema.get("type").is_none() {
        schema["type"] = json!("object");
    }
    json!({
        "name": tool.name,
        "description": tool.description.clone().unwrap_or_default(),
        "inputSchema": schema,
        "annotations": {"readOnlyHint": true},
        // Offered to the model directly, as a hosted model's tools are, not left for it to find with
        // Claude Code's tool search (which defers MCP tools unless told otherwise).
        "_meta": {"anthropic/alwaysLoad": true},
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
        let answered = call_result(&open, "sunny", false);
        assert_eq!(answered["id"], 2);
        assert_eq!(answered["result"]["content"][0]["text"], "sunny");
    }

    fn open_call(tool_use_id: &str) -> OpenCall {
        OpenCall {
            request_id: format!("r-{tool_use_id}"),
            rpc_id: json!(tool_use_id),
            tool_use_id: tool_use_id.to_owned(),
        }
    }

    #[test]
    fn results_answer_their_calls_by_id_or_in_order_when_the_client_renumbered_them() {
        let mut calls = Calls::default();
        calls.announce("toolu_a".into(), "read".into(), &json!({}));
        calls.announce("toolu_b".into(), "read".into(), &json!({}));
        assert_eq!(calls.take_step().len(), 2);
        assert_eq!(calls.open(open_call("toolu_a")), None);
        // One result by its id, one under an id of the client's own.
        let answered = calls.resolve(vec![
            ToolResult::new("call_renamed", "second"),
            ToolResult::new("toolu_a", "first"),
        ]);
        assert_eq!(answered.len(), 1);
        assert_eq!(answered[0].1["result"]["content"][0]["text"], "first");
        // The other call comes later and is answered at once.
        let later = calls.open(open_call("toolu_b")).unwrap();
        assert_eq!(later["result"]["content"][0]["text"], "second");
        // Nobody answers the next ones: errors.
        calls.announce("toolu_c".into(), "read".into(), &json!({}));
        assert_eq!(calls.open(open_call("toolu_c")), None);
        let failed = calls.orphan("gone");
        assert_eq!(failed[0].1["result"]["isError"], true);
        assert_eq!(
            calls.open(open_call("toolu_d")).unwrap()["result"]["isError"],
            true
        );
    }
}
