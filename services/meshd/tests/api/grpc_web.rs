//! grpc-web over HTTP/1.1, as a browser sends it: binary and text (base64) modes reach a
//! service and carry grpc-status in the trailer frame; CORS preflights are answered.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, Bytes};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh_testkit::TestApp;
use prost::Message;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// What a grpc-web response body holds: the messages and the trailer frame's fields.
struct GrpcWebAnswer {
    messages: Vec<Bytes>,
    trailers: Vec<(String, String)>,
}

impl GrpcWebAnswer {
    fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

fn parse_frames(mut body: Bytes) -> GrpcWebAnswer {
    let mut answer = GrpcWebAnswer { messages: Vec::new(), trailers: Vec::new() };
    while body.remaining() >= 5 {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        let payload = body.split_to(len);
        if flag & 0x80 == 0 {
            answer.messages.push(payload);
        } else {
            for line in String::from_utf8(payload.to_vec()).unwrap().split("\r\n").filter(|line| !line.is_empty()) {
                let (key, value) = line.split_once(':').expect("a trailer line is key:value");
                answer.trailers.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
    }
    answer
}

/// Base64 chunks of a text-mode stream may each carry padding: decode quantum by quantum.
fn decode_text_mode(body: &[u8]) -> Bytes {
    let mut decoded = Vec::new();
    for quantum in body.chunks(4) {
        decoded.extend(STANDARD.decode(quantum).expect("valid base64"));
    }
    Bytes::from(decoded)
}

async fn http1_post(url: String, content_type: &str, body: Vec<u8>, extra: &[(&str, &str)]) -> Response<Bytes> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .version(http::Version::HTTP_11)
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .header("accept", content_type);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn health_check_body() -> Vec<u8> {
    frame(&HealthCheckRequest { service: String::new() }.encode_to_vec())
}

#[tokio::test]
async fn a_binary_grpc_web_call_over_http1_reaches_health_and_returns_trailers() {
    let app = TestApp::start().await.unwrap();
    let url = format!("{}/grpc.health.v1.Health/Check", app.url());
    let response = http1_post(url, "application/grpc-web+proto", health_check_body(), &[]).await;

    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/grpc-web"));
    let answer = parse_frames(response.into_body());
    assert_eq!(answer.trailer("grpc-status"), Some("0"));
    let message = HealthCheckResponse::decode(answer.messages[0].clone()).unwrap();
    assert_eq!(message.status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn a_text_mode_grpc_web_call_over_http1_reaches_health_and_returns_trailers() {
    let app = TestApp::start().await.unwrap();
    let url = format!("{}/grpc.health.v1.Health/Check", app.url());
    let body = STANDARD.encode(health_check_body()).into_bytes();
    let response = http1_post(url, "application/grpc-web-text", body, &[]).await;

    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/grpc-web-text"));
    let answer = parse_frames(decode_text_mode(response.body()));
    assert_eq!(answer.trailer("grpc-status"), Some("0"));
    let message = HealthCheckResponse::decode(answer.messages[0].clone()).unwrap();
    assert_eq!(message.status, ServingStatus::Serving as i32);
}

/// The grpc-status of a binary grpc-web call to `url` with an empty message, from the
/// headers (trailers-only answer) or the trailer frame.
pub async fn grpc_web_status(url: String, extra: &[(&str, &str)]) -> Option<String> {
    let response = http1_post(url, "application/grpc-web+proto", frame(&[]), extra).await;
    let in_headers = response.headers().get("grpc-status").map(|value| value.to_str().unwrap().to_owned());
    let in_trailers = parse_frames(response.into_body()).trailer("grpc-status").map(str::to_owned);
    in_headers.or(in_trailers)
}

#[tokio::test]
async fn a_grpc_web_call_without_a_token_to_a_protected_path_is_unauthenticated() {
    let app = TestApp::start().await.unwrap();
    let status = grpc_web_status(format!("{}/mesh.session.v1.SessionService/GetSession", app.url()), &[]).await;
    assert_eq!(status.as_deref(), Some("16"), "UNAUTHENTICATED is 16");
}

#[tokio::test]
async fn a_cors_preflight_from_another_origin_is_answered() {
    let app = TestApp::start().await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri(format!("{}/grpc.health.v1.Health/Check", app.url()))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-grpc-web,authorization")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();

    assert!(response.status().is_success(), "preflight status {}", response.status());
    let header = |name: &str| response.headers().get(name).map(|value| value.to_str().unwrap().to_ascii_lowercase());
    assert_eq!(header("access-control-allow-origin").as_deref(), Some("*"));
    let allowed = header("access-control-allow-headers").unwrap_or_default();
    for needed in ["content-type", "x-grpc-web", "authorization"] {
        assert!(allowed.contains(needed), "{needed} not allowed: {allowed}");
    }
    assert!(header("access-control-allow-methods").unwrap_or_default().contains("post"));
}

#[tokio::test]
async fn a_cross_origin_answer_exposes_the_grpc_status_headers() {
    let app = TestApp::start().await.unwrap();
    let url = format!("{}/grpc.health.v1.Health/Check", app.url());
    let response =
        http1_post(url, "application/grpc-web+proto", health_check_body(), &[("origin", "https://app.example")]).await;
    let exposed = response.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("grpc-status") && exposed.contains("grpc-message"), "exposed: {exposed}");
}

#[tokio::test]
async fn a_preflight_from_an_origin_that_is_not_allowed_gets_no_cors_grant() {
    let app =
        TestApp::start_with(|settings| settings.server.cors_allowed_origins = vec!["https://app.example".to_owned()])
            .await
            .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("{}/grpc.health.v1.Health/Check", app.url()))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let allowed = client.request(preflight("https://app.example")).await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");
    let denied = client.request(preflight("https://evil.example")).await.unwrap();
    assert!(denied.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn plain_http_is_served_on_the_same_port() {
    let app = TestApp::start().await.unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.get(format!("{}/healthz", app.url()).parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok\n");
}
