//! The meshd command line: every invalid setting stops start-up with exit code 2 and a
//! message naming the key; secrets are never printed; `dev-token` prints a token that the
//! running embedded default accepts.

use mesh_proto::mesh::session::v1::session_service_client::SessionServiceClient;
use mesh_proto::mesh::session::v1::{GetSessionRequest, ListSessionsRequest};
use tonic::metadata::MetadataValue;

use crate::support::{meshd_command, reason, spawn_meshd};

/// Runs `meshd <args> print-config` with `env` and returns (exit code, stdout, stderr).
async fn run_meshd(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = meshd_command();
    command.args(args).arg("--data-dir").arg(data_dir.path());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().await.unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// One invalid configuration: extra arguments, environment, and the key the error names.
type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);

#[tokio::test]
async fn each_invalid_setting_exits_with_code_2_and_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "[server]\nlisten = 42\n").unwrap();
    let unknown_key = dir.path().join("unknown.toml");
    std::fs::write(&unknown_key, "[server]\nlisten_adress = \"127.0.0.1:1\"\n").unwrap();
    let missing = dir.path().join("missing.toml");
    let key = mesh_core::auth::SigningKeyPair::generate().public_key_pem();
    let write_config = |name: &str, body: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    };
    let duplicate_kid = write_config(
        "duplicate.toml",
        format!(
            "[[auth.keys]]\nkid = \"k1\"\npublic_key_pem = '''{key}'''\n[[auth.keys]]\nkid = \"k1\"\npublic_key_pem = '''{key}'''\n"
        ),
    );
    let empty_kid =
        write_config("empty-kid.toml", format!("[[auth.keys]]\nkid = \"\"\npublic_key_pem = '''{key}'''\n"));
    let bad_pem =
        write_config("bad-pem.toml", "[[auth.keys]]\nkid = \"k1\"\npublic_key_pem = \"garbage\"\n".to_owned());
    let missing_file = write_config(
        "missing-file.toml",
        "[[auth.keys]]\nkid = \"k1\"\npublic_key_file = \"/nonexistent/key.pem\"\n".to_owned(),
    );
    let no_material = write_config("no-material.toml", "[[auth.keys]]\nkid = \"k1\"\n".to_owned());
    let signing_without_key = write_config("signing-nothing.toml", "[auth.signing_key]\nkid = \"s1\"\n".to_owned());
    let signing_bad_pem = write_config(
        "signing-bad.toml",
        "[auth.signing_key]\nkid = \"s1\"\nprivate_key_pem = \"hunter2 is not a key\"\n".to_owned(),
    );
    let signing_same_kid = write_config(
        "signing-same-kid.toml",
        format!(
            "[[auth.keys]]\nkid = \"k1\"\npublic_key_pem = '''{}'''\n[auth.signing_key]\nkid = \"k1\"\nprivate_key_file = \"/nonexistent/key.pem\"\n",
            mesh_core::auth::SigningKeyPair::generate().public_key_pem()
        ),
    );
    let signing_missing_file = write_config(
        "signing-missing.toml",
        "[auth.signing_key]\nkid = \"s1\"\nprivate_key_file = \"/nonexistent/key.pem\"\n".to_owned(),
    );

    let dev = ("MESH__AUTH__DEV_KEY", "true");
    let cases: Vec<Case> = vec![
        (vec![], vec![dev, ("MESH__SERVER__LISTEN", "not-an-address")], "server.listen"),
        (vec![], vec![dev, ("MESH__SERVER__DRAIN_TIMEOUT", "forever")], "server.drain_timeout"),
        (vec![], vec![dev, ("MESH__SERVER__DRAIN_TIMEOUT", "2h")], "server.drain_timeout"),
        (vec![], vec![dev, ("MESH__SERVER__MAX_CONCURRENT_STREAMS", "0")], "server.max_concurrent_streams"),
        (vec![], vec![dev, ("MESH__SERVER__MAX_HEADER_LIST_SIZE", "12")], "server.max_header_list_size"),
        (vec![], vec![dev, ("MESH__SERVER__MAX_DECODING_MESSAGE_SIZE", "-5")], "server.max_decoding_message_size"),
        (vec![], vec![dev, ("MESH__SERVER__MAX_ENCODING_MESSAGE_SIZE", "100")], "server.max_encoding_message_size"),
        (
            vec![],
            vec![dev, ("MESH__SERVER__MAX_PENDING_ACCEPT_RESET_STREAMS", "-1")],
            "server.max_pending_accept_reset_streams",
        ),
        (
            vec![],
            vec![dev, ("MESH__SERVER__MAX_LOCAL_ERROR_RESET_STREAMS", "lots")],
            "server.max_local_error_reset_streams",
        ),
        (vec![], vec![dev, ("MESH__SERVER__HTTP2_KEEPALIVE_INTERVAL", "0s")], "server.http2_keepalive_interval"),
        (vec![], vec![dev, ("MESH__SERVER__REFLECTION", "maybe")], "server.reflection"),
        (vec![], vec![dev, ("MESH__SERVER__CORS_ALLOWED_ORIGINS", "app.example/path")], "server.cors_allowed_origins"),
        (vec![], vec![dev, ("MESH__SERVER__NO_SUCH_KEY", "1")], "server.no_such_key"),
        (vec![], vec![dev, ("MESH__LOG__FORMAT", "xml")], "log.format"),
        (vec![], vec![dev, ("MESH__LOG__FILTER", "[[[")], "log.filter"),
        (vec![], vec![dev, ("MESH__AUTH__ISSUER", " ")], "auth.issuer"),
        (vec![], vec![dev, ("MESH__AUTH__LEEWAY", "1h")], "auth.leeway"),
        (vec![], vec![dev, ("MESH__AUTH__AUDIENCE", "")], "auth.audience"),
        (vec![], vec![dev, ("MESH__AUTH__MAX_TOKEN_LIFETIME", "30days")], "auth.max_token_lifetime"),
        (vec!["--config".into(), duplicate_kid], vec![], "auth.keys[1].kid"),
        (vec!["--config".into(), empty_kid], vec![], "auth.keys[0].kid"),
        (vec!["--config".into(), bad_pem], vec![], "auth.keys[0]"),
        (vec!["--config".into(), missing_file], vec![], "auth.keys[0].public_key_file"),
        (vec!["--config".into(), no_material], vec![], "auth.keys[0]"),
        (vec!["--config".into(), signing_without_key], vec![], "auth.signing_key"),
        (vec!["--config".into(), signing_bad_pem], vec![], "auth.signing_key"),
        (vec!["--config".into(), signing_same_kid], vec![], "auth.signing_key.kid"),
        (vec!["--config".into(), signing_missing_file], vec![], "auth.signing_key.private_key_file"),
        (vec![], vec![("MESH__AUTH__DEV_KEY", "false")], "auth.keys"),
        (vec![], vec![dev, ("MESH__REDIS__URL", "http://user:hunter2@db")], "redis.url"),
        (vec![], vec![dev, ("MESH__REDIS__POOL_SIZE", "0")], "redis.pool_size"),
        (vec![], vec![dev, ("MESH__REDIS__CONNECT_TIMEOUT", "0s")], "redis.connect_timeout"),
        (vec![], vec![dev, ("MESH__STREAM__HISTORY_SIZE", "0")], "stream.history_size"),
        (vec![], vec![dev, ("MESH__JOBS__MAX_ATTEMPTS", "0")], "jobs.max_attempts"),
        (vec![], vec![dev, ("MESH__JOBS__BACKOFF_JITTER", "2")], "jobs.backoff_jitter"),
        (vec![], vec![dev, ("MESH__JOBS__VISIBILITY_TIMEOUT", "soon")], "jobs.visibility_timeout"),
        (vec![], vec![dev, ("MESH__JOBS__MAX_PAYLOAD", "65536")], "jobs.max_payload"),
        (vec![], vec![dev, ("MESH__STREAM__HISTORY_TTL", "0s")], "stream.history_ttl"),
        (vec![], vec![dev, ("MESH__STREAM__MAX_PAYLOAD_BYTES", "99999999")], "stream.max_payload_bytes"),
        (vec![], vec![dev, ("MESH__STREAM__HEARTBEAT_INTERVAL", "1ms")], "stream.heartbeat_interval"),
        (vec![], vec![dev, ("MESH__STREAM__QUEUE_CAPACITY", "0")], "stream.queue_capacity"),
        (
            vec![],
            vec![dev, ("MESH__STREAM__MAX_CHANNELS_PER_SUBSCRIPTION", "1000")],
            "stream.max_channels_per_subscription",
        ),
        (vec![], vec![dev, ("MESH__REDIS", "redis://:hunter2@db:6379")], "redis"),
        (vec!["--services".into(), "bogus".into()], vec![], "services"),
        (vec!["--services".into(), "auth".into()], vec![dev], "services"),
        (vec![], vec![dev, ("MESH__AUTH__ACCESS_TOKEN_TTL", "2h")], "auth.access_token_ttl"),
        (vec![], vec![dev, ("MESH__SESSION__IDLE_TTL", "5m")], "auth.access_token_ttl"),
        (vec![], vec![dev, ("MESH__AUTH__REGISTRATION", "sometimes")], "auth.registration"),
        (vec![], vec![dev, ("MESH__AUTH__CLOSED_TENANTS", "acme,../etc")], "auth.closed_tenants"),
        (vec![], vec![dev, ("MESH__AUTH__PASSWORD_HASH__MEMORY_KIB", "1")], "auth.password_hash.memory_kib"),
        (vec![], vec![dev, ("MESH__AUTH__PASSWORD_HASH__ITERATIONS", "0")], "auth.password_hash.iterations"),
        (
            vec![],
            vec![dev, ("MESH__AUTH__LOGIN_THROTTLE__MAX_FAILURES_PER_ACCOUNT", "0")],
            "auth.login_throttle.max_failures_per_account",
        ),
        (vec![], vec![dev, ("MESH__AUTH__LOGIN_THROTTLE__WINDOW", "0s")], "auth.login_throttle.window"),
        (vec![], vec![dev, ("MESH__AUTH__SESSION_URL", "ftp://sessions")], "auth.session_url"),
        (vec![], vec![dev, ("MESH__FEED__PUBLISH_RATE", "0")], "feed.publish_rate"),
        (vec![], vec![dev, ("MESH__FEED__MAX_STREAMS_PER_CALLER", "0")], "feed.max_streams_per_caller"),
        (vec![], vec![dev, ("MESH__FEED__PAGE_TOKEN_KEY", "hunter2")], "feed.page_token_key"),
        (vec![], vec![dev, ("MESH__STORAGE__SIGNING_KEY", "hunter2")], "storage.signing_key"),
        (vec![], vec![dev, ("MESH__STORAGE__PAGE_TOKEN_KEY", "hunter2")], "storage.page_token_key"),
        (vec![], vec![dev, ("MESH__STORAGE__UPLOAD_URL_TTL", "30days")], "storage.upload_url_ttl"),
        (vec![], vec![dev, ("MESH__STORAGE__CLEANUP_INTERVAL", "0s")], "storage.cleanup_interval"),
        (vec![], vec![dev, ("MESH__STORAGE__PUBLIC_URL", "ftp://files.example.com")], "storage.public_url"),
        (vec![], vec![dev, ("MESH__STORAGE__BLOBS", "tape")], "storage.blobs"),
        (vec![], vec![dev, ("MESH__STORAGE__BLOBS", "s3")], "storage.s3.bucket"),
        (vec![], vec![dev, ("MESH__STORAGE__LIMITS__CONTENT_TYPES", "[]")], "storage.limits.content_types"),
        (vec![], vec![dev, ("MESH__DOCUMENTS__FIRESTORE__PROJECT_ID", " ")], "documents.firestore.project_id"),
        (
            vec![],
            vec![
                dev,
                ("MESH__DOCUMENTS__FIRESTORE__PROJECT_ID", "p"),
                ("MESH__DOCUMENTS__FIRESTORE__EMULATOR_HOST", "nohost"),
            ],
            "documents.firestore.emulator_host",
        ),
        (vec![], vec![dev, ("MESH__DOCUMENTS__CACHE__TTL", "0s")], "documents.cache.ttl"),
        (vec!["--config".into(), missing.display().to_string()], vec![], "--config"),
        (vec!["--config".into(), bad_toml.display().to_string()], vec![dev], "server.listen"),
        (vec!["--config".into(), unknown_key.display().to_string()], vec![dev], "server.listen_adress"),
    ];
    for (args, env, key) in cases {
        let mut all_args: Vec<&str> = args.iter().map(String::as_str).collect();
        all_args.push("print-config");
        let (code, _, stderr) = run_meshd(&all_args, &env).await;
        assert_eq!(code, 2, "{key}: expected exit code 2, got {code}; stderr: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{key}: the message does not name the key: {stderr}");
        assert!(stderr.contains("expected"), "{key}: the message does not say what is expected: {stderr}");
        assert!(!stderr.contains("hunter2"), "a secret was printed: {stderr}");
    }
}

#[tokio::test]
async fn an_invalid_setting_also_stops_the_server_with_code_2() {
    let (code, stdout, stderr) =
        run_meshd(&[], &[("MESH__AUTH__DEV_KEY", "true"), ("MESH__SERVER__LISTEN", "nowhere")]).await;
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stderr.contains("`server.listen`"), "{stderr}");
    assert!(!stdout.contains("listening"), "the server must not start: {stdout}");
}

#[tokio::test]
async fn print_config_never_prints_a_secret() {
    let key = "SECRETSECRETSECRETSECRETSECRETSECRETSECRET0";
    let env = [
        ("MESH__AUTH__DEV_KEY", "true"),
        ("MESH__REDIS__URL", "redis://:hunter2@redis.invalid:6379"),
        ("MESH__STORAGE__SIGNING_KEY", key),
        ("MESH__STORAGE__PAGE_TOKEN_KEY", key),
        ("MESH__STORAGE__S3__SECRET_ACCESS_KEY", "hunter3"),
    ];
    let (code, stdout, stderr) = run_meshd(&["print-config"], &env).await;
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("[redacted]"), "{stdout}");
    for secret in ["hunter2", "hunter3", key] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} printed");
    }
}

#[tokio::test]
async fn string_settings_accept_values_that_look_like_numbers() {
    let env = [("MESH__AUTH__DEV_KEY", "true"), ("MESH__AUTH__ISSUER", "1234"), ("MESH__AUTH__AUDIENCE", "true")];
    let (code, stdout, stderr) = run_meshd(&["print-config"], &env).await;
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("issuer = \"1234\"") && stdout.contains("audience = \"true\""), "{stdout}");
}

#[tokio::test]
async fn a_dev_token_longer_than_the_lifetime_cap_is_refused() {
    let (code, stdout, stderr) = run_meshd(&["dev-token", "--tenant", "t1", "--user", "u1", "--ttl", "2h"], &[]).await;
    assert_eq!(code, 2, "stdout: {stdout} stderr: {stderr}");
    assert!(stderr.contains("`--ttl`"), "{stderr}");
}

#[tokio::test]
async fn dev_token_is_refused_outside_the_embedded_default() {
    let (code, stdout, stderr) = run_meshd(
        &["dev-token", "--tenant", "t1", "--user", "u1"],
        &[("MESH__LOG__FORMAT", "json"), ("MESH__AUTH__DEV_KEY", "false"), ("MESH__AUTH__KEYS", "[]")],
    )
    .await;
    assert_eq!(code, 2, "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.is_empty());
}

#[tokio::test]
async fn a_dev_token_is_accepted_by_the_running_embedded_default() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = meshd_command();
    command.arg("--data-dir").arg(data_dir.path());
    let meshd = spawn_meshd(command).await;

    let output = meshd_command()
        .args(["dev-token", "--tenant", "t1", "--user", "u1", "--data-dir"])
        .arg(data_dir.path())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    // A call with the token reaches the Session service, one without is UNAUTHENTICATED.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", meshd.addr)).unwrap().connect_lazy();
    let mut client = SessionServiceClient::new(channel);
    let mut request = tonic::Request::new(ListSessionsRequest::default());
    request.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    assert!(client.list_sessions(request).await.unwrap().into_inner().sessions.is_empty());

    let without = client.get_session(GetSessionRequest::default()).await.unwrap_err();
    assert_eq!(without.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&without).as_deref(), Some("TOKEN_MISSING"));
}
