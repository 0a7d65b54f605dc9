//! The turn service: runs a [`ChatTurn`] on the backend and answers with a stream or one JSON object.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::outcome::TurnRecord;
use super::prepare::ChatTurn;
use super::sse::SseBody;
use super::turn_stream::TurnStream;
use super::{Shared, broken_off, error_response};
use crate::backend::{AgentBackend, BackendError, FinishReason, ReplyEvent, ToolCall, Turn, Usage};
use crate::layers::concurrency::SlotLease;
use crate::layers::heartbeat::HeartbeatFrame;
use crate::metrics::TurnOutcome;
use crate::openai::{ApiError, ChunkEncoder};

/// What the turn service answers with; the layers outside it add their own wrappers.
pub(crate) type TurnBody = UnsyncBoxBody<Bytes, Infallible>;

/// Runs turns. Innermost in the stack: it sees only requests the front has read and the layers admitted.
#[derive(Clone)]
pub(crate) struct TurnService {
    shared: Arc<Shared>,
}

impl TurnService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl tower::Service<Request<ChatTurn>> for TurnService {
    type Response = Response<TurnBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<TurnBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ChatTurn>) -> Self::Future {
        // The turn holds the session's slot until the agent is done, not until the client has read the
        // last byte: a client that stopped reading must not keep the session from its next turn.
        let lease = request
            .extensions()
            .get::<SlotLease>()
            .map(SlotLease::claim);
        let shared = self.shared.clone();
        Box::pin(async move {
            let answered = answer(&shared, request.into_body(), lease).await;
            Ok(answered.unwrap_or_else(|error| error_response(error).map(UnsyncBoxBody::new)))
        })
    }
}

async fn answer(
    shared: &Shared,
    chat: ChatTurn,
    lease: Option<SlotLease>,
) -> Result<Response<TurnBody>, ApiError> {
    let ChatTurn {
        session,
        workspace,
        text,
        meta,
        stream,
        include_usage,
        record,
    } = chat;
    let encoder = ChunkEncoder::new(&meta.model);
    let mut turn = Turn::new(session, workspace, text);
    turn.meta = meta;
    let turn = start(shared.backend.clone(), turn, lease, &record).await?;

    if stream {
        let body = SseBody::new(
            encoder.clone(),
            turn,
            shared.shutdown.clone().cancelled_owned(),
            include_usage,
            record,
        );
        let mut response = Response::new(UnsyncBoxBody::new(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Keeps reverse proxies (nginx) from holding deltas back.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        let extensions = response.extensions_mut();
        if shared.heartbeats {
            extensions.insert(HeartbeatFrame::new(encoder.heartbeat()));
        }
        // For the front, to end the stream properly if a layer cuts it off.
        extensions.insert(encoder);
        Ok(response)
    } else {
        let span = record.span().clone();
        let answer = collect(turn, &record).instrument(span).await?;
        let completion = encoder.completion_with_calls(
            &answer.text,
            &answer.calls,
            answer.finish,
            &answer.usage,
        );
        let mut response = Response::new(UnsyncBoxBody::new(Full::new(completion)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // The whole answer, at once.
        response.extensions_mut().insert(TurnOutcome::Ok);
        Ok(response)
    }
}

/// Asks the backend to start the turn.
///
/// `run_turn` runs in a task of its own: if this future is dropped (the client left, a deadline passed, the
/// bridge is shutting down) the turn is cancelled, and whatever the backend started is still drained to its
/// end with the slot lease held, so the session's next turn cannot reach an agent that is still busy.
async fn start(
    backend: Arc<dyn AgentBackend>,
    turn: Turn,
    lease: Option<SlotLease>,
    record: &TurnRecord,
) -> Result<TurnStream, ApiError> {
    let span = record.span();
    let cancel = turn.cancel.clone();
    let cancel_unless_started = cancel.clone().drop_guard();
    let (started_tx, started_rx) = oneshot::channel();
    let starting_span = span.clone();
    tokio::spawn(
        async move {
            let started = backend
                .run_turn(turn)
                .await
                .map(|stream| TurnStream::new(stream, cancel, lease));
            // When nobody waits any more, dropping the stream cancels the turn and drains it.
            let _ = started_tx.send(started);
        }
        .instrument(starting_span),
    );
    let started = started_rx.await.unwrap_or_else(|_| {
        Err(BackendError::failed(
            "the backend panicked starting the turn",
        ))
    });
    let turn = started.map_err(|error| {
        tracing::warn!(parent: span, %error, "the backend could not start the turn");
        ApiError::from(error)
    })?;
    cancel_unless_started.disarm();
    Ok(turn)
}

/// A non-streaming request's whole answer.
struct Answer {
    text: String,
    calls: Vec<ToolCall>,
    finish: FinishReason,
    usage: Usage,
}

/// Waits for the whole answer of a non-streaming request.
async fn collect(mut turn: TurnStream, record: &TurnRecord) -> Result<Answer, ApiError> {
    let mut answer = Answer {
        text: String::new(),
        calls: Vec::new(),
        finish: FinishReason::Stop,
        usage: Usage::default(),
    };
    let failure = loop {
        match turn.next().await {
            Some(ReplyEvent::TextDelta(delta)) => {
                record.first_delta();
                answer.text.push_str(&delta);
            }
            Some(ReplyEvent::ToolCall(call)) => answer.calls.push(call),
            Some(ReplyEvent::Usage(reported)) => answer.usage = reported,
            Some(ReplyEvent::End(reason)) => {
                answer.finish = reason;
                return Ok(answer);
            }
            Some(ReplyEvent::Error(error)) => break error,
            None => break broken_off(),
        }
    };
    tracing::warn!(error = %failure, "turn failed");
    Err(ApiError::from(failure))
}
