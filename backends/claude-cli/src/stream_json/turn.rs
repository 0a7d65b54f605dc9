//! One turn in the stream-json mode: write the message, relay each text delta as it comes, deny the tool
//! calls Claude Code asks about, and end with the prompt's `result`.

use std::time::Duration;

use serde_json::{Value, json};
use synthesis_bridge::spawner::ProcessHandle;
use synthesis_bridge::{BackendError, ClientTool, ReplyEvent, SessionKey, ToolCall};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::sdk_server::{self, McpReply, OpenCall, call_result};
use super::{Record, StreamJsonIo};
use crate::agent::{Agent, Io};
use crate::client_tools::{Answer, Calls, why};
use crate::config::ClaudeCliConfig;
use crate::pool::SlotGuard;
use crate::screen::{self, NO_CONVERSATION, flat};
use crate::turn::{Aftermath, FAR, TurnRun, exited_mid_turn, wait_ends};

/// How many times the interrupt is sent before a process that will not stop is stopped for good.
const INTERRUPT_ATTEMPTS: u32 = 5;

/// How long a process that exited has to finish writing its output, or one whose output ended to be seen
/// exiting; and how long a failed resume has to say why on standard error, which is read apart from the
/// output.
const SETTLE: Duration = Duration::from_millis(500);

impl TurnRun {
    /// The turn over stream-json; see the [module docs](self).
    pub(crate) async fn stream_json_exchange(&mut self) -> Aftermath {
        let config = self.config.clone();
        let turn_id = self.message.meta.message_id.clone();
        let (process, session, io) = parts(&mut self.slot);
        // A turn reads through its own `result` (or breaks the agent), so whatever is left came after it.
        // A request among it still waits for an answer.
        while let Ok(record) = io.records.try_recv() {
            debug!(%session, ?record, "a record from between turns");
            answer_request(process, session, &config, &io.tools, record).await;
        }
        // Given up already (its client left while it queued): nothing was said, nothing to undo.
        if self.cancel.is_cancelled() || self.shutdown.is_cancelled() {
            return self.fail(BackendError::Cancelled, Aftermath::Healthy).await;
        }
        io.prompts += 1;
        let first_prompt = io.prompts == 1;
        // The client's text, or the note that carries on with a message a retry asks again for.
        if let Err(err) = process
            .write(&super::user_line(&self.message.content))
            .await
        {
            let error = match tokio::time::timeout(SETTLE, process.wait()).await {
                Ok(exit) => died(process, exit, first_prompt),
                Err(_) => BackendError::failed(format!("cannot write to claude: {err}")),
            };
            return self.fail(error, Aftermath::Broken).await;
        }
        debug!(%session, "wrote the message");
        // It is Claude's now: one that gets no whole answer is what a retry carries on with.
        self.delivered = true;
        let mut heard_anything = false;
        let mut said_anything = false;
        let mut paragraph_break = false;
        // Once cancelled, how many interrupts went out.
        let mut interrupts = 0;
        let settle = tokio::time::sleep(FAR);
        tokio::pin!(settle);
        // Once the process exited: how, and until when its last records are awaited.
        let mut exited = None;
        let last_records = tokio::time::sleep(FAR);
        tokio::pin!(last_records);
        // The client's tool calls, and, once this request's answer ended with some, the wait for their
        // results.
        let mut calls = Calls::<OpenCall>::default();
        let mut waiting = None;
        loop {
            let (process, session, io) = parts(&mut self.slot);
            let record = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    return self.fail(BackendError::unavailable("the bridge is shutting down"), Aftermath::Broken).await;
                }
                () = self.cancel.cancelled(), if interrupts == 0 => None,
                () = &mut settle, if interrupts > 0 => None,
                record = io.records.recv() => Some(record),
                exit = process.wait(), if exited.is_none() => {
                    exited = Some(exit);
                    last_records.as_mut().reset(Instant::now() + SETTLE);
                    continue;
                }
                // Something outside claude's process group holds its output open.
                () = &mut last_records, if exited.is_some() => Some(None),
                ended = wait_ends(&mut waiting) => {
                    let wait = waiting.take().expect("a wait ended");
                    let taken = self.take_up(ended, wait, &mut calls).await;
                    if taken.results_came {
                        // The rest of the answer is a new response: it starts without a paragraph break.
                        said_anything = false;
                        paragraph_break = false;
                    }
                    let (process, session, _) = parts(&mut self.slot);
                    for (call, answer) in taken.answers {
                        answer_call(process, session, &call, &answer).await;
                    }
                    continue;
                }
            };
            let Some(record) = record else {
                // Cancelled, or an interrupt went unanswered.
                if interrupts == INTERRUPT_ATTEMPTS {
                    warn!(%session, interrupts, "claude does not stop; stopping its process");
                    return self.fail(BackendError::Cancelled, Aftermath::Broken).await;
                }
                interrupts += 1;
                debug!(%session, interrupts, "interrupting claude");
                let request = super::interrupt_line(&format!("interrupt-{turn_id}-{interrupts}"));
                if let Err(err) = process.write(&request).await {
                    warn!(%session, %err, "cannot send the interrupt");
                }
                settle.as_mut().reset(Instant::now() + config.cancel_settle);
                continue;
            };
            let Some(record) = record else {
                let exit = match exited {
                    Some(exit) => Some(exit),
                    None => tokio::time::timeout(SETTLE, process.wait()).await.ok(),
                };
                let error = match exit {
                    Some(exit) => died(process, exit, first_prompt && !heard_anything),
                    None => BackendError::failed(
                        "claude closed its output in the middle of the turn; the next turn starts it again",
                    ),
                };
                return self.fail(error, Aftermath::Broken).await;
            };
            heard_anything = true;
            match record {
                Record::TextStart => paragraph_break = said_anything,
                Record::TextDelta(text) if !text.is_empty() => {
                    if !said_anything {
                        debug!(%session, "the answer began");
                    }
                    said_anything = true;
                    let text = if std::mem::take(&mut paragraph_break) {
                        format!("\n\n{text}")
                    } else {
                        text
                    };
                    self.emit(ReplyEvent::TextDelta(text)).await;
                }
                Record::Mcp {
                    request_id,
                    server,
                    message,
                } => {
                    let tools = &io.tools;
                    if let Some(call) =
                        answer_mcp(process, session, tools, &request_id, &server, &message).await
                    {
                        debug!(%session, tool_use = %call.tool_use_id, "claude calls a client tool");
                        if let Some((call, answer)) = calls.open(call) {
                            answer_call(process, session, &call, &answer).await;
                        }
                    }
                }
                Record::ClientToolUses(uses) => {
                    for (id, name, input) in uses {
                        calls.announce(ToolCall::new(id, name, input.to_string()));
                    }
                }
                Record::MessageStop => {
                    let step = calls.take_step();
                    if step.is_empty() {
                        continue;
                    }
                    if interrupts > 0 {
                        // Cancelled: nobody takes the calls.
                        for (call, answer) in calls.orphan(why::CANCELLED) {
                            answer_call(process, session, &call, &answer).await;
                        }
                        continue;
                    }
                    // The answer to this request ends with the calls. Claude waits meanwhile.
                    info!(%session, calls = step.len(), "claude called the client's tools; waiting for their results");
                    waiting = Some(self.hand_out(step).await);
                }
                Record::Result(result) => {
                    debug!(%session, subtype = %result.subtype, "the prompt is over");
                    if interrupts > 0 {
                        return self.fail(BackendError::Cancelled, Aftermath::Healthy).await;
                    }
                    if result.is_error {
                        // A resume that failed: the first prompt of a resumed process ends before any
                        // model request, and standard error (read apart) says why.
                        if result.num_turns == 0
                            && io.resumed
                            && first_prompt
                            && said_no_conversation(process).await
                        {
                            warn!(%session, "claude cannot resume the conversation (\"No conversation found\"); the next turn starts a new one");
                            self.session.state.want_new_conversation();
                            return self
                                .fail(
                                    BackendError::failed("claude cannot resume this session's conversation (\"No conversation found\"); the next turn starts a new one"),
                                    Aftermath::Broken,
                                )
                                .await;
                        }
                        let error = BackendError::failed(format!(
                            "claude could not answer: {}",
                            result.failure()
                        ));
                        return self.fail(error, Aftermath::Healthy).await;
                    }
                    // Without partial messages (a setting could turn them off) the text comes only here.
                    if !said_anything
                        && let Some(text) = result.text.filter(|text| !text.is_empty())
                    {
                        self.emit(ReplyEvent::TextDelta(text)).await;
                    }
                    if let Some(usage) = result.usage {
                        self.emit(ReplyEvent::Usage(usage)).await;
                    }
                    self.answered = true;
                    self.emit(ReplyEvent::end()).await;
                    return Aftermath::Healthy;
                }
                other => answer_request(process, session, &config, &io.tools, other).await,
            }
        }
    }
}

/// The error of a turn whose claude ended with `exit`. One that `never_spoke` in its first prompt cannot
/// start at all (a bad flag, no login, …): that is the agent being unavailable, not a turn that failed.
fn died(
    process: &dyn ProcessHandle,
    exit: synthesis_bridge::spawner::ProcessExit,
    never_spoke: bool,
) -> BackendError {
    if !never_spoke {
        return exited_mid_turn(process, exit);
    }
    BackendError::unavailable(format!(
        "claude {} before it took the message. The next turn starts it again",
        screen::exit_reason(exit, &process.output().text()),
    ))
}

/// Answers `call` with `answer`.
async fn answer_call(
    process: &dyn ProcessHandle,
    session: &SessionKey,
    call: &OpenCall,
    answer: &Answer,
) {
    let message = call_result(call, answer);
    write_mcp(process, session, &call.request_id, Some(message)).await;
}

/// Answers Claude Code's MCP message `request_id` with `answer` (a JSON-RPC message; a notification needs
/// only an empty one).
async fn write_mcp(
    process: &dyn ProcessHandle,
    session: &SessionKey,
    request_id: &str,
    answer: Option<Value>,
) {
    let answer = answer.unwrap_or_else(|| json!({"jsonrpc": "2.0", "result": {}}));
    let line = super::response_line(request_id, json!({"mcp_response": answer}));
    send_answer(process, session, &line).await;
}

/// Answers Claude Code's MCP `message` for `server` (control request `request_id`) if it can be now: the
/// client's tools' server answers all but a call of a tool, which comes back for the turn to answer; a
/// message for any other server is refused.
async fn answer_mcp(
    process: &dyn ProcessHandle,
    session: &SessionKey,
    tools: &[ClientTool],
    request_id: &str,
    server: &str,
    message: &Value,
) -> Option<OpenCall> {
    if server != sdk_server::SERVER {
        refuse_server(process, session, request_id, server).await;
        return None;
    }
    match sdk_server::reply(request_id, message, tools) {
        McpReply::Now(answer) => {
            write_mcp(process, session, request_id, answer).await;
            None
        }
        McpReply::Call(call) => Some(call),
    }
}

/// Refuses a message for an MCP server the bridge does not run.
async fn refuse_server(
    process: &dyn ProcessHandle,
    session: &SessionKey,
    request_id: &str,
    server: &str,
) {
    let line = super::error_line(
        request_id,
        &format!("the bridge runs no MCP server {server:?}"),
    );
    send_answer(process, session, &line).await;
}

/// Writes an answer to a request of Claude Code's; one that cannot be written is logged (the process is
/// going, and the turn learns so from its output).
async fn send_answer(process: &dyn ProcessHandle, session: &SessionKey, line: &[u8]) {
    if let Err(err) = process.write(line).await {
        warn!(%session, %err, "cannot answer claude's request");
    }
}

/// Answers a request Claude Code waits on, if `record` is one: a tool's permission is denied by the policy,
/// an MCP message for the client's tools is answered (a call, outside a turn, fails), anything else is
/// refused. Other records need no answer.
async fn answer_request(
    process: &dyn ProcessHandle,
    session: &SessionKey,
    config: &ClaudeCliConfig,
    tools: &[ClientTool],
    record: Record,
) {
    let answer = match record {
        Record::Mcp {
            request_id,
            server,
            message,
        } => {
            if let Some(call) =
                answer_mcp(process, session, tools, &request_id, &server, &message).await
            {
                answer_call(process, session, &call, &Answer::error(why::NO_TURN)).await;
            }
            return;
        }
        Record::ToolPermission {
            request_id,
            tool_name,
        } => {
            info!(%session, tool = %tool_name, "claude asked to use a tool outside the permission policy; denied");
            super::response_line(&request_id, super::permission(config, &tool_name))
        }
        Record::ControlRequest {
            request_id,
            subtype,
        } => {
            debug!(%session, %subtype, "refused a request the bridge does not serve");
            super::error_line(
                &request_id,
                &format!("the bridge does not serve {subtype:?} requests"),
            )
        }
        Record::ControlResponse { request_id, error } => {
            debug!(%session, %request_id, ?error, "claude answered a request");
            return;
        }
        _ => return,
    };
    send_answer(process, session, &answer).await;
}

/// Whether claude's standard error says it has no conversation to resume, giving the reader of standard
/// error a moment to catch up with the output.
async fn said_no_conversation(process: &dyn ProcessHandle) -> bool {
    let output = process.output();
    if flat(&output.text()).contains(&flat(NO_CONVERSATION)) {
        return true;
    }
    tokio::time::timeout(SETTLE, output.wait_for(NO_CONVERSATION))
        .await
        .is_ok()
}

/// The agent's process, session and output: a stream-json turn runs on a launched stream-json agent.
fn parts(slot: &mut SlotGuard) -> (&dyn ProcessHandle, &SessionKey, &mut StreamJsonIo) {
    let Some(Agent {
        process,
        session,
        io: Io::StreamJson(io),
        ..
    }) = slot.as_mut()
    else {
        unreachable!("a stream-json turn runs on a launched stream-json agent");
    };
    (&**process, session, io)
}
