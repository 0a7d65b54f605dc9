//! The backend's place in the shared [`synthesis_bridge::pool`]: one agent process per session.

use crate::agent::Agent;

pub(crate) type Pool = synthesis_bridge::pool::Pool<Agent>;
pub(crate) type Slot = synthesis_bridge::pool::Slot<Agent>;
pub(crate) type SlotGuard = synthesis_bridge::pool::SlotGuard<Agent>;
