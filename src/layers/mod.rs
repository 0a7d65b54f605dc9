//! Tower middleware for serving long-running streamed answers, independent of the OpenAI format:
//!
//! - [`concurrency`]: at most N requests in flight per key, the rest waiting in FIFO order;
//! - [`timeout`]: a deadline for the whole response and an idle timeout between its frames;
//! - [`heartbeat`]: a frame of the handler's choosing whenever a streaming response is quiet.
//!
//! [`Bridge`](crate::http::Bridge) stacks them in front of its turn handler; see
//! [`BridgeBuilder`](crate::http::BridgeBuilder) for the order and why.

pub mod concurrency;
pub mod heartbeat;
pub mod timeout;

use std::time::Duration;

use tokio::time::Instant;

/// `after` from now, or a time too far off to matter when that is beyond what an `Instant` can hold.
fn instant_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 60 * 60))
}
