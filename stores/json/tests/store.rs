//! The JSON file store on a real disk: persistence, corrupt files, concurrent writers and `kill -9`.

use std::process::{Command, Stdio};
use std::time::Duration;

use synthesis_bridge::{SessionKey, SessionRecord, SessionStore};
use synthesis_store_json::{FILE_NAME, JOURNAL_NAME, JsonFileStore};

/// The keys of the store's records, in order.
async fn keys(store: &JsonFileStore) -> Vec<String> {
    let records = store.list().await.unwrap();
    records
        .into_iter()
        .map(|record| record.key.as_str().to_owned())
        .collect()
}

fn record(key: &str) -> SessionRecord {
    SessionRecord::new(SessionKey::new(key).unwrap(), "/work/repo")
}

#[tokio::test]
async fn records_survive_a_reopen_and_removals_too() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = JsonFileStore::open(&state).await.unwrap();
    let mut first = record("agent::one");
    store.put(first.clone()).await.unwrap();
    store.put(record("agent::two")).await.unwrap();
    first.started = true;
    first.turns = 3;
    store.put(first.clone()).await.unwrap();
    assert_eq!(
        store
            .remove(&SessionKey::new("agent::two").unwrap())
            .await
            .unwrap()
            .map(|r| r.turns),
        Some(0)
    );
    assert_eq!(
        store
            .remove(&SessionKey::new("agent::none").unwrap())
            .await
            .unwrap(),
        None
    );

    let reopened = JsonFileStore::open(&state).await.unwrap();
    assert_eq!(reopened.list().await.unwrap(), vec![first.clone()]);
    assert_eq!(reopened.get(&first.key).await.unwrap(), Some(first));
}

#[tokio::test]
async fn a_corrupt_file_is_moved_aside_and_the_store_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(FILE_NAME),
        b"{\"version\":1,\"sessions\":[{tor",
    )
    .unwrap();
    let store = JsonFileStore::open(dir.path()).await.unwrap();
    assert!(store.list().await.unwrap().is_empty());

    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("sessions.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(dir.path().join(&aside[0])).unwrap(),
        b"{\"version\":1,\"sessions\":[{tor"
    );
    // And the store works.
    store.put(record("k")).await.unwrap();
    let reopened = JsonFileStore::open(dir.path()).await.unwrap();
    let keys = keys(&reopened).await;
    assert_eq!(keys, ["k"]);
}

#[tokio::test]
async fn concurrent_writers_are_serialised_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = JsonFileStore::open(dir.path()).await.unwrap();
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put(record(&format!("agent::{i}"))).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    let reopened = JsonFileStore::open(dir.path()).await.unwrap();
    assert_eq!(reopened.list().await.unwrap().len(), 40);
}

/// Set for the child process of [`a_writer_killed_at_any_moment_leaves_a_whole_file`].
const CRASH_DIR: &str = "SYNTHESIS_STORE_CRASH_DIR";

/// Not a test of its own: when started by the crash test, writes records in a loop until it is killed.
#[tokio::test]
async fn crash_writer() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let store = JsonFileStore::open(&dir).await.unwrap();
    // Long records make each write big enough for a kill to land in the middle of one.
    let workspace = format!("/work/{}", "w".repeat(2000));
    for i in 0u64.. {
        let mut record = SessionRecord::new(
            SessionKey::new(format!("agent::{}", i % 200)).unwrap(),
            &workspace,
        );
        record.turns = i;
        store.put(record).await.unwrap();
    }
}

#[test]
fn a_writer_killed_at_any_moment_leaves_a_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut previous_len = 0;
    for round in 0..25u64 {
        let mut writer = Command::new(std::env::current_exe().unwrap())
            .args(["crash_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_DIR, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while !dir.path().join(JOURNAL_NAME).exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Kill it at a different point of its write loop each round.
        std::thread::sleep(Duration::from_millis(40 + (round * 37) % 90));
        writer.kill().unwrap(); // SIGKILL
        writer.wait().unwrap();

        let sessions = tokio::runtime::Runtime::new().unwrap().block_on(async {
            JsonFileStore::open(dir.path())
                .await
                .unwrap()
                .list()
                .await
                .unwrap()
        });
        assert!(!sessions.is_empty());
        assert!(sessions.len() >= previous_len.min(200));
        previous_len = sessions.len();
        assert!(
            !std::fs::read_dir(dir.path()).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt")),
            "round {round}: the file was found corrupt"
        );
    }
}

#[tokio::test]
async fn a_change_costs_one_journal_line_however_many_sessions_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let store = JsonFileStore::open(dir.path()).await.unwrap();
    let journal = dir.path().join(JOURNAL_NAME);
    let size = || std::fs::metadata(&journal).map_or(0, |meta| meta.len());
    let mut largest = 0;
    for n in 0..2000 {
        let before = size();
        store.put(record(&format!("agent::s{n:05}"))).await.unwrap();
        largest = largest.max(size().saturating_sub(before));
    }
    assert!(largest < 1024, "a change wrote {largest} bytes");
    // Changes to the same records make the journal longer than twice their number: it is compacted into
    // the snapshot, and starts again.
    let mut busy = record("agent::s00000");
    for turn in 0..2500 {
        busy.turns = turn;
        store.put(busy.clone()).await.unwrap();
    }
    assert!(dir.path().join(FILE_NAME).exists(), "compacted");
    assert!(size() < 2000 * 1024, "the journal started again");
    let reopened = JsonFileStore::open(dir.path()).await.unwrap();
    assert_eq!(reopened.list().await.unwrap().len(), 2000);
    assert_eq!(reopened.get(&busy.key).await.unwrap().unwrap().turns, 2499);
}

#[tokio::test]
async fn a_torn_last_line_is_skipped_and_later_changes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = JsonFileStore::open(dir.path()).await.unwrap();
    store.put(record("agent::kept")).await.unwrap();
    drop(store);
    // A crash in the middle of appending a change.
    let journal = dir.path().join(JOURNAL_NAME);
    let mut text = std::fs::read_to_string(&journal).unwrap();
    text.push_str(r#"{"change":"put","record":{"key":"agent::torn","#);
    std::fs::write(&journal, text).unwrap();

    let store = JsonFileStore::open(dir.path()).await.unwrap();
    store.put(record("agent::after")).await.unwrap();
    let reopened = JsonFileStore::open(dir.path()).await.unwrap();
    let keys = keys(&reopened).await;
    assert_eq!(keys, ["agent::after", "agent::kept"]);
}

#[tokio::test]
async fn a_full_disk_fails_the_change_and_keeps_what_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let store = JsonFileStore::open(dir.path()).await.unwrap();
    store.put(record("agent::before")).await.unwrap();
    drop(store);
    // Every write to the journal now fails as on a full disk.
    let journal = dir.path().join(JOURNAL_NAME);
    std::fs::remove_file(&journal).unwrap();
    std::os::unix::fs::symlink("/dev/full", &journal).unwrap();
    let store = JsonFileStore::open(dir.path())
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let err = store.put(record("agent::lost")).await.unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    assert_eq!(
        keys(&store).await,
        Vec::<String>::new(),
        "a change that failed is not kept"
    );
}
