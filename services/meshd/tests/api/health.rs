//! grpc.health.v1: statuses per registered service, Watch, unknown names, and statuses
//! that follow a backend (a private redis-server stopped and started again).

use std::sync::Arc;
use std::time::Duration;

use mesh_core::backend::{BackendProbe, RedisProbe, redis_pool};
use mesh_core::config::RedisSettings;
use mesh_testkit::{RedisServer, TestApp};
use meshd::health::{HealthTarget, spawn_monitor};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

fn ask(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.to_owned() }
}

#[tokio::test]
async fn meshd_boots_on_port_zero_and_reports_serving_for_each_registered_service() {
    let app = TestApp::start().await.unwrap();
    assert_ne!(app.addr().port(), 0);
    let mut health = app.health();
    for service in ["", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"] {
        let status = health.check(ask(service)).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "status of {service:?}");
    }
}

#[tokio::test]
async fn watch_reports_serving_for_a_registered_service() {
    let app = TestApp::start().await.unwrap();
    let mut stream = app.health().watch(ask("grpc.reflection.v1.ServerReflection")).await.unwrap().into_inner();
    let first = stream.next().await.expect("one update").unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn an_unknown_service_name_gets_not_found() {
    let app = TestApp::start().await.unwrap();
    let status = app.health().check(ask("mesh.nothing.v1.NothingService")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_service_whose_redis_goes_down_is_not_serving_until_redis_is_back() {
    let mut redis = RedisServer::start().await.unwrap();
    let settings = RedisSettings { connect_timeout: Duration::from_secs(2), ..RedisSettings::default() };
    let pool = redis_pool(&redis.url(), &settings).unwrap();
    let probe: Arc<dyn BackendProbe> = Arc::new(RedisProbe::new(pool, Duration::from_secs(2)));
    let (reporter, service) = tonic_health::server::health_reporter();
    let target = HealthTarget { service: "mesh.test.v1.TestService".to_owned(), probes: vec![probe] };
    let stop = CancellationToken::new();
    let monitor = spawn_monitor(reporter, vec![target], Duration::from_millis(50), stop.clone()).await;
    let client = serve_health(service).await;

    let mut updates = client.clone().watch(ask("mesh.test.v1.TestService")).await.unwrap().into_inner();
    assert_eq!(next_status(&mut updates).await, ServingStatus::Serving as i32);

    redis.stop().await;
    assert_eq!(next_status(&mut updates).await, ServingStatus::NotServing as i32);

    redis.restart().await.unwrap();
    assert_eq!(next_status(&mut updates).await, ServingStatus::Serving as i32);
    stop.cancel();
    monitor.await.unwrap();
}

async fn next_status(updates: &mut tonic::Streaming<HealthCheckResponse>) -> i32 {
    tokio::time::timeout(Duration::from_secs(20), updates.next())
        .await
        .expect("a status change within 20 s")
        .expect("the watch stays open")
        .unwrap()
        .status
}

async fn serve_health<S>(service: S) -> HealthClient<tonic::transport::Channel>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    HealthClient::new(tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy())
}
