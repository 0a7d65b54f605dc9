//! The channel server between a hand-driven MCP client that speaks exactly as Claude Code 2.1.329 does
//! (its messages are copied from a recorded session) and a real bridge end: the WebSocket transport, or
//! a bare WebSocket server where the test plays the bridge.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use synthesis_bridge::transport::{
    ChannelEvent, ChannelLink, ChannelTransport, InboundMessage, ReplyFrame, ToolAnswer,
};
use synthesis_bridge::{SessionKey, ToolCall};
use synthesis_claude_channel_protocol::close;
use synthesis_plugin_claude_channel::{ChannelConfig, serve};
use synthesis_transport_ws::{WsConfig, WsTransport};
use tokio::io::{
    AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines, ReadHalf, WriteHalf,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const PATIENCE: Duration = Duration::from_secs(10);
const SESSION: &str = "agent::main";

/// The MCP client side, as Claude Code drives it.
struct ClaudeCode {
    writer: WriteHalf<DuplexStream>,
    lines: Lines<BufReader<ReadHalf<DuplexStream>>>,
    notifications: VecDeque<Value>,
    server: JoinHandle<Result<(), synthesis_plugin_claude_channel::ChannelError>>,
}

impl ClaudeCode {
    /// Starts the channel server with `config` on an in-memory pipe.
    fn start(config: ChannelConfig) -> Self {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (server_read, server_write) = tokio::io::split(server);
        let server = tokio::spawn(serve(config, server_read, server_write));
        let (read, writer) = tokio::io::split(client);
        Self {
            writer,
            lines: BufReader::new(read).lines(),
            notifications: VecDeque::new(),
            server,
        }
    }

    async fn send(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await.unwrap();
    }

    async fn read(&mut self) -> Value {
        let line = tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("a message in time")
            .unwrap()
            .expect("the server is still talking");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Sends a request and returns its response; notifications that come first are kept.
    async fn request(&mut self, id: Value, method: &str, params: Option<Value>) -> Value {
        let mut request = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(params) = params {
            request["params"] = params;
        }
        self.send(request).await;
        loop {
            let message = self.read().await;
            if message["id"] == id {
                return message;
            }
            self.notifications.push_back(message);
        }
    }

    async fn notification(&mut self) -> Value {
        match self.notifications.pop_front() {
            Some(notification) => notification,
            None => self.read().await,
        }
    }

    /// Whether a notification arrives within `period`.
    async fn quiet_for(&mut self, period: Duration) -> bool {
        self.notifications.is_empty()
            && tokio::time::timeout(period, self.lines.next_line())
                .await
                .is_err()
    }

    /// Claude Code's start: the discover probe, `initialize`, `initialized`. Returns the two responses.
    async fn handshake(&mut self) -> (Value, Value) {
        let discover = self
            .request(
                json!("server-discover-probe-1"),
                "server/discover",
                Some(json!({"_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientInfo": {"name": "claude-code", "title": "Claude Code", "version": "2.1.329"},
                    "io.modelcontextprotocol/clientCapabilities": {"roots": {"listChanged": true}, "elicitation": {"form": {}, "url": {}}, "extensions": {"io.modelcontextprotocol/tasks": {}}},
                }})),
            )
            .await;
        let initialize = self
            .request(
                json!(0),
                "initialize",
                Some(json!({
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"roots": {"listChanged": true}, "elicitation": {"form": {}, "url": {}}},
                    "clientInfo": {"name": "claude-code", "title": "Claude Code", "version": "2.1.329"},
                })),
            )
            .await;
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        (discover, initialize)
    }

    async fn list_tools(&mut self) -> Value {
        self.request(json!(1), "tools/list", None).await
    }

    async fn reply(&mut self, id: i64, arguments: Value) -> Value {
        self.request(
            json!(id),
            "tools/call",
            Some(json!({"name": "reply", "arguments": arguments,
                        "_meta": {"claudecode/toolUseId": format!("toolu_{id}"), "progressToken": id}})),
        )
        .await
    }

    /// Closes standard input and returns how the server ended.
    async fn close(mut self) -> Result<(), synthesis_plugin_claude_channel::ChannelError> {
        self.writer.shutdown().await.unwrap();
        drop(self.writer);
        tokio::time::timeout(PATIENCE, self.server)
            .await
            .expect("the server ends when its input closes")
            .unwrap()
    }
}

fn tool_text(response: &Value) -> &str {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {response}"))
}

/// The real transport with one registered session, and the channel server (pushing `settle` after
/// `tools/list`) connected to it; Claude Code's handshake is still to come.
async fn real_transport(settle: Duration) -> (WsTransport, ClaudeCode, ChannelLink) {
    let transport = WsTransport::bind("127.0.0.1:0".parse().unwrap(), WsConfig::default())
        .await
        .unwrap();
    let ticket = transport.register(&SessionKey::new(SESSION).unwrap());
    let config =
        ChannelConfig::new(transport.endpoint(), SESSION, ticket.token.clone()).settle(settle);
    let claude = ClaudeCode::start(config);
    let link = transport.accept(&ticket, PATIENCE).await.unwrap();
    (transport, claude, link)
}

#[tokio::test]
async fn claude_codes_handshake_then_queued_messages_and_replies_reach_the_bridge() {
    let (_transport, mut claude, mut link) = real_transport(Duration::from_millis(100)).await;

    // A message that comes before Claude Code can answer it waits.
    let early = InboundMessage::new(SESSION, "are you there?");
    link.send(early.clone()).await.unwrap();

    let (discover, initialize) = claude.handshake().await;
    assert_eq!(discover["error"]["code"], -32601, "{discover}");
    let result = &initialize["result"];
    assert_eq!(result["protocolVersion"], "2025-11-25", "{initialize}");
    assert_eq!(
        result["capabilities"]["experimental"]["claude/channel"],
        json!({})
    );
    assert!(result["capabilities"]["tools"].is_object(), "{initialize}");
    let instructions = result["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("<channel") && instructions.contains("`reply`"),
        "{instructions}"
    );
    assert!(
        claude.quiet_for(Duration::from_millis(300)).await,
        "nothing is pushed before the tools are listed"
    );

    let tools = claude.list_tools().await;
    let reply_tool = &tools["result"]["tools"][0];
    assert_eq!(reply_tool["name"], "reply", "{tools}");
    // Never deferred behind Claude Code's tool search.
    assert_eq!(reply_tool["_meta"]["anthropic/alwaysLoad"], true, "{tools}");
    assert_eq!(
        reply_tool["inputSchema"]["required"],
        json!(["chat_id", "text", "message_id"])
    );

    let pushed = claude.notification().await;
    assert_eq!(pushed["method"], "notifications/claude/channel", "{pushed}");
    assert_eq!(
        pushed["params"],
        json!({"content": "are you there?", "meta": {
            "chat_id": SESSION, "message_id": early.meta.message_id, "ts": early.meta.ts,
        }})
    );

    // A streamed answer: a part, then the end naming its message.
    let part = claude
        .reply(
            2,
            json!({"chat_id": SESSION, "text": "Yes, ", "partial": true}),
        )
        .await;
    assert_eq!(part["result"]["isError"], false, "{part}");
    let end = claude
        .reply(
            3,
            json!({"chat_id": SESSION, "text": "I am.", "message_id": early.meta.message_id}),
        )
        .await;
    assert_eq!(tool_text(&end), "sent");
    let mut expected_part = ReplyFrame::partial("Yes, ");
    expected_part.message_id = Some(early.meta.message_id.clone());
    let mut expected_end = ReplyFrame::last("I am.");
    expected_end.message_id = Some(early.meta.message_id.clone());
    for expected in [expected_part, expected_end] {
        let event = tokio::time::timeout(PATIENCE, link.recv()).await.unwrap();
        assert_eq!(event, Some(ChannelEvent::Reply(expected)));
    }

    // A reply to another chat is refused in words the model can act on, and nothing is sent.
    let wrong = claude
        .reply(4, json!({"chat_id": "agent::other", "text": "hi"}))
        .await;
    assert_eq!(wrong["result"]["isError"], true, "{wrong}");
    assert!(tool_text(&wrong).contains(SESSION), "{wrong}");

    // The next message is pushed as it comes.
    let next = InboundMessage::new(SESSION, "thanks");
    link.send(next.clone()).await.unwrap();
    assert_eq!(claude.notification().await["params"]["content"], "thanks");
    assert!(link.try_recv().is_none(), "the refused reply sent nothing");

    assert!(claude.close().await.is_ok());
}

#[tokio::test]
async fn the_clients_tools_are_listed_and_their_calls_wait_for_the_bridges_answer() {
    let transport = WsTransport::bind("127.0.0.1:0".parse().unwrap(), WsConfig::default())
        .await
        .unwrap();
    let ticket = transport.register(&SessionKey::new(SESSION).unwrap());
    let weather = serde_json::from_value(json!({
        "name": "get_weather", "description": "The weather in a city",
        "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}},
        "annotations": {"readOnlyHint": true}, "_meta": {"anthropic/alwaysLoad": true},
    }))
    .unwrap();
    // A client tool named like the channel's own cannot be offered beside it.
    let clash = serde_json::from_value(json!({"name": "reply", "inputSchema": {"type": "object"}}))
        .unwrap();
    let config = ChannelConfig::new(transport.endpoint(), SESSION, ticket.token.clone())
        .settle(Duration::from_millis(10))
        .client_tools(vec![weather, clash]);
    let mut claude = ClaudeCode::start(config);
    let mut link = transport.accept(&ticket, PATIENCE).await.unwrap();
    claude.handshake().await;
    let tools = claude.list_tools().await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    assert_eq!(names, ["reply", "get_weather"], "{tools}");
    let listed = &tools["result"]["tools"][1];
    assert_eq!(listed["annotations"]["readOnlyHint"], true, "{tools}");
    assert_eq!(listed["_meta"]["anthropic/alwaysLoad"], true, "{tools}");

    let message = InboundMessage::new(SESSION, "weather?");
    link.send(message.clone()).await.unwrap();
    assert_eq!(claude.notification().await["params"]["content"], "weather?");

    // A call reaches the bridge under the model's tool_use id, and waits for its answer.
    claude
        .send(
            json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
            "name": "get_weather", "arguments": {"city": "Paris"},
            "_meta": {"claudecode/toolUseId": "toolu_5", "progressToken": 5}}}),
        )
        .await;
    let event = tokio::time::timeout(PATIENCE, link.recv()).await.unwrap();
    assert_eq!(
        event,
        Some(ChannelEvent::ToolCall(ToolCall::new(
            "toolu_5",
            "get_weather",
            r#"{"city":"Paris"}"#
        )))
    );
    // No push while the call is open: Claude Code would drop it.
    let later = InboundMessage::new(SESSION, "later");
    link.send(later.clone()).await.unwrap();
    assert!(
        claude.quiet_for(Duration::from_millis(300)).await,
        "pushed during an open call"
    );
    link.answer(ToolAnswer::new("toolu_5", "sunny"))
        .await
        .unwrap();
    let result = claude.read().await;
    assert_eq!(result["id"], 5, "{result}");
    assert_eq!(tool_text(&result), "sunny");
    assert_eq!(result["result"]["isError"], false, "{result}");
    assert_eq!(claude.notification().await["params"]["content"], "later");

    // A failed call is an error result the model reads.
    let failed = tokio::spawn(async move {
        let event = tokio::time::timeout(PATIENCE, link.recv()).await.unwrap();
        let Some(ChannelEvent::ToolCall(call)) = event else {
            panic!("expected a tool call, got {event:?}");
        };
        link.answer(ToolAnswer::failed(call.id, "no result in time"))
            .await
            .unwrap();
        link
    });
    let response = claude
        .request(
            json!(6),
            "tools/call",
            Some(json!({"name": "get_weather", "arguments": {"city": "Oslo"},
            "_meta": {"claudecode/toolUseId": "toolu_6"}})),
        )
        .await;
    assert_eq!(response["result"]["isError"], true, "{response}");
    assert_eq!(tool_text(&response), "no result in time");
    let mut link = failed.await.unwrap();

    // Once both messages have their final reply, a call is refused at once: nobody would take it.
    for (id, message_id) in [(7, &message.meta.message_id), (8, &later.meta.message_id)] {
        let sent = claude
            .reply(
                id,
                json!({"chat_id": SESSION, "text": "done", "message_id": message_id}),
            )
            .await;
        assert_eq!(tool_text(&sent), "sent", "{sent}");
    }
    let refused = claude
        .request(
            json!(9),
            "tools/call",
            Some(json!({"name": "get_weather", "arguments": {"city": "Rome"}})),
        )
        .await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert!(tool_text(&refused).contains("already sent"), "{refused}");
    for _ in 0..2 {
        let reply = tokio::time::timeout(PATIENCE, link.recv()).await.unwrap();
        assert!(matches!(reply, Some(ChannelEvent::Reply(_))), "{reply:?}");
    }
    assert!(
        link.try_recv().is_none(),
        "the refused call reached the bridge"
    );
    assert!(claude.close().await.is_ok());
}

/// A bridge the test plays by hand: a bare WebSocket server.
async fn accept_plugin(
    listener: &TcpListener,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let (stream, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("the plugin connects in time")
        .unwrap();
    tokio_tungstenite::accept_async(stream).await.unwrap()
}

async fn next_frame(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// A bridge the test plays by hand (a bare WebSocket listener), and the channel server pointed at it
/// with no settle delay and quick reconnects (then `configure`), past Claude Code's handshake and
/// `tools/list`.
async fn hand_played_bridge(
    configure: impl FnOnce(ChannelConfig) -> ChannelConfig,
) -> (TcpListener, ClaudeCode) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/bridge", listener.local_addr().unwrap());
    let config = ChannelConfig::new(url, SESSION, "secret")
        .settle(Duration::ZERO)
        .reconnect(Duration::from_millis(10), Duration::from_millis(50));
    let mut claude = ClaudeCode::start(configure(config));
    claude.handshake().await;
    claude.list_tools().await;
    (listener, claude)
}

fn hello_ack() -> Message {
    Message::text(r#"{"type":"hello_ack"}"#)
}

fn inbound_frame(message: &InboundMessage) -> Message {
    Message::text(
        json!({"type": "inbound", "content": message.content, "meta": message.meta}).to_string(),
    )
}

#[tokio::test]
async fn the_plugin_reconnects_when_the_bridge_goes_away_and_stops_when_its_process_is_stopped() {
    let (listener, mut claude) = hand_played_bridge(|config| config).await;

    // The first bridge takes the hello and dies without a word.
    let mut first = accept_plugin(&listener).await;
    let hello = next_frame(&mut first).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["openclaw_session"], SESSION);
    assert_eq!(hello["token"], "secret");
    assert!(hello["pid"].as_u64().is_some(), "{hello}");
    drop(first);

    // The plugin comes back on its own, and messages flow again.
    let mut second = accept_plugin(&listener).await;
    assert_eq!(next_frame(&mut second).await["type"], "hello");
    second.send(hello_ack()).await.unwrap();
    second
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut second).await, json!({"type": "pong"}));
    let message = InboundMessage::new(SESSION, "after the restart");
    second.send(inbound_frame(&message)).await.unwrap();
    let pushed = claude.notification().await;
    assert_eq!(pushed["params"]["content"], "after the restart");
    let reply = claude
        .reply(2, json!({"chat_id": SESSION, "text": "back"}))
        .await;
    assert_eq!(tool_text(&reply), "sent");
    assert_eq!(
        next_frame(&mut second).await,
        json!({"type": "reply", "content": "back", "final": true, "message_id": message.meta.message_id})
    );

    // The bridge stopping this process's registration is final: no new connection follows.
    second
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(close::REGISTRATION_ENDED),
            reason: "stopped".into(),
        })))
        .await
        .unwrap();
    let reconnected = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    assert!(
        reconnected.is_err(),
        "the plugin connected again after 4004"
    );
    assert!(claude.close().await.is_ok());
}

#[tokio::test]
async fn a_message_is_not_pushed_while_a_reply_call_is_open() {
    let (listener, mut claude) = hand_played_bridge(|config| config).await;
    let mut first = accept_plugin(&listener).await;
    next_frame(&mut first).await;
    first.send(hello_ack()).await.unwrap();
    let question = InboundMessage::new(SESSION, "question");
    first.send(inbound_frame(&question)).await.unwrap();
    assert_eq!(claude.notification().await["params"]["content"], "question");

    // The connection drops; once the plugin is back (not yet acknowledged), the answer's reply call waits.
    drop(first);
    let mut second = accept_plugin(&listener).await;
    next_frame(&mut second).await;
    claude
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "reply",
            "arguments": {"chat_id": SESSION, "text": "answer", "message_id": question.meta.message_id}}}))
        .await;
    // The bridge's next message arrives while that call is still open: it is held...
    let next = InboundMessage::new(SESSION, "next");
    second.send(inbound_frame(&next)).await.unwrap();
    assert!(
        claude.quiet_for(Duration::from_millis(300)).await,
        "a push while a reply call is open is lost by Claude Code"
    );
    // ...until the call has returned.
    second.send(hello_ack()).await.unwrap();
    assert_eq!(next_frame(&mut second).await["content"], "answer");
    let result = claude.read().await;
    assert_eq!(result["id"], 2, "the tool result comes first: {result}");
    assert_eq!(tool_text(&result), "sent");
    assert_eq!(claude.notification().await["params"]["content"], "next");
    assert!(claude.close().await.is_ok());
}

#[tokio::test]
async fn a_reply_must_answer_a_message_that_is_waiting() {
    let (_transport, mut claude, mut link) = real_transport(Duration::ZERO).await;
    claude.handshake().await;
    claude.list_tools().await;
    let refused = |response: &Value| response["result"]["isError"] == true;

    let early = claude
        .reply(2, json!({"chat_id": SESSION, "text": "hi"}))
        .await;
    assert!(refused(&early), "nothing was asked yet: {early}");
    let first = InboundMessage::new(SESSION, "one");
    let second = InboundMessage::new(SESSION, "two");
    for message in [&first, &second] {
        link.send(message.clone()).await.unwrap();
        claude.notification().await;
    }
    // Claude Code answers queued messages in turn: with two waiting, a reply must say which it answers.
    let unnamed = claude
        .reply(3, json!({"chat_id": SESSION, "text": "?"}))
        .await;
    assert!(tool_text(&unnamed).contains("pass message_id"), "{unnamed}");
    let invented = claude
        .reply(
            4,
            json!({"chat_id": SESSION, "text": "?", "message_id": "m-0"}),
        )
        .await;
    assert!(refused(&invented), "{invented}");
    let answer = claude
        .reply(
            5,
            json!({"chat_id": SESSION, "text": "1", "message_id": first.meta.message_id}),
        )
        .await;
    assert_eq!(tool_text(&answer), "sent");
    let again = claude
        .reply(
            6,
            json!({"chat_id": SESSION, "text": "1 again", "message_id": first.meta.message_id}),
        )
        .await;
    assert!(tool_text(&again).contains("already answered"), "{again}");
    // One message left waiting: a reply without an id answers it.
    let rest = claude
        .reply(7, json!({"chat_id": SESSION, "text": "2"}))
        .await;
    assert_eq!(tool_text(&rest), "sent");
    let mut expected = Vec::new();
    for (text, id) in [
        ("1", &first.meta.message_id),
        ("2", &second.meta.message_id),
    ] {
        let mut frame = ReplyFrame::last(text);
        frame.message_id = Some(id.clone());
        expected.push(Some(ChannelEvent::Reply(frame)));
    }
    for expected in expected {
        assert_eq!(
            tokio::time::timeout(PATIENCE, link.recv()).await.unwrap(),
            expected
        );
    }
    assert!(link.try_recv().is_none(), "refused replies sent nothing");
    assert!(claude.close().await.is_ok());
}

#[tokio::test]
async fn a_reply_while_the_bridge_is_unreachable_is_a_tool_error() {
    let (listener, mut claude) =
        hand_played_bridge(|config| config.reply_wait(Duration::from_millis(200))).await;
    let mut bridge = accept_plugin(&listener).await;
    next_frame(&mut bridge).await;
    bridge.send(hello_ack()).await.unwrap();
    let question = InboundMessage::new(SESSION, "question");
    bridge.send(inbound_frame(&question)).await.unwrap();
    claude.notification().await;

    // The bridge goes away, and the one that takes the plugin's next connection never acknowledges it.
    drop(bridge);
    let mut silent = accept_plugin(&listener).await;
    assert_eq!(next_frame(&mut silent).await["type"], "hello");
    let reply = claude
        .reply(2, json!({"chat_id": SESSION, "text": "hello?"}))
        .await;
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    assert!(tool_text(&reply).starts_with("not delivered"), "{reply}");
    assert!(claude.close().await.is_ok());
}

#[tokio::test]
async fn standard_input_closing_before_the_handshake_is_a_normal_end() {
    let claude = ClaudeCode::start(ChannelConfig::new(
        "ws://127.0.0.1:9/bridge",
        SESSION,
        "secret",
    ));
    assert!(claude.close().await.is_ok());
}
