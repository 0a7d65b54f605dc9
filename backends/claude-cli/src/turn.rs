//! One turn on a running agent: push the message, relay the answer, decide when it is over.

use std::sync::Arc;
use std::time::Duration;

use synthesis_bridge::spawner::{OutputMark, ProcessExit};
use synthesis_bridge::transport::{ChannelEvent, InboundMessage};
use synthesis_bridge::{BackendError, ReplyEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::agent::{Agent, last_lines};
use crate::pool::{Slot, SlotGuard};

/// ESC interrupts Claude Code's running prompt.
const ESC: &[u8] = b"\x1b";
/// What Claude Code draws once a prompt is interrupted ("Interrupted · What should Claude do instead?").
const INTERRUPTED: &str = "Interrupted";
/// How many times ESC is typed before a process that will not stop is stopped for good. An ESC typed
/// before Claude Code has picked the message up is lost, so one is not always enough.
const ESC_ATTEMPTS: u32 = 5;

/// How long after its plugin's connection drops a process that is exiting has to be seen exiting.
const EXIT_AFTER_DISCONNECT: Duration = Duration::from_millis(250);

fn exited_mid_turn(agent: &Agent, exit: ProcessExit) -> BackendError {
    let last = last_lines(&agent.process.output().text(), 1);
    BackendError::failed(format!(
        "claude exited ({exit}) in the middle of the turn; its last words: {last:?}. The next turn resumes the conversation in a new process"
    ))
}

/// Types ESC if Claude Code is on message `id`: while an earlier prompt is still finishing (its `Stop`
/// not yet reported), ESC would interrupt that one, and this message would run after it.
async fn interrupt(agent: &Agent, id: &str, esc_at: &mut Option<OutputMark>) {
    if agent.unfinished.front().map(String::as_str) != Some(id) {
        return;
    }
    esc_at.get_or_insert_with(|| agent.process.output().mark());
    if let Err(err) = agent.process.write(ESC).await {
        warn!(session = %agent.session(), %err, "cannot type ESC");
    }
}

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
    pub(crate) session: Arc<Slot>,
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
        // Idle from now, not from the turn's start: the sweeper may look as soon as the slot is free.
        self.session.touch();
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
                other => {
                    debug!(session = %agent.session(), event = ?other, "dropped an event from between turns")
                }
            }
        }
        // Its plugin may have gone since the agent was last checked (while the session was saved, or
        // between its hello and now); nobody would deliver the message.
        if !agent.link.is_connected() {
            self.emit(ReplyEvent::Error(BackendError::failed(
                "claude's channel plugin disconnected before the message could be delivered; the next turn starts claude again",
            )))
            .await;
            return Aftermath::Broken;
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
        let output = agent.process.output();
        let settle = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(settle);
        // Once cancelled, how many settle periods have passed; once ESC was typed, where the output stood.
        let mut cancelled: Option<u32> = None;
        let mut esc_at: Option<OutputMark> = None;
        loop {
            let agent = self.slot.as_mut().expect("still there");
            let since = esc_at.unwrap_or_else(|| output.mark());
            let event = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    self.emit(ReplyEvent::Error(BackendError::unavailable("the bridge is shutting down"))).await;
                    return Aftermath::Broken;
                }
                () = self.cancel.cancelled(), if cancelled.is_none() => {
                    debug!(session = %agent.session(), "interrupting claude");
                    cancelled = Some(0);
                    interrupt(agent, &id, &mut esc_at).await;
                    settle.as_mut().reset(Instant::now() + self.settle);
                    continue;
                }
                () = output.wait_for_since(since, INTERRUPTED), if esc_at.is_some() => {
                    // An interrupted prompt gets no `Stop`; forget it so that reports keep lining up.
                    agent.unfinished.retain(|unfinished| *unfinished != id);
                    self.emit(ReplyEvent::Error(BackendError::Cancelled)).await;
                    return Aftermath::Healthy;
                }
                () = &mut settle, if cancelled.is_some() => {
                    let rounds = cancelled.insert(cancelled.unwrap_or_default() + 1);
                    if *rounds == ESC_ATTEMPTS {
                        warn!(session = %agent.session(), rounds, "claude does not stop; stopping its process");
                        self.emit(ReplyEvent::Error(BackendError::Cancelled)).await;
                        return Aftermath::Broken;
                    }
                    interrupt(agent, &id, &mut esc_at).await;
                    settle.as_mut().reset(Instant::now() + self.settle);
                    continue;
                }
                exit = agent.process.wait() => {
                    let error = exited_mid_turn(agent, exit);
                    self.emit(ReplyEvent::Error(error)).await;
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
                        // An earlier prompt is over: if this one is cancelled, it can be interrupted now.
                        if cancelled.is_some() {
                            interrupt(agent, &id, &mut esc_at).await;
                        }
                        continue;
                    }
                    if let Some(error) = end.error {
                        self.emit(ReplyEvent::Error(BackendError::failed(format!(
                            "claude could not answer: {error}"
                        ))))
                        .await;
                        return Aftermath::Healthy;
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
                    // A dying process takes its plugin's connection with it, often a moment before its
                    // exit is seen: if that is what happened, say so.
                    let error =
                        match tokio::time::timeout(EXIT_AFTER_DISCONNECT, agent.process.wait())
                            .await
                        {
                            Ok(exit) => exited_mid_turn(agent, exit),
                            Err(_) => BackendError::failed(format!(
                                "lost the connection to claude's channel plugin: {reason}"
                            )),
                        };
                    self.emit(ReplyEvent::Error(error)).await;
                    return Aftermath::Broken;
                }
                Some(_) => {}
            }
        }
    }
}
