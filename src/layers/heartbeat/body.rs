//! The response body: the inner body's frames, and a heartbeat after each full interval of quiet.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Sleep, sleep_until};

use crate::layers::instant_after;

use super::HeartbeatFrame;

pin_project_lite::pin_project! {
    /// The inner body with heartbeats between its frames while it is quiet; exactly the inner body when the
    /// response asked for none.
    #[derive(Debug)]
    pub struct HeartbeatBody<B> {
        #[pin]
        inner: B,
        beat: Option<Beat>,
    }
}

#[derive(Debug)]
struct Beat {
    frame: Bytes,
    interval: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<B> HeartbeatBody<B> {
    pub(super) fn new(inner: B, beat: Option<(HeartbeatFrame, Duration)>) -> Self {
        Self {
            inner,
            beat: beat.map(|(frame, interval)| Beat {
                frame: frame.0,
                interval,
                sleep: Box::pin(sleep_until(instant_after(interval))),
            }),
        }
    }
}

impl<B> Body for HeartbeatBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let Some(beat) = this.beat else {
            return polled;
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                beat.sleep.as_mut().reset(instant_after(beat.interval));
                Poll::Ready(Some(Ok(frame)))
            }
            // The body is over, for better or worse: nothing may follow it.
            Poll::Ready(end) => {
                *this.beat = None;
                Poll::Ready(end)
            }
            Poll::Pending => {
                if beat.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                beat.sleep.as_mut().reset(instant_after(beat.interval));
                Poll::Ready(Some(Ok(Frame::data(beat.frame.clone()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.beat {
            None => self.inner.size_hint(),
            // Heartbeats add bytes: the length is unknown.
            Some(_) => SizeHint::default(),
        }
    }
}
