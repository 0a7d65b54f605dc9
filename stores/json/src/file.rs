//! Reading and atomically replacing the store's snapshot, and appending to and replaying its journal.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use synthesis_bridge::{SessionKey, SessionRecord, StoreError};
use tracing::warn;

/// The file's layout version, for a future migration to recognise.
const VERSION: u32 = 1;

#[derive(Serialize)]
struct Contents<'a> {
    version: u32,
    sessions: Vec<&'a SessionRecord>,
}

#[derive(Deserialize)]
struct Loaded {
    version: u32,
    sessions: Vec<SessionRecord>,
}

/// Loads the records at `path`, creating `dir` if needed. A file that does not parse is moved aside.
pub(crate) fn load(
    dir: &Path,
    path: &Path,
) -> Result<BTreeMap<SessionKey, SessionRecord>, StoreError> {
    fs::create_dir_all(dir)?;
    // A temporary file is all that is left of a write that a crash interrupted.
    let _ = fs::remove_file(temporary(path));
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(err) => return Err(err.into()),
    };
    match serde_json::from_slice::<Loaded>(&bytes) {
        Ok(loaded) if loaded.version == VERSION => Ok(loaded
            .sessions
            .into_iter()
            .map(|record| (record.key.clone(), record))
            .collect()),
        Ok(loaded) => Err(StoreError::Corrupt(format!(
            "{} has layout version {}; this bridge reads version {VERSION}",
            path.display(),
            loaded.version
        ))),
        Err(err) => {
            let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
                .to_string()
                .replace(':', "");
            let aside = path.with_file_name(format!("{}.corrupt-{stamp}", super::FILE_NAME));
            fs::rename(path, &aside)?;
            warn!(
                %err,
                moved_to = %aside.display(),
                "the session store did not parse; it was moved aside and the bridge starts without its sessions"
            );
            Ok(BTreeMap::new())
        }
    }
}

/// Replaces the file at `path` with `records`: write a temporary file, flush it, rename it over, flush the
/// directory. Readers and crashes see the old file or the new one, never a mix.
pub(crate) fn save(
    path: &Path,
    records: &BTreeMap<SessionKey, SessionRecord>,
) -> Result<(), StoreError> {
    let contents = Contents {
        version: VERSION,
        sessions: records.values().collect(),
    };
    let mut bytes =
        serde_json::to_vec_pretty(&contents).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    bytes.push(b'\n');
    let temporary = temporary(path);
    let mut file = File::create(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn temporary(path: &Path) -> std::path::PathBuf {
    path.with_file_name(format!(".{}.tmp", super::FILE_NAME))
}

/// One line of the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub(crate) enum Change {
    Put { record: SessionRecord },
    Remove { key: SessionKey },
}

/// The journal file, open for appending, and how many lines it has.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    file: Arc<File>,
    pub(crate) lines: usize,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and applies its changes to `records`. A line that
    /// does not parse is a write a crash tore (only the last can be): it was never acknowledged, and is
    /// skipped.
    pub(crate) fn open(
        path: &Path,
        records: &mut BTreeMap<SessionKey, SessionRecord>,
    ) -> Result<Self, StoreError> {
        let mut lines = 0;
        // Only a file is replayed: a device (a test's /dev/full) has no end to read to.
        let replayable = fs::metadata(path).is_ok_and(|meta| meta.is_file());
        if let Some(existing) = replayable.then(|| File::open(path)).transpose()? {
            for line in io::BufReader::new(existing).split(b'\n') {
                let line = line?;
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Change>(&line) {
                    Ok(Change::Put { record }) => {
                        records.insert(record.key.clone(), record);
                    }
                    Ok(Change::Remove { key }) => {
                        records.remove(&key);
                    }
                    Err(err) => {
                        warn!(%err, "skipped a torn line of the session journal");
                        continue;
                    }
                }
                lines += 1;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        // A torn last line must not swallow the next change: start it on a line of its own.
        if file.metadata()?.len() > 0 {
            (&file).write_all(b"\n")?;
        }
        Ok(Self {
            file: Arc::new(file),
            lines,
        })
    }

    /// Appends `change` and flushes it to disk.
    pub(crate) fn append(&self, change: &Change) -> Result<(), StoreError> {
        let mut line =
            serde_json::to_vec(change).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        line.push(b'\n');
        let end = self.file.metadata()?.len();
        let written = (&*self.file)
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(err) = written {
            // A part of the line left behind would glue the next change to it: take it back.
            let _ = self.file.set_len(end);
            return Err(err.into());
        }
        Ok(())
    }

    /// Empties the journal, once the snapshot holds all it said.
    pub(crate) fn clear(&self) -> Result<(), StoreError> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        Ok(())
    }
}
