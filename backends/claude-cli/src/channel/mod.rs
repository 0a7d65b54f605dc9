//! The channel mode: the interactive `claude` TUI under a terminal, messages pushed through the bridge's
//! channel plugin and answered through its `reply` tool, hooks reporting each prompt's start and end.
//! Launching it until its plugin says hello, and what the bridge keeps about its channel.

mod launch;

pub(crate) use launch::check_client_tools;
pub(crate) mod turn;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use synthesis_bridge::spawner::ProcessHandle;
use synthesis_bridge::transport::{ChannelLink, ChannelTicket, ChannelTransport, TransportError};
use synthesis_bridge::{BackendError, SessionKey};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::launch::Launch;
use crate::agent::{self, ClientSetup, Conversation, LaunchError, Services};
use crate::pool::ConnectedGuard;
use crate::screen::{self, NO_CONVERSATION, flat};

/// What Claude Code draws for `--dangerously-load-development-channels`; typing `1` confirms it. Keys
/// typed before it is drawn are lost, so the backend waits for it rather than for a fixed delay.
const DEV_CHANNELS_DIALOG: &str = "I am using this for local development";

/// How many messages without a `Stop` report an agent remembers; beyond that the hook is evidently not
/// reporting, and the oldest are forgotten.
const UNFINISHED_LIMIT: usize = 32;

/// Screens a process can stop at before its plugin connects, and what to do about each.
const KNOWN_SCREENS: &[(&str, &str)] = &[
    (
        "Detected a custom API key in your environment",
        "Claude Code asks whether to use ANTHROPIC_API_KEY: run `claude` once by hand and answer Yes, or log in with claude.ai instead",
    ),
    (
        "Quick safety check",
        "Claude Code asks whether to trust the workspace: run `claude` in it once by hand and accept",
    ),
    (
        "Select login method",
        "Claude Code is not logged in: run `claude` once by hand and log in",
    ),
];

/// The channel of a `claude` process whose plugin is connected.
pub(crate) struct ChannelIo {
    pub(crate) link: ChannelLink,
    /// Messages sent whose `Stop` has not been reported, oldest first: a report that cannot name its
    /// message belongs to the oldest.
    pub(crate) unfinished: VecDeque<(String, Instant)>,
    /// Whether the log has said that this process's hooks do not report.
    pub(crate) warned_hooks_silent: bool,
    ticket: ChannelTicket,
    transport: Arc<dyn ChannelTransport>,
    _connected: ConnectedGuard,
}

/// Starts `claude` for `session` and waits until its plugin has said hello.
pub(crate) async fn launch(
    services: &Services,
    transport: &Arc<dyn ChannelTransport>,
    session: &SessionKey,
    conversation: Conversation,
    workspace: &Path,
    client: &ClientSetup,
    cancel: &CancellationToken,
) -> Result<(Box<dyn ProcessHandle>, ChannelIo), LaunchError> {
    let Services {
        config,
        spawner,
        connected: plugins,
        ..
    } = services;
    let Some(hooks) = transport.hook_endpoint() else {
        return Err(BackendError::unavailable(
            "the channel transport takes no hook reports, which the claude backend needs to know when a message arrived and when a prompt is over",
        )
        .into());
    };
    let ticket = transport.register(session);
    let endpoint = transport.endpoint();
    let spec = launch::spec(
        config,
        &Launch {
            session,
            conversation,
            workspace,
            endpoint: &endpoint,
            token: &ticket.token,
            hooks: &hooks,
            client,
        },
    );
    let tool_names: Vec<&str> = client.tools.iter().map(|tool| tool.name.as_str()).collect();
    info!(%session, ?conversation, workspace = %workspace.display(), tools = ?tool_names, "starting claude (channel)");
    let process = match spawner.spawn(spec).await {
        Ok(process) => process,
        Err(err) => {
            transport.revoke(&ticket);
            return Err(agent::spawn_error(config, err).into());
        }
    };
    let connected = {
        let output = process.output();
        let confirm = async {
            output.wait_for(DEV_CHANNELS_DIALOG).await;
            debug!(%session, "confirming the development-channels dialog");
            process.write(b"1").await
        };
        tokio::pin!(confirm);
        // Made once, so the timeout counts from the spawn however often the loop goes round.
        let accept = transport.accept(&ticket, config.ready_timeout);
        tokio::pin!(accept);
        let mut confirmed = false;
        loop {
            tokio::select! {
                link = &mut accept => break link.map_err(|err| (err, None)),
                exit = process.wait() => break Err((TransportError::Closed, Some(exit))),
                written = &mut confirm, if !confirmed => {
                    confirmed = true;
                    if let Err(err) = written {
                        warn!(%session, %err, "cannot type into the terminal");
                    }
                }
                () = cancel.cancelled() => {
                    transport.revoke(&ticket);
                    let _ = process.kill().await;
                    return Err(BackendError::Cancelled.into());
                }
            }
        }
    };
    match connected {
        Ok(link) => {
            info!(%session, pid = process.pid(), "claude is ready");
            let io = ChannelIo {
                link,
                unfinished: VecDeque::new(),
                warned_hooks_silent: false,
                ticket,
                transport: transport.clone(),
                _connected: plugins.guard(),
            };
            Ok((process, io))
        }
        Err((err, exit)) => {
            transport.revoke(&ticket);
            let _ = process.kill().await;
            let screen = process.output().text();
            if matches!(conversation, Conversation::Resume(_))
                && exit.is_some()
                && flat(&screen).contains(&flat(NO_CONVERSATION))
            {
                return Err(LaunchError::NoConversation);
            }
            let what = match exit {
                Some(exit) => format!(
                    "claude {} before its channel plugin connected",
                    screen::exit_reason(exit, &screen)
                ),
                None => match err {
                    TransportError::ConnectTimeout { waited, .. } => format!(
                        "claude's channel plugin did not connect within {}",
                        humantime::format_duration(waited)
                    ),
                    other => format!("claude's channel plugin could not connect: {other}"),
                },
            };
            warn!(%session, %what, screen = %screen::last_lines(&screen, 20), "claude did not start");
            Err(BackendError::unavailable(startup_message(&what, &screen)).into())
        }
    }
}

impl ChannelIo {
    /// Records that `message_id` was sent (again: the first time counts).
    pub(crate) fn sent(&mut self, message_id: String) {
        if self.unfinished.iter().any(|(id, _)| *id == message_id) {
            return;
        }
        if self.unfinished.len() == UNFINISHED_LIMIT {
            self.unfinished.pop_front();
        }
        self.unfinished.push_back((message_id, Instant::now()));
    }

    /// Records that a message's prompt is over (its `Stop` came, or it was interrupted): the one named, or
    /// the oldest unfinished one.
    pub(crate) fn finished(&mut self, message_id: Option<String>) {
        match message_id {
            Some(id) => self.unfinished.retain(|(unfinished, _)| *unfinished != id),
            None => {
                self.unfinished.pop_front();
            }
        }
    }

    /// The oldest message whose prompt is not known to be over, and when it was sent.
    pub(crate) fn oldest_unfinished(&self) -> Option<(&String, Instant)> {
        self.unfinished.front().map(|(id, sent)| (id, *sent))
    }

    /// Gives up waiting for the `Stop` reports of earlier messages.
    pub(crate) fn forget_unfinished(&mut self) {
        self.unfinished.clear();
    }

    /// Ends the channel's registration: its plugin can no longer connect.
    pub(crate) fn revoke(&self) {
        self.transport.revoke(&self.ticket);
    }
}

impl Drop for ChannelIo {
    fn drop(&mut self) {
        // Idempotent: `stop` may have done it. The process handle kills its group when dropped.
        self.transport.revoke(&self.ticket);
    }
}

/// The error a client sees when a process did not come up: what happened, a hint when the screen is a
/// known one, and the screen's last lines.
fn startup_message(what: &str, screen: &str) -> String {
    let mut message = what.to_owned();
    let screen_text = flat(screen);
    for (phrase, hint) in KNOWN_SCREENS {
        if screen_text.contains(&flat(phrase)) {
            message.push_str(". ");
            message.push_str(hint);
            break;
        }
    }
    let tail = screen::last_lines(screen, 8);
    if !tail.is_empty() {
        message.push_str(". The terminal showed: ");
        message.push_str(&tail);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_screen_gets_a_hint_and_the_screen_is_quoted() {
        let screen = "\n  Detected a custom API key in your environment\n\n  ANTHROPIC_API_KEY: sk-ant-...xyz\n\n  Do you want to use this API key?\n  ❯ No (recommended)\n";
        let message = startup_message("claude's channel plugin did not connect within 30s", screen);
        assert!(message.starts_with("claude's channel plugin did not connect within 30s. Claude Code asks whether to use ANTHROPIC_API_KEY"), "{message}");
        assert!(
            message.ends_with("Do you want to use this API key? | No (recommended)"),
            "{message}"
        );
    }
}
