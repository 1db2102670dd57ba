//! Signing and verification keys: `[auth.signing_key]` signs, `[[auth.keys]]` keep retired
//! keys verifying until they are removed, and `/.well-known/jwks.json` publishes exactly the
//! trusted public keys.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh_core::auth::SigningKeyPair;
use mesh_core::config::{Secret, SigningKeySettings, VerificationKey};
use mesh_testkit::TestApp;

use crate::auth::list_sessions;
use crate::support::reason;

fn signing(pair: &SigningKeyPair) -> SigningKeySettings {
    SigningKeySettings {
        kid: pair.kid().to_owned(),
        private_key_pem: Some(Secret::new(pair.private_key_pem())),
        private_key_file: None,
    }
}

fn trusted(pair: &SigningKeyPair) -> VerificationKey {
    VerificationKey { kid: pair.kid().to_owned(), public_key_pem: Some(pair.public_key_pem()), public_key_file: None }
}

/// The JWKS of `app`: its content type and its keys by kid (x).
async fn jwks(app: &TestApp) -> (String, BTreeMap<String, String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.get(format!("{}/.well-known/jwks.json", app.url()).parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let keys = body["keys"].as_array().unwrap();
    for key in keys {
        assert_eq!(
            (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
            (&"OKP".into(), &"Ed25519".into(), &"EdDSA".into(), &"sig".into())
        );
    }
    let by_kid = keys
        .iter()
        .map(|key| (key["kid"].as_str().unwrap().to_owned(), key["x"].as_str().unwrap().to_owned()))
        .collect();
    (content_type, by_kid)
}

fn x(pair: &SigningKeyPair) -> String {
    URL_SAFE_NO_PAD.encode(pair.public_key_bytes())
}

#[tokio::test]
async fn the_jwks_publishes_exactly_the_configured_public_keys() {
    let (retired, current, other) =
        (SigningKeyPair::generate(), SigningKeyPair::generate(), SigningKeyPair::generate());
    let signing_key = signing(&current);
    let extra = trusted(&other);
    let app = TestApp::start_trusting(retired.clone(), move |settings| {
        settings.auth.signing_key = Some(signing_key);
        settings.auth.keys.push(extra);
    })
    .await
    .unwrap();
    let (content_type, keys) = jwks(&app).await;
    assert_eq!(content_type, "application/jwk-set+json");
    let expected: BTreeMap<String, String> =
        [&retired, &current, &other].iter().map(|pair| (pair.kid().to_owned(), x(pair))).collect();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn a_retired_key_verifies_until_it_is_removed() {
    let (retired, current) = (SigningKeyPair::generate(), SigningKeyPair::generate());
    let signing_key = signing(&current);
    let both = TestApp::start_trusting(retired.clone(), move |settings| settings.auth.signing_key = Some(signing_key))
        .await
        .unwrap();
    let old_token = retired.sign(&both.claims("t1", "u1")).unwrap();
    let new_token = current.sign(&both.claims("t1", "u1")).unwrap();
    assert_eq!(list_sessions(&both, &old_token).await.unwrap(), 0, "a retired but configured key verifies");
    assert_eq!(list_sessions(&both, &new_token).await.unwrap(), 0, "the signing key verifies");

    let signing_key = signing(&current);
    let removed = TestApp::start_trusting(retired.clone(), move |settings| {
        settings.auth.keys.clear();
        settings.auth.signing_key = Some(signing_key);
    })
    .await
    .unwrap();
    let status = list_sessions(&removed, &old_token).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_deref()), (tonic::Code::Unauthenticated, Some("UNKNOWN_KEY")));
    assert_eq!(list_sessions(&removed, &new_token).await.unwrap(), 0);
    assert_eq!(jwks(&removed).await.1.into_keys().collect::<Vec<_>>(), [current.kid().to_owned()]);
}
