//! The backend's place in the shared [`synthesis_bridge::pool`]: what it keeps per session beside the
//! process, and how many plugins are connected.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use synthesis_bridge::instructions::KnownInstructions;
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::retry::Unanswered;
use crate::turn::Resumption;

pub(crate) type Pool = synthesis_bridge::pool::Pool<Agent, SessionState>;
pub(crate) type Slot = synthesis_bridge::pool::Slot<Agent, SessionState>;
pub(crate) type SlotGuard = synthesis_bridge::pool::SlotGuard<Agent>;
pub(crate) use synthesis_bridge::pool::Permit;

/// What the backend remembers of a session while its process comes and goes.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    /// The session's last message that reached Claude and got no complete answer, for a retry to carry on.
    unanswered: Mutex<Option<Unanswered>>,
    /// Set when Claude Code turned out unable to resume the session's conversation: the next turn starts
    /// a new one. Cleared once the new conversation is saved; a slot that has it is kept.
    new_conversation: AtomicBool,
    /// A turn waiting for the client's tool results: the session's next turn hands them over here.
    paused: Mutex<Option<mpsc::Sender<Resumption>>>,
    /// The client's instructions Claude has in this conversation, once known.
    pub(crate) instructions: KnownInstructions,
}

impl SessionState {
    pub(crate) fn unanswered(&self) -> Option<Unanswered> {
        self.unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_unanswered(&self, unanswered: Option<Unanswered>) {
        *self.unanswered.lock().unwrap_or_else(|e| e.into_inner()) = unanswered;
    }

    /// Registers the turn that waits for the client's tool results.
    pub(crate) fn pause(&self, resume: mpsc::Sender<Resumption>) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = Some(resume);
    }

    /// The turn waiting for the client's tool results, if one is.
    pub(crate) fn take_paused(&self) -> Option<mpsc::Sender<Resumption>> {
        self.paused.lock().unwrap_or_else(|e| e.into_inner()).take()
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

/// How many processes have their plugin connected.
#[derive(Debug, Clone, Default)]
pub(crate) struct Connected(Arc<AtomicUsize>);

impl Connected {
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts a connected plugin until the returned guard is dropped.
    pub(crate) fn guard(&self) -> ConnectedGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        ConnectedGuard(self.clone())
    }
}

/// Uncounts a connected plugin when dropped.
#[derive(Debug)]
pub(crate) struct ConnectedGuard(Connected);

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}
