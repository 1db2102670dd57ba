//! Graceful shutdown: after SIGTERM an open server stream (health Watch) keeps running for
//! the drain period, then ends with UNAVAILABLE (reason SHUTTING_DOWN, with a retry hint),
//! and meshd exits 0. JSON logs record each call.

use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::support::{meshd_command, reason, spawn_meshd};

#[tokio::test]
async fn an_open_stream_ends_with_unavailable_after_the_drain_and_meshd_exits_0() {
    let data_dir = tempfile::tempdir().unwrap();
    let drain = Duration::from_millis(500);
    let mut command = meshd_command();
    command
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("MESH__AUTH__DEV_KEY", "true")
        .env("MESH__SERVER__DRAIN_TIMEOUT", format!("{}ms", drain.as_millis()));
    let mut meshd = spawn_meshd(command).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", meshd.addr)).unwrap().connect_lazy();
    let mut health = HealthClient::new(channel);
    let mut updates = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(updates.next().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
    // The same stream opened by a client that claims another content type must end too.
    let odd_stream = open_watch_with_content_type(&meshd.addr, "text/plain").await;
    let odd_stream = tokio::spawn(final_grpc_status(odd_stream));

    let pid = meshd.child.id().expect("meshd is running").to_string();
    let signalled = Instant::now();
    let kill = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(kill.success());

    // First the status turns NOT_SERVING (load balancers stop sending), then after the
    // drain the stream ends with UNAVAILABLE.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(20), updates.next()).await.expect("the stream ends within 20 s")
        {
            Some(Ok(update)) => assert_eq!(update.status, ServingStatus::NotServing as i32),
            Some(Err(status)) => break status,
            None => panic!("the stream ended without a status"),
        }
    };
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert_eq!(reason(&ended).as_deref(), Some("SHUTTING_DOWN"));
    assert!(ended.get_details_retry_info().and_then(|info| info.retry_delay).is_some(), "a retry hint is given");
    assert!(signalled.elapsed() >= drain, "the stream was ended before the drain period was over");

    assert_eq!(odd_stream.await.unwrap().as_deref(), Some("14"), "the text/plain stream ends with UNAVAILABLE too");

    let exit = tokio::time::timeout(Duration::from_secs(20), meshd.child.wait()).await.expect("meshd exits").unwrap();
    let stderr = meshd.stderr.await.unwrap();
    assert_eq!(exit.code(), Some(0), "meshd stderr: {stderr}");
    assert!(
        !stderr.contains("connections still open"),
        "meshd had to cut connections: a stream was not ended\n{stderr}"
    );
}

/// Opens health Watch over raw HTTP/2 with `content_type`; returns once the answer's
/// headers arrived (the stream is open on the server).
async fn open_watch_with_content_type(addr: &str, content_type: &'static str) -> http::Response<hyper::body::Incoming> {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<bytes::Bytes>>();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/grpc.health.v1.Health/Watch"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    client.request(request).await.unwrap()
}

/// The grpc-status in the trailers that end `response`.
async fn final_grpc_status(response: http::Response<hyper::body::Incoming>) -> Option<String> {
    use http_body_util::BodyExt;
    let trailers = response.into_body().collect().await.unwrap().trailers().cloned()?;
    trailers.get("grpc-status").map(|value| value.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn json_logs_carry_one_rpc_finished_event_per_call_with_method_and_code() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = meshd_command();
    command
        .args(["--log-format", "json", "--data-dir"])
        .arg(data_dir.path())
        .env("MESH__AUTH__DEV_KEY", "true")
        .env("MESH__SERVER__DRAIN_TIMEOUT", "0s");
    let mut meshd = spawn_meshd(command).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", meshd.addr)).unwrap().connect_lazy();
    HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.unwrap();

    let pid = meshd.child.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    assert_eq!(meshd.child.wait().await.unwrap().code(), Some(0));
    let stderr = meshd.stderr.await.unwrap();

    let events: Vec<serde_json::Value> =
        stderr.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"))).collect();
    let finished: Vec<&serde_json::Value> = events.iter().filter(|event| event["message"] == "rpc finished").collect();
    assert_eq!(finished.len(), 1, "{stderr}");
    assert_eq!(finished[0]["code"], "OK");
    assert_eq!(finished[0]["span"]["method"], "/grpc.health.v1.Health/Check");
    assert!(finished[0]["latency_ms"].as_f64().is_some());
}
