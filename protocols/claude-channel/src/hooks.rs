//! The reports Claude Code's `http` hooks post to the bridge, and how a channel message looks in a prompt
//! (`docs/claude-cli-measurements.md`, sections J and L).

use serde::Deserialize;

/// The fields of Claude Code's hook input that the bridge uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct HookInput {
    /// `UserPromptSubmit`, `Stop`, `StopFailure`, …
    pub hook_event_name: String,
    /// The prompt a report is about: the same in a prompt's `UserPromptSubmit` and its `Stop`.
    #[serde(default)]
    pub prompt_id: Option<String>,
    /// `UserPromptSubmit`: the prompt as Claude will see it.
    #[serde(default)]
    pub prompt: Option<String>,
    /// `Stop`, `StopFailure`: what Claude said last (for `StopFailure`, the API error's text).
    #[serde(default)]
    pub last_assistant_message: Option<String>,
    /// `StopFailure`: the kind of error (`rate_limit`, `server_error`, `unknown`, …).
    #[serde(default)]
    pub error: Option<String>,
}

/// Where the opening tag that carries `message_id` is in `prompt`. Claude Code writes a pushed message as
/// `<channel source="…" chat_id="…" message_id="M" ts="…">`; the content that follows may quote any text.
pub fn channel_tag_position(prompt: &str, message_id: &str) -> Option<usize> {
    let attribute = format!(" message_id=\"{message_id}\"");
    prompt
        .match_indices(&attribute)
        .map(|(at, _)| at)
        .find(|&at| {
            let opening = prompt[..at].rfind("<channel ");
            opening.is_some_and(|open| !prompt[open..at].contains('>'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_report_is_read_with_the_fields_the_bridge_uses() {
        let report = r#"{"session_id":"s","hook_event_name":"Stop","prompt_id":"p1","last_assistant_message":"done","effort":"high"}"#;
        let input: HookInput = serde_json::from_str(report).unwrap();
        assert_eq!(input.hook_event_name, "Stop");
        assert_eq!(input.prompt_id.as_deref(), Some("p1"));
        assert_eq!(input.last_assistant_message.as_deref(), Some("done"));
    }

    #[test]
    fn the_tag_is_found_where_claude_code_wrote_it_not_where_the_content_quotes_it() {
        let quoted = "<channel source=\"s\" chat_id=\"c\" message_id=\"m2\" ts=\"t\">\nsee message_id=\"m1\"\n</channel>";
        assert_eq!(channel_tag_position(quoted, "m1"), None);
        assert!(channel_tag_position(quoted, "m2").is_some());
    }
}
