//! [`Caller`]: the identity proven by a verified access token.

use std::time::SystemTime;

/// The verified identity of a request, found in its extensions once the auth layer has
/// checked the bearer token. Handlers take it from there; nothing else says who calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Tenant (`tid` claim): every lookup is scoped by it.
    pub tenant: String,
    /// User (`sub` claim).
    pub user: String,
    /// Session the token belongs to (`sid` claim); revoking it revokes the token. User
    /// access tokens always carry one; only the short-lived service tokens the Auth service
    /// mints for its own calls (scope `sessions.create`, `sessions.admin`) have none.
    pub session: Option<String>,
    /// Token id (`jti` claim).
    pub token_id: String,
    /// Granted scopes (`scope` claim, space-separated in the token).
    pub scopes: Vec<Scope>,
    /// When the token stops being accepted (`exp` claim).
    pub expires_at: SystemTime,
}

impl Caller {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|granted| granted.0 == scope)
    }
}

/// One granted scope, e.g. `admin` or `sessions.create`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(pub String);

/// Whether `id` is a usable tenant or user id: `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$` (it
/// starts with a letter or digit, so `.` and `..` can never reach a path or a key).
pub fn is_valid_principal_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_ids_start_with_a_letter_or_digit() {
        for valid in ["t1", "acme-corp", "user_42", "a.b", &"x".repeat(64)] {
            assert!(is_valid_principal_id(valid), "{valid}");
        }
        for invalid in ["", ".", "..", "-x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(!is_valid_principal_id(invalid), "{invalid}");
        }
    }
}
