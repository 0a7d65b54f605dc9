//! Heartbeats for streaming responses: after each full interval in which the response body sent nothing, a
//! heartbeat frame, so that clients and proxies with an idle watchdog keep waiting.
//!
//! - The handler chooses the frame by putting a [`HeartbeatFrame`] in its response's extensions, so this
//!   layer knows nothing of the stream's format. A response without one passes through untouched.
//! - Every frame of the inner body restarts the interval; nothing is sent once the inner body has ended
//!   (or failed).
//!
//! For an OpenAI-compatible stream the frame must be a real event: clients such as OpenClaw ignore SSE
//! comments when they decide a stream is idle.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, StreamBody};
//! use synthesis_bridge::layers::heartbeat::{HeartbeatFrame, HeartbeatLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let quiet_stream = |_: Request<()>| async {
//!     let body = StreamBody::new(futures::stream::pending::<Result<http_body::Frame<Bytes>, Infallible>>());
//!     let mut response = Response::new(body);
//!     response.extensions_mut().insert(HeartbeatFrame::new(": still working\n\n"));
//!     Ok::<_, Infallible>(response)
//! };
//! let service = ServiceBuilder::new()
//!     .layer(HeartbeatLayer::new(Duration::from_secs(15)))
//!     .service_fn(quiet_stream);
//!
//! let mut body = service.oneshot(Request::new(())).await.unwrap().into_body();
//! let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
//! assert_eq!(frame, ": still working\n\n");
//! # }
//! ```

mod body;
mod layer;
mod service;

use bytes::Bytes;

pub use body::HeartbeatBody;
pub use layer::HeartbeatLayer;
pub use service::{Heartbeat, ResponseFuture};

/// The frame a response wants sent while it is quiet; a response extension.
#[derive(Debug, Clone)]
pub struct HeartbeatFrame(Bytes);

impl HeartbeatFrame {
    /// Sends `frame` as it is.
    pub fn new(frame: impl Into<Bytes>) -> Self {
        Self(frame.into())
    }
}
