//! The one place where errors from the layers become what an OpenAI client understands: an error response
//! before the head, a final error chunk and `[DONE]` after it.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{BoxError, Service, ServiceExt};

use super::outcome::TurnRecord;
use super::{RequestBody, ResponseBody, respond};
use crate::layers::concurrency::{AdmissionElapsed, QueueFull};
use crate::layers::timeout::{DeadlineElapsed, IdleElapsed};
use crate::openai::ApiError;
use crate::openai::chunk::{self, ChunkEncoder, DONE};

/// The client's view of an error from the layers.
pub(crate) fn classify(error: &BoxError) -> ApiError {
    let timeout = |code, message: String| {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", code, message)
    };
    if let Some(full) = error.downcast_ref::<QueueFull>() {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "session_busy",
            format!(
                "this session is busy: {} requests are already waiting for it; retry later",
                full.queue_depth()
            ),
        )
        .with_retry_after(Some(full.retry_after()))
    } else if let Some(elapsed) = error.downcast_ref::<AdmissionElapsed>() {
        timeout(
            "admission_timeout",
            format!("the turn never started: it {elapsed} in this session"),
        )
    } else if let Some(elapsed) = error.downcast_ref::<DeadlineElapsed>() {
        timeout(
            "turn_timeout",
            format!(
                "the turn was stopped after {}, its deadline",
                humantime::format_duration(elapsed.deadline())
            ),
        )
    } else if let Some(elapsed) = error.downcast_ref::<IdleElapsed>() {
        timeout(
            "idle_timeout",
            format!(
                "the turn was stopped: the agent sent nothing for {}",
                humantime::format_duration(elapsed.idle_timeout())
            ),
        )
    } else if error.is::<tower::timeout::error::Elapsed>() {
        // From a user's `tower::timeout::TimeoutLayer` around the bridge.
        timeout("timeout", format!("no answer in time: {error}"))
    } else {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            format!("the bridge failed to answer: {error}"),
        )
    }
}

pin_project_lite::pin_project! {
    /// Ends a stream that failed in a layer with the final error chunk and `[DONE]`, and says so to the
    /// turn's record. Without an encoder (a response that is not a stream) the error goes on to hyper.
    pub(crate) struct FinalChunkBody<B> {
        #[pin]
        inner: B,
        encoder: Option<ChunkEncoder>,
        record: TurnRecord,
        done: bool,
    }
}

impl<B> FinalChunkBody<B> {
    pub(crate) fn new(inner: B, encoder: Option<ChunkEncoder>, record: TurnRecord) -> Self {
        Self {
            inner,
            encoder,
            record,
            done: false,
        }
    }
}

impl<B> Body for FinalChunkBody<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let error = match ready!(this.inner.poll_frame(cx)) {
            Some(Err(error)) => error,
            None => {
                *this.done = true;
                return Poll::Ready(None);
            }
            frame => return Poll::Ready(frame),
        };
        *this.done = true;
        let api_error = classify(&error);
        this.record.ended(Some(&api_error));
        let Some(encoder) = this.encoder else {
            return Poll::Ready(Some(Err(error)));
        };
        let _entered = this.record.span().enter();
        tracing::warn!(%error, "turn cut off");
        let last = chunk::concat(&[encoder.error(&api_error), Bytes::from_static(DONE)]);
        Poll::Ready(Some(Ok(Frame::data(last))))
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.encoder {
            // A final chunk may be added.
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

/// Answers the errors of a user's layer (or its readiness) as OpenAI errors, since an error out of a hyper
/// service drops the connection without a word.
#[derive(Clone)]
pub(crate) struct AnswerErrors<S> {
    inner: S,
}

impl<S> AnswerErrors<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, E> Service<Request<RequestBody>> for AnswerErrors<S>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = E> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

    /// Always ready: the inner service's readiness is awaited in the call, where an error can be answered.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let inner = self.inner.clone();
        inner
            .oneshot(request)
            .map(|answered| {
                Ok(match answered {
                    Ok(response) => response.map(|body| body.map_err(Into::into).boxed_unsync()),
                    Err(error) => respond(classify(&error.into())),
                })
            })
            .boxed()
    }
}
