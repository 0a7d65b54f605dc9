//! Serving a [`Bridge`](crate::http::Bridge) (or any stack around it) over TCP with hyper.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{BoxError, Service};

/// Pending connections the kernel queues for us. The default of 128 overflows when hundreds of clients
/// (or agent plugins) connect at once, and an overflowed SYN is retried only after a second.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with a listen backlog large enough for bursts of connections.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How many connections a listener serves at once, and how long a connection may take to say what it
/// wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Connections served at once; one more is answered 503 and closed. Each holds a file descriptor, so
    /// this keeps idle or slow connections from using up the process's (and locking clients out).
    pub max_connections: usize,
    /// How long a connection may take to send a request head: its first, or the next one on a kept-alive
    /// connection. A connection that sends nothing, or half a head, is closed then.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    /// 512 connections, 30 s to send a request head.
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// Sets [`Limits::max_connections`] (at least 1).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Sets [`Limits::header_read_timeout`].
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }
}

/// Accepts connections within a cap, backing off when accepting fails (out of file descriptors, typically)
/// instead of spinning and filling the log.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max: usize,
    refusal: Bytes,
    failures: u32,
}

impl Acceptor {
    /// Accepts on `listener`, at most `max` connections at once; one over the cap gets `refusal` and is
    /// closed.
    pub fn new(listener: TcpListener, max: usize, refusal: Bytes) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max)),
            max,
            refusal,
            failures: 0,
        }
    }

    /// The next connection within the cap, and the permit it holds until it closes.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => {
                    self.failures = 0;
                    accepted
                }
                Err(error) => {
                    self.failures += 1;
                    // Once, twice, four times, …: a lasting cause is logged, not every retry.
                    if self.failures.is_power_of_two() {
                        tracing::warn!(%error, failures = self.failures, "accepting a connection failed; backing off");
                    }
                    let backoff = Duration::from_millis(10) * 2u32.pow(self.failures.min(7));
                    tokio::time::sleep(backoff.min(Duration::from_secs(1))).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => return (stream, peer, permit),
                Err(_) => {
                    tracing::warn!(%peer, max = self.max, "too many connections; refusing one");
                    let refusal = self.refusal.clone();
                    // In a task of its own: a peer that does not read must not hold up the accept loop.
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            stream.write_all(&refusal).await?;
                            stream.shutdown().await
                        })
                        .await;
                    });
                }
            }
        }
    }

    /// The listener's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Waits until `stream` has sent enough for hyper to tell HTTP/1.1 from HTTP/2: a byte that is not the
/// HTTP/2 preface's, or the whole preface. False if it closed first.
async fn version_known(stream: &TcpStream) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut seen = [0u8; PREFACE.len()];
    loop {
        let n = match stream.peek(&mut seen).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if seen[..n] != PREFACE[..n] || n == PREFACE.len() {
            return true;
        }
        // Part of the preface: peeking again returns at once, so look again a little later.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The HTTP answer to a connection over the cap: 503, OpenAI's error shape, `Retry-After`.
fn too_many_connections(max: usize) -> Bytes {
    let body = format!(
        r#"{{"error":{{"message":"too many connections: this bridge serves at most {max} at once; retry shortly","type":"server_error","param":null,"code":"too_many_connections"}}}}"#
    );
    Bytes::from(format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// Serves HTTP/1.1 and HTTP/2 on `listener` until `shutdown` resolves, within the default [`Limits`]; see
/// [`serve_with`].
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    serve_with(listener, service, shutdown, grace, Limits::default()).await
}

/// Serves HTTP/1.1 and HTTP/2 on `listener` within `limits` until `shutdown` resolves; then stops accepting
/// and waits up to `grace` for open connections to finish (streams are ended by
/// [`Bridge::begin_shutdown`](crate::http::Bridge::begin_shutdown)) before dropping the rest.
pub async fn serve_with<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: Limits,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Counts for the first request head and for each next one on a kept-alive connection alike.
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // A peer that stops answering pings is gone.
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut acceptor = Acceptor::new(
        listener,
        limits.max_connections,
        too_many_connections(limits.max_connections),
    );
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, permit) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (builder, service, watcher) = (builder.clone(), service.clone(), graceful.watcher());
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            // Until it can tell HTTP/1.1 from HTTP/2, hyper has no timer running.
            let known = tokio::time::timeout(header_read_timeout, version_known(&stream)).await;
            if !matches!(known, Ok(true)) {
                tracing::debug!(%peer, "a connection did not say what it speaks in time; closed");
                return;
            }
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(acceptor);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the grace period; closing them"
        );
    }
    Ok(())
}
