//! `CommandBackend` against real processes: `sh -c` scripts stand in for CLI agents.
//!
//! Linux only: whether a process still runs is read from `/proc`, where a zombie (killed, waiting for
//! its new parent to reap it) can be told apart from a live process.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use synthesis_backend_command::CommandBackend;
use synthesis_bridge::{
    AgentBackend, BackendError, BackendStatus, ReplyEvent, ReplyStream, SessionKey, Turn, TurnMeta,
};
use tokio::time::timeout;

/// Long enough that only a bug makes a test wait this long.
const PATIENCE: Duration = Duration::from_secs(10);

/// A fresh directory for one test's turns, removed afterwards.
struct Workspace(PathBuf);

impl Workspace {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "synthesis-backend-command-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // `pwd` in the command prints the resolved path.
        Self(dir.canonicalize().unwrap())
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sh(script: &str) -> CommandBackend {
    CommandBackend::new("sh").args(["-c", script])
}

fn turn(workspace: &Workspace, session: &str, text: &str) -> Turn {
    Turn::new(SessionKey::new(session).unwrap(), workspace.path(), text)
}

/// Every event until the stream ends.
async fn collect(reply: ReplyStream) -> Vec<ReplyEvent> {
    timeout(PATIENCE, reply.collect())
        .await
        .expect("the reply stream did not end")
}

/// The text of all deltas, asserting that the deltas come before a single final event.
fn text_and_last(events: &[ReplyEvent]) -> (String, &ReplyEvent) {
    let (last, deltas) = events.split_last().expect("no events at all");
    let text = deltas
        .iter()
        .map(|event| match event {
            ReplyEvent::TextDelta(text) => text.as_str(),
            other => panic!("{other:?} before the end of {events:?}"),
        })
        .collect();
    (text, last)
}

/// Text from the stream up to and including the first newline.
async fn read_line(reply: &mut ReplyStream) -> String {
    let mut line = String::new();
    while !line.contains('\n') {
        match timeout(PATIENCE, reply.next())
            .await
            .expect("no output from the command")
        {
            Some(ReplyEvent::TextDelta(text)) => line.push_str(&text),
            other => panic!("expected a line of text, got {other:?} after {line:?}"),
        }
    }
    line
}

/// The pids a `echo $$ $!` line names.
fn pids(line: &str) -> Vec<u32> {
    line.split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect()
}

fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name; `Z` is a dead process not yet reaped.
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    !state.is_some_and(|state| state.starts_with('Z'))
}

async fn assert_gone(pid: u32) {
    // A killed grandchild is a zombie until its new parent reaps it; give that a moment.
    let gone = timeout(PATIENCE, async {
        while is_running(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "process {pid} is still running");
}

#[tokio::test]
async fn stdout_is_streamed_as_deltas_then_the_turn_ends() {
    let ws = Workspace::new();
    let backend = sh("printf 'one '; sleep 0.1; printf 'two\\n'; sleep 0.1; printf 'three'");
    let events = collect(backend.run_turn(turn(&ws, "s", "")).await.unwrap()).await;
    let (text, last) = text_and_last(&events);
    assert_eq!(text, "one two\nthree");
    assert_eq!(last, &ReplyEvent::end());
}

#[tokio::test]
async fn output_arrives_while_the_command_is_still_running() {
    let ws = Workspace::new();
    let backend = sh("echo thinking; sleep 100");
    let turn = turn(&ws, "s", "");
    let cancel = turn.cancel.clone();
    let mut reply = backend.run_turn(turn).await.unwrap();
    assert_eq!(read_line(&mut reply).await, "thinking\n");
    cancel.cancel();
    assert_eq!(
        collect(reply).await,
        [ReplyEvent::Error(BackendError::Cancelled)]
    );
}

#[tokio::test]
async fn stdin_carries_the_users_text() {
    let ws = Workspace::new();
    let backend = CommandBackend::new("cat");
    let events = collect(
        backend
            .run_turn(turn(&ws, "s", "hello\nwörld"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        text_and_last(&events),
        ("hello\nwörld".to_owned(), &ReplyEvent::end())
    );
}

#[tokio::test]
async fn large_input_and_output_flow_at_the_same_time() {
    // More than any pipe buffer in both directions: writing all of stdin before reading stdout would
    // deadlock.
    let ws = Workspace::new();
    let input = "0123456789abcdef".repeat(64 * 1024);
    let events = collect(
        CommandBackend::new("cat")
            .run_turn(turn(&ws, "s", &input))
            .await
            .unwrap(),
    )
    .await;
    let (text, last) = text_and_last(&events);
    assert!(text == input, "the output differs from the input");
    assert_eq!(last, &ReplyEvent::end());
}

#[tokio::test]
async fn the_command_runs_in_the_workspace_with_the_turns_environment() {
    let ws = Workspace::new();
    let backend = sh(r#"pwd; echo "$SYNTHESIS_SESSION_KEY|$SYNTHESIS_TURN_ID|${SYNTHESIS_CONVERSATION-unset}|$EXTRA""#)
        .env("EXTRA", "configured");

    let mut with_conversation = turn(&ws, "agent:main", "");
    with_conversation.meta = TurnMeta::default().with_conversation(Some("conv-7".into()));
    let turn_id = with_conversation.meta.turn_id;
    let events = collect(backend.run_turn(with_conversation).await.unwrap()).await;
    let expected = format!(
        "{}\nagent:main|{turn_id}|conv-7|configured\n",
        ws.path().display()
    );
    assert_eq!(text_and_last(&events), (expected, &ReplyEvent::end()));

    let without = turn(&ws, "agent:main", "");
    let turn_id = without.meta.turn_id;
    let events = collect(backend.run_turn(without).await.unwrap()).await;
    let expected = format!(
        "{}\nagent:main|{turn_id}|unset|configured\n",
        ws.path().display()
    );
    assert_eq!(text_and_last(&events), (expected, &ReplyEvent::end()));
}

#[tokio::test]
async fn a_nonzero_exit_fails_with_the_code_and_stderr() {
    let ws = Workspace::new();
    let backend = sh("echo partial; echo noise >&2; echo 'something broke' >&2; exit 3");
    let events = collect(backend.run_turn(turn(&ws, "s", "")).await.unwrap()).await;
    let (text, last) = text_and_last(&events);
    assert_eq!(text, "partial\n");
    assert_eq!(
        last,
        &ReplyEvent::Error(BackendError::failed(
            "`sh` exited with code 3: noise\nsomething broke"
        ))
    );
}

#[tokio::test]
async fn only_the_tail_of_stderr_is_reported() {
    let ws = Workspace::new();
    let backend = sh("printf 'aaaaaaaaaaaaaaaa the end' >&2; exit 1").stderr_tail_bytes(7);
    let events = collect(backend.run_turn(turn(&ws, "s", "")).await.unwrap()).await;
    assert_eq!(
        events,
        [ReplyEvent::Error(BackendError::failed(
            "`sh` exited with code 1: the end"
        ))]
    );
}

#[tokio::test]
async fn a_command_killed_by_a_signal_fails() {
    let ws = Workspace::new();
    let events = collect(sh("kill -9 $$").run_turn(turn(&ws, "s", "")).await.unwrap()).await;
    assert_eq!(
        events,
        [ReplyEvent::Error(BackendError::failed(
            "`sh` was killed by SIGKILL"
        ))]
    );
}

#[tokio::test]
async fn a_missing_program_is_unavailable_with_the_install_hint() {
    let ws = Workspace::new();
    let backend = CommandBackend::new("synthesis-no-such-agent")
        .install_hint("Install it with `npm i -g no-such-agent`.");
    let err = backend
        .run_turn(turn(&ws, "s", "hi"))
        .await
        .err()
        .expect("a missing program ran");
    assert_eq!(
        err,
        BackendError::unavailable(
            "cannot run `synthesis-no-such-agent`: not found on PATH. Install it with `npm i -g no-such-agent`."
        )
    );
    assert_eq!(backend.status(), BackendStatus::default());
}

#[tokio::test]
async fn a_missing_workspace_is_reported_as_such() {
    let ws = Workspace::new();
    let missing = ws.path().join("gone");
    let backend = CommandBackend::new("true");
    let turn = Turn::new(SessionKey::new("s").unwrap(), &missing, "hi");
    let err = backend
        .run_turn(turn)
        .await
        .err()
        .expect("ran in a missing directory");
    assert_eq!(
        err,
        BackendError::failed(format!(
            "cannot run `true`: the working directory {} does not exist",
            missing.display()
        ))
    );
    assert_eq!(backend.status(), BackendStatus::default());
}

#[tokio::test]
async fn a_character_split_between_writes_arrives_whole() {
    let ws = Workspace::new();
    // "é" is C3 A9; the pause makes the two bytes arrive in separate reads.
    let backend = sh(r"printf '\303'; sleep 0.2; printf '\251 ok'");
    let events = collect(backend.run_turn(turn(&ws, "s", "")).await.unwrap()).await;
    let (text, last) = text_and_last(&events);
    assert_eq!(text, "é ok");
    assert_eq!(last, &ReplyEvent::end());
}

#[tokio::test]
async fn cancelling_kills_the_command_and_everything_it_started() {
    let ws = Workspace::new();
    let backend = sh("sleep 100 & echo $$ $!; wait");
    let turn = turn(&ws, "s", "");
    let cancel = turn.cancel.clone();
    let mut reply = backend.run_turn(turn).await.unwrap();
    let pids = pids(&read_line(&mut reply).await);
    assert!(pids.iter().all(|&pid| is_running(pid)));

    cancel.cancel();
    assert_eq!(
        collect(reply).await,
        [ReplyEvent::Error(BackendError::Cancelled)]
    );
    // The stream ends only after the command itself was reaped.
    assert!(!is_running(pids[0]));
    assert_eq!(backend.status(), BackendStatus::default());
    assert_gone(pids[1]).await;
}

#[tokio::test]
async fn a_command_ignoring_sigterm_is_killed_after_the_grace() {
    let ws = Workspace::new();
    // Ignored signals stay ignored in children, so the whole group shrugs off SIGTERM.
    let backend = sh("trap '' TERM; sleep 100 & echo $$ $!; wait; wait")
        .kill_grace(Duration::from_millis(200));
    let turn = turn(&ws, "s", "");
    let cancel = turn.cancel.clone();
    let mut reply = backend.run_turn(turn).await.unwrap();
    let pids = pids(&read_line(&mut reply).await);

    cancel.cancel();
    assert_eq!(
        collect(reply).await,
        [ReplyEvent::Error(BackendError::Cancelled)]
    );
    assert!(!is_running(pids[0]));
    assert_gone(pids[1]).await;
}

#[tokio::test]
async fn dropping_the_stream_kills_the_command() {
    let ws = Workspace::new();
    let backend = sh("sleep 100 & echo $$ $!; wait");
    let mut reply = backend.run_turn(turn(&ws, "s", "")).await.unwrap();
    let pids = pids(&read_line(&mut reply).await);
    assert_eq!(backend.status(), BackendStatus::new(1, 1, 0));

    drop(reply);
    for pid in pids {
        assert_gone(pid).await;
    }
    let idle = timeout(PATIENCE, async {
        while backend.status() != BackendStatus::default() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(
        idle.await.is_ok(),
        "the dropped turn still counts as running"
    );
}

#[tokio::test]
async fn leftovers_holding_the_output_open_are_killed_after_the_command_exits() {
    let ws = Workspace::new();
    // The background sleep inherits stdout and would keep the turn open for 100 s.
    let backend = sh("sleep 100 & echo $!").kill_grace(Duration::from_millis(200));
    let events = collect(backend.run_turn(turn(&ws, "s", "")).await.unwrap()).await;
    let (text, last) = text_and_last(&events);
    assert_eq!(last, &ReplyEvent::end());
    assert_gone(pids(&text)[0]).await;
}

#[tokio::test]
async fn a_leftover_outside_the_process_group_does_not_hold_the_turn_open() {
    let ws = Workspace::new();
    // `setsid` takes the sleep out of the command's group, where stopping the group cannot reach it; it
    // still holds standard output.
    let backend = sh("setsid sleep 100 & echo $!").kill_grace(Duration::from_millis(200));
    let events = tokio::time::timeout(
        Duration::from_secs(10),
        collect(backend.run_turn(turn(&ws, "s", "")).await.unwrap()),
    )
    .await
    .expect("the turn ended");
    let (text, last) = text_and_last(&events);
    assert_eq!(last, &ReplyEvent::end());
    let escaped = pids(&text)[0];
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(escaped as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test]
async fn shutdown_stops_running_turns_and_refuses_new_ones() {
    let ws = Workspace::new();
    let backend = sh("sleep 100 & echo $$ $!; wait");
    let mut reply = backend.run_turn(turn(&ws, "s", "")).await.unwrap();
    let pids = pids(&read_line(&mut reply).await);

    timeout(PATIENCE, backend.shutdown())
        .await
        .expect("shutdown hung");
    // Shutdown returns once the command was reaped.
    assert!(!is_running(pids[0]));
    assert_eq!(backend.status(), BackendStatus::default());
    assert_eq!(
        collect(reply).await,
        [ReplyEvent::Error(BackendError::Cancelled)]
    );
    assert_gone(pids[1]).await;

    let err = backend
        .run_turn(turn(&ws, "s", ""))
        .await
        .err()
        .expect("a turn ran after shutdown");
    assert_eq!(
        err,
        BackendError::unavailable("cannot run `sh`: the bridge is shutting down")
    );
}

#[tokio::test]
async fn status_counts_running_turns_and_their_sessions() {
    let ws = Workspace::new();
    let backend = sh("echo started; sleep 100");
    assert_eq!(backend.status(), BackendStatus::default());

    let mut turns = Vec::new();
    for session in ["a", "a", "b"] {
        let turn = turn(&ws, session, "");
        let cancel = turn.cancel.clone();
        let mut reply = backend.run_turn(turn).await.unwrap();
        read_line(&mut reply).await;
        turns.push((cancel, reply));
    }
    assert_eq!(backend.status(), BackendStatus::new(2, 3, 0));

    let (cancel, reply) = turns.remove(0);
    cancel.cancel();
    collect(reply).await;
    assert_eq!(backend.status(), BackendStatus::new(2, 2, 0));
    let (cancel, reply) = turns.remove(0);
    cancel.cancel();
    collect(reply).await;
    assert_eq!(backend.status(), BackendStatus::new(1, 1, 0));
    timeout(PATIENCE, backend.shutdown())
        .await
        .expect("shutdown hung");
    assert_eq!(backend.status(), BackendStatus::default());
}
