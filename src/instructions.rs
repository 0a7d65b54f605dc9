//! The client's instructions (its `system` and `developer` messages, [`TurnMeta::system_prompt`]) for an
//! agent whose conversation cannot take new ones as a system prompt: Claude Code keeps the system prompt a
//! conversation began with, even resumed in a new process, and ACP has no system prompt at all. Such an
//! agent is told of instructions with a message, once: [`KnownInstructions`] remembers what its
//! conversation has, and [`with_instructions`] puts a note before the user's text.
//!
//! Withdrawn instructions are told only to a conversation known to have had some: one resumed after a
//! restart, whose instructions nobody knows, keeps whatever it was told before.
//!
//! [`TurnMeta::system_prompt`]: crate::backend::TurnMeta::system_prompt
//!
//! # Example
//!
//! ```
//! use synthesis_bridge::instructions::{KnownInstructions, fingerprint, with_instructions};
//!
//! let known = KnownInstructions::default();
//! known.started_without();
//! let current = Some("Answer in French.");
//! let text = known.note_for(current, "hello").expect("the agent must be told");
//! assert!(text.starts_with("[The app you are working in gives you these instructions"));
//! assert!(text.ends_with("hello"));
//! assert_eq!(text, with_instructions(current, "hello"));
//! // Once the message reached the agent:
//! known.remember(fingerprint(current));
//! assert_eq!(known.note_for(current, "hello again"), None);
//! ```

use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// What a conversation has of the client's instructions, by fingerprint; unknown after a restart.
#[derive(Debug, Default)]
pub struct KnownInstructions {
    had: Mutex<Option<u64>>,
}

impl KnownInstructions {
    /// A new conversation began with `instructions` (given at its start, as a system prompt).
    pub fn started_with(&self, instructions: Option<&str>) {
        self.remember(fingerprint(instructions));
    }

    /// A new conversation began with no instructions.
    pub fn started_without(&self) {
        self.started_with(None);
    }

    /// Whether the agent must be told of the `current` instructions: when they differ from those its
    /// conversation has, or, when nobody knows what it has (it was resumed after an idle stop or a restart
    /// of the bridge), whenever there are some.
    pub fn differ(&self, current: Option<&str>) -> bool {
        match *self.lock() {
            Some(had) => had != fingerprint(current),
            None => current.is_some(),
        }
    }

    /// `text` with a note of the `current` instructions first, if the conversation must be told of them
    /// ([`differ`](Self::differ)). Once the message reached the agent, [`remember`](Self::remember) them.
    pub fn note_for(&self, current: Option<&str>, text: &str) -> Option<String> {
        self.differ(current)
            .then(|| with_instructions(current, text))
    }

    /// The conversation got the instructions of `fingerprint` (a message told it of them, or carried no
    /// change).
    pub fn remember(&self, fingerprint: u64) {
        *self.lock() = Some(fingerprint);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.had.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A short stand-in for `instructions`, to tell a change by (instructions run to tens of kilobytes).
pub fn fingerprint(instructions: Option<&str>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    instructions.hash(&mut hasher);
    hasher.finish()
}

/// `text` with a note of the client's `instructions` first (`None`: the client withdrew them).
pub fn with_instructions(instructions: Option<&str>, text: &str) -> String {
    match instructions {
        Some(instructions) => format!(
            "[The app you are working in gives you these instructions, in place of any it gave before:]\n{instructions}\n[End of the instructions. The message follows.]\n\n{text}"
        ),
        None => format!(
            "[The app you are working in has withdrawn its earlier instructions. The message follows.]\n\n{text}"
        ),
    }
}
