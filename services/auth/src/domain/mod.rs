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
