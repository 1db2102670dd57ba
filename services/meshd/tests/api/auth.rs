//! The auth layer inside meshd's real stack (CORS, grpc-web, RPC layer, auth): mesh RPCs
//! need a valid bearer token over native gRPC and grpc-web alike.

use mesh_core::auth::SigningKeyPair;
use mesh_proto::mesh::session::v1::ListSessionsRequest;
use mesh_proto::mesh::session::v1::session_service_client::SessionServiceClient;
use mesh_testkit::TestApp;
use tonic::metadata::MetadataValue;

use crate::support::reason;

pub async fn list_sessions(app: &TestApp, token: &str) -> Result<usize, tonic::Status> {
    let mut request = tonic::Request::new(ListSessionsRequest::default());
    request.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    let response = SessionServiceClient::new(app.channel()).list_sessions(request).await?;
    Ok(response.into_inner().sessions.len())
}

#[tokio::test]
async fn a_valid_token_passes_the_auth_layer() {
    let app = TestApp::start().await.unwrap();
    assert_eq!(list_sessions(&app, &app.token("t1", "u1")).await.unwrap(), 0);
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_with_a_reason() {
    let app = TestApp::start().await.unwrap();
    let mut expired = app.claims("t1", "u1");
    expired.iat -= 2000;
    expired.exp -= 2000;
    let mut wrong_audience = app.claims("t1", "u1");
    wrong_audience.aud = "another-mesh".to_owned();
    let stranger = SigningKeyPair::generate();
    let cases = [
        (app.key().sign(&expired).unwrap(), "TOKEN_EXPIRED"),
        (app.key().sign(&wrong_audience).unwrap(), "TOKEN_AUDIENCE_INVALID"),
        (stranger.sign(&app.claims("t1", "u1")).unwrap(), "UNKNOWN_KEY"),
        ("garbage".to_owned(), "TOKEN_MALFORMED"),
    ];
    for (token, expected) in cases {
        let status = list_sessions(&app, &token).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{expected}: {status:?}");
        assert_eq!(reason(&status).as_deref(), Some(expected));
    }
}

#[tokio::test]
async fn a_grpc_web_call_with_an_expired_token_is_unauthenticated() {
    let app = TestApp::start().await.unwrap();
    let mut expired = app.claims("t1", "u1");
    expired.iat -= 2000;
    expired.exp -= 2000;
    let token = app.key().sign(&expired).unwrap();
    let status = crate::grpc_web::grpc_web_status(
        format!("{}/mesh.session.v1.SessionService/GetSession", app.url()),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status.as_deref(), Some("16"), "UNAUTHENTICATED is 16");
}
