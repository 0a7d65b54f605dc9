//! Keeps the agent side of a turn tidy whatever happens to the HTTP side.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::backend::{ReplyEvent, ReplyStream};
use crate::layers::concurrency::SlotLease;

/// A turn's [`ReplyStream`] as the handler consumes it.
///
/// When dropped before the answer is complete (the client went away, a deadline passed) it fires the turn's
/// cancellation. Either way the rest of the stream is drained in the background, because the stream ends
/// only when the agent is really done (see [`ReplyStream`]): the backend must not be left blocked on a
/// full channel, and the end of the drain is when the agent is free again. So the session's slot lease is
/// held until then.
pub(crate) struct TurnStream {
    stream: Option<ReplyStream>,
    cancel: CancellationToken,
    answered: bool,
    lease: Option<SlotLease>,
}

impl TurnStream {
    pub(crate) fn new(
        stream: ReplyStream,
        cancel: CancellationToken,
        lease: Option<SlotLease>,
    ) -> Self {
        Self {
            stream: Some(stream),
            cancel,
            answered: false,
            lease,
        }
    }

    /// Stops waiting for the answer: cancels the turn (unless it was answered) and drains in the background.
    pub(crate) fn abandon(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        if !self.answered {
            self.cancel.cancel();
        }
        let lease = self.lease.take();
        // Without a runtime (the process is exiting) there is nobody left to drain for.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                while stream.next().await.is_some() {}
                drop(lease);
            });
        }
    }
}

impl Stream for TurnStream {
    type Item = ReplyEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ReplyEvent>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        let event = std::task::ready!(stream.poll_next_unpin(cx));
        match &event {
            Some(ReplyEvent::End(_) | ReplyEvent::Error(_)) => self.answered = true,
            Some(_) => {}
            None => {
                // The agent is done: the session is free for its next turn.
                self.stream = None;
                self.lease = None;
            }
        }
        Poll::Ready(event)
    }
}

impl Drop for TurnStream {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;

    use super::*;

    #[tokio::test]
    async fn dropping_an_unanswered_turn_cancels_it_and_drains_the_rest() {
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let events = tokio_stream_from(rx);
        let turn = TurnStream::new(events, cancel.clone(), None);
        drop(turn);
        assert!(cancel.is_cancelled());
        // The backend can still send: somebody is draining.
        tx.send(ReplyEvent::text("late")).await.unwrap();
        tx.send(ReplyEvent::text("later")).await.unwrap();
        drop(tx);
    }

    #[tokio::test]
    async fn an_answered_turn_is_not_cancelled() {
        let cancel = CancellationToken::new();
        let mut turn = TurnStream::new(
            stream::iter([ReplyEvent::end()])
                .chain(stream::pending())
                .boxed(),
            cancel.clone(),
            None,
        );
        assert_eq!(turn.next().await, Some(ReplyEvent::end()));
        drop(turn);
        assert!(!cancel.is_cancelled());
    }

    fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<ReplyEvent>) -> ReplyStream {
        stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }
}
