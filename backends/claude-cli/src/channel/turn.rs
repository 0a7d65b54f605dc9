//! One turn over the channel: wait until Claude is free, push the message until Claude Code confirms
//! it started a prompt, relay the answer, decide when it is over.
//!
//! Why each step (`docs/claude-cli-measurements.md`):
//! - **Free first.** A message pushed while a tool call is open is dropped (section H), and one pushed
//!   between a `reply` call and the prompt's closing request is folded into the running prompt (section
//!   K). Once the previous prompt's `Stop` is in, Claude Code is idle and a push becomes a prompt of its
//!   own. A `Stop` that does not come within [`ClaudeCliConfig::prompt_end_wait`] of its push is taken
//!   as lost; should Claude still be busy then, the transport keeps the push out of the running prompt.
//! - **Confirmed, not assumed.** The `UserPromptSubmit` hook names the message that started a prompt
//!   ([`ChannelEvent::Started`]). A push that is not confirmed in time is pushed again; the transport
//!   keeps the message from starting twice, so a slow first push cannot put it into the conversation a
//!   second time. After [`ClaudeCliConfig::delivery_attempts`] the turn fails and the process is
//!   restarted, so a message given up on cannot start later.
//! - **The client's tools.** The plugin lists them beside `reply` and relays Claude's calls
//!   ([`ChannelEvent::ToolCall`]). Calls that come within [`GATHER`] of each other end this request's
//!   answer together, as parallel tool calls; the turn then waits for their results
//!   ([`TurnRun::hand_out`]). Nothing tells the end of the model's step here (the stream-json mode sees
//!   its `message_stop`), so a call of the same step that comes later goes out in the next answer: each
//!   call is answered either way.
//!
//! [`ClaudeCliConfig::delivery_attempts`]: crate::ClaudeCliConfig::delivery_attempts
//! [`ClaudeCliConfig::prompt_end_wait`]: crate::ClaudeCliConfig::prompt_end_wait

use std::time::Duration;

use synthesis_bridge::spawner::{OutputMark, ProcessHandle};
use synthesis_bridge::transport::{ChannelEvent, ChannelLink, ToolAnswer};
use synthesis_bridge::{BackendError, ReplyEvent, SessionKey};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::agent::{Agent, Io};
use crate::channel::ChannelIo;
use crate::client_tools::{Answer, Calls, why};
use crate::config::ClaudeCliConfig;
use crate::pool::SlotGuard;
use crate::turn::{Aftermath, FAR, TurnRun, exited_mid_turn, wait_ends};

/// ESC interrupts Claude Code's running prompt.
const ESC: &[u8] = b"\x1b";
/// What Claude Code draws once a prompt is interrupted ("Interrupted · What should Claude do instead?").
const INTERRUPTED: &str = "Interrupted";
/// How many times ESC is typed before a process that will not stop is stopped for good.
const ESC_ATTEMPTS: u32 = 5;

/// How long the turn waits for more calls of the client's tools after one came, before the answer ends
/// with them: Claude Code starts the read-only calls of one step as each of their blocks is complete.
const GATHER: Duration = Duration::from_millis(50);

/// How long after its plugin's connection drops a process that is exiting has to be seen exiting.
const EXIT_AFTER_DISCONNECT: Duration = Duration::from_millis(250);

/// How long push number `attempt` (from 1) waits to be confirmed: the wait doubles each time, so that a
/// Claude Code that is only slow gets time while a dropped push is repeated soon.
fn delivery_wait(config: &ClaudeCliConfig, attempt: u32) -> Duration {
    config.delivery_timeout * 2_u32.saturating_pow(attempt.saturating_sub(1).min(16))
}

/// How long `attempts` pushes waited in all.
fn delivery_waited(config: &ClaudeCliConfig, attempts: u32) -> Duration {
    (1..=attempts)
        .map(|attempt| delivery_wait(config, attempt))
        .sum()
}

/// "once", "twice", "3 times".
fn times(count: u32) -> String {
    match count {
        1 => "once".to_owned(),
        2 => "twice".to_owned(),
        n => format!("{n} times"),
    }
}

/// Where the message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not pushed: Claude is still on an earlier prompt.
    Waiting,
    /// Pushed this many times, no prompt started yet.
    Pushed(u32),
    /// Claude Code started a prompt with it.
    Started,
}

impl TurnRun {
    /// The turn over the channel; see the [module docs](self).
    pub(crate) async fn channel_exchange(&mut self) -> Aftermath {
        let config = self.config.clone();
        let (process, session, channel) = parts(&mut self.slot);
        // Reports that arrived between turns are about earlier messages.
        while let Some(event) = channel.link.try_recv() {
            match event {
                ChannelEvent::TurnEnded(end) => {
                    debug!(session = %session, message_id = ?end.message_id, "a prompt is over");
                    channel.finished(end.message_id);
                }
                ChannelEvent::ToolCall(call) => {
                    answer_call(&channel.link, session, call.id, Answer::error(why::NO_TURN)).await;
                }
                other => {
                    info!(session = %session, event = ?other, "dropped a frame from between turns: it answers no turn")
                }
            }
        }
        // Its plugin may have gone since the agent was last checked (while the session was saved, or
        // between its hello and now); nobody would deliver the message.
        if !channel.link.is_connected() {
            return self
                .fail(
                    BackendError::failed(
                        "claude's channel plugin disconnected before the message could be delivered; the next turn starts claude again",
                    ),
                    Aftermath::Broken,
                )
                .await;
        }
        let id = self.message.meta.message_id.clone();
        let output = process.output();
        let mut stage = Stage::Waiting;
        let mut said_anything = false;
        // Armed for whichever wait is on: the previous prompt's end, or this message's start.
        let deadline = tokio::time::sleep(FAR);
        tokio::pin!(deadline);
        let settle = tokio::time::sleep(FAR);
        tokio::pin!(settle);
        // Once cancelled, how many settle periods have passed; once ESC was typed, where the output stood.
        let mut cancelled: Option<u32> = None;
        let mut esc_at: Option<OutputMark> = None;
        // The client's tool calls; once this request's answer ended with some, the wait for their results;
        // and when the calls that came go out.
        let mut calls = Calls::<String>::default();
        let mut waiting = None;
        let gather = tokio::time::sleep(FAR);
        tokio::pin!(gather);
        loop {
            let (process, session, channel) = parts(&mut self.slot);
            if stage == Stage::Waiting {
                match channel.oldest_unfinished() {
                    None => {
                        if let Err(error) = self.push(&id).await {
                            return error;
                        }
                        stage = Stage::Pushed(1);
                        deadline
                            .as_mut()
                            .reset(Instant::now() + config.delivery_timeout);
                        continue;
                    }
                    // Counted from when that message was sent, so that a turn given up while waiting
                    // (its client left) does not make the next one wait all over again.
                    Some((_, sent)) => deadline.as_mut().reset(sent + config.prompt_end_wait),
                }
            }
            let since = esc_at.unwrap_or_else(|| output.mark());
            let pushed = matches!(stage, Stage::Pushed(_));
            let event = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    return self.fail(BackendError::unavailable("the bridge is shutting down"), Aftermath::Broken).await;
                }
                () = self.cancel.cancelled(), if cancelled.is_none() => {
                    if stage == Stage::Waiting {
                        // Never pushed: nothing to undo.
                        return self.fail(BackendError::Cancelled, Aftermath::Healthy).await;
                    }
                    debug!(session = %session, "interrupting claude");
                    cancelled = Some(0);
                    // Nobody takes the calls Claude made for this request.
                    for (call, answer) in calls.orphan(why::CANCELLED) {
                        answer_call(&channel.link, session, call, answer).await;
                    }
                    if stage == Stage::Started {
                        interrupt(process, session, &mut esc_at).await;
                    }
                    settle.as_mut().reset(Instant::now() + config.cancel_settle);
                    continue;
                }
                () = output.wait_for_since(since, INTERRUPTED), if esc_at.is_some() => {
                    // An interrupted prompt gets no `Stop`; forget it so that the next turn need not wait.
                    channel.finished(Some(id.clone()));
                    return self.fail(BackendError::Cancelled, Aftermath::Healthy).await;
                }
                () = &mut settle, if cancelled.is_some() => {
                    let rounds = cancelled.insert(cancelled.unwrap_or_default() + 1);
                    if *rounds == ESC_ATTEMPTS {
                        warn!(session = %session, rounds, "claude does not stop; stopping its process");
                        return self.fail(BackendError::Cancelled, Aftermath::Broken).await;
                    }
                    if stage == Stage::Started {
                        interrupt(process, session, &mut esc_at).await;
                    }
                    settle.as_mut().reset(Instant::now() + config.cancel_settle);
                    continue;
                }
                () = &mut deadline, if stage == Stage::Waiting || (pushed && cancelled.is_none()) => {
                    let Stage::Pushed(attempts) = stage else {
                        warn!(session = %session, waited = ?config.prompt_end_wait, "no Stop report for the previous prompt; taking it as over");
                        channel.forget_unfinished();
                        continue;
                    };
                    if attempts >= config.delivery_attempts {
                        let error = BackendError::failed(format!(
                            "claude did not take the message up: pushed it {} over {}, and no prompt started. The next turn starts claude again",
                            times(attempts),
                            humantime::format_duration(delivery_waited(&config, attempts)),
                        ));
                        // Stopped before the error goes out: a push that starts late must not reach the
                        // conversation of a turn already given up.
                        if let Some(agent) = self.slot.take() {
                            agent.stop().await;
                        }
                        return self.fail(error, Aftermath::Broken).await;
                    }
                    info!(session = %session, attempts, "the message has not started a prompt; pushing it again");
                    if let Err(error) = self.push(&id).await {
                        return error;
                    }
                    stage = Stage::Pushed(attempts + 1);
                    deadline.as_mut().reset(Instant::now() + delivery_wait(&config, attempts + 1));
                    continue;
                }
                exit = process.wait() => {
                    let error = exited_mid_turn(process, exit);
                    return self.fail(error, Aftermath::Broken).await;
                }
                () = &mut gather, if calls.have_step() && waiting.is_none() && cancelled.is_none() => {
                    let step = calls.take_step();
                    info!(session = %session, calls = step.len(), "claude called the client's tools; waiting for their results");
                    waiting = Some(self.hand_out(step).await);
                    continue;
                }
                ended = wait_ends(&mut waiting) => {
                    let wait = waiting.take().expect("a wait ended");
                    let taken = self.take_up(ended, wait, &mut calls).await;
                    if taken.results_came {
                        // The rest of the answer is a new response, which Claude's last words may be.
                        said_anything = false;
                    }
                    let (_, session, channel) = parts(&mut self.slot);
                    for (call, answer) in taken.answers {
                        answer_call(&channel.link, session, call, answer).await;
                    }
                    // Calls that came while the client had the others go out in this answer.
                    gather.as_mut().reset(Instant::now() + GATHER);
                    continue;
                }
                event = channel.link.recv() => event,
            };
            let (process, session, channel) = parts(&mut self.slot);
            let Some(event) = event else {
                return self
                    .fail(
                        BackendError::failed("the channel to claude closed"),
                        Aftermath::Broken,
                    )
                    .await;
            };
            // Anything Claude says about this message proves it arrived, whether or not the start was heard.
            let about_this = match &event {
                ChannelEvent::Started { message_id } => Some(message_id == &id),
                ChannelEvent::Reply(frame) => frame.message_id.as_ref().map(|m| *m == id),
                ChannelEvent::TurnEnded(end) => end.message_id.as_ref().map(|m| *m == id),
                _ => None,
            };
            if about_this == Some(true) && pushed {
                // The timeline of a turn, for scripts/turn-timeline: pushed, started, replied, over.
                debug!(session = %session, message_id = %id, "claude took the message up");
                // Claude Code reports a prompt's start before it asks the model, so an answer that comes
                // first means its hooks do not report; then no `Stop` comes either, and each next
                // message waits `prompt_end_wait`.
                if !matches!(event, ChannelEvent::Started { .. }) && !channel.warned_hooks_silent {
                    channel.warned_hooks_silent = true;
                    warn!(session = %session, "claude answered a message its UserPromptSubmit hook never reported: its hooks do not reach the bridge (are hooks disabled, as by disableAllHooks or allowManagedHooksOnly?); each next message waits --prompt-end-wait for the previous one's Stop");
                }
                stage = Stage::Started;
                self.delivered = true;
                deadline.as_mut().reset(Instant::now() + FAR);
                if cancelled.is_some() {
                    interrupt(process, session, &mut esc_at).await;
                }
            }
            match event {
                ChannelEvent::Started { message_id } if message_id != id => {
                    debug!(session = %session, %message_id, "an earlier message started a prompt");
                }
                ChannelEvent::Reply(frame) => {
                    if about_this == Some(false) || stage == Stage::Waiting {
                        debug!(session = %session, "ignored a reply to an earlier message");
                        continue;
                    }
                    if !frame.content.is_empty() {
                        if !said_anything {
                            debug!(session = %session, message_id = %id, "the answer began");
                        }
                        said_anything = true;
                        self.emit(ReplyEvent::TextDelta(frame.content)).await;
                    }
                    if frame.last {
                        self.answered = true;
                        self.emit(ReplyEvent::end()).await;
                        return Aftermath::Healthy;
                    }
                }
                ChannelEvent::TurnEnded(end) => {
                    debug!(session = %session, message_id = ?end.message_id, "a prompt is over");
                    // A report that names no message ends the oldest one still running.
                    let ours = about_this.unwrap_or_else(|| {
                        channel.oldest_unfinished().map(|(oldest, _)| oldest) == Some(&id)
                    });
                    channel.finished(end.message_id.or_else(|| ours.then(|| id.clone())));
                    if !ours || stage == Stage::Waiting {
                        // An earlier prompt is over: the message can go now (at the top of the loop).
                        continue;
                    }
                    if let Some(error) = end.error {
                        return self
                            .fail(
                                BackendError::failed(format!("claude could not answer: {error}")),
                                Aftermath::Healthy,
                            )
                            .await;
                    }
                    // Claude finished without saying it was done through the reply tool: what it said
                    // last is the answer, unless it already streamed one.
                    if !said_anything
                        && let Some(text) = end.last_message.filter(|text| !text.trim().is_empty())
                    {
                        self.emit(ReplyEvent::TextDelta(text)).await;
                    }
                    self.answered = true;
                    self.emit(ReplyEvent::end()).await;
                    return Aftermath::Healthy;
                }
                ChannelEvent::ToolCall(call) => {
                    // Claude Code reports a prompt's start before it asks the model: a call before that
                    // belongs to no turn of the client's.
                    if stage != Stage::Started || cancelled.is_some() {
                        let why = if cancelled.is_some() {
                            why::CANCELLED
                        } else {
                            why::NO_TURN
                        };
                        answer_call(&channel.link, session, call.id, Answer::error(why)).await;
                        continue;
                    }
                    debug!(session = %session, tool = %call.name, call = %call.id, "claude calls a client tool");
                    let id = call.id.clone();
                    calls.announce(call);
                    if let Some((id, answer)) = calls.open(id) {
                        answer_call(&channel.link, session, id, answer).await;
                    }
                    gather.as_mut().reset(Instant::now() + GATHER);
                }
                ChannelEvent::Error { message } => {
                    if stage == Stage::Waiting {
                        debug!(session = %session, %message, "ignored an error about an earlier message");
                        continue;
                    }
                    // A prompt that started ends with its `Stop`; a message that did not start yet might
                    // start later, answering nobody: that process is stopped.
                    let aftermath = if stage == Stage::Started {
                        Aftermath::Healthy
                    } else {
                        Aftermath::Broken
                    };
                    return self
                        .fail(
                            BackendError::failed(format!(
                                "claude's channel plugin reported an error: {message}"
                            )),
                            aftermath,
                        )
                        .await;
                }
                ChannelEvent::Disconnected { reason } => {
                    // A dying process takes its plugin's connection with it, often a moment before its
                    // exit is seen: if that is what happened, say so.
                    let error =
                        match tokio::time::timeout(EXIT_AFTER_DISCONNECT, process.wait()).await {
                            Ok(exit) => exited_mid_turn(process, exit),
                            Err(_) => BackendError::failed(format!(
                                "lost the connection to claude's channel plugin: {reason}"
                            )),
                        };
                    return self.fail(error, Aftermath::Broken).await;
                }
                _ => {}
            }
        }
    }

    /// Pushes the message (again). On failure, returns how the turn ends.
    async fn push(&mut self, id: &str) -> Result<(), Aftermath> {
        let (_, session, channel) = parts(&mut self.slot);
        if channel.link.send(self.message.clone()).await.is_err() {
            return Err(self
                .fail(
                    BackendError::failed("the channel to claude is closed"),
                    Aftermath::Broken,
                )
                .await);
        }
        channel.sent(id.to_owned());
        debug!(session = %session, message_id = %id, "pushed the message");
        Ok(())
    }
}

/// The agent's process, session and channel: a channel turn runs on a launched channel agent.
fn parts(slot: &mut SlotGuard) -> (&dyn ProcessHandle, &SessionKey, &mut ChannelIo) {
    let Some(Agent {
        process,
        session,
        io: Io::Channel(channel),
        ..
    }) = slot.as_mut()
    else {
        unreachable!("a channel turn runs on a launched channel agent");
    };
    (&**process, session, channel)
}

/// Answers the client's tool call `call_id` through the plugin.
async fn answer_call(link: &ChannelLink, session: &SessionKey, call_id: String, answer: Answer) {
    let answer = if answer.is_error {
        ToolAnswer::failed(call_id, answer.text)
    } else {
        ToolAnswer::new(call_id, answer.text)
    };
    if let Err(err) = link.answer(answer).await {
        warn!(session = %session, %err, "cannot answer claude's call of a client tool");
    }
}

/// Types ESC into the terminal: Claude Code is on this turn's prompt (it started, and nothing else is
/// running before it).
async fn interrupt(
    process: &dyn ProcessHandle,
    session: &SessionKey,
    esc_at: &mut Option<OutputMark>,
) {
    esc_at.get_or_insert_with(|| process.output().mark());
    if let Err(err) = process.write(ESC).await {
        warn!(session = %session, %err, "cannot type ESC");
    }
}
