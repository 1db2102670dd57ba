//! [`TokenVerifier`]: checks a bearer access token and yields the [`Caller`].
//!
//! RFC 8725 rules: the algorithm is pinned to EdDSA (never taken from the token), `kid`
//! selects among configured keys only, `iss`, `aud`, `exp` and `sub` are required, the
//! header type must be `at+jwt` (so no other JWT of ours passes as an access token),
//! clocks may be off by the configured leeway (60 s by default), and no token may claim a
//! lifetime beyond `auth.max_token_lifetime` or an issue time in the future.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::DecodePublicKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::caller::is_valid_principal_id;
use super::keys::{AccessClaims, KeyError, SigningKeyPair};
use super::{Caller, Scope};
use crate::Error;
use crate::config::{AuthSettings, ConfigError};

/// The JWT `typ` header of mesh access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Verified tokens remembered at most (about 2 MiB of tokens); when full, expired entries
/// go, and if that is not enough, all of them.
const CACHE_CAPACITY: usize = 4096;

/// Verifies access tokens against a fixed set of Ed25519 public keys.
///
/// A token verified once is remembered until it expires, so the clients' repeated calls
/// with one token skip the signature check (about 50 µs of CPU each). The remembered
/// answer is exactly the first one: the token's text is the key, and its expiry is checked
/// again on every use. Clones share the memory.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    /// The raw public keys by kid, for the JWKS.
    public: std::collections::BTreeMap<String, [u8; 32]>,
    validation: Validation,
    leeway: Duration,
    max_lifetime: Duration,
    verified: Arc<Mutex<HashMap<Box<str>, Caller>>>,
}

/// One public key as a JSON Web Key (RFC 7517; RFC 8037 for Ed25519).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Jwk {
    /// Key type: `OKP`.
    pub kty: String,
    /// Curve: `Ed25519`.
    pub crv: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
    /// Key id, as in the token header.
    pub kid: String,
    /// Algorithm: `EdDSA`.
    pub alg: String,
    /// Public key use: `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").field("kids", &self.keys.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier that requires `issuer` and `audience`, tolerates `leeway` of clock skew
    /// and accepts lifetimes up to one hour, with no key yet.
    pub fn new(issuer: &str, audience: &str, leeway: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self {
            keys: HashMap::new(),
            public: std::collections::BTreeMap::new(),
            validation,
            leeway,
            max_lifetime: Duration::from_secs(3600),
            verified: Arc::default(),
        }
    }

    /// Rejects tokens whose `exp` lies more than `max_lifetime` (plus leeway) ahead.
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// The verifier the `[auth]` settings describe: their keys, plus the public half of
    /// `signer`, the key pair this instance signs with (`auth.signing_key`, or the embedded
    /// default's dev key).
    pub fn from_settings(settings: &AuthSettings, signer: Option<&SigningKeyPair>) -> Result<Self, ConfigError> {
        let mut verifier = Self::new(&settings.issuer, &settings.audience, settings.leeway)
            .with_max_lifetime(settings.max_token_lifetime);
        for (index, key) in settings.keys.iter().enumerate() {
            let pem = match (&key.public_key_pem, &key.public_key_file) {
                (Some(pem), _) => pem.clone(),
                (None, Some(file)) => std::fs::read_to_string(file).map_err(|error| {
                    ConfigError::new(
                        format!("auth.keys[{index}].public_key_file"),
                        format!("cannot read {}: {error}", file.display()),
                        "a readable PEM file",
                    )
                })?,
                (None, None) => unreachable!("validated at load: one of the two is set"),
            };
            verifier.add_public_key_pem(&key.kid, &pem).map_err(|error| {
                ConfigError::new(
                    format!("auth.keys[{index}]"),
                    error.to_string(),
                    "an Ed25519 public key in SPKI PEM form (-----BEGIN PUBLIC KEY-----)",
                )
            })?;
        }
        if let Some(pair) = signer {
            if verifier.keys.contains_key(pair.kid()) {
                return Err(ConfigError::new(
                    "auth.keys",
                    format!("the key id `{}` is also the signing key's", pair.kid()),
                    "key ids that differ from the signing key's",
                ));
            }
            verifier.add_key_pair(pair);
        }
        Ok(verifier)
    }

    /// Trusts an Ed25519 public key in SPKI PEM form under `kid`.
    pub fn add_public_key_pem(&mut self, kid: &str, pem: &str) -> Result<(), KeyError> {
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem).map_err(|_| KeyError::Invalid("public"))?;
        self.add_raw_public_key(kid, &key.to_bytes())
    }

    /// Trusts the public half of `pair` under its key id.
    pub fn add_key_pair(&mut self, pair: &SigningKeyPair) {
        self.add_raw_public_key(pair.kid(), &pair.public_key_bytes()).expect("a generated key is valid");
    }

    fn add_raw_public_key(&mut self, kid: &str, public: &[u8; 32]) -> Result<(), KeyError> {
        let key = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public))
            .map_err(|_| KeyError::Invalid("public"))?;
        self.keys.insert(kid.to_owned(), key);
        self.public.insert(kid.to_owned(), *public);
        Ok(())
    }

    /// Every trusted public key as a JSON Web Key (RFC 8037), ordered by kid: what
    /// `/.well-known/jwks.json` and GetJwks publish.
    pub fn jwks(&self) -> Vec<Jwk> {
        self.public
            .iter()
            .map(|(kid, public)| Jwk {
                kty: "OKP".to_owned(),
                crv: "Ed25519".to_owned(),
                x: URL_SAFE_NO_PAD.encode(public),
                kid: kid.clone(),
                alg: "EdDSA".to_owned(),
                key_use: "sig".to_owned(),
            })
            .collect()
    }

    /// The key ids this verifier trusts.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Verifies `token` and returns who it identifies, or UNAUTHENTICATED with a reason.
    pub fn verify(&self, token: &str) -> Result<Caller, Error> {
        let now = SystemTime::now();
        if let Some(caller) = self.remembered(token, now) {
            return Ok(caller);
        }
        let caller = self.verify_signed(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if verified.len() >= CACHE_CAPACITY {
            verified.retain(|_, caller| now <= caller.expires_at + self.leeway);
            if verified.len() >= CACHE_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(token.into(), caller.clone());
        Ok(caller)
    }

    /// The caller of a token verified before and not expired since.
    fn remembered(&self, token: &str, now: SystemTime) -> Option<Caller> {
        let mut verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let caller = verified.get(token)?;
        if now <= caller.expires_at + self.leeway {
            return Some(caller.clone());
        }
        verified.remove(token);
        None
    }

    /// The full check of a token: header, signature, claims.
    fn verify_signed(&self, token: &str) -> Result<Caller, Error> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Error::unauthenticated("TOKEN_MALFORMED", "the access token is not a well-formed JWT"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(Error::unauthenticated(
                "ALGORITHM_NOT_ALLOWED",
                "the access token is not signed with an allowed algorithm",
            ));
        }
        // RFC 9068: `at+jwt`, or the full media type `application/at+jwt`.
        let typ = header.typ.as_deref().map(|typ| typ.strip_prefix("application/").unwrap_or(typ));
        if typ.is_none_or(|typ| !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)) {
            return Err(Error::unauthenticated("TOKEN_TYPE_INVALID", "the token is not an access token"));
        }
        let key =
            header.kid.as_deref().and_then(|kid| self.keys.get(kid)).ok_or_else(|| {
                Error::unauthenticated("UNKNOWN_KEY", "the access token is signed with an unknown key")
            })?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(|error| rejection(error.kind()))?
            .claims;
        if !is_valid_principal_id(&claims.tid)
            || !is_valid_principal_id(&claims.sub)
            || claims.sid.as_deref().is_some_and(str::is_empty)
            || claims.jti.is_empty()
        {
            return Err(Error::unauthenticated(
                "TOKEN_INVALID",
                "the access token's subject, tenant, session or id claim is invalid",
            ));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let leeway = self.leeway.as_secs();
        if claims.iat > now + leeway {
            return Err(Error::unauthenticated("TOKEN_NOT_YET_VALID", "the access token was issued in the future"));
        }
        if claims.exp > now + self.max_lifetime.as_secs() + leeway {
            return Err(Error::unauthenticated(
                "TOKEN_LIFETIME_TOO_LONG",
                "the access token claims a longer lifetime than this server accepts",
            ));
        }
        Ok(Caller {
            tenant: claims.tid,
            user: claims.sub,
            session: claims.sid,
            token_id: claims.jti,
            scopes: claims.scope.split_whitespace().map(|scope| Scope(scope.to_owned())).collect(),
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}

fn rejection(kind: &ErrorKind) -> Error {
    match kind {
        ErrorKind::ExpiredSignature => Error::unauthenticated("TOKEN_EXPIRED", "the access token has expired"),
        ErrorKind::ImmatureSignature => {
            Error::unauthenticated("TOKEN_NOT_YET_VALID", "the access token is not valid yet")
        }
        ErrorKind::InvalidSignature => {
            Error::unauthenticated("TOKEN_SIGNATURE_INVALID", "the access token's signature does not verify")
        }
        ErrorKind::InvalidIssuer => {
            Error::unauthenticated("TOKEN_ISSUER_INVALID", "the access token was issued by someone else")
        }
        ErrorKind::InvalidAudience => {
            Error::unauthenticated("TOKEN_AUDIENCE_INVALID", "the access token is meant for another audience")
        }
        ErrorKind::MissingRequiredClaim(claim) => Error::unauthenticated(
            "TOKEN_CLAIM_MISSING",
            format!("the access token lacks the required `{claim}` claim"),
        ),
        // Claims are deserialized before they are validated: a claim our claims type
        // requires (tid, sid, jti, aud...) shows up missing here.
        ErrorKind::Json(error) if error.to_string().starts_with("missing field") => {
            let field = error.to_string().split('`').nth(1).unwrap_or("?").to_owned();
            Error::unauthenticated(
                "TOKEN_CLAIM_MISSING",
                format!("the access token lacks the required `{field}` claim"),
            )
        }
        ErrorKind::InvalidAlgorithm => {
            Error::unauthenticated("ALGORITHM_NOT_ALLOWED", "the access token is not signed with an allowed algorithm")
        }
        _ => Error::unauthenticated("TOKEN_INVALID", "the access token is invalid"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    fn verifier_for(pair: &SigningKeyPair) -> TokenVerifier {
        let mut verifier = TokenVerifier::new("mesh", "mesh", Duration::from_secs(60));
        verifier.add_key_pair(pair);
        verifier
    }

    #[test]
    fn a_remembered_token_answers_the_same_and_a_tampered_copy_is_still_checked() {
        let pair = SigningKeyPair::generate();
        let verifier = verifier_for(&pair);
        let token = pair.sign(&AccessClaims::new("mesh", "mesh", "t1", "u1", "s1", Duration::from_secs(900))).unwrap();
        let first = verifier.verify(&token).unwrap();
        assert_eq!(verifier.clone().verify(&token).unwrap(), first, "clones share what was verified");
        let mut tampered = token.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(verifier.verify(&tampered).unwrap_err().code(), Code::Unauthenticated);
    }

    #[test]
    fn a_valid_token_yields_its_caller() {
        let pair = SigningKeyPair::generate();
        let mut claims = AccessClaims::new("mesh", "mesh", "t1", "u1", "s1", Duration::from_secs(900));
        claims.scope = "admin feed.write".to_owned();
        let caller = verifier_for(&pair).verify(&pair.sign(&claims).unwrap()).unwrap();
        assert_eq!((caller.tenant.as_str(), caller.user.as_str(), caller.session.as_deref()), ("t1", "u1", Some("s1")));
        assert!(caller.has_scope("admin") && caller.has_scope("feed.write") && !caller.has_scope("root"));
    }

    #[test]
    fn a_token_claiming_a_long_lifetime_is_rejected() {
        let pair = SigningKeyPair::generate();
        let claims = AccessClaims::new("mesh", "mesh", "t1", "u1", "s1", Duration::from_secs(10 * 365 * 86400));
        let error = verifier_for(&pair).verify(&pair.sign(&claims).unwrap()).unwrap_err();
        assert_eq!(error.reason(), "TOKEN_LIFETIME_TOO_LONG");
    }

    #[test]
    fn a_token_issued_in_the_future_is_rejected() {
        let pair = SigningKeyPair::generate();
        let mut claims = AccessClaims::new("mesh", "mesh", "t1", "u1", "s1", Duration::from_secs(900));
        claims.iat += 600;
        let error = verifier_for(&pair).verify(&pair.sign(&claims).unwrap()).unwrap_err();
        assert_eq!(error.reason(), "TOKEN_NOT_YET_VALID");
    }

    #[test]
    fn garbage_is_rejected_as_malformed() {
        let pair = SigningKeyPair::generate();
        let error = verifier_for(&pair).verify("not-a-token").unwrap_err();
        assert_eq!((error.code(), error.reason()), (Code::Unauthenticated, "TOKEN_MALFORMED"));
    }

    #[test]
    fn an_invalid_tenant_claim_is_rejected() {
        let pair = SigningKeyPair::generate();
        let claims = AccessClaims::new("mesh", "mesh", "t 1/..", "u1", "s1", Duration::from_secs(900));
        let error = verifier_for(&pair).verify(&pair.sign(&claims).unwrap()).unwrap_err();
        assert_eq!(error.reason(), "TOKEN_INVALID");
    }
}
