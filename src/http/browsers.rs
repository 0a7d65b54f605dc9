//! What a web page must not do with a bridge it can reach: send it prompts. A page in a browser on the
//! bridge's machine can post to `127.0.0.1` without asking first (a CORS "simple request": a `text/plain`
//! body needs no preflight), and with DNS rebinding it can read the answers too. So the front refuses:
//! - a request that carries an `Origin` (only browsers send one) not allowed with
//!   [`BridgeConfig::allow_origin`];
//! - a `Host` that is not one of [`BridgeConfig::allowed_hosts`], when those are set (the bridge binary
//!   sets its listen address and the loopback names): a rebound name does not pass;
//! - a chat body that does not say it is JSON, since a page can send `text/plain`, a form or multipart
//!   without a preflight.

use http::{HeaderMap, StatusCode, header};

use super::BridgeConfig;
use crate::openai::ApiError;

/// The names that always mean this machine.
pub(crate) const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Refuses a request a web page could have sent behind its user's back.
pub(crate) fn check(config: &BridgeConfig, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let allowed = config
            .allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin));
        if !allowed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "origin_not_allowed",
                format!(
                    "requests from web pages are refused (Origin: {origin}); start the bridge with --allow-origin {origin} to allow this one"
                ),
            ));
        }
    }
    // A request without `Host` (HTTP/1.0) comes from no browser.
    if let (Some(hosts), Some(host)) = (&config.allowed_hosts, headers.get(header::HOST)) {
        let host = host_name(host.to_str().unwrap_or_default());
        if !hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
        {
            return Err(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "invalid_request_error",
                "host_not_allowed",
                format!(
                    "this bridge does not answer to the host name {host:?} (a web page may have rebound it); start the bridge with --allow-host {host} if it should"
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a chat body that does not say it is JSON. No `Content-Type` at all passes: no browser sends a
/// body without one, and some clients do.
pub(crate) fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = content_type
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request_error",
        "unsupported_media_type",
        format!("the request body must be JSON (Content-Type: application/json), not {essence}"),
    ))
}

/// `host` of `host:port`, `[v6]` of `[v6]:port`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::http::WorkspacePolicy;

    fn config() -> BridgeConfig {
        BridgeConfig::new(WorkspacePolicy::single(std::env::temp_dir()).unwrap())
    }

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn a_web_pages_origin_is_refused_unless_allowed() {
        let page = headers(&[(header::ORIGIN, "http://evil.example")]);
        let refused = check(&config(), &page).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(check(&config().allow_origin("http://evil.example"), &page).is_ok());
        assert!(check(&config().allow_origin("*"), &page).is_ok());
        assert!(
            check(&config(), &headers(&[])).is_ok(),
            "no Origin: not a browser"
        );
    }

    #[test]
    fn a_rebound_host_name_is_refused_and_loopback_ones_pass() {
        let open = config();
        let config = config().allowed_hosts(Some(vec!["10.0.0.5".into()]));
        for host in [
            "127.0.0.1:18790",
            "localhost",
            "[::1]:18790",
            "10.0.0.5:18790",
            "LOCALHOST",
        ] {
            let request = headers(&[(header::HOST, host)]);
            assert!(check(&config, &request).is_ok(), "{host}");
        }
        let rebound = headers(&[(header::HOST, "attacker.example:18790")]);
        assert_eq!(
            check(&config, &rebound).unwrap_err().status,
            StatusCode::MISDIRECTED_REQUEST
        );
        assert!(check(&open, &rebound).is_ok(), "no hosts set: any");
    }

    #[test]
    fn only_json_bodies_are_read() {
        for json in [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.x+json",
        ] {
            let content = HeaderValue::from_static(json);
            assert!(check_json(&[(header::CONTENT_TYPE, content)].into_iter().collect()).is_ok());
        }
        assert!(check_json(&HeaderMap::new()).is_ok());
        for simple in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let content = HeaderValue::from_static(simple);
            let refused = check_json(&[(header::CONTENT_TYPE, content)].into_iter().collect());
            assert_eq!(
                refused.unwrap_err().status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            );
        }
    }
}
