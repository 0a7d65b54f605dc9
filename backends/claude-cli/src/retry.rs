//! A client's retry must not put a prompt into Claude's conversation twice.
//!
//! OpenClaw retries a failed model call with the same messages (up to 8 times over about 90 s). When
//! the failed turn's message had already started a prompt (Claude Code confirmed it) and got no complete
//! answer (claude died, the turn was cut or failed), the conversation holds that message, and perhaps
//! work Claude did on it. Pushing the same text again would ask twice, and could run that work twice.
//! So a turn that retries it, for the same session, within the retry window, continues the earlier
//! message instead: Claude gets a short note that names it (`retry_of`) and asks for the whole answer.
//!
//! A retry is the same text, or OpenClaw's form of it: OpenClaw 2026.9.6 does not resend the message as
//! it was but wraps it in its own continuation prompt (measured):
//! `[Queued user message from a previous active turn; preserved as context only. …]\n<the message>\n\n
//! Continue the current task from the existing transcript, preserving completed work. …`, each turn with
//! its `[Sun 2026-12-06 04:47 UTC] ` timestamp in front. The note says what that prompt says.

use std::time::Duration;

use synthesis_bridge::openai::extract::without_openclaw_timestamp;
use synthesis_bridge::transport::InboundMessage;
use tokio::time::Instant;

/// A message that started a prompt and got no complete answer.
#[derive(Debug, Clone)]
pub(crate) struct Unanswered {
    /// The text the client sent.
    pub(crate) text: String,
    /// The message that carried it to Claude.
    pub(crate) message_id: String,
    /// When its turn ended.
    pub(crate) at: Instant,
}

/// How OpenClaw's continuation prompt begins.
const OPENCLAW_QUEUED: &str = "[Queued user message from a previous active turn";

/// Whether `text` asks again for `earlier`: the same text, or OpenClaw's continuation prompt around it.
fn retries(text: &str, earlier: &str) -> bool {
    let (text, earlier) = (
        without_openclaw_timestamp(text),
        without_openclaw_timestamp(earlier),
    );
    text == earlier || (text.starts_with(OPENCLAW_QUEUED) && text.contains(earlier))
}

/// How a note names the message it is about: in the channel mode by its id, with the reply tool to
/// answer it; in the stream-json mode, where a message is plain text, as the last one above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wording {
    Channel,
    StreamJson,
}

/// What Claude is told when the client asks again for an answer to `original`.
fn continuation_note(original: &Unanswered, wording: Wording) -> String {
    match wording {
        Wording::Channel => format!(
            "The person's connection broke before your answer to message {} (above) reached them, and \
             they asked again. Do not start over: carry on from where you stopped, without redoing work \
             that is already done, and send your whole answer to that message with the reply tool.",
            original.message_id
        ),
        Wording::StreamJson => "The person's connection broke before your answer to their last message \
             (above) reached them, and they asked again. Do not start over: carry on from where you \
             stopped, without redoing work that is already done, and give your whole answer to that \
             message."
            .to_owned(),
    }
}

/// The unanswered message that a turn of `text` retries, if it does within `window`.
pub(crate) fn retried<'a>(
    text: &str,
    unanswered: Option<&'a Unanswered>,
    window: Option<Duration>,
) -> Option<&'a Unanswered> {
    unanswered.filter(|unanswered| {
        retries(text, &unanswered.text)
            && window.is_some_and(|window| unanswered.at.elapsed() <= window)
    })
}

/// The message for a turn of `text`: a note that carries on with `continuing` (a retried message that
/// Claude's conversation holds), or `text` itself. Also returns what a failure of this turn leaves
/// unanswered when that is not this turn's own message: the one it carries on with.
pub(crate) fn message_for(
    chat_id: &str,
    text: String,
    continuing: Option<Unanswered>,
    wording: Wording,
) -> (InboundMessage, Option<Unanswered>) {
    match continuing {
        Some(original) => {
            let mut message = InboundMessage::new(chat_id, continuation_note(&original, wording));
            message.meta.retry_of = Some(original.message_id.clone());
            (message, Some(original))
        }
        None => (InboundMessage::new(chat_id, text), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unanswered(text: &str) -> Unanswered {
        Unanswered {
            text: text.to_owned(),
            message_id: "m-1".to_owned(),
            at: Instant::now(),
        }
    }

    #[test]
    fn openclaws_continuation_prompt_around_the_message_is_a_retry() {
        // As OpenClaw 2026.9.6 sent it after a 502.
        let first = "[Sun 2026-12-06 04:47 UTC] crash";
        let retry = "[Sun 2026-12-06 04:47 UTC] [Queued user message from a previous active turn; preserved as context only. Continue with the active prompt below.]\ncrash\n\nContinue the current task from the existing transcript, preserving completed work. If an action was interrupted, inspect its state before deciding whether to retry it. Do not restart the task or repeat completed actions.";
        assert!(retries(retry, first));
        assert!(retries(first, first));
        assert!(!retries("[Sun 2026-12-06 04:48 UTC] crash again", first));
        assert!(
            !retries("yes, and crash", "crash"),
            "quoting is not retrying"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_text_within_the_window_retries_the_unanswered_message() {
        let window = Some(Duration::from_secs(180));
        let earlier = unanswered("run the tests");
        let found = retried("run the tests", Some(&earlier), window);
        assert_eq!(found.map(|u| u.message_id.as_str()), Some("m-1"));
        assert!(retried("something else", Some(&earlier), window).is_none());
        assert!(
            retried("run the tests", Some(&earlier), None).is_none(),
            "no window"
        );
        assert!(retried("run the tests", None, window).is_none());
        tokio::time::advance(Duration::from_secs(181)).await;
        assert!(
            retried("run the tests", Some(&earlier), window).is_none(),
            "too late"
        );
    }

    #[test]
    fn a_retry_carries_on_with_the_message_the_conversation_holds() {
        let earlier = unanswered("run the tests");
        let (message, original) =
            message_for("a", "run the tests".into(), Some(earlier), Wording::Channel);
        assert_eq!(message.meta.retry_of.as_deref(), Some("m-1"));
        assert!(message.content.contains("m-1"), "{}", message.content);
        assert_eq!(original.unwrap().message_id, "m-1");
        // Not held (claude died before it wrote it down): the text itself, once.
        let (message, original) =
            message_for("a", "run the tests".into(), None, Wording::StreamJson);
        assert_eq!(
            (message.content.as_str(), message.meta.retry_of),
            ("run the tests", None)
        );
        assert!(original.is_none());
    }
}
