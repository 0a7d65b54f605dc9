//! The small endpoints: the model list, health and metrics.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use super::{BridgeConfig, ResponseBody, Shared, full, respond};
use crate::openai::ApiError;

/// `GET /v1/models`, or one model's `GET /v1/models/{id}`.
pub(crate) fn models(config: &BridgeConfig, id: Option<&str>) -> Response<ResponseBody> {
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

/// `GET /health`: 200 while serving, 503 once shutting down, with the backend's counts.
pub(crate) fn health(shared: &Shared) -> Response<ResponseBody> {
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

/// `GET /metrics`: Prometheus text.
pub(crate) fn metrics(shared: &Shared) -> Response<ResponseBody> {
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

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
