//! The running processes, one slot per session: how many there are, which is idle, which makes room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synthesis_bridge::{BackendError, SessionKey};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use crate::agent::Agent;
use crate::retry::Unanswered;

/// A session's place in the pool. Its lock is held for the whole of a turn, so a slot that can be locked
/// at once is idle.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) agent: Arc<tokio::sync::Mutex<Option<Agent>>>,
    last_used: Mutex<Instant>,
    /// The session's last message that reached Claude and got no complete answer, for a retry to carry on.
    unanswered: Mutex<Option<Unanswered>>,
    /// Set when Claude Code turned out unable to resume the session's conversation: the next turn starts
    /// a new one. Cleared once the new conversation is saved; a slot that has it is kept.
    new_conversation: AtomicBool,
}

/// A slot's agent, held for a turn (or for stopping it).
pub(crate) type SlotGuard = OwnedMutexGuard<Option<Agent>>;

impl Slot {
    pub(crate) fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last_used(&self) -> Instant {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn unanswered(&self) -> Option<Unanswered> {
        self.unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_unanswered(&self, unanswered: Option<Unanswered>) {
        *self.unanswered.lock().unwrap_or_else(|e| e.into_inner()) = unanswered;
    }

    /// Asks the next turn to start a new conversation.
    pub(crate) fn want_new_conversation(&self) {
        self.new_conversation.store(true, Ordering::Relaxed);
    }

    /// Whether a new conversation was asked for and not yet started.
    pub(crate) fn new_conversation_wanted(&self) -> bool {
        self.new_conversation.load(Ordering::Relaxed)
    }

    /// The new conversation was started and saved.
    pub(crate) fn new_conversation_started(&self) {
        self.new_conversation.store(false, Ordering::Relaxed);
    }
}

/// Counts a running (or starting) process against the pool's limit until dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    pool: Arc<Shared>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pool.lock().processes -= 1;
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    max_processes: usize,
    /// Processes whose plugin is connected.
    connected: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<SessionKey, Arc<Slot>>,
    processes: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Room for a new process: a permit, and maybe the slot of an idle process that must be stopped to make
/// it (held, so that its session waits until the process is gone).
#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) permit: Permit,
    pub(crate) evicted: Option<SlotGuard>,
}

impl Pool {
    pub(crate) fn new(max_processes: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::default(),
                max_processes,
                connected: AtomicUsize::new(0),
            }),
        }
    }

    /// The slot of `key`, created on first use.
    pub(crate) fn slot(&self, key: &SessionKey) -> Arc<Slot> {
        self.shared
            .lock()
            .slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    agent: Arc::default(),
                    last_used: Mutex::new(Instant::now()),
                    unanswered: Mutex::default(),
                    new_conversation: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Makes room for one more process for `key`: under the limit, a new permit; at it, the permit of the
    /// longest-idle process of another session, which the caller stops. A process in a turn is never
    /// taken; when all are, the turn is refused with a `Retry-After`.
    pub(crate) fn make_room(
        &self,
        key: &SessionKey,
        retry_after: Duration,
    ) -> Result<Room, BackendError> {
        let mut state = self.shared.lock();
        if state.processes < self.shared.max_processes {
            state.processes += 1;
            return Ok(Room {
                permit: Permit {
                    pool: self.shared.clone(),
                },
                evicted: None,
            });
        }
        let mut oldest: Option<(Instant, SlotGuard)> = None;
        for (other, slot) in &state.slots {
            if other == key {
                continue;
            }
            let Ok(guard) = slot.agent.clone().try_lock_owned() else {
                continue; // in a turn
            };
            let last_used = slot.last_used();
            if guard.is_some() && oldest.as_ref().is_none_or(|(t, _)| last_used < *t) {
                oldest = Some((last_used, guard));
            }
        }
        let Some((_, mut guard)) = oldest else {
            return Err(BackendError::Unavailable {
                message: format!(
                    "all {} claude processes are busy with turns; try again shortly",
                    self.shared.max_processes
                ),
                retry_after: Some(retry_after),
            });
        };
        let permit = guard
            .as_mut()
            .and_then(Agent::take_permit)
            .expect("only slots with a running agent were kept");
        Ok(Room {
            permit,
            evicted: Some(guard),
        })
    }

    /// Locks the slots whose agent has been idle for `idle` or more, for the caller to stop them, and
    /// forgets slots with neither an agent nor a turn, nor an unanswered message a retry could still carry
    /// on with (`retry_window`).
    pub(crate) fn take_idle(
        &self,
        idle: Duration,
        retry_window: Option<Duration>,
    ) -> Vec<SlotGuard> {
        let mut state = self.shared.lock();
        let mut idle_slots = Vec::new();
        state.slots.retain(|_, slot| {
            let Ok(guard) = slot.agent.clone().try_lock_owned() else {
                return true;
            };
            if guard.is_none() {
                // Nobody else holds the slot: no turn is waiting for it.
                let retry_may_come = slot.unanswered().is_some_and(|unanswered| {
                    retry_window.is_some_and(|window| unanswered.at.elapsed() <= window)
                });
                return Arc::strong_count(slot) > 1
                    || retry_may_come
                    || slot.new_conversation_wanted();
            }
            if slot.last_used().elapsed() >= idle {
                idle_slots.push(guard);
            }
            true
        });
        idle_slots
    }

    /// The slot of `key`, if it has one.
    pub(crate) fn existing_slot(&self, key: &SessionKey) -> Option<Arc<Slot>> {
        self.shared.lock().slots.get(key).cloned()
    }

    /// Forgets `slot`, the slot of `key`, unless someone besides the caller holds it (a turn is about to
    /// take it). Says whether it did.
    pub(crate) fn forget(&self, key: &SessionKey, slot: &Arc<Slot>) -> bool {
        let mut state = self.shared.lock();
        // The map's and the caller's.
        let alone = Arc::strong_count(slot) == 2;
        if alone {
            state.slots.remove(key);
        }
        alone
    }

    /// How long ago the slot was last used.
    pub(crate) fn idle_for(slot: &Slot) -> Duration {
        slot.last_used().elapsed()
    }

    /// Every slot, for shutdown.
    pub(crate) fn slots(&self) -> Vec<Arc<Slot>> {
        self.shared.lock().slots.values().cloned().collect()
    }

    pub(crate) fn sessions(&self) -> usize {
        self.shared.lock().slots.len()
    }

    pub(crate) fn processes(&self) -> usize {
        self.shared.lock().processes
    }

    pub(crate) fn connected(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Counts a connected plugin until the returned guard is dropped.
    pub(crate) fn count_connected(&self) -> ConnectedGuard {
        self.shared.connected.fetch_add(1, Ordering::Relaxed);
        ConnectedGuard {
            pool: self.shared.clone(),
        }
    }
}

/// Uncounts a connected plugin when dropped.
#[derive(Debug)]
pub(crate) struct ConnectedGuard {
    pool: Arc<Shared>,
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.pool.connected.fetch_sub(1, Ordering::Relaxed);
    }
}
