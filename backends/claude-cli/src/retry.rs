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

/// What Claude is told when the client asks again for an answer to `original`.
fn continuation_note(original: &str) -> String {
    format!(
        "The person's connection broke before your answer to message {original} (above) reached them, and \
         they asked again. Do not start over: carry on from where you stopped, without redoing work that \
         is already done, and send your whole answer to that message with the reply tool."
    )
}

/// The message for a turn of `text`: a new one, or, when `text` retries `unanswered` within `window` and
/// the conversation holds that message (`in_conversation`: Claude Code may have died before writing it),
/// a note that continues it. Also returns the message a failure of this turn leaves unanswered: the
/// original one when this is a continuation.
pub(crate) fn message_for(
    chat_id: &str,
    text: String,
    unanswered: Option<&Unanswered>,
    window: Option<Duration>,
    in_conversation: impl FnOnce(&Unanswered) -> bool,
) -> (InboundMessage, Option<Unanswered>) {
    let retried = unanswered
        .filter(|unanswered| {
            retries(&text, &unanswered.text)
                && window.is_some_and(|window| unanswered.at.elapsed() <= window)
        })
        .filter(|unanswered| in_conversation(unanswered));
    match retried {
        Some(original) => {
            let mut message = InboundMessage::new(chat_id, continuation_note(&original.message_id));
            message.meta.retry_of = Some(original.message_id.clone());
            (message, Some(original.clone()))
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
    async fn the_same_text_within_the_window_continues_the_unanswered_message() {
        let window = Some(Duration::from_secs(180));
        let earlier = unanswered("run the tests");
        let held = |_: &Unanswered| true;
        let (message, original) =
            message_for("a", "run the tests".into(), Some(&earlier), window, held);
        assert_eq!(message.meta.retry_of.as_deref(), Some("m-1"));
        assert!(message.content.contains("m-1"), "{}", message.content);
        assert_eq!(original.unwrap().message_id, "m-1");

        let (message, original) =
            message_for("a", "something else".into(), Some(&earlier), window, held);
        assert_eq!(
            (message.content.as_str(), message.meta.retry_of),
            ("something else", None)
        );
        assert!(original.is_none());

        let (message, _) = message_for("a", "run the tests".into(), Some(&earlier), None, held);
        assert_eq!(
            message.meta.retry_of, None,
            "no window: never a continuation"
        );

        // Claude Code died before it wrote the message: asking again puts it there once.
        let lost = |_: &Unanswered| false;
        let (message, original) =
            message_for("a", "run the tests".into(), Some(&earlier), window, lost);
        assert_eq!(
            (message.content.as_str(), message.meta.retry_of),
            ("run the tests", None)
        );
        assert!(original.is_none());

        tokio::time::advance(Duration::from_secs(181)).await;
        let (message, _) = message_for("a", "run the tests".into(), Some(&earlier), window, held);
        assert_eq!(message.meta.retry_of, None, "too late to be a retry");
    }
}
