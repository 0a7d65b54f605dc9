//! Reading a chat request: its body within the size limit, the JSON, the session, the workspace.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{StatusCode, header};
use http_body_util::BodyExt;
use tower::BoxError;

use super::outcome::TurnRecord;
use super::{BridgeConfig, RequestBody};
use crate::backend::TurnMeta;
use crate::openai::extract::{KeySource, Unnamed, extract_with};
use crate::openai::{ApiError, ChatRequest};
use crate::session::{SessionKey, TurnId};

/// A chat request read and understood: what the turn layers and the turn service work on.
#[derive(Debug)]
pub(crate) struct ChatTurn {
    pub(crate) session: SessionKey,
    pub(crate) workspace: PathBuf,
    pub(crate) text: String,
    pub(crate) meta: TurnMeta,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) record: TurnRecord,
}

/// Reads the request into a [`ChatTurn`] kept by `record`, or says why the bridge cannot use it.
pub(crate) async fn prepare(
    config: &BridgeConfig,
    record: TurnRecord,
    parts: &Parts,
    body: RequestBody,
) -> Result<ChatTurn, ApiError> {
    let bytes = read_body(body, &parts.headers, config.max_body_bytes).await?;
    // Everything needed from the borrowed request is taken before the next await.
    let (extracted, model, stream, include_usage) = {
        let chat = parse(&bytes)?;
        let chosen = config
            .session_key
            .as_ref()
            .and_then(|rule| rule(parts, &chat));
        let unnamed = match &config.fallback_session {
            Some(fallback) => Unnamed::Fallback(fallback),
            None if config.require_session => Unnamed::Refused,
            None => Unnamed::OneOff,
        };
        let extracted = extract_with(&chat, &parts.headers, chosen, unnamed)?;
        let model = chat
            .model
            .as_deref()
            .or(config.models.first().map(|model| model.as_str()))
            .unwrap_or_default()
            .to_owned();
        (
            extracted,
            model,
            chat.is_stream(),
            chat.wants_stream_usage(),
        )
    };
    let workspace = config
        .workspaces
        .resolve(extracted.workspace.as_deref())
        .await?;
    let one_off = extracted.key_source == KeySource::OneOff;
    let meta = TurnMeta {
        turn_id: TurnId::new(),
        ..TurnMeta::default()
    }
    .with_model(model)
    .with_conversation(extracted.conversation)
    .with_one_off(one_off)
    // A one-off turn's calls could never be answered: the results would come in another one-off turn.
    .with_tools(if one_off { Vec::new() } else { extracted.tools })
    .with_system_prompt(extracted.system_prompt)
    .with_tool_results(extracted.tool_results);
    let span = record.span();
    span.record("session", tracing::field::display(&extracted.session));
    span.record("turn_id", tracing::field::display(&meta.turn_id));
    tracing::info!(
        parent: span,
        key_source = ?extracted.key_source,
        workspace = %workspace.display(),
        chars = extracted.text.len(),
        stream,
        "turn received"
    );
    Ok(ChatTurn {
        session: extracted.session,
        workspace,
        text: extracted.text,
        meta,
        stream,
        include_usage,
        record,
    })
}

/// Reads the body, refusing more than `limit` bytes (early, from `Content-Length`, when the client sends it).
async fn read_body(
    body: RequestBody,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let unreadable = |error: BoxError| {
        ApiError::invalid_request(
            "unreadable_body",
            format!("failed to read the request body: {error}"),
        )
    };
    let mut body = body;
    // Most bodies arrive in one frame, which is then used as it is.
    let mut first = Bytes::new();
    let mut more = BytesMut::new();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(unreadable)?.into_data() else {
            continue;
        };
        total += data.len();
        if total > limit {
            return Err(too_large());
        }
        if first.is_empty() {
            first = data;
        } else {
            if more.is_empty() {
                more.extend_from_slice(&first);
            }
            more.extend_from_slice(&data);
        }
    }
    Ok(if more.is_empty() {
        first
    } else {
        more.freeze()
    })
}

fn parse(bytes: &[u8]) -> Result<ChatRequest<'_>, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => {
            ApiError::invalid_request("invalid_request", format!("invalid request body: {error}"))
        }
        _ => ApiError::invalid_request(
            "invalid_json",
            format!("the request body is not valid JSON: {error}"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    fn in_frames(frames: &[&'static str]) -> RequestBody {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = frames
            .iter()
            .map(|text| Ok(Frame::data(Bytes::from_static(text.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    #[tokio::test]
    async fn a_body_in_many_frames_is_read_whole_up_to_the_limit() {
        let headers = http::HeaderMap::new();
        let body = read_body(in_frames(&["abcd", "efgh", "ij"]), &headers, 10).await;
        assert_eq!(body.unwrap(), "abcdefghij");
        let body = read_body(in_frames(&["abcd", "efgh", "ijk"]), &headers, 10).await;
        assert_eq!(body.unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
        let body = read_body(in_frames(&["whole"]), &headers, 5).await;
        assert_eq!(body.unwrap(), "whole");
    }
}
