//! A running timer that knows its limit.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Sleep, sleep_until};

use crate::layers::instant_after;

#[derive(Debug)]
pub(super) struct Clock {
    pub(super) limit: Duration,
    // Boxed so that the deadline can move from the response future into the body, still running.
    sleep: Pin<Box<Sleep>>,
}

impl Clock {
    /// When it runs out.
    pub(super) fn ends_at(&self) -> tokio::time::Instant {
        self.sleep.deadline()
    }

    pub(super) fn start(limit: Duration) -> Self {
        Self {
            limit,
            sleep: Box::pin(sleep_until(instant_after(limit))),
        }
    }

    /// The limit if the time is up; if not, the task is woken when it is.
    pub(super) fn expired(&mut self, cx: &mut Context<'_>) -> Option<Duration> {
        self.sleep
            .as_mut()
            .poll(cx)
            .is_ready()
            .then_some(self.limit)
    }
}

/// The limit of `clock` if it is set and its time is up.
pub(super) fn expired(clock: &mut Option<Clock>, cx: &mut Context<'_>) -> Option<Duration> {
    clock.as_mut().and_then(|clock| clock.expired(cx))
}
