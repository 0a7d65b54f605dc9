//! Per-key concurrency: at most N requests in flight per key (one by default), the rest waiting in FIFO
//! order in a bounded queue.
//!
//! - The key comes from a function of the request; requests it gives no key are not limited. Different
//!   keys never wait for each other.
//! - A request that finds its key's queue full fails at once with [`QueueFull`]; one that waits longer than
//!   the admission timeout fails with [`AdmissionElapsed`] and gives its queue place back.
//! - A request's slot is held until its response body has ended or been dropped *and* every clone of its
//!   [`SlotLease`] (a request extension) is gone. A handler whose work can outlive the response, such as an
//!   agent still stopping after its client left, keeps a clone until the work is really over, so the next
//!   request never finds the work still running.
//! - A handler that knows better than the body when its work is over [claims](SlotLease::claim) the lease:
//!   then only the lease's clones hold the slot. A client that stops reading keeps a body alive for as long
//!   as it stays connected, and nothing polls it to its end; the work behind it may long be over.
//! - The key table holds only keys with requests in flight or waiting.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Request, Response};
//! use synthesis_bridge::layers::concurrency::{ConcurrencyPerKeyLayer, QueueFull};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // One request at a time per `x-user`, nobody waiting: a second concurrent request is refused.
//! let limit = ConcurrencyPerKeyLayer::new(|request: &Request<String>| {
//!     request.headers().get("x-user").cloned()
//! })
//! .queue_depth(0);
//! let service = ServiceBuilder::new().layer(limit.clone()).service_fn(|request: Request<String>| async move {
//!     Ok::<_, Infallible>(Response::new(request.into_body()))
//! });
//!
//! let request = || Request::builder().header("x-user", "ada").body("hi".to_owned()).unwrap();
//! let first = service.clone().oneshot(request()).await.unwrap();
//! let refused = service.clone().oneshot(request()).await.unwrap_err();
//! assert!(refused.is::<QueueFull>());
//!
//! drop(first); // the body is done: the slot is free again, and the key is forgotten
//! assert_eq!(limit.active_keys(), 0);
//! assert!(service.oneshot(request()).await.is_ok());
//! # }
//! ```

mod body;
mod error;
mod future;
mod layer;
mod service;
mod table;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use body::SlotBody;
pub use error::{AdmissionElapsed, QueueFull};
pub use future::ResponseFuture;
pub use layer::ConcurrencyPerKeyLayer;
pub use service::ConcurrencyPerKey;

/// A share in the slot a request holds, found in the request's extensions.
///
/// The slot is freed once the response body is done and every clone of the lease is dropped: clone it into
/// work that outlives the response. Or [claim](Self::claim) it, and only the clones hold the slot.
#[derive(Clone)]
pub struct SlotLease {
    held: Arc<Held>,
}

struct Held {
    // Type-erased so that handlers need not know the key type.
    _slot: Box<dyn Any + Send + Sync>,
    claimed: AtomicBool,
}

impl SlotLease {
    fn new<K>(slot: table::Slot<K>) -> Self
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        Self {
            held: Arc::new(Held {
                _slot: Box::new(slot),
                claimed: AtomicBool::new(false),
            }),
        }
    }

    /// Takes the slot's release into the handler's hands: the response body no longer holds the slot, and
    /// it is freed once every clone of the lease is dropped, however long the client takes to read the
    /// body. Claim it before the handler's response is returned.
    pub fn claim(&self) -> Self {
        self.held.claimed.store(true, Ordering::Release);
        self.clone()
    }

    fn is_claimed(&self) -> bool {
        self.held.claimed.load(Ordering::Acquire)
    }
}

impl fmt::Debug for SlotLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SlotLease")
    }
}
