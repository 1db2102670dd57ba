//! mesh-auth: the Auth service of the mesh (`mesh.auth.v1`).
//!
//! - [`domain`]: the pure types and rules: emails, passwords and their Argon2id hashes, user
//!   ids, refresh tokens (opaque, stored only as a hash), the access-token issuer and
//!   [`AuthError`]. No I/O, no transport types.
//! - [`store`]: the I/O boundaries: [`UserStore`](store::UserStore) (accounts: memory, or
//!   the document store, i.e. Firestore) and
//!   [`RefreshTokenStore`](store::RefreshTokenStore) (memory and Redis: atomic rotation with
//!   reuse detection).
//!
//! - [`hash_pool`]: the few threads every password hash runs on.
//! - [`grpc`]: the adapter of `mesh.auth.v1.AuthService` on these, calling the Session
//!   service through its generated client and revoking through
//!   [`Revocations`](mesh_core::auth::Revocations).

pub mod domain;
pub mod grpc;
pub mod hash_pool;
pub mod store;

pub use domain::AuthError;
