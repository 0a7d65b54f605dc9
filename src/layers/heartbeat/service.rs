//! The service and its future: a response that asks for heartbeats gets a [`HeartbeatBody`] that sends
//! them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};

use super::{HeartbeatBody, HeartbeatFrame};

/// Keeps quiet streaming responses alive (see the [module](super)).
#[derive(Debug, Clone)]
pub struct Heartbeat<S> {
    inner: S,
    interval: Duration,
}

impl<S> Heartbeat<S> {
    pub(super) fn new(inner: S, interval: Duration) -> Self {
        Self { inner, interval }
    }
}

impl<S, B, ResBody> tower::Service<Request<B>> for Heartbeat<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<HeartbeatBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(request),
            interval: self.interval,
        }
    }
}

pin_project_lite::pin_project! {
    /// The [`Heartbeat`] service's future.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        interval: Duration,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<HeartbeatBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let interval = *this.interval;
        let frame = response
            .extensions()
            .get::<HeartbeatFrame>()
            .filter(|_| !interval.is_zero())
            .cloned();
        Poll::Ready(Ok(response.map(|body| {
            HeartbeatBody::new(body, frame.map(|frame| (frame, interval)))
        })))
    }
}
