//! The browser path: Subscribe over grpc-web text mode on HTTP/1.1, read as it streams.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh_proto::mesh::feed::v1 as pb;
use mesh_proto::mesh::stream::v1::ChannelPosition;
use mesh_testkit::RedisServer;
use pb::subscribe_response::Event;
use prost::Message;

use crate::support::{Feed, on_redis};

/// Longest wait for one message (a guard, not a timing).
const GUARD: Duration = Duration::from_secs(30);

/// A grpc-web text-mode response body read frame by frame as it arrives.
struct TextStream {
    body: hyper::body::Incoming,
    /// Base64 text received but not decoded yet (not a whole quantum).
    text: Vec<u8>,
    /// Decoded bytes not yet split into frames.
    bytes: BytesMut,
}

impl TextStream {
    /// The next message frame (`None` at the trailer frame or the end).
    async fn next(&mut self) -> Option<pb::SubscribeResponse> {
        loop {
            if self.bytes.len() >= 5 {
                let len = u32::from_be_bytes(self.bytes[1..5].try_into().unwrap()) as usize;
                if self.bytes.len() >= 5 + len {
                    let flag = self.bytes[0];
                    self.bytes.advance(5);
                    let payload = self.bytes.split_to(len).freeze();
                    if flag & 0x80 != 0 {
                        return None;
                    }
                    return Some(pb::SubscribeResponse::decode(payload).expect("a SubscribeResponse"));
                }
            }
            let frame = tokio::time::timeout(GUARD, self.body.frame()).await.expect("a frame within the guard")?;
            if let Ok(data) = frame.expect("the body reads").into_data() {
                self.text.extend_from_slice(&data);
                // Each chunk may be padded on its own: decode whole quanta of 4 characters.
                let whole = self.text.len() / 4 * 4;
                for quantum in self.text[..whole].chunks(4) {
                    self.bytes.extend(STANDARD.decode(quantum).expect("valid base64"));
                }
                self.text.drain(..whole);
            }
        }
    }

    /// The next message that is not a heartbeat, counting the heartbeats passed.
    async fn next_event(&mut self, heartbeats: &mut usize) -> Event {
        loop {
            match self.next().await.expect("the stream goes on").event.expect("an event") {
                Event::Heartbeat(_) => *heartbeats += 1,
                event => return event,
            }
        }
    }
}

#[tokio::test]
async fn a_grpc_web_text_subscriber_over_http1_receives_live_activities_and_heartbeats() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |settings| settings.stream.heartbeat_interval = Duration::from_millis(300)).await;
    let token = app.token("acme", "browser");
    let request = pb::SubscribeRequest { channels: vec![ChannelPosition { channel: "global".into(), position: None }] };
    let mut framed = vec![0u8];
    let message = request.encode_to_vec();
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/mesh.feed.v1.FeedService/Subscribe", app.url()))
        .version(http::Version::HTTP_11)
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(STANDARD.encode(framed))))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/grpc-web-text"));
    let mut stream = TextStream { body: response.into_body(), text: Vec::new(), bytes: BytesMut::new() };

    let mut heartbeats = 0;
    assert!(matches!(stream.next_event(&mut heartbeats).await, Event::Confirmed(_)));
    let published = Feed::of(&app, "acme", "alice").publish("post", "to the browser").await.unwrap();
    let Event::Activity(event) = stream.next_event(&mut heartbeats).await else { panic!("an activity") };
    assert_eq!(event.activity, published.activity);
    // Idle now: heartbeats keep the stream alive.
    while heartbeats < 2 {
        match stream.next().await.expect("the stream goes on").event.expect("an event") {
            Event::Heartbeat(_) => heartbeats += 1,
            other => panic!("only heartbeats while idle, got {other:?}"),
        }
    }
}
