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
    /// Session the token belongs to (`sid` claim); revoking it revokes the token.
    pub session: String,
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

/// One granted scope, e.g. `admin` or `feed:write`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(pub String);

/// Whether `id` is a usable tenant or user id: 1 to 64 characters of `[A-Za-z0-9_.-]`.
pub(crate) fn is_valid_principal_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'))
}
