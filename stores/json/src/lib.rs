//! [`JsonFileStore`]: the bridge's default [`SessionStore`], one JSON file in a state directory.
//!
//! - Every change replaces the whole file the crash-safe way: the new contents go to a temporary file in
//!   the same directory, which is flushed to disk, renamed over the old file, and then the directory itself
//!   is flushed. A crash (or `kill -9`) at any moment leaves either the old file or the new one, never a
//!   torn one.
//! - Changes made through one store are serialised, and [`SessionStore::put`] returns once the change is
//!   on disk. One bridge process owns the file; two processes writing the same state directory would
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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use synthesis_bridge::{SessionKey, SessionRecord, SessionStore, StoreError};
use tokio::sync::Mutex;

/// The file's name inside the state directory.
pub const FILE_NAME: &str = "sessions.json";

/// One JSON file of session records; see the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct JsonFileStore {
    path: Arc<Path>,
    /// The records as last written. The lock is held across the write, which serialises writers.
    records: Arc<Mutex<BTreeMap<SessionKey, SessionRecord>>>,
}

impl JsonFileStore {
    /// Opens (creating if needed) the store in `dir`, loading what a previous run left there.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_owned();
        let path = dir.join(FILE_NAME);
        let records = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || file::load(&dir, &path))
                .await
                .map_err(|err| StoreError::Io(std::io::Error::other(err)))??
        };
        Ok(Self {
            path: path.into(),
            records: Arc::new(Mutex::new(records)),
        })
    }

    /// The file the store keeps its records in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `change` to the records and writes them, all under the lock that serialises writers.
    async fn change<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<SessionKey, SessionRecord>) -> T,
    ) -> Result<T, StoreError> {
        let mut records = self.records.lock().await;
        let mut next = records.clone();
        let result = change(&mut next);
        // Memory takes the change before the write, and gives it back if the write fails: a caller that
        // stops waiting does not stop the write, and the next write must not undo it.
        let previous = std::mem::replace(&mut *records, next.clone());
        let path: PathBuf = self.path.to_path_buf();
        let saved = tokio::task::spawn_blocking(move || file::save(&path, &next))
            .await
            .map_err(|err| StoreError::Io(std::io::Error::other(err)))
            .and_then(|saved| saved);
        if let Err(err) = saved {
            *records = previous;
            return Err(err);
        }
        Ok(result)
    }
}

#[async_trait]
impl SessionStore for JsonFileStore {
    async fn get(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.records.lock().await.get(key).cloned())
    }

    async fn put(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.change(|records| {
            records.insert(record.key.clone(), record);
        })
        .await
    }

    async fn remove(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        if !self.records.lock().await.contains_key(key) {
            return Ok(None);
        }
        self.change(|records| records.remove(key)).await
    }

    async fn list(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.records.lock().await.values().cloned().collect())
    }
}
