//! The layer: how long a response may be quiet before a heartbeat.

use std::time::Duration;

use tower::Layer;

use super::Heartbeat;

/// Builds [`Heartbeat`] services.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatLayer {
    interval: Duration,
}

impl HeartbeatLayer {
    /// A heartbeat after every `interval` of quiet. A zero interval sends none (it would flood the client).
    pub fn new(interval: Duration) -> Self {
        Self { interval }
    }
}

impl<S> Layer<S> for HeartbeatLayer {
    type Service = Heartbeat<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Heartbeat::new(inner, self.interval)
    }
}
