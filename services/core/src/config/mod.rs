//! Typed configuration of `meshd`, layered: built-in defaults, then an optional TOML file
//! (`--config`), then `MESH__SECTION__KEY` environment variables, then command-line flags.
//!
//! Every key is documented on its field and in the README. Unknown keys are rejected (a
//! typo must not silently fall back to a default), and [`load`] checks every value, so a
//! bad one stops start-up with the key, the problem and what is expected.

mod load;
mod secret;
mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use load::{ConfigError, Overrides, Sources, load};
pub use secret::Secret;
pub use storage::{BlobBackend, DocumentsSettings, GcsSettings, S3Settings, StorageSettings, UploadLimits};

/// Everything `meshd` reads at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Folder for local state of the embedded default (the dev signing key, later blobs).
    /// Key `data_dir`, default `.mesh` under the working directory.
    pub data_dir: PathBuf,
    /// The mesh services to run, by short name (`session`, `feed`, `auth`, `storage`).
    /// Key `services`, default: every service this build contains. Empty means all.
    #[serde(deserialize_with = "load::comma_separated")]
    pub services: Vec<String>,
    /// The listener and its protocol limits.
    pub server: ServerSettings,
    /// Access-token verification.
    pub auth: AuthSettings,
    /// Logging.
    pub log: LogSettings,
    /// The shared Redis, when one is configured (none in the embedded default).
    pub redis: RedisSettings,
    /// The streaming backbone: history, heartbeats, queues.
    pub stream: StreamSettings,
    /// The job queue: retries, backoff, dead letters, visibility timeout.
    pub jobs: crate::jobs::JobQueueSettings,
    /// The Session service: lifetimes, expiry sweeps, the audit trail.
    pub session: SessionSettings,
    /// The Feed service: publication rate, streams per caller, page tokens.
    pub feed: FeedSettings,
    /// The document store (memory or Firestore) and its Redis cache.
    pub documents: DocumentsSettings,
    /// The Storage service: blobs, signed URLs, upload limits.
    pub storage: StorageSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".mesh"),
            services: Vec::new(),
            server: ServerSettings::default(),
            auth: AuthSettings::default(),
            log: LogSettings::default(),
            redis: RedisSettings::default(),
            stream: StreamSettings::default(),
            jobs: crate::jobs::JobQueueSettings::default(),
            session: SessionSettings::default(),
            feed: FeedSettings::default(),
            documents: DocumentsSettings::default(),
            storage: StorageSettings::default(),
        }
    }
}

/// Section `[server]`: the one port that serves gRPC, grpc-web and plain HTTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    /// Key `server.listen`, default `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// After SIGINT/SIGTERM, how long open calls and streams may run on before streams are
    /// ended with UNAVAILABLE. Key `server.drain_timeout`, default `10s`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// HTTP/2 concurrent streams per connection. Key `server.max_concurrent_streams`,
    /// default 1024.
    pub max_concurrent_streams: u32,
    /// Largest request header list in bytes. Key `server.max_header_list_size`, default 16384.
    pub max_header_list_size: u32,
    /// Streams a client may reset before they are accepted (rapid-reset protection).
    /// Key `server.max_pending_accept_reset_streams`, default 20.
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset because of client protocol errors before it closes the
    /// connection. Key `server.max_local_error_reset_streams`, default 256.
    pub max_local_error_reset_streams: usize,
    /// Largest decoded request message in bytes. Key `server.max_decoding_message_size`,
    /// default 4194304 (4 MiB).
    pub max_decoding_message_size: usize,
    /// Largest encoded response message in bytes. Key `server.max_encoding_message_size`,
    /// default 4194304 (4 MiB).
    pub max_encoding_message_size: usize,
    /// HTTP/2 keepalive ping interval; idle peers that do not answer are dropped.
    /// Key `server.http2_keepalive_interval`, default `30s`.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// Serve gRPC server reflection (v1 and v1alpha). Key `server.reflection`, default true.
    pub reflection: bool,
    /// Origins allowed to call through grpc-web from a browser; `*` allows any.
    /// Key `server.cors_allowed_origins`, default `["*"]` (bearer tokens, no cookies).
    #[serde(deserialize_with = "load::comma_separated")]
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            drain_timeout: Duration::from_secs(10),
            max_concurrent_streams: 1024,
            max_header_list_size: 16 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 256,
            max_decoding_message_size: 4 * 1024 * 1024,
            max_encoding_message_size: 4 * 1024 * 1024,
            http2_keepalive_interval: Duration::from_secs(30),
            reflection: true,
            cors_allowed_origins: vec!["*".to_owned()],
        }
    }
}

/// Section `[auth]`: how access tokens are verified (RFC 8725: EdDSA pinned).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Required `iss` claim. Key `auth.issuer`, default `mesh`.
    #[serde(deserialize_with = "load::scalar_string")]
    pub issuer: String,
    /// Required `aud` claim. Key `auth.audience`, default `mesh`.
    #[serde(deserialize_with = "load::scalar_string")]
    pub audience: String,
    /// Clock skew tolerated on `exp`/`nbf`. Key `auth.leeway`, default `60s`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Longest lifetime a token may claim (`exp` later than now + this + leeway is
    /// rejected), so a leaked long-lived token cannot exist. Key `auth.max_token_lifetime`,
    /// default `1h` (access tokens live 15 min).
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// Keep a generated Ed25519 key pair in `data_dir` and trust it. Key `auth.dev_key`,
    /// default true only in the embedded default (no config file, no `MESH__` variable);
    /// never implied once any configuration is given.
    pub dev_key: bool,
    /// Public keys trusted for verification, selected by the token's `kid`: keys of other
    /// signers, and retired signing keys whose tokens may still be valid (remove one to
    /// stop accepting its tokens).
    pub keys: Vec<VerificationKey>,
    /// The key this instance signs access tokens with (`[auth.signing_key]`); its public
    /// half is trusted and published too. Without it (and without `dev_key`) the instance
    /// only verifies.
    pub signing_key: Option<SigningKeySettings>,
    /// Lifetime of the access tokens the Auth service issues (at most
    /// `auth.max_token_lifetime`). Key `auth.access_token_ttl`, default `15m`.
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// Whether Register creates accounts: `open` or `closed` (for every tenant). Key
    /// `auth.registration`, default `open`.
    pub registration: Registration,
    /// Tenants whose registration is closed even when `auth.registration` is `open`. Key
    /// `auth.closed_tenants`, default empty.
    #[serde(deserialize_with = "load::comma_separated")]
    pub closed_tenants: Vec<String>,
    /// Argon2id cost of password hashes (`[auth.password_hash]`).
    pub password_hash: PasswordHashSettings,
    /// Limits of failed logins (`[auth.login_throttle]`).
    pub login_throttle: LoginThrottleSettings,
    /// Where the Auth service reaches the Session service: the URL of another meshd
    /// (`http://host:port`), or unset to call this process's own Session service
    /// in-process. Key `auth.session_url`, default unset.
    pub session_url: Option<String>,
}

/// Whether the Auth service's Register creates accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone may register in any tenant not listed in `auth.closed_tenants`.
    Open,
    /// Register fails with PERMISSION_DENIED everywhere (accounts come from elsewhere).
    Closed,
}

/// Section `[auth.password_hash]`: Argon2id cost parameters. The defaults follow the OWASP
/// password storage guidance (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordHashSettings {
    /// Memory per hash in KiB. Key `auth.password_hash.memory_kib`, default 19456.
    pub memory_kib: u32,
    /// Passes over the memory. Key `auth.password_hash.iterations`, default 2.
    pub iterations: u32,
    /// Lanes. Key `auth.password_hash.parallelism`, default 1.
    pub parallelism: u32,
}

impl Default for PasswordHashSettings {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

/// Section `[auth.login_throttle]`: failed logins (and failed password checks of
/// ChangePassword) allowed per window before Login answers RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginThrottleSettings {
    /// Per account (tenant + email). Key `auth.login_throttle.max_failures_per_account`,
    /// default 5.
    pub max_failures_per_account: u32,
    /// Per client address. Key `auth.login_throttle.max_failures_per_address`, default 50.
    pub max_failures_per_address: u32,
    /// How long a counter lives from its first attempt. Key `auth.login_throttle.window`,
    /// default `15m`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for LoginThrottleSettings {
    fn default() -> Self {
        Self { max_failures_per_account: 5, max_failures_per_address: 50, window: Duration::from_secs(15 * 60) }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuer: "mesh".to_owned(),
            audience: "mesh".to_owned(),
            leeway: Duration::from_secs(60),
            max_token_lifetime: Duration::from_secs(3600),
            dev_key: false,
            keys: Vec::new(),
            signing_key: None,
            access_token_ttl: Duration::from_secs(15 * 60),
            registration: Registration::Open,
            closed_tenants: Vec::new(),
            password_hash: PasswordHashSettings::default(),
            login_throttle: LoginThrottleSettings::default(),
            session_url: None,
        }
    }
}

/// One trusted public key (`[[auth.keys]]`): an Ed25519 key in SPKI PEM form, inline or in
/// a file. Exactly one of `public_key_pem` and `public_key_file` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationKey {
    /// Key id matched against the token header's `kid`.
    #[serde(deserialize_with = "load::scalar_string")]
    pub kid: String,
    /// The PEM text (`-----BEGIN PUBLIC KEY-----`).
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// Path of a PEM file.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
}

/// The signing key (`[auth.signing_key]`): an Ed25519 private key in PKCS#8 PEM form
/// (`-----BEGIN PRIVATE KEY-----`), inline (e.g. from `MESH__AUTH__SIGNING_KEY__PRIVATE_KEY_PEM`)
/// or in a file. Exactly one of `private_key_pem` and `private_key_file` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeySettings {
    /// Key id written into the `kid` header; distinct from every `auth.keys` kid.
    #[serde(deserialize_with = "load::scalar_string")]
    pub kid: String,
    /// The PEM text.
    #[serde(default)]
    pub private_key_pem: Option<Secret<String>>,
    /// Path of a PEM file (readable by meshd only).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
}

/// Section `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (readable, for terminals) or `json` (one object per line, for production).
    /// Key `log.format`, default `text`; flag `--log-format`.
    pub format: LogFormat,
    /// A tracing filter directive, e.g. `info` or `meshd=debug,info`. Key `log.filter`,
    /// default `info`.
    #[serde(deserialize_with = "load::scalar_string")]
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Text, filter: "info".to_owned() }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Section `[redis]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`; unset means in-memory backends. It may
    /// hold a password, so it is never printed. Key `redis.url`.
    pub url: Option<Secret<String>>,
    /// Connections in the command pool. Key `redis.pool_size`, default 16.
    pub pool_size: u32,
    /// Time allowed to open a connection. Key `redis.connect_timeout`, default `2s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self { url: None, pool_size: 16, connect_timeout: Duration::from_secs(2) }
    }
}

/// Section `[feed]`: the Feed service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedSettings {
    /// Activities one user may publish per second, on average (per instance). Key
    /// `feed.publish_rate`, default 10.
    pub publish_rate: u32,
    /// Activities one user may publish at once before the rate applies. Key
    /// `feed.publish_burst`, default 20.
    pub publish_burst: u32,
    /// Concurrent Subscribe streams per caller (tenant and user, per instance). Key
    /// `feed.max_streams_per_caller`, default 8.
    pub max_streams_per_caller: usize,
    /// Key that signs and encrypts ListFeed page tokens: 32 bytes, URL-safe base64 without
    /// padding (43 characters); a secret. Instances behind one load balancer must share it.
    /// Key `feed.page_token_key`, default unset: a random key per process (tokens then work
    /// only on the instance that issued them).
    pub page_token_key: Option<Secret<String>>,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self { publish_rate: 10, publish_burst: 20, max_streams_per_caller: 8, page_token_key: None }
    }
}

/// Section `[session]`: the Session service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// How long a session lives without activity (Get, Touch, Update slide it).
    /// Key `session.idle_ttl`, default `1h`.
    #[serde(with = "humantime_serde")]
    pub idle_ttl: Duration,
    /// How long a session lives at most, however active. Key `session.max_lifetime`,
    /// default `8h`.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// How often each instance looks for sessions that reached their expiry (each is
    /// ended and announced once, whichever instance finds it). Key `session.sweep_interval`,
    /// default `1s`.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Where audit events are kept: `file` (`audit.jsonl` in the data folder) or
    /// `postgres` (needs `session.postgres_url`). Key `session.audit_sink`, default `file`.
    pub audit_sink: AuditSinkKind,
    /// `postgres://user:password@host:port/database` of the audit trail; never printed.
    /// Key `session.postgres_url`.
    pub postgres_url: Option<Secret<String>>,
    /// Connections to PostgreSQL. Key `session.postgres_pool_size`, default 4.
    pub postgres_pool_size: u32,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_ttl: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(8 * 3600),
            sweep_interval: Duration::from_secs(1),
            audit_sink: AuditSinkKind::File,
            postgres_url: None,
            postgres_pool_size: 4,
        }
    }
}

/// Where the Session service's audit trail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSinkKind {
    /// A JSON-lines file in the data folder.
    File,
    /// An append-only PostgreSQL table.
    Postgres,
}

/// Section `[stream]`: the streaming backbone every streaming RPC uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSettings {
    /// Publications kept per channel for recovery. Key `stream.history_size`, default 1000.
    pub history_size: usize,
    /// How long a channel's history lives after its last publication.
    /// Key `stream.history_ttl`, default `1h`.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Largest publication payload in bytes. Key `stream.max_payload_bytes`, default 65536.
    pub max_payload_bytes: usize,
    /// Idle time after which a stream gets a heartbeat. Key `stream.heartbeat_interval`,
    /// default `15s`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Events a stream may have waiting before it is ended with SLOW_CONSUMER.
    /// Key `stream.queue_capacity`, default 100.
    pub queue_capacity: usize,
    /// Most channels in one subscription. Key `stream.max_channels_per_subscription`,
    /// default 16.
    pub max_channels_per_subscription: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            history_size: 1000,
            history_ttl: Duration::from_secs(3600),
            max_payload_bytes: 64 * 1024,
            heartbeat_interval: Duration::from_secs(15),
            queue_capacity: 100,
            max_channels_per_subscription: 16,
        }
    }
}

impl StreamSettings {
    /// The broker's history settings.
    pub fn history(&self) -> crate::broker::HistorySettings {
        crate::broker::HistorySettings {
            size: self.history_size,
            ttl: self.history_ttl,
            max_payload: self.max_payload_bytes,
        }
    }

    /// The settings of each subscription.
    pub fn subscription(&self) -> crate::broker::subscription::SubscriptionSettings {
        crate::broker::subscription::SubscriptionSettings {
            queue_capacity: self.queue_capacity,
            heartbeat_interval: self.heartbeat_interval,
            history_limit: self.history_size,
            max_channels: self.max_channels_per_subscription,
        }
    }
}
