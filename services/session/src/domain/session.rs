//! [`Session`]: a server-side session of one user, with the pure rules of its changes
//! (create, update, touch), and [`SessionChangeKind`]: what a change was.
//!
//! These rules are the reference: the memory store calls them, and the Redis store's Lua
//! scripts must compute the same results.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Attributes, AttributesPatch, ExpectedVersion, Lifetimes, SessionError, SessionId, Version};

/// A session as stored (see `mesh.session.v1.Session`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Server-assigned id.
    pub id: SessionId,
    /// Tenant of the owning user (from the access token).
    pub tenant: String,
    /// Owning user (from the access token).
    pub user: String,
    /// Application data.
    pub attributes: Attributes,
    /// 1 on creation, +1 per attribute change.
    pub version: Version,
    /// When it was created.
    pub create_time: SystemTime,
    /// When the attributes last changed (`create_time` until then).
    pub update_time: SystemTime,
    /// Sliding idle expiry, never past `max_expire_time`.
    pub expire_time: SystemTime,
    /// Absolute expiry: `create_time + max_lifetime`.
    pub max_expire_time: SystemTime,
}

impl Session {
    /// A new session of `user` in `tenant`, created at `now`: version 1, idle expiry at
    /// `now + idle_ttl`, capped at `now + max_lifetime`.
    pub fn create(
        id: SessionId,
        tenant: impl Into<String>,
        user: impl Into<String>,
        attributes: Attributes,
        now: SystemTime,
        lifetimes: &Lifetimes,
    ) -> Self {
        let max_expire_time = lifetimes.max_expire_time(now);
        Self {
            id,
            tenant: tenant.into(),
            user: user.into(),
            attributes,
            version: Version::FIRST,
            create_time: now,
            update_time: now,
            expire_time: lifetimes.idle_expire_time(now, max_expire_time),
            max_expire_time,
        }
    }

    /// Whether the session has ended at `now` (its idle expiry or its cap has passed).
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expire_time || now >= self.max_expire_time
    }

    /// The session after TouchSession at `now`: the idle expiry slides, nothing else changes.
    pub fn touched(mut self, now: SystemTime, lifetimes: &Lifetimes) -> Self {
        self.expire_time = lifetimes.slide(self.expire_time, now, self.max_expire_time);
        self
    }

    /// The session after GetSession at `now`: the idle expiry slides by whole read steps
    /// ([`Lifetimes::slide_on_read`]), nothing else changes.
    pub fn read(mut self, now: SystemTime, lifetimes: &Lifetimes) -> Self {
        self.expire_time = lifetimes.slide_on_read(self.expire_time, now, self.max_expire_time);
        self
    }

    /// The session after UpdateSession at `now`: `expected` must be the current version, the
    /// patch must keep the attributes within their limits; then the version goes up by one,
    /// `update_time` is `now` and the idle expiry slides.
    pub fn updated(
        self,
        expected: ExpectedVersion,
        patch: &AttributesPatch,
        now: SystemTime,
        lifetimes: &Lifetimes,
    ) -> Result<Self, SessionError> {
        expected.check(self.version)?;
        let attributes = patch.apply(&self.attributes)?;
        let mut session = self.touched(now, lifetimes);
        session.attributes = attributes;
        session.version = session.version.next();
        session.update_time = now;
        Ok(session)
    }
}

/// One change of a session as its watchers see it (`mesh.session.v1.SessionChange` without
/// its position, which the channel assigns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionChange {
    /// What happened.
    pub kind: SessionChangeKind,
    /// The changed session.
    pub session_id: SessionId,
    /// Its owner.
    pub owner: String,
    /// The version after the change (the last one for DELETED and EXPIRED).
    pub version: Version,
    /// The session after the change; `None` for DELETED and EXPIRED.
    pub session: Option<Session>,
    /// When the change happened (server clock, to the millisecond).
    pub at: SystemTime,
}

impl SessionChange {
    /// The change of `kind` to `session` at `at`; DELETED and EXPIRED carry no snapshot.
    pub fn of(kind: SessionChangeKind, session: &Session, at: SystemTime) -> Self {
        Self {
            kind,
            session_id: session.id.clone(),
            owner: session.user.clone(),
            version: session.version,
            session: (!kind.ends_session()).then(|| session.clone()),
            at,
        }
    }
}

/// What a change of a session was (`mesh.session.v1.SessionChangeKind`). In JSON it is the
/// UPPER_SNAKE name, e.g. `"CREATED"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionChangeKind {
    /// The session was created.
    Created,
    /// Its attributes changed (UpdateSession).
    Updated,
    /// Its idle expiry was extended (TouchSession).
    Touched,
    /// It was ended (DeleteSession, logout, revocation).
    Deleted,
    /// It reached its idle expiry or its cap.
    Expired,
}

impl SessionChangeKind {
    /// Every kind, in the order of the proto enum.
    pub const ALL: [SessionChangeKind; 5] = [Self::Created, Self::Updated, Self::Touched, Self::Deleted, Self::Expired];

    /// The UPPER_SNAKE name, as in JSON and in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Updated => "UPDATED",
            Self::Touched => "TOUCHED",
            Self::Deleted => "DELETED",
            Self::Expired => "EXPIRED",
        }
    }

    /// The kind named `name` (as [`as_str`](Self::as_str) spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Whether the session is gone after this change (DELETED, EXPIRED).
    pub fn ends_session(self) -> bool {
        matches!(self, Self::Deleted | Self::Expired)
    }
}

impl fmt::Display for SessionChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn rules() -> Lifetimes {
        Lifetimes { idle_ttl: Duration::from_secs(60), max_lifetime: Duration::from_secs(600) }
    }

    fn new_session() -> Session {
        let attributes = Attributes::parse([("theme".to_string(), "dark".to_string())], "attributes").unwrap();
        Session::create(SessionId::generate(), "t1", "u1", attributes, at(0), &rules())
    }

    fn patch(set: &[(&str, &str)]) -> AttributesPatch {
        let set = set.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        AttributesPatch::parse(set, "set_attributes", Vec::new(), "remove_attributes").unwrap()
    }

    #[test]
    fn a_new_session_has_version_one_and_both_deadlines() {
        let session = new_session();
        assert_eq!(session.version, Version::FIRST);
        assert_eq!((session.create_time, session.update_time), (at(0), at(0)));
        assert_eq!((session.expire_time, session.max_expire_time), (at(60), at(600)));
    }

    #[test]
    fn a_session_is_expired_from_its_expire_time_on() {
        let session = new_session();
        assert!(!session.is_expired(at(59)));
        assert!(session.is_expired(at(60)));
    }

    #[test]
    fn a_touch_slides_the_expiry_but_keeps_version_and_update_time() {
        let touched = new_session().touched(at(50), &rules());
        assert_eq!(touched.expire_time, at(110));
        assert_eq!(touched.version, Version::FIRST);
        assert_eq!(touched.update_time, at(0));
    }

    #[test]
    fn an_update_bumps_the_version_and_slides_the_expiry() {
        let expected = ExpectedVersion::from(Version::FIRST);
        let updated = new_session().updated(expected, &patch(&[("theme", "light")]), at(30), &rules()).unwrap();
        assert_eq!(updated.version.get(), 2);
        assert_eq!(updated.update_time, at(30));
        assert_eq!(updated.expire_time, at(90));
        assert_eq!(updated.attributes.get("theme"), Some("light"));
    }

    #[test]
    fn an_update_with_a_stale_version_changes_nothing() {
        let stale = ExpectedVersion::parse(7, "expected_version").unwrap();
        let error = new_session().updated(stale, &patch(&[("theme", "light")]), at(30), &rules()).unwrap_err();
        assert!(matches!(error, SessionError::VersionConflict { current } if current == Version::FIRST));
    }

    #[test]
    fn an_update_breaking_a_limit_is_invalid() {
        let big = "v".repeat(4000);
        let mut session = new_session();
        for n in 0..4 {
            let expected = ExpectedVersion::from(session.version);
            session = session.updated(expected, &patch(&[(&format!("k{n}"), &big)]), at(1), &rules()).unwrap();
        }
        let expected = ExpectedVersion::from(session.version);
        let error = session.updated(expected, &patch(&[("k4", &big)]), at(2), &rules()).unwrap_err();
        assert!(matches!(error, SessionError::Invalid(violations) if violations[0].field == "set_attributes"));
    }

    #[test]
    fn change_kinds_are_upper_snake_names() {
        for kind in SessionChangeKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(SessionChangeKind::from_name(kind.as_str()), Some(kind));
        }
        assert!(SessionChangeKind::Deleted.ends_session() && SessionChangeKind::Expired.ends_session());
        assert!(!SessionChangeKind::Touched.ends_session());
    }
}
