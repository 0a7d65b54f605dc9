//! The backend's place in the shared [`synthesis_bridge::pool`]: one agent process per session, and what
//! the backend remembers of a session while its process comes and goes.

use std::sync::atomic::{AtomicBool, Ordering};

use synthesis_bridge::instructions::KnownInstructions;

use crate::agent::Agent;

pub(crate) type Pool = synthesis_bridge::pool::Pool<Agent, SessionState>;
pub(crate) type Slot = synthesis_bridge::pool::Slot<Agent, SessionState>;
pub(crate) type SlotGuard = synthesis_bridge::pool::SlotGuard<Agent>;

/// What the backend remembers of a session beside its process.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    /// Set when the agent turned out not to have the session's conversation any more: the next turn starts
    /// a new one. Cleared once the new one is saved; a slot that has it is kept.
    new_session: AtomicBool,
    /// The client's instructions the agent's session has been told of, once known.
    pub(crate) instructions: KnownInstructions,
}

impl SessionState {
    /// Asks the next turn to start a new ACP session.
    pub(crate) fn want_new_session(&self) {
        self.new_session.store(true, Ordering::Relaxed);
    }

    /// Whether a new session was asked for and not yet started.
    pub(crate) fn new_session_wanted(&self) -> bool {
        self.new_session.load(Ordering::Relaxed)
    }

    /// The new session was started and saved.
    pub(crate) fn new_session_started(&self) {
        self.new_session.store(false, Ordering::Relaxed);
    }
}
