//! Hands the bridge's messages to Claude Code as `notifications/claude/channel`, in order, once Claude
//! Code can answer them.

use std::sync::Arc;
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{CustomNotification, ServerNotification};
use rmcp::service::Peer;
use serde_json::json;
use synthesis_bridge::transport::InboundMessage;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::server::LastPushed;

/// The notification Claude Code turns into a `<channel source=… chat_id=… …>` user turn.
pub(crate) const CHANNEL_NOTIFICATION: &str = "notifications/claude/channel";

/// How long after the last `reply` call returned a push waits, so that the call's result is on the wire
/// before the notification.
const AFTER_REPLY: Duration = Duration::from_millis(50);

/// The `reply` calls in progress. The bridge pushes a session's next message as soon as the final reply
/// frame reaches it, which is before the tool call has returned to Claude Code; and Claude Code 2.1.329
/// silently drops a channel notification that arrives while a tool call to the same server is open (seen
/// in its debug log: the notification is logged, no prompt follows). Pushes therefore wait for calls to end.
#[derive(Debug, Clone)]
pub(crate) struct ReplyCalls(Arc<watch::Sender<usize>>);

/// One call in progress; dropping it ends the call.
#[derive(Debug)]
pub(crate) struct ReplyCall(Arc<watch::Sender<usize>>);

impl Default for ReplyCalls {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl ReplyCalls {
    pub(crate) fn begin(&self) -> ReplyCall {
        self.0.send_modify(|calls| *calls += 1);
        ReplyCall(self.0.clone())
    }

    /// Returns once no call has been open for [`AFTER_REPLY`].
    async fn wait_until_closed(&self) {
        let mut calls = self.0.subscribe();
        loop {
            if calls.wait_for(|open| *open == 0).await.is_err() {
                return;
            }
            tokio::time::sleep(AFTER_REPLY).await;
            if *calls.borrow_and_update() == 0 {
                return;
            }
        }
    }
}

impl Drop for ReplyCall {
    fn drop(&mut self) {
        self.0.send_modify(|calls| *calls -= 1);
    }
}

/// Waits until `tools/list` has been answered and `settle` has passed, then pushes every message from
/// `inbound` (those that arrived earlier first), never while a `reply` call is open, and records the latest
/// one in `last_pushed`.
pub(crate) async fn push_when_ready(
    peer: Peer<RoleServer>,
    mut tools_listed: watch::Receiver<bool>,
    settle: Duration,
    mut inbound: mpsc::UnboundedReceiver<InboundMessage>,
    last_pushed: LastPushed,
    reply_calls: ReplyCalls,
) {
    // A push before Claude Code has registered the reply tool reaches a model that cannot answer.
    if tools_listed.wait_for(|listed| *listed).await.is_err() {
        return;
    }
    tokio::time::sleep(settle).await;
    while let Some(message) = inbound.recv().await {
        reply_calls.wait_until_closed().await;
        let message_id = message.meta.message_id.clone();
        last_pushed.set(message_id.clone());
        match peer.send_notification(channel_notification(message)).await {
            Ok(()) => debug!(%message_id, "pushed a message to Claude Code"),
            Err(error) => {
                warn!(%message_id, %error, "cannot push to Claude Code; the MCP session is over");
                return;
            }
        }
    }
}

fn channel_notification(message: InboundMessage) -> ServerNotification {
    let meta = message.meta;
    ServerNotification::CustomNotification(CustomNotification::new(
        CHANNEL_NOTIFICATION,
        Some(json!({
            "content": message.content,
            "meta": {
                "chat_id": meta.chat_id,
                "message_id": meta.message_id,
                "ts": meta.ts,
            },
        })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_push_waits_until_no_reply_call_has_been_open_for_a_moment() {
        let calls = ReplyCalls::default();
        let first = calls.begin();
        let second = calls.begin();
        let waiter = tokio::spawn({
            let calls = calls.clone();
            async move { calls.wait_until_closed().await }
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
        // A call that opens within the grace period restarts the wait.
        let third = calls.begin();
        tokio::time::sleep(AFTER_REPLY).await;
        assert!(
            !waiter.is_finished(),
            "a call opened during the grace period"
        );
        drop(third);
        tokio::time::sleep(AFTER_REPLY * 2).await;
        assert!(waiter.is_finished());
    }
}
