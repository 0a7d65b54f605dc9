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

use crate::agent::{Agent, not_served};
use crate::config::AcpConfig;
use crate::permission::tool_names;
use crate::pool::{Slot, SlotGuard};
use crate::rpc::{CallError, Incoming};

/// A time far enough away to stand for "never" in a `sleep` that is armed later.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// What a cancelled prompt leaves: a process to replace, its session reopened on the next turn. The Claude
/// agent (`@zed-industries/claude-agent-acp` 0.23.1) answers the prompt after a cancelled one at once with
/// an empty `end_turn`, and from then on every answer one prompt late (`docs/acp-measurements.md`); a
/// client cannot tell that from a real empty answer. A new process costs about half a second on the
/// next turn; cancels are rare (a client that went away).
const AFTER_CANCEL: Aftermath = Aftermath::Broken;

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
    pub(crate) session: Arc<Slot>,
    pub(crate) slot: SlotGuard,
    pub(crate) text: String,
    pub(crate) cancel: CancellationToken,
    pub(crate) shutdown: CancellationToken,
    pub(crate) config: Arc<AcpConfig>,
    pub(crate) events: mpsc::Sender<ReplyEvent>,
}

impl TurnRun {
    pub(crate) async fn run(mut self) {
        if self.exchange().await == Aftermath::Broken
            && let Some(agent) = self.slot.take()
        {
            agent.stop().await;
        }
        // Idle from now, not from the turn's start: the sweeper may look as soon as the slot is free.
        self.session.touch();
    }

    async fn emit(&self, event: ReplyEvent) {
        // A consumer that went away has cancelled the turn; it is still finished properly.
        let _ = self.events.send(event).await;
    }

    async fn fail(&self, error: BackendError, aftermath: Aftermath) -> Aftermath {
        self.emit(ReplyEvent::Error(error)).await;
        aftermath
    }

    async fn exchange(&mut self) -> Aftermath {
        let agent = self.slot.as_mut().expect("a turn runs on a launched agent");
        let session_id = agent
            .session_id
            .clone()
            .expect("a turn runs on an opened session");
        // Whatever the agent said between turns (a late update, a request) is handled before the prompt.
        while let Ok(incoming) = agent.rpc.incoming.try_recv() {
            agent.decline(incoming).await;
        }
        // Given up already (its client left while it queued): nothing was said, nothing to undo.
        if self.cancel.is_cancelled() || self.shutdown.is_cancelled() {
            return self.fail(BackendError::Cancelled, Aftermath::Healthy).await;
        }
        let prompt = PromptRequest::new(
            session_id.clone(),
            vec![ContentBlock::from(self.text.clone())],
        );
        let mut call = agent.rpc.call("session/prompt", prompt).await;
        let mut said_anything = false;
        // The agent's own names of the tools it announced, by call id, for the permission requests.
        let mut tool_names: HashMap<String, Vec<String>> = HashMap::new();
        let mut cancelled_at: Option<Instant> = None;
        let grace = tokio::time::sleep(FAR);
        tokio::pin!(grace);
        loop {
            let agent = self.slot.as_mut().expect("a turn runs on a launched agent");
            // Biased, and the agent's messages before its answer: the reader queues a message before it
            // reads the next line, so every chunk the agent sent before answering the prompt is taken
            // before the answer ends the turn.
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    return self.fail(BackendError::unavailable("the bridge is shutting down"), Aftermath::Broken).await;
                }
                () = self.cancel.cancelled(), if cancelled_at.is_none() => {
                    debug!(session = %agent.session, "cancelling the prompt");
                    if let Err(err) = agent.rpc.notify("session/cancel", CancelNotification::new(session_id.clone())).await {
                        warn!(session = %agent.session, %err, "cannot send session/cancel");
                    }
                    cancelled_at = Some(Instant::now());
                    grace.as_mut().reset(Instant::now() + self.config.cancel_grace);
                }
                () = &mut grace => {
                    warn!(session = %agent.session, grace = ?self.config.cancel_grace, "the agent did not end the cancelled prompt; stopping its process");
                    return self.fail(BackendError::Cancelled, Aftermath::Broken).await;
                }
                Some(incoming) = agent.rpc.incoming.recv() => {
                    match incoming {
                        Incoming::Notification { method, params } if method == "session/update" => {
                            if let Some((call, names)) = announced_tool(&params) {
                                tool_names.insert(call, names);
                                continue;
                            }
                            let Some(text) = message_text(&params, &session_id) else { continue };
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
                                permission(agent, &self.config, params, &tool_names, cancelled_at.is_some())
                            } else {
                                debug!(session = %agent.session, %method, "refused a request the bridge does not serve");
                                Err(not_served(&method))
                            };
                            agent.rpc.respond(id, answer).await;
                        }
                    }
                }
                answer = call.answer() => {
                    return match answer {
                        Ok(answer) => self.end(answer, cancelled_at.is_some()).await,
                        Err(CallError::Rpc { message, .. }) if cancelled_at.is_none() => {
                            let name = agent.name.clone();
                            self.fail(BackendError::failed(format!("the ACP agent {name} could not answer: {message}")), Aftermath::Healthy).await
                        }
                        Err(CallError::Rpc { .. }) => self.fail(BackendError::Cancelled, AFTER_CANCEL).await,
                        Err(err) => {
                            let error = match agent.gone("in the middle of the turn", &err).await {
                                BackendError::Unavailable { message, .. } => BackendError::failed(format!(
                                    "{message}. The next turn starts it again and reopens the conversation"
                                )),
                                other => other,
                            };
                            self.fail(error, Aftermath::Broken).await
                        }
                    };
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
        if cancelled || response.stop_reason == StopReason::Cancelled {
            return self.fail(BackendError::Cancelled, AFTER_CANCEL).await;
        }
        let finish = match response.stop_reason {
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
fn message_text(params: &Value, session_id: &str) -> Option<String> {
    // Only chunks are read: an update of a kind this ACP version does not know is skipped, not an error.
    if params["update"]["sessionUpdate"] != "agent_message_chunk" {
        return None;
    }
    let notification: SessionNotification = serde_json::from_value(params.clone()).ok()?;
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
        serde_json::json!({"outcome": {"outcome": "cancelled"}})
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
            message_text(&chunk("s-1", "agent_message_chunk"), "s-1").as_deref(),
            Some("hi")
        );
        assert_eq!(
            message_text(&chunk("s-2", "agent_message_chunk"), "s-1"),
            None
        );
        assert_eq!(
            message_text(&chunk("s-1", "agent_thought_chunk"), "s-1"),
            None
        );
        let unknown =
            json!({"sessionId": "s-1", "update": {"sessionUpdate": "something_new", "x": 1}});
        assert_eq!(message_text(&unknown, "s-1"), None);
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
