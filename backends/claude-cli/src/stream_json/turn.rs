//! One turn in the stream-json mode: write the message, relay each text delta as it comes, deny the tool
//! calls Claude Code asks about, and end with the prompt's `result`.

use std::time::Duration;

use std::pin::Pin;
use synthesis_bridge::spawner::ProcessHandle;

use serde_json::{Value, json};
use synthesis_bridge::{
    BackendError, ClientTool, FinishReason, ReplyEvent, SessionKey, ToolResult,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client_tools::{self, Calls, McpReply};
use super::{Record, StreamJsonIo};
use crate::agent::{Agent, Io};
use crate::config::ClaudeCliConfig;
use crate::pool::SlotGuard;
use crate::screen::{self, NO_CONVERSATION, flat};
use crate::turn::{Aftermath, FAR, Resumption, TurnRun, exited_mid_turn};

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
        let mut calls = Calls::default();
        let mut paused: Option<Paused> = None;
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
                resumed = resumption(&mut paused) => {
                    let mut resumed = resumed;
                    if let Resumed::TimedOut = resumed {
                        // Results handed over just as the wait ran out still count.
                        self.session.state.take_paused();
                        if let Some(waiting) = paused.as_mut() {
                            waiting.resumption.close();
                            // After `close`, `recv` takes what a sender had begun to hand over and then
                            // says there is nothing more.
                            match waiting.resumption.recv().await {
                                Some(Resumption::Results { results, events, cancel }) => {
                                    resumed = Resumed::Results { results, events, cancel };
                                }
                                Some(Resumption::Abandoned) => resumed = Resumed::Abandoned,
                                None => {}
                            }
                        }
                    }
                    paused = None;
                    let answers = match resumed {
                        Resumed::Results { results, events, cancel } => {
                            debug!(%session, results = results.len(), "the client's tool results came; claude goes on");
                            self.events = events;
                            self.cancel = cancel;
                            // The rest of the answer is a new response: it starts without a paragraph break.
                            said_anything = false;
                            paragraph_break = false;
                            calls.resolve(results)
                        }
                        Resumed::Abandoned => {
                            // Nobody hears the rest of this turn: stop it, so that the new message need not
                            // wait for it.
                            self.cancel = cancelled();
                            calls.orphan("The person sent a new message instead of this tool's result; the call was not run.")
                        }
                        Resumed::TimedOut => {
                            // Not interrupted: an interrupt right after the error answer makes Claude Code
                            // record the call as refused by the user, and the model loses why it failed
                            // (N8). Claude finishes the turn, unheard.
                            warn!(%session, timeout = ?config.tool_result_timeout, "the client sent no tool results in time: the calls get an error");
                            calls.orphan("The client did not return this tool's result in time; the call failed.")
                        }
                    };
                    for (call, answer) in answers {
                        write_mcp(process, session, &call.request_id, Some(answer)).await;
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
                    if server != client_tools::SERVER {
                        refuse_server(process, session, &request_id, &server).await;
                        continue;
                    }
                    match client_tools::reply(&request_id, &message, &io.tools) {
                        McpReply::Now(answer) => {
                            write_mcp(process, session, &request_id, answer).await;
                        }
                        McpReply::Call(call) => {
                            debug!(%session, tool_use = %call.tool_use_id, "claude calls a client tool");
                            let request_id = call.request_id.clone();
                            if let Some(answer) = calls.open(call) {
                                write_mcp(process, session, &request_id, Some(answer)).await;
                            }
                        }
                    }
                }
                Record::ClientToolUses(uses) => {
                    for (id, name, input) in uses {
                        calls.announce(id, name, &input);
                    }
                }
                Record::MessageStop => {
                    let step = calls.take_step();
                    if step.is_empty() {
                        continue;
                    }
                    if interrupts > 0 {
                        // Cancelled: nobody takes the calls.
                        for (call, answer) in
                            calls.orphan("The request was cancelled; the call was not run.")
                        {
                            write_mcp(process, session, &call.request_id, Some(answer)).await;
                        }
                        continue;
                    }
                    // The answer to this request ends with the calls; its stream ends, so that the
                    // session's next request (with the results) can come in. Claude waits meanwhile.
                    // Registered first: the results may come as soon as the client has the calls.
                    info!(%session, calls = step.len(), "claude called the client's tools; waiting for their results");
                    let (resume, resumption) = mpsc::channel(1);
                    self.session.state.pause(resume);
                    for call in step {
                        self.emit(ReplyEvent::ToolCall(call)).await;
                    }
                    self.answered = true;
                    self.emit(ReplyEvent::End(FinishReason::ToolCalls)).await;
                    self.events = mpsc::channel(1).0;
                    self.cancel = CancellationToken::new();
                    paused = Some(Paused {
                        resumption,
                        until: Box::pin(tokio::time::sleep(config.tool_result_timeout)),
                    });
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

/// The wait of a turn whose answer ended with calls of the client's tools.
struct Paused {
    resumption: mpsc::Receiver<Resumption>,
    /// When the calls get an error instead (`--tool-result-timeout`).
    until: Pin<Box<Sleep>>,
}

/// How a wait for tool results ended.
enum Resumed {
    Results {
        results: Vec<ToolResult>,
        events: mpsc::Sender<ReplyEvent>,
        cancel: CancellationToken,
    },
    Abandoned,
    TimedOut,
}

/// How the wait in `paused` ends; never, when there is none.
async fn resumption(paused: &mut Option<Paused>) -> Resumed {
    let Some(paused) = paused else {
        return std::future::pending().await;
    };
    tokio::select! {
        resumption = paused.resumption.recv() => match resumption {
            Some(Resumption::Results { results, events, cancel }) => Resumed::Results { results, events, cancel },
            Some(Resumption::Abandoned) | None => Resumed::Abandoned,
        },
        () = &mut paused.until => Resumed::TimedOut,
    }
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
    if let Err(err) = process.write(&line).await {
        warn!(%session, %err, "cannot answer claude's MCP message");
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
    if let Err(err) = process.write(&line).await {
        warn!(%session, %err, "cannot answer claude's MCP message");
    }
}

/// A token that is cancelled already: the turn interrupts claude at once.
fn cancelled() -> CancellationToken {
    let token = CancellationToken::new();
    token.cancel();
    token
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
            if server != client_tools::SERVER {
                return refuse_server(process, session, &request_id, &server).await;
            }
            let answer = match client_tools::reply(&request_id, &message, tools) {
                McpReply::Now(answer) => answer,
                McpReply::Call(call) => Some(client_tools::call_result(
                    &call,
                    "The client's tools can be called only while a turn runs.",
                    true,
                )),
            };
            return write_mcp(process, session, &request_id, answer).await;
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
    if let Err(err) = process.write(&answer).await {
        warn!(%session, %err, "cannot answer claude's request");
    }
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
