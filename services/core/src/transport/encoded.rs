//! Streaming responses encoded once per publication and shared by every stream.
//!
//! A publication reaches every local subscriber of its channel as one shared
//! [`Publication`]. Through the generated tonic server, each stream would turn it into its
//! own response message and encode that: with 10,000 subscribers, 10,000 equal encodings.
//! Here the first stream encodes the response and keeps the bytes in the publication
//! ([`Publication::response`]); the others send those bytes as they are. Only the gRPC frame
//! around them (5 bytes and a copy into the stream's buffer) is per stream.
//!
//! The pieces:
//! - [`Encoded`]: a response message already encoded;
//! - [`SharedEncoding`]: wraps a service's [`ContractMessages`] so that a
//!   [`ContractStream`](super::stream::ContractStream) yields [`Encoded`] messages, sharing
//!   the publications' encodings;
//! - [`EncodedCodec`]: the codec of a server-streaming method that sends [`Encoded`]
//!   messages, with a small per-stream buffer (an idle stream holds 512 bytes for it, not
//!   tonic's default 8 KiB);
//! - [`StreamingRoute`]: a generated tonic server with one server-streaming method served
//!   through that codec instead (the generated code hard-wires its prost codec).

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};
use mesh_proto::mesh::stream::v1 as pb;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::server::{NamedService, ServerStreamingService};
use tonic_prost::ProstDecoder;

use super::stream::ContractMessages;
use crate::broker::Publication;

/// Initial size of a stream's encoding buffer: a small response fits; a larger one grows
/// it.
const STREAM_BUFFER: usize = 512;
/// Encoded bytes a stream gathers before it hands them to the connection (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// A response message already encoded (protobuf bytes, without the gRPC frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(Bytes);

impl Encoded {
    /// `message`, encoded.
    pub fn message(message: &impl prost::Message) -> Self {
        Self(Bytes::from(message.encode_to_vec()))
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

/// A service's [`ContractMessages`] whose messages are sent encoded: confirmations and
/// heartbeats are encoded per stream, publications once per process (see the module
/// docs). The wrapped messages must depend on the publication alone, not on the stream:
/// a stream that finds the encoding made does not call them.
pub struct SharedEncoding<M> {
    inner: M,
    kind: &'static str,
}

impl<M> SharedEncoding<M> {
    /// Encodes `inner`'s messages; `kind` is the response message's full protobuf name
    /// (`mesh.feed.v1.SubscribeResponse`), under which publications keep their encoding.
    pub fn new(inner: M, kind: &'static str) -> Self {
        Self { inner, kind }
    }
}

impl<M> ContractMessages for SharedEncoding<M>
where
    M: ContractMessages,
    M::Message: prost::Message,
{
    type Message = Encoded;

    fn confirmed(&self, confirmed: pb::SubscriptionConfirmed) -> Encoded {
        Encoded::message(&self.inner.confirmed(confirmed))
    }

    fn heartbeat(&self, heartbeat: pb::Heartbeat) -> Encoded {
        Encoded::message(&self.inner.heartbeat(heartbeat))
    }

    fn publication(&mut self, publication: &Publication) -> Result<(Encoded, bool), tonic::Status> {
        let inner = &mut self.inner;
        let (bytes, last) = publication.response.get_or_encode(self.kind, || {
            inner
                .publication(publication)
                .map(|(message, last)| (Bytes::from(prost::Message::encode_to_vec(&message)), last))
        })?;
        Ok((Encoded(bytes), last))
    }
}

/// The codec of a server-streaming method that receives a prost request `R` and sends
/// [`Encoded`] responses.
#[derive(Debug)]
pub struct EncodedCodec<R>(PhantomData<fn() -> R>);

impl<R> Default for EncodedCodec<R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<R: prost::Message + Default + Send + 'static> Codec for EncodedCodec<R> {
    type Encode = Encoded;
    type Decode = R;
    type Encoder = EncodedEncoder;
    type Decoder = ProstDecoder<R>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// Writes [`Encoded`] messages as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = Encoded;
    type Error = tonic::Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item.0);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(STREAM_BUFFER, YIELD_THRESHOLD)
    }
}

/// A generated tonic server (`inner`) with the server-streaming method at `path` answered
/// by `method` through [`EncodedCodec`]; every other path goes to `inner`. It is added to
/// a router like the generated server (same service name).
pub struct StreamingRoute<S, M, R> {
    inner: S,
    path: &'static str,
    method: M,
    max_decoding: usize,
    max_encoding: usize,
    request: PhantomData<fn() -> R>,
}

impl<S: Clone, M: Clone, R> Clone for StreamingRoute<S, M, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            path: self.path,
            method: self.method.clone(),
            max_decoding: self.max_decoding,
            max_encoding: self.max_encoding,
            request: PhantomData,
        }
    }
}

impl<S, M, R> std::fmt::Debug for StreamingRoute<S, M, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingRoute").field("path", &self.path).finish_non_exhaustive()
    }
}

impl<S, M, R> StreamingRoute<S, M, R> {
    /// `inner` with `path` (`/<package>.<Service>/<Method>`) served by `method`, with
    /// the message size limits given.
    pub fn new(inner: S, path: &'static str, method: M, max_decoding: usize, max_encoding: usize) -> Self {
        Self { inner, path, method, max_decoding, max_encoding, request: PhantomData }
    }
}

impl<S: NamedService, M, R> NamedService for StreamingRoute<S, M, R> {
    const NAME: &'static str = S::NAME;
}

impl<S, M, R> tower::Service<http::Request<Body>> for StreamingRoute<S, M, R>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
    M: ServerStreamingService<R, Response = Encoded> + Clone + Send + 'static,
    M::Future: Send + 'static,
    M::ResponseStream: Send + 'static,
    R: prost::Message + Default + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != self.path {
            return Box::pin(self.inner.call(request));
        }
        let method = self.method.clone();
        let (max_decoding, max_encoding) = (self.max_decoding, self.max_encoding);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(EncodedCodec::<R>::default())
                .apply_max_message_size_config(Some(max_decoding), Some(max_encoding));
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{ChannelKey, ChannelName, Epoch, Position};

    struct Counting(usize);

    impl ContractMessages for Counting {
        type Message = pb::Heartbeat;

        fn confirmed(&self, _: pb::SubscriptionConfirmed) -> pb::Heartbeat {
            pb::Heartbeat::default()
        }

        fn heartbeat(&self, heartbeat: pb::Heartbeat) -> pb::Heartbeat {
            heartbeat
        }

        fn publication(&mut self, publication: &Publication) -> Result<(pb::Heartbeat, bool), tonic::Status> {
            self.0 += 1;
            let seconds = i64::try_from(publication.position.offset).unwrap_or_default();
            Ok((pb::Heartbeat { server_time: Some(prost_types::Timestamp { seconds, nanos: 0 }) }, false))
        }
    }

    #[test]
    fn a_publication_is_encoded_once_for_every_stream_of_its_kind() {
        let channel = ChannelKey::new("acme", ChannelName::parse("global", "channel").unwrap()).unwrap();
        let publication = Publication::new(channel, Position { offset: 7, epoch: Epoch::random() }, Bytes::new());
        let (mut first, mut second) =
            (SharedEncoding::new(Counting(0), "test.Kind"), SharedEncoding::new(Counting(0), "test.Kind"));
        let (a, _) = first.publication(&publication).unwrap();
        let (b, _) = second.publication(&publication).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, Encoded::message(&Counting(0).publication(&publication).unwrap().0));
        assert_eq!((first.inner.0, second.inner.0), (1, 0), "the second stream reuses the bytes");
        let mut other = SharedEncoding::new(Counting(0), "test.Other");
        other.publication(&publication).unwrap();
        other.publication(&publication).unwrap();
        assert_eq!(other.inner.0, 2, "another kind encodes its own, never keeps it");
    }
}
