//! [`JsonFileStore`]: the bridge's default [`SessionStore`], JSON files in a state directory.
//!
//! - The records are a snapshot (`sessions.json`) and a journal of the changes since
//!   (`sessions.journal`, one JSON line each). A change appends one line and flushes it to disk, so its
//!   cost does not grow with the number of sessions (rewriting a 20,000-session file for every new session
//!   took 40 to 130 ms a turn).
//! - When the journal has grown past twice the number of records (and a thousand lines), the snapshot is
//!   replaced the crash-safe way, and the journal emptied: the new snapshot goes to a temporary file, which
//!   is flushed, renamed over the old one, and the directory flushed. A crash (or `kill -9`) at any moment
//!   leaves a snapshot and a journal that together hold every change that was acknowledged: a torn last
//!   line is a change that was not, and is skipped.
//! - Changes made through one store are serialised, and [`SessionStore::put`] returns once the change is
//!   on disk. One bridge process owns the files; two processes writing the same state directory would
//!   overwrite each other's changes.
//! - A file that does not parse (edited by hand, written by an incompatible version) is moved aside as
//!   `sessions.json.corrupt-<time>` with a warning, and the store starts empty rather than refusing to
//!   start.
//!
//! # Example
//!
//! ```
//! use synthesis_bridge::{SessionKey, SessionRecord, SessionStore};
//! use synthesis_store_json::JsonFileStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("synthesis-doc-{}", std::process::id()));
//! let key = SessionKey::new("agent::chat")?;
//! let record = SessionRecord::new(key.clone(), "/work/repo");
//!
//! JsonFileStore::open(&dir).await?.put(record.clone()).await?;
//! // Another store on the same directory, as after a restart, sees the record.
//! let reopened = JsonFileStore::open(&dir).await?;
//! assert_eq!(reopened.get(&key).await?, Some(record));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod file;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use synthesis_bridge::{SessionKey, SessionRecord, SessionStore, StoreError};
use tokio::sync::Mutex;

/// The snapshot's name inside the state directory.
pub const FILE_NAME: &str = "sessions.json";

/// The journal's name inside the state directory.
pub const JOURNAL_NAME: &str = "sessions.journal";

/// The journal is compacted into the snapshot once it has this many lines and twice as many as there are
/// records: often enough to keep it small, rarely enough that the rewrite costs little per change.
const COMPACT_AFTER: usize = 1000;

/// Session records in a snapshot and a journal; see the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct JsonFileStore {
    path: Arc<Path>,
    /// The records as written, and the journal. The lock is held across the write, which serialises
    /// writers.
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    records: BTreeMap<SessionKey, SessionRecord>,
    journal: file::Journal,
}

impl JsonFileStore {
    /// Opens (creating if needed) the store in `dir`, loading what a previous run left there.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_owned();
        let path = dir.join(FILE_NAME);
        let (records, journal) = {
            let path = path.clone();
            blocking(move || {
                let mut records = file::load(&dir, &path)?;
                let journal = file::Journal::open(&dir.join(JOURNAL_NAME), &mut records)?;
                Ok((records, journal))
            })
            .await?
        };
        Ok(Self {
            path: path.into(),
            state: Arc::new(Mutex::new(State { records, journal })),
        })
    }

    /// The file the store keeps its records in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `change` to the journal, then applies it, all under the lock that serialises writers; the
    /// journal is compacted into the snapshot when it has grown enough. Returns the record it replaced.
    async fn change(&self, change: file::Change) -> Result<Option<SessionRecord>, StoreError> {
        // In a task of its own, which owns the lock: a caller that stops waiting stops neither the write
        // nor its taking effect in memory, and the next change waits for both.
        let state = self.state.clone().lock_owned().await;
        let path = self.path.to_path_buf();
        tokio::spawn(Self::apply(state, path, change))
            .await
            .map_err(|err| StoreError::Io(std::io::Error::other(err)))?
    }

    async fn apply(
        mut state: tokio::sync::OwnedMutexGuard<State>,
        path: std::path::PathBuf,
        change: file::Change,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let journal = state.journal.clone();
        let written = change.clone();
        blocking(move || journal.append(&written)).await?;
        let replaced = match change {
            file::Change::Put { record } => state.records.insert(record.key.clone(), record),
            file::Change::Remove { key } => state.records.remove(&key),
        };
        state.journal.lines += 1;
        if state.journal.lines >= COMPACT_AFTER.max(2 * state.records.len()) {
            let (records, journal) = (state.records.clone(), state.journal.clone());
            // The change is on disk already: a failed compaction only leaves the journal longer.
            match blocking(move || {
                file::save(&path, &records)?;
                journal.clear()
            })
            .await
            {
                Ok(()) => state.journal.lines = 0,
                Err(err) => {
                    tracing::warn!(%err, "cannot compact the session journal; it goes on growing")
                }
            }
        }
        Ok(replaced)
    }
}

/// Runs file work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StoreError::Io(std::io::Error::other(err)))?
}

#[async_trait]
impl SessionStore for JsonFileStore {
    async fn get(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.state.lock().await.records.get(key).cloned())
    }

    async fn put(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.change(file::Change::Put { record }).await.map(drop)
    }

    async fn remove(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        if !self.state.lock().await.records.contains_key(key) {
            return Ok(None);
        }
        self.change(file::Change::Remove { key: key.clone() }).await
    }

    async fn list(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.state.lock().await.records.values().cloned().collect())
    }
}
