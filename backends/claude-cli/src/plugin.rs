//! The channel plugin, as a library function: the MCP server Claude Code starts in every channel-mode
//! session ([`ClaudeCliConfig::plugin_command`](crate::ClaudeCliConfig::plugin_command), by default
//! `<bridge> channel`). A binary that embeds the backend runs [`run`] when Claude Code starts it that way.
//!
//! # Example
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     if std::env::args().nth(1).as_deref() == Some("channel") {
//!         // Logs, if wanted, go to standard error: standard output is the MCP stream.
//!         return synthesis_backend_claude_cli::plugin::run();
//!     }
//!     // … the bridge itself, with `ClaudeCliConfig::new(<this binary>)` …
//!     ExitCode::SUCCESS
//! }
//! ```

use std::process::ExitCode;

pub use synthesis_plugin_claude_channel::{ChannelConfig, ChannelError, serve_stdio};

/// Serves the channel plugin on standard input and output until Claude Code closes them, reaching the
/// bridge through the variables the backend gave the process. Starts a runtime of its own; errors go to
/// standard error.
pub fn run() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("channel plugin: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async { serve_stdio(ChannelConfig::from_env()?).await });
    // A read of standard input may still be parked on a blocking thread; do not wait for it.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("channel plugin: {error}");
            ExitCode::FAILURE
        }
    }
}
