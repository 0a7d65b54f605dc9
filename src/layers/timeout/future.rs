//! The response future: the deadline's clock until the head.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use tower::BoxError;

use super::clock::{Clock, expired};
use super::{DeadlineElapsed, StreamTimeoutLayer, TimeoutBody};

pin_project_lite::pin_project! {
    /// The [`StreamTimeout`](super::StreamTimeout) service's future.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        // Dropped as soon as the deadline passes: that is how the handler learns to stop.
        #[pin]
        inner: Option<F>,
        deadline: Option<Clock>,
        idle: Option<std::time::Duration>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, settings: StreamTimeoutLayer) -> Self {
        Self {
            inner: Some(inner),
            deadline: settings.deadline.map(Clock::start),
            idle: settings.idle,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    // The body's clocks are kept by a task of their own.
    B: Send + 'static,
    E: Into<BoxError>,
{
    type Output = Result<Response<TimeoutBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let inner = this
            .inner
            .as_mut()
            .as_pin_mut()
            .expect("polled after completion");
        if let Poll::Ready(result) = inner.poll(cx) {
            this.inner.set(None);
            let response = result.map_err(Into::into)?;
            let deadline = this.deadline.take();
            let idle = *this.idle;
            return Poll::Ready(Ok(
                response.map(|body| TimeoutBody::new(body, deadline, idle))
            ));
        }
        match expired(this.deadline, cx) {
            Some(deadline) => {
                this.inner.set(None);
                Poll::Ready(Err(Box::new(DeadlineElapsed { deadline })))
            }
            None => Poll::Pending,
        }
    }
}
