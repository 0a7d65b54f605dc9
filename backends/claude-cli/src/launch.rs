//! The command line and environment of one `claude` process.

use std::path::Path;

use serde_json::json;
use synthesis_bridge::SessionKey;
use synthesis_bridge::spawner::{ProcessSpec, Stdio};
use synthesis_transport_ws::protocol::{ENV_SESSION, ENV_TOKEN, ENV_WS_URL};
use uuid::Uuid;

use crate::config::ClaudeCliConfig;

/// The variable that names the Claude Code conversation a process continues.
pub(crate) const ENV_CLAUDE_SESSION: &str = "SYNTHESIS_CLAUDE_SESSION";

/// Whether a process starts a conversation or continues one. Claude Code refuses `--session-id` for an id
/// it has a transcript of, and `--resume` for one it has none of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conversation {
    Start(Uuid),
    Resume(Uuid),
}

impl Conversation {
    pub(crate) fn id(self) -> Uuid {
        match self {
            Self::Start(id) | Self::Resume(id) => id,
        }
    }
}

/// Everything that differs between two launches.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub(crate) session: &'a SessionKey,
    pub(crate) conversation: Conversation,
    pub(crate) workspace: &'a Path,
    /// `SYNTHESIS_WS_URL`.
    pub(crate) endpoint: &'a str,
    /// `SYNTHESIS_BRIDGE_TOKEN`.
    pub(crate) token: &'a str,
}

pub(crate) fn spec(config: &ClaudeCliConfig, launch: &Launch<'_>) -> ProcessSpec {
    let channel = format!("server:{}", config.channel_name);
    let (session_flag, id) = match launch.conversation {
        Conversation::Start(id) => ("--session-id", id),
        Conversation::Resume(id) => ("--resume", id),
    };
    let mut spec = ProcessSpec::new(config.program.clone(), launch.workspace)
        .arg("--mcp-config")
        .arg(mcp_config(config))
        // Only the bridge's channel: a workspace's own `.mcp.json` would stop the process at a dialog.
        .arg("--strict-mcp-config")
        // Never also `--channels`: with both, Claude Code skips the server and drops every message.
        .arg("--dangerously-load-development-channels")
        .arg(channel)
        .arg("--settings")
        .arg(settings(config))
        .arg(session_flag)
        .arg(id.to_string())
        .arg("--permission-mode")
        .arg(config.permission_mode.as_str())
        // Last of ours, as it takes every value up to the next flag.
        .arg("--allowedTools")
        .arg(config.reply_tool())
        .args(&config.allowed_tools)
        .args(&config.extra_args)
        // The key clients use to reach the bridge is not the agent's business, nor its tools'.
        .env_remove("SYNTHESIS_API_KEY")
        .stdio(Stdio::terminal());
    for (key, value) in &config.env {
        spec = spec.env(key, value);
    }
    spec.env(ENV_WS_URL, launch.endpoint)
        .env(ENV_SESSION, launch.session.as_str())
        .env(ENV_CLAUDE_SESSION, id.to_string())
        .env(ENV_TOKEN, launch.token)
}

/// `--mcp-config`: the bridge's channel plugin as the only MCP server.
fn mcp_config(config: &ClaudeCliConfig) -> String {
    let (command, args) = config
        .plugin_command
        .split_first()
        .map_or(("", &[][..]), |(command, args)| (command.as_str(), args));
    json!({
        "mcpServers": {
            config.channel_name.as_str(): {"type": "stdio", "command": command, "args": args}
        }
    })
    .to_string()
}

/// `--settings`: the `Stop` and `StopFailure` hooks that tell the bridge when Claude Code has finished a
/// prompt, or failed it.
fn settings(config: &ClaudeCliConfig) -> String {
    let hook = json!([{"hooks": [{"type": "command", "command": shell_words(&config.stop_hook_command)}]}]);
    json!({"hooks": {"Stop": hook, "StopFailure": hook}}).to_string()
}

/// Joins words into a POSIX shell command line, quoting where needed (hook commands run through a shell).
pub(crate) fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_./:=@%+-,".contains(&b));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_where_the_shell_needs_it() {
        let words = ["/opt/bridge", "hook", "it's here", ""].map(String::from);
        assert_eq!(shell_words(&words), r"/opt/bridge hook 'it'\''s here' ''");
    }
}
