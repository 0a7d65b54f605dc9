//! Counters for `GET /metrics`, rendered in the Prometheus text format.
//!
//! Lock-free atomics: recording sits on every turn's path, rendering happens once per scrape.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::backend::BackendStatus;

/// How a turn ended, as counted by `bridge_turns_total{outcome=…}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnOutcome {
    /// The answer was delivered.
    Ok,
    /// Refused before it reached the agent (bad request, auth, busy, unavailable).
    Rejected,
    /// The agent failed mid-turn.
    Failed,
    /// A deadline passed.
    TimedOut,
    /// The client went away before the answer was complete.
    ClientClosed,
    /// The bridge shut down mid-turn.
    Shutdown,
}

impl TurnOutcome {
    const ALL: [TurnOutcome; 6] = [
        Self::Ok,
        Self::Rejected,
        Self::Failed,
        Self::TimedOut,
        Self::ClientClosed,
        Self::Shutdown,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::ClientClosed => "client_closed",
            Self::Shutdown => "shutdown",
        }
    }
}

/// The bridge's metrics. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    turns: [AtomicU64; TurnOutcome::ALL.len()],
    turn_seconds: Histogram,
    first_delta_seconds: Histogram,
    spawn_seconds: Histogram,
}

impl Metrics {
    /// Fresh, zeroed metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a finished turn and how long it took.
    pub fn record_turn(&self, outcome: TurnOutcome, duration: Duration) {
        self.inner.turns[outcome as usize].fetch_add(1, Ordering::Relaxed);
        if outcome != TurnOutcome::Rejected {
            self.inner.turn_seconds.observe(duration);
        }
    }

    /// Records the time from a turn's start to its first text.
    pub fn record_first_delta(&self, latency: Duration) {
        self.inner.first_delta_seconds.observe(latency);
    }

    /// Records how long an agent process took to become ready; for backends that start processes.
    pub fn record_spawn(&self, duration: Duration) {
        self.inner.spawn_seconds.observe(duration);
    }

    /// How many turns ended with `outcome` so far.
    pub fn turns(&self, outcome: TurnOutcome) -> u64 {
        self.inner.turns[outcome as usize].load(Ordering::Relaxed)
    }

    /// The metrics in the Prometheus text format, with the backend's gauges and the number of requests
    /// `waiting` for their session.
    pub fn render(&self, status: &BackendStatus, waiting: usize) -> String {
        let inner = &*self.inner;
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP bridge_turns_total Chat-completions turns by how they ended.\n");
        out.push_str("# TYPE bridge_turns_total counter\n");
        for outcome in TurnOutcome::ALL {
            let count = inner.turns[outcome as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "bridge_turns_total{{outcome=\"{}\"}} {count}",
                outcome.label()
            );
        }
        inner.turn_seconds.render(
            &mut out,
            "bridge_turn_duration_seconds",
            "Time from request to the end of the answer.",
        );
        inner.first_delta_seconds.render(
            &mut out,
            "bridge_first_delta_seconds",
            "Time from request to the first text of the answer.",
        );
        inner.spawn_seconds.render(
            &mut out,
            "bridge_spawn_duration_seconds",
            "Time for an agent process to start and connect.",
        );
        let gauges = [
            (
                "bridge_active_sessions",
                "Sessions the backend knows about.",
                status.sessions as i64,
            ),
            (
                "bridge_processes",
                "Agent processes running.",
                status.processes as i64,
            ),
            (
                "bridge_connections",
                "Agent plugins connected.",
                status.connections as i64,
            ),
            (
                "bridge_queue_depth",
                "Requests waiting for their session's turn.",
                waiting as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        }
        out
    }
}

/// Upper bounds in seconds: turns range from milliseconds (a cached answer) to tens of minutes.
const BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = write!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Metrics::new();
        metrics.record_turn(TurnOutcome::Ok, Duration::from_millis(20));
        metrics.record_turn(TurnOutcome::Ok, Duration::from_secs(2));
        metrics.record_turn(TurnOutcome::Rejected, Duration::ZERO);
        let text = metrics.render(&BackendStatus::new(3, 2, 1), 2);
        assert!(
            text.contains("bridge_turns_total{outcome=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("bridge_turns_total{outcome=\"rejected\"} 1\n"));
        assert!(text.contains("bridge_turn_duration_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(text.contains("bridge_turn_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("bridge_turn_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("bridge_turn_duration_seconds_sum 2.02\n"));
        assert!(text.contains("bridge_active_sessions 3\n"));
        assert!(text.contains("bridge_queue_depth 2\n"));
    }
}
