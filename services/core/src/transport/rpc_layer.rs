//! [`RpcLayer`]: what happens around every call, whatever the service.
//!
//! - A tracing span per RPC with the method, and one `rpc finished` event carrying the gRPC
//!   code and the latency (for streams: when the stream ends).
//! - Shutdown: once the drain period is over (the `end_streams` token fires), every call
//!   still open ends with UNAVAILABLE and a retry hint: a server stream gets those trailers
//!   after the last message it sent, a call still being handled gets them as its answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::{Layer, Service};
use tracing::Span;

use super::auth_layer::is_grpc;
use crate::Error;

/// How long a client told to go away should wait before retrying elsewhere.
const SHUTDOWN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The status open calls end with when the server shuts down: UNAVAILABLE, reason
/// `SHUTTING_DOWN`, with a retry hint.
pub fn shutdown_status() -> tonic::Status {
    Error::unavailable("SHUTTING_DOWN", "the server is shutting down; retry on another instance")
        .with_retry_after(SHUTDOWN_RETRY_AFTER)
        .into()
}

/// Traces every call and ends open calls when `end_streams` fires.
#[derive(Clone, Debug)]
pub struct RpcLayer {
    end_streams: CancellationToken,
}

impl RpcLayer {
    /// A layer whose open calls end with UNAVAILABLE once `end_streams` is cancelled.
    pub fn new(end_streams: CancellationToken) -> Self {
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
    end_streams: CancellationToken,
}

impl<S, B, ResBody> Service<Request<B>> for RpcService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Default,
{
    type Response = Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let grpc = is_grpc(request.headers());
        let span = tracing::info_span!("rpc", method = %request.uri().path());
        let future = span.in_scope(|| self.inner.call(request));
        RpcFuture {
            future,
            end_streams: grpc.then(|| Box::pin(self.end_streams.clone().cancelled_owned())),
            record: Some(Record { span, grpc, start: Instant::now(), finished: false }),
        }
    }
}

pin_project! {
    /// The response future of [`RpcService`].
    pub struct RpcFuture<F> {
        #[pin]
        future: F,
        end_streams: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
        record: Option<Record>,
    }
}

impl<F, ResBody, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = Result<Response<RpcBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut record = this.record.take().expect("an RpcFuture is not polled after it completed");
        let polled = record.span.in_scope(|| this.future.poll(cx));
        let response = match polled {
            Poll::Ready(response) => response,
            Poll::Pending => {
                if this.end_streams.as_mut().is_some_and(|end_streams| end_streams.as_mut().poll(cx).is_ready()) {
                    let status = shutdown_status();
                    record.finish(status.code() as i32);
                    let response = status.into_http::<ResBody>();
                    return Poll::Ready(Ok(response.map(|body| RpcBody::new(body, record, None))));
                }
                *this.record = Some(record);
                return Poll::Pending;
            }
        };
        let response = response?;
        // A trailers-only answer (any error, and some empty streams) carries its code here.
        if let Some(code) = grpc_status(response.headers()) {
            record.finish(code);
        }
        let end_streams = this.end_streams.take();
        Poll::Ready(Ok(response.map(|body| RpcBody::new(body, record, end_streams))))
    }
}

pin_project! {
    /// The response body of [`RpcService`]: passes frames through, records the final code,
    /// and ends an open gRPC stream with UNAVAILABLE when the server stops.
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        end_streams: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
        record: Record,
        ended: bool,
    }
}

impl<B> RpcBody<B> {
    fn new(inner: B, record: Record, end_streams: Option<Pin<Box<WaitForCancellationFutureOwned>>>) -> Self {
        Self { inner, end_streams, record, ended: false }
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
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
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
                // A body that ends without trailers: plain HTTP, or a completed gRPC answer
                // whose code was in the headers.
                this.record.finish(0);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some(end_streams) = this.end_streams.as_mut() else {
                    return Poll::Pending;
                };
                ready!(end_streams.as_mut().poll(cx));
                *this.ended = true;
                let status = shutdown_status();
                this.record.finish(status.code() as i32);
                let mut trailers = HeaderMap::new();
                // Only fails for a message that is not valid header text; ours is.
                let _ = status.add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
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

/// The span of one call and whether its end has been logged.
struct Record {
    span: Span,
    grpc: bool,
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
        let code = if self.grpc { tonic::Code::from_i32(code) } else { tonic::Code::Ok };
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
