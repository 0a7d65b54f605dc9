//! The bridge's own per-request work, without any agent: encoding SSE chunks, reading an OpenClaw-sized
//! request and finding its session, and a whole request through the layer stack with a backend that
//! answers at once. `cargo bench --bench hot_paths`; the figures are in BENCHMARKS.md.

#[path = "../tests/support/openclaw.rs"]
mod openclaw;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures::stream::{self, StreamExt};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use synthesis_bridge::backend::FinishReason;
use synthesis_bridge::http::{Bridge, BridgeConfig, WorkspacePolicy};
use synthesis_bridge::openai::{ChatRequest, ChunkEncoder, extract::extract};
use synthesis_bridge::{AgentBackend, BackendError, BackendStatus, ReplyEvent, ReplyStream, Turn};
use tower::ServiceExt;

fn sse_chunks(c: &mut Criterion) {
    let encoder = ChunkEncoder::new("claude");
    let short = "Sure, I'll look at the failing test.";
    let long = "fn main() {\n    println!(\"hello\\tworld\");\n}\n".repeat(24); // ~1 KB with escapes
    let mut group = c.benchmark_group("sse_chunk");
    group.throughput(Throughput::Elements(1));
    group.bench_function("delta_short", |b| {
        b.iter(|| encoder.delta(std::hint::black_box(short)))
    });
    group.bench_function("delta_1k_escaped", |b| {
        b.iter(|| encoder.delta(std::hint::black_box(&long)))
    });
    group.bench_function("heartbeat", |b| b.iter(|| encoder.heartbeat()));
    group.bench_function("finish", |b| b.iter(|| encoder.finish(FinishReason::Stop)));
    group.bench_function("new_stream", |b| {
        b.iter(|| ChunkEncoder::new(std::hint::black_box("claude")))
    });
    group.finish();
}

/// An OpenClaw request of about 60 KB: a long system prompt, three earlier turns, tools, the runtime line
/// naming `repo` as the workspace.
fn openclaw_body(repo: &str) -> Vec<u8> {
    let texts = ["read the failing test", "now fix it", "run the suite again"];
    let body = openclaw::body(&texts, openclaw::SESSION_ID, repo, 56_000);
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(
        (58_000..64_000).contains(&bytes.len()),
        "{} bytes",
        bytes.len()
    );
    bytes
}

fn request_parsing(c: &mut Criterion) {
    let body = openclaw_body("/work/repo");
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse_and_extract_60k_openclaw", |b| {
        b.iter(|| {
            let request: ChatRequest<'_> =
                serde_json::from_slice(std::hint::black_box(&body)).unwrap();
            let turn = extract(&request, &headers, None).unwrap();
            assert_eq!(turn.session.as_str(), openclaw::SESSION);
            turn
        })
    });
    group.finish();
}

/// Answers every turn at once with one short text.
struct Instant;

#[async_trait]
impl AgentBackend for Instant {
    async fn run_turn(&self, _turn: Turn) -> Result<ReplyStream, BackendError> {
        Ok(stream::iter([ReplyEvent::text("done."), ReplyEvent::end()]).boxed())
    }

    async fn shutdown(&self) {}

    fn status(&self) -> BackendStatus {
        BackendStatus::default()
    }
}

fn layer_stack(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let bridge = runtime.block_on(async {
        let config = BridgeConfig::new(WorkspacePolicy::single(workspace.path()).unwrap());
        Bridge::builder(Arc::new(Instant), config).build()
    });
    let openclaw = Bytes::from(openclaw_body(&workspace.path().to_string_lossy()));
    let small = Bytes::from_static(
        br#"{"model":"claude","stream":true,"user":"bench","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let request = |body: &Bytes| {
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap()
    };
    let mut group = c.benchmark_group("layer_stack");
    group.throughput(Throughput::Elements(1));
    for (name, body) in [
        ("small_streamed_turn", &small),
        ("openclaw_60k_streamed_turn", &openclaw),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter_batched(
                || request(body),
                |request| {
                    let bridge = bridge.clone();
                    async move {
                        let response = bridge.oneshot(request).await.unwrap();
                        assert!(response.status().is_success());
                        response.into_body().collect().await.unwrap().to_bytes()
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, sse_chunks, request_parsing, layer_stack);
criterion_main!(benches);
