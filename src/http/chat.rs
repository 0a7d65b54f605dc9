//! `POST /v1/chat/completions`.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower::BoxError;
use tracing::Instrument;

use super::record::{TurnRecord, outcome_of};
use super::sse::SseBody;
use super::turn_stream::TurnStream;
use super::{ResponseBody, SHUTTING_DOWN, Shared, box_body, broken_off, respond, shutting_down};
use crate::backend::{FinishReason, ReplyEvent, Turn, TurnMeta, Usage};
use crate::metrics::TurnOutcome;
use crate::openai::extract::extract;
use crate::openai::{ApiError, ChatRequest, ChunkEncoder};
use crate::session::TurnId;

pub(crate) async fn handle<B>(shared: Arc<Shared>, request: Request<B>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut record = TurnRecord::start(shared.metrics.clone());
    match run(&shared, request, &mut record).await {
        Ok(response) => response,
        Err(error) => {
            record.finish(match error.status {
                _ if error.code == SHUTTING_DOWN => TurnOutcome::Shutdown,
                StatusCode::GATEWAY_TIMEOUT => TurnOutcome::TimedOut,
                StatusCode::BAD_GATEWAY => TurnOutcome::Failed,
                _ => TurnOutcome::Rejected,
            });
            respond(error)
        }
    }
}

async fn run<B>(
    shared: &Shared,
    request: Request<B>,
    record: &mut TurnRecord,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &parts.headers, shared.config.max_body_bytes).await?;
    let chat = parse(&bytes)?;
    let extracted = extract(
        &chat,
        &parts.headers,
        shared.config.fallback_session.as_ref(),
    )?;
    let workspace = shared
        .config
        .workspaces
        .resolve(extracted.workspace.as_deref())
        .await?;
    if shared.shutdown.is_cancelled() {
        return Err(shutting_down());
    }

    let model = chat
        .model
        .as_deref()
        .or(shared.config.models.first().map(String::as_str))
        .unwrap_or_default()
        .to_owned();
    let meta = TurnMeta {
        turn_id: TurnId::new(),
        ..TurnMeta::default()
    }
    .with_model(model.clone())
    .with_conversation(extracted.conversation);
    record.span =
        tracing::info_span!("turn", session = %extracted.session, turn_id = %meta.turn_id);
    let span = record.span.clone();
    tracing::info!(
        parent: &span,
        key_source = ?extracted.key_source,
        workspace = %workspace.display(),
        chars = extracted.text.len(),
        stream = chat.is_stream(),
        "turn received"
    );
    let mut turn = Turn::new(extracted.session, workspace, extracted.text);
    turn.meta = meta;
    let cancel = turn.cancel.clone();
    // Until the reply stream exists, nothing else would cancel the turn if the client left (this future is
    // dropped) or the bridge shut down while the backend was still starting it.
    let cancel_unless_started = cancel.clone().drop_guard();
    let started = tokio::select! {
        started = shared.backend.run_turn(turn).instrument(span.clone()) => started,
        () = shared.shutdown.cancelled() => return Err(shutting_down()),
    };
    let stream = started.map_err(|error| {
        tracing::warn!(parent: &span, %error, "the backend could not start the turn");
        ApiError::from(error)
    })?;
    cancel_unless_started.disarm();
    let turn = TurnStream::new(stream, cancel);
    let encoder = ChunkEncoder::new(&model);

    if chat.is_stream() {
        let record = record.take();
        let body = SseBody::new(
            encoder,
            turn,
            shared.shutdown.clone().cancelled_owned(),
            chat.wants_stream_usage(),
            record,
        );
        let mut response = Response::new(box_body(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Keeps reverse proxies (nginx) from holding deltas back.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(response)
    } else {
        let (text, reason, usage) = tokio::select! {
            answer = collect(turn, record).instrument(span) => answer?,
            () = shared.shutdown.cancelled() => return Err(shutting_down()),
        };
        record.finish(TurnOutcome::Ok);
        let mut response = Response::new(box_body(http_body_util::Full::new(
            encoder.completion(&text, reason, &usage),
        )));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}

/// Waits for the whole answer of a non-streaming request.
async fn collect(
    mut turn: TurnStream,
    record: &mut TurnRecord,
) -> Result<(String, FinishReason, Usage), ApiError> {
    let mut text = String::new();
    let mut usage = Usage::default();
    let failure = loop {
        match turn.next().await {
            Some(ReplyEvent::TextDelta(delta)) => {
                record.first_delta();
                text.push_str(&delta);
            }
            Some(ReplyEvent::Usage(reported)) => usage = reported,
            Some(ReplyEvent::End(reason)) => return Ok((text, reason, usage)),
            Some(ReplyEvent::Error(error)) => break error,
            None => break broken_off(),
        }
    };
    tracing::warn!(error = %failure, "turn failed");
    record.finish(outcome_of(&failure));
    Err(ApiError::from(failure))
}

/// Reads the body, refusing more than `limit` bytes (early, from `Content-Length`, when the client sends it).
async fn read_body<B>(body: B, headers: &http::HeaderMap, limit: usize) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
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
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::invalid_request(
            "unreadable_body",
            format!("failed to read the request body: {error}"),
        )),
    }
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
