//! One turn: `session/prompt` with the user's text, each `agent_message_chunk` relayed as a delta as it
//! comes, the agent's permission requests answered by the policy, and the prompt's answer (its stop
//! reason and usage) as the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_client_protocol_schema::v1::{
    CancelNotification, ContentBlock, PromptRequest, PromptResponse, RequestPermissionRequest,
    SessionNotification, SessionUpdate, StopReason,
};
use serde_json::Value;
use synthesis_bridge::{BackendError, FinishReason, ReplyEvent, Usage};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agent::{Agent, EXIT_SETTLE};
use crate::config::AcpConfig;
use crate::permission::tool_names;
use crate::pool::{Slot, SlotGuard};
use crate::rpc::{CallError, Incoming, cancelled_permission, not_served};

/// A time far enough away to stand for "never" in a `sleep` that is armed later.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// What a cancelled prompt leaves: a process to replace, its session reopened on the next turn. The Claude
/// agent (`@zed-industries/claude-agent-acp` 0.23.1) answers the prompt after a cancelled one at once with
/// an empty `end_turn`, and from then on every answer one prompt late (`docs/acp-measurements.md`); a
/// client cannot tell that from a real empty answer. A new process costs about half a second on the
/// next turn; cancels are rare (a client that went away).
const AFTER_CANCEL: Aftermath = Aftermath::Broken;

/// JSON-RPC error code ACP agents answer for a session they do not have.
const RESOURCE_NOT_FOUND: i64 = -32002;

/// What a turn left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aftermath {
    /// The agent can take the next turn.
    Healthy,
    /// The process died or must be stopped: the next turn starts a new one.
    Broken,
}

/// A turn in flight. It holds its session's slot until the agent is free again.
pub(crate) struct TurnRun {
    pub(crate) slot: Arc<Slot>,
    pub(crate) agent: SlotGuard,
    pub(crate) text: String,
    pub(crate) cancel: CancellationToken,
    pub(crate) shutdown: CancellationToken,
    pub(crate) config: Arc<AcpConfig>,
    pub(crate) events: mpsc::Sender<ReplyEvent>,
    /// The turn of a request that named no session: its process is stopped when it is over.
    pub(crate) one_off: bool,
    /// The fingerprint of the client's instructions with this turn: the agent has them once the message
    /// reached it (with them, or without a change).
    pub(crate) instructions: u64,
    /// Whether the agent has the prompt: it sent an update about it, or answered it.
    pub(crate) delivered: bool,
}

impl TurnRun {
    pub(crate) async fn run(mut self) {
        let aftermath = self.exchange().await;
        if let Some(agent) = self.agent.as_ref() {
            agent.rpc.end_turn();
        }
        if self.delivered {
            self.slot.state.instructions.remember(self.instructions);
        }
        if (aftermath == Aftermath::Broken || self.one_off)
            && let Some(agent) = self.agent.take()
        {
            agent.stop().await;
        }
        // Idle from now, not from the turn's start: the sweeper may look as soon as the slot is free.
        self.slot.touch();
    }

    async fn emit(&self, event: ReplyEvent) {
        // A consumer that went away has cancelled the turn; it is still finished properly.
        let _ = self.events.send(event).await;
    }

    async fn fail(&self, error: BackendError, aftermath: Aftermath) -> Aftermath {
        self.emit(ReplyEvent::Error(error)).await;
        aftermath
    }

    fn agent(&mut self) -> &mut Agent {
        self.agent
            .as_mut()
            .expect("a turn runs on a launched agent")
    }

    async fn exchange(&mut self) -> Aftermath {
        let agent = self.agent();
        let session_id = agent
            .session_id
            .clone()
            .expect("a turn runs on an opened session");
        agent.rpc.begin_turn();
        // Given up already (its client left while it queued): nothing was said, nothing to undo.
        if self.cancel.is_cancelled() || self.shutdown.is_cancelled() {
            return self.fail(BackendError::Cancelled, Aftermath::Healthy).await;
        }
        let prompt = PromptRequest::new(
            session_id.clone(),
            vec![ContentBlock::from(self.text.clone())],
        );
        let mut call = self.agent().rpc.call("session/prompt", prompt);
        let mut said_anything = false;
        // The agent's own names of the tools it announced, by call id, for the permission requests.
        let mut tool_names: HashMap<String, Vec<String>> = HashMap::new();
        let mut cancelled = false;
        let grace = tokio::time::sleep(FAR);
        tokio::pin!(grace);
        // Once the process exited: until when its last words on its output are awaited.
        let mut exited = false;
        let last_output = tokio::time::sleep(FAR);
        tokio::pin!(last_output);
        loop {
            let agent = self
                .agent
                .as_mut()
                .expect("a turn runs on a launched agent");
            // Biased, and the agent's messages before its answer: the reader queues a message before it
            // reads the next line, so every chunk the agent sent before answering the prompt is taken
            // before the answer ends the turn.
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    return self.fail(BackendError::unavailable("the bridge is shutting down"), Aftermath::Broken).await;
                }
                () = self.cancel.cancelled(), if !cancelled => {
                    debug!(session = %agent.session, "cancelling the prompt");
                    agent.rpc.notify("session/cancel", CancelNotification::new(session_id.clone()));
                    cancelled = true;
                    grace.as_mut().reset(Instant::now() + self.config.cancel_grace);
                }
                () = &mut grace => {
                    warn!(session = %agent.session, grace = ?self.config.cancel_grace, "the agent did not end the cancelled prompt; stopping its process");
                    return self.fail(BackendError::Cancelled, Aftermath::Broken).await;
                }
                Some(incoming) = agent.rpc.incoming.recv() => match incoming {
                    Incoming::Notification { method, params } if method == "session/update" => {
                        // The agent works on the prompt: it has it.
                        self.delivered = true;
                        if let Some((call, names)) = announced_tool(&params) {
                            tool_names.insert(call, names);
                            continue;
                        }
                        let Some(text) = message_text(params, &session_id) else { continue };
                        if text.is_empty() {
                            continue;
                        }
                        if !said_anything {
                            debug!(session = %agent.session, "the answer began");
                        }
                        said_anything = true;
                        self.emit(ReplyEvent::TextDelta(text)).await;
                    }
                    Incoming::Notification { .. } => {}
                    Incoming::Request { id, method, params } => {
                        let answer = if method == "session/request_permission" {
                            permission(agent, &self.config, params, &tool_names, cancelled)
                        } else {
                            debug!(session = %agent.session, %method, "refused a request the bridge does not serve");
                            Err(not_served(&method))
                        };
                        agent.rpc.respond(id, answer);
                    }
                },
                answer = call.answer() => return match answer {
                    Ok(answer) => {
                        self.delivered = true;
                        self.end(answer, cancelled).await
                    }
                    Err(CallError::Rpc { .. }) if cancelled => self.fail(BackendError::Cancelled, AFTER_CANCEL).await,
                    Err(err @ CallError::Rpc { code, .. }) => {
                        let failure = format!("the ACP agent {} could not answer: {err}{}", agent.name, agent.last_words());
                        if code == RESOURCE_NOT_FOUND {
                            // The agent reopened the session but no longer has it: a new one, next time.
                            warn!(session = %agent.session, "the agent no longer has the session's conversation; the next turn starts a new one");
                            self.slot.state.want_new_session();
                            let failure = format!("{failure}. The next turn starts a new conversation");
                            return self.fail(BackendError::failed(failure), Aftermath::Broken).await;
                        }
                        self.fail(BackendError::failed(failure), Aftermath::Healthy).await
                    }
                    Err(CallError::Closed) => {
                        let (name, how) = (agent.name.clone(), agent.how_it_ended().await);
                        let failure = format!("the ACP agent {name} {how} in the middle of the turn. The next turn starts it again and reopens the conversation");
                        self.fail(BackendError::failed(failure), Aftermath::Broken).await
                    }
                },
                // Something outside the agent's process group may hold its output open: its exit is
                // the end too, once its last words have had a moment.
                _ = agent.process.wait(), if !exited => {
                    exited = true;
                    last_output.as_mut().reset(Instant::now() + EXIT_SETTLE);
                }
                () = &mut last_output => {
                    let (name, how) = (agent.name.clone(), agent.how_it_ended().await);
                    let failure = format!("the ACP agent {name} {how} in the middle of the turn. The next turn starts it again and reopens the conversation");
                    return self.fail(BackendError::failed(failure), Aftermath::Broken).await;
                }
            }
        }
    }

    /// Ends the turn with the prompt's answer.
    async fn end(&self, answer: Value, cancelled: bool) -> Aftermath {
        let response: PromptResponse = match serde_json::from_value(answer) {
            Ok(response) => response,
            Err(err) => {
                let error = BackendError::failed(format!(
                    "the ACP agent answered session/prompt with something that is not ACP: {err}"
                ));
                return self.fail(error, Aftermath::Broken).await;
            }
        };
        if cancelled {
            return self.fail(BackendError::Cancelled, AFTER_CANCEL).await;
        }
        let finish = match response.stop_reason {
            StopReason::Cancelled => {
                // Not asked for: the agent gave up on its own.
                let error = BackendError::failed("the agent cancelled the prompt on its own");
                return self.fail(error, AFTER_CANCEL).await;
            }
            StopReason::Refusal => {
                let error = BackendError::Rejected("the agent refused to answer".to_owned());
                return self.fail(error, Aftermath::Healthy).await;
            }
            StopReason::MaxTokens | StopReason::MaxTurnRequests => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        if let Some(usage) = response.usage {
            let prompt = usage.input_tokens
                + usage.cached_read_tokens.unwrap_or_default()
                + usage.cached_write_tokens.unwrap_or_default();
            self.emit(ReplyEvent::Usage(Usage::new(prompt, usage.output_tokens)))
                .await;
        }
        self.emit(ReplyEvent::End(finish)).await;
        Aftermath::Healthy
    }
}

/// The text of an `agent_message_chunk` of session `session_id`, if `params` is one.
fn message_text(params: Value, session_id: &str) -> Option<String> {
    // Only chunks are read: an update of a kind this ACP version does not know is skipped, not an error.
    if params["update"]["sessionUpdate"] != "agent_message_chunk" {
        return None;
    }
    let notification: SessionNotification = serde_json::from_value(params).ok()?;
    if notification.session_id.to_string() != session_id {
        return None;
    }
    match notification.update {
        SessionUpdate::AgentMessageChunk(chunk) => match chunk.content {
            ContentBlock::Text(text) => Some(text.text),
            _ => None,
        },
        _ => None,
    }
}

/// The call id and the agent's own names of the tool in a `tool_call` or `tool_call_update`, if `params` is
/// one that names it.
fn announced_tool(params: &Value) -> Option<(String, Vec<String>)> {
    let update = &params["update"];
    if !matches!(
        update["sessionUpdate"].as_str(),
        Some("tool_call" | "tool_call_update")
    ) {
        return None;
    }
    let names = tool_names(update["_meta"].as_object());
    if names.is_empty() {
        return None;
    }
    Some((update["toolCallId"].as_str()?.to_owned(), names))
}

/// The answer to a permission request: by the policy, or cancelled once the prompt is (as ACP asks).
fn permission(
    agent: &Agent,
    config: &AcpConfig,
    params: Value,
    tool_names: &HashMap<String, Vec<String>>,
    cancelled: bool,
) -> Result<Value, (i64, String)> {
    let request: RequestPermissionRequest = serde_json::from_value(params).map_err(|err| {
        (
            -32602,
            format!("not a session/request_permission request: {err}"),
        )
    })?;
    let title = request.tool_call.fields.title.clone().unwrap_or_default();
    let response = if cancelled {
        cancelled_permission()
    } else {
        let names = tool_names
            .get(&request.tool_call.tool_call_id.to_string())
            .map_or(&[][..], Vec::as_slice);
        let (allowed, response) = config.permissions.answer(&request, names);
        let policy = config.permissions.describe();
        info!(session = %agent.session, tool = %title, allowed, policy, "the agent asked for permission");
        serde_json::to_value(response).unwrap_or_default()
    };
    Ok(response)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_the_sessions_message_chunks_are_text() {
        let chunk = |session: &str, kind: &str| json!({"sessionId": session, "update": {"sessionUpdate": kind, "content": {"type": "text", "text": "hi"}}});
        assert_eq!(
            message_text(chunk("s-1", "agent_message_chunk"), "s-1").as_deref(),
            Some("hi")
        );
        assert_eq!(
            message_text(chunk("s-2", "agent_message_chunk"), "s-1"),
            None
        );
        assert_eq!(
            message_text(chunk("s-1", "agent_thought_chunk"), "s-1"),
            None
        );
        let unknown =
            json!({"sessionId": "s-1", "update": {"sessionUpdate": "something_new", "x": 1}});
        assert_eq!(message_text(unknown, "s-1"), None);
    }

    #[test]
    fn a_tools_name_is_read_from_its_announcement() {
        // As `@zed-industries/claude-agent-acp` 0.23.1 announces a `Bash` call.
        let announced = json!({"sessionId": "s-1", "update": {
            "_meta": {"claudeCode": {"toolName": "Bash"}},
            "toolCallId": "toolu_1", "sessionUpdate": "tool_call", "rawInput": {},
            "status": "pending", "title": "Terminal", "kind": "execute", "content": []
        }});
        assert_eq!(
            announced_tool(&announced),
            Some(("toolu_1".to_owned(), vec!["Bash".to_owned()]))
        );
        let chunk = json!({"sessionId": "s-1", "update": {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "hi"}}});
        assert_eq!(announced_tool(&chunk), None);
    }
}
