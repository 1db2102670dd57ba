//! [`User`] and [`UserId`].

use std::time::SystemTime;

use super::{Email, PasswordHash};

/// A user id assigned by the server: 128 random bits as 32 lowercase hex digits (a valid
/// principal id of mesh tokens).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// A new random id.
    pub fn generate() -> Self {
        Self(super::random_hex_128())
    }

    /// An id read back from a store or a token (32 lowercase hex digits), else `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Self(raw.to_owned()))
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An account of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The id.
    pub id: UserId,
    /// The tenant.
    pub tenant: String,
    /// The email address, unique in the tenant by its normalized form.
    pub email: Email,
    /// The Argon2id hash of the password.
    pub password_hash: PasswordHash,
    /// When the account was created.
    pub create_time: SystemTime,
    /// When the email or password last changed.
    pub update_time: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_32_lowercase_hex_digits() {
        let id = UserId::generate();
        assert_eq!(UserId::parse(id.as_str()), Some(id.clone()));
        assert_ne!(id, UserId::generate());
        assert_eq!(UserId::parse("0123456789ABCDEF0123456789abcdef"), None);
        assert_eq!(UserId::parse("alice"), None);
    }
}
