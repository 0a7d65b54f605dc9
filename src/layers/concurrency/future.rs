//! The response future: waits for the key's slot, then calls the inner service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::future::BoxFuture;
use http::{Request, Response};
use tower::util::Oneshot;
use tower::{BoxError, Service, ServiceExt};

use super::{SlotBody, SlotLease};

/// Resolves to the key's slot, or why the request was not admitted.
pub(super) type Admission = BoxFuture<'static, Result<SlotLease, BoxError>>;

pin_project_lite::pin_project! {
    /// The [`ConcurrencyPerKey`](super::ConcurrencyPerKey) service's future.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Waiting {
            admission: Admission,
            call: Option<(S, Request<B>)>,
        },
        Calling {
            #[pin]
            call: Oneshot<S, Request<B>>,
            lease: Option<SlotLease>,
        },
        Refused {
            error: Option<BoxError>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(super) fn waiting(admission: Admission, service: S, request: Request<B>) -> Self {
        Self {
            state: State::Waiting {
                admission,
                call: Some((service, request)),
            },
        }
    }

    pub(super) fn calling(service: S, request: Request<B>, lease: Option<SlotLease>) -> Self {
        Self {
            state: State::calling(service, request, lease),
        }
    }

    pub(super) fn refused(error: BoxError) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<SlotBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let admitted = match this.state.as_mut().project() {
                StateProj::Waiting { admission, call } => {
                    let lease = ready!(admission.as_mut().poll(cx))?;
                    let (service, request) = call.take().expect("polled after completion");
                    State::calling(service, request, Some(lease))
                }
                StateProj::Calling { call, lease } => {
                    let response = ready!(call.poll(cx)).map_err(Into::into)?;
                    // A claimed lease is the handler's to hold; the body lets go of its share.
                    let lease = lease.take().filter(|lease| !lease.is_claimed());
                    return Poll::Ready(Ok(response.map(|body| SlotBody::new(body, lease))));
                }
                StateProj::Refused { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")));
                }
            };
            this.state.set(admitted);
        }
    }
}

impl<S, B> State<S, B>
where
    S: Service<Request<B>>,
{
    fn calling(service: S, mut request: Request<B>, lease: Option<SlotLease>) -> Self {
        if let Some(lease) = &lease {
            // The handler may clone the lease into work that outlives its response.
            request.extensions_mut().insert(lease.clone());
        }
        State::Calling {
            call: service.oneshot(request),
            lease,
        }
    }
}
