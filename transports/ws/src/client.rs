//! The plugin side's one-shot report: the agent finished working on a message.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use synthesis_bridge::transport::TurnEnd;

use crate::protocol::{BridgeFrame, PluginFrame};

/// How long a report may take, connection included.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a report did not reach the bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The bridge could not be reached.
    #[error("cannot reach the bridge at {url}: {source}")]
    Connect {
        /// Where the report was going.
        url: String,
        /// What failed.
        source: tokio_tungstenite::tungstenite::Error,
    },
    /// The bridge closed the connection without acknowledging (a wrong secret, for instance).
    #[error("the bridge refused the report{0}")]
    Refused(String),
    /// The bridge did not answer in time.
    #[error("the bridge did not acknowledge the report within {0:?}")]
    Timeout(Duration),
}

/// Tells the bridge at `url` that the agent of `session` finished working on a message: `end` names it
/// (when known) and carries the agent's last words or the turn's error. This is what Claude Code's `Stop`
/// and `StopFailure` hooks send.
pub async fn report_turn_end(
    url: &str,
    session: &str,
    token: &str,
    end: TurnEnd,
) -> Result<(), ReportError> {
    let frame = PluginFrame::TurnEnd {
        openclaw_session: session.to_owned(),
        token: token.to_owned(),
        message_id: end.message_id,
        last_assistant_message: end.last_message,
        error: end.error,
    };
    let exchange = async {
        // No Nagle: the report is one small frame, then a wait for the acknowledgement.
        let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(|source| ReportError::Connect {
                url: url.to_owned(),
                source,
            })?;
        let refused = |detail: String| ReportError::Refused(detail);
        socket
            .send(Message::text(frame.to_text()))
            .await
            .map_err(|err| refused(format!(": {err}")))?;
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    if serde_json::from_str::<BridgeFrame>(text.as_str())
                        .is_ok_and(|frame| frame == BridgeFrame::TurnEndAck)
                    {
                        let _ = socket.close(None).await;
                        return Ok(());
                    }
                }
                Ok(Message::Close(Some(close))) => {
                    return Err(refused(format!(": {} ({})", close.reason, close.code)));
                }
                Ok(Message::Close(None)) => return Err(refused(String::new())),
                Ok(_) => {}
                Err(err) => return Err(refused(format!(": {err}"))),
            }
        }
        Err(refused(String::new()))
    };
    tokio::time::timeout(REPORT_TIMEOUT, exchange)
        .await
        .map_err(|_| ReportError::Timeout(REPORT_TIMEOUT))?
}
