//! Which processes the bridge expects, their secrets, and the link each one's connections feed.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synthesis_bridge::SessionKey;
use synthesis_bridge::transport::{
    ChannelEvent, ChannelLink, ChannelTicket, LinkPeer, ToPlugin, TransportError, TurnEnd,
};
use tokio::sync::{OwnedMutexGuard, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::hooks::Prompts;

/// How many messages or events wait in each direction of a link.
const LINK_CAPACITY: usize = 64;

/// The registrations of one transport.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<SessionKey, Registration>>,
}

#[derive(Debug)]
struct Registration {
    token: String,
    /// The backend's half, until [`Registry::accept`] hands it out.
    link: Option<ChannelLink>,
    shared: Arc<Session>,
}

/// What the connections of one registration share.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) key: SessionKey,
    pub(crate) events: mpsc::Sender<ChannelEvent>,
    /// Held by the connection that currently serves the session.
    messages: Arc<tokio::sync::Mutex<mpsc::Receiver<ToPlugin>>>,
    connected: watch::Sender<bool>,
    /// Whether a plugin has ever said hello; `accept` waits for it.
    greeted: watch::Sender<bool>,
    /// The connection that currently serves the session.
    current: Mutex<Option<Current>>,
    /// Numbers connections, so a replaced one can tell it is no longer current.
    attachments: AtomicU64,
    /// Fired when the registration is revoked or replaced.
    pub(crate) ended: CancellationToken,
    /// What the agent's hooks have reported.
    prompts: Mutex<Prompts>,
}

/// How to reach the connection that serves a session.
#[derive(Debug)]
struct Current {
    /// Its number.
    id: u64,
    /// Cancels it when a newer one takes over.
    replaced: CancellationToken,
    /// Hands it the `Stop` reports, which it delivers in order with its plugin's replies.
    turn_ends: mpsc::UnboundedSender<TurnEnd>,
}

/// A connection's claim on its session: while it lives, this connection is the one that serves it.
#[derive(Debug)]
pub(crate) struct Attachment {
    id: u64,
    pub(crate) session: Arc<Session>,
    pub(crate) messages: OwnedMutexGuard<mpsc::Receiver<ToPlugin>>,
    /// Fired when a newer connection replaces this one.
    pub(crate) replaced: CancellationToken,
    /// The session's `Stop` reports, while this connection serves it.
    pub(crate) turn_ends: mpsc::UnboundedReceiver<TurnEnd>,
}

impl Registry {
    pub(crate) fn register(&self, key: &SessionKey) -> ChannelTicket {
        let ticket = ChannelTicket::generate(key.clone());
        let (link, peer) = ChannelLink::pair(LINK_CAPACITY);
        let LinkPeer {
            messages,
            events,
            connected,
            ..
        } = peer;
        connected.send_replace(false);
        let registration = Registration {
            token: ticket.token.clone(),
            link: Some(link),
            shared: Arc::new(Session {
                key: key.clone(),
                events,
                messages: Arc::new(tokio::sync::Mutex::new(messages)),
                connected,
                greeted: watch::Sender::new(false),
                current: Mutex::new(None),
                attachments: AtomicU64::new(0),
                ended: CancellationToken::new(),
                prompts: Mutex::default(),
            }),
        };
        if let Some(old) = self.lock().insert(key.clone(), registration) {
            old.shared.ended.cancel();
        }
        ticket
    }

    pub(crate) fn revoke(&self, ticket: &ChannelTicket) {
        let mut sessions = self.lock();
        if let Entry::Occupied(entry) = sessions.entry(ticket.session.clone())
            && entry.get().token == ticket.token
        {
            entry.remove().shared.ended.cancel();
        }
    }

    /// Waits for the plugin holding `ticket` to say hello, then hands out the backend's link.
    pub(crate) async fn accept(
        &self,
        ticket: &ChannelTicket,
        timeout: Duration,
    ) -> Result<ChannelLink, TransportError> {
        let not_registered = || TransportError::NotRegistered(ticket.session.clone());
        let (mut greeted, ended) = {
            let sessions = self.lock();
            let registration = sessions
                .get(&ticket.session)
                .filter(|r| r.token == ticket.token)
                .ok_or_else(not_registered)?;
            (
                registration.shared.greeted.subscribe(),
                registration.shared.ended.clone(),
            )
        };
        tokio::select! {
            greeted = tokio::time::timeout(timeout, greeted.wait_for(|greeted| *greeted)) => match greeted {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(TransportError::Closed),
                Err(_) => {
                    return Err(TransportError::ConnectTimeout {
                        session: ticket.session.clone(),
                        waited: timeout,
                    })
                }
            },
            () = ended.cancelled() => return Err(not_registered()),
        }
        self.lock()
            .get_mut(&ticket.session)
            .filter(|r| r.token == ticket.token)
            .and_then(|r| r.link.take())
            .ok_or_else(not_registered)
    }

    /// The session `token` was issued for, if the secret is right.
    pub(crate) fn authenticate(&self, session: &str, token: &str) -> Option<Arc<Session>> {
        let key = SessionKey::new(session).ok()?;
        let sessions = self.lock();
        let registration = sessions.get(&key)?;
        constant_time_eq(registration.token.as_bytes(), token.as_bytes())
            .then(|| registration.shared.clone())
    }

    /// Ends every registration (the transport is shutting down).
    pub(crate) fn clear(&self) {
        for (_, registration) in self.lock().drain() {
            registration.shared.ended.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Registration>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Session {
    /// Makes the calling connection the one that serves this session, replacing any other.
    pub(crate) async fn attach(self: &Arc<Self>) -> Attachment {
        let id = self.attachments.fetch_add(1, Ordering::Relaxed);
        let replaced = CancellationToken::new();
        let (turn_end_tx, turn_ends) = mpsc::unbounded_channel();
        let current = Current {
            id,
            replaced: replaced.clone(),
            turn_ends: turn_end_tx,
        };
        if let Some(previous) = self.lock_current().replace(current) {
            previous.replaced.cancel();
        }
        // The replaced connection lets go of the queue as it closes.
        let messages = self.messages.clone().lock_owned().await;
        Attachment {
            id,
            session: self.clone(),
            messages,
            replaced,
            turn_ends,
        }
    }

    /// Passes on the agent's report that it finished a message. The connection serving the session
    /// delivers it behind every reply its plugin sent first (see `turn_end_order`); with none, nothing
    /// can overtake it and it goes straight to the backend.
    pub(crate) async fn report_turn_end(&self, end: TurnEnd) {
        let end = match self.lock_current().as_ref() {
            Some(current) => match current.turn_ends.send(end) {
                Ok(()) => return,
                // That connection is closing and no longer takes reports.
                Err(mpsc::error::SendError(end)) => end,
            },
            None => end,
        };
        let _ = self.events.send(ChannelEvent::TurnEnded(end)).await;
    }

    pub(crate) fn prompts(&self) -> std::sync::MutexGuard<'_, Prompts> {
        self.prompts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Attachment {
    /// Marks the session connected, after the `hello_ack` went out. Reports a reconnection when a plugin
    /// had been connected before and then lost.
    pub(crate) async fn mark_connected(&self) {
        let was_greeted = self.session.greeted.send_replace(true);
        let was_connected = self.session.connected.send_replace(true);
        if was_greeted && !was_connected {
            let _ = self.session.events.send(ChannelEvent::Reconnected).await;
        }
    }

    /// Ends this connection's service. Unless a newer connection took over, the session is now
    /// disconnected and the backend hears why. Returns the `Stop` reports that came for this
    /// connection after it stopped reading them, for the caller to deliver.
    pub(crate) async fn detach(mut self, reason: Option<String>) -> Vec<TurnEnd> {
        let still_current = {
            let mut current = self.session.lock_current();
            let mine = current
                .as_ref()
                .is_some_and(|current| current.id == self.id);
            if mine {
                *current = None;
            }
            mine
        };
        // No report can come for this connection any more: it is no longer the current one.
        let mut unread = Vec::new();
        while let Ok(end) = self.turn_ends.try_recv() {
            unread.push(end);
        }
        if still_current {
            self.session.connected.send_replace(false);
            if let Some(reason) = reason {
                let _ = self
                    .session
                    .events
                    .send(ChannelEvent::Disconnected { reason })
                    .await;
            }
        }
        unread
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
