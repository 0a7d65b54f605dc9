//! Hands the bridge's messages to Claude Code as `notifications/claude/channel`, in order, once Claude
//! Code can answer them.

use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{CustomNotification, ServerNotification};
use rmcp::service::Peer;
use serde_json::json;
use synthesis_bridge::transport::InboundMessage;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::ledger::Ledger;

/// The notification Claude Code turns into a `<channel source=… chat_id=… …>` user turn.
pub(crate) const CHANNEL_NOTIFICATION: &str = "notifications/claude/channel";

/// How long Claude Code normally takes at most to list the tools; after that, waiting messages are worth
/// a warning (Claude Code's own MCP start-up timeout is 30 s).
const TOOLS_LIST_PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `tools/list` has been answered and `settle` has passed, then pushes every message from
/// `inbound` (those that arrived earlier first), never while a tool call is open, and records each in
/// `ledger`.
pub(crate) async fn push_when_ready(
    peer: Peer<RoleServer>,
    mut tools_listed: watch::Receiver<bool>,
    settle: Duration,
    mut inbound: mpsc::UnboundedReceiver<InboundMessage>,
    ledger: Ledger,
) {
    // A push before Claude Code has registered the reply tool reaches a model that cannot answer.
    let in_time =
        tokio::time::timeout(TOOLS_LIST_PATIENCE, tools_listed.wait_for(|listed| *listed))
            .await
            .is_ok();
    if !in_time {
        warn!(waited = ?TOOLS_LIST_PATIENCE, "Claude Code has not listed the tools yet; messages are held until it does");
    }
    if tools_listed.wait_for(|listed| *listed).await.is_err() {
        return;
    }
    tokio::time::sleep(settle).await;
    while let Some(message) = inbound.recv().await {
        ledger.wait_until_no_tool_call().await;
        let message_id = message.meta.message_id.clone();
        ledger.pushed(message_id.clone());
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
    let mut attributes = json!({
        "chat_id": meta.chat_id,
        "message_id": meta.message_id,
        "ts": meta.ts,
    });
    if let Some(original) = meta.retry_of {
        attributes["retry_of"] = json!(original);
    }
    ServerNotification::CustomNotification(CustomNotification::new(
        CHANNEL_NOTIFICATION,
        Some(json!({"content": message.content, "meta": attributes})),
    ))
}
