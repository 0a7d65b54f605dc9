//! [`Pool`]: long-lived agents, one per session, for backends that keep a process per conversation.
//!
//! What every such backend needs and must get right the same way:
//! - each session has a [`Slot`] whose lock is held for the whole of a turn, so turns of one session run
//!   one at a time and a slot that can be locked at once is idle;
//! - at most `max_processes` agents run; a new one takes the [`Permit`] of the longest-idle agent of
//!   another session, never one in a turn, and when every agent is busy the turn is refused with a
//!   `Retry-After` ([`Pool::room`]);
//! - agents idle for a while are stopped, and sessions unused for longer are forgotten, their store records
//!   too ([`Pool::sweep`]).
//!
//! The agent type says how it stops and hands over its permit ([`Pooled`]); a backend keeps its own
//! per-session state beside the agent in [`Slot::state`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use synthesis_bridge::SessionKey;
//! use synthesis_bridge::pool::{Permit, Pool, Pooled};
//!
//! struct Agent {
//!     session: SessionKey,
//!     permit: Option<Permit>,
//! }
//!
//! impl Pooled for Agent {
//!     fn session(&self) -> &SessionKey {
//!         &self.session
//!     }
//!     fn take_permit(&mut self) -> Option<Permit> {
//!         self.permit.take()
//!     }
//!     async fn stop(self) {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool: Pool<Agent> = Pool::new(1, "agent");
//! let (a, b) = (SessionKey::new("a")?, SessionKey::new("b")?);
//! let mut turn = pool.slot(&a).agent.clone().lock_owned().await;
//! let permit = pool.room(&a, Duration::from_secs(1)).await?;
//! *turn = Some(Agent { session: a.clone(), permit: Some(permit) });
//! // Session a is in a turn: b finds no room.
//! assert!(pool.room(&b, Duration::from_secs(1)).await.is_err());
//! drop(turn);
//! // Once a is idle, its agent is stopped to make room for b.
//! let permit = pool.room(&b, Duration::from_secs(1)).await?;
//! assert_eq!(pool.processes(), 1);
//! drop(permit);
//! assert_eq!(pool.processes(), 0);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, info, warn};

use crate::backend::BackendError;
use crate::session::SessionKey;
use crate::store::SessionStore;

/// An agent the pool can hold: it knows its session, hands over its place and stops.
pub trait Pooled: Send + 'static {
    /// The session it serves.
    fn session(&self) -> &SessionKey;

    /// Gives up its [`Permit`] for a new agent; it is being stopped to make room.
    fn take_permit(&mut self) -> Option<Permit>;

    /// Stops the agent and everything it started.
    fn stop(self) -> impl Future<Output = ()> + Send;
}

/// A session's place in the pool. Its lock is held for the whole of a turn.
#[derive(Debug)]
pub struct Slot<A, S = ()> {
    /// The session's running agent, if it has one. Held for a turn, or while the agent is stopped.
    pub agent: Arc<tokio::sync::Mutex<Option<A>>>,
    /// The backend's own state for the session, kept while the agent comes and goes.
    pub state: S,
    last_used: Mutex<Instant>,
}

/// A slot's agent, held for a turn (or for stopping it).
pub type SlotGuard<A> = OwnedMutexGuard<Option<A>>;

impl<A, S> Slot<A, S> {
    /// Waits for the session's agent, for a turn (turns of one session run one after the other); `None`
    /// if `cancel` fires first.
    pub async fn lock_for_turn(&self, cancel: &CancellationToken) -> Option<SlotGuard<A>> {
        tokio::select! {
            guard = self.agent.clone().lock_owned() => Some(guard),
            () = cancel.cancelled() => None,
        }
    }

    /// Marks the session as used now: idle time counts from here.
    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// How long ago the session was last used.
    pub fn idle_for(&self) -> Duration {
        self.last_used().elapsed()
    }

    fn last_used(&self) -> Instant {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts a running (or starting) agent against the pool's limit until dropped.
#[derive(Debug)]
pub struct Permit {
    counts: Arc<Mutex<usize>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

type Slots<A, S> = HashMap<SessionKey, Arc<Slot<A, S>>>;

/// The agents of a backend, one slot per session; see the [module docs](self).
#[derive(Debug)]
pub struct Pool<A, S = ()> {
    slots: Arc<Mutex<Slots<A, S>>>,
    processes: Arc<Mutex<usize>>,
    max_processes: usize,
    /// What an agent is called in messages ("claude", "ACP agent").
    noun: &'static str,
}

impl<A, S> Clone for Pool<A, S> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
            processes: self.processes.clone(),
            max_processes: self.max_processes,
            noun: self.noun,
        }
    }
}

impl<A: Pooled, S: Default + Send + Sync + 'static> Pool<A, S> {
    /// A pool of at most `max_processes` agents, called `noun` in messages.
    pub fn new(max_processes: usize, noun: &'static str) -> Self {
        Self {
            slots: Arc::default(),
            processes: Arc::default(),
            max_processes,
            noun,
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots<A, S>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of `key`, created on first use.
    pub fn slot(&self, key: &SessionKey) -> Arc<Slot<A, S>> {
        self.slots()
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    agent: Arc::default(),
                    state: S::default(),
                    last_used: Mutex::new(Instant::now()),
                })
            })
            .clone()
    }

    /// The slot of `key`, if it has one.
    pub fn existing_slot(&self, key: &SessionKey) -> Option<Arc<Slot<A, S>>> {
        self.slots().get(key).cloned()
    }

    /// A place for one more agent of `key`: under the limit, a new permit; at it, the permit of the
    /// longest-idle agent of another session, which is stopped first (its slot stays held until it is
    /// gone, so its session waits for it). An agent in a turn is never taken; when all are, the turn is
    /// refused as unavailable, to be retried after `retry_after`.
    pub async fn room(
        &self,
        key: &SessionKey,
        retry_after: Duration,
    ) -> Result<Permit, BackendError> {
        let (permit, evicted) = self.make_room(key, retry_after)?;
        if let Some(mut evicted) = evicted
            && let Some(agent) = evicted.take()
        {
            info!(session = %key, evicted = %agent.session(), "at --max-processes: stopping the longest-idle process");
            agent.stop().await;
        }
        Ok(permit)
    }

    fn make_room(
        &self,
        key: &SessionKey,
        retry_after: Duration,
    ) -> Result<(Permit, Option<SlotGuard<A>>), BackendError> {
        let slots = self.slots();
        {
            let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
            if *processes < self.max_processes {
                *processes += 1;
                let permit = Permit {
                    counts: self.processes.clone(),
                };
                return Ok((permit, None));
            }
        }
        let mut oldest: Option<(Instant, SlotGuard<A>)> = None;
        for (other, slot) in slots.iter() {
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
                    "all {} {} processes are busy with turns; try again shortly",
                    self.max_processes, self.noun
                ),
                retry_after: Some(retry_after),
            });
        };
        let permit = guard
            .as_mut()
            .and_then(Pooled::take_permit)
            .expect("only slots with a running agent were kept");
        Ok((permit, Some(guard)))
    }

    /// Stops the agents idle for `idle` or more, and forgets the slots with neither an agent nor a turn
    /// waiting for one, unless `keep` wants their state kept.
    pub async fn stop_idle(&self, idle: Duration, keep: impl Fn(&S) -> bool) {
        let mut idle_slots = Vec::new();
        self.slots().retain(|_, slot| {
            let Ok(guard) = slot.agent.clone().try_lock_owned() else {
                return true;
            };
            if guard.is_none() {
                // Nobody else holds the slot: no turn is waiting for it.
                return Arc::strong_count(slot) > 1 || keep(&slot.state);
            }
            if slot.idle_for() >= idle {
                idle_slots.push(guard);
            }
            true
        });
        // Each is stopped while its slot is held, so a turn that comes meanwhile waits for the old agent to
        // be gone before it starts a new one.
        for mut slot in idle_slots {
            if let Some(agent) = slot.take() {
                info!(session = %agent.session(), idle = ?idle, "stopping an idle {} process", self.noun);
                agent.stop().await;
            }
        }
    }

    /// Forgets the sessions unused for `ttl`: their records leave `store`, their agents stop. A session in
    /// a turn is never forgotten; one used since its record was saved counts from that use, and none
    /// counts from before `since` (records are not saved on every turn).
    pub async fn forget_unused(&self, store: &dyn SessionStore, ttl: Duration, since: SystemTime) {
        let records = match store.list().await {
            Ok(records) => records,
            Err(err) => {
                warn!(%err, "cannot list the sessions to forget unused ones");
                return;
            }
        };
        let now = SystemTime::now();
        for record in records {
            let unused = now
                .duration_since(record.last_used_at.max(since))
                .unwrap_or_default();
            if unused < ttl {
                continue;
            }
            let Some(slot) = self.existing_slot(&record.key) else {
                remove_unused(store, &record.key, unused).await;
                continue;
            };
            if slot.idle_for() < ttl {
                continue;
            }
            let Ok(mut guard) = slot.agent.clone().try_lock_owned() else {
                continue; // in a turn
            };
            // One waiting for the slot keeps the session.
            if !self.alone(&slot) {
                continue;
            }
            // The record goes and the agent stops while the slot is held and still in the map: a turn that
            // comes meanwhile waits for this slot, and then finds no record and starts afresh.
            remove_unused(store, &record.key, unused).await;
            if let Some(agent) = guard.take() {
                agent.stop().await;
            }
            let mut slots = self.slots();
            if self.alone(&slot) {
                slots.remove(&record.key);
            }
        }
    }

    /// Whether nobody but the map and the caller holds `slot`: no turn is about to take it.
    fn alone(&self, slot: &Arc<Slot<A, S>>) -> bool {
        Arc::strong_count(slot) == 2
    }

    /// Starts the task that stops idle agents ([`stop_idle`](Self::stop_idle), checking a few times per
    /// `sweep.idle`) and forgets unused sessions ([`forget_unused`](Self::forget_unused), a few times per
    /// `sweep.ttl`). It ends when the returned guard is dropped. Must be called within a Tokio runtime.
    pub fn sweep(&self, sweep: Sweep<S>) -> DropGuard {
        let stop = CancellationToken::new();
        let pool = self.downgrade();
        tokio::spawn(sweep.run(pool, stop.clone()).in_current_span());
        stop.drop_guard()
    }

    fn downgrade(&self) -> WeakPool<A, S> {
        WeakPool {
            slots: Arc::downgrade(&self.slots),
            processes: Arc::downgrade(&self.processes),
            max_processes: self.max_processes,
            noun: self.noun,
        }
    }

    /// Stops every agent, waiting for each one's turn to end first.
    pub async fn stop_all(&self) {
        let slots: Vec<_> = self.slots().values().cloned().collect();
        for slot in slots {
            if let Some(agent) = slot.agent.clone().lock_owned().await.take() {
                agent.stop().await;
            }
        }
    }

    /// How many sessions have a slot.
    pub fn sessions(&self) -> usize {
        self.slots().len()
    }

    /// How many agents run or are starting.
    pub fn processes(&self) -> usize {
        *self.processes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn remove_unused(store: &dyn SessionStore, key: &SessionKey, unused: Duration) {
    info!(session = %key, unused = %humantime::format_duration(unused), "forgetting an unused session");
    if let Err(err) = store.remove(key).await {
        warn!(session = %key, %err, "cannot remove an unused session's record");
    }
}

/// A pool the sweeper does not keep alive.
struct WeakPool<A, S> {
    slots: Weak<Mutex<Slots<A, S>>>,
    processes: Weak<Mutex<usize>>,
    max_processes: usize,
    noun: &'static str,
}

impl<A, S> WeakPool<A, S> {
    fn upgrade(&self) -> Option<Pool<A, S>> {
        Some(Pool {
            slots: self.slots.upgrade()?,
            processes: self.processes.upgrade()?,
            max_processes: self.max_processes,
            noun: self.noun,
        })
    }
}

/// What [`Pool::sweep`] stops and forgets.
pub struct Sweep<S> {
    /// Agents idle this long are stopped.
    pub idle: Duration,
    /// Sessions unused this long are forgotten, with their records in `store`; never when `None`.
    pub ttl: Option<Duration>,
    /// Where the sessions' records are.
    pub store: Arc<dyn SessionStore>,
    /// No session counts as unused from before this (the backend's start).
    pub since: SystemTime,
    /// Whether a slot without an agent is kept for its state.
    pub keep: Box<dyn Fn(&S) -> bool + Send + Sync>,
}

impl<S> std::fmt::Debug for Sweep<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweep")
            .field("idle", &self.idle)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<S: Default + Send + Sync + 'static> Sweep<S> {
    async fn run<A: Pooled>(self, pool: WeakPool<A, S>, stop: CancellationToken) {
        let every = (self.idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
        let forget_every = self
            .ttl
            .map(|ttl| (ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(3600)));
        let wake_every = forget_every.map_or(every, |forget_every| every.min(forget_every));
        let mut last_forgetting = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(wake_every) => {}
                () = stop.cancelled() => return,
            }
            let Some(pool) = pool.upgrade() else { return };
            pool.stop_idle(self.idle, &self.keep).await;
            if let (Some(ttl), Some(forget_every)) = (self.ttl, forget_every)
                && last_forgetting.elapsed() >= forget_every
            {
                last_forgetting = Instant::now();
                pool.forget_unused(self.store.as_ref(), ttl, self.since)
                    .await;
            }
        }
    }
}
