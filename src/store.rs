//! [`SessionStore`]: what the bridge remembers about each session across restarts.
//!
//! # Example
//!
//! A store of your own implements four methods. This one keeps records in memory, like the crate's
//! [`MemoryStore`]; the `synthesis-store-json` crate keeps them in a file.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Mutex;
//!
//! use async_trait::async_trait;
//! use synthesis_bridge::{SessionKey, SessionRecord, SessionStore, StoreError};
//!
//! #[derive(Default)]
//! struct InMemory(Mutex<BTreeMap<SessionKey, SessionRecord>>);
//!
//! #[async_trait]
//! impl SessionStore for InMemory {
//!     async fn get(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
//!         Ok(self.0.lock().unwrap().get(key).cloned())
//!     }
//!     async fn put(&self, record: SessionRecord) -> Result<(), StoreError> {
//!         self.0.lock().unwrap().insert(record.key.clone(), record);
//!         Ok(())
//!     }
//!     async fn remove(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
//!         Ok(self.0.lock().unwrap().remove(key))
//!     }
//!     async fn list(&self) -> Result<Vec<SessionRecord>, StoreError> {
//!         Ok(self.0.lock().unwrap().values().cloned().collect())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = InMemory::default();
//! let key = SessionKey::new("agent::chat").unwrap();
//! store.put(SessionRecord::new(key.clone(), "/work/repo")).await.unwrap();
//! let record = store.get(&key).await.unwrap().unwrap();
//! assert!(!record.started);
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::backend::Turn;
use crate::session::SessionKey;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// What is known about one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionRecord {
    /// The session's key.
    pub key: SessionKey,
    /// The agent's own id for the conversation, as the agent names it (Claude Code's session uuid, an ACP
    /// session id). `None` until there is one: a backend whose agent picks its own ids stores the id once
    /// the agent has named it; a backend that picks ids for its agent (Claude Code takes `--session-id`)
    /// may pick one in advance.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Whether the agent has started that conversation, so that it can be resumed rather than created.
    pub started: bool,
    /// The client's conversation id the agent conversation belongs to (OpenClaw's `sessionId`), when the
    /// client sends one. A turn with another one starts a new agent conversation.
    #[serde(default)]
    pub client_conversation: Option<String>,
    /// The directory the agent works in.
    pub workspace: PathBuf,
    /// When the session was first seen.
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    /// When the record was last saved by a turn. Backends need not save on every turn: the Claude
    /// backend saves when a session, conversation or workspace is new.
    #[serde(with = "rfc3339")]
    pub last_used_at: SystemTime,
    /// A count of turns a backend may keep; the Claude backend does not (it would take a save per turn).
    pub turns: u64,
}

impl SessionRecord {
    /// A record for a session seen for the first time, with no agent conversation yet.
    pub fn new(key: SessionKey, workspace: impl Into<PathBuf>) -> Self {
        let now = now_in_millis();
        Self {
            key,
            conversation_id: None,
            started: false,
            client_conversation: None,
            workspace: workspace.into(),
            created_at: now,
            last_used_at: now,
            turns: 0,
        }
    }

    /// Forgets the agent conversation so the next turn starts a fresh one.
    pub fn start_new_conversation(&mut self, client_conversation: Option<String>) {
        self.conversation_id = None;
        self.started = false;
        self.client_conversation = client_conversation;
    }
}

/// The record of `turn`'s session as the turn finds it, and its stored copy: a session seen for the first
/// time gets a new record, a new client conversation (`TurnMeta::conversation`) starts a new agent
/// conversation, and the workspace is the turn's. A store that cannot be read is logged and treated as
/// empty: the turn goes on in a new conversation rather than fail.
pub async fn record_for_turn(
    store: &dyn SessionStore,
    turn: &Turn,
) -> (Option<SessionRecord>, SessionRecord) {
    let stored = match store.get(&turn.session).await {
        Ok(stored) => stored,
        Err(err) => {
            warn!(session = %turn.session, %err, "cannot read the session store; starting a new conversation");
            None
        }
    };
    let mut record = stored
        .clone()
        .unwrap_or_else(|| SessionRecord::new(turn.session.clone(), &turn.workspace));
    if let Some(conversation) = &turn.meta.conversation
        && record.client_conversation.as_ref() != Some(conversation)
    {
        if record.client_conversation.is_some() {
            info!(session = %turn.session, "the client started a new conversation; so does the agent");
            record.start_new_conversation(Some(conversation.clone()));
        } else {
            record.client_conversation = Some(conversation.clone());
        }
    }
    record.workspace = turn.workspace.clone();
    (stored, record)
}

/// Saves `record` if a restart would need it (it differs from `stored`: a new session, conversation or
/// workspace), or, with sessions forgotten after `ttl`, if it was last saved more than a quarter of that
/// ago, so that a session in use says so now and then.
///
/// Not on every turn: a save is a flushed line in the JSON store's journal, a disk flush the turn would wait
/// for (and before the journal, a file rewrite that serialized all sessions).
pub async fn save_if_needed(
    store: &dyn SessionStore,
    stored: Option<&SessionRecord>,
    mut record: SessionRecord,
    ttl: Option<Duration>,
) {
    let stale = ttl.is_some_and(|ttl| {
        now_in_millis()
            .duration_since(record.last_used_at)
            .is_ok_and(|unused| unused > ttl / 4)
    });
    if stored == Some(&record) && !stale {
        return;
    }
    record.last_used_at = now_in_millis();
    let key = record.key.clone();
    if let Err(err) = store.put(record).await {
        warn!(session = %key, %err, "cannot save the session; a restarted bridge will start a new conversation");
    }
}

/// The current time at the precision records are stored with, so that a record equals its stored copy.
pub fn now_in_millis() -> SystemTime {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let millis = Duration::from_millis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX));
    SystemTime::UNIX_EPOCH + millis
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the backing storage failed.
    #[error("session store I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The stored data could not be encoded or decoded.
    #[error("session store data is invalid: {0}")]
    Corrupt(String),
}

/// Maps session keys to [`SessionRecord`]s.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The record for `key`, if any.
    async fn get(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError>;
    /// Inserts or replaces the record for `record.key`. When this returns, the change is durable.
    async fn put(&self, record: SessionRecord) -> Result<(), StoreError>;
    /// Deletes the record for `key`, returning it.
    async fn remove(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError>;
    /// Every record, in no particular order.
    async fn list(&self) -> Result<Vec<SessionRecord>, StoreError>;
}

/// A [`SessionStore`] that keeps its records in memory only: for tests, and for bridges that need not
/// remember sessions across restarts.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<SessionKey, SessionRecord>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SessionKey, SessionRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    async fn put(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.lock().insert(record.key.clone(), record);
        Ok(())
    }

    async fn remove(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().remove(key))
    }

    async fn list(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.lock().values().cloned().collect())
    }
}

/// `SystemTime` as an RFC 3339 string, so the stored file is readable by people.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(
        time: &SystemTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(*time))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SystemTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        humantime::parse_rfc3339_weak(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json_with_readable_times() {
        let mut record = SessionRecord::new(SessionKey::new("agent:main:main").unwrap(), "/w");
        record.conversation_id = Some("2b1f0c3e-8d4f-4a5b-9c6d-7e8f9a0b1c2d".to_owned());
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json["conversation_id"],
            "2b1f0c3e-8d4f-4a5b-9c6d-7e8f9a0b1c2d"
        );
        assert!(json["created_at"].as_str().unwrap().ends_with('Z'));
        let back: SessionRecord = serde_json::from_value(json).unwrap();
        // Stored times keep millisecond precision.
        let millis = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        assert_eq!(millis(back.created_at), millis(record.created_at));
        assert_eq!(back.conversation_id, record.conversation_id);
    }

    #[test]
    fn a_new_conversation_forgets_the_agents_id_and_is_not_started() {
        let mut record = SessionRecord::new(SessionKey::new("k").unwrap(), "/w");
        record.conversation_id = Some("agent-chosen".to_owned());
        record.started = true;
        record.start_new_conversation(Some("b".into()));
        assert_eq!(record.conversation_id, None);
        assert!(!record.started);
        assert_eq!(record.client_conversation.as_deref(), Some("b"));
    }
}
