//! The command line and environment of one `claude` process in the channel mode.

use std::path::Path;

use serde_json::json;
use synthesis_bridge::spawner::{ProcessSpec, Stdio};
use synthesis_bridge::{BackendError, ClientTool, SessionKey};
use synthesis_claude_channel_protocol::{ENV_CLIENT_TOOLS, ENV_SESSION, ENV_TOKEN, ENV_WS_URL};

use crate::agent::{ClientSetup, Conversation};
use crate::client_tools::tool_json;
use crate::config::ClaudeCliConfig;

/// The variable that names the Claude Code conversation a process continues.
pub(crate) const ENV_CLAUDE_SESSION: &str = "SYNTHESIS_CLAUDE_SESSION";

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
    /// Where the hooks post their reports ([`ChannelTransport::hook_endpoint`]).
    ///
    /// [`ChannelTransport::hook_endpoint`]: synthesis_bridge::transport::ChannelTransport::hook_endpoint
    pub(crate) hooks: &'a str,
    /// The client's instructions, and its tools, which the plugin lists beside `reply`.
    pub(crate) client: &'a ClientSetup,
}

/// The hooks that report to the bridge: `UserPromptSubmit` says a pushed message started a prompt (the
/// proof of delivery), `Stop` that the prompt is over, `StopFailure` that its model request failed.
const REPORTED_HOOKS: [&str; 3] = ["UserPromptSubmit", "Stop", "StopFailure"];

/// How long Claude Code waits for the bridge to answer a hook. The bridge answers at once; a bridge that
/// does not has gone, and then the prompt had better go on than hang.
const HOOK_TIMEOUT_SECS: u64 = 10;

pub(crate) fn spec(config: &ClaudeCliConfig, launch: &Launch<'_>) -> ProcessSpec {
    let channel = format!("server:{}", config.channel_name);
    let id = launch.conversation.id();
    let mut spec = ProcessSpec::new(config.program.clone(), launch.workspace)
        .arg("--mcp-config")
        .arg(mcp_config(config))
        // Only the bridge's channel: a workspace's own `.mcp.json` would stop the process at a dialog.
        .arg("--strict-mcp-config")
        // Never also `--channels`: with both, Claude Code skips the server and drops every message.
        .arg("--dangerously-load-development-channels")
        .arg(channel)
        .arg("--settings")
        .arg(settings(launch))
        .args(launch.conversation.flag())
        .args(launch.client.system_prompt_args())
        .arg("--permission-mode")
        .arg(config.permission_mode.as_str())
        // Last of ours, as it takes every value up to the next flag.
        .arg("--allowedTools")
        .arg(config.reply_tool())
        .args(client_tools_allowed(config, launch.client))
        .args(&config.allowed_tools)
        .args(&config.extra_args)
        // The key clients use to reach the bridge is not the agent's business, nor its tools'.
        .env_remove("SYNTHESIS_API_KEY")
        .stdio(Stdio::terminal());
    for (key, value) in &config.env {
        spec = spec.env(key, value);
    }
    if !launch.client.tools.is_empty() {
        spec = spec.env(ENV_CLIENT_TOOLS, client_tools(&launch.client.tools));
    }
    spec.env(ENV_WS_URL, launch.endpoint)
        .env(ENV_SESSION, launch.session.as_str())
        .env(ENV_CLAUDE_SESSION, id.to_string())
        .env(ENV_TOKEN, launch.token)
        // Claude Code's hook client honours HTTP_PROXY even for loopback: keep the reports direct.
        .env("NO_PROXY", no_proxy("NO_PROXY"))
        .env("no_proxy", no_proxy("no_proxy"))
}

/// The most one variable of a process's environment can hold on Linux (`MAX_ARG_STRLEN`, its name and `=`
/// included).
const ENV_LIMIT: usize = 128 * 1024;

/// Refuses client tools that `SYNTHESIS_CLIENT_TOOLS` cannot carry: the process would not start.
pub(crate) fn check_client_tools(tools: &[ClientTool]) -> Result<(), BackendError> {
    let size = ENV_CLIENT_TOOLS.len() + 1 + client_tools(tools).len();
    if size < ENV_LIMIT {
        return Ok(());
    }
    Err(BackendError::Rejected(format!(
        "the request's tools take {} KiB, more than the channel mode can hand its plugin ({} KiB); the stream-json mode (--claude-mode stream-json) has no such limit",
        size / 1024,
        ENV_LIMIT / 1024
    )))
}

/// `SYNTHESIS_CLIENT_TOOLS`: the MCP definitions of the client's tools, for the plugin to list.
fn client_tools(tools: &[ClientTool]) -> String {
    let tools: Vec<serde_json::Value> = tools.iter().map(tool_json).collect();
    serde_json::Value::from(tools).to_string()
}

/// The `--allowedTools` entries that let the model call the client's tools without asking: the client
/// offered them, and runs them itself.
fn client_tools_allowed(config: &ClaudeCliConfig, client: &ClientSetup) -> Vec<String> {
    client
        .tools
        .iter()
        .map(|tool| format!("mcp__{}__{}", config.channel_name, tool.name))
        .collect()
}

/// `name`'s value in the bridge's environment, with the loopback names added.
fn no_proxy(name: &str) -> String {
    let loopback = "127.0.0.1,localhost,::1";
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => format!("{value},{loopback}"),
        _ => loopback.to_owned(),
    }
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

/// `--settings`: the hooks that report to the bridge, as `http` hooks (no process per report). The
/// secret is not on the command line, where every local user could read it: Claude Code puts it into
/// the header from the process's environment.
fn settings(launch: &Launch<'_>) -> String {
    let session: String =
        form_urlencoded::byte_serialize(launch.session.as_str().as_bytes()).collect();
    let hook = json!([{"hooks": [{
        "type": "http",
        "url": format!("{}?session={session}", launch.hooks),
        "headers": {"Authorization": format!("Bearer ${{{ENV_TOKEN}}}")},
        "allowedEnvVars": [ENV_TOKEN],
        "timeout": HOOK_TIMEOUT_SECS,
    }]}]);
    let hooks: serde_json::Map<String, serde_json::Value> = REPORTED_HOOKS
        .iter()
        .map(|event| ((*event).to_owned(), hook.clone()))
        .collect();
    json!({"hooks": hooks}).to_string()
}
