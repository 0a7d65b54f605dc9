//! Stream timeouts: a deadline for the whole response and an idle timeout between its data frames, two
//! separate clocks with an error each.
//!
//! - The deadline runs from the call to the end of the response body. Before the response head it fails
//!   the call with [`DeadlineElapsed`]; after, it ends the body with that error.
//! - The idle clock starts with the response head and restarts with every data frame; when it runs out the
//!   body ends with [`IdleElapsed`]. Frames added by layers outside this one (heartbeats) are not seen here,
//!   so they do not count as activity.
//! - The clocks run whether or not the body is polled (a client that stops reading stops the server from
//!   polling it): a watchdog task ends the body when one runs out.
//! - Either way the inner future or body is dropped at once, which is how the handler learns to stop its
//!   work. Turning the error into something a client understands (a final event of a stream) is left to an
//!   outer layer.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, StreamBody};
//! use synthesis_bridge::layers::timeout::{IdleElapsed, StreamTimeoutLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // A handler whose body never produces anything.
//! let silent = |_: Request<()>| async {
//!     let body = StreamBody::new(futures::stream::pending::<Result<http_body::Frame<bytes::Bytes>, Infallible>>());
//!     Ok::<_, Infallible>(Response::new(body))
//! };
//! let service = ServiceBuilder::new()
//!     .layer(StreamTimeoutLayer::new().idle(Some(Duration::from_secs(30))))
//!     .service_fn(silent);
//!
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! let error = response.into_body().frame().await.unwrap().unwrap_err();
//! assert!(error.is::<IdleElapsed>());
//! # }
//! ```

mod body;
mod clock;
mod error;
mod future;
mod layer;
mod service;

pub use body::TimeoutBody;
pub use error::{DeadlineElapsed, IdleElapsed};
pub use future::ResponseFuture;
pub use layer::StreamTimeoutLayer;
pub use service::StreamTimeout;
