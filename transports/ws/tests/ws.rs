//! The WebSocket transport over real sockets, with a hand-driven plugin on the other end.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use synthesis_bridge::SessionKey;
use synthesis_bridge::transport::{
    ChannelEvent, ChannelLink, ChannelTicket, ChannelTransport, InboundMessage, ReplyFrame,
    TransportError, TurnEnd,
};
use synthesis_transport_ws::protocol::close;
use synthesis_transport_ws::{WsConfig, WsTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Long enough for anything on loopback; tests that wait for silence use much shorter periods.
const PATIENCE: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn transport(config: WsConfig) -> WsTransport {
    WsTransport::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn key(name: &str) -> SessionKey {
    SessionKey::new(name).unwrap()
}

/// A plugin: connects and says hello with `token`.
async fn plugin(transport: &WsTransport, session: &str, token: Option<&str>) -> Socket {
    let (mut socket, _) = tokio_tungstenite::connect_async(transport.endpoint())
        .await
        .unwrap();
    let mut hello = json!({"type": "hello", "pid": 4242, "openclaw_session": session});
    if let Some(token) = token {
        hello["token"] = token.into();
    }
    socket.send(Message::text(hello.to_string())).await.unwrap();
    socket
}

async fn next_json(socket: &mut Socket) -> Value {
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

/// Reads until the bridge closes the connection; returns the close code.
async fn close_code(socket: &mut Socket) -> u16 {
    loop {
        match tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn connected(transport: &WsTransport, session: &str) -> (ChannelTicket, ChannelLink, Socket) {
    let ticket = transport.register(&key(session));
    let mut socket = plugin(transport, session, Some(&ticket.token)).await;
    assert_eq!(next_json(&mut socket).await["type"], "hello_ack");
    let link = transport.accept(&ticket, PATIENCE).await.unwrap();
    assert!(link.is_connected());
    (ticket, link, socket)
}

async fn next_event(link: &mut ChannelLink) -> ChannelEvent {
    tokio::time::timeout(PATIENCE, link.recv())
        .await
        .expect("an event in time")
        .expect("the link is open")
}

#[tokio::test]
async fn messages_go_out_and_replies_come_back_in_pieces() {
    let transport = transport(WsConfig::default()).await;
    let (_ticket, mut link, mut socket) = connected(&transport, "agent::chat").await;

    let message = InboundMessage::new("agent::chat", "hello");
    link.send(message.clone()).await.unwrap();
    let inbound = next_json(&mut socket).await;
    assert_eq!(inbound["type"], "inbound");
    assert_eq!(inbound["content"], "hello");
    assert_eq!(inbound["meta"]["chat_id"], "agent::chat");
    assert_eq!(
        inbound["meta"]["message_id"],
        message.meta.message_id.as_str()
    );

    let id = message.meta.message_id.clone();
    for frame in [
        json!({"type": "reply", "content": "Hel", "final": false, "message_id": id}),
        json!({"type": "reply", "content": "lo"}),
        json!({"type": "error", "message": "out of tokens"}),
    ] {
        socket.send(Message::text(frame.to_string())).await.unwrap();
    }
    let mut first = ReplyFrame::partial("Hel");
    first.message_id = Some(id);
    assert_eq!(next_event(&mut link).await, ChannelEvent::Reply(first));
    // An absent `final` means the answer is complete, as in the seed.
    assert_eq!(
        next_event(&mut link).await,
        ChannelEvent::Reply(ReplyFrame::last("lo"))
    );
    assert_eq!(
        next_event(&mut link).await,
        ChannelEvent::Error {
            message: "out of tokens".into()
        }
    );
}

#[tokio::test]
async fn a_hello_without_the_right_token_is_refused() {
    let transport = transport(WsConfig::default()).await;
    let ticket = transport.register(&key("s"));
    for token in [None, Some("wrong"), Some(&ticket.token[..10])] {
        let mut socket = plugin(&transport, "s", token).await;
        assert_eq!(close_code(&mut socket).await, close::UNAUTHORIZED);
    }
    // The right token for another session is no good either.
    let other = transport.register(&key("other"));
    let mut socket = plugin(&transport, "s", Some(&other.token)).await;
    assert_eq!(close_code(&mut socket).await, close::UNAUTHORIZED);

    let err = transport
        .accept(&ticket, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectTimeout { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn only_the_right_token_replaces_a_connection_and_the_link_carries_on() {
    let transport = transport(WsConfig::default()).await;
    let (ticket, mut link, mut first) = connected(&transport, "s").await;

    let mut intruder = plugin(&transport, "s", Some("forged")).await;
    assert_eq!(close_code(&mut intruder).await, close::UNAUTHORIZED);
    // The first connection is still the one served.
    link.send(InboundMessage::new("s", "one")).await.unwrap();
    assert_eq!(next_json(&mut first).await["content"], "one");

    let mut second = plugin(&transport, "s", Some(&ticket.token)).await;
    assert_eq!(next_json(&mut second).await["type"], "hello_ack");
    assert_eq!(close_code(&mut first).await, close::REPLACED);
    link.send(InboundMessage::new("s", "two")).await.unwrap();
    assert_eq!(next_json(&mut second).await["content"], "two");
    second
        .send(Message::text(r#"{"type":"reply","content":"ok"}"#))
        .await
        .unwrap();
    // A replacement is not a disconnection.
    assert_eq!(
        next_event(&mut link).await,
        ChannelEvent::Reply(ReplyFrame::last("ok"))
    );
}

#[tokio::test]
async fn malformed_and_unknown_frames_are_ignored_and_the_connection_stays() {
    let transport = transport(WsConfig::default()).await;
    let (_ticket, mut link, mut socket) = connected(&transport, "s").await;
    for junk in [
        "not json",
        r#"{"type":"subscribe"}"#,
        r#"{"type":"reply","content":42}"#,
        r#"{"no":"type"}"#,
    ] {
        socket.send(Message::text(junk)).await.unwrap();
    }
    socket.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    socket
        .send(Message::text(r#"{"type":"reply","content":"still here"}"#))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut link).await,
        ChannelEvent::Reply(ReplyFrame::last("still here"))
    );
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_the_connection_and_the_backend_hears_it() {
    let transport = transport(WsConfig::default().max_frame_bytes(1024)).await;
    let (_ticket, mut link, mut socket) = connected(&transport, "s").await;
    let big = json!({"type": "reply", "content": "x".repeat(2048)}).to_string();
    let _ = socket.send(Message::text(big)).await;
    match next_event(&mut link).await {
        ChannelEvent::Disconnected { reason } => assert!(reason.contains("size limit"), "{reason}"),
        other => panic!("expected a disconnection, got {other:?}"),
    }
    assert!(!link.is_connected());
}

#[tokio::test]
async fn a_plugin_that_stops_answering_pings_is_dropped_and_may_reconnect() {
    let transport = transport(WsConfig::default().ping_interval(Duration::from_millis(100))).await;
    let (ticket, mut link, mut socket) = connected(&transport, "s").await;

    // Answer the first ping, then go silent.
    let ping = next_json(&mut socket).await;
    assert_eq!(ping["type"], "ping");
    socket
        .send(Message::text(r#"{"type":"pong"}"#))
        .await
        .unwrap();
    match next_event(&mut link).await {
        ChannelEvent::Disconnected { reason } => assert!(reason.contains("no pong"), "{reason}"),
        other => panic!("expected a disconnection, got {other:?}"),
    }
    assert!(!link.is_connected());

    let mut again = plugin(&transport, "s", Some(&ticket.token)).await;
    assert_eq!(next_json(&mut again).await["type"], "hello_ack");
    assert_eq!(next_event(&mut link).await, ChannelEvent::Reconnected);
    assert!(link.is_connected());
}

/// Plays the plugin's part in ordering a report: reads the bridge's ping and answers it.
async fn answer_ping(socket: &mut Socket) {
    assert_eq!(next_json(socket).await["type"], "ping");
    socket
        .send(Message::text(r#"{"type":"pong"}"#))
        .await
        .unwrap();
}

async fn send_json(socket: &mut Socket, frame: Value) {
    socket.send(Message::text(frame.to_string())).await.unwrap();
}

/// Asserts that nothing reaches the link for a while.
async fn quiet(link: &mut ChannelLink) {
    let waited = tokio::time::timeout(Duration::from_millis(200), link.recv()).await;
    assert!(waited.is_err(), "unexpected event {waited:?}");
}

/// Posts a Claude Code hook report, as its `http` hooks do, and returns the status and the JSON answer.
async fn post_hook(
    transport: &WsTransport,
    session: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let url = transport
        .hook_endpoint()
        .expect("the WebSocket transport takes hooks");
    let address = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    let path: String = format!(
        "/hooks?session={}",
        session.replace(':', "%3A").replace(' ', "+")
    );
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("answered in time")
        .unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn channel_prompt(message_id: &str) -> String {
    format!(
        "<channel source=\"synthesis\" chat_id=\"s\" message_id=\"{message_id}\" ts=\"t\">\nhi\n</channel>"
    )
}

/// The bridge hands message `message_id` to the plugin, and Claude Code's `UserPromptSubmit` reports that
/// it became prompt `prompt_id`; returns the hook's answer.
async fn submit(
    transport: &WsTransport,
    ticket: &ChannelTicket,
    (link, socket): (&mut ChannelLink, &mut Socket),
    prompt_id: &str,
    message_id: &str,
) -> Value {
    let mut message = InboundMessage::new("s", "hi");
    message.meta.message_id = message_id.to_owned();
    link.send(message).await.unwrap();
    assert_eq!(next_json(socket).await["type"], "inbound");
    let body = json!({"hook_event_name": "UserPromptSubmit", "prompt_id": prompt_id,
                      "session_id": "c", "prompt": channel_prompt(message_id)});
    let (status, answer) = post_hook(transport, "s", &ticket.token, body).await;
    assert_eq!(status, 200);
    answer
}

/// Claude Code's `Stop` report for prompt `prompt_id`.
async fn stop(transport: &WsTransport, ticket: &ChannelTicket, prompt_id: &str, last: &str) {
    let body = json!({"hook_event_name": "Stop", "prompt_id": prompt_id,
                      "last_assistant_message": last, "stop_hook_active": false});
    let (status, answer) = post_hook(transport, "s", &ticket.token, body).await;
    assert_eq!((status, answer), (200, json!({})));
}

#[tokio::test]
async fn hook_reports_reach_the_link_only_with_the_right_token() {
    let transport = transport(WsConfig::default()).await;
    let (ticket, mut link, mut socket) = connected(&transport, "s").await;

    let start = json!({"hook_event_name": "UserPromptSubmit", "prompt_id": "p-1",
                       "prompt": channel_prompt("m-1")});
    let (status, _) = post_hook(&transport, "s", "forged", start.clone()).await;
    assert_eq!(status, 401);
    let (status, _) = post_hook(&transport, "other", &ticket.token, start).await;
    assert_eq!(status, 401);
    quiet(&mut link).await;

    assert_eq!(
        submit(&transport, &ticket, (&mut link, &mut socket), "p-1", "m-1").await,
        json!({})
    );
    assert_eq!(
        next_event(&mut link).await,
        ChannelEvent::Started {
            message_id: "m-1".into()
        }
    );
    stop(&transport, &ticket, "p-1", "All done.").await;
    answer_ping(&mut socket).await;
    let done = TurnEnd::new(Some("m-1".into()), Some("All done.".into()));
    assert_eq!(next_event(&mut link).await, ChannelEvent::TurnEnded(done));

    // A failed prompt carries its error.
    submit(&transport, &ticket, (&mut link, &mut socket), "p-2", "m-2").await;
    next_event(&mut link).await;
    let failure = json!({"hook_event_name": "StopFailure", "prompt_id": "p-2", "error": "unknown",
                         "last_assistant_message": "API Error: 529 overloaded"});
    assert_eq!(
        post_hook(&transport, "s", &ticket.token, failure).await.0,
        200
    );
    answer_ping(&mut socket).await;
    let failed = TurnEnd::new(Some("m-2".into()), None).failed("API Error: 529 overloaded");
    assert_eq!(next_event(&mut link).await, ChannelEvent::TurnEnded(failed));

    // A report that is not hook JSON is refused; a prompt typed at the terminal is nobody's business.
    let (status, _) = post_hook(&transport, "s", &ticket.token, json!({"nope": 1})).await;
    assert_eq!(status, 400);
    let typed =
        json!({"hook_event_name": "UserPromptSubmit", "prompt_id": "p-3", "prompt": "hello"});
    assert_eq!(
        post_hook(&transport, "s", &ticket.token, typed).await,
        (200, json!({}))
    );
    quiet(&mut link).await;
}

#[tokio::test]
async fn a_message_that_starts_a_second_prompt_is_blocked_and_its_stop_is_not_reported() {
    let transport = transport(WsConfig::default()).await;
    let (ticket, mut link, mut socket) = connected(&transport, "s").await;

    submit(&transport, &ticket, (&mut link, &mut socket), "p-1", "m-1").await;
    next_event(&mut link).await;
    // Pushed again because the first start was late: the second start must not reach the conversation.
    let answer = submit(&transport, &ticket, (&mut link, &mut socket), "p-2", "m-1").await;
    assert_eq!(answer["decision"], "block", "{answer}");
    quiet(&mut link).await;
    stop(&transport, &ticket, "p-2", "").await;
    quiet(&mut link).await;
    stop(&transport, &ticket, "p-1", "done").await;
    answer_ping(&mut socket).await;
    assert_eq!(
        next_event(&mut link).await,
        ChannelEvent::TurnEnded(TurnEnd::new(Some("m-1".into()), Some("done".into())))
    );
}

/// The hook reports the end of message `m-1` before any reply to it came; returns the report once the
/// bridge, holding it back, has pinged the plugin.
async fn report_ahead_of_the_reply(
    transport: &WsTransport,
    ticket: &ChannelTicket,
    link: &mut ChannelLink,
    socket: &mut Socket,
) -> TurnEnd {
    submit(transport, ticket, (&mut *link, &mut *socket), "p-1", "m-1").await;
    assert!(matches!(
        next_event(link).await,
        ChannelEvent::Started { .. }
    ));
    stop(transport, ticket, "p-1", "Sent my answer.").await;
    quiet(link).await;
    assert_eq!(next_json(socket).await["type"], "ping");
    TurnEnd::new(Some("m-1".into()), Some("Sent my answer.".into()))
}

#[tokio::test]
async fn a_turn_end_that_comes_before_the_reply_waits_behind_it() {
    let transport = transport(WsConfig::default()).await;
    let (ticket, mut link, mut socket) = connected(&transport, "s").await;

    // The hook's report is read first, as it can be when the bridge is busy, while the plugin's reply was
    // still on its way: it reaches the plugin's socket before the pong.
    let done = report_ahead_of_the_reply(&transport, &ticket, &mut link, &mut socket).await;
    send_json(
        &mut socket,
        json!({"type": "reply", "content": "The answer", "message_id": "m-1"}),
    )
    .await;
    send_json(&mut socket, json!({"type": "pong"})).await;

    let mut reply = ReplyFrame::last("The answer");
    reply.message_id = Some("m-1".into());
    assert_eq!(next_event(&mut link).await, ChannelEvent::Reply(reply));
    assert_eq!(next_event(&mut link).await, ChannelEvent::TurnEnded(done));
}

#[tokio::test]
async fn a_turn_end_after_its_final_reply_goes_at_once() {
    let transport = transport(WsConfig::default()).await;
    let (ticket, mut link, mut socket) = connected(&transport, "s").await;

    submit(&transport, &ticket, (&mut link, &mut socket), "p-1", "m-1").await;
    next_event(&mut link).await;
    send_json(
        &mut socket,
        json!({"type": "reply", "content": "The answer", "final": true, "message_id": "m-1"}),
    )
    .await;
    assert!(matches!(
        next_event(&mut link).await,
        ChannelEvent::Reply(_)
    ));
    stop(&transport, &ticket, "p-1", "done").await;
    let done = TurnEnd::new(Some("m-1".into()), Some("done".into()));
    // The plugin answers no ping, and none was needed.
    assert_eq!(next_event(&mut link).await, ChannelEvent::TurnEnded(done));
    let frame = tokio::time::timeout(Duration::from_millis(200), socket.next()).await;
    assert!(frame.is_err(), "the bridge sent {frame:?}");
}

#[tokio::test]
async fn a_held_turn_end_moves_to_the_connection_that_replaces_its_own() {
    let transport = transport(WsConfig::default()).await;
    let (ticket, mut link, mut socket) = connected(&transport, "s").await;
    let done = report_ahead_of_the_reply(&transport, &ticket, &mut link, &mut socket).await;

    // The plugin reconnects before it answers the ping; the report is now ordered on the new connection.
    let mut again = plugin(&transport, "s", Some(&ticket.token)).await;
    assert_eq!(next_json(&mut again).await["type"], "hello_ack");
    assert_eq!(close_code(&mut socket).await, close::REPLACED);
    assert_eq!(next_json(&mut again).await["type"], "ping");
    quiet(&mut link).await;
    send_json(
        &mut again,
        json!({"type": "reply", "content": "The answer", "message_id": "m-1"}),
    )
    .await;
    send_json(&mut again, json!({"type": "pong"})).await;

    assert!(matches!(
        next_event(&mut link).await,
        ChannelEvent::Reply(_)
    ));
    assert_eq!(next_event(&mut link).await, ChannelEvent::TurnEnded(done));
}

#[tokio::test]
async fn a_held_turn_end_comes_after_the_news_that_its_plugin_is_gone() {
    let transport = transport(WsConfig::default()).await;
    let (ticket, mut link, mut socket) = connected(&transport, "s").await;

    let done = report_ahead_of_the_reply(&transport, &ticket, &mut link, &mut socket).await;
    socket.close(None).await.unwrap();

    // Whatever the plugin had sent is lost with it: the turn must fail, not end with the hook's words.
    assert!(matches!(
        next_event(&mut link).await,
        ChannelEvent::Disconnected { .. }
    ));
    assert_eq!(next_event(&mut link).await, ChannelEvent::TurnEnded(done));
}

#[tokio::test]
async fn revoking_closes_the_connection_and_a_replaced_ticket_is_left_alone() {
    let transport = transport(WsConfig::default()).await;
    let (ticket, mut link, mut socket) = connected(&transport, "s").await;
    transport.revoke(&ticket);
    assert_eq!(close_code(&mut socket).await, close::REGISTRATION_ENDED);
    assert_eq!(
        tokio::time::timeout(PATIENCE, link.recv()).await.unwrap(),
        None
    );
    let err = transport.accept(&ticket, PATIENCE).await.unwrap_err();
    assert!(matches!(err, TransportError::NotRegistered(_)), "{err}");

    // A newer registration is not undone by revoking an older ticket.
    let old = transport.register(&key("t"));
    let (new, _link, mut socket) = {
        let new = transport.register(&key("t"));
        let mut socket = plugin(&transport, "t", Some(&new.token)).await;
        assert_eq!(next_json(&mut socket).await["type"], "hello_ack");
        let link = transport.accept(&new, PATIENCE).await.unwrap();
        (new, link, socket)
    };
    transport.revoke(&old);
    socket
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "pong");
    drop(new);
}

/// Sends raw bytes to the listener and returns what it answers until it closes.
async fn raw_exchange(transport: &WsTransport, request: &str) -> String {
    let url = transport.endpoint();
    let address = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0; 4096];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut response))
        .await
        .expect("answered in time")
        .unwrap();
    String::from_utf8_lossy(&response[..read]).into_owned()
}

#[tokio::test]
async fn an_upgrade_other_than_websocket_13_is_refused_as_rfc_6455_says() {
    let transport = transport(WsConfig::default()).await;
    let upgrade = |version: &str, key: &str| {
        format!(
            "GET /bridge HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        )
    };
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let old = raw_exchange(&transport, &upgrade("8", key)).await;
    assert!(old.starts_with("HTTP/1.1 426"), "{old}");
    assert!(
        old.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{old}"
    );
    let bad_key = raw_exchange(&transport, &upgrade("13", "short")).await;
    assert!(bad_key.starts_with("HTTP/1.1 400"), "{bad_key}");
    let plain_get = raw_exchange(&transport, "GET /bridge HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(plain_get.starts_with("HTTP/1.1 400"), "{plain_get}");
    let fine = raw_exchange(&transport, &upgrade("13", key)).await;
    assert!(fine.starts_with("HTTP/1.1 101"), "{fine}");
    // The RFC's own example: this key's accept value.
    assert!(fine.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{fine}");
}

#[tokio::test]
async fn other_paths_are_not_found() {
    let transport = transport(WsConfig::default()).await;
    let url = transport.endpoint().replace("/bridge", "/other");
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let url = transport.endpoint().replace("/bridge", "/hooks");
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("405"), "{err}");
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_and_silent_ones_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let transport = transport(
        WsConfig::default()
            .max_connections(1)
            .hello_timeout(Duration::from_millis(300)),
    )
    .await;
    let addr = transport.local_addr();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut refusal = String::new();
    tokio::time::timeout(Duration::from_secs(5), over.read_to_string(&mut refusal))
        .await
        .expect("refused at once")
        .unwrap();
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    // The silent one is closed when its head does not come; its place serves the next.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest))
        .await
        .expect("closed")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
    next.write_all(b"GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    next.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test]
async fn a_flood_of_frames_nobody_reads_neither_stalls_the_connection_nor_hides_its_close() {
    let transport = transport(WsConfig::default()).await;
    let (_ticket, mut link, mut socket) = connected(&transport, "agent::flood").await;
    // Between turns nobody reads the link: far more frames than it holds.
    for n in 0..300 {
        let frame = json!({"type": "reply", "content": format!("STALE-{n}")});
        socket.send(Message::text(frame.to_string())).await.unwrap();
    }
    socket.close(None).await.unwrap();
    // The connection was read to its close, which the link reports though it is full.
    tokio::time::timeout(PATIENCE, async {
        while link.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the close was noticed");
    // What was kept is the oldest frames, up to the link's capacity; the rest were dropped.
    let mut kept = 0;
    while let Some(event) = link.try_recv() {
        if matches!(event, ChannelEvent::Reply(_)) {
            kept += 1;
        }
    }
    assert!(kept < 300, "{kept} frames kept");
}
