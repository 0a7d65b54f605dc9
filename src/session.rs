//! Session identity: the key that names a conversation and the per-turn metadata that travels with it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The name of one conversation as the bridge sees it: every turn with the same key goes to the same
/// long-lived agent.
///
/// Keys come from request headers, OpenClaw's runtime line, the body's `user` field or a configured
/// fallback (see [`crate::openai::extract`]). They are short, printable, and never empty, so backends
/// may use them in environment variables and log fields without escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionKey(Arc<str>);

/// Why a string cannot be a [`SessionKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSessionKey {
    /// The key is empty or only white space.
    #[error("a session key cannot be empty")]
    Empty,
    /// The key is longer than [`SessionKey::MAX_LEN`] bytes.
    #[error("a session key is at most {max} bytes, this one has {len}", max = SessionKey::MAX_LEN)]
    TooLong {
        /// The offending key's length in bytes.
        len: usize,
    },
    /// The key contains a control character (a newline, NUL, …).
    #[error("a session key cannot contain control characters")]
    ControlCharacter,
}

impl SessionKey {
    /// The longest key accepted, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validates and wraps `key`, trimming surrounding white space.
    pub fn new(key: impl AsRef<str>) -> Result<Self, InvalidSessionKey> {
        let key = key.as_ref().trim();
        if key.is_empty() {
            return Err(InvalidSessionKey::Empty);
        }
        if key.len() > Self::MAX_LEN {
            return Err(InvalidSessionKey::TooLong { len: key.len() });
        }
        if key.chars().any(char::is_control) {
            return Err(InvalidSessionKey::ControlCharacter);
        }
        Ok(Self(key.into()))
    }

    /// A key of its own for a request that names no session: `one-off::` and a fresh uuid. (Whether a
    /// turn is one-off is [`TurnMeta::one_off`](crate::TurnMeta::one_off), not its key's spelling: a client
    /// may name its session anything.)
    pub fn one_off() -> Self {
        Self(format!("one-off::{}", Uuid::new_v4().simple()).into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SessionKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionKey {
    type Error = InvalidSessionKey;

    fn try_from(key: String) -> Result<Self, Self::Error> {
        Self::new(key)
    }
}

impl From<SessionKey> for String {
    fn from(key: SessionKey) -> Self {
        key.0.to_string()
    }
}

/// Identifies one turn (one chat-completions request) in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TurnId(Uuid);

impl TurnId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for TurnId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TurnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.simple(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_trimmed_and_validated() {
        assert_eq!(
            SessionKey::new("  agent::chat ").unwrap().as_str(),
            "agent::chat"
        );
        assert_eq!(SessionKey::new(" \t"), Err(InvalidSessionKey::Empty));
        assert_eq!(
            SessionKey::new("a\nb"),
            Err(InvalidSessionKey::ControlCharacter)
        );
        let long = "k".repeat(SessionKey::MAX_LEN + 1);
        assert_eq!(
            SessionKey::new(&long),
            Err(InvalidSessionKey::TooLong { len: 257 })
        );
    }

    #[test]
    fn keys_round_trip_through_json_and_reject_bad_ones() {
        let key: SessionKey = serde_json::from_str(r#""agent:main:main""#).unwrap();
        assert_eq!(serde_json::to_string(&key).unwrap(), r#""agent:main:main""#);
        assert!(serde_json::from_str::<SessionKey>(r#""""#).is_err());
    }
}
