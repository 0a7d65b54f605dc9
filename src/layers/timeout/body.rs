//! The response body: the deadline's clock goes on, and the idle clock restarts with every data frame.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tower::BoxError;

use super::clock::{Clock, expired};
use super::{DeadlineElapsed, IdleElapsed};

pin_project_lite::pin_project! {
    /// A response body bounded by [`StreamTimeout`](super::StreamTimeout)'s clocks. When one runs out, the
    /// inner body is dropped at once (which is how its producer learns to stop) and the body ends with
    /// [`DeadlineElapsed`] or [`IdleElapsed`].
    #[derive(Debug)]
    pub struct TimeoutBody<B> {
        #[pin]
        inner: Option<B>,
        deadline: Option<Clock>,
        idle: Option<Clock>,
    }
}

impl<B> TimeoutBody<B> {
    pub(super) fn new(inner: B, deadline: Option<Clock>, idle: Option<Clock>) -> Self {
        Self {
            inner: Some(inner),
            deadline,
            idle,
        }
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        // The deadline first: a body that is always ready must not outrun it.
        let expired: BoxError = if let Some(deadline) = expired(this.deadline, cx) {
            Box::new(DeadlineElapsed { deadline })
        } else {
            match inner.poll_frame(cx) {
                Poll::Ready(frame) => {
                    if let (Some(Ok(frame)), Some(idle)) = (&frame, this.idle.as_mut())
                        && frame.is_data()
                    {
                        idle.restart();
                    }
                    return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
                }
                Poll::Pending => match expired(this.idle, cx) {
                    Some(idle) => Box::new(IdleElapsed { idle }),
                    None => return Poll::Pending,
                },
            }
        };
        this.inner.set(None);
        Poll::Ready(Some(Err(expired)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
