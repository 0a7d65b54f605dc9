//! One turn in the stream-json mode: write the message, relay each text delta as it comes, answer
//! permission requests by the policy, and end with the prompt's `result`.

use std::time::Duration;

use synthesis_bridge::spawner::ProcessHandle;
use synthesis_bridge::{BackendError, ReplyEvent, SessionKey};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Record, StreamJsonIo};
use crate::agent::{Agent, Io};
use crate::pool::SlotGuard;
use crate::turn::{Aftermath, TurnRun, exited_mid_turn};

/// How many times the interrupt is sent before a process that will not stop is stopped for good.
const INTERRUPT_ATTEMPTS: u32 = 5;

/// How long after its output ended a process has to be seen exiting.
const EXIT_AFTER_OUTPUT: Duration = Duration::from_millis(500);

/// What `claude --resume U` says when it has no conversation `U`.
const NO_CONVERSATION: &str = "No conversation found with session ID";

/// A time far enough away to stand for "never" in a `sleep` that is armed later.
const FAR: Duration = Duration::from_secs(86_400 * 365);

impl TurnRun {
    /// The turn over stream-json; see the [module docs](self).
    pub(crate) async fn stream_json_exchange(&mut self) -> Aftermath {
        let config = self.config.clone();
        let turn_id = self.message.meta.message_id.clone();
        let (process, session, io) = parts(&mut self.slot);
        // A turn always reads through its own `result` (or breaks the agent), so whatever is left came
        // after it: nothing that belongs to this turn.
        while let Ok(record) = io.records.try_recv() {
            debug!(%session, ?record, "dropped a record from between turns");
        }
        if let Err(err) = process.write(&super::user_line(&self.text)).await {
            let error = match tokio::time::timeout(EXIT_AFTER_OUTPUT, process.wait()).await {
                Ok(exit) => exited_mid_turn(process, exit),
                Err(_) => BackendError::failed(format!("cannot write to claude: {err}")),
            };
            return self.fail(error, Aftermath::Broken).await;
        }
        debug!(%session, "wrote the message");
        let mut said_anything = false;
        let mut paragraph_break = false;
        // Once cancelled, how many interrupts went out.
        let mut interrupts = 0;
        let settle = tokio::time::sleep(FAR);
        tokio::pin!(settle);
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
                let error = match tokio::time::timeout(EXIT_AFTER_OUTPUT, process.wait()).await {
                    Ok(exit) => exited_mid_turn(process, exit),
                    Err(_) => BackendError::failed(
                        "claude closed its output in the middle of the turn; the next turn starts it again",
                    ),
                };
                return self.fail(error, Aftermath::Broken).await;
            };
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
                Record::ToolPermission {
                    request_id,
                    tool_name,
                    input,
                } => {
                    let answer = super::permission(&config, &tool_name, &input);
                    info!(%session, tool = %tool_name, behavior = %answer["behavior"], "claude asked to use a tool");
                    if let Err(err) = process
                        .write(&super::response_line(&request_id, answer))
                        .await
                    {
                        warn!(%session, %err, "cannot answer the permission request");
                    }
                }
                Record::ControlRequest {
                    request_id,
                    subtype,
                } => {
                    debug!(%session, %subtype, "refused a request the bridge does not serve");
                    let refusal = super::error_line(
                        &request_id,
                        &format!("the bridge does not serve {subtype:?} requests"),
                    );
                    if let Err(err) = process.write(&refusal).await {
                        warn!(%session, %err, "cannot answer claude's request");
                    }
                }
                Record::ControlResponse { request_id, error } => {
                    debug!(%session, %request_id, ?error, "claude answered a request");
                }
                Record::Result(result) => {
                    debug!(%session, subtype = %result.subtype, "the prompt is over");
                    if interrupts > 0 {
                        return self.fail(BackendError::Cancelled, Aftermath::Healthy).await;
                    }
                    if result.is_error {
                        if result.num_turns == 0
                            && flat(&process.output().text()).contains(&flat(NO_CONVERSATION))
                        {
                            warn!(%session, "claude cannot resume the conversation (\"No conversation found\"); the next turn starts a new one");
                            self.session.want_new_conversation();
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
                Record::TextDelta(_) | Record::Other => {}
            }
        }
    }
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

/// `text` without white space, to find a message however it was wrapped.
fn flat(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}
