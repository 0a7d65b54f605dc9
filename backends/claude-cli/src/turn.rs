//! One turn on a running agent: push the message, relay the answer, decide when it is over.

use std::time::Duration;

use synthesis_bridge::transport::{ChannelEvent, InboundMessage};
use synthesis_bridge::{BackendError, ReplyEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::pool::SlotGuard;

/// ESC interrupts Claude Code's running prompt.
const ESC: &[u8] = b"\x1b";

/// What a turn left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aftermath {
    /// The agent can take the next turn.
    Healthy,
    /// The process died, lost its channel or must be stopped: the next turn starts a new one.
    Broken,
}

/// A turn in flight. It holds its session's slot until the agent is free again.
pub(crate) struct TurnRun {
    pub(crate) slot: SlotGuard,
    pub(crate) message: InboundMessage,
    pub(crate) cancel: CancellationToken,
    pub(crate) shutdown: CancellationToken,
    pub(crate) settle: Duration,
    pub(crate) events: mpsc::Sender<ReplyEvent>,
}

impl TurnRun {
    pub(crate) async fn run(mut self) {
        if self.exchange().await == Aftermath::Broken
            && let Some(agent) = self.slot.take()
        {
            agent.stop().await;
        }
    }

    async fn emit(&self, event: ReplyEvent) {
        // A consumer that went away has cancelled the turn; it is still finished properly.
        let _ = self.events.send(event).await;
    }

    async fn exchange(&mut self) -> Aftermath {
        let agent = self.slot.as_mut().expect("a turn runs on a launched agent");
        // Reports that arrived between turns are about earlier messages.
        while let Some(event) = agent.link.try_recv() {
            match event {
                ChannelEvent::TurnEnded(end) => {
                    agent.finished(end.message_id);
                }
                other => debug!(session = %agent.session(), event = ?other, "dropped an event from between turns"),
            }
        }
        let id = self.message.meta.message_id.clone();
        if agent.link.send(self.message.clone()).await.is_err() {
            self.emit(ReplyEvent::Error(BackendError::failed(
                "the channel to claude is closed",
            )))
            .await;
            return Aftermath::Broken;
        }
        let agent = self.slot.as_mut().expect("still there");
        agent.sent(id.clone());

        let mut said_anything = false;
        let settle = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(settle);
        let mut interrupted = false;
        loop {
            let agent = self.slot.as_mut().expect("still there");
            let event = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    self.emit(ReplyEvent::Error(BackendError::unavailable("the bridge is shutting down"))).await;
                    return Aftermath::Broken;
                }
                () = self.cancel.cancelled(), if !interrupted => {
                    interrupted = true;
                    debug!(session = %agent.session(), "interrupting claude");
                    if let Err(err) = agent.process.write(ESC).await {
                        warn!(session = %agent.session(), %err, "cannot type ESC");
                    }
                    settle.as_mut().reset(Instant::now() + self.settle);
                    continue;
                }
                () = &mut settle, if interrupted => {
                    // An interrupted prompt gets no `Stop`; forget it so that reports keep lining up.
                    agent.unfinished.retain(|unfinished| *unfinished != id);
                    self.emit(ReplyEvent::Error(BackendError::Cancelled)).await;
                    return Aftermath::Healthy;
                }
                exit = agent.process.wait() => {
                    let screen = agent.process.output().text();
                    let last = screen.lines().map(str::trim).rfind(|line| !line.is_empty()).unwrap_or("");
                    self.emit(ReplyEvent::Error(BackendError::failed(format!(
                        "claude exited ({exit}) in the middle of the turn; its last words: {last:?}. The next turn resumes the conversation in a new process"
                    )))).await;
                    return Aftermath::Broken;
                }
                event = agent.link.recv() => event,
            };
            match event {
                None => {
                    self.emit(ReplyEvent::Error(BackendError::failed(
                        "the channel to claude closed",
                    )))
                    .await;
                    return Aftermath::Broken;
                }
                Some(ChannelEvent::Reply(frame)) => {
                    if frame.message_id.as_ref().is_some_and(|other| *other != id) {
                        debug!(session = %agent.session(), "ignored a reply to an earlier message");
                        continue;
                    }
                    if !frame.content.is_empty() {
                        said_anything = true;
                        self.emit(ReplyEvent::TextDelta(frame.content)).await;
                    }
                    if frame.last {
                        self.emit(ReplyEvent::end()).await;
                        return Aftermath::Healthy;
                    }
                }
                Some(ChannelEvent::TurnEnded(end)) => {
                    if agent.finished(end.message_id).as_deref() != Some(id.as_str()) {
                        continue;
                    }
                    // Claude finished without saying it was done through the reply tool: what it said
                    // last is the answer, unless it already streamed one.
                    if !said_anything
                        && let Some(text) = end.last_message.filter(|text| !text.trim().is_empty())
                    {
                        self.emit(ReplyEvent::TextDelta(text)).await;
                    }
                    self.emit(ReplyEvent::end()).await;
                    return Aftermath::Healthy;
                }
                Some(ChannelEvent::Error { message }) => {
                    self.emit(ReplyEvent::Error(BackendError::failed(format!(
                        "claude's channel plugin reported an error: {message}"
                    ))))
                    .await;
                    return Aftermath::Healthy;
                }
                Some(ChannelEvent::Disconnected { reason }) => {
                    self.emit(ReplyEvent::Error(BackendError::failed(format!(
                        "lost the connection to claude's channel plugin: {reason}"
                    ))))
                    .await;
                    return Aftermath::Broken;
                }
                Some(_) => {}
            }
        }
    }
}
