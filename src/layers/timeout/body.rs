//! The response body: the deadline's clock goes on, and the idle clock restarts with every data frame.
//!
//! The clocks run whether or not the body is polled. A client that stops reading stops the server from
//! polling the body (its socket is full), and a clock looked at only when the body is polled may never run
//! out: the producer would stay blocked on its full channel, holding whatever it holds (the agent's turn,
//! the session). So a watchdog task keeps the time, and when a clock runs out it drops the inner body
//! itself, which is how the producer learns to stop.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower::BoxError;

use super::clock::Clock;
use super::{DeadlineElapsed, IdleElapsed};
use crate::layers::instant_after;

/// A response body bounded by [`StreamTimeout`](super::StreamTimeout)'s clocks. When one runs out, the
/// inner body is dropped at once, polled or not (which is how its producer learns to stop), and the body
/// ends with [`DeadlineElapsed`] or [`IdleElapsed`].
#[derive(Debug)]
pub struct TimeoutBody<B> {
    watched: Arc<Mutex<Watched<B>>>,
    watchdog: Option<AbortHandle>,
}

/// The body and its clocks, shared with the watchdog.
#[derive(Debug)]
struct Watched<B> {
    /// `None` once it ended, or a clock ran out.
    inner: Option<Pin<Box<B>>>,
    /// When the deadline passes, and its length.
    deadline: Option<(Instant, Duration)>,
    /// When the idle clock runs out unless a data frame comes, and its length.
    idle: Option<(Instant, Duration)>,
    /// The error to end with, once a clock ran out.
    expired: Option<BoxError>,
    /// Who to wake when the watchdog ends the body.
    waker: Option<Waker>,
}

impl<B> Watched<B> {
    /// Ends the body if a clock ran out by `now`.
    fn expire_if_due(&mut self, now: Instant) -> bool {
        let error: BoxError = match (self.deadline, self.idle) {
            (Some((at, deadline)), _) if now >= at => Box::new(DeadlineElapsed { deadline }),
            (_, Some((at, idle))) if now >= at => Box::new(IdleElapsed { idle }),
            _ => return false,
        };
        self.inner = None;
        self.expired = Some(error);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        true
    }

    /// When the next clock runs out.
    fn next_expiry(&self) -> Option<Instant> {
        match (self.deadline, self.idle) {
            (Some((deadline, _)), Some((idle, _))) => Some(deadline.min(idle)),
            (Some((at, _)), None) | (None, Some((at, _))) => Some(at),
            (None, None) => None,
        }
    }
}

impl<B> TimeoutBody<B>
where
    B: Send + 'static,
{
    pub(super) fn new(inner: B, deadline: Option<Clock>, idle: Option<Duration>) -> Self {
        let deadline = deadline.map(|clock| (clock.ends_at(), clock.limit));
        let idle = idle.map(|idle| (instant_after(idle), idle));
        let watched = Arc::new(Mutex::new(Watched {
            inner: Some(Box::pin(inner)),
            deadline,
            idle,
            expired: None,
            waker: None,
        }));
        let watchdog = (deadline.is_some() || idle.is_some())
            .then(|| tokio::spawn(watch(Arc::downgrade(&watched))).abort_handle());
        Self { watched, watchdog }
    }
}

/// Keeps the time for a body it does not own: ends it when a clock runs out, and stops when it is gone.
async fn watch<B>(watched: Weak<Mutex<Watched<B>>>) {
    loop {
        let next = {
            let Some(watched) = watched.upgrade() else {
                return;
            };
            let watched = lock(&watched);
            match (&watched.inner, watched.next_expiry()) {
                (Some(_), Some(next)) => next,
                _ => return,
            }
        };
        tokio::time::sleep_until(next).await;
        let Some(watched) = watched.upgrade() else {
            return;
        };
        let mut watched = lock(&watched);
        if watched.inner.is_some() && watched.expire_if_due(Instant::now()) {
            return;
        }
    }
}

fn lock<B>(watched: &Mutex<Watched<B>>) -> MutexGuard<'_, Watched<B>> {
    watched.lock().unwrap_or_else(|e| e.into_inner())
}

impl<B> Drop for TimeoutBody<B> {
    fn drop(&mut self) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
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
        let mut watched = lock(&self.watched);
        if let Some(expired) = watched.expired.take() {
            return Poll::Ready(Some(Err(expired)));
        }
        // The deadline first: a body that is always ready must not outrun it.
        if watched.inner.is_some() && watched.expire_if_due(Instant::now()) {
            let expired = watched.expired.take().expect("just set");
            return Poll::Ready(Some(Err(expired)));
        }
        let Some(inner) = watched.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                if let (Some(Ok(frame)), Some((at, idle))) = (&frame, watched.idle.as_mut())
                    && frame.is_data()
                {
                    *at = instant_after(*idle);
                }
                if frame.is_none() {
                    watched.inner = None;
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                watched.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let watched = lock(&self.watched);
        watched.expired.is_none()
            && watched
                .inner
                .as_ref()
                .is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let watched = lock(&self.watched);
        match (&watched.expired, &watched.inner) {
            (None, Some(inner)) => inner.size_hint(),
            (None, None) => SizeHint::with_exact(0),
            (Some(_), _) => SizeHint::default(),
        }
    }
}
