//! The streaming answer: a `text/event-stream` body fed by the turn's reply stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{broken_off, shutting_down};
use bytes::Bytes;
use futures::StreamExt;
use http_body::{Body, Frame};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::outcome::TurnRecord;
use super::turn_stream::TurnStream;
use crate::backend::{FinishReason, ReplyEvent, Usage};
use crate::openai::ApiError;
use crate::openai::chunk::{self, ChunkEncoder, DONE};

pin_project_lite::pin_project! {
    /// Sends the role chunk, then each text delta as soon as the agent yields it, then exactly one ending:
    /// the finish chunk (and usage chunk, if asked for) or an error chunk, followed by `data: [DONE]`.
    /// Dropping it early cancels the turn (see [`TurnStream`]).
    pub(crate) struct SseBody {
        encoder: ChunkEncoder,
        turn: TurnStream,
        #[pin]
        shutdown: WaitForCancellationFutureOwned,
        state: State,
        include_usage: bool,
        usage: Usage,
        // How many tool calls went out: the next one's index.
        tool_calls: usize,
        record: TurnRecord,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Role,
    Streaming,
    Done,
}

impl SseBody {
    pub(crate) fn new(
        encoder: ChunkEncoder,
        turn: TurnStream,
        shutdown: WaitForCancellationFutureOwned,
        include_usage: bool,
        record: TurnRecord,
    ) -> Self {
        Self {
            encoder,
            turn,
            shutdown,
            state: State::Role,
            include_usage,
            usage: Usage::default(),
            tool_calls: 0,
            record,
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut this = self.project();
        match this.state {
            State::Done => return Poll::Ready(None),
            State::Role => {
                *this.state = State::Streaming;
                return Poll::Ready(Some(Ok(Frame::data(this.encoder.role()))));
            }
            State::Streaming => {}
        }
        let _entered = this.record.span().clone().entered();
        let last = loop {
            let failure = match this.turn.poll_next_unpin(cx) {
                Poll::Ready(Some(ReplyEvent::TextDelta(text))) => {
                    if text.is_empty() {
                        continue;
                    }
                    this.record.first_delta();
                    return Poll::Ready(Some(Ok(Frame::data(this.encoder.delta(&text)))));
                }
                Poll::Ready(Some(ReplyEvent::Usage(usage))) => {
                    *this.usage = usage;
                    continue;
                }
                Poll::Ready(Some(ReplyEvent::ToolCall(call))) => {
                    this.record.first_delta();
                    let chunk = this.encoder.tool_call(*this.tool_calls, &call);
                    *this.tool_calls += 1;
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(Some(ReplyEvent::End(reason))) => {
                    this.record.ended(None);
                    let usage = this.include_usage.then_some(&*this.usage);
                    break ending(this.encoder, reason, usage);
                }
                Poll::Ready(Some(ReplyEvent::Error(error))) => error,
                Poll::Ready(None) => broken_off(),
                Poll::Pending => {
                    if this.shutdown.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let error = shutting_down();
                    this.record.ended(Some(&error));
                    break chunk::concat(&[this.encoder.error(&error), Bytes::from_static(DONE)]);
                }
            };
            tracing::warn!(error = %failure, "turn failed after the response started");
            let error = ApiError::from(failure);
            this.record.ended(Some(&error));
            break chunk::concat(&[this.encoder.error(&error), Bytes::from_static(DONE)]);
        };
        *this.state = State::Done;
        // Answered or not, the client has all it will get: let the agent finish (or stop) in the background.
        this.turn.abandon();
        Poll::Ready(Some(Ok(Frame::data(last))))
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }
}

fn ending(encoder: &ChunkEncoder, reason: FinishReason, usage: Option<&Usage>) -> Bytes {
    match usage {
        Some(usage) => chunk::concat(&[
            encoder.finish(reason),
            encoder.usage(usage),
            Bytes::from_static(DONE),
        ]),
        None => chunk::concat(&[encoder.finish(reason), Bytes::from_static(DONE)]),
    }
}
