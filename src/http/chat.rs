//! The chat-completions route: reads a chat request and runs it through the turn layers.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::BodyExt;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::layer_errors::{FinalChunkBody, classify};
use super::outcome::{TurnRecord, Unanswered, observe};
use super::prepare::prepare;
use super::{RequestBody, ResponseBody, Shared, TurnStack, respond, shutting_down};
use crate::openai::ChunkEncoder;

/// `POST /v1/chat/completions` once routed and past the bridge's API key: what
/// [`BridgeBuilder::route_layer`](super::BridgeBuilder::route_layer) wraps. It reads the request (its
/// body too), works out the turn, and answers with the turn's stream or JSON, or an OpenAI error.
#[derive(Clone)]
pub struct ChatRoute {
    inner: BoxCloneSyncService<Request<RequestBody>, Response<ResponseBody>, Infallible>,
}

impl ChatRoute {
    pub(crate) fn new(shared: Arc<Shared>, turns: TurnStack) -> Self {
        Self::boxed(Chat { shared, turns })
    }

    pub(crate) fn boxed<S>(service: S) -> Self
    where
        S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            inner: BoxCloneSyncService::new(service),
        }
    }
}

impl fmt::Debug for ChatRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatRoute").finish_non_exhaustive()
    }
}

impl Service<Request<RequestBody>> for ChatRoute {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        self.inner.call(request)
    }
}

/// The route's own work, inside any route layers.
#[derive(Clone)]
struct Chat {
    shared: Arc<Shared>,
    turns: TurnStack,
}

impl Service<Request<RequestBody>> for Chat {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let chat = self.clone();
        Box::pin(async move { Ok(chat.answer(request).await) })
    }
}

impl Chat {
    /// Answers the request, watching how its turn ends (the one place outcomes are recorded).
    async fn answer(self, request: Request<RequestBody>) -> Response<ResponseBody> {
        let span = tracing::info_span!(
            "turn",
            session = tracing::field::Empty,
            turn_id = tracing::field::Empty
        );
        let record = TurnRecord::start(self.shared.metrics.clone(), span);
        let unanswered = Unanswered::new(record.clone());
        let response = self.turn(request, record.clone()).await;
        unanswered.answered();
        observe(response, record).map(|body| body.boxed_unsync())
    }

    async fn turn(
        self,
        request: Request<RequestBody>,
        record: TurnRecord,
    ) -> Response<ResponseBody> {
        let shared = self.shared;
        let (parts, body) = request.into_parts();
        if let Err(refused) = super::browsers::check_json(&parts.headers) {
            return respond(refused);
        }
        let chat = match prepare(&shared.config, record.clone(), &parts, body).await {
            Ok(chat) => chat,
            Err(error) => return respond(error),
        };
        if shared.shutdown.is_cancelled() {
            return respond(shutting_down());
        }
        let answered = tokio::select! {
            answered = self.turns.oneshot(Request::from_parts(parts, chat)) => answered,
            // Dropping the turn stack's future gives up a queue place, or cancels a turn still starting.
            () = shared.shutdown.cancelled() => return respond(shutting_down()),
        };
        match answered {
            Ok(response) => {
                let encoder = response.extensions().get::<ChunkEncoder>().cloned();
                response.map(|body| FinalChunkBody::new(body, encoder, record).boxed_unsync())
            }
            Err(error) => respond(classify(&error)),
        }
    }
}
