//! The routing table: which endpoint a request is for, or the 404 or 405 that says why none is.

use http::{HeaderValue, Method, Response, StatusCode, header};

use super::{ResponseBody, respond};
use crate::openai::ApiError;

/// An endpoint of the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `POST /v1/chat/completions` (also `/chat/completions`).
    Chat,
    /// `GET /v1/models` (also `/models`), or one model's `GET /v1/models/{id}`.
    Models(Option<String>),
    /// `GET /health`.
    Health,
    /// `GET /metrics`.
    Metrics,
}

/// Why no route fits a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No endpoint has this path: 404.
    UnknownPath(String),
    /// The endpoint takes another method: 405 with `Allow`.
    WrongMethod { path: String, allowed: Method },
}

impl Refusal {
    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        match self {
            Self::UnknownPath(path) => respond(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "unknown_url",
                format!(
                    "unknown path {path}: this bridge serves /v1/chat/completions and /v1/models"
                ),
            )),
            Self::WrongMethod { path, allowed } => {
                let mut response = respond(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "invalid_request_error",
                    "method_not_allowed",
                    format!("{path} accepts {allowed} only"),
                ));
                response.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_str(allowed.as_str())
                        .expect("a method name is a valid header"),
                );
                response
            }
        }
    }
}

impl Route {
    /// The route of `method` and `path`, or why there is none.
    pub(crate) fn of(method: &Method, path: &str) -> Result<Self, Refusal> {
        let route = match path {
            "/v1/chat/completions" | "/chat/completions" => Self::Chat,
            "/v1/models" | "/models" => Self::Models(None),
            "/health" => Self::Health,
            "/metrics" => Self::Metrics,
            _ => match path
                .strip_prefix("/v1/models/")
                .or_else(|| path.strip_prefix("/models/"))
            {
                Some(id) if !id.is_empty() => Self::Models(Some(id.to_owned())),
                _ => return Err(Refusal::UnknownPath(path.to_owned())),
            },
        };
        let allowed = route.method();
        if method != allowed {
            return Err(Refusal::WrongMethod {
                path: path.to_owned(),
                allowed,
            });
        }
        Ok(route)
    }

    /// The one method the route takes.
    fn method(&self) -> Method {
        match self {
            Self::Chat => Method::POST,
            _ => Method::GET,
        }
    }

    /// Whether the route is part of the OpenAI API, which the API key guards. Health and metrics are for
    /// the machine the bridge runs on, and stay open to its probes.
    pub(crate) fn is_api(&self) -> bool {
        matches!(self, Self::Chat | Self::Models(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Result<Route, Refusal> {
        Route::of(&method, path)
    }

    #[test]
    fn each_path_has_its_route_and_method() {
        assert_eq!(route(Method::POST, "/v1/chat/completions"), Ok(Route::Chat));
        assert_eq!(route(Method::POST, "/chat/completions"), Ok(Route::Chat));
        assert_eq!(
            route(Method::GET, "/v1/models/claude"),
            Ok(Route::Models(Some("claude".into())))
        );
        assert_eq!(route(Method::GET, "/health"), Ok(Route::Health));
        let not_found = route(Method::GET, "/v1/models/")
            .unwrap_err()
            .into_response();
        assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
        let wrong_method = route(Method::GET, "/v1/chat/completions")
            .unwrap_err()
            .into_response();
        assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong_method.headers()[header::ALLOW], "POST");
        assert!(Route::Chat.is_api() && !Route::Health.is_api());
    }
}
