//! [`TokenIssuer`]: mints the access tokens of users (after Login and Refresh) and the
//! short-lived service tokens Auth uses for its own calls to the Session service.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::auth::{AccessClaims, SigningKeyPair, random_id};

/// Default lifetime of a user's access token.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Lifetime of a service token (never given to clients).
pub const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(60);

/// A signed access token with what the caller reports about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Its `jti` claim.
    pub token_id: String,
    /// Its `exp` claim.
    pub expire_time: SystemTime,
}

/// Signs access tokens with the instance's signing key for one issuer and audience.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    signer: SigningKeyPair,
    issuer: String,
    audience: String,
    access_ttl: Duration,
}

impl TokenIssuer {
    /// An issuer signing with `signer`, for `issuer`/`audience`, whose user tokens live
    /// `access_ttl` (whole seconds; at least 1 s).
    pub fn new(signer: SigningKeyPair, issuer: &str, audience: &str, access_ttl: Duration) -> Self {
        let access_ttl = Duration::from_secs(access_ttl.as_secs().max(1));
        Self { signer, issuer: issuer.to_owned(), audience: audience.to_owned(), access_ttl }
    }

    /// The lifetime of user access tokens.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// A user's access token for `session`, with `scopes`, issued at `now`; it expires
    /// after the access TTL, or at `session_end` (the session's cap) if that is sooner, so
    /// no token outlives its session's lifetime.
    pub fn access_token(
        &self,
        tenant: &str,
        user: &str,
        session: &str,
        scopes: &[&str],
        now: SystemTime,
        session_end: SystemTime,
    ) -> Result<IssuedToken, mesh_core::auth::KeyError> {
        let left = session_end.duration_since(now).unwrap_or(Duration::ZERO);
        let ttl = self.access_ttl.min(Duration::from_secs(left.as_secs().max(1)));
        self.sign(tenant, user, Some(session), &scopes.join(" "), ttl, now)
    }

    /// A service token acting for `user` of `tenant` with one `scope` (`sessions.create`,
    /// `sessions.admin`): no session, valid [`SERVICE_TOKEN_TTL`].
    pub fn service_token(
        &self,
        tenant: &str,
        user: &str,
        scope: &str,
        now: SystemTime,
    ) -> Result<IssuedToken, mesh_core::auth::KeyError> {
        self.sign(tenant, user, None, scope, SERVICE_TOKEN_TTL, now)
    }

    fn sign(
        &self,
        tenant: &str,
        user: &str,
        session: Option<&str>,
        scope: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedToken, mesh_core::auth::KeyError> {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.to_owned(),
            tid: tenant.to_owned(),
            sid: session.map(str::to_owned),
            jti: random_id(),
            iat,
            exp: iat + ttl.as_secs(),
            scope: scope.to_owned(),
        };
        let token = self.signer.sign(&claims)?;
        Ok(IssuedToken { token, token_id: claims.jti, expire_time: UNIX_EPOCH + Duration::from_secs(claims.exp) })
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::auth::TokenVerifier;

    use super::*;
    use crate::domain::RefreshToken;

    const HOUR: Duration = Duration::from_secs(3600);

    fn setup() -> (TokenIssuer, TokenVerifier) {
        let key = SigningKeyPair::generate();
        let mut verifier = TokenVerifier::new("mesh", "mesh", Duration::from_secs(60));
        verifier.add_key_pair(&key);
        (TokenIssuer::new(key, "mesh", "mesh", DEFAULT_ACCESS_TOKEN_TTL), verifier)
    }

    #[test]
    fn a_user_token_carries_tenant_user_session_scopes_and_verifies() {
        let (issuer, verifier) = setup();
        let now = SystemTime::now();
        let issued =
            issuer.access_token("acme", "alice", "s1", &["admin", "revocations.read"], now, now + HOUR).unwrap();
        let caller = verifier.verify(&issued.token).unwrap();
        assert_eq!((caller.tenant.as_str(), caller.user.as_str()), ("acme", "alice"));
        assert_eq!(caller.session.as_deref(), Some("s1"));
        assert_eq!(caller.token_id, issued.token_id);
        assert!(caller.has_scope("admin") && caller.has_scope("revocations.read"));
        let ttl = issued.expire_time.duration_since(now).unwrap();
        assert!(ttl > DEFAULT_ACCESS_TOKEN_TTL - Duration::from_secs(2) && ttl <= DEFAULT_ACCESS_TOKEN_TTL);
        assert_ne!(issued.token_id, issuer.access_token("acme", "alice", "s1", &[], now, now + HOUR).unwrap().token_id);
    }

    #[test]
    fn a_user_token_never_outlives_its_session() {
        let (issuer, _) = setup();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let issued = issuer.access_token("acme", "alice", "s1", &[], now, now + Duration::from_secs(90)).unwrap();
        assert_eq!(issued.expire_time, now + Duration::from_secs(90));
    }

    #[test]
    fn a_service_token_has_no_session_one_scope_and_a_minute() {
        let (issuer, verifier) = setup();
        let now = SystemTime::now();
        let issued = issuer.service_token("acme", "alice", "sessions.create", now).unwrap();
        let caller = verifier.verify(&issued.token).unwrap();
        assert_eq!(caller.session, None);
        assert!(caller.has_scope("sessions.create") && !caller.has_scope("admin"));
        assert!(issued.expire_time.duration_since(now).unwrap() <= SERVICE_TOKEN_TTL);
    }

    #[test]
    fn a_refresh_token_is_no_access_token() {
        let (_, verifier) = setup();
        let error = verifier.verify(RefreshToken::generate().as_str()).unwrap_err();
        assert_eq!(error.reason(), "TOKEN_MALFORMED");
    }
}
