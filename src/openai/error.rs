//! OpenAI-shaped errors: `{"error": {"message", "type", "code"}}` with the matching HTTP status.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use super::extract::ExtractError;
use crate::backend::BackendError;

/// An error as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status, when the error is answered before the response head.
    pub status: StatusCode,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, …
    pub kind: &'static str,
    /// A stable machine-readable `code`.
    pub code: &'static str,
    /// What happened and, where possible, what to do about it.
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
}

impl ApiError {
    /// An error with no retry hint.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 for a request the bridge cannot use.
    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// Adds a `Retry-After` hint.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The `error` member alone, for embedding in an SSE chunk.
    pub(crate) fn write_body(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, &self.body()).expect("serialising plain strings cannot fail");
    }

    fn body(&self) -> Body<'_> {
        Body {
            message: &self.message,
            kind: self.kind,
            code: self.code,
        }
    }

    /// The `{"error": {…}}` object.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&Envelope { error: self.body() })
            .expect("serialising plain strings cannot fail")
    }

    /// The whole HTTP response.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.to_json())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Every 503 says when to come back: a client without a hint retries at once, or never.
        let retry_after = self.retry_after.or_else(|| {
            (self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(DEFAULT_RETRY_AFTER)
        });
        if let Some(after) = retry_after {
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

/// The `Retry-After` of a 503 that names none: an agent that is starting, or a bridge that restarts, is
/// worth asking again after a few seconds.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

impl From<ExtractError> for ApiError {
    fn from(err: ExtractError) -> Self {
        let code = match err {
            ExtractError::NoUserText => "no_user_message",
            ExtractError::NoSessionKey => "no_session_key",
            ExtractError::InvalidSessionKey { .. } => "invalid_session_key",
            ExtractError::InvalidHeader(_) => "invalid_header",
        };
        Self::invalid_request(code, err.to_string())
    }
}

impl From<BackendError> for ApiError {
    fn from(err: BackendError) -> Self {
        let message = err.to_string();
        match err {
            BackendError::Unavailable { retry_after, .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "backend_unavailable",
                message,
            )
            .with_retry_after(retry_after),
            BackendError::Timeout(_) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "timeout",
                message,
            ),
            BackendError::Rejected(_) => Self::invalid_request("rejected_by_agent", message),
            BackendError::Cancelled => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "cancelled",
                message,
            ),
            BackendError::Failed(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "agent_failed",
                message,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_says_when_to_come_back() {
        let unavailable = ApiError::from(crate::backend::BackendError::unavailable("starting"));
        assert_eq!(unavailable.into_response().headers()["retry-after"], "5");
        let busy = ApiError::from(crate::backend::BackendError::Unavailable {
            message: "busy".into(),
            retry_after: Some(Duration::from_millis(1500)),
        });
        assert_eq!(busy.into_response().headers()["retry-after"], "2");
        let bad = ApiError::invalid_request("x", "y");
        assert!(bad.into_response().headers().get("retry-after").is_none());
    }

    #[tokio::test]
    async fn responses_carry_status_json_and_retry_after() {
        let err = ApiError::from(BackendError::Unavailable {
            message: "all agents busy".into(),
            retry_after: Some(Duration::from_millis(1500)),
        });
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["message"], "all agents busy");
        assert_eq!(json["error"]["type"], "server_error");
        assert_eq!(json["error"]["code"], "backend_unavailable");
    }
}
