//! Server reflection, v1 and v1alpha (grpcurl 1.8 speaks v1alpha): listing services and
//! describing a method, through the generated clients and through the real grpcurl.

use std::path::PathBuf;

use mesh_testkit::TestApp;
use prost::Message;
use prost_types::FileDescriptorProto;
use tokio_stream::StreamExt;
use tonic_reflection::pb::{v1, v1alpha};

const EXPECTED_SERVICES: [&str; 7] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "mesh.auth.v1.AuthService",
    "mesh.feed.v1.FeedService",
    "mesh.session.v1.SessionService",
    "mesh.storage.v1.StorageService",
];

async fn ask_v1(
    app: &TestApp,
    request: v1::server_reflection_request::MessageRequest,
) -> v1::server_reflection_response::MessageResponse {
    let request = v1::ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut responses =
        app.reflection_v1().server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
    responses.next().await.expect("one answer").unwrap().message_response.expect("a message")
}

async fn ask_v1alpha(
    app: &TestApp,
    request: v1alpha::server_reflection_request::MessageRequest,
) -> v1alpha::server_reflection_response::MessageResponse {
    let request = v1alpha::ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut responses =
        app.reflection_v1alpha().server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
    responses.next().await.expect("one answer").unwrap().message_response.expect("a message")
}

fn method_names(files: &[Vec<u8>], service: &str) -> Vec<String> {
    files
        .iter()
        .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .flat_map(|file| file.service)
        .filter(|candidate| candidate.name() == service)
        .flat_map(|candidate| candidate.method.into_iter().map(|method| method.name().to_owned()))
        .collect()
}

#[tokio::test]
async fn reflection_v1_lists_the_services_and_describes_a_method() {
    let app = TestApp::start().await.unwrap();
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;

    let MessageResponse::ListServicesResponse(list) = ask_v1(&app, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a list of services");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
    names.sort();
    assert_eq!(names, EXPECTED_SERVICES);

    let MessageResponse::FileDescriptorResponse(files) =
        ask_v1(&app, MessageRequest::FileContainingSymbol("grpc.health.v1.Health.Check".to_owned())).await
    else {
        panic!("not a file descriptor");
    };
    assert!(method_names(&files.file_descriptor_proto, "Health").contains(&"Check".to_owned()));
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_services_and_describes_a_method() {
    let app = TestApp::start().await.unwrap();
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;

    let MessageResponse::ListServicesResponse(list) =
        ask_v1alpha(&app, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a list of services");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
    names.sort();
    assert_eq!(names, EXPECTED_SERVICES);

    let MessageResponse::FileDescriptorResponse(files) =
        ask_v1alpha(&app, MessageRequest::FileContainingSymbol("grpc.health.v1.Health.Watch".to_owned())).await
    else {
        panic!("not a file descriptor");
    };
    assert!(method_names(&files.file_descriptor_proto, "Health").contains(&"Watch".to_owned()));
}

#[tokio::test]
async fn reflection_describes_the_mesh_api_types() {
    let app = TestApp::start().await.unwrap();
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;
    let MessageResponse::FileDescriptorResponse(files) =
        ask_v1(&app, MessageRequest::FileContainingSymbol("mesh.stream.v1.Position".to_owned())).await
    else {
        panic!("not a file descriptor");
    };
    let packages: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).unwrap().package().to_owned())
        .collect();
    assert!(packages.contains(&"mesh.stream.v1".to_owned()), "{packages:?}");
}

/// The grpcurl binary: `MESH_GRPCURL`, else the one scripts/install-tools put in
/// `.tools/bin` (grpcurl 1.8.6 from PyPI). Never whatever `grpcurl` the machine has.
fn grpcurl() -> PathBuf {
    if let Some(path) = std::env::var_os("MESH_GRPCURL") {
        return PathBuf::from(path);
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/grpcurl");
    assert!(
        installed.is_file(),
        "grpcurl not found: run scripts/install-tools (it installs grpcurl 1.8.6 into .tools/bin)"
    );
    installed
}

async fn run_grpcurl(args: &[&str]) -> String {
    let output = tokio::process::Command::new(grpcurl()).args(args).output().await.expect("grpcurl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "grpcurl {args:?} failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[tokio::test]
async fn the_real_grpcurl_lists_and_describes_through_reflection() {
    let app = TestApp::start().await.unwrap();
    let addr = app.addr().to_string();

    let listed = run_grpcurl(&["-plaintext", &addr, "list"]).await;
    for service in EXPECTED_SERVICES {
        assert!(listed.lines().any(|line| line.trim() == service), "{service} missing from grpcurl list:\n{listed}");
    }

    let described = run_grpcurl(&["-plaintext", &addr, "describe", "grpc.health.v1.Health.Check"]).await;
    assert!(described.contains("rpc Check"), "unexpected describe output:\n{described}");
}
