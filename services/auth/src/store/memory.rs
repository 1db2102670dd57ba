//! The memory stores: the embedded default and the reference of the conformance suites.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use super::{BoxFuture, RefreshTokenStore, Rotation, UserStore};
use mesh_core::request_id::{REQUEST_ID_TTL, RequestId};

use crate::AuthError;
use crate::domain::{Email, FamilyId, PasswordHash, RefreshRecord, RefreshTokenHash, User, UserId};

/// Accounts in memory, keyed by (tenant, id) with a unique (tenant, normalized email) index.
#[derive(Debug, Default)]
pub struct MemoryUserStore {
    state: Mutex<Users>,
}

#[derive(Debug, Default)]
struct Users {
    by_id: HashMap<(String, UserId), User>,
    by_email: HashMap<(String, String), UserId>,
    /// Register's idempotency keys: (tenant, request id) -> the account and when.
    requests: HashMap<(String, RequestId), (UserId, SystemTime)>,
}

impl MemoryUserStore {
    fn lock(&self) -> MutexGuard<'_, Users> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl UserStore for MemoryUserStore {
    fn create<'a>(&'a self, user: User, request_id: Option<&'a RequestId>) -> BoxFuture<'a, Result<User, AuthError>> {
        Box::pin(async move {
            let mut users = self.lock();
            let now = SystemTime::now();
            users.requests.retain(|_, (_, at)| now.duration_since(*at).unwrap_or_default() < REQUEST_ID_TTL);
            let request_key = request_id.map(|id| (user.tenant.clone(), id.clone()));
            if let Some((id, _)) = request_key.as_ref().and_then(|key| users.requests.get(key)) {
                let first = users.by_id.get(&(user.tenant.clone(), id.clone())).ok_or(AuthError::UserNotFound)?;
                if first.email.normalized() != user.email.normalized() {
                    return Err(request_id_reused());
                }
                return Ok(first.clone());
            }
            let email_key = (user.tenant.clone(), user.email.normalized().to_owned());
            if users.by_email.contains_key(&email_key) {
                return Err(AuthError::EmailTaken);
            }
            users.by_email.insert(email_key, user.id.clone());
            users.by_id.insert((user.tenant.clone(), user.id.clone()), user.clone());
            if let Some(key) = request_key {
                users.requests.insert(key, (user.id.clone(), now));
            }
            Ok(user)
        })
    }

    fn by_email<'a>(&'a self, tenant: &'a str, email: &'a Email) -> BoxFuture<'a, Result<Option<User>, AuthError>> {
        Box::pin(async move {
            let users = self.lock();
            let id = users.by_email.get(&(tenant.to_owned(), email.normalized().to_owned()));
            Ok(id.and_then(|id| users.by_id.get(&(tenant.to_owned(), id.clone()))).cloned())
        })
    }

    fn by_id<'a>(&'a self, tenant: &'a str, id: &'a UserId) -> BoxFuture<'a, Result<Option<User>, AuthError>> {
        Box::pin(async move { Ok(self.lock().by_id.get(&(tenant.to_owned(), id.clone())).cloned()) })
    }

    fn set_password<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a UserId,
        hash: PasswordHash,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<User, AuthError>> {
        Box::pin(async move {
            let mut users = self.lock();
            let user = users.by_id.get_mut(&(tenant.to_owned(), id.clone())).ok_or(AuthError::UserNotFound)?;
            user.password_hash = hash;
            user.update_time = now;
            Ok(user.clone())
        })
    }
}

/// The error of a request id used before for another registration.
pub(super) fn request_id_reused() -> AuthError {
    AuthError::Invalid(vec![mesh_core::FieldViolation::new(
        "request_id",
        "was used for another registration in this tenant; send a new UUID",
    )])
}

/// Refresh tokens in memory, with the same rules as the Redis store.
#[derive(Debug, Default)]
pub struct MemoryRefreshStore {
    state: Mutex<Tokens>,
}

#[derive(Debug, Default)]
struct Tokens {
    tokens: HashMap<RefreshTokenHash, Stored>,
    families: HashMap<FamilyId, HashSet<RefreshTokenHash>>,
    sessions: HashMap<(String, String), HashSet<FamilyId>>,
}

#[derive(Debug, Clone)]
struct Stored {
    record: RefreshRecord,
    /// Consumed by a rotation, or revoked with its family for reuse: presenting it again is
    /// reuse.
    spent: bool,
}

impl Tokens {
    fn live(&self, token: &RefreshTokenHash, now: SystemTime) -> Option<&Stored> {
        self.tokens.get(token).filter(|stored| now < stored.record.expire_time)
    }

    fn store(&mut self, token: &RefreshTokenHash, record: &RefreshRecord) {
        self.tokens.insert(token.clone(), Stored { record: record.clone(), spent: false });
        self.families.entry(record.family.clone()).or_default().insert(token.clone());
    }

    /// Drops every token of `family` and the family itself.
    fn drop_family(&mut self, family: &FamilyId) {
        for token in self.families.remove(family).unwrap_or_default() {
            self.tokens.remove(&token);
        }
    }

    fn revoke_family(&mut self, record: &RefreshRecord) {
        self.drop_family(&record.family);
        if let Some(families) = self.sessions.get_mut(&(record.tenant.clone(), record.session_id.clone())) {
            families.remove(&record.family);
        }
    }

    /// Drops what expired (the memory counterpart of Redis key expiry).
    fn prune(&mut self, now: SystemTime) {
        let expired: Vec<RefreshRecord> = self
            .tokens
            .values()
            .filter(|stored| now >= stored.record.expire_time)
            .map(|stored| stored.record.clone())
            .collect();
        for record in expired {
            self.revoke_family(&record);
        }
    }
}

impl MemoryRefreshStore {
    fn lock(&self) -> MutexGuard<'_, Tokens> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RefreshTokenStore for MemoryRefreshStore {
    fn issue<'a>(
        &'a self,
        token: &'a RefreshTokenHash,
        record: &'a RefreshRecord,
    ) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            let mut tokens = self.lock();
            tokens.prune(SystemTime::now());
            tokens.store(token, record);
            tokens
                .sessions
                .entry((record.tenant.clone(), record.session_id.clone()))
                .or_default()
                .insert(record.family.clone());
            Ok(())
        })
    }

    fn rotate<'a>(
        &'a self,
        token: &'a RefreshTokenHash,
        next: &'a RefreshTokenHash,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Rotation, AuthError>> {
        Box::pin(async move {
            let mut tokens = self.lock();
            let Some(stored) = tokens.live(token, now).cloned() else {
                return Ok(Rotation::Invalid);
            };
            if stored.spent {
                // Every token of the family is kept, spent, until it expires: any of them
                // presented again is reuse again.
                for member in tokens.families.get(&stored.record.family).cloned().unwrap_or_default() {
                    if let Some(member) = tokens.tokens.get_mut(&member) {
                        member.spent = true;
                    }
                }
                return Ok(Rotation::Reused(stored.record));
            }
            if let Some(current) = tokens.tokens.get_mut(token) {
                current.spent = true;
            }
            tokens.store(next, &stored.record);
            Ok(Rotation::Rotated(stored.record))
        })
    }

    fn find<'a>(
        &'a self,
        token: &'a RefreshTokenHash,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Option<RefreshRecord>, AuthError>> {
        Box::pin(async move {
            let tokens = self.lock();
            Ok(tokens.live(token, now).filter(|stored| !stored.spent).map(|stored| stored.record.clone()))
        })
    }

    fn revoke_session<'a>(
        &'a self,
        tenant: &'a str,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<FamilyId>, AuthError>> {
        Box::pin(async move {
            let mut tokens = self.lock();
            let families = tokens.sessions.remove(&(tenant.to_owned(), session_id.to_owned())).unwrap_or_default();
            for family in &families {
                tokens.drop_family(family);
            }
            Ok(families.into_iter().collect())
        })
    }
}
