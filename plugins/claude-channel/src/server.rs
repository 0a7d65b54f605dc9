//! The MCP server Claude Code talks to: the `claude/channel` capability, the instructions, and the
//! `reply` tool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, CancelledNotificationParam, ContentBlock, DiscoverRequestMethod,
    DiscoverResult, Implementation, JsonObject, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;
use synthesis_claude_channel_protocol::PluginFrame;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::ledger::Ledger;
use crate::link::BridgeLink;

/// The capability that makes Claude Code treat this server as a channel.
const CHANNEL_CAPABILITY: &str = "claude/channel";

/// What the model is told about the `<channel>` turns and the reply tool. Claude Code passes it on from
/// the second request of a conversation (the first one lacks it, so the tool description repeats the
/// essentials).
const INSTRUCTIONS: &str = "\
Messages from a chat arrive as user turns inside <channel source=… chat_id=… message_id=… ts=…> tags. \
The person who sent one sees only what you send with the `reply` tool: answer every such message by \
calling `reply` with its chat_id and message_id and your answer as `text`. A long answer may go in parts: \
set `partial` to true on every part but the last.";

/// The arguments of the `reply` tool.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct ReplyArgs {
    /// The chat_id attribute of the <channel> message you are answering.
    pub chat_id: String,
    /// Your answer, or the next part of it.
    pub text: String,
    /// The message_id attribute of the <channel> message you are answering.
    // Required in the schema, so that models pass it; a call without one is still taken when only one
    // message is waiting.
    #[schemars(required)]
    pub message_id: Option<String>,
    /// true when more parts of this answer follow; leave it out (false) for the last or only part.
    #[serde(default)]
    pub partial: bool,
}

/// The channel MCP server of one Claude Code session.
#[derive(Debug, Clone)]
pub struct ChannelServer {
    session: String,
    link: BridgeLink,
    reply_wait: Duration,
    tools_listed: Arc<watch::Sender<bool>>,
    ledger: Ledger,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl ChannelServer {
    pub(crate) fn new(session: String, link: BridgeLink, reply_wait: Duration) -> Self {
        Self {
            session,
            link,
            reply_wait,
            tools_listed: Arc::new(watch::channel(false).0),
            ledger: Ledger::default(),
            tool_router: Self::tool_router(),
        }
    }

    /// Becomes true once Claude Code has listed the tools.
    pub(crate) fn tools_listed(&self) -> watch::Receiver<bool> {
        self.tools_listed.subscribe()
    }

    pub(crate) fn ledger(&self) -> Ledger {
        self.ledger.clone()
    }

    /// Sends the answer to the chat a <channel> message came from.
    #[tool(
        description = "Send your answer to the chat a <channel> message came from. The sender sees nothing else you write. Pass the message's chat_id and message_id; set partial=true on every part of a long answer but the last."
    )]
    async fn reply(
        &self,
        Parameters(args): Parameters<ReplyArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let id = serde_json::to_value(&context.id).unwrap_or_default();
        let _open = self.ledger.reply_call(id);
        if args.chat_id != self.session {
            return Ok(refused(format!(
                "chat_id {:?} is not this chat; answer with chat_id \"{}\"",
                args.chat_id, self.session
            )));
        }
        let message_id = match self.ledger.resolve(args.message_id.as_deref()) {
            Ok(message_id) => message_id,
            Err(why) => return Ok(refused(why)),
        };
        let frame = PluginFrame::Reply {
            content: args.text,
            is_final: Some(!args.partial),
            message_id: Some(message_id.clone()),
        };
        match self.link.send(frame, self.reply_wait).await {
            Ok(()) => {
                if !args.partial {
                    self.ledger.answered(&message_id);
                }
                Ok(CallToolResult::success(vec![ContentBlock::text(
                    if args.partial {
                        "sent; send the rest with more reply calls"
                    } else {
                        "sent"
                    },
                )]))
            }
            Err(error) => {
                warn!(session = %self.session, %error, "a reply did not reach the bridge");
                Ok(refused(format!("not delivered: {error}")))
            }
        }
    }
}

/// A tool error the model reads and can act on.
fn refused(why: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(why)])
}

#[tool_handler]
impl ServerHandler for ChannelServer {
    fn get_info(&self) -> ServerConfig {
        let experimental = BTreeMap::from([(CHANNEL_CAPABILITY.to_owned(), JsonObject::new())]);
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_experimental_with(experimental)
                .enable_tools()
                .build(),
        )
        .with_server_info(Implementation::new(
            "synthesis-bridge",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }

    /// Claude Code probes with `server/discover` first. A success would make it use the newer protocol
    /// era, in which channels are off; -32601 makes it fall back to `initialize` at once. rmcp calls this
    /// only for a probe whose `_meta` is complete (others get -32602 from rmcp itself); Claude Code
    /// 2.1.329's is, and the contract test replays it.
    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, ErrorData> {
        Err(ErrorData::method_not_found::<DiscoverRequestMethod>())
    }

    /// A cancelled call's result is dropped by rmcp and never written: the ledger must not wait for it.
    async fn on_cancelled(
        &self,
        notification: CancelledNotificationParam,
        _context: NotificationContext<RoleServer>,
    ) {
        if let Some(id) = notification.request_id {
            self.ledger
                .cancelled(&serde_json::to_value(&id).unwrap_or_default());
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        if !self.tools_listed.send_replace(true) {
            info!(session = %self.session, "Claude Code listed the tools; messages can be pushed");
        }
        Ok(ListToolsResult::with_all_items(self.tool_router.list_all()))
    }
}
