//! The response body that keeps its request's slot taken.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};

use super::SlotLease;

pin_project_lite::pin_project! {
    /// The inner response body, holding the request's [`SlotLease`] until the body ends or is dropped.
    #[derive(Debug)]
    pub struct SlotBody<B> {
        #[pin]
        inner: B,
        lease: Option<SlotLease>,
    }
}

impl<B> SlotBody<B> {
    pub(super) fn new(inner: B, lease: Option<SlotLease>) -> Self {
        Self { inner, lease }
    }
}

impl<B: Body> Body for SlotBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.lease.take();
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
