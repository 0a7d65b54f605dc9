//! The front of the stack: routing, authentication, the small endpoints, reading chat requests, and turning
//! the turn layers' errors into OpenAI errors.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use tower::{Service, ServiceExt};

use super::layer_errors::{FinalChunkBody, classify};
use super::prepare::prepare;
use super::{
    BridgeConfig, RequestBody, ResponseBody, Shared, TurnStack, full, respond, shutting_down,
};
use crate::metrics::TurnOutcome;
use crate::openai::{ApiError, ChunkEncoder};

/// Routes requests and runs chat requests through the turn stack.
#[derive(Clone)]
pub(crate) struct Front {
    shared: Arc<Shared>,
    turns: TurnStack,
}

impl Front {
    pub(crate) fn new(shared: Arc<Shared>, turns: TurnStack) -> Self {
        Self { shared, turns }
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
        let front = self.clone();
        Box::pin(async move { Ok(front.route(request).await) })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Models(Option<String>),
    Health,
    Metrics,
}

impl Front {
    async fn route(self, request: Request<RequestBody>) -> Response<ResponseBody> {
        let shared = &self.shared;
        let path = request.uri().path();
        let endpoint = match path {
            "/v1/chat/completions" | "/chat/completions" => Endpoint::Chat,
            "/v1/models" | "/models" => Endpoint::Models(None),
            "/health" => Endpoint::Health,
            "/metrics" => Endpoint::Metrics,
            _ => match path
                .strip_prefix("/v1/models/")
                .or_else(|| path.strip_prefix("/models/"))
            {
                Some(id) if !id.is_empty() => Endpoint::Models(Some(id.to_owned())),
                _ => {
                    return respond(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "invalid_request_error",
                        "unknown_url",
                        format!(
                            "unknown path {path}: this bridge serves /v1/chat/completions and /v1/models"
                        ),
                    ));
                }
            },
        };
        let allowed = if endpoint == Endpoint::Chat {
            Method::POST
        } else {
            Method::GET
        };
        if request.method() != allowed {
            let mut response = respond(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                format!("{path} accepts {allowed} only"),
            ));
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_str(allowed.as_str()).expect("a method name is a valid header"),
            );
            return response;
        }
        if matches!(endpoint, Endpoint::Chat | Endpoint::Models(_))
            && let Err(error) = authorize(&shared.config, request.headers())
        {
            return respond(error);
        }
        match endpoint {
            Endpoint::Chat => self.chat(request).await,
            Endpoint::Models(id) => models(&shared.config, id.as_deref()),
            Endpoint::Health => health(shared),
            Endpoint::Metrics => {
                let text = shared
                    .metrics
                    .render(&shared.backend.status(), shared.per_session.waiting());
                let mut response = Response::new(full(text));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
        }
    }

    async fn chat(self, request: Request<RequestBody>) -> Response<ResponseBody> {
        let shared = self.shared;
        let (parts, body) = request.into_parts();
        let chat = match prepare(&shared.config, &shared.metrics, &parts, body).await {
            Ok(chat) => chat,
            Err(error) => {
                shared
                    .metrics
                    .record_turn(TurnOutcome::Rejected, Default::default());
                return respond(error);
            }
        };
        if shared.shutdown.is_cancelled() {
            chat.record.finish(TurnOutcome::Shutdown);
            return respond(shutting_down());
        }
        let record = chat.record.clone();
        let answered = tokio::select! {
            answered = self.turns.oneshot(Request::from_parts(parts, chat)) => answered,
            // Dropping the turn stack's future gives up a queue place, or cancels a turn still starting.
            () = shared.shutdown.cancelled() => {
                record.finish(TurnOutcome::Shutdown);
                return respond(shutting_down());
            }
        };
        match answered {
            Ok(response) => {
                let encoder = response.extensions().get::<ChunkEncoder>().cloned();
                response.map(|body| FinalChunkBody::new(body, encoder, record).boxed_unsync())
            }
            Err(error) => {
                let (api_error, outcome) = classify(&error);
                record.finish(outcome);
                respond(api_error)
            }
        }
    }
}

fn authorize(config: &BridgeConfig, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &config.api_key else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(key) if constant_time_eq(key.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(unauthorized("invalid API key")),
        None => Err(unauthorized(
            "missing API key: send the header `Authorization: Bearer <key>`",
        )),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid_api_key",
        message,
    )
}

/// Compares without an early exit, so response timing does not reveal how much of a guessed key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn models(config: &BridgeConfig, id: Option<&str>) -> Response<ResponseBody> {
    let model = |id: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": "synthesis-bridge"});
    let body = match id {
        None => {
            json!({"object": "list", "data": config.models.iter().map(|id| model(id)).collect::<Vec<_>>()})
        }
        Some(id) if config.models.iter().any(|known| known == id) => model(id),
        Some(id) => {
            return respond(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!(
                    "the model {id} does not exist; this bridge serves {}",
                    config.models.join(", ")
                ),
            ));
        }
    };
    json_response(StatusCode::OK, &body)
}

fn health(shared: &Shared) -> Response<ResponseBody> {
    let status = shared.backend.status();
    let ok = !shared.shutdown.is_cancelled();
    let body = json!({
        "ok": ok,
        "version": env!("CARGO_PKG_VERSION"),
        "sessions": status.sessions,
        "processes": status.processes,
        "connections": status.connections,
        "waiting": shared.per_session.waiting(),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(code, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
