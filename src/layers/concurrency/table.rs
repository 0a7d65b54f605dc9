//! The per-key table: one FIFO semaphore per key that has requests, and the bookkeeping that removes a key
//! once its last request is gone.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    pub(super) limits: Limits,
}

struct Entry {
    /// Fair: permits go to waiters in the order they started waiting.
    semaphore: Arc<Semaphore>,
    /// Requests holding or waiting for one of this key's slots; the entry goes when the last one leaves.
    members: usize,
    waiting: usize,
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
            limits,
        }
    }

    /// Takes one of `key`'s slots if one is free, or a place in its queue if there is room.
    pub(super) fn admit(self: &Arc<Self>, key: K) -> Admission<K> {
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_insert_with(|| Entry {
            semaphore: Arc::new(Semaphore::new(self.limits.max_in_flight)),
            members: 0,
            waiting: 0,
        });
        // A free permit means nobody is waiting: the semaphore hands released permits to waiters first.
        if let Ok(permit) = entry.semaphore.clone().try_acquire_owned() {
            entry.members += 1;
            return Admission::Now(Slot {
                _permit: permit,
                _member: Member::new(self, key),
            });
        }
        if entry.waiting >= self.limits.queue_depth {
            return Admission::Full;
        }
        entry.members += 1;
        entry.waiting += 1;
        let semaphore = entry.semaphore.clone();
        drop(entries);
        Admission::Queued(Waiter {
            semaphore,
            waiting: Waiting {
                table: self.clone(),
                key: key.clone(),
            },
            member: Member::new(self, key),
        })
    }

    /// Keys with requests in flight or waiting.
    pub(super) fn keys(&self) -> usize {
        self.lock().len()
    }

    /// Requests waiting for a slot, over all keys.
    pub(super) fn waiting(&self) -> usize {
        self.lock().values().map(|entry| entry.waiting).sum()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry>> {
        // The table's invariants hold between statements, so a panic elsewhere cannot leave it torn.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A taken slot. Dropping it frees the slot for the key's next waiter.
pub(super) struct Slot<K: Hash + Eq + Clone> {
    // Field order matters: the permit goes back before the membership ends, so a waiter is already holding
    // the permit (and counted as a member) when the last member check runs.
    _permit: OwnedSemaphorePermit,
    _member: Member<K>,
}

/// A request waiting in its key's queue.
pub(super) struct Waiter<K: Hash + Eq + Clone> {
    semaphore: Arc<Semaphore>,
    // Declared before `member`, so it drops first, while the entry is sure to exist.
    waiting: Waiting<K>,
    member: Member<K>,
}

impl<K: Hash + Eq + Clone> Waiter<K> {
    /// Waits for the slot. Dropping the future gives the queue place back.
    pub(super) async fn admitted(self) -> Slot<K> {
        let permit = self
            .semaphore
            .acquire_owned()
            .await
            .expect("the table never closes a semaphore");
        drop(self.waiting);
        Slot {
            _permit: permit,
            _member: self.member,
        }
    }
}

/// Counts its request as waiting until dropped.
struct Waiting<K: Hash + Eq + Clone> {
    table: Arc<KeyTable<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Waiting<K> {
    fn drop(&mut self) {
        if let Some(entry) = self.table.lock().get_mut(&self.key) {
            entry.waiting -= 1;
        }
    }
}

/// One request's membership of its key's entry.
struct Member<K: Hash + Eq + Clone> {
    table: Arc<KeyTable<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Member<K> {
    fn new(table: &Arc<KeyTable<K>>, key: K) -> Self {
        Self {
            table: table.clone(),
            key,
        }
    }
}

impl<K: Hash + Eq + Clone> Drop for Member<K> {
    fn drop(&mut self) {
        let mut entries = self.table.lock();
        if let Some(entry) = entries.get_mut(&self.key) {
            entry.members -= 1;
            if entry.members == 0 {
                entries.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_in_flight: usize, queue_depth: usize) -> Arc<KeyTable<&'static str>> {
        Arc::new(KeyTable::new(Limits {
            max_in_flight,
            queue_depth,
            admission_timeout: None,
            retry_after: Duration::from_secs(1),
        }))
    }

    #[tokio::test]
    async fn entries_live_exactly_as_long_as_their_requests() {
        let table = table(1, 2);
        let Admission::Now(first) = table.admit("a") else {
            panic!("a free slot")
        };
        let Admission::Queued(second) = table.admit("a") else {
            panic!("a queue place")
        };
        assert_eq!((table.keys(), table.waiting()), (1, 1));
        drop(first);
        let second = second.admitted().await;
        assert_eq!((table.keys(), table.waiting()), (1, 0));
        drop(second);
        assert_eq!(table.keys(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_trace() {
        let table = table(1, 1);
        let Admission::Now(first) = table.admit("a") else {
            panic!("a free slot")
        };
        let Admission::Queued(second) = table.admit("a") else {
            panic!("a queue place")
        };
        assert!(matches!(table.admit("a"), Admission::Full));
        drop(second);
        assert_eq!(table.waiting(), 0);
        assert!(matches!(table.admit("a"), Admission::Queued(_)));
        drop(first);
        assert_eq!(table.keys(), 0);
    }
}
