//! How each turn ended, recorded in one place: [`Observed`], around the chat route's every response,
//! records the outcome once, from what the client got. An error response or chunk stands for the outcome
//! of its [`ApiError`] ([`outcome_of`], the one mapping); a complete answer is `ok`; a response dropped
//! before its last chunk was abandoned by the client. A streamed answer says how it ended with
//! [`TurnRecord::ended`] as it writes its last chunk, and one that ends without saying so is counted as
//! failed, loudly: a new path that forgets cannot pass for a client that left. A turn given up before it
//! had a response (the client left while it queued or ran, a route layer's timeout) is recorded by
//! [`Unanswered`] as abandoned.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tracing::Span;

use crate::metrics::{Metrics, TurnOutcome};
use crate::openai::ApiError;

/// The outcome of a turn that ended with `error`.
pub(crate) fn outcome_of(error: &ApiError) -> TurnOutcome {
    match (error.status, error.code) {
        (_, "shutting_down") => TurnOutcome::Shutdown,
        (_, "cancelled") => TurnOutcome::ClientClosed,
        (StatusCode::GATEWAY_TIMEOUT, _) => TurnOutcome::TimedOut,
        (status, _) if status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE => {
            TurnOutcome::Rejected
        }
        _ => TurnOutcome::Failed,
    }
}

/// One turn's bookkeeping, shared by whoever answers it: its log span, its clock, its first delta, and how
/// its stream said it ended.
#[derive(Debug, Clone)]
pub(crate) struct TurnRecord {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    metrics: Metrics,
    started: Instant,
    span: Span,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    first_delta_seen: bool,
    ended: Option<TurnOutcome>,
    recorded: bool,
}

impl TurnRecord {
    pub(crate) fn start(metrics: Metrics, span: Span) -> Self {
        Self {
            inner: Arc::new(Inner {
                metrics,
                started: Instant::now(),
                span,
                state: Mutex::default(),
            }),
        }
    }

    pub(crate) fn span(&self) -> &Span {
        &self.inner.span
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn first_delta(&self) {
        let first = !std::mem::replace(&mut self.state().first_delta_seen, true);
        if first {
            self.inner
                .metrics
                .record_first_delta(self.inner.started.elapsed());
        }
    }

    /// A streamed answer's last chunk: the whole answer (`None`), or the error it ends with. The first
    /// word counts.
    pub(crate) fn ended(&self, error: Option<&ApiError>) {
        self.state()
            .ended
            .get_or_insert(error.map_or(TurnOutcome::Ok, outcome_of));
    }

    /// Records the outcome, once.
    pub(crate) fn record(&self, outcome: TurnOutcome) {
        if std::mem::replace(&mut self.state().recorded, true) {
            return;
        }
        let elapsed = self.inner.started.elapsed();
        self.inner.metrics.record_turn(outcome, elapsed);
        let _entered = self.inner.span.enter();
        let elapsed_ms = elapsed.as_millis() as u64;
        match outcome {
            TurnOutcome::Ok => tracing::info!(elapsed_ms, "turn answered"),
            TurnOutcome::Rejected => tracing::debug!("request refused"),
            outcome => tracing::warn!(?outcome, elapsed_ms, "turn did not complete"),
        }
    }
}

/// Records a turn that never got as far as a response as abandoned, when dropped armed: the future that was
/// answering it was dropped.
#[derive(Debug)]
pub(crate) struct Unanswered(Option<TurnRecord>);

impl Unanswered {
    pub(crate) fn new(record: TurnRecord) -> Self {
        Self(Some(record))
    }

    /// The turn has its response: [`Observed`] takes over.
    pub(crate) fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(record) = self.0.take() {
            let ended = record.state().ended;
            record.record(ended.unwrap_or(TurnOutcome::ClientClosed));
        }
    }
}

pin_project_lite::pin_project! {
    /// A chat response's body, watched to its end: see the [module docs](self).
    pub(crate) struct Observed<B> {
        #[pin]
        inner: B,
        record: TurnRecord,
        finished: bool,
    }

    impl<B> PinnedDrop for Observed<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.finished {
                // The last chunk may have gone out without the end being polled for; otherwise the client left.
                let ended = this.record.state().ended;
                this.record.record(ended.unwrap_or(TurnOutcome::ClientClosed));
            }
        }
    }
}

/// Watches `response`, the answer to the turn of `record`. Its outcome is known now when it is an error
/// (tagged by [`error_response`](super::error_response)) or a whole completion (tagged `ok`); a stream's
/// when it ends.
pub(crate) fn observe<B>(response: Response<B>, record: TurnRecord) -> Response<Observed<B>> {
    if let Some(outcome) = response.extensions().get::<TurnOutcome>() {
        record.state().ended.get_or_insert(*outcome);
    }
    response.map(|inner| Observed {
        inner,
        record,
        finished: false,
    })
}

impl<B> Body for Observed<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        // hyper drops a body that says it has ended without polling it again, so the last frame counts as
        // the end.
        let ended = match &frame {
            None => true,
            Some(Ok(_)) => this.inner.is_end_stream(),
            Some(Err(_)) => false,
        };
        if ended && !*this.finished {
            *this.finished = true;
            let record = this.record;
            let ended = record.state().ended;
            let outcome = ended.unwrap_or_else(|| {
                tracing::error!(parent: record.span(), "a turn's response ended without saying how the turn ended; counted as failed");
                TurnOutcome::Failed
            });
            record.record(outcome);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::backend::BackendError;

    fn watched(
        metrics: &Metrics,
        tag: Option<TurnOutcome>,
    ) -> (Response<Observed<Full<Bytes>>>, TurnRecord) {
        let record = TurnRecord::start(metrics.clone(), Span::none());
        let mut response = Response::new(Full::new(Bytes::from_static(b"data")));
        if let Some(tag) = tag {
            response.extensions_mut().insert(tag);
        }
        (observe(response, record.clone()), record)
    }

    #[tokio::test]
    async fn a_response_is_counted_once_by_how_it_ended() {
        let metrics = Metrics::new();
        // A tagged response, read to its end.
        let (response, _) = watched(&metrics, Some(TurnOutcome::Rejected));
        response.into_body().collect().await.unwrap();
        assert_eq!(metrics.turns(TurnOutcome::Rejected), 1);
        // A stream that said how it ended, dropped after its last chunk without being polled to the end.
        let (response, record) = watched(&metrics, None);
        record.ended(Some(&ApiError::from(BackendError::Timeout("x".into()))));
        drop(response);
        assert_eq!(metrics.turns(TurnOutcome::TimedOut), 1);
        // Dropped before it ended: the client left; saying more afterwards changes nothing.
        let (response, record) = watched(&metrics, None);
        drop(response);
        record.ended(None);
        assert_eq!(metrics.turns(TurnOutcome::ClientClosed), 1);
        assert_eq!(metrics.turns(TurnOutcome::Ok), 0);
    }

    #[tokio::test]
    async fn a_response_that_ends_without_saying_how_counts_as_failed() {
        let metrics = Metrics::new();
        let (response, _) = watched(&metrics, None);
        // As hyper reads a body: it stops at the frame after which the body says it has ended.
        let mut body = std::pin::pin!(response.into_body());
        let frame = body.frame().await.unwrap().unwrap();
        assert!(frame.is_data() && body.is_end_stream());
        assert_eq!(metrics.turns(TurnOutcome::Failed), 1);
        assert_eq!(metrics.turns(TurnOutcome::ClientClosed), 0);
    }

    #[test]
    fn a_turn_given_up_before_its_response_was_abandoned() {
        let metrics = Metrics::new();
        let record = TurnRecord::start(metrics.clone(), Span::none());
        drop(Unanswered::new(record));
        assert_eq!(metrics.turns(TurnOutcome::ClientClosed), 1);
        let record = TurnRecord::start(metrics.clone(), Span::none());
        Unanswered::new(record.clone()).answered();
        drop(record);
        assert_eq!(metrics.turns(TurnOutcome::ClientClosed), 1);
    }

    #[test]
    fn each_error_stands_for_its_outcome() {
        let outcome = |error: BackendError| outcome_of(&ApiError::from(error));
        assert_eq!(
            outcome(BackendError::unavailable("x")),
            TurnOutcome::Rejected
        );
        assert_eq!(
            outcome(BackendError::Rejected("x".into())),
            TurnOutcome::Rejected
        );
        assert_eq!(
            outcome(BackendError::Timeout("x".into())),
            TurnOutcome::TimedOut
        );
        assert_eq!(outcome(BackendError::failed("x")), TurnOutcome::Failed);
        assert_eq!(outcome(BackendError::Cancelled), TurnOutcome::ClientClosed);
        assert_eq!(
            outcome_of(&super::super::shutting_down()),
            TurnOutcome::Shutdown
        );
        let too_large = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "x",
            "x",
        );
        assert_eq!(outcome_of(&too_large), TurnOutcome::Rejected);
    }
}
