//! The agent-side listener: one HTTP/1.1 server with two routes. `GET /bridge` upgrades to the plugin's
//! WebSocket; `POST /hooks` takes the agent's hook reports (Claude Code's `http` hooks), so that no report
//! needs a process or a connection of its own.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};

use crate::WsConfig;
use crate::connection;
use crate::hooks;
use crate::protocol::{HOOKS_PATH, PATH};
use crate::registry::Registry;

/// The largest hook report accepted. Claude Code's carry the agent's last message, which can be long.
const MAX_HOOK_BYTES: usize = 8 << 20;

/// What every connection of one listener shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) registry: Arc<Registry>,
    pub(crate) config: Arc<WsConfig>,
    pub(crate) shutdown: CancellationToken,
}

/// Serves one accepted TCP connection until it closes or the transport shuts down.
pub(crate) async fn serve(stream: TcpStream, shared: Shared) {
    let service = {
        let shared = shared.clone();
        service_fn(move |request| route(request, shared.clone()))
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        // A connection that never finishes its request head is dropped, whoever opened it. hyper also
        // counts a kept-alive connection's wait for its next request against it: Claude Code closes its
        // hook connection after 5 s idle anyway (measurements, J).
        .header_read_timeout(shared.config.hello_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        served = connection => if let Err(err) = served {
            debug!(%err, "agent-side connection ended");
        },
        () = shared.shutdown.cancelled() => {}
    }
}

async fn route(
    request: Request<Incoming>,
    shared: Shared,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let response = match (request.method(), path) {
        (&Method::GET, PATH) => upgrade(request, shared),
        (&Method::POST, HOOKS_PATH) => hook(request, &shared).await,
        (_, PATH | HOOKS_PATH) => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found; plugins connect to /bridge and hooks post to /hooks\n",
        ),
    };
    Ok(response)
}

/// Accepts a WebSocket upgrade (RFC 6455 §4.2) and serves the socket once hyper hands it over.
fn upgrade(mut request: Request<Incoming>, shared: Shared) -> Response<Full<Bytes>> {
    let headers = request.headers();
    let upgrading = header_has_token(headers, &UPGRADE, "websocket")
        && header_has_token(headers, &CONNECTION, "upgrade");
    // A key is 16 random bytes in base64: 24 characters, the last two `==`.
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .filter(|key| key.len() == 24 && key.as_bytes().ends_with(b"=="));
    let Some(key) = key.filter(|_| upgrading) else {
        return plain(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    };
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        // RFC 6455, 4.2.2: say which version is spoken.
        let mut refusal = plain(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        refusal
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, http::HeaderValue::from_static("13"));
        return refusal;
    }
    let accept = derive_accept_key(key.as_bytes());
    let upgraded = hyper::upgrade::on(&mut request);
    let serving = async move {
        let upgraded = match upgraded.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                debug!(%err, "the WebSocket upgrade failed");
                return;
            }
        };
        let socket = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(shared.config.websocket()),
        )
        .await;
        connection::serve(socket, shared.registry, shared.config, shared.shutdown).await;
    };
    tokio::spawn(serving.in_current_span());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "Upgrade")
        .header(SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::default())
        .expect("a valid response")
}

async fn hook(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let session = request.uri().query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "session")
            .map(|(_, value)| value.into_owned())
    });
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(session) = session
        .zip(token)
        .and_then(|(session, token)| shared.registry.authenticate(&session, &token))
    else {
        return plain(StatusCode::UNAUTHORIZED, "unknown session or wrong token\n");
    };
    let body = match Limited::new(request.into_body(), MAX_HOOK_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            let status = if err.is::<LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return plain(status, &format!("cannot read the report: {err}\n"));
        }
    };
    match hooks::report(&session, &body).await {
        Ok(answer) => Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(answer.to_string())))
            .expect("a valid response"),
        Err(err) => plain(StatusCode::BAD_REQUEST, &format!("{err}\n")),
    }
}

fn header_has_token(headers: &HeaderMap, name: &http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::copy_from_slice(text.as_bytes())))
        .expect("a valid response")
}
