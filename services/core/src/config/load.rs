//! Loading and validating [`Settings`]: figment merges the layers, serde checks the types,
//! [`validate`] checks the values, and every failure becomes one [`ConfigError`] that names
//! the key, says what is wrong with the value and what is expected.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer};

use super::{LogFormat, Settings};

/// Prefix of the environment variables read as configuration: `MESH__SERVER__LISTEN` sets
/// `server.listen`.
pub const ENV_PREFIX: &str = "MESH__";

/// Where configuration comes from besides the built-in defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A TOML file (`--config`); it must exist when given.
    pub file: Option<PathBuf>,
}

/// Command-line flags, applied last.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--services`, comma-separated
    pub services: Option<Vec<String>>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
}

/// A configuration value that cannot be used: start-up stops with this message and exit
/// code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, dotted (`server.listen`), or the flag (`--config`).
    pub key: String,
    /// Where the value came from, when known (a file, an environment variable).
    pub origin: Option<String>,
    /// What is wrong with the value.
    pub problem: String,
    /// What would be accepted.
    pub expected: String,
}

impl ConfigError {
    /// An error of `key`: `problem`, expecting `expected`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>, expected: impl Into<String>) -> Self {
        Self { key: key.into(), origin: None, problem: problem.into(), expected: expected.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: `{}`", self.key)?;
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        write!(f, ": {}; expected {}", self.problem, self.expected)
    }
}

impl std::error::Error for ConfigError {}

/// Loads the settings: defaults, then `sources.file`, then `MESH__*` variables, then the
/// flags in `overrides`; then validates every value.
///
/// With no file and no `MESH__` variable this is the embedded default, and only then does
/// `auth.dev_key` default to true.
pub fn load(sources: &Sources, overrides: &Overrides) -> Result<Settings, ConfigError> {
    let embedded_default =
        sources.file.is_none() && !std::env::vars_os().any(|(name, _)| name.to_string_lossy().starts_with(ENV_PREFIX));
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if embedded_default {
        figment = figment.merge(Serialized::default("auth.dev_key", true));
    }
    if let Some(file) = &sources.file {
        if !file.is_file() {
            return Err(ConfigError::new(
                "--config",
                format!("no file at {}", file.display()),
                "the path of a readable TOML file",
            ));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    if let Some(listen) = overrides.listen {
        figment = figment.merge(Serialized::default("server.listen", listen));
    }
    if let Some(services) = &overrides.services {
        figment = figment.merge(Serialized::default("services", services));
    }
    if let Some(data_dir) = &overrides.data_dir {
        figment = figment.merge(Serialized::default("data_dir", data_dir));
    }
    if let Some(format) = overrides.log_format {
        figment = figment.merge(Serialized::default("log.format", format));
    }
    let settings: Settings = figment.extract().map_err(|error| from_figment(*first(error)))?;
    validate(&settings)?;
    Ok(settings)
}

/// Bytes a job needs beyond the publication it carries (the feed job's tenant and positions).
const JOB_HEADER_ROOM: usize = 1024;

fn first(error: figment::Error) -> Box<figment::Error> {
    // figment chains several errors; the first one is enough to fix, and we report one.
    Box::new(error.into_iter().next().expect("a figment error holds at least one error"))
}

/// Keys whose values are never echoed back, even when they are wrong.
const SECRET_KEYS: &[&str] = &["redis.url"];

fn from_figment(error: figment::Error) -> ConfigError {
    let mut path = error.path.clone();
    if let Kind::UnknownField(field, _) = &error.kind
        && path.last() != Some(field)
    {
        path.push(field.clone());
    }
    let key = path.join(".");
    // A value given for a secret key, or for a table that holds one (`MESH__REDIS=...`),
    // or at the root, is never echoed back.
    let secret =
        key.is_empty() || SECRET_KEYS.iter().any(|secret| *secret == key || secret.starts_with(&format!("{key}.")));
    let (problem, serde_expected) = match &error.kind {
        Kind::UnknownField(field, known) => {
            let known =
                if known.is_empty() { "no keys here".to_owned() } else { format!("one of: {}", known.join(", ")) };
            (format!("unknown key `{field}`"), known)
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) if !secret => {
            (format!("{actual} is not accepted"), expected.clone())
        }
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => {
            ("the value is not accepted".to_owned(), expected.clone())
        }
        Kind::UnknownVariant(variant, known) => {
            (format!("unknown value `{variant}`"), format!("one of: {}", known.join(", ")))
        }
        Kind::MissingField(field) => (format!("missing key `{field}`"), "the key to be set".to_owned()),
        Kind::Message(message) if !secret => (message.clone(), String::new()),
        other if !secret => (other.to_string(), String::new()),
        _ => ("the value is not accepted".to_owned(), String::new()),
    };
    let expected = expected_for(&key).map(str::to_owned).unwrap_or(serde_expected);
    let origin = error.metadata.as_ref().map(|metadata| match &metadata.source {
        Some(figment::Source::File(file)) => format!("file {}", file.display()),
        _ if metadata.name.contains("environment") => {
            format!("environment variable {ENV_PREFIX}{}", path.join("__").to_uppercase())
        }
        _ => metadata.name.to_string(),
    });
    ConfigError {
        key,
        origin,
        problem,
        expected: if expected.is_empty() { "a valid value".to_owned() } else { expected },
    }
}

/// What each key accepts, in words, for error messages.
fn expected_for(key: &str) -> Option<&'static str> {
    Some(match key {
        "server.listen" => "an IP socket address such as 127.0.0.1:50051 (port 0 picks a free port)",
        "server.drain_timeout"
        | "server.http2_keepalive_interval"
        | "auth.leeway"
        | "auth.max_token_lifetime"
        | "redis.connect_timeout"
        | "session.idle_ttl"
        | "session.max_lifetime"
        | "session.sweep_interval" => "a duration such as 10s or 250ms",
        "server.max_concurrent_streams" | "server.max_header_list_size" => "a whole number from 1 to 4294967295",
        "server.max_pending_accept_reset_streams"
        | "server.max_local_error_reset_streams"
        | "server.max_decoding_message_size"
        | "server.max_encoding_message_size"
        | "redis.pool_size"
        | "stream.history_size"
        | "stream.max_payload_bytes"
        | "stream.queue_capacity"
        | "stream.max_channels_per_subscription"
        | "session.postgres_pool_size" => "a positive whole number",
        "server.reflection" | "auth.dev_key" => "true or false",
        "server.cors_allowed_origins" => "a list of origins such as https://app.example.com, or *",
        "log.format" => "text or json",
        "redis.url" => "a URL such as redis://127.0.0.1:6379",
        "session.audit_sink" => "file or postgres",
        "session.postgres_url" => "a URL such as postgres://mesh:secret@127.0.0.1:5432/mesh",
        "services" => "a comma-separated list of service names",
        "server" | "auth" | "log" | "redis" | "stream" | "jobs" | "session" => {
            "a table of settings (set its keys, e.g. MESH__REDIS__URL)"
        }
        _ => return None,
    })
}

/// Checks the values that types alone cannot: ranges, formats, combinations.
fn validate(settings: &Settings) -> Result<(), ConfigError> {
    let server = &settings.server;
    check_range("server.drain_timeout", server.drain_timeout, Duration::ZERO, Duration::from_secs(600))?;
    check_at_least("server.max_concurrent_streams", u64::from(server.max_concurrent_streams), 1)?;
    check_at_least("server.max_header_list_size", u64::from(server.max_header_list_size), 1024)?;
    check_at_least("server.max_decoding_message_size", server.max_decoding_message_size as u64, 1024)?;
    check_at_least("server.max_encoding_message_size", server.max_encoding_message_size as u64, 1024)?;
    check_range(
        "server.http2_keepalive_interval",
        server.http2_keepalive_interval,
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )?;
    for origin in &server.cors_allowed_origins {
        let valid = origin == "*" || is_origin(origin);
        if !valid {
            return Err(ConfigError::new(
                "server.cors_allowed_origins",
                format!("`{origin}` is not an origin"),
                "origins such as https://app.example.com (scheme, host, optional port), or *",
            ));
        }
    }

    let auth = &settings.auth;
    if auth.issuer.trim().is_empty() {
        return Err(ConfigError::new("auth.issuer", "it is empty", "the issuer (`iss`) every access token must carry"));
    }
    if auth.audience.trim().is_empty() {
        return Err(ConfigError::new(
            "auth.audience",
            "it is empty",
            "the audience (`aud`) every access token must carry",
        ));
    }
    check_range("auth.leeway", auth.leeway, Duration::ZERO, Duration::from_secs(300))?;
    let mut kids = HashSet::new();
    for (index, key) in auth.keys.iter().enumerate() {
        let field = format!("auth.keys[{index}]");
        if key.kid.trim().is_empty() || !kids.insert(key.kid.as_str()) {
            return Err(ConfigError::new(
                format!("{field}.kid"),
                "it is empty or used twice",
                "a key id unique among auth.keys",
            ));
        }
        if key.public_key_pem.is_some() == key.public_key_file.is_some() {
            return Err(ConfigError::new(
                field,
                "it sets neither or both of public_key_pem and public_key_file",
                "exactly one of public_key_pem and public_key_file",
            ));
        }
    }
    check_range(
        "auth.max_token_lifetime",
        auth.max_token_lifetime,
        Duration::from_secs(1),
        Duration::from_secs(24 * 3600),
    )?;
    if let Some(signing) = &auth.signing_key {
        if signing.kid.trim().is_empty() || kids.contains(signing.kid.as_str()) {
            return Err(ConfigError::new(
                "auth.signing_key.kid",
                "it is empty or also the kid of an auth.keys entry",
                "a key id distinct from every auth.keys kid",
            ));
        }
        if signing.private_key_pem.is_some() == signing.private_key_file.is_some() {
            return Err(ConfigError::new(
                "auth.signing_key",
                "it sets neither or both of private_key_pem and private_key_file",
                "exactly one of private_key_pem and private_key_file",
            ));
        }
    }
    check_range("auth.access_token_ttl", auth.access_token_ttl, Duration::from_secs(1), auth.max_token_lifetime)?;
    for tenant in &auth.closed_tenants {
        if !crate::auth::is_valid_principal_id(tenant) {
            return Err(ConfigError::new(
                "auth.closed_tenants",
                format!("`{tenant}` is not a tenant id"),
                "tenant ids matching ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
            ));
        }
    }
    if let Some(url) = &auth.session_url {
        let valid = (url.starts_with("http://") || url.starts_with("https://")) && url.parse::<http::Uri>().is_ok();
        if !valid {
            return Err(ConfigError::new(
                "auth.session_url",
                format!("`{url}` is not an http(s) URL"),
                "the URL of a meshd serving the Session service, such as http://session.mesh.internal:50051",
            ));
        }
    }
    // Which services run: `services`, or all of them when empty.
    let runs = |name: &str| settings.services.is_empty() || settings.services.iter().any(|service| service == name);
    if runs("auth") && !runs("session") && auth.session_url.is_none() {
        return Err(ConfigError::new(
            "services",
            "auth creates sessions through the Session service, which is neither selected nor set in auth.session_url",
            "session beside auth (for example `session,auth`), or auth.session_url",
        ));
    }
    if runs("auth") && settings.session.idle_ttl < auth.access_token_ttl {
        // Tokens are issued when the session is created or touched (Login, Refresh): with
        // an idle TTL at least as long, no token outlives an idle-expired session.
        return Err(ConfigError::new(
            "auth.access_token_ttl",
            "it is longer than session.idle_ttl: access tokens would outlive sessions that expired idle",
            "a duration no longer than session.idle_ttl",
        ));
    }
    let hash = &auth.password_hash;
    check_between("auth.password_hash.parallelism", u64::from(hash.parallelism), 1, 16)?;
    check_between("auth.password_hash.iterations", u64::from(hash.iterations), 1, 16)?;
    check_between(
        "auth.password_hash.memory_kib",
        u64::from(hash.memory_kib),
        8 * u64::from(hash.parallelism),
        4 * 1024 * 1024,
    )?;
    let throttle = &auth.login_throttle;
    check_between(
        "auth.login_throttle.max_failures_per_account",
        u64::from(throttle.max_failures_per_account),
        1,
        1_000_000,
    )?;
    check_between(
        "auth.login_throttle.max_failures_per_address",
        u64::from(throttle.max_failures_per_address),
        1,
        1_000_000,
    )?;
    check_range("auth.login_throttle.window", throttle.window, Duration::from_secs(1), Duration::from_secs(24 * 3600))?;
    // Parse every configured key now, so `print-config` and `dev-token` catch a bad one too.
    let signer = crate::auth::SigningKeyPair::from_settings(auth)?;
    crate::auth::TokenVerifier::from_settings(auth, signer.as_ref())?;
    if auth.keys.is_empty() && auth.signing_key.is_none() && !auth.dev_key {
        return Err(ConfigError::new(
            "auth.keys",
            "no key to verify access tokens is configured",
            "an [auth.signing_key], at least one [[auth.keys]] entry, or auth.dev_key = true for local development",
        ));
    }

    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&settings.log.filter) {
        return Err(ConfigError::new(
            "log.filter",
            format!("`{}` does not parse: {error}", settings.log.filter),
            "a tracing filter such as info or meshd=debug,info",
        ));
    }

    let redis = &settings.redis;
    if let Some(url) = &redis.url {
        let url = url.expose();
        if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis+unix://")) {
            return Err(ConfigError::new(
                "redis.url",
                "the value is not a Redis URL (it is not echoed: it may hold a password)",
                "a URL such as redis://127.0.0.1:6379",
            ));
        }
    }
    if !(1..=1024).contains(&redis.pool_size) {
        return Err(ConfigError::new(
            "redis.pool_size",
            format!("{} is out of range", redis.pool_size),
            "a whole number from 1 to 1024",
        ));
    }
    check_range("redis.connect_timeout", redis.connect_timeout, Duration::from_millis(1), Duration::from_secs(60))?;
    let stream = &settings.stream;
    check_between("stream.history_size", stream.history_size as u64, 1, 100_000)?;
    check_range("stream.history_ttl", stream.history_ttl, Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600))?;
    check_between("stream.max_payload_bytes", stream.max_payload_bytes as u64, 1, 4 * 1024 * 1024)?;
    check_range(
        "stream.heartbeat_interval",
        stream.heartbeat_interval,
        Duration::from_millis(100),
        Duration::from_secs(300),
    )?;
    check_between("stream.queue_capacity", stream.queue_capacity as u64, 1, 100_000)?;
    check_between("stream.max_channels_per_subscription", stream.max_channels_per_subscription as u64, 1, 256)?;
    if let Err(message) = settings.jobs.validate() {
        let field = message.split_whitespace().next().unwrap_or_default();
        return Err(ConfigError::new(
            format!("jobs.{field}"),
            message.clone(),
            "a value within the range the message gives",
        ));
    }
    // Feed jobs carry a whole publication plus a header (tenant and positions).
    let job_room = stream.max_payload_bytes + JOB_HEADER_ROOM;
    if settings.jobs.max_payload < job_room {
        return Err(ConfigError::new(
            "jobs.max_payload",
            format!("{} is below stream.max_payload_bytes + {JOB_HEADER_ROOM} ({job_room})", settings.jobs.max_payload),
            "at least stream.max_payload_bytes + 1024: a job carries a whole publication",
        ));
    }
    validate_session(&settings.session)?;
    let feed = &settings.feed;
    check_between("feed.publish_rate", u64::from(feed.publish_rate), 1, 1_000_000)?;
    check_between("feed.publish_burst", u64::from(feed.publish_burst), 1, 1_000_000)?;
    check_between("feed.max_streams_per_caller", feed.max_streams_per_caller as u64, 1, 10_000)?;
    check_key("feed.page_token_key", feed.page_token_key.as_ref())?;
    validate_storage(settings)?;
    for (index, name) in settings.services.iter().enumerate() {
        if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'-') {
            return Err(ConfigError::new(
                format!("services[{index}]"),
                format!("`{name}` is not a service name"),
                "lowercase service names such as session or feed",
            ));
        }
    }
    Ok(())
}

/// A secret key setting: 32 bytes of URL-safe base64 without padding.
fn check_key(key: &str, value: Option<&super::Secret<String>>) -> Result<(), ConfigError> {
    use base64::Engine as _;
    let Some(value) = value else { return Ok(()) };
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value.expose().as_bytes());
    if decoded.map(|bytes| bytes.len()) != Ok(32) {
        return Err(ConfigError::new(
            key,
            "the value is not 32 bytes of URL-safe base64 (it is not echoed: it is a secret)",
            "43 characters of URL-safe base64 without padding, e.g. from `head -c32 /dev/urandom | basenc --base64url | tr -d =`",
        ));
    }
    Ok(())
}

fn validate_storage(settings: &Settings) -> Result<(), ConfigError> {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    if let Err(message) = settings.documents.cache.validate() {
        let field = message.split_whitespace().next().unwrap_or_default();
        return Err(ConfigError::new(
            format!("documents.cache.{field}"),
            message.clone(),
            "a value within the range the message gives",
        ));
    }
    if let Some(firestore) = &settings.documents.firestore {
        if firestore.project_id.trim().is_empty() {
            return Err(ConfigError::new(
                "documents.firestore.project_id",
                "it is empty",
                "the Google Cloud project id",
            ));
        }
        if firestore.database_id.as_ref().is_some_and(|id| id.trim().is_empty()) {
            return Err(ConfigError::new(
                "documents.firestore.database_id",
                "it is empty",
                "a database id, or unset for (default)",
            ));
        }
        if let Some(host) = &firestore.emulator_host
            && host.rsplit_once(':').is_none_or(|(name, port)| name.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(ConfigError::new(
                "documents.firestore.emulator_host",
                format!("`{host}` is not host:port"),
                "host:port, e.g. 127.0.0.1:8080",
            ));
        }
        if let Some(file) = &firestore.credentials_file
            && !file.is_file()
        {
            return Err(ConfigError::new(
                "documents.firestore.credentials_file",
                format!("{} is not a readable file", file.display()),
                "a service account key file",
            ));
        }
        check_range(
            "documents.firestore.call_timeout",
            firestore.call_timeout,
            Duration::from_millis(1),
            Duration::from_secs(600),
        )?;
    }
    if settings.documents.cache.backoff_base.is_zero() {
        return Err(ConfigError::new("documents.cache.backoff_base", "it is zero", "a duration such as 200ms"));
    }
    let storage = &settings.storage;
    check_key("storage.signing_key", storage.signing_key.as_ref())?;
    check_key("storage.page_token_key", storage.page_token_key.as_ref())?;
    check_between("storage.max_watches_per_caller", storage.max_watches_per_caller as u64, 1, 10_000)?;
    check_range("storage.upload_url_ttl", storage.upload_url_ttl, Duration::from_secs(1), 7 * DAY)?;
    check_range("storage.download_url_ttl", storage.download_url_ttl, Duration::from_secs(1), 7 * DAY)?;
    check_range("storage.cleanup_grace", storage.cleanup_grace, Duration::ZERO, 30 * DAY)?;
    check_range("storage.cleanup_interval", storage.cleanup_interval, Duration::from_millis(10), DAY)?;
    if let Some(url) = &storage.public_url
        && !url.parse::<http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() && uri.query().is_none()
        })
    {
        return Err(ConfigError::new(
            "storage.public_url",
            format!("`{url}` is not a URL"),
            "a base URL such as https://files.example.com",
        ));
    }
    let limits = std::iter::once(("storage.limits".to_owned(), &storage.limits)).chain(
        storage.tenant_limits.iter().map(|(tenant, limits)| (format!("storage.tenant_limits.{tenant}"), limits)),
    );
    if let Some(tenant) = storage.tenant_limits.keys().find(|tenant| !crate::auth::is_valid_principal_id(tenant)) {
        return Err(ConfigError::new(
            format!("storage.tenant_limits.{tenant}"),
            "it is not a tenant id",
            "tenant ids as tokens carry them",
        ));
    }
    for (key, limits) in limits {
        if limits.max_size_bytes > i64::MAX as u64 {
            return Err(ConfigError::new(format!("{key}.max_size_bytes"), "it is above 2^63 - 1", "a size in bytes"));
        }
        if limits.content_types.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.content_types"),
                "it is empty: nothing could be uploaded",
                "MIME types such as image/png, image/* or */*",
            ));
        }
        if let Some(bad) = limits
            .content_types
            .iter()
            .find(|pattern| pattern.split_once('/').is_none_or(|(kind, sub)| kind.is_empty() || sub.is_empty()))
        {
            return Err(ConfigError::new(
                format!("{key}.content_types"),
                format!("`{bad}` is not a MIME type pattern"),
                "MIME types such as image/png, image/* or */*",
            ));
        }
    }
    let bucket = |key: &str, bucket: &str| {
        if bucket.trim().is_empty() {
            Err(ConfigError::new(key, "it is empty", "the bucket that holds the files"))
        } else {
            Ok(())
        }
    };
    match storage.blobs {
        super::BlobBackend::S3 => bucket("storage.s3.bucket", &storage.s3.bucket),
        super::BlobBackend::Gcs => bucket("storage.gcs.bucket", &storage.gcs.bucket),
        super::BlobBackend::Local | super::BlobBackend::Memory => Ok(()),
    }
}

fn validate_session(session: &super::SessionSettings) -> Result<(), ConfigError> {
    const YEAR: Duration = Duration::from_secs(366 * 24 * 3600);
    check_range("session.max_lifetime", session.max_lifetime, Duration::from_secs(1), YEAR)?;
    check_range("session.idle_ttl", session.idle_ttl, Duration::from_secs(1), session.max_lifetime)?;
    check_range("session.sweep_interval", session.sweep_interval, Duration::from_millis(10), Duration::from_secs(60))?;
    check_between("session.postgres_pool_size", u64::from(session.postgres_pool_size), 1, 256)?;
    match (&session.audit_sink, &session.postgres_url) {
        (super::AuditSinkKind::Postgres, None) => Err(ConfigError::new(
            "session.postgres_url",
            "session.audit_sink is postgres but no database is configured",
            "a URL such as postgres://mesh:secret@127.0.0.1:5432/mesh",
        )),
        (_, Some(url)) if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) => {
            Err(ConfigError::new(
                "session.postgres_url",
                "the value is not a PostgreSQL URL (it is not echoed: it may hold a password)",
                "a URL such as postgres://mesh:secret@127.0.0.1:5432/mesh",
            ))
        }
        _ => Ok(()),
    }
}

/// An origin is a scheme and a host with an optional port: no path, no spaces.
fn is_origin(text: &str) -> bool {
    let Some((scheme, authority)) = text.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && !authority.contains(['/', ' ', '?', '#'])
        && http::HeaderValue::from_str(text).is_ok()
}

fn check_range(key: &str, value: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(
            key,
            format!("{} is out of range", humantime::format_duration(value)),
            format!("a duration from {} to {}", humantime::format_duration(min), humantime::format_duration(max)),
        ));
    }
    Ok(())
}

fn check_between(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if !(min..=max).contains(&value) {
        return Err(ConfigError::new(
            key,
            format!("{value} is out of range"),
            format!("a whole number from {min} to {max}"),
        ));
    }
    Ok(())
}

fn check_at_least(key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::new(
            key,
            format!("{value} is too small"),
            format!("a whole number of at least {min}"),
        ));
    }
    Ok(())
}

/// Deserializes a string that an environment variable may have turned into a number or a
/// boolean (`MESH__AUTH__AUDIENCE=1234` is a string to us).
pub(super) fn scalar_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        String(String),
        Integer(i64),
        Unsigned(u64),
        Float(f64),
        Bool(bool),
    }
    Ok(match Scalar::deserialize(deserializer)? {
        Scalar::String(text) => text,
        Scalar::Integer(number) => number.to_string(),
        Scalar::Unsigned(number) => number.to_string(),
        Scalar::Float(number) => number.to_string(),
        Scalar::Bool(flag) => flag.to_string(),
    })
}

/// Deserializes a list given either as a sequence or as one comma-separated string (the
/// only form an environment variable can take: `MESH__SERVICES=session,feed`).
pub(super) fn comma_separated<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(deserializer)? {
        ListOrString::List(list) => list,
        ListOrString::String(text) => {
            text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect()
        }
    })
}
