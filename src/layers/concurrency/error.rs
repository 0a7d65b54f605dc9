//! Why a request was not admitted.

use std::fmt;
use std::time::Duration;

/// The key's queue was full: the request was refused at once.
#[derive(Debug, Clone)]
pub struct QueueFull {
    pub(super) queue_depth: usize,
    pub(super) retry_after: Duration,
}

impl QueueFull {
    /// How many requests the key's queue holds.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    /// When the client might try again (an HTTP front sends it as `Retry-After`).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests are already waiting for this key",
            self.queue_depth
        )
    }
}

impl std::error::Error for QueueFull {}

/// The request waited for a slot longer than the admission timeout and was given up.
#[derive(Debug, Clone)]
pub struct AdmissionElapsed {
    pub(super) waited: Duration,
}

impl AdmissionElapsed {
    /// How long the request waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for AdmissionElapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "waited {} for the requests ahead to finish",
            humantime::format_duration(self.waited)
        )
    }
}

impl std::error::Error for AdmissionElapsed {}
