//! The `Stop` hook: runs inside Claude Code's environment when it has finished a prompt, and tells the
//! bridge which message that was and what Claude said last. The same command is the `StopFailure` hook,
//! which Claude Code runs instead of `Stop` when a request to the model failed (after its own retries):
//! the bridge then ends the turn with that error rather than waiting for an answer that will not come.
//!
//! The `bridge hook stop` command is this function. Claude Code gives it JSON on standard input
//! (`prompt_id`, `transcript_path`, `last_assistant_message`, …) and the process environment it gave the
//! channel plugin (`SYNTHESIS_WS_URL`, `SYNTHESIS_OPENCLAW_SESSION`, `SYNTHESIS_BRIDGE_TOKEN`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use synthesis_bridge::transport::TurnEnd;
use synthesis_transport_ws::client::{ReportError, report_turn_end};
use synthesis_transport_ws::protocol::{ENV_SESSION, ENV_TOKEN, ENV_WS_URL};

use crate::transcript;

/// How often, and how far apart, the transcript is read for the prompt's record, which Claude Code may
/// write a moment after running the hook.
const TRANSCRIPT_ATTEMPTS: u32 = 10;
const TRANSCRIPT_RETRY: Duration = Duration::from_millis(30);

/// The hook event that reports a prompt ended by an API error.
const STOP_FAILURE: &str = "StopFailure";

/// The fields of Claude Code's `Stop` (or `StopFailure`) hook input that the bridge uses.
#[derive(Debug, Deserialize)]
struct StopInput {
    #[serde(default)]
    hook_event_name: Option<String>,
    /// `StopFailure` only: the error's kind (`rate_limit`, `server_error`, `unknown`, …).
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    prompt_id: Option<String>,
    #[serde(default)]
    transcript_path: Option<PathBuf>,
    #[serde(default)]
    last_assistant_message: Option<String>,
}

/// What the hook did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopHookOutcome {
    /// The bridge heard that the message (when it could be told which) is finished.
    Reported {
        /// The channel message the prompt was, if the transcript said.
        message_id: Option<String>,
    },
    /// The process was not started by a bridge (the variables are missing): nothing to tell.
    NotBridged,
}

/// Why the hook could not tell the bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopHookError {
    /// Standard input was not the hook JSON Claude Code sends.
    #[error("the Stop hook input is not valid JSON: {0}")]
    Input(#[from] serde_json::Error),
    /// The bridge could not be told.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Reports the end of a prompt to the bridge, given the hook's standard input.
pub async fn run_stop_hook(input: &[u8]) -> Result<StopHookOutcome, StopHookError> {
    let input: StopInput = serde_json::from_slice(input)?;
    let (Some(url), Some(session), Some(token)) = (
        std::env::var(ENV_WS_URL).ok(),
        std::env::var(ENV_SESSION).ok(),
        std::env::var(ENV_TOKEN).ok(),
    ) else {
        return Ok(StopHookOutcome::NotBridged);
    };
    let message_id = match (&input.prompt_id, &input.transcript_path) {
        (Some(prompt_id), Some(path)) => find_message_id(path, prompt_id).await,
        _ => None,
    };
    let last_message = input.last_assistant_message;
    let end = if input.hook_event_name.as_deref() == Some(STOP_FAILURE) {
        // Claude Code puts the error's text ("API Error: 400 …") in the last message.
        let kind = input.error.as_deref().unwrap_or("unknown");
        let error =
            last_message.unwrap_or_else(|| format!("the request to the model failed ({kind})"));
        TurnEnd::new(message_id.clone(), None).failed(error)
    } else {
        TurnEnd::new(message_id.clone(), last_message)
    };
    report_turn_end(&url, &session, &token, end).await?;
    Ok(StopHookOutcome::Reported { message_id })
}

async fn find_message_id(transcript_path: &PathBuf, prompt_id: &str) -> Option<String> {
    for attempt in 0..TRANSCRIPT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(TRANSCRIPT_RETRY).await;
        }
        if let Ok(text) = tokio::fs::read_to_string(transcript_path).await
            && let Some(id) = transcript::message_id_of_prompt(&text, prompt_id)
        {
            return Some(id);
        }
    }
    None
}
