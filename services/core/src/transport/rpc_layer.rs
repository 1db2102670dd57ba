//! [`RpcLayer`]: what happens around every gRPC call, whatever the service. Only calls pass
//! through it (meshd routes plain HTTP before it), so every request here is treated as gRPC,
//! whatever content type it claims.
//!
//! - A tracing span per RPC with the method, and one `rpc finished` event carrying the gRPC
//!   code and the latency (for streams: when the stream ends).
//! - Shutdown: once the drain period is over ([`EndStreams::end`]), every server
//!   stream still open ends with UNAVAILABLE, reason `SHUTTING_DOWN` and a retry hint, right
//!   after the last message it sent, even one that always has data ready. Unary calls are
//!   left to finish: cutting one off after its write was applied would invite a duplicate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::{Layer, Service};
use tracing::Span;

use crate::Error;

/// How long a client told to go away should wait before retrying elsewhere.
const SHUTDOWN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The status open streams end with when the server shuts down: UNAVAILABLE, reason
/// `SHUTTING_DOWN`, with a retry hint.
pub fn shutdown_status() -> tonic::Status {
    Error::unavailable("SHUTTING_DOWN", "the server is shutting down; retry on another instance")
        .with_retry_after(SHUTDOWN_RETRY_AFTER)
        .into()
}

/// The signal that ends every open stream at shutdown. Streams read a flag on each poll
/// (no lock: with 10,000 streams every publication polls each of them twice), and those
/// waiting for data are woken through a token they registered with once.
#[derive(Clone, Debug, Default)]
pub struct EndStreams {
    ended: Arc<AtomicBool>,
    token: CancellationToken,
}

impl EndStreams {
    /// A signal not given yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends every open stream: the flag first, so a stream the token wakes sees it.
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.token.cancel();
    }

    /// Whether [`end`](Self::end) was called.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// Traces every call and ends open streams when `end_streams` is given.
#[derive(Clone, Debug)]
pub struct RpcLayer {
    end_streams: EndStreams,
}

impl RpcLayer {
    /// A layer whose open streams end with UNAVAILABLE once `end_streams` is given.
    pub fn new(end_streams: EndStreams) -> Self {
        Self { end_streams }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner, end_streams: self.end_streams.clone() }
    }
}

/// The service [`RpcLayer`] produces.
#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
    end_streams: EndStreams,
}

impl<S, B, ResBody> Service<Request<B>> for RpcService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = tracing::info_span!("rpc", method = %request.uri().path());
        let future = span.in_scope(|| self.inner.call(request));
        RpcFuture {
            future,
            end_streams: Some(self.end_streams.clone()),
            record: Some(Record { span, start: Instant::now(), finished: false }),
        }
    }
}

pin_project! {
    /// The response future of [`RpcService`].
    pub struct RpcFuture<F> {
        #[pin]
        future: F,
        end_streams: Option<EndStreams>,
        record: Option<Record>,
    }
}

impl<F, ResBody, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<RpcBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let record = this.record.as_ref().expect("an RpcFuture is not polled after it completed");
        let response = match record.span.in_scope(|| this.future.poll(cx)) {
            Poll::Ready(response) => response,
            Poll::Pending => return Poll::Pending,
        };
        let mut record = this.record.take().expect("checked above");
        let response = response?;
        // A trailers-only answer (any error, and some empty streams) carries its code here.
        if let Some(code) = grpc_status(response.headers()) {
            record.finish(code);
        }
        let end_streams = this.end_streams.take().expect("taken once, with the record");
        Poll::Ready(Ok(response.map(|inner| RpcBody {
            inner,
            end_streams,
            waiter: None,
            registered: None,
            record,
            data_frames: 0,
            waited: false,
            ended: false,
        })))
    }
}

pin_project! {
    /// The response body of [`RpcService`]: passes frames through, records the final code,
    /// and ends an open stream with UNAVAILABLE when the server stops.
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        end_streams: EndStreams,
        // Registered lazily, the first time the stream waits: unary answers never do.
        waiter: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
        // The waker the waiter was last polled with: polling it again with the same one
        // would only take the token's lock to change nothing.
        registered: Option<Waker>,
        record: Record,
        data_frames: u64,
        waited: bool,
        ended: bool,
    }
}

impl<B> Body for RpcBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        // A stream is a body that has waited for data or sent more than one message; a unary
        // answer (one message, then trailers, never waiting) is left alone. Checked before
        // the inner body, so a stream that always has data ready still ends.
        let is_stream = *this.waited || *this.data_frames > 1;
        if is_stream && this.end_streams.is_ended() {
            return Poll::Ready(Some(Ok(end_stream(this.record, this.ended))));
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_data() {
                    *this.data_frames += 1;
                } else if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.record.finish(code);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.record.finish(tonic::Code::Internal as i32);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                *this.ended = true;
                // Ended without trailers: the code was in the headers (already recorded).
                this.record.finish(tonic::Code::Ok as i32);
                Poll::Ready(None)
            }
            Poll::Pending => {
                *this.waited = true;
                if this.registered.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
                    // The token wakes this task; the flag, set before, ends the stream then.
                    return Poll::Pending;
                }
                let token = this.end_streams.token.clone();
                let waiter = this.waiter.get_or_insert_with(|| Box::pin(token.cancelled_owned()));
                match waiter.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Ok(end_stream(this.record, this.ended)))),
                    Poll::Pending => {
                        *this.registered = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended { SizeHint::with_exact(0) } else { self.inner.size_hint() }
    }
}

/// The trailers that end an open stream at shutdown.
fn end_stream(record: &mut Record, ended: &mut bool) -> Frame<Bytes> {
    *ended = true;
    let status = shutdown_status();
    record.finish(status.code() as i32);
    let mut trailers = HeaderMap::new();
    // Only fails for a message that is not valid header text; ours is.
    let _ = status.add_header(&mut trailers);
    Frame::trailers(trailers)
}

/// The span of one call and whether its end has been logged.
struct Record {
    span: Span,
    start: Instant,
    finished: bool,
}

impl Record {
    fn finish(&mut self, code: i32) {
        if self.finished {
            return;
        }
        self.finished = true;
        let latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let code = tonic::Code::from_i32(code);
        let _entered = self.span.enter();
        match code {
            tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
                tracing::error!(code = code_name(code), latency_ms, "rpc finished")
            }
            _ => tracing::info!(code = code_name(code), latency_ms, "rpc finished"),
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (or the connection broke).
        if !self.finished {
            self.finish(tonic::Code::Cancelled as i32);
        }
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The canonical UPPER_SNAKE name of a gRPC code, as logs and dashboards show it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
