//! One turn's bookkeeping: its log span, its timings and how it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tracing::Span;

use crate::backend::BackendError;
use crate::metrics::{Metrics, TurnOutcome};

/// Records a turn's metrics exactly once. Cloning shares it between the front (which sees layer errors and
/// the client leaving) and the turn's body (which sees the agent's answer): the first outcome wins, and a
/// turn whose last handle goes unrecorded counts as abandoned by the client.
#[derive(Debug, Clone)]
pub(crate) struct TurnRecord {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    metrics: Metrics,
    started: Instant,
    span: Span,
    first_delta_seen: AtomicBool,
    recorded: AtomicBool,
}

impl TurnRecord {
    pub(crate) fn start(metrics: Metrics, span: Span) -> Self {
        Self {
            inner: Arc::new(Inner {
                metrics,
                started: Instant::now(),
                span,
                first_delta_seen: AtomicBool::new(false),
                recorded: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn span(&self) -> &Span {
        &self.inner.span
    }

    pub(crate) fn first_delta(&self) {
        if !self.inner.first_delta_seen.swap(true, Ordering::Relaxed) {
            self.inner
                .metrics
                .record_first_delta(self.inner.started.elapsed());
        }
    }

    pub(crate) fn finish(&self, outcome: TurnOutcome) {
        self.inner.finish(outcome);
    }
}

impl Inner {
    fn finish(&self, outcome: TurnOutcome) {
        if self.recorded.swap(true, Ordering::AcqRel) {
            return;
        }
        let elapsed = self.started.elapsed();
        self.metrics.record_turn(outcome, elapsed);
        let _entered = self.span.enter();
        let elapsed_ms = elapsed.as_millis() as u64;
        match outcome {
            TurnOutcome::Ok => tracing::info!(elapsed_ms, "turn answered"),
            TurnOutcome::Rejected => tracing::debug!("request refused"),
            outcome => tracing::warn!(?outcome, elapsed_ms, "turn did not complete"),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.finish(TurnOutcome::ClientClosed);
    }
}

/// The outcome a backend error stands for.
pub(crate) fn outcome_of(error: &BackendError) -> TurnOutcome {
    match error {
        BackendError::Timeout(_) => TurnOutcome::TimedOut,
        BackendError::Cancelled => TurnOutcome::ClientClosed,
        BackendError::Unavailable { .. } | BackendError::Rejected(_) => TurnOutcome::Rejected,
        _ => TurnOutcome::Failed,
    }
}
