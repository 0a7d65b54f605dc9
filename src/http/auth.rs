//! The bridge's own API key: `Authorization: Bearer <key>` on the OpenAI routes, when one is configured.

use http::{HeaderMap, StatusCode, header};

use crate::openai::ApiError;

/// Checks the request's bearer key against `expected`; without an expected key, every request passes.
pub(crate) fn authorize(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
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

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn only_the_configured_bearer_key_passes() {
        let mut headers = HeaderMap::new();
        assert!(authorize(None, &headers).is_ok());
        assert_eq!(
            authorize(Some("k"), &headers).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert!(authorize(Some("k"), &headers).is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer k"));
        assert!(authorize(Some("k"), &headers).is_ok());
    }
}
