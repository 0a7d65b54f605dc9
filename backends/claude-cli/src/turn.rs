//! One turn on a running agent, whatever the mode: the task that owns the session's slot for the turn,
//! relays the mode's exchange with Claude, and leaves the slot ready for the next turn.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use synthesis_bridge::spawner::{ProcessExit, ProcessHandle};
use synthesis_bridge::transport::InboundMessage;
use synthesis_bridge::{BackendError, FinishReason, ReplyEvent, ToolCall, ToolResult};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::client_tools::{Answer, Calls, OpenCall};

use crate::agent::Io;
use crate::config::ClaudeCliConfig;
use crate::pool::{Slot, SlotGuard};
use crate::retry::Unanswered;
use crate::screen;

/// The error of a turn whose process died under it.
pub(crate) fn exited_mid_turn(process: &dyn ProcessHandle, exit: ProcessExit) -> BackendError {
    BackendError::failed(format!(
        "claude {} in the middle of the turn. The next turn resumes the conversation in a new process",
        screen::exit_reason(exit, &process.output().text()),
    ))
}

/// A time far enough away to stand for "never" in a `sleep` that is armed later.
pub(crate) const FAR: Duration = Duration::from_secs(86_400 * 365);

/// What the session's next turn brings a turn that waits for the client's tool results.
#[derive(Debug)]
pub(crate) enum Resumption {
    /// The results, and where the rest of the answer goes now.
    Results {
        results: Vec<ToolResult>,
        events: mpsc::Sender<ReplyEvent>,
        cancel: CancellationToken,
    },
    /// A new user message instead: the calls get an error, and the turn finishes unheard.
    Abandoned,
}

/// A turn's wait for the client's tool results, once its answer ended with calls of the client's tools.
pub(crate) struct ToolWait {
    resumption: mpsc::Receiver<Resumption>,
    /// When the calls get an error instead (`--tool-result-timeout`).
    until: Pin<Box<Sleep>>,
}

/// How a wait for tool results ended, once the turn took it up.
#[derive(Debug)]
pub(crate) enum Resumed {
    /// The client's results: the rest of the answer goes to their request.
    Results(Vec<ToolResult>),
    /// A new message came instead: the turn is cancelled, as nobody hears the rest.
    Abandoned,
    /// `--tool-result-timeout` passed: Claude finishes the turn, unheard.
    TimedOut,
}

/// What a turn does once its wait for tool results ended.
pub(crate) struct TakenUp<C> {
    /// The answers to give the calls Claude waits on.
    pub(crate) answers: Vec<(C, Answer)>,
    /// Whether the client's results came: the rest of the answer goes to their request.
    pub(crate) results_came: bool,
}

/// How the wait in `wait` ends (`None`: it timed out); never, when there is none.
pub(crate) async fn wait_ends(wait: &mut Option<ToolWait>) -> Option<Resumption> {
    let Some(waiting) = wait else {
        return std::future::pending().await;
    };
    tokio::select! {
        resumption = waiting.resumption.recv() => Some(resumption.unwrap_or(Resumption::Abandoned)),
        () = &mut waiting.until => None,
    }
}

/// A token that is cancelled already: the turn stops Claude at once.
fn cancelled() -> CancellationToken {
    let token = CancellationToken::new();
    token.cancel();
    token
}

/// What a turn left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aftermath {
    /// The agent can take the next turn.
    Healthy,
    /// The process died, lost its channel or must be stopped: the next turn starts a new one.
    Broken,
}

/// A turn in flight. It holds its session's slot until the agent is free again.
pub(crate) struct TurnRun {
    pub(crate) session: Arc<Slot>,
    pub(crate) slot: SlotGuard,
    /// What the client sent.
    pub(crate) text: String,
    /// The message this turn carries on with (a retry), which stays unanswered if this turn fails too.
    pub(crate) original: Option<Unanswered>,
    /// Whether the message reached Claude: in the channel mode, its `UserPromptSubmit` came; in the
    /// stream-json mode, it was written to claude's input.
    pub(crate) delivered: bool,
    /// Whether the whole answer went to the client.
    pub(crate) answered: bool,
    pub(crate) message: InboundMessage,
    pub(crate) cancel: CancellationToken,
    pub(crate) shutdown: CancellationToken,
    pub(crate) config: Arc<ClaudeCliConfig>,
    pub(crate) events: mpsc::Sender<ReplyEvent>,
    /// The turn of a request that named no session: its process is stopped when it is over.
    pub(crate) one_off: bool,
    /// The fingerprint of the client's instructions with this turn: Claude has them once the message
    /// reached it (with them, or without a change). None for a retry, whose note carries none.
    pub(crate) instructions: Option<u64>,
}

impl TurnRun {
    pub(crate) async fn run(mut self) {
        let channel = self
            .slot
            .as_ref()
            .is_some_and(|agent| matches!(agent.io, Io::Channel(_)));
        let aftermath = if channel {
            self.channel_exchange().await
        } else {
            self.stream_json_exchange().await
        };
        if (aftermath == Aftermath::Broken || self.one_off)
            && let Some(agent) = self.slot.take()
        {
            agent.stop().await;
        }
        // A turn that waited for tool results no longer does.
        self.session.state.take_paused();
        if self.delivered
            && let Some(instructions) = self.instructions
        {
            self.session.state.instructions.remember(instructions);
        }
        if self.one_off {
            return;
        }
        // A message that reached Claude and got no whole answer is what a retry of it carries on with.
        if self.answered {
            self.session.state.set_unanswered(None);
        } else if self.delivered {
            let unanswered = self.original.take().unwrap_or_else(|| Unanswered {
                text: std::mem::take(&mut self.text),
                message_id: self.message.meta.message_id.clone(),
                at: Instant::now(),
            });
            self.session.state.set_unanswered(Some(Unanswered {
                at: Instant::now(),
                ..unanswered
            }));
        }
        // Idle from now, not from the turn's start: the sweeper may look as soon as the slot is free.
        self.session.touch();
    }

    pub(crate) async fn emit(&self, event: ReplyEvent) {
        // A consumer that went away has cancelled the turn; it is still finished properly.
        let _ = self.events.send(event).await;
    }

    /// Ends this request's answer with `step`, calls of the client's tools that Claude waits on: its
    /// stream ends, so that the session's next request, with their results, can come in.
    pub(crate) async fn hand_out(&mut self, step: Vec<ToolCall>) -> ToolWait {
        // Registered first: the results may come as soon as the client has the calls.
        let (resume, resumption) = mpsc::channel(1);
        self.session.state.pause(resume);
        for call in step {
            self.emit(ReplyEvent::ToolCall(call)).await;
        }
        self.answered = true;
        self.emit(ReplyEvent::End(FinishReason::ToolCalls)).await;
        // Nobody hears the turn until the results come.
        self.events = mpsc::channel(1).0;
        self.cancel = CancellationToken::new();
        ToolWait {
            resumption,
            until: Box::pin(tokio::time::sleep(self.config.tool_result_timeout)),
        }
    }

    /// Takes up how `wait` ended (`ended`, `None` if it timed out): the answers `calls` get now, and
    /// whether the client's results came (then the rest of the answer is a new response).
    pub(crate) async fn take_up<C: OpenCall>(
        &mut self,
        ended: Option<Resumption>,
        mut wait: ToolWait,
        calls: &mut Calls<C>,
    ) -> TakenUp<C> {
        let ended = match ended {
            Some(resumption) => Some(resumption),
            None => {
                // Results handed over just as the wait ran out still count.
                self.session.state.take_paused();
                wait.resumption.close();
                // After `close`, `recv` takes what a sender had begun to hand over and then says there is
                // nothing more.
                wait.resumption.recv().await
            }
        };
        let session = &self.message.meta.chat_id;
        let (resumed, results_came) = match ended {
            Some(Resumption::Results {
                results,
                events,
                cancel,
            }) => {
                debug!(%session, results = results.len(), "the client's tool results came; claude goes on");
                self.events = events;
                self.cancel = cancel;
                (Resumed::Results(results), true)
            }
            Some(Resumption::Abandoned) => {
                // Nobody hears the rest of this turn: stop it, so that the new message need not wait.
                self.cancel = cancelled();
                (Resumed::Abandoned, false)
            }
            // Not cancelled: an interrupt right after the error answer makes Claude Code record the call as
            // refused by the user, and the model loses why it failed (N8).
            None => {
                warn!(%session, timeout = ?self.config.tool_result_timeout, "the client sent no tool results in time: the calls get an error");
                (Resumed::TimedOut, false)
            }
        };
        TakenUp {
            answers: calls.take_up(resumed),
            results_came,
        }
    }

    pub(crate) async fn fail(&self, error: BackendError, aftermath: Aftermath) -> Aftermath {
        self.emit(ReplyEvent::Error(error)).await;
        aftermath
    }
}
