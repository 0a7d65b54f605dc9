//! The layer: the two clocks' settings.

use std::time::Duration;

use tower::Layer;

use super::StreamTimeout;

/// Builds [`StreamTimeout`] services. Both clocks are off until set.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamTimeoutLayer {
    pub(super) deadline: Option<Duration>,
    pub(super) idle: Option<Duration>,
}

impl StreamTimeoutLayer {
    /// No deadline, no idle timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most time from the call to the end of the response body.
    pub fn deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The most time between two data frames of the response body, counted from the response head.
    pub fn idle(mut self, idle: Option<Duration>) -> Self {
        self.idle = idle;
        self
    }
}

impl<S> Layer<S> for StreamTimeoutLayer {
    type Service = StreamTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamTimeout::new(inner, *self)
    }
}
