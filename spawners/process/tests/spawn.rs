//! The process spawner with real processes: terminals, pipes, and stopping whole process groups.

use std::path::Path;
use std::time::Duration;

use synthesis_bridge::spawner::{ProcessHandle, ProcessSpec, SpawnError, Spawner, Stdio};
use synthesis_spawner_process::ProcessSpawner;
use tokio::io::AsyncReadExt;

const PATIENCE: Duration = Duration::from_secs(10);

fn shell(script: &str, stdio: Stdio) -> ProcessSpec {
    ProcessSpec::new("sh", std::env::temp_dir())
        .args(["-c", script])
        .stdio(stdio)
}

async fn start(spec: ProcessSpec) -> Box<dyn ProcessHandle> {
    ProcessSpawner::default()
        .kill_grace(Duration::from_millis(300))
        .spawn(spec)
        .await
        .unwrap()
}

async fn wait_for(process: &dyn ProcessHandle, text: &str) {
    tokio::time::timeout(PATIENCE, process.output().wait_for(text))
        .await
        .unwrap_or_else(|_| panic!("{text:?} never appeared in {:?}", process.output().text()));
}

/// Whether `pid` names a live (not zombie) process.
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !matches!(
            stat.rsplit_once(") ").map(|(_, rest)| rest.as_bytes()[0]),
            Some(b'Z' | b'X')
        ),
        Err(_) => false,
    }
}

/// The pids a script printed as `pids: A B`.
async fn printed_pids(process: &dyn ProcessHandle) -> Vec<u32> {
    wait_for(process, "pids:").await;
    wait_for(process, "end").await;
    let text = process.output().text();
    let line = text.lines().find(|l| l.starts_with("pids:")).unwrap();
    line["pids:".len()..]
        .split_whitespace()
        .filter(|w| *w != "end")
        .map(|pid| pid.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_terminal_program_sees_a_terminal_of_the_asked_size_and_can_be_typed_to() {
    let spec = shell(
        "test -t 0 && echo on-a-tty; stty size; read line; echo \"got $line\"",
        Stdio::Terminal {
            cols: 123,
            rows: 45,
        },
    );
    let process = start(spec).await;
    wait_for(&*process, "on-a-tty").await;
    wait_for(&*process, "45 123").await;
    process.write(b"typed\r").await.unwrap();
    wait_for(&*process, "got typed").await;
    assert!(process.wait().await.success());
}

#[tokio::test]
async fn a_piped_program_has_its_own_output_stream_and_its_errors_are_logged() {
    let spec = shell(
        "test -t 0 || echo no-tty; echo to-stderr >&2; while read line; do echo \"got $line\"; done; echo eof",
        Stdio::Pipes,
    );
    let process = start(spec).await;
    let mut stdout = process
        .take_stdout()
        .expect("a piped process has its standard output");
    assert!(process.take_stdout().is_none(), "it is handed out once");
    process.write(b"one\n").await.unwrap();
    process.write(b"two\n").await.unwrap();
    process.close_input().await.unwrap();
    assert!(process.write(b"late\n").await.is_err());
    let mut text = String::new();
    tokio::time::timeout(PATIENCE, stdout.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text, "no-tty\ngot one\ngot two\neof\n");
    let exit = tokio::time::timeout(PATIENCE, process.wait())
        .await
        .unwrap();
    assert!(exit.success(), "{exit}");
    wait_for(&*process, "to-stderr").await;
    assert!(
        !process.output().text().contains("got"),
        "standard output is not logged"
    );
}

#[tokio::test]
async fn a_terminal_has_no_separate_output_stream() {
    let process = start(shell("echo hi", Stdio::terminal())).await;
    assert!(process.take_stdout().is_none());
    wait_for(&*process, "hi").await;
}

#[tokio::test]
async fn the_environment_is_inherited_with_removals_and_additions() {
    let spec = shell(
        "echo \"home=${HOME-unset} extra=$EXTRA path-set=${PATH:+yes}\" >&2",
        Stdio::Pipes,
    )
    .env_remove("HOME")
    .env("EXTRA", "42");
    let process = start(spec).await;
    wait_for(&*process, "home=unset extra=42 path-set=yes").await;
}

#[tokio::test]
async fn kill_stops_the_whole_group_in_both_modes_and_reaps_the_leader() {
    for stdio in [Stdio::terminal(), Stdio::Pipes] {
        let spec = shell(
            "sleep 1000 & a=$!; sleep 1000 & b=$!; echo \"pids: $a $b end\" >&2; wait",
            stdio,
        );
        let process = start(spec).await;
        let children = printed_pids(&*process).await;
        assert_eq!(children.len(), 2);
        assert!(children.iter().all(|&pid| is_running(pid)));

        tokio::time::timeout(PATIENCE, process.kill())
            .await
            .unwrap()
            .unwrap();
        let exit = process.wait().await;
        assert!(!exit.success(), "{exit}");
        assert!(
            !is_running(process.pid()),
            "the leader is gone, not a zombie"
        );
        assert!(!Path::new(&format!("/proc/{}", process.pid())).exists());
        tokio::time::timeout(PATIENCE, async {
            while children.iter().any(|&pid| is_running(pid)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the children stopped with their group");
    }
}

#[tokio::test]
async fn a_program_that_ignores_sigterm_gets_sigkill_after_the_grace_period() {
    let spec = shell(
        "trap '' TERM; echo ready >&2; while :; do sleep 0.05; done",
        Stdio::Pipes,
    );
    let process = start(spec).await;
    wait_for(&*process, "ready").await;
    tokio::time::timeout(PATIENCE, process.kill())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(process.wait().await.signal, Some(9));
}

#[tokio::test]
async fn dropping_the_handle_kills_the_group() {
    let spec = shell(
        "sleep 1000 & echo \"pids: $! end\"; wait",
        Stdio::terminal(),
    );
    let process = start(spec).await;
    let children = printed_pids(&*process).await;
    let leader = process.pid();
    drop(process);
    tokio::time::timeout(PATIENCE, async {
        while is_running(leader) || children.iter().any(|&pid| is_running(pid)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the group died with its handle");
}

#[tokio::test]
async fn a_missing_program_or_directory_is_a_clear_error() {
    let spawner = ProcessSpawner::default();
    let missing = ProcessSpec::new("/nonexistent/claude", std::env::temp_dir());
    match spawner.spawn(missing).await {
        Err(SpawnError::NotFound { program, .. }) => assert_eq!(program, "/nonexistent/claude"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let nowhere = ProcessSpec::new("sh", "/nonexistent/workspace").stdio(Stdio::terminal());
    let err = spawner.spawn(nowhere).await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/workspace"), "{err}");
}
