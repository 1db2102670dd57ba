//! Who is calling: the verified [`Caller`] that the auth layer puts into every request's
//! extensions, the access-token [`TokenVerifier`] (RFC 8725: EdDSA pinned, `kid` among
//! configured keys only, `iss`/`aud`/`exp` required) and the [`SigningKeyPair`] that signs
//! tokens (the Auth service later, `meshd dev-token` and tests now).
//!
//! Tenant and user come from the verified token only, never from a request field or header.

mod caller;
mod keys;
pub mod revocation;
pub mod revocations;
mod verify;

pub use caller::{Caller, Scope, is_valid_principal_id};
pub use keys::{AccessClaims, DEV_KEY_FILE, KeyError, SigningKeyPair, is_random_id, load_or_create_dev_key, random_id};
pub use revocation::{MemoryRevocationStore, RedisRevocationStore, RevocationError, RevocationStore, Revoked};
pub use revocations::Revocations;
pub use verify::{ACCESS_TOKEN_TYPE, Jwk, TokenVerifier};
