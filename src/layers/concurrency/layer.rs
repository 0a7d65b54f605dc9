//! The layer: a key function and the table it shares with every service it builds.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::ConcurrencyPerKey;
use super::table::{KeyTable, Limits};

/// Builds [`ConcurrencyPerKey`] services. Every service built by one layer (and its clones) shares one key
/// table, so the limits hold across connections.
pub struct ConcurrencyPerKeyLayer<F, K> {
    key_of: F,
    table: Arc<KeyTable<K>>,
}

impl<F, K> ConcurrencyPerKeyLayer<F, K>
where
    K: Hash + Eq + Clone,
{
    /// One request in flight per key, eight waiting, five minutes of waiting at most, `Retry-After` ten
    /// seconds. `key_of` names a request's key; requests it returns `None` for are not limited.
    pub fn new<Req>(key_of: F) -> Self
    where
        F: Fn(&Req) -> Option<K>,
    {
        Self {
            key_of,
            table: Arc::new(KeyTable::new(Limits {
                max_in_flight: 1,
                queue_depth: 8,
                admission_timeout: Some(Duration::from_secs(5 * 60)),
                retry_after: Duration::from_secs(10),
            })),
        }
    }

    /// How many requests of one key run at once (at least one).
    pub fn max_in_flight(self, max_in_flight: usize) -> Self {
        self.with_limits(|limits| limits.max_in_flight = max_in_flight.max(1))
    }

    /// How many requests of one key may wait; one more is refused at once with [`QueueFull`](super::QueueFull).
    pub fn queue_depth(self, queue_depth: usize) -> Self {
        self.with_limits(|limits| limits.queue_depth = queue_depth)
    }

    /// How long a request may wait before it is given up with
    /// [`AdmissionElapsed`](super::AdmissionElapsed); `None` waits for as long as it takes.
    pub fn admission_timeout(self, timeout: Option<Duration>) -> Self {
        self.with_limits(|limits| limits.admission_timeout = timeout)
    }

    /// The wait [`QueueFull`](super::QueueFull) suggests to the client.
    pub fn retry_after(self, retry_after: Duration) -> Self {
        self.with_limits(|limits| limits.retry_after = retry_after)
    }

    /// Keys that have requests in flight or waiting. An idle key is forgotten, so this is the table's size.
    pub fn active_keys(&self) -> usize {
        self.table.keys()
    }

    /// Requests waiting for a slot, over all keys.
    pub fn waiting(&self) -> usize {
        self.table.waiting()
    }

    /// The limits are fixed once requests flow, so changing them starts a fresh table.
    fn with_limits(self, change: impl FnOnce(&mut Limits)) -> Self {
        let mut limits = self.table.limits;
        change(&mut limits);
        Self {
            key_of: self.key_of,
            table: Arc::new(KeyTable::new(limits)),
        }
    }
}

impl<F: Clone, K> Clone for ConcurrencyPerKeyLayer<F, K> {
    fn clone(&self) -> Self {
        Self {
            key_of: self.key_of.clone(),
            table: self.table.clone(),
        }
    }
}

impl<F, K> fmt::Debug for ConcurrencyPerKeyLayer<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyPerKeyLayer")
            .field("limits", &self.table.limits)
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone, K> Layer<S> for ConcurrencyPerKeyLayer<F, K> {
    type Service = ConcurrencyPerKey<S, F, K>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyPerKey::new(inner, self.key_of.clone(), self.table.clone())
    }
}
