//! The service: starts the deadline at the call.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{BoxError, Service};

use super::{ResponseFuture, StreamTimeoutLayer, TimeoutBody};

/// Bounds a response's total time and its silences (see the [module](super)).
#[derive(Debug, Clone)]
pub struct StreamTimeout<S> {
    inner: S,
    settings: StreamTimeoutLayer,
}

impl<S> StreamTimeout<S> {
    pub(super) fn new(inner: S, settings: StreamTimeoutLayer) -> Self {
        Self { inner, settings }
    }
}

impl<S, B, ResBody> Service<Request<B>> for StreamTimeout<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    // The body's clocks are kept by a task of their own.
    ResBody: Send + 'static,
{
    type Response = Response<TimeoutBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture::new(self.inner.call(request), self.settings)
    }
}
