//! Refresh tokens: opaque, 256 random bits, stored only as a hash, rotated on every use.
//!
//! Each Login starts a *family*; every Refresh consumes the presented token and issues the
//! next one of the same family. Presenting a token that was already consumed is reuse (a
//! stolen copy, or a replay): the whole family is revoked, and the caller ends the session.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::{hex, random_hex_128};

/// Length of a refresh token: 32 bytes in URL-safe base64 without padding.
pub const REFRESH_TOKEN_LEN: usize = 43;

/// A refresh token as handed to the client. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

impl RefreshToken {
    /// A new token: 256 bits from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A token presented by a client, if it has the shape of one (43 base64url characters);
    /// anything else cannot be a refresh token of this server.
    pub fn parse(raw: &str) -> Option<Self> {
        let shaped = raw.len() == REFRESH_TOKEN_LEN && URL_SAFE_NO_PAD.decode(raw).is_ok_and(|bytes| bytes.len() == 32);
        shaped.then(|| Self(raw.to_owned()))
    }

    /// The token text for the client.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the store keeps and looks up: SHA-256 of the token (a fast hash suffices: the
    /// token has 256 bits of entropy, nothing to guess).
    pub fn hash(&self) -> RefreshTokenHash {
        RefreshTokenHash(hex(&Sha256::digest(self.0.as_bytes())))
    }
}

/// The stored form of a refresh token: its SHA-256, 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefreshTokenHash(String);

impl RefreshTokenHash {
    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The family of refresh tokens descended from one Login: 128 random bits, 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FamilyId(String);

impl FamilyId {
    /// A new family id.
    pub fn generate() -> Self {
        Self(random_hex_128())
    }

    /// A family id read back from a store (32 hex digits), else `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .then(|| Self(raw.to_owned()))
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a refresh token stands for: whose session, which family, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// Tenant of the user.
    pub tenant: String,
    /// The user.
    pub user: String,
    /// The session the tokens of the family belong to (a `mesh.session.v1` session id).
    pub session_id: String,
    /// The family.
    pub family: FamilyId,
    /// When every token of the family stops working: the session's absolute cap.
    pub expire_time: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_has_256_random_bits_in_43_characters_and_a_stable_hash() {
        let token = RefreshToken::generate();
        assert_eq!(token.as_str().len(), REFRESH_TOKEN_LEN);
        assert_ne!(token, RefreshToken::generate());
        assert_eq!(RefreshToken::parse(token.as_str()), Some(token.clone()));
        assert_eq!(token.hash(), RefreshToken::parse(token.as_str()).unwrap().hash());
        assert_eq!(token.hash().as_str().len(), 64);
        assert_eq!(format!("{token:?}"), "RefreshToken(..)");
    }

    #[test]
    fn anything_else_is_not_a_refresh_token() {
        for bad in ["", "short", &"A".repeat(44), &format!("{}*", "A".repeat(42)), "eyJhbGciOiJFZERTQSJ9.e30.c2ln"] {
            assert_eq!(RefreshToken::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn family_ids_are_32_lowercase_hex_digits() {
        let family = FamilyId::generate();
        assert_eq!(FamilyId::parse(family.as_str()), Some(family));
        assert_eq!(FamilyId::parse("ABCDEF0123456789abcdef0123456789"), None);
        assert_eq!(FamilyId::parse("abc"), None);
    }
}
