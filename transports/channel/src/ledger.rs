//! What the pusher and the `reply` tool share, and the two rules that tie them together:
//!
//! - **A push waits while a `reply` call is open.** The bridge pushes a session's next message as soon as
//!   the final reply frame reaches it, which is before the tool call has returned to Claude Code; and
//!   Claude Code 2.1.329 silently drops a channel notification that arrives while a tool call to the same
//!   server is open (`docs/claude-cli-measurements.md`, section H).
//! - **A reply answers a message that was pushed and is not answered yet.** Claude Code queues a message
//!   pushed while it is still finishing the previous one, so "the newest message" is not necessarily the
//!   one being answered: a reply names its message, and one that names none is taken only when a single
//!   message is waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// How long after the last `reply` call returned a push waits, so that the call's result is on the wire
/// before the notification.
pub(crate) const AFTER_REPLY: Duration = Duration::from_millis(50);

/// How many pushed messages are remembered. A message answered without the tool (plain text) stays
/// unanswered here, so the oldest are forgotten.
const REMEMBERED: usize = 64;

#[derive(Debug)]
struct Pushed {
    message_id: String,
    answered: bool,
}

/// The messages pushed to Claude Code and the `reply` calls in progress; clones share them.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    pushed: Arc<Mutex<VecDeque<Pushed>>>,
    open_calls: Arc<watch::Sender<usize>>,
}

/// One `reply` call in progress; dropping it ends the call.
#[derive(Debug)]
pub(crate) struct ReplyCall(Arc<watch::Sender<usize>>);

impl Drop for ReplyCall {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            pushed: Arc::default(),
            open_calls: Arc::new(watch::channel(0).0),
        }
    }
}

impl Ledger {
    fn messages(&self) -> std::sync::MutexGuard<'_, VecDeque<Pushed>> {
        self.pushed
            .lock()
            .expect("never poisoned: no panics under the lock")
    }

    /// Records that `message_id` was pushed.
    pub(crate) fn pushed(&self, message_id: String) {
        let mut messages = self.messages();
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

    /// A `reply` call begins; it ends when the returned guard is dropped.
    pub(crate) fn reply_call(&self) -> ReplyCall {
        self.open_calls.send_modify(|open| *open += 1);
        ReplyCall(self.open_calls.clone())
    }

    /// Returns once no `reply` call has been open for [`AFTER_REPLY`].
    pub(crate) async fn wait_until_no_reply_call(&self) {
        let mut open = self.open_calls.subscribe();
        loop {
            if open.wait_for(|open| *open == 0).await.is_err() {
                return;
            }
            open.borrow_and_update();
            tokio::time::sleep(AFTER_REPLY).await;
            // A call that opened during the pause (even one that is over again) restarts it.
            if !open.has_changed().unwrap_or(false) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_push_waits_until_no_reply_call_has_been_open_for_a_moment() {
        let ledger = Ledger::default();
        let first = ledger.reply_call();
        let second = ledger.reply_call();
        let waiter = tokio::spawn({
            let ledger = ledger.clone();
            async move { ledger.wait_until_no_reply_call().await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "two calls are open");
        drop(first);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "one call is open");
        drop(second);
        tokio::time::sleep(AFTER_REPLY / 2).await;
        assert!(
            !waiter.is_finished(),
            "the last result may not be on the wire yet"
        );
        // A call that opens and closes again within the pause restarts it.
        drop(ledger.reply_call());
        tokio::time::sleep(AFTER_REPLY * 3 / 4).await;
        assert!(
            !waiter.is_finished(),
            "a call came and went during the pause"
        );
        tokio::time::sleep(AFTER_REPLY * 2).await;
        assert!(waiter.is_finished());
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
