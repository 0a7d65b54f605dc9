//! One WebSocket connection from a plugin, from its `hello` to the close.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use synthesis_bridge::ToolCall;
use synthesis_bridge::transport::{ChannelEvent, ReplyFrame, ToPlugin};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::WsConfig;
use crate::protocol::{BridgeFrame, PluginFrame, close};
use crate::registry::{Attachment, Registry, Session};
use crate::turn_end_order::TurnEndOrder;

/// A plugin's socket, upgraded from an HTTP request (`listener`).
pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;
type Sink = SplitSink<Socket, Message>;
type Source = SplitStream<Socket>;

/// Serves one plugin connection until it closes.
pub(crate) async fn serve(
    socket: Socket,
    registry: Arc<Registry>,
    config: Arc<WsConfig>,
    shutdown: CancellationToken,
) {
    let (mut sink, mut source) = socket.split();
    let first = tokio::select! {
        first = tokio::time::timeout(config.hello_timeout, next_frame(&mut source)) => first,
        () = shutdown.cancelled() => return close_with(&mut sink, CloseCode::Away, "the bridge is shutting down").await,
    };
    match first {
        Ok(Some(PluginFrame::Hello {
            pid,
            openclaw_session,
            token,
        })) => {
            let Some(session) = token
                .as_deref()
                .and_then(|token| registry.authenticate(&openclaw_session, token))
            else {
                warn!(session = %openclaw_session, ?pid, has_token = token.is_some(), "refused a hello: unknown session or wrong token");
                return close_with(
                    &mut sink,
                    close::UNAUTHORIZED.into(),
                    "unknown session or wrong token",
                )
                .await;
            };
            let mut attachment = session.attach().await;
            let mut order = TurnEndOrder::default();
            let reason = if sink.send(text(&BridgeFrame::HelloAck)).await.is_ok() {
                attachment.mark_connected().await;
                info!(session = %session.key, ?pid, "plugin connected");
                let reason = relay(
                    sink,
                    source,
                    &mut attachment,
                    &mut order,
                    &config,
                    &shutdown,
                )
                .await;
                info!(session = %session.key, ?pid, reason = reason.as_deref().unwrap_or("closed by the bridge"), "plugin disconnected");
                reason
            } else {
                Some("the connection broke during the handshake".into())
            };
            // Reports still waiting for a pong go on after this connection is gone: to the connection that
            // replaced it, which orders them behind what the plugin sends there; with none, after the
            // news that the plugin is gone (what it had sent first is lost with the connection, so a held
            // report must not look like the end of a turn that got no reply).
            let unread = attachment.detach(reason).await;
            for end in order.release_all().chain(unread) {
                session.report_turn_end(end).await;
            }
        }
        Ok(Some(other)) => {
            warn!(frame = ?other, "refused a connection whose first frame is not hello");
            close_with(&mut sink, close::EXPECTED_HELLO.into(), "expected hello").await;
        }
        Ok(None) => {}
        Err(_) => {
            debug!("no hello in time");
            close_with(&mut sink, close::EXPECTED_HELLO.into(), "no hello in time").await;
        }
    }
}

/// Moves messages and events between an attached connection and its session's link until the connection
/// ends. Returns why, unless the bridge itself ended it on purpose (then the session is not "disconnected"
/// in the backend's sense).
async fn relay(
    mut sink: Sink,
    mut source: Source,
    attachment: &mut Attachment,
    order: &mut TurnEndOrder,
    config: &WsConfig,
    shutdown: &CancellationToken,
) -> Option<String> {
    let session = &attachment.session;
    let replaced = &attachment.replaced;
    let messages = &mut attachment.messages;
    let turn_ends = &mut attachment.turn_ends;
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut alive = true;
    loop {
        tokio::select! {
            biased;
            () = replaced.cancelled() => {
                close_with(&mut sink, close::REPLACED.into(), "replaced by a newer connection").await;
                return None;
            }
            () = session.ended.cancelled() => {
                close_with(&mut sink, close::REGISTRATION_ENDED.into(), "the bridge stopped this session").await;
                return None;
            }
            () = session.events.closed() => {
                close_with(&mut sink, close::REGISTRATION_ENDED.into(), "the bridge stopped this session").await;
                return None;
            }
            () = shutdown.cancelled() => {
                close_with(&mut sink, CloseCode::Away, "the bridge is shutting down").await;
                return Some("the bridge is shutting down".into());
            }
            frame = source.next() => {
                alive = true;
                match frame {
                    Some(Ok(Message::Text(payload))) => {
                        if let Err(reason) = handle(&mut sink, session, order, payload.as_str()).await {
                            return Some(reason);
                        }
                    }
                    Some(Ok(Message::Binary(_))) => warn!(session = %session.key, "ignored a binary frame"),
                    Some(Ok(Message::Close(_))) | None => {
                        return Some("the plugin closed the connection".into());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(tungstenite::Error::Capacity(err))) => {
                        let reason = format!("the plugin sent a frame over the size limit ({err})");
                        close_with(&mut sink, CloseCode::Size, "frame too large").await;
                        return Some(reason);
                    }
                    Some(Err(err)) => return Some(format!("the connection failed: {err}")),
                }
            }
            item = messages.recv() => {
                let frame = match item {
                    None => {
                        close_with(&mut sink, close::REGISTRATION_ENDED.into(), "the bridge stopped this session").await;
                        return None;
                    }
                    Some(ToPlugin::Message(message)) => {
                        // Its hooks will name it: only a message handed over counts as the agent's.
                        session.prompts().pushed(&message.meta.message_id);
                        BridgeFrame::Inbound(message)
                    }
                    Some(ToPlugin::ToolAnswer(answer)) => BridgeFrame::ToolResult {
                        id: answer.call_id,
                        content: answer.content,
                        is_error: answer.is_error,
                    },
                    Some(other) => {
                        warn!(session = %session.key, item = ?other, "cannot deliver this to a plugin");
                        continue;
                    }
                };
                if let Err(err) = sink.send(text(&frame)).await {
                    return Some(format!("cannot deliver a frame: {err}"));
                }
            }
            Some(end) = turn_ends.recv() => {
                let Some(end) = order.report(end) else {
                    if let Err(err) = sink.send(text(&BridgeFrame::Ping)).await {
                        return Some(format!("cannot send a ping: {err}"));
                    }
                    continue;
                };
                let _ = session.events.send(ChannelEvent::TurnEnded(end)).await;
            }
            _ = ping.tick() => {
                let report_stuck = order
                    .holding_since()
                    .is_some_and(|since| since.elapsed() >= config.ping_interval);
                if !alive || report_stuck {
                    let reason = format!("no pong within {:?}", config.ping_interval);
                    close_with(&mut sink, close::NO_PONG.into(), "no pong").await;
                    return Some(reason);
                }
                alive = false;
                order.pinged();
                if let Err(err) = sink.send(text(&BridgeFrame::Ping)).await {
                    return Some(format!("cannot send a ping: {err}"));
                }
            }
        }
    }
}

/// Acts on one text frame. A malformed or unexpected frame is logged and ignored.
async fn handle(
    sink: &mut Sink,
    session: &Session,
    order: &mut TurnEndOrder,
    payload: &str,
) -> Result<(), String> {
    let frame = match serde_json::from_str::<PluginFrame>(payload) {
        Ok(frame) => frame,
        Err(err) => {
            warn!(session = %session.key, %err, frame = %truncated(payload), "ignored a malformed frame");
            return Ok(());
        }
    };
    let event = match frame {
        PluginFrame::Reply {
            content,
            is_final,
            message_id,
        } => {
            let frame = ReplyFrame {
                content,
                last: is_final.unwrap_or(true),
                message_id,
            };
            order.relayed(&frame);
            ChannelEvent::Reply(frame)
        }
        PluginFrame::Error { message } => ChannelEvent::Error { message },
        PluginFrame::ToolCall {
            id,
            name,
            arguments,
        } => ChannelEvent::ToolCall(ToolCall::new(id, name, arguments.to_string())),
        PluginFrame::Ping => {
            return sink
                .send(text(&BridgeFrame::Pong))
                .await
                .map_err(|err| format!("cannot send a pong: {err}"));
        }
        PluginFrame::Pong => {
            for end in order.ponged() {
                let _ = session.events.send(ChannelEvent::TurnEnded(end)).await;
            }
            return Ok(());
        }
        other => {
            warn!(session = %session.key, frame = ?other, "ignored a frame that has no place on an open connection");
            return Ok(());
        }
    };
    // The answer to a message being answered waits for room, so that none of it is lost to a turn that
    // relays it to a slow client. Anything else (no message named, or one that is not being answered)
    // never waits: a plugin flooding frames that no turn reads must not stop this connection from being
    // read, or its close from being noticed. A closed link means the bridge stopped the session; the
    // select loop closes the connection next.
    let live = match &event {
        ChannelEvent::Reply(frame) => frame
            .message_id
            .as_deref()
            .is_some_and(|id| session.prompts().is_live(id)),
        // The agent waits for the call's answer, which a dropped call would never get.
        ChannelEvent::ToolCall(_) => session.prompts().any_live(),
        _ => false,
    };
    if live {
        let _ = session.events.send(event).await;
    } else if let Err(mpsc::error::TrySendError::Full(event)) = session.events.try_send(event) {
        warn!(session = %session.key, ?event, "dropped a frame that no turn is reading");
    }
    Ok(())
}

/// The next frame that parses; malformed ones are logged and skipped. `None` when the connection ends.
async fn next_frame(source: &mut Source) -> Option<PluginFrame> {
    while let Some(message) = source.next().await {
        match message {
            Ok(Message::Text(payload)) => match serde_json::from_str(payload.as_str()) {
                Ok(frame) => return Some(frame),
                Err(err) => {
                    warn!(%err, frame = %truncated(payload.as_str()), "ignored a malformed frame")
                }
            },
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    None
}

fn text(frame: &BridgeFrame) -> Message {
    Message::text(frame.to_text())
}

async fn close_with(sink: &mut Sink, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    // The peer may already be gone; there is nobody left to tell.
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

/// The start of a frame, for logs.
fn truncated(payload: &str) -> &str {
    let end = payload
        .char_indices()
        .nth(200)
        .map_or(payload.len(), |(i, _)| i);
    &payload[..end]
}
