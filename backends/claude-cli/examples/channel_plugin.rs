//! `channel_plugin`: the channel plugin on its own ([`plugin::run`]), for the backend's tests, which start
//! it as their `plugin_command` the way Claude Code starts `bridge channel`. Logs go to standard error,
//! filtered by `SYNTHESIS_LOG`.
//!
//! [`plugin::run`]: synthesis_backend_claude_cli::plugin::run

use std::process::ExitCode;

fn main() -> ExitCode {
    let filter = std::env::var("SYNTHESIS_LOG").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    synthesis_backend_claude_cli::plugin::run()
}
