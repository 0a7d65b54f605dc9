//! The client's function tools, as both modes offer them to Claude: the MCP tool definitions, and the
//! bookkeeping of one turn's calls, from Claude's call to the client's result.
//!
//! Each mode serves the tools from an MCP server of its own (the stream-json mode from the bridge itself,
//! over the control channel; the channel mode from the channel plugin) and hands the calls to the turn,
//! which gives them to the client as OpenAI tool calls and answers them with the client's results.
//!
//! Tools are marked read-only (`readOnlyHint`), so that Claude Code runs calls of one step side by side:
//! the client can get them in one answer, as OpenAI's parallel tool calls; and always loaded
//! (`_meta["anthropic/alwaysLoad"]`), so that the model sees them as it would a hosted model's tools
//! (`docs/claude-cli-measurements.md`, N8).

use std::collections::HashMap;

use serde_json::{Value, json};
use synthesis_bridge::{ClientTool, ToolCall, ToolResult};

use crate::turn::Resumed;

/// The MCP definition of `tool`.
pub(crate) fn tool_json(tool: &ClientTool) -> Value {
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

/// A call Claude Code waits on, as the mode must answer it.
pub(crate) trait OpenCall {
    /// The model's `tool_use` id: the OpenAI tool call's id.
    fn tool_use_id(&self) -> &str;
}

/// A call known by its id alone.
impl OpenCall for String {
    fn tool_use_id(&self) -> &str {
        self
    }
}

/// What a call gets: the client's result, or an error the model reads as the tool's failure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Answer {
    pub(crate) text: String,
    pub(crate) is_error: bool,
}

impl Answer {
    pub(crate) fn result(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            is_error: false,
        }
    }

    pub(crate) fn error(why: impl Into<String>) -> Self {
        Self {
            text: why.into(),
            is_error: true,
        }
    }
}

/// Why nobody will answer a turn's calls.
pub(crate) mod why {
    /// The client sent a new message instead of the results.
    pub(crate) const ABANDONED: &str =
        "The person sent a new message instead of this tool's result; the call was not run.";
    /// `--tool-result-timeout` passed.
    pub(crate) const TIMED_OUT: &str =
        "The client did not return this tool's result in time; the call failed.";
    /// The request was cancelled before the calls were handed out.
    pub(crate) const CANCELLED: &str = "The request was cancelled; the call was not run.";
    /// A call outside a turn.
    pub(crate) const NO_TURN: &str = "The client's tools can be called only while a turn runs.";
}

/// The client's tool calls of one turn: what the model called in its current step, the calls Claude Code
/// waits on, and the answers for calls Claude Code has not asked for yet.
#[derive(Debug)]
pub(crate) struct Calls<C> {
    step: Vec<ToolCall>,
    /// The ids of the calls last handed to the client, in order.
    handed: Vec<String>,
    open: Vec<C>,
    /// Answers waiting for their call, by `tool_use` id.
    ready: HashMap<String, Answer>,
    /// The client will not answer (it timed out, or sent a new message instead): every call gets an error.
    orphaned: Option<String>,
}

impl<C> Default for Calls<C> {
    fn default() -> Self {
        Self {
            step: Vec::new(),
            handed: Vec::new(),
            open: Vec::new(),
            ready: HashMap::new(),
            orphaned: None,
        }
    }
}

/// The result of a handed call the client's results said nothing about.
const NO_RESULT: &str = "The client returned no result for this call.";

/// The result of a call the main agent did not make in its own message (a subagent's): it never reaches
/// the client, who could not tell it apart.
const NOT_HANDED: &str = "The client's tools can be called only by the main agent.";

impl<C: OpenCall> Calls<C> {
    /// The model called one of the client's tools (its `tool_use` id is the call's id). Once nobody will
    /// answer, there is nothing to hand out: the call gets its error when it is opened.
    pub(crate) fn announce(&mut self, call: ToolCall) {
        if self.orphaned.is_none() {
            self.step.push(call);
        }
    }

    /// Whether calls wait to be handed to the client.
    pub(crate) fn have_step(&self) -> bool {
        !self.step.is_empty()
    }

    /// The calls announced since the last step, for the client, unless nobody will answer them.
    pub(crate) fn take_step(&mut self) -> Vec<ToolCall> {
        let step = std::mem::take(&mut self.step);
        if self.orphaned.is_some() {
            return Vec::new();
        }
        // Calls handed earlier and still unanswered stay the client's to answer.
        self.handed.extend(step.iter().map(|call| call.id.clone()));
        step
    }

    /// Claude Code waits on `call`: back with its answer if it can be given now. A call must have been
    /// announced first (in the stream-json mode Claude Code writes a block's `assistant` record before it
    /// calls the tool, so a call of no announced block is not the main agent's).
    pub(crate) fn open(&mut self, call: C) -> Option<(C, Answer)> {
        if let Some(answer) = self.ready.remove(call.tool_use_id()) {
            return Some((call, answer));
        }
        if let Some(why) = &self.orphaned {
            return Some((call, Answer::error(why.clone())));
        }
        let id = call.tool_use_id();
        let announced = self.handed.iter().any(|handed| handed == id)
            || self.step.iter().any(|step| step.id == id);
        if !announced {
            return Some((call, Answer::error(NOT_HANDED)));
        }
        self.open.push(call);
        None
    }

    /// The client's `results` for the handed calls: the answers to the open calls (the others are answered
    /// when Claude Code asks). A handed call without a result gets an error: the client has moved on.
    pub(crate) fn resolve(&mut self, results: Vec<ToolResult>) -> Vec<(C, Answer)> {
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
            self.ready.insert(id, Answer::result(result.content));
        }
        for id in std::mem::take(&mut self.handed) {
            self.ready
                .entry(id)
                .or_insert_with(|| Answer::error(NO_RESULT));
        }
        let (answerable, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|call| self.ready.contains_key(call.tool_use_id()));
        self.open = waiting;
        answerable
            .into_iter()
            .map(|call| {
                let answer = self.ready.remove(call.tool_use_id()).unwrap_or_default();
                (call, answer)
            })
            .collect()
    }

    /// The answers the open calls get now that the wait for the client's results ended as `resumed`.
    pub(crate) fn take_up(&mut self, resumed: Resumed) -> Vec<(C, Answer)> {
        match resumed {
            Resumed::Results(results) => self.resolve(results),
            Resumed::Abandoned => self.orphan(why::ABANDONED),
            Resumed::TimedOut => self.orphan(why::TIMED_OUT),
        }
    }

    /// Nobody will send results (`why`, unless an earlier reason stands): every open call, and every later
    /// one, gets an error.
    pub(crate) fn orphan(&mut self, why: &str) -> Vec<(C, Answer)> {
        let why = self.orphaned.get_or_insert_with(|| why.to_owned()).clone();
        self.step.clear();
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|call| (call, Answer::error(why.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> String {
        id.to_owned()
    }

    fn read(id: &str) -> ToolCall {
        ToolCall::new(id, "read", "{}")
    }

    #[test]
    fn results_answer_their_calls_by_id_or_in_order_when_the_client_renumbered_them() {
        let mut calls = Calls::default();
        calls.announce(read("toolu_a"));
        calls.announce(read("toolu_b"));
        assert_eq!(calls.take_step().len(), 2);
        assert_eq!(calls.open(call("toolu_a")), None);
        // One result by its id, one under an id of the client's own.
        let answered = calls.resolve(vec![
            ToolResult::new("call_renamed", "second"),
            ToolResult::new("toolu_a", "first"),
        ]);
        assert_eq!(answered, [(call("toolu_a"), Answer::result("first"))]);
        // The other call comes later and is answered at once.
        let later = calls.open(call("toolu_b")).unwrap();
        assert_eq!(later.1, Answer::result("second"));
        // Nobody answers the next ones: errors.
        calls.announce(read("toolu_c"));
        assert_eq!(calls.open(call("toolu_c")), None);
        let failed = calls.orphan("gone");
        assert_eq!(failed, [(call("toolu_c"), Answer::error("gone"))]);
        // Later calls have nothing to hand out, and fail when opened.
        calls.announce(read("toolu_d"));
        assert!(!calls.have_step());
        assert!(calls.open(call("toolu_d")).unwrap().1.is_error);
    }

    #[test]
    fn a_call_of_no_announced_block_fails_and_a_step_handed_in_two_parts_is_answered_whole() {
        let mut calls = Calls::default();
        let (subagents, answer) = calls.open(call("toolu_sub")).unwrap();
        assert_eq!(subagents, "toolu_sub");
        assert_eq!(answer, Answer::error(NOT_HANDED));
        // One call handed out, its results come; then the next one of the same step.
        calls.announce(read("toolu_1"));
        assert_eq!(calls.open(call("toolu_1")), None);
        assert_eq!(calls.take_step().len(), 1);
        calls.announce(read("toolu_2"));
        assert_eq!(calls.open(call("toolu_2")), None);
        assert!(calls.have_step());
        let answered = calls.resolve(vec![ToolResult::new("toolu_1", "one")]);
        assert_eq!(answered, [(call("toolu_1"), Answer::result("one"))]);
        assert_eq!(calls.take_step()[0].id, "toolu_2");
        let answered = calls.resolve(vec![ToolResult::new("toolu_2", "two")]);
        assert_eq!(answered, [(call("toolu_2"), Answer::result("two"))]);
    }
}
