//! Claude Code's channel protocol, as both of its ends speak it: the bridge's side (the WebSocket transport
//! and the Claude backend) and the plugin's side (the channel MCP server inside each `claude`).
//!
//! - [the frames](frames) between the bridge and the plugin, and the variables that tell a process where
//!   the bridge is and who it is ([`ENV_WS_URL`], [`ENV_SESSION`], [`ENV_TOKEN`]);
//! - [the hook reports](hooks) Claude Code posts over HTTP: which message started a prompt, when the
//!   prompt is over.
//!
//! `docs/protocol.md` describes it for plugin authors; `docs/claude-cli-measurements.md` holds the facts
//! about Claude Code it follows.
//!
//! # Example
//!
//! ```
//! use synthesis_claude_channel_protocol::PluginFrame;
//!
//! let hello: PluginFrame =
//!     serde_json::from_str(r#"{"type":"hello","openclaw_session":"agent::a","token":"t"}"#).unwrap();
//! assert!(matches!(hello, PluginFrame::Hello { .. }));
//! ```
#![forbid(unsafe_code)]

pub mod frames;
pub mod hooks;

pub use frames::{
    BridgeFrame, ENV_CLIENT_TOOLS, ENV_SESSION, ENV_TOKEN, ENV_WS_URL, HOOKS_PATH, PATH,
    PluginFrame, close,
};
