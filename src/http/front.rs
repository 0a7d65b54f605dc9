//! The front of the stack: routes a request, checks the API key, and hands it to its endpoint.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use tower::{Service, ServiceExt};

use super::auth::authorize;
use super::browsers;
use super::chat::ChatRoute;
use super::endpoints;
use super::routes::Route;
use super::{RequestBody, ResponseBody, Shared, respond};

/// Routes requests; chat requests go to the [`ChatRoute`], wrapped in any route layers.
#[derive(Clone)]
pub(crate) struct Front {
    shared: Arc<Shared>,
    chat: ChatRoute,
}

impl Front {
    pub(crate) fn new(shared: Arc<Shared>, chat: ChatRoute) -> Self {
        Self { shared, chat }
    }
}

impl Service<Request<RequestBody>> for Front {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let shared = &self.shared;
        if let Err(refused) = browsers::check(&shared.config, request.headers()) {
            return answered(respond(refused));
        }
        let route = match Route::of(request.method(), request.uri().path()) {
            Ok(route) => route,
            Err(refusal) => return answered(refusal.into_response()),
        };
        if route.is_api()
            && let Err(error) = authorize(shared.config.api_key.as_deref(), request.headers())
        {
            return answered(respond(error));
        }
        match route {
            Route::Chat => Box::pin(self.chat.clone().oneshot(request)),
            Route::Models(id) => answered(endpoints::models(&shared.config, id.as_deref())),
            Route::Health => answered(endpoints::health(shared)),
            Route::Metrics => answered(endpoints::metrics(shared)),
        }
    }
}

/// A response that is ready now.
fn answered(
    response: Response<ResponseBody>,
) -> BoxFuture<'static, Result<Response<ResponseBody>, Infallible>> {
    Box::pin(std::future::ready(Ok(response)))
}
