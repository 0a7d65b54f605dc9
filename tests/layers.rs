//! The layers on their own, with tokio's paused clock and tower-test's mock service: the order requests
//! reach the inner service, when slots free up, and when heartbeats and timeouts fire.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full, StreamBody};
use synthesis_bridge::layers::concurrency::{
    AdmissionElapsed, ConcurrencyPerKeyLayer, QueueFull, SlotBody, SlotLease,
};
use synthesis_bridge::layers::heartbeat::{HeartbeatFrame, HeartbeatLayer};
use synthesis_bridge::layers::timeout::{DeadlineElapsed, IdleElapsed, StreamTimeoutLayer};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_test::mock;

type Frames = mpsc::Sender<Result<http_body::Frame<Bytes>, Infallible>>;
type StreamingBody =
    StreamBody<futures::stream::BoxStream<'static, Result<http_body::Frame<Bytes>, Infallible>>>;

fn keyed(key: &str) -> Request<()> {
    Request::builder().header("x-key", key).body(()).unwrap()
}

fn key_of(request: &Request<()>) -> Option<HeaderValue> {
    request.headers().get("x-key").cloned()
}

type KeyOf = fn(&Request<()>) -> Option<HeaderValue>;

/// Keyed by the `x-key` header.
fn per_key() -> ConcurrencyPerKeyLayer<KeyOf, HeaderValue> {
    ConcurrencyPerKeyLayer::new(key_of as KeyOf)
}

/// A body the test writes frame by frame.
fn streaming_body() -> (Frames, StreamingBody) {
    let (frames, mut receiver) = mpsc::channel(8);
    let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    (frames, StreamBody::new(Box::pin(stream) as _))
}

fn data(text: &'static str) -> Result<http_body::Frame<Bytes>, Infallible> {
    Ok(http_body::Frame::data(Bytes::from_static(text.as_bytes())))
}

/// Lets every spawned task run until it waits on something.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn three_waiters_are_served_in_fifo_order() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<Full<Bytes>>>();
    let service = per_key().layer(inner);
    let mut calls = Vec::new();
    for id in ["first", "second", "third", "fourth"] {
        let mut request = keyed("k");
        request.extensions_mut().insert(id);
        calls.push(tokio::spawn(service.clone().oneshot(request)));
        settle().await;
    }

    let mut responses = Vec::new();
    for expected in ["first", "second", "third", "fourth"] {
        let (request, reply) = handle.next_request().await.unwrap();
        assert_eq!(request.extensions().get::<&str>(), Some(&expected));
        // Nobody else reaches the service while this one holds the slot.
        settle().await;
        assert!(futures::poll!(Box::pin(handle.next_request())).is_pending());
        reply.send_response(Response::new(Full::new(Bytes::from(expected))));
        let response = calls.remove(0).await.unwrap().unwrap();
        // The slot is free once the body is done with: here, dropped.
        responses.push(response.into_body().collect().await.unwrap().to_bytes());
    }
    assert_eq!(responses, ["first", "second", "third", "fourth"]);
}

#[tokio::test(start_paused = true)]
async fn the_order_is_the_order_of_the_calls_not_of_the_first_polls() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<Full<Bytes>>>();
    let mut service = per_key().layer(inner);
    let running = service.ready().await.unwrap().call(keyed("k"));
    let mut second = keyed("k");
    second.extensions_mut().insert("second");
    let second = service.ready().await.unwrap().call(second);
    let mut third = keyed("k");
    third.extensions_mut().insert("third");
    let third = service.ready().await.unwrap().call(third);
    // Polled in the reverse order.
    let third = tokio::spawn(third);
    settle().await;
    let second = tokio::spawn(second);
    settle().await;

    let running = tokio::spawn(running);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(Response::new(Full::default()));
    drop(running.await.unwrap().unwrap());
    for (expected, waiter) in [("second", second), ("third", third)] {
        let (request, reply) = handle.next_request().await.unwrap();
        assert_eq!(request.extensions().get::<&str>(), Some(&expected));
        drop(request);
        reply.send_response(Response::new(Full::default()));
        drop(waiter.await.unwrap().unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn a_newcomer_never_overtakes_a_waiter_and_a_handed_over_slot_frees_the_queue() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<Full<Bytes>>>();
    let layer = per_key().queue_depth(1);
    let mut service = layer.layer(inner);
    let running = tokio::spawn(service.ready().await.unwrap().call(keyed("k")));
    let (request, reply) = handle.next_request().await.unwrap();
    drop(request);
    let mut second = keyed("k");
    second.extensions_mut().insert("second");
    // Called, but its task has not run yet.
    let second = service.ready().await.unwrap().call(second);

    reply.send_response(Response::new(Full::default()));
    drop(running.await.unwrap().unwrap());
    // The slot went to `second` at once: the queue has room, and a newcomer queues behind it.
    assert_eq!(layer.waiting(), 0);
    let mut third = keyed("k");
    third.extensions_mut().insert("third");
    let third = tokio::spawn(service.ready().await.unwrap().call(third));
    settle().await;
    assert_eq!(layer.waiting(), 1, "the newcomer was refused or went first");

    let second = tokio::spawn(second);
    for (expected, waiter) in [("second", second), ("third", third)] {
        let (request, reply) = handle.next_request().await.unwrap();
        assert_eq!(request.extensions().get::<&str>(), Some(&expected));
        drop(request);
        reply.send_response(Response::new(Full::default()));
        drop(waiter.await.unwrap().unwrap());
    }
    assert_eq!(layer.active_keys(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once_and_takes_requests_again_once_it_drains() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<Full<Bytes>>>();
    let layer = per_key().queue_depth(2).retry_after(Duration::from_secs(7));
    let service = layer.layer(inner);
    let running = tokio::spawn(service.clone().oneshot(keyed("k")));
    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(service.clone().oneshot(keyed("k"))))
        .collect();
    settle().await;
    assert_eq!(layer.waiting(), 2);

    let refused = service.clone().oneshot(keyed("k")).await.unwrap_err();
    let full = refused.downcast_ref::<QueueFull>().expect("QueueFull");
    assert_eq!(full.retry_after(), Duration::from_secs(7));
    assert_eq!(full.queue_depth(), 2);

    // Another key is not affected by this key's queue.
    let other = tokio::spawn(service.clone().oneshot(keyed("other")));
    let (request, reply) = handle.next_request().await.unwrap();
    let (request2, reply2) = handle.next_request().await.unwrap();
    let mut keys = [key_of(&request).unwrap(), key_of(&request2).unwrap()];
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(keys, ["k", "other"]);
    // A request carries a clone of its slot lease: the handler is done with it.
    drop((request, request2));
    reply.send_response(Response::new(Full::default()));
    reply2.send_response(Response::new(Full::default()));
    drop(running.await.unwrap().unwrap());
    drop(other.await.unwrap().unwrap());
    for waiter in waiting {
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_response(Response::new(Full::default()));
        drop(waiter.await.unwrap().unwrap());
    }
    assert_eq!(layer.active_keys(), 0);
}

#[tokio::test(start_paused = true)]
async fn two_keys_run_concurrently() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<Full<Bytes>>>();
    let service = per_key().layer(inner);
    let a = tokio::spawn(service.clone().oneshot(keyed("a")));
    let b = tokio::spawn(service.clone().oneshot(keyed("b")));
    // Both reach the service while neither has answered.
    let (first, reply_first) = handle.next_request().await.unwrap();
    let (second, reply_second) = handle.next_request().await.unwrap();
    assert_ne!(key_of(&first), key_of(&second));
    reply_first.send_response(Response::new(Full::default()));
    reply_second.send_response(Response::new(Full::default()));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

/// A per-key service whose handler's work outlives its response: it takes the request's lease with
/// the function given and hands it to the test, which ends the work by dropping it. Its response body stays
/// open and is never written.
struct LastingWork {
    layer: ConcurrencyPerKeyLayer<KeyOf, HeaderValue>,
    service: BoxCloneService<Request<()>, Response<SlotBody<StreamingBody>>, BoxError>,
    /// The ids of the requests served, in order.
    served: mpsc::UnboundedReceiver<&'static str>,
    /// Their leases, one per running piece of work.
    work: mpsc::UnboundedReceiver<SlotLease>,
}

fn service_with_lasting_work(take_lease: fn(&SlotLease) -> SlotLease) -> LastingWork {
    let (work, work_rx) = mpsc::unbounded_channel::<SlotLease>();
    let (served, served_rx) = mpsc::unbounded_channel::<&'static str>();
    let layer = per_key();
    let service =
        ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(move |request: Request<()>| {
                let lease = take_lease(request.extensions().get::<SlotLease>().unwrap());
                served
                    .send(*request.extensions().get::<&'static str>().unwrap())
                    .unwrap();
                work.send(lease).unwrap();
                let (frames, body) = streaming_body();
                // The body stays open as long as `frames` lives: it is moved into the response's extensions.
                let mut response = Response::new(body);
                response.extensions_mut().insert(Arc::new(frames));
                async move { Ok::<_, Infallible>(response) }
            });
    LastingWork {
        layer,
        service: BoxCloneService::new(service),
        served: served_rx,
        work: work_rx,
    }
}

/// Two requests for the same key, told apart by the id in their extensions.
fn first_and_second() -> (Request<()>, Request<()>) {
    let mut first = keyed("k");
    first.extensions_mut().insert("first");
    let mut second = keyed("k");
    second.extensions_mut().insert("second");
    (first, second)
}

#[tokio::test(start_paused = true)]
async fn a_slot_is_held_until_the_body_is_done_and_every_lease_is_dropped() {
    let LastingWork {
        layer,
        service,
        served: mut served_rx,
        work: mut work_rx,
    } = service_with_lasting_work(SlotLease::clone);
    let (first, second) = first_and_second();
    let response = service.clone().oneshot(first).await.unwrap();
    let waiting = tokio::spawn(service.clone().oneshot(second));
    assert_eq!(served_rx.recv().await, Some("first"));
    let lease = work_rx.recv().await.unwrap();

    // The client goes away: the body is dropped, but the work (the lease) is still running.
    drop(response);
    settle().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(served_rx.try_recv().is_err(), "admitted while still busy");
    assert_eq!(layer.active_keys(), 1);

    // The work ends: the next request goes in.
    drop(lease);
    assert_eq!(served_rx.recv().await, Some("second"));
    drop(waiting.await.unwrap().unwrap());
    drop(work_rx.recv().await.unwrap());
    assert_eq!(layer.active_keys(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_claimed_lease_frees_the_slot_though_nobody_reads_the_body() {
    // A handler that knows when its work is over claims the lease: the body, which a client that stopped
    // reading keeps alive and unpolled, no longer holds the slot.
    let LastingWork {
        layer,
        service,
        served: mut served_rx,
        work: mut work_rx,
    } = service_with_lasting_work(SlotLease::claim);
    let (first, second) = first_and_second();
    // Kept and never polled, like the body of a client that stopped reading.
    let unread = service.clone().oneshot(first).await.unwrap();
    let waiting = tokio::spawn(service.clone().oneshot(second));
    assert_eq!(served_rx.recv().await, Some("first"));
    let lease = work_rx.recv().await.unwrap();
    settle().await;
    assert!(served_rx.try_recv().is_err(), "admitted while still busy");

    // The work ends: the next request goes in, the first body still unread.
    drop(lease);
    let next = tokio::time::timeout(Duration::from_secs(60), served_rx.recv()).await;
    assert_eq!(next, Ok(Some("second")), "the unread body holds the slot");
    drop(waiting.await.unwrap().unwrap());
    drop(work_rx.recv().await.unwrap());
    drop(unread);
    assert_eq!(layer.active_keys(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_waits_too_long_is_given_up_and_leaves_its_place() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<Full<Bytes>>>();
    let layer = per_key()
        .queue_depth(1)
        .admission_timeout(Some(Duration::from_secs(300)));
    let service = layer.layer(inner);
    let running = tokio::spawn(service.clone().oneshot(keyed("k")));
    let (_, reply) = handle.next_request().await.unwrap();

    let started = Instant::now();
    let error = service.clone().oneshot(keyed("k")).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(300));
    assert_eq!(
        error.downcast_ref::<AdmissionElapsed>().unwrap().waited(),
        Duration::from_secs(300)
    );
    // Its queue place is free again.
    assert_eq!(layer.waiting(), 0);
    let waiting = tokio::spawn(service.clone().oneshot(keyed("k")));
    settle().await;
    assert_eq!(layer.waiting(), 1);

    reply.send_response(Response::new(Full::default()));
    drop(running.await.unwrap().unwrap());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(Response::new(Full::default()));
    drop(waiting.await.unwrap().unwrap());
    assert_eq!(layer.active_keys(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_key_table_is_empty_once_the_load_is_gone() {
    let layer = per_key().queue_depth(64);
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(|_: Request<()>| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        });
    let calls: Vec<_> = (0..200)
        .map(|i| tokio::spawn(service.clone().oneshot(keyed(&format!("key-{}", i % 25)))))
        .collect();
    settle().await;
    assert!(layer.active_keys() > 0);
    for call in calls {
        drop(call.await.unwrap().unwrap());
    }
    assert_eq!((layer.active_keys(), layer.waiting()), (0, 0));
}

/// A service answering with a body the test writes, asking for `heartbeat` frames.
fn streaming_service(
    heartbeat: &'static str,
) -> (
    mpsc::UnboundedReceiver<Frames>,
    impl tower::Service<
        Request<()>,
        Response = Response<StreamingBody>,
        Error = Infallible,
        Future = impl Send,
    > + Clone,
) {
    let (bodies, bodies_rx) = mpsc::unbounded_channel();
    let service = tower::service_fn(move |_: Request<()>| {
        let (frames, body) = streaming_body();
        bodies.send(frames).unwrap();
        let mut response = Response::new(body);
        response
            .extensions_mut()
            .insert(HeartbeatFrame::new(heartbeat));
        async move { Ok::<_, Infallible>(response) }
    });
    (bodies_rx, service)
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_follows_each_full_quiet_interval_and_real_frames_restart_it() {
    let (mut bodies, inner) = streaming_service("beat");
    let service = HeartbeatLayer::new(Duration::from_secs(15)).layer(inner);
    let started = Instant::now();
    let mut body = service.oneshot(Request::new(())).await.unwrap().into_body();
    let frames = bodies.recv().await.unwrap();

    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(
        (frame, started.elapsed()),
        ("beat".into(), Duration::from_secs(15))
    );
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(
        (frame, started.elapsed()),
        ("beat".into(), Duration::from_secs(30))
    );

    // A real frame 10 s later; the next heartbeat comes a full interval after it, not after the last beat.
    tokio::time::sleep(Duration::from_secs(10)).await;
    frames.send(data("real")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(
        (frame, started.elapsed()),
        ("real".into(), Duration::from_secs(40))
    );
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(
        (frame, started.elapsed()),
        ("beat".into(), Duration::from_secs(55))
    );

    // Nothing after the end.
    drop(frames);
    assert!(body.frame().await.is_none());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(body.frame().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_response_without_a_heartbeat_frame_passes_untouched() {
    let service = HeartbeatLayer::new(Duration::from_secs(1)).layer(tower::service_fn(
        |_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("whole"))))
        },
    ));
    let body = service.oneshot(Request::new(())).await.unwrap().into_body();
    // Its length is still known (so hyper still sends Content-Length).
    assert_eq!(body.size_hint().exact(), Some(5));
    assert_eq!(body.collect().await.unwrap().to_bytes(), "whole");

    // Asking for heartbeats makes the length unknown: frames may be added.
    let (_bodies, inner) = streaming_service("beat");
    let body = HeartbeatLayer::new(Duration::from_secs(1))
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .unwrap()
        .into_body();
    assert_eq!(body.size_hint().exact(), None);
}

#[tokio::test(start_paused = true)]
async fn a_zero_interval_sends_no_heartbeats() {
    let (mut bodies, inner) = streaming_service("beat");
    let service = HeartbeatLayer::new(Duration::ZERO).layer(inner);
    let mut body = service.oneshot(Request::new(())).await.unwrap().into_body();
    let frames = bodies.recv().await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        frames.send(data("real")).await.unwrap();
    });
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(frame, "real");
}

#[tokio::test(start_paused = true)]
async fn heartbeats_do_not_reset_the_idle_timer() {
    let (mut bodies, inner) = streaming_service("beat");
    // Heartbeat outside the timeout, as in the bridge's stack.
    let service = ServiceBuilder::new()
        .layer(HeartbeatLayer::new(Duration::from_secs(5)))
        .layer(StreamTimeoutLayer::new().idle(Some(Duration::from_secs(12))))
        .service(inner);
    let started = Instant::now();
    let mut body = service.oneshot(Request::new(())).await.unwrap().into_body();
    let frames = bodies.recv().await.unwrap();

    for beat in [5, 10] {
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!((frame, started.elapsed().as_secs()), ("beat".into(), beat));
    }
    let error = body.frame().await.unwrap().unwrap_err();
    assert!(error.is::<IdleElapsed>(), "{error}");
    assert_eq!(started.elapsed(), Duration::from_secs(12));
    // The inner body was dropped at once: that is how the handler learns to stop.
    assert!(frames.is_closed());
    assert!(body.frame().await.is_none(), "nothing after the error");
}

#[tokio::test(start_paused = true)]
async fn agent_output_resets_the_idle_timer_but_not_the_deadline() {
    let (mut bodies, inner) = streaming_service("beat");
    let service = StreamTimeoutLayer::new()
        .idle(Some(Duration::from_secs(10)))
        .deadline(Some(Duration::from_secs(25)))
        .layer(inner);
    let started = Instant::now();
    let mut body = service.oneshot(Request::new(())).await.unwrap().into_body();
    let frames = bodies.recv().await.unwrap();
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(8)).await;
            if frames.send(data("more")).await.is_err() {
                return;
            }
        }
    });
    for at in [8, 16, 24] {
        body.frame().await.unwrap().unwrap();
        assert_eq!(started.elapsed().as_secs(), at);
    }
    let error = body.frame().await.unwrap().unwrap_err();
    assert!(error.is::<DeadlineElapsed>(), "{error}");
    assert_eq!(started.elapsed(), Duration::from_secs(25));
    writer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_deadline_before_the_head_fails_the_call_and_drops_the_handler() {
    let handler_dropped = Arc::new(AtomicBool::new(false));
    let service = StreamTimeoutLayer::new()
        .deadline(Some(Duration::from_secs(30)))
        .layer(tower::service_fn({
            let handler_dropped = handler_dropped.clone();
            move |_: Request<()>| {
                let on_drop = SetOnDrop(handler_dropped.clone());
                async move {
                    std::future::pending::<()>().await;
                    drop(on_drop);
                    Ok::<_, BoxError>(Response::new(Full::<Bytes>::default()))
                }
            }
        }));
    let started = Instant::now();
    let mut call = std::pin::pin!(service.oneshot(Request::new(())));
    let error = call.as_mut().await.unwrap_err();
    assert!(error.is::<DeadlineElapsed>());
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    // Dropped when the deadline passed, not only when the caller lets go of the call.
    assert!(handler_dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_a_body_that_is_always_ready() {
    let service = StreamTimeoutLayer::new()
        .deadline(Some(Duration::from_secs(25)))
        .layer(tower::service_fn(|_: Request<()>| async {
            let endless = futures::stream::repeat_with(|| data("more"));
            Ok::<_, Infallible>(Response::new(StreamBody::new(endless)))
        }));
    let mut body = service.oneshot(Request::new(())).await.unwrap().into_body();
    for _ in 0..100 {
        body.frame().await.unwrap().unwrap();
    }
    tokio::time::advance(Duration::from_secs(26)).await;
    let error = body.frame().await.unwrap().unwrap_err();
    assert!(error.is::<DeadlineElapsed>(), "{error}");
    assert!(body.frame().await.is_none());
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
