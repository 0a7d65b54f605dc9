//! What the pusher and the tools share, and the two rules that tie them together:
//!
//! - **A push waits while a tool call is open** (`reply`, or one of the client's tools). Claude Code
//!   2.1.329 silently drops a channel notification that arrives while a tool call to the same server is
//!   open
//!   (`docs/claude-cli-measurements.md`, section H). A call is open until its result is written: rmcp
//!   writes the result after the handler returned, and could write a notification sent meanwhile first,
//!   so the call ends when the writer has seen its result go (`written`). The bridge itself pushes only
//!   once the previous prompt's `Stop` is in and confirms every delivery; this gate keeps a push that
//!   comes early anyway out of an open call.
//! - **A reply answers a message that was pushed and is not answered yet.** Claude Code queues a message
//!   pushed while it is still finishing the previous one, so "the newest message" is not necessarily the
//!   one being answered: a reply names its message, and one that names none is taken only when a single
//!   message is waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// How many pushed messages are remembered. A message answered without the tool (plain text) stays
/// unanswered here, so the oldest are forgotten.
const REMEMBERED: usize = 64;

#[derive(Debug)]
struct Pushed {
    message_id: String,
    answered: bool,
}

/// The messages pushed to Claude Code and the tool calls in progress; clones share them.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    pushed: Arc<Mutex<VecDeque<Pushed>>>,
    calls: Arc<watch::Sender<OpenCalls>>,
}

/// The tool calls Claude Code is waiting on.
#[derive(Debug, Default)]
struct OpenCalls {
    /// Calls whose handler is running.
    running: usize,
    /// The JSON-RPC ids of calls whose handler returned but whose result is not written yet.
    unwritten: Vec<serde_json::Value>,
    /// Calls Claude Code cancelled while their handler ran: rmcp drops their result, which is then never
    /// written.
    cancelled: Vec<serde_json::Value>,
}

impl OpenCalls {
    fn none(&self) -> bool {
        self.running == 0 && self.unwritten.is_empty()
    }
}

/// One tool call in progress; dropping it ends the handler, and the call ends once its result is
/// written.
#[derive(Debug)]
pub(crate) struct ToolCallGuard {
    calls: Arc<watch::Sender<OpenCalls>>,
    id: serde_json::Value,
}

impl Drop for ToolCallGuard {
    fn drop(&mut self) {
        let id = std::mem::take(&mut self.id);
        self.calls.send_modify(|calls| {
            calls.running -= 1;
            let before = calls.cancelled.len();
            calls.cancelled.retain(|cancelled| *cancelled != id);
            if calls.cancelled.len() == before {
                calls.unwritten.push(id);
            }
        });
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            pushed: Arc::default(),
            calls: Arc::new(watch::channel(OpenCalls::default()).0),
        }
    }
}

impl Ledger {
    fn messages(&self) -> std::sync::MutexGuard<'_, VecDeque<Pushed>> {
        self.pushed
            .lock()
            .expect("never poisoned: no panics under the lock")
    }

    /// Records that `message_id` was pushed (a message pushed again is the same message).
    pub(crate) fn pushed(&self, message_id: String) {
        let mut messages = self.messages();
        if messages.iter().any(|m| m.message_id == message_id) {
            return;
        }
        if messages.len() == REMEMBERED {
            messages.pop_front();
        }
        messages.push_back(Pushed {
            message_id,
            answered: false,
        });
    }

    /// The message a reply answers: the one it names, or the only one waiting. The error is written for
    /// the model, which can call again with the right id.
    pub(crate) fn resolve(&self, named: Option<&str>) -> Result<String, String> {
        let messages = self.messages();
        if let Some(named) = named {
            return match messages.iter().find(|m| m.message_id == named) {
                None => Err(format!(
                    "message_id \"{named}\" is not a message you were sent: use the message_id of the <channel> message you are answering"
                )),
                Some(message) if message.answered => Err(format!(
                    "message \"{named}\" is already answered (its last part was sent); the sender will not see more"
                )),
                Some(message) => Ok(message.message_id.clone()),
            };
        }
        let waiting: Vec<&str> = messages
            .iter()
            .filter(|m| !m.answered)
            .map(|m| m.message_id.as_str())
            .collect();
        match waiting.as_slice() {
            [only] => Ok((*only).to_owned()),
            [] => Err("no message is waiting for an answer".to_owned()),
            several => Err(format!(
                "pass message_id: {} messages are waiting ({})",
                several.len(),
                several.join(", ")
            )),
        }
    }

    /// Whether the newest pushed message still waits for the last part of its answer: the bridge pushes a
    /// message only once the previous prompt is over, so the newest is the one Claude works on. (Older
    /// ones answered without the tool, or interrupted, never get a last part.)
    pub(crate) fn awaiting_answer(&self) -> bool {
        self.messages().back().is_some_and(|m| !m.answered)
    }

    /// Records that the last part of the answer to `message_id` was sent.
    pub(crate) fn answered(&self, message_id: &str) {
        if let Some(message) = self
            .messages()
            .iter_mut()
            .find(|m| m.message_id == message_id)
        {
            message.answered = true;
        }
    }

    /// The tool call with JSON-RPC id `id` begins; its handler ends when the returned guard is dropped.
    pub(crate) fn tool_call(&self, id: serde_json::Value) -> ToolCallGuard {
        self.calls.send_modify(|calls| calls.running += 1);
        ToolCallGuard {
            calls: self.calls.clone(),
            id,
        }
    }

    /// The result (or error) of request `id` has been written to Claude Code.
    pub(crate) fn written(&self, id: &serde_json::Value) {
        self.calls.send_if_modified(|calls| {
            let before = calls.unwritten.len();
            calls.unwritten.retain(|unwritten| unwritten != id);
            calls.unwritten.len() != before
        });
    }

    /// Claude Code cancelled request `id` (`notifications/cancelled`): rmcp will write no result for it.
    pub(crate) fn cancelled(&self, id: &serde_json::Value) {
        self.calls.send_modify(|calls| {
            let before = calls.unwritten.len();
            calls.unwritten.retain(|unwritten| unwritten != id);
            if calls.unwritten.len() == before && calls.running > 0 {
                calls.cancelled.push(id.clone());
            }
        });
    }

    /// Returns once no tool call is open: none is running and every result is written.
    pub(crate) async fn wait_until_no_tool_call(&self) {
        let _ = self.calls.subscribe().wait_for(OpenCalls::none).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_push_waits_until_no_reply_call_is_open_and_every_result_is_written() {
        let ledger = Ledger::default();
        let first = ledger.tool_call(1.into());
        let second = ledger.tool_call(2.into());
        let waiter = tokio::spawn({
            let ledger = ledger.clone();
            async move { ledger.wait_until_no_tool_call().await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "two calls are open");
        drop(first);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "one call is open");
        drop(second);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "no result is written yet");
        ledger.written(&1.into());
        ledger.written(&7.into());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "the second result is not written");
        ledger.written(&2.into());
        tokio::time::timeout(Duration::from_millis(1), waiter)
            .await
            .expect("free at once")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_call_whose_result_is_never_written_does_not_hold_pushes() {
        let ledger = Ledger::default();
        // Cancelled while its handler runs, as Claude Code does on ESC during the call.
        let call = ledger.tool_call(3.into());
        ledger.cancelled(&3.into());
        drop(call);
        tokio::time::timeout(Duration::from_millis(1), ledger.wait_until_no_tool_call())
            .await
            .expect("nothing is open");
        // Cancelled after its handler returned, before rmcp wrote the result.
        drop(ledger.tool_call(4.into()));
        ledger.cancelled(&4.into());
        tokio::time::timeout(Duration::from_millis(1), ledger.wait_until_no_tool_call())
            .await
            .expect("nothing is open");
    }

    #[test]
    fn a_message_pushed_again_is_recorded_once() {
        let ledger = Ledger::default();
        ledger.pushed("a".to_owned());
        ledger.pushed("a".to_owned());
        assert_eq!(ledger.resolve(None), Ok("a".to_owned()));
    }

    #[test]
    fn a_reply_answers_a_pushed_unanswered_message() {
        let ledger = Ledger::default();
        assert!(ledger.resolve(None).is_err(), "nothing was pushed");
        ledger.pushed("a".to_owned());
        assert_eq!(ledger.resolve(None), Ok("a".to_owned()));
        // Claude Code is still finishing `a` when `b` arrives: a reply must say which it answers.
        ledger.pushed("b".to_owned());
        let unnamed = ledger.resolve(None).unwrap_err();
        assert!(unnamed.contains("a, b"), "{unnamed}");
        assert_eq!(ledger.resolve(Some("a")), Ok("a".to_owned()));
        assert!(ledger.resolve(Some("zzz")).is_err());
        ledger.answered("a");
        assert!(
            ledger
                .resolve(Some("a"))
                .unwrap_err()
                .contains("already answered")
        );
        assert_eq!(ledger.resolve(None), Ok("b".to_owned()));
    }
}
