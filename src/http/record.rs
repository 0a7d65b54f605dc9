//! One turn's bookkeeping: its log span, its timings and how it ended.

use std::time::Instant;

use tracing::Span;

use crate::backend::BackendError;
use crate::metrics::{Metrics, TurnOutcome};

/// Records a turn's metrics exactly once; a turn dropped unrecorded counts as abandoned by the client.
#[derive(Debug)]
pub(crate) struct TurnRecord {
    metrics: Metrics,
    started: Instant,
    pub(crate) span: Span,
    first_delta_seen: bool,
    recorded: bool,
}

impl TurnRecord {
    pub(crate) fn start(metrics: Metrics) -> Self {
        Self {
            metrics,
            started: Instant::now(),
            span: Span::none(),
            first_delta_seen: false,
            recorded: false,
        }
    }

    /// Moves the bookkeeping into a new owner (the response body), leaving an inert record behind.
    pub(crate) fn take(&mut self) -> Self {
        let taken = Self {
            metrics: self.metrics.clone(),
            started: self.started,
            span: self.span.clone(),
            first_delta_seen: self.first_delta_seen,
            recorded: self.recorded,
        };
        self.recorded = true;
        taken
    }

    pub(crate) fn first_delta(&mut self) {
        if !self.first_delta_seen {
            self.first_delta_seen = true;
            self.metrics.record_first_delta(self.started.elapsed());
        }
    }

    pub(crate) fn finish(&mut self, outcome: TurnOutcome) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        self.metrics.record_turn(outcome, elapsed);
        let _entered = self.span.enter();
        match outcome {
            TurnOutcome::Ok => {
                tracing::info!(elapsed_ms = elapsed.as_millis() as u64, "turn answered")
            }
            TurnOutcome::Rejected => tracing::debug!("request refused"),
            outcome => tracing::warn!(
                ?outcome,
                elapsed_ms = elapsed.as_millis() as u64,
                "turn did not complete"
            ),
        }
    }
}

impl Drop for TurnRecord {
    fn drop(&mut self) {
        self.finish(TurnOutcome::ClientClosed);
    }
}

/// The outcome a backend error stands for.
pub(crate) fn outcome_of(error: &BackendError) -> TurnOutcome {
    match error {
        BackendError::Timeout(_) => TurnOutcome::TimedOut,
        BackendError::Cancelled => TurnOutcome::ClientClosed,
        BackendError::Unavailable { .. } => TurnOutcome::Rejected,
        _ => TurnOutcome::Failed,
    }
}
