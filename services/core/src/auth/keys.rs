//! Ed25519 signing keys and access-token claims. The embedded default keeps one generated
//! key pair in its data directory ([`load_or_create_dev_key`]); anywhere else keys come
//! from configuration and are never generated implicitly.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::verify::ACCESS_TOKEN_TYPE;

/// Why a key could not be loaded, stored or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM text is not an Ed25519 key of the expected kind (`private` or `public`).
    #[error("not an Ed25519 {0} key")]
    Invalid(&'static str),
    /// Reading or writing a key file failed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done: `read`, `write`, `create`.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Signing failed.
    #[error("failed to sign the access token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + use<> {
    let path = path.to_path_buf();
    move |source| KeyError::Io { action, path, source }
}

/// File name of the embedded default's signing key (PKCS#8 PEM) inside the data directory.
pub const DEV_KEY_FILE: &str = "dev-signing-key.pem";

/// The claims of a mesh access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// User id.
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    /// Session id; absent only in the Auth service's own short-lived service tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Token id.
    pub jti: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// Space-separated scopes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

impl AccessClaims {
    /// Claims for `user` of `tenant` in `session`, valid for `ttl` from now, with a random
    /// token id.
    pub fn new(issuer: &str, audience: &str, tenant: &str, user: &str, session: &str, ttl: Duration) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Self {
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            sub: user.to_owned(),
            tid: tenant.to_owned(),
            sid: Some(session.to_owned()),
            jti: random_id(),
            iat: now,
            exp: now + ttl.as_secs(),
            scope: String::new(),
        }
    }
}

/// 128 random bits, URL-safe base64 (22 characters): token and session ids.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `raw` is exactly what [`random_id`] produces: 22 characters of URL-safe base64
/// that decode to 16 bytes (one spelling per id; safe in keys and channel names).
pub fn is_random_id(raw: &str) -> bool {
    raw.len() == 22 && URL_SAFE_NO_PAD.decode(raw).is_ok_and(|bytes| bytes.len() == 16)
}

/// An Ed25519 key pair with its key id: signs access tokens; its public half verifies them.
#[derive(Clone)]
pub struct SigningKeyPair {
    kid: String,
    signing: ed25519_dalek::SigningKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyPair").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKeyPair {
    /// A fresh key pair from the OS random source; the key id is derived from the public key.
    pub fn generate() -> Self {
        Self::from_signing_key(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng), None)
    }

    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str, kid: Option<String>) -> Result<Self, KeyError> {
        let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|_| KeyError::Invalid("private"))?;
        Ok(Self::from_signing_key(signing, kid))
    }

    /// The signing key `[auth.signing_key]` configures, if any; the error names the key.
    pub fn from_settings(settings: &crate::config::AuthSettings) -> Result<Option<Self>, crate::config::ConfigError> {
        let Some(key) = &settings.signing_key else {
            return Ok(None);
        };
        let pem = match (&key.private_key_pem, &key.private_key_file) {
            (Some(pem), _) => pem.expose().clone(),
            (None, Some(file)) => std::fs::read_to_string(file).map_err(|error| {
                crate::config::ConfigError::new(
                    "auth.signing_key.private_key_file",
                    format!("cannot read {}: {error}", file.display()),
                    "a readable PEM file",
                )
            })?,
            (None, None) => {
                return Err(crate::config::ConfigError::new(
                    "auth.signing_key",
                    "it sets neither private_key_pem nor private_key_file",
                    "exactly one of private_key_pem and private_key_file",
                ));
            }
        };
        Self::from_pkcs8_pem(&pem, Some(key.kid.clone())).map(Some).map_err(|error| {
            crate::config::ConfigError::new(
                "auth.signing_key",
                error.to_string(),
                "an Ed25519 private key in PKCS#8 PEM form (-----BEGIN PRIVATE KEY-----)",
            )
        })
    }

    fn from_signing_key(signing: ed25519_dalek::SigningKey, kid: Option<String>) -> Self {
        let kid = kid.unwrap_or_else(|| {
            let public = signing.verifying_key().to_bytes();
            format!("ed25519-{}", URL_SAFE_NO_PAD.encode(&public[..9]))
        });
        let der = signing.to_pkcs8_der().expect("an Ed25519 key always encodes as PKCS#8");
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        Self { kid, signing, encoding }
    }

    /// The key id written into the `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8 PEM (to store it; handle as a secret).
    pub fn private_key_pem(&self) -> String {
        self.signing.to_pkcs8_pem(LineEnding::LF).expect("an Ed25519 key always encodes as PEM").to_string()
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as `auth.keys` takes it.
    pub fn public_key_pem(&self) -> String {
        self.signing.verifying_key().to_public_key_pem(LineEnding::LF).expect("an Ed25519 key always encodes as PEM")
    }

    /// The raw 32-byte public key.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs raw bytes (a JWS signing input) with the private key: the 64-byte signature.
    pub fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.signing.sign(message).to_bytes()
    }

    /// Signs `claims` as an EdDSA JWT with `kid` and `typ: at+jwt` in the header.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// Loads the embedded default's key pair from `data_dir`, creating the folder and a new key
/// (file mode 0600) the first time. Two processes starting together end up with the same
/// key: the new key is written to a private temporary file and linked into place only if no
/// key is there yet; the loser reads the winner's.
pub fn load_or_create_dev_key(data_dir: &Path) -> Result<SigningKeyPair, KeyError> {
    let path = data_dir.join(DEV_KEY_FILE);
    if path.exists() {
        return read_key(&path);
    }
    std::fs::create_dir_all(data_dir).map_err(io_error("create", data_dir))?;
    let pair = SigningKeyPair::generate();
    let temporary = data_dir.join(format!(".{DEV_KEY_FILE}.{}", random_id()));
    write_private(&temporary, pair.private_key_pem().as_bytes()).map_err(io_error("write", &temporary))?;
    let linked = std::fs::hard_link(&temporary, &path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(pair),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => read_key(&path),
        Err(error) => Err(io_error("write", &path)(error)),
    }
}

fn read_key(path: &Path) -> Result<SigningKeyPair, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(io_error("read", path))?;
    SigningKeyPair::from_pkcs8_pem(&pem, None)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_pair_survives_a_pem_round_trip() {
        let pair = SigningKeyPair::generate();
        let again = SigningKeyPair::from_pkcs8_pem(&pair.private_key_pem(), None).unwrap();
        assert_eq!(again.kid(), pair.kid());
        assert_eq!(again.public_key_bytes(), pair.public_key_bytes());
    }

    #[test]
    fn random_ids_are_22_url_safe_characters() {
        let id = random_id();
        assert_eq!(id.len(), 22);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
