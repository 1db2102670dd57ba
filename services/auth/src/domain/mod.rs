//! The pure types and rules of Auth: no I/O, no transport types.

mod email;
mod error;
mod password;
mod refresh;
mod tokens;
mod user;

pub use email::{Email, MAX_EMAIL_LEN};
pub use error::AuthError;
pub use password::{Argon2Params, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, Password, PasswordHash, PasswordHasher};
pub use refresh::{FamilyId, REFRESH_TOKEN_LEN, RefreshRecord, RefreshToken, RefreshTokenHash};
pub use tokens::{DEFAULT_ACCESS_TOKEN_TTL, IssuedToken, SERVICE_TOKEN_TTL, TokenIssuer};
pub use user::{User, UserId};

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 128 bits from the OS CSPRNG as 32 lowercase hex digits (user and family ids).
pub(crate) fn random_hex_128() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}
