//! The per-key table: for each key with requests, how many hold a slot and who waits, in arrival order.
//!
//! Everything happens under one lock: joining the queue, and handing a freed slot to the first waiter. So
//! the order is the order of arrival, nobody can take a slot while others wait, and a waiter counts as
//! waiting exactly until the slot is handed to it.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// How the keys' slots are shared out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_in_flight: usize,
    pub(super) queue_depth: usize,
    pub(super) admission_timeout: Option<Duration>,
    pub(super) retry_after: Duration,
}

pub(super) struct KeyTable<K> {
    entries: Mutex<HashMap<K, Entry>>,
    next_waiter: AtomicU64,
    pub(super) limits: Limits,
}

/// A key with requests in flight or waiting; removed when it has neither.
#[derive(Default)]
struct Entry {
    in_flight: usize,
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// What [`KeyTable::admit`] decided.
pub(super) enum Admission<K: Hash + Eq + Clone> {
    /// A slot was free.
    Now(Slot<K>),
    /// The request waits its turn.
    Queued(Waiter<K>),
    /// The key's queue is full.
    Full,
}

impl<K: Hash + Eq + Clone> KeyTable<K> {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(0),
            limits,
        }
    }

    /// Takes one of `key`'s slots if one is free and nobody waits for it, else a place in its queue if
    /// there is room.
    pub(super) fn admit(self: &Arc<Self>, key: K) -> Admission<K> {
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_default();
        if entry.in_flight < self.limits.max_in_flight && entry.queue.is_empty() {
            entry.in_flight += 1;
            return Admission::Now(Slot {
                table: self.clone(),
                key,
            });
        }
        if entry.queue.len() >= self.limits.queue_depth {
            return Admission::Full;
        }
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (handed_over, admitted) = oneshot::channel();
        entry.queue.push_back((id, handed_over));
        Admission::Queued(Waiter {
            table: self.clone(),
            key,
            id,
            admitted: Some(admitted),
        })
    }

    /// Keys that have requests in flight or waiting.
    pub(super) fn keys(&self) -> usize {
        self.lock().len()
    }

    /// Requests waiting for a slot, over all keys.
    pub(super) fn waiting(&self) -> usize {
        self.lock().values().map(|entry| entry.queue.len()).sum()
    }

    /// Gives a slot of `key` back: to its first waiter still there, or to nobody.
    fn release(&self, key: &K) {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(key) else {
            return;
        };
        while let Some((_, waiter)) = entry.queue.pop_front() {
            // A waiter whose future is gone cannot take it; the next one can.
            if waiter.send(()).is_ok() {
                return;
            }
        }
        entry.in_flight -= 1;
        if entry.in_flight == 0 {
            entries.remove(key);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry>> {
        // The table's invariants hold between statements, so a panic elsewhere cannot leave it torn.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A taken slot. Dropping it hands the slot to the key's next waiter.
pub(super) struct Slot<K: Hash + Eq + Clone> {
    table: Arc<KeyTable<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        self.table.release(&self.key);
    }
}

/// A request waiting in its key's queue.
pub(super) struct Waiter<K: Hash + Eq + Clone> {
    table: Arc<KeyTable<K>>,
    key: K,
    id: u64,
    /// Taken once the slot has been received.
    admitted: Option<oneshot::Receiver<()>>,
}

impl<K: Hash + Eq + Clone> Waiter<K> {
    /// Waits for the slot. Dropping the future gives the queue place back.
    pub(super) async fn admitted(mut self) -> Slot<K> {
        let admitted = self.admitted.as_mut().expect("not yet admitted");
        admitted
            .await
            .expect("the table hands a slot over or forgets the waiter, never drops it");
        self.admitted = None;
        Slot {
            table: self.table.clone(),
            key: self.key.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone> Drop for Waiter<K> {
    fn drop(&mut self) {
        if self.admitted.is_none() {
            // The slot now belongs to the `Slot` made from this waiter.
            return;
        }
        let mut entries = self.table.lock();
        if let Some(entry) = entries.get_mut(&self.key)
            && let Some(place) = entry.queue.iter().position(|(id, _)| *id == self.id)
        {
            entry.queue.remove(place);
            return;
        }
        drop(entries);
        // Not in the queue any more: the slot was handed over just as this waiter gave up. Pass it on.
        self.table.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

    fn table(max_in_flight: usize, queue_depth: usize) -> Arc<KeyTable<&'static str>> {
        Arc::new(KeyTable::new(Limits {
            max_in_flight,
            queue_depth,
            admission_timeout: None,
            retry_after: Duration::from_secs(1),
        }))
    }

    fn now(admission: Admission<&'static str>) -> Slot<&'static str> {
        match admission {
            Admission::Now(slot) => slot,
            _ => panic!("expected a free slot"),
        }
    }

    fn queued(admission: Admission<&'static str>) -> Waiter<&'static str> {
        match admission {
            Admission::Queued(waiter) => waiter,
            _ => panic!("expected a queue place"),
        }
    }

    #[tokio::test]
    async fn entries_live_exactly_as_long_as_their_requests() {
        let table = table(1, 2);
        let first = now(table.admit("a"));
        let second = queued(table.admit("a"));
        assert_eq!((table.keys(), table.waiting()), (1, 1));
        drop(first);
        // Handed over at once: no longer waiting, even before its task runs.
        assert_eq!(table.waiting(), 0);
        let second = second.admitted().await;
        drop(second);
        assert_eq!(table.keys(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_trace() {
        let table = table(1, 1);
        let first = now(table.admit("a"));
        let second = queued(table.admit("a"));
        assert!(matches!(table.admit("a"), Admission::Full));
        drop(second);
        assert_eq!(table.waiting(), 0);
        let third = queued(table.admit("a"));
        drop(first);
        drop(third.admitted().await);
        assert_eq!(table.keys(), 0);
    }

    #[tokio::test]
    async fn a_slot_handed_to_a_waiter_that_gives_up_passes_on() {
        let table = table(1, 2);
        let first = now(table.admit("a"));
        let second = queued(table.admit("a"));
        let third = queued(table.admit("a"));
        drop(first);
        // `second` got the slot but leaves without taking it: `third` gets it.
        drop(second);
        let third = pin!(third.admitted());
        let slot = futures::poll!(third);
        assert!(slot.is_ready());
        drop(slot);
        assert_eq!(table.keys(), 0);
    }
}
