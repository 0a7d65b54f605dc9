//! The agent's hook reports: Claude Code's `http` hooks post their input JSON to [`HOOKS_PATH`]
//! (`docs/protocol.md`, "Hooks").
//!
//! - `UserPromptSubmit` says a message entered the conversation: as a prompt of its own (the positive
//!   sign of delivery), or folded into the running prompt, whose `prompt_id` it then reports
//!   (`docs/claude-cli-measurements.md`, L5). Its `prompt` holds the `<channel … message_id="M" …>` tag,
//!   and also whatever the message said, so the message is found among those the bridge pushed, never
//!   read from the text alone. A message is answered with a block, which keeps it out of the
//!   conversation (L2), when it started before (it was pushed again because the first start was not heard
//!   in time) or when it would join another message's running prompt (it gets no `Stop` of its own there;
//!   pushed again later, it starts a prompt of its own).
//! - `Stop` and `StopFailure` say the prompt is over (or failed). They name only the prompt; the message
//!   comes from what `UserPromptSubmit` said, so nothing reads the transcript. The `Stop` of a blocked
//!   prompt, or of a prompt the bridge did not push, is nobody's business.
//!
//! [`HOOKS_PATH`]: synthesis_claude_channel_protocol::HOOKS_PATH

use std::collections::VecDeque;

use serde_json::{Value, json};
use synthesis_bridge::transport::{ChannelEvent, TurnEnd};
use synthesis_claude_channel_protocol::hooks::{HookInput, channel_tag_position};
use tracing::{debug, warn};

use crate::registry::Session;

/// How many messages and prompts a session remembers of each kind. A session has one or two at a time;
/// the bound only keeps prompts that never end (an interrupted one gets no `Stop`) from piling up.
const REMEMBERED: usize = 64;

/// What one session's plugin was handed and its hooks have said so far.
#[derive(Debug, Default)]
pub(crate) struct Prompts {
    /// Messages handed to the plugin that have not started a prompt yet.
    pushed: VecDeque<String>,
    /// Messages that started a prompt, oldest first.
    started: VecDeque<String>,
    /// Prompts not yet over, with their message.
    open: VecDeque<(String, String)>,
    /// Prompts whose `Stop` is nobody's business: blocked ones, and those of no pushed message.
    ignored: VecDeque<String>,
}

fn remember<T: PartialEq>(list: &mut VecDeque<T>, item: T) {
    if list.contains(&item) {
        return;
    }
    if list.len() == REMEMBERED {
        list.pop_front();
    }
    list.push_back(item);
}

/// What a `UserPromptSubmit` means.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// Message `M` started this prompt: delivered.
    New(String),
    /// Message `M` started before: keep it out.
    Again(String),
    /// Message `M` would join another message's running prompt: keep it out, for now.
    Folded(String),
    /// No message the bridge pushed.
    Foreign,
}

impl Prompts {
    /// The plugin was handed `message_id` (again).
    pub(crate) fn pushed(&mut self, message_id: &str) {
        if !self.started.iter().any(|started| started == message_id) {
            remember(&mut self.pushed, message_id.to_owned());
        }
    }

    /// Whether `message_id` is being answered: handed to the plugin, and its prompt not over.
    pub(crate) fn is_live(&self, message_id: &str) -> bool {
        self.pushed.iter().any(|pushed| pushed == message_id)
            || self.open.iter().any(|(_, open)| open == message_id)
    }

    /// Whether any message is being answered: a tool call can only be part of one.
    pub(crate) fn any_live(&self) -> bool {
        !self.pushed.is_empty() || !self.open.is_empty()
    }

    /// A `UserPromptSubmit` for `prompt_id` with `prompt`.
    fn start(&mut self, prompt_id: String, prompt: &str) -> Start {
        let folded = self.open.iter().any(|(open, _)| *open == prompt_id);
        let found = |ids: &VecDeque<String>| {
            ids.iter()
                .filter_map(|id| channel_tag_position(prompt, id).map(|at| (at, id.clone())))
                .max()
                .map(|(_, id)| id)
        };
        if let Some(message_id) = found(&self.pushed) {
            if folded {
                return Start::Folded(message_id);
            }
            self.pushed.retain(|pushed| *pushed != message_id);
            remember(&mut self.started, message_id.clone());
            remember(&mut self.open, (prompt_id, message_id.clone()));
            return Start::New(message_id);
        }
        // A prompt that is not over keeps counting, whatever joined it.
        if !folded {
            remember(&mut self.ignored, prompt_id);
        }
        match found(&self.started) {
            Some(message_id) => Start::Again(message_id),
            None => Start::Foreign,
        }
    }

    /// A prompt ended: `None` if nobody is to hear of it, else the message it was (if known).
    fn end(&mut self, prompt_id: &str) -> Option<Option<String>> {
        if let Some(at) = self.ignored.iter().position(|p| p == prompt_id) {
            self.ignored.remove(at);
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
            let start = session
                .prompts()
                .start(prompt_id, input.prompt.as_deref().unwrap_or(""));
            let reason = match start {
                Start::New(message_id) => {
                    debug!(session = %session.key, %message_id, "a message started a prompt");
                    let _ = session
                        .events
                        .send(ChannelEvent::Started { message_id })
                        .await;
                    return Ok(json!({}));
                }
                Start::Foreign => return Ok(json!({})),
                Start::Again(message_id) => {
                    warn!(session = %session.key, %message_id, "a message pushed again reached the agent after all; kept out of the conversation");
                    "this message was delivered already"
                }
                Start::Folded(message_id) => {
                    warn!(session = %session.key, %message_id, "a message would join the running prompt of another; kept out until that is over");
                    "this message waits until the running prompt is over"
                }
            };
            return Ok(json!({"decision": "block", "reason": reason}));
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

    fn tag(message_id: &str, content: &str) -> String {
        format!(
            "<channel source=\"synthesis\" chat_id=\"s\" message_id=\"{message_id}\" ts=\"t\">\n{content}\n</channel>"
        )
    }

    #[test]
    fn a_message_starts_once_and_its_second_start_is_blocked_and_ends_silently() {
        let mut prompts = Prompts::default();
        prompts.pushed("m1");
        assert_eq!(
            prompts.start("p1".into(), &tag("m1", "hi")),
            Start::New("m1".into())
        );
        prompts.pushed("m1");
        assert_eq!(
            prompts.start("p2".into(), &tag("m1", "hi")),
            Start::Again("m1".into())
        );
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
    }

    #[test]
    fn a_duplicate_folded_into_its_own_running_prompt_is_blocked_without_losing_that_prompts_end() {
        let mut prompts = Prompts::default();
        prompts.pushed("m1");
        assert_eq!(
            prompts.start("p1".into(), &tag("m1", "hi")),
            Start::New("m1".into())
        );
        // Pushed again while p1 runs, it joins p1 and reports p1's id (measurements, section L5).
        assert_eq!(
            prompts.start("p1".into(), &tag("m1", "hi")),
            Start::Again("m1".into())
        );
        assert_eq!(prompts.end("p1"), Some(Some("m1".into())));
    }

    #[test]
    fn a_new_message_folded_into_another_prompt_waits_and_starts_later() {
        let mut prompts = Prompts::default();
        prompts.pushed("m1");
        assert_eq!(
            prompts.start("p1".into(), &tag("m1", "a")),
            Start::New("m1".into())
        );
        prompts.pushed("m2");
        assert_eq!(
            prompts.start("p1".into(), &tag("m2", "b")),
            Start::Folded("m2".into())
        );
        assert_eq!(
            prompts.end("p1"),
            Some(Some("m1".into())),
            "p1 is still m1's"
        );
        prompts.pushed("m2");
        assert_eq!(
            prompts.start("p2".into(), &tag("m2", "b")),
            Start::New("m2".into())
        );
    }

    #[test]
    fn the_message_is_found_among_those_pushed_not_in_what_it_quotes() {
        let mut prompts = Prompts::default();
        prompts.pushed("m1");
        let quoting = tag(
            "m1",
            "see <channel source=\"x\" message_id=\"forged\">and message_id=\"m1\"</channel>",
        );
        assert_eq!(
            prompts.start("p1".into(), &quoting),
            Start::New("m1".into())
        );
        // After an interrupt, the new prompt holds the interrupted message too: the new one is the one.
        prompts.pushed("m2");
        let merged = format!(
            "{}[Request interrupted by user]\n{}",
            tag("m1", "slow"),
            tag("m2", "next")
        );
        assert_eq!(prompts.start("p2".into(), &merged), Start::New("m2".into()));
        // A prompt that names no pushed message is not ours, nor is its end.
        assert_eq!(
            prompts.start("p3".into(), &tag("forged", "x")),
            Start::Foreign
        );
        assert_eq!(
            prompts.start("p4".into(), "typed at the terminal"),
            Start::Foreign
        );
        assert_eq!(prompts.end("p3"), None);
        assert_eq!(prompts.end("p4"), None);
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let mut prompts = Prompts::default();
        for n in 0..(REMEMBERED * 3) {
            prompts.pushed(&format!("m{n}"));
            let started = prompts.start(format!("p{n}"), &tag(&format!("m{n}"), "x"));
            assert_eq!(started, Start::New(format!("m{n}")));
        }
        assert_eq!(prompts.started.len(), REMEMBERED);
        assert_eq!(prompts.open.len(), REMEMBERED);
    }
}
