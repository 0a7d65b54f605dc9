//! The agent's hook reports: Claude Code's `http` hooks post their input JSON to [`HOOKS_PATH`]
//! (`docs/protocol.md`, "Hooks").
//!
//! - `UserPromptSubmit` says a pushed message became a prompt: the positive sign of delivery. Its `prompt`
//!   is the `<channel … message_id="M" …>` tag, its `prompt_id` names the prompt. A message that already
//!   started a prompt (it was pushed again because the first start was not heard in time) is answered with
//!   a block, which keeps it out of the conversation: a message never reaches it twice.
//! - `Stop` and `StopFailure` say the prompt is over (or failed). They name only the prompt; the message
//!   comes from what `UserPromptSubmit` said, so nothing reads the transcript.
//!
//! [`HOOKS_PATH`]: crate::protocol::HOOKS_PATH

use std::collections::VecDeque;

use serde::Deserialize;
use serde_json::{Value, json};
use synthesis_bridge::transport::{ChannelEvent, TurnEnd};
use tracing::{debug, warn};

use crate::protocol::channel_message_id;
use crate::registry::Session;

/// How many prompts (started, open or blocked) a session remembers. A session has one or two at a time;
/// the bound only keeps prompts that never end (an interrupted one gets no `Stop`) from piling up.
const REMEMBERED: usize = 64;

/// The fields of Claude Code's hook input that the bridge uses.
#[derive(Debug, Deserialize)]
struct HookInput {
    hook_event_name: String,
    #[serde(default)]
    prompt_id: Option<String>,
    /// `UserPromptSubmit`: the prompt as Claude will see it.
    #[serde(default)]
    prompt: Option<String>,
    /// `Stop`, `StopFailure`: what Claude said last (for `StopFailure`, the API error's text).
    #[serde(default)]
    last_assistant_message: Option<String>,
    /// `StopFailure`: the kind of error (`rate_limit`, `server_error`, `unknown`, …).
    #[serde(default)]
    error: Option<String>,
}

/// What one session's hooks have said so far.
#[derive(Debug, Default)]
pub(crate) struct Prompts {
    /// Messages that started a prompt, oldest first.
    started: VecDeque<String>,
    /// Prompts not yet over, with their message.
    open: VecDeque<(String, String)>,
    /// Prompts refused because their message had started before; their `Stop` is nobody's business.
    blocked: VecDeque<String>,
}

fn remember<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() == REMEMBERED {
        list.pop_front();
    }
    list.push_back(item);
}

impl Prompts {
    /// A prompt started, or a message joined a running one; returns whether the message may go on (it
    /// has not started before).
    fn start(&mut self, prompt_id: String, message_id: &str) -> bool {
        if self.started.iter().any(|started| started == message_id) {
            // A message that joins the running prompt (pushed while it ran) reports that prompt's id:
            // blocking it takes the message out, not the prompt, whose `Stop` still counts.
            if !self.open.iter().any(|(open, _)| *open == prompt_id) {
                remember(&mut self.blocked, prompt_id);
            }
            return false;
        }
        remember(&mut self.started, message_id.to_owned());
        remember(&mut self.open, (prompt_id, message_id.to_owned()));
        true
    }

    /// A prompt ended: `None` if it was blocked, else the message it was (if known).
    fn end(&mut self, prompt_id: &str) -> Option<Option<String>> {
        if let Some(at) = self.blocked.iter().position(|p| p == prompt_id) {
            self.blocked.remove(at);
            return None;
        }
        let at = self.open.iter().position(|(p, _)| p == prompt_id);
        Some(at.and_then(|at| self.open.remove(at)).map(|(_, m)| m))
    }
}

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    #[error("the report is not Claude Code hook JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Takes one hook report for `session` and returns the hook's answer (`{}`, or a block).
pub(crate) async fn report(session: &Session, body: &[u8]) -> Result<Value, ReportError> {
    let input: HookInput = serde_json::from_slice(body)?;
    let prompt_id = input.prompt_id.unwrap_or_default();
    match input.hook_event_name.as_str() {
        "UserPromptSubmit" => {
            // A prompt typed at the terminal, not pushed by the bridge, is no business of ours.
            let Some(message_id) = input.prompt.as_deref().and_then(channel_message_id) else {
                return Ok(json!({}));
            };
            if !session.prompts().start(prompt_id, &message_id) {
                warn!(session = %session.key, %message_id, "a message pushed again reached the agent after all; kept out of the conversation");
                return Ok(json!({
                    "decision": "block",
                    "reason": "this message was delivered already",
                }));
            }
            debug!(session = %session.key, %message_id, "a message started a prompt");
            let _ = session
                .events
                .send(ChannelEvent::Started { message_id })
                .await;
        }
        event @ ("Stop" | "StopFailure") => {
            let Some(message_id) = session.prompts().end(&prompt_id) else {
                return Ok(json!({}));
            };
            let last = input.last_assistant_message;
            let end = if event == "StopFailure" {
                // Claude Code puts the error's text ("API Error: 400 …") in the last message.
                let kind = input.error.as_deref().unwrap_or("unknown");
                let error =
                    last.unwrap_or_else(|| format!("the request to the model failed ({kind})"));
                TurnEnd::new(message_id, None).failed(error)
            } else {
                TurnEnd::new(message_id, last)
            };
            debug!(session = %session.key, message_id = ?end.message_id, event, "a prompt ended");
            session.report_turn_end(end).await;
        }
        other => debug!(session = %session.key, event = other, "ignored a hook report"),
    }
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_starts_once_and_its_second_start_is_blocked_and_ends_silently() {
        let mut prompts = Prompts::default();
        assert!(prompts.start("p1".into(), "m1"));
        assert!(!prompts.start("p2".into(), "m1"), "pushed again: blocked");
        assert_eq!(
            prompts.end("p2"),
            None,
            "the blocked prompt's end is swallowed"
        );
        assert_eq!(prompts.end("p1"), Some(Some("m1".into())));
        assert_eq!(
            prompts.end("p9"),
            Some(None),
            "an unknown prompt still ends"
        );
        assert!(
            !prompts.start("p3".into(), "m1"),
            "once over, a message still never starts again"
        );
    }

    #[test]
    fn a_duplicate_folded_into_the_running_prompt_is_blocked_without_losing_that_prompts_end() {
        let mut prompts = Prompts::default();
        assert!(prompts.start("p1".into(), "m1"));
        // Pushed again while p1 runs, it joins p1 and reports p1's id (measurements, section L5).
        assert!(!prompts.start("p1".into(), "m1"));
        assert_eq!(prompts.end("p1"), Some(Some("m1".into())));
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let mut prompts = Prompts::default();
        for n in 0..(REMEMBERED * 3) {
            assert!(prompts.start(format!("p{n}"), &format!("m{n}")));
        }
        assert_eq!(prompts.started.len(), REMEMBERED);
        assert_eq!(prompts.open.len(), REMEMBERED);
    }
}
