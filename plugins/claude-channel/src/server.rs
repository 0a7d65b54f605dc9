//! The MCP server Claude Code talks to: the `claude/channel` capability, the instructions, the `reply`
//! tool, and the client's tools, whose calls go to the bridge and wait for the client's results.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelledNotificationParam,
    ContentBlock, DiscoverRequestMethod, DiscoverResult, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;
use synthesis_claude_channel_protocol::PluginFrame;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::ChannelConfig;
use crate::ledger::Ledger;
use crate::link::{BridgeLink, ToolOutcome};

/// Why a call of the client's tools after the final reply fails.
const AFTER_THE_ANSWER: &str = "Your answer was already sent with the reply tool, which ended the sender's request: the client's tools can be called only before the final reply.";

/// The `reply` tool's name; a client tool of the same name cannot be offered beside it.
const REPLY: &str = "reply";

/// The `_meta` key that keeps a tool out of Claude Code's tool search (`docs/claude-cli-measurements.md`, N8).
const ALWAYS_LOAD: &str = "anthropic/alwaysLoad";

/// Where Claude Code puts the model's `tool_use` id in a `tools/call` (2.1.329): the call's id for the
/// client.
const TOOL_USE_ID: &str = "claudecode/toolUseId";

/// The capability that makes Claude Code treat this server as a channel.
const CHANNEL_CAPABILITY: &str = "claude/channel";

/// What the model is told about the `<channel>` turns and the reply tool. Claude Code passes it on from
/// the second request of a conversation (the first one lacks it, so the tool description repeats the
/// essentials).
const INSTRUCTIONS: &str = "\
Messages from a chat arrive as user turns inside <channel source=… chat_id=… message_id=… ts=…> tags. \
The person who sent one sees only what you send with the `reply` tool: answer every such message by \
calling `reply` with its chat_id and message_id and your answer as `text`. A long answer may go in parts: \
set `partial` to true on every part but the last. The last part ends the sender's request: use any other \
tools before it.";

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
    client_tools: Arc<[Tool]>,
}

#[tool_router]
impl ChannelServer {
    pub(crate) fn new(config: &ChannelConfig, link: BridgeLink) -> Self {
        let client_tools = config
            .client_tools
            .iter()
            .filter(|tool| {
                let clash = tool.name == REPLY;
                if clash {
                    warn!(session = %config.session, "the client's tool \"reply\" has the name of the channel's own: it is not offered");
                }
                !clash
            })
            .cloned()
            .collect();
        Self {
            session: config.session.clone(),
            link,
            reply_wait: config.reply_wait,
            tools_listed: Arc::new(watch::channel(false).0),
            ledger: Ledger::default(),
            tool_router: Self::tool_router(),
            client_tools,
        }
    }

    fn client_tool(&self, name: &str) -> Option<&Tool> {
        self.client_tools.iter().find(|tool| tool.name == name)
    }

    /// A call of one of the client's tools: the bridge hands it to the client, and the client's result is
    /// the call's. It stays open as long as the client takes; the bridge answers it with an error when
    /// the client gives up.
    async fn call_client_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let rpc_id = serde_json::to_value(&context.id).unwrap_or_default();
        let _open = self.ledger.tool_call(rpc_id.clone());
        // The bridge ended the request with the final reply: nobody would hand the call to the client.
        if !self.ledger.awaiting_answer() {
            return refused(AFTER_THE_ANSWER.to_owned());
        }
        let id = request
            .meta
            .as_ref()
            .and_then(|meta| meta.0.0.get(TOOL_USE_ID))
            .or_else(|| context.meta.0.0.get(TOOL_USE_ID))
            .and_then(|id| id.as_str())
            .map_or_else(|| format!("call_{rpc_id}"), str::to_owned);
        let arguments = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let name = request.name.into_owned();
        info!(session = %self.session, tool = %name, call = %id, "a call of the client's tool goes to the bridge");
        let called = self.link.call_tool(id, name, arguments, self.reply_wait);
        tokio::select! {
            outcome = called => match outcome {
                Ok(ToolOutcome { content, is_error: false }) => {
                    CallToolResult::success(vec![ContentBlock::text(content)])
                }
                Ok(ToolOutcome { content, is_error: true }) => refused(content),
                Err(error) => {
                    warn!(session = %self.session, %error, "a call of the client's tool got no result");
                    refused(format!("the client's tool gave no result: {error}"))
                }
            },
            // rmcp writes nothing for a cancelled call.
            () = context.ct.cancelled() => refused("cancelled".to_owned()),
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
        let _open = self.ledger.tool_call(id);
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
        let mut tools = self.tool_router.list_all();
        for tool in &mut tools {
            // Offered to the model directly: Claude Code's tool search (on unless ENABLE_TOOL_SEARCH=false)
            // would otherwise defer it, and the model answer without it.
            let meta = tool.meta.get_or_insert_with(Default::default);
            meta.0.insert(ALWAYS_LOAD.to_owned(), true.into());
        }
        tools.extend(self.client_tools.iter().cloned());
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.client_tool(&request.name).is_some() {
            return Ok(self.call_client_tool(request, context).await.into());
        }
        self.tool_router
            .call(ToolCallContext::new(self, request, context))
            .await
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tool_router
            .get(name)
            .or_else(|| self.client_tool(name))
            .cloned()
    }
}
