//! The stream-json mode: one `claude -p --input-format stream-json --output-format stream-json --verbose
//! --include-partial-messages` per session, on pipes. A user message is a line on its standard input; the
//! answer comes back as records on its standard output, each text delta as the model writes it, then a
//! `result` with the prompt's usage. The bridge installs no plugin or hook and answers no dialog (the
//! user's own Claude Code settings still apply), so every login Claude Code supports works, the channels
//! feature included or not.
//!
//! Why each choice (`docs/claude-cli-measurements.md`, section N):
//! - the process prints nothing before its first user line, so it can take a turn as soon as it runs;
//! - `--permission-prompt-tool stdio` makes Claude Code ask the bridge, on standard output, before a tool
//!   call that the permission policy (`--permission-mode`, `--allowedTools`) did not allow. Unanswered, it
//!   would wait for ever; the bridge denies it at once, with the reason, which keeps the policy what the
//!   flags say;
//! - a turn is cancelled with the `interrupt` control request: Claude Code ends the prompt with an error
//!   `result` within milliseconds, and the next line starts a clean prompt in the same process.

mod records;
pub(crate) mod sdk_server;
pub(crate) mod turn;

use std::path::Path;

use serde_json::{Value, json};
use synthesis_bridge::spawner::{OutputLines, ProcessHandle, ProcessSpec, ProcessStdout, Stdio};
use synthesis_bridge::{ClientTool, SessionKey};
use tokio::sync::mpsc;
use tracing::{debug, info};

pub(crate) use self::records::Record;
use crate::agent::{self, ClientSetup, Conversation, LaunchError, Services};
use crate::config::ClaudeCliConfig;

/// How many records wait for a turn to take them before the reader holds back.
const RECORD_BUFFER: usize = 256;

/// The output of a `claude` process in the stream-json mode, as records, and what the turns need to know
/// about the process.
pub(crate) struct StreamJsonIo {
    pub(crate) records: mpsc::Receiver<Record>,
    /// Whether it was started with `--resume`.
    pub(crate) resumed: bool,
    /// How many messages it was given.
    pub(crate) prompts: u32,
    /// The client's tools it was started with, as its `client` MCP server lists them.
    pub(crate) tools: Vec<ClientTool>,
}

impl StreamJsonIo {
    /// Whether the output has ended: the process is gone, or going. Records left over do not matter: a
    /// turn drops them.
    pub(crate) fn is_closed(&self) -> bool {
        self.records.is_closed()
    }
}

/// Starts `claude` for `session`. It can take a turn at once: nothing is awaited.
pub(crate) async fn launch(
    services: &Services,
    session: &SessionKey,
    conversation: Conversation,
    workspace: &Path,
    client: &ClientSetup,
) -> Result<(Box<dyn ProcessHandle>, StreamJsonIo), LaunchError> {
    let tools = client.tools.as_slice();
    let config = &services.config;
    let tool_names: Vec<&str> = tools.iter().map(|tool| tool.name.as_str()).collect();
    info!(%session, ?conversation, workspace = %workspace.display(), tools = ?tool_names, "starting claude (stream-json)");
    let process = services
        .spawner
        .spawn(spec(config, conversation, workspace, client))
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
    let io = StreamJsonIo {
        records,
        resumed: matches!(conversation, Conversation::Resume(_)),
        prompts: 0,
        tools: tools.to_vec(),
    };
    Ok((process, io))
}

/// The command line of a stream-json process.
fn spec(
    config: &ClaudeCliConfig,
    conversation: Conversation,
    workspace: &Path,
    client: &ClientSetup,
) -> ProcessSpec {
    let tools = client.tools.as_slice();
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
        // A one-off turn's conversation is not kept: Claude Code need not write a transcript either.
        .args(matches!(conversation, Conversation::Once(_)).then_some("--no-session-persistence"))
        .arg("--permission-mode")
        .arg(config.permission_mode.as_str())
        .args(["--permission-prompt-tool", "stdio"])
        .args(client.system_prompt_args());
    let mut allowed = config.allowed_tools.clone();
    if !tools.is_empty() {
        spec = spec.arg("--mcp-config").arg(sdk_server::mcp_config());
        allowed.push(sdk_server::allowed());
    }
    if !allowed.is_empty() {
        // Last of ours, as it takes every value up to the next flag.
        spec = spec.arg("--allowedTools").args(&allowed);
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
    let mut lines = OutputLines::new(stdout);
    while let Some(line) = lines.next().await {
        let Some(record) = Record::parse(line.trim_end()) else {
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

/// The answer to a tool's permission request: no. Claude Code asks only about calls that its permission
/// mode and `--allowedTools` did not allow, even for a tool allowed by name (a path outside the workspace,
/// a command its rule does not cover); allowing one here would widen the policy beyond the flags, and
/// there is nobody to ask. The reason goes to the model.
pub(crate) fn permission(config: &ClaudeCliConfig, tool_name: &str) -> Value {
    json!({
        "behavior": "deny",
        "message": format!(
            "The bridge's permission policy does not allow this {tool_name} call: its permission mode is {} and the call is not covered by its allowed tools (--allowed-tool).",
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
    fn permission_requests_are_denied_with_the_policy_as_the_reason() {
        let config = ClaudeCliConfig::new("bridge").allow_tool("Bash(git diff:*)");
        let denied = permission(&config, "Bash");
        assert_eq!(denied["behavior"], "deny");
        assert!(
            denied["message"]
                .as_str()
                .unwrap()
                .contains("does not allow this Bash call: its permission mode is dontAsk"),
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
