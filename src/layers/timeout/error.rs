//! The two clocks' errors.

use std::fmt;
use std::time::Duration;

/// The whole response took longer than its deadline.
#[derive(Debug, Clone)]
pub struct DeadlineElapsed {
    pub(super) deadline: Duration,
}

impl DeadlineElapsed {
    /// The deadline that passed.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}

impl fmt::Display for DeadlineElapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no complete response within the deadline of {}",
            humantime::format_duration(self.deadline)
        )
    }
}

impl std::error::Error for DeadlineElapsed {}

/// The response body produced nothing for longer than the idle timeout.
#[derive(Debug, Clone)]
pub struct IdleElapsed {
    pub(super) idle: Duration,
}

impl IdleElapsed {
    /// The idle timeout that passed.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }
}

impl fmt::Display for IdleElapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no output for {}", humantime::format_duration(self.idle))
    }
}

impl std::error::Error for IdleElapsed {}
