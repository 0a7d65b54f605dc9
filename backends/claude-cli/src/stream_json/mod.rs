//! The stream-json mode: one `claude -p --input-format stream-json --output-format stream-json --verbose
//! --include-partial-messages` per session, on pipes. A user message is a line on its standard input; the
//! answer comes back as records on its standard output, each text delta as the model writes it, then a
//! `result` with the prompt's usage. No terminal, plugin, dialog or hook is involved, so every login
//! Claude Code supports works, the channels feature included or not.
//!
//! Why each choice (`docs/claude-cli-measurements.md`, section N):
//! - the process prints nothing before its first user line, so it can take a turn as soon as it runs;
//! - `--permission-prompt-tool stdio` makes Claude Code ask the bridge, on standard output, before a tool
//!   the permission policy did not allow runs. Unanswered, it would wait for ever; the bridge answers by
//!   the same policy (`--permission-mode`, `--allowedTools`) at once;
//! - a turn is cancelled with the `interrupt` control request: Claude Code ends the prompt with an error
//!   `result` within milliseconds, and the next line starts a clean prompt in the same process.

mod records;
pub(crate) mod turn;

use std::path::Path;

use serde_json::{Value, json};
use synthesis_bridge::SessionKey;
use synthesis_bridge::spawner::{ProcessHandle, ProcessSpec, ProcessStdout, Stdio};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tracing::{debug, info};

pub(crate) use self::records::Record;
use crate::agent::{self, Conversation, LaunchError, Services};
use crate::config::ClaudeCliConfig;

/// How many records wait for a turn to take them before the reader holds back.
const RECORD_BUFFER: usize = 256;

/// The output of a `claude` process in the stream-json mode, as records.
pub(crate) struct StreamJsonIo {
    pub(crate) records: mpsc::Receiver<Record>,
}

impl StreamJsonIo {
    /// Whether the output has ended: the process is gone, or going.
    pub(crate) fn is_closed(&self) -> bool {
        self.records.is_closed() && self.records.is_empty()
    }
}

/// Starts `claude` for `session`. It can take a turn at once: nothing is awaited.
pub(crate) async fn launch(
    services: &Services,
    session: &SessionKey,
    conversation: Conversation,
    workspace: &Path,
) -> Result<(Box<dyn ProcessHandle>, StreamJsonIo), LaunchError> {
    let config = &services.config;
    info!(%session, ?conversation, workspace = %workspace.display(), "starting claude (stream-json)");
    let process = services
        .spawner
        .spawn(spec(config, conversation, workspace))
        .await
        .map_err(|err| agent::spawn_error(config, err))?;
    let Some(stdout) = process.take_stdout() else {
        let _ = process.kill().await;
        return Err(synthesis_bridge::BackendError::unavailable(
            "the spawner gave claude no standard output to read: the stream-json mode needs a process on pipes (Stdio::Pipes)",
        )
        .into());
    };
    let (sender, records) = mpsc::channel(RECORD_BUFFER);
    tokio::spawn(read_records(stdout, sender, session.clone()));
    info!(%session, pid = process.pid(), "claude is ready");
    Ok((process, StreamJsonIo { records }))
}

/// The command line of a stream-json process.
fn spec(config: &ClaudeCliConfig, conversation: Conversation, workspace: &Path) -> ProcessSpec {
    let mut spec = ProcessSpec::new(config.program.clone(), workspace)
        .args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
        ])
        .args(conversation.flag())
        .arg("--permission-mode")
        .arg(config.permission_mode.as_str())
        .args(["--permission-prompt-tool", "stdio"]);
    if !config.allowed_tools.is_empty() {
        // Last of ours, as it takes every value up to the next flag.
        spec = spec.arg("--allowedTools").args(&config.allowed_tools);
    }
    spec = spec
        .args(&config.extra_args)
        // The key clients use to reach the bridge is not the agent's business, nor its tools'.
        .env_remove("SYNTHESIS_API_KEY")
        .stdio(Stdio::Pipes);
    for (key, value) in &config.env {
        spec = spec.env(key, value);
    }
    spec
}

/// Reads `stdout` line by line into records until it ends or nobody takes them any more.
async fn read_records(stdout: ProcessStdout, records: mpsc::Sender<Record>, session: SessionKey) {
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(err) => {
                debug!(%session, %err, "cannot read claude's output");
                break;
            }
        };
        let Some(record) = Record::parse(&line) else {
            debug!(%session, line = %line.chars().take(200).collect::<String>(), "not a stream-json record");
            continue;
        };
        if records.send(record).await.is_err() {
            break;
        }
    }
    debug!(%session, "claude's output ended");
}

/// A user message, as one line of input.
pub(crate) fn user_line(text: &str) -> Vec<u8> {
    line(&json!({"type": "user", "message": {"role": "user", "content": text}}))
}

/// The request that interrupts the running prompt.
pub(crate) fn interrupt_line(request_id: &str) -> Vec<u8> {
    line(&json!({
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": "interrupt"},
    }))
}

/// The answer to Claude Code's request `request_id`.
pub(crate) fn response_line(request_id: &str, response: Value) -> Vec<u8> {
    line(&json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    }))
}

/// The refusal of a request the bridge does not serve.
pub(crate) fn error_line(request_id: &str, error: &str) -> Vec<u8> {
    line(&json!({
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": error},
    }))
}

/// The answer to a tool's permission request, by the configured policy: a tool the policy allows by name
/// runs; anything else Claude Code asks about is outside the policy (it asks only about tools that
/// `--permission-mode` and `--allowedTools` did not allow), and is denied with the reason.
pub(crate) fn permission(config: &ClaudeCliConfig, tool_name: &str, input: &Value) -> Value {
    if config.allowed_tools.iter().any(|tool| tool == tool_name) {
        return json!({"behavior": "allow", "updatedInput": input});
    }
    json!({
        "behavior": "deny",
        "message": format!(
            "The bridge's permission policy does not allow {tool_name}: its permission mode is {} and {tool_name} is not among its allowed tools (--allowed-tool).",
            config.permission_mode
        ),
    })
}

fn line(value: &Value) -> Vec<u8> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_requests_are_answered_by_the_policy() {
        let config = ClaudeCliConfig::new("bridge").allow_tool("Bash");
        let input = json!({"command": "touch a1.txt"});
        assert_eq!(
            permission(&config, "Bash", &input),
            json!({"behavior": "allow", "updatedInput": input})
        );
        let denied = permission(&config, "Write", &input);
        assert_eq!(denied["behavior"], "deny");
        assert!(
            denied["message"]
                .as_str()
                .unwrap()
                .contains("does not allow Write: its permission mode is dontAsk"),
            "{denied}"
        );
    }

    #[test]
    fn lines_are_single_json_objects() {
        let user = user_line("two\nlines");
        assert_eq!(user.iter().filter(|byte| **byte == b'\n').count(), 1);
        let value: Value = serde_json::from_slice(&user).unwrap();
        assert_eq!(value["message"]["content"], "two\nlines");
        let interrupt: Value = serde_json::from_slice(&interrupt_line("i-1")).unwrap();
        assert_eq!(interrupt["request"]["subtype"], "interrupt");
    }
}
