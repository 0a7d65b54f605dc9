//! The service: admits each request into its key's slots before calling the inner service.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use http::{Request, Response};
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::future::ResponseFuture;
use super::table::{Admission, KeyTable};
use super::{AdmissionElapsed, QueueFull, SlotBody, SlotLease};

/// Runs at most N requests per key at once; the others wait in FIFO order (see the [module](super)).
pub struct ConcurrencyPerKey<S, F, K> {
    inner: S,
    key_of: F,
    table: Arc<KeyTable<K>>,
}

impl<S, F, K> ConcurrencyPerKey<S, F, K> {
    pub(super) fn new(inner: S, key_of: F, table: Arc<KeyTable<K>>) -> Self {
        Self {
            inner,
            key_of,
            table,
        }
    }
}

impl<S: Clone, F: Clone, K> Clone for ConcurrencyPerKey<S, F, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            key_of: self.key_of.clone(),
            table: self.table.clone(),
        }
    }
}

impl<S: fmt::Debug, F, K> fmt::Debug for ConcurrencyPerKey<S, F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyPerKey")
            .field("inner", &self.inner)
            .field("limits", &self.table.limits)
            .finish_non_exhaustive()
    }
}

impl<S, F, K, B, ResBody> Service<Request<B>> for ConcurrencyPerKey<S, F, K>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    F: Fn(&Request<B>) -> Option<K>,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Response = Response<SlotBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    /// Always ready: capacity depends on the request's key, so it is taken in the response future, and the
    /// inner service's readiness is awaited there too (on a clone).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let service = self.inner.clone();
        let Some(key) = (self.key_of)(&request) else {
            return ResponseFuture::calling(service, request, None);
        };
        let limits = self.table.limits;
        match self.table.admit(key) {
            Admission::Now(slot) => {
                ResponseFuture::calling(service, request, Some(SlotLease::new(slot)))
            }
            Admission::Full => ResponseFuture::refused(Box::new(QueueFull {
                queue_depth: limits.queue_depth,
                retry_after: limits.retry_after,
            })),
            Admission::Queued(waiter) => {
                let queued_at = Instant::now();
                let admission = async move {
                    let slot = match limits.admission_timeout {
                        None => waiter.admitted().await,
                        Some(timeout) => tokio::time::timeout(timeout, waiter.admitted())
                            .await
                            .map_err(|_| AdmissionElapsed {
                                waited: queued_at.elapsed(),
                            })?,
                    };
                    Ok(SlotLease::new(slot))
                };
                ResponseFuture::waiting(admission.boxed(), service, request)
            }
        }
    }
}
