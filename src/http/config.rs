//! [`BridgeConfig`]: what the HTTP front accepts and answers.

use std::fmt;
use std::sync::Arc;

use http::request::Parts;

use super::WorkspacePolicy;
use crate::openai::ChatRequest;
use crate::session::SessionKey;

/// Finds a chat request's session the library user's own way; see [`BridgeConfig::session_key`].
pub type SessionKeyRule =
    Arc<dyn Fn(&Parts, &ChatRequest<'_>) -> Option<SessionKey> + Send + Sync + 'static>;

/// The default request body limit: OpenClaw resends 50–100 KB of history per turn, so leave ample room.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// How the HTTP front behaves.
#[derive(Clone)]
#[non_exhaustive]
pub struct BridgeConfig {
    /// Model ids listed by `/v1/models`; the first is reported when a request names none.
    pub models: Vec<String>,
    /// When set, requests to `/v1/*` must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Where agents may work.
    pub workspaces: WorkspacePolicy,
    /// The session for requests that name none. Without it they are one-off turns, or refused (400) with
    /// `require_session`.
    pub fallback_session: Option<SessionKey>,
    /// Refuse requests that name no session (and have no fallback) rather than answer them as one-off
    /// turns.
    pub require_session: bool,
    /// A rule of your own that finds a request's session before the built-in ones.
    pub session_key: Option<SessionKeyRule>,
    /// Web origins whose pages may use the bridge (`*`: any). A request with any other `Origin` is refused.
    pub allowed_origins: Vec<String>,
    /// The host names requests may name in `Host`, besides the loopback names; `None`: any.
    pub allowed_hosts: Option<Vec<String>>,
}

impl BridgeConfig {
    /// Model `claude`, no API key, the default body limit, no fallback session.
    pub fn new(workspaces: WorkspacePolicy) -> Self {
        Self {
            models: vec!["claude".to_owned()],
            api_key: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            workspaces,
            fallback_session: None,
            require_session: false,
            session_key: None,
            allowed_origins: Vec::new(),
            allowed_hosts: None,
        }
    }

    /// Lets web pages of `origin` (`https://chat.example`, or `*` for any) use the bridge. Without it a
    /// request that carries an `Origin`, which only browsers send, is refused (403): otherwise any page its
    /// user opens could send the bridge prompts.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins.push(origin.into());
        self
    }

    /// Answers only requests whose `Host` names one of `hosts` or a loopback name (`localhost`,
    /// `127.0.0.1`, `[::1]`), refusing others with 421: a page that rebinds its own name to the bridge's
    /// address cannot read the answers. `None` answers any `Host`.
    pub fn allowed_hosts(mut self, hosts: Option<Vec<String>>) -> Self {
        self.allowed_hosts = hosts.map(|mut hosts| {
            hosts.extend(super::browsers::LOOPBACK_HOSTS.map(str::to_owned));
            hosts
        });
        self
    }

    /// Sets the model ids (at least one; an empty list keeps the current ones).
    pub fn models(mut self, models: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let models: Vec<String> = models.into_iter().map(Into::into).collect();
        if !models.is_empty() {
            self.models = models;
        }
        self
    }

    /// Requires this bearer key.
    pub fn api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|key| !key.is_empty());
        self
    }

    /// Sets the body limit.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Refuses requests that name no session (400 `no_session_key`) instead of answering them as one-off
    /// turns (a fresh conversation that is not kept).
    pub fn require_session(mut self, require: bool) -> Self {
        self.require_session = require;
        self
    }

    /// Sets the fallback session.
    pub fn fallback_session(mut self, key: Option<SessionKey>) -> Self {
        self.fallback_session = key;
        self
    }

    /// Finds each chat request's session with `rule` first: a header of your own, a tenant in the body's
    /// metadata, a token's subject. A request it returns `None` for goes to the built-in rules (OpenClaw's
    /// headers, `x-session-affinity`, OpenClaw's runtime line, the `user` field, the fallback session).
    ///
    /// ```
    /// use synthesis_bridge::SessionKey;
    /// use synthesis_bridge::http::{BridgeConfig, WorkspacePolicy};
    ///
    /// let config = BridgeConfig::new(WorkspacePolicy::single(std::env::temp_dir()).unwrap())
    ///     .session_key(|parts, _request| {
    ///         let tenant = parts.headers.get("x-tenant")?.to_str().ok()?;
    ///         SessionKey::new(format!("tenant::{tenant}")).ok()
    ///     });
    /// # let _ = config;
    /// ```
    pub fn session_key<F>(mut self, rule: F) -> Self
    where
        F: Fn(&Parts, &ChatRequest<'_>) -> Option<SessionKey> + Send + Sync + 'static,
    {
        self.session_key = Some(Arc::new(rule));
        self
    }
}

impl fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("models", &self.models)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("workspaces", &self.workspaces)
            .field("fallback_session", &self.fallback_session)
            .field("require_session", &self.require_session)
            .field("session_key", &self.session_key.as_ref().map(|_| "<rule>"))
            .field("allowed_origins", &self.allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}
