//! [`AuditEvent`]: one entry of the audit trail, written for every change of a session.
//!
//! It travels through the job queue as JSON (the job id is its `event_id`) and is stored by
//! an audit sink, which ignores an event whose id it already holds. The JSON shape is a
//! contract with everything that produces or reads events (the store's scripts, the sinks,
//! tools), so it is spelled out here:
//!
//! ```json
//! {"event_id":"mT3v2bQ9x0a1Yc4dE5f6gw","tenant":"acme","user":"alice",
//!  "session_id":"Zx8bV7cN6mL5kJ4hG3fD2w","kind":"UPDATED","version":3,
//!  "occurred_at":"2025-01-31T12:00:00.123456Z","attributes":{"theme":"dark"}}
//! ```
//!
//! `kind` is the UPPER_SNAKE change kind; `occurred_at` is RFC 3339 in UTC with microsecond
//! precision (what PostgreSQL keeps); `attributes` is the snapshot after the change and may
//! be absent or `null`. Unknown fields are ignored when reading.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Attributes, Session, SessionChangeKind, SessionId, Version};

/// One change of one session, as the audit trail keeps it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique id of the event; sinks are idempotent on it and it is the job id in the queue
    /// (at most 128 printable bytes without whitespace).
    pub event_id: String,
    /// Tenant of the session.
    pub tenant: String,
    /// Owner of the session.
    pub user: String,
    /// The changed session.
    pub session_id: SessionId,
    /// What happened.
    pub kind: SessionChangeKind,
    /// The session's version after the change (the last one for DELETED and EXPIRED).
    pub version: Version,
    /// When it happened (server clock), kept to the microsecond.
    #[serde(with = "rfc3339_micros")]
    pub occurred_at: SystemTime,
    /// The attributes after the change, when the event carries them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
}

impl AuditEvent {
    /// The event for a change of `kind` to `session` at `occurred_at`, with a new id
    /// ([`new_id`](Self::new_id)).
    /// CREATED and UPDATED carry the attributes (they set them); TOUCHED, DELETED and EXPIRED
    /// do not (nothing in them changed). `occurred_at` is cut to the microsecond.
    pub fn of(kind: SessionChangeKind, session: &Session, occurred_at: SystemTime) -> Self {
        let carries_attributes = matches!(kind, SessionChangeKind::Created | SessionChangeKind::Updated);
        Self {
            event_id: Self::new_id(kind, &session.id),
            tenant: session.tenant.clone(),
            user: session.user.clone(),
            session_id: session.id.clone(),
            kind,
            version: session.version,
            occurred_at: truncate_to_micros(occurred_at),
            attributes: carries_attributes.then(|| session.attributes.clone()),
        }
    }

    /// The id of a new event of `kind` for session `id`: random, except for EXPIRED, which
    /// is `<id>.expired` (a session expires once, so a repeated expiry is the same event).
    pub fn new_id(kind: SessionChangeKind, id: &SessionId) -> String {
        match kind {
            SessionChangeKind::Expired => format!("{id}.expired"),
            _ => mesh_core::auth::random_id(),
        }
    }

    /// The event as JSON bytes (the job payload).
    pub fn to_json(&self) -> Vec<u8> {
        // Every field serializes infallibly: strings, integers and a string map.
        serde_json::to_vec(self).expect("an audit event always serializes")
    }

    /// Reads an event from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// `time` without its sub-microsecond part (times before the epoch become the epoch).
pub(crate) fn truncate_to_micros(time: SystemTime) -> SystemTime {
    let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::new(since_epoch.as_secs(), since_epoch.subsec_micros() * 1000)
}

/// Serde of a `SystemTime` as an RFC 3339 UTC string with six fractional digits.
mod rfc3339_micros {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_micros(super::truncate_to_micros(*time)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        let time = humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)?;
        Ok(super::truncate_to_micros(time))
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::Lifetimes;

    use super::*;

    fn session() -> Session {
        let attributes = Attributes::parse([("theme".to_string(), "dark".to_string())], "attributes").unwrap();
        let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_738_324_800);
        Session::create(SessionId::generate(), "acme", "alice", attributes, created, &Lifetimes::default())
    }

    #[test]
    fn events_of_one_change_get_distinct_ids() {
        let session = session();
        let now = SystemTime::now();
        let first = AuditEvent::of(SessionChangeKind::Created, &session, now);
        let second = AuditEvent::of(SessionChangeKind::Created, &session, now);
        assert_ne!(first.event_id, second.event_id);
    }

    #[test]
    fn only_created_and_updated_carry_the_attributes() {
        let session = session();
        let now = SystemTime::now();
        for kind in SessionChangeKind::ALL {
            let event = AuditEvent::of(kind, &session, now);
            let carries = matches!(kind, SessionChangeKind::Created | SessionChangeKind::Updated);
            assert_eq!(event.attributes.is_some(), carries, "{kind}");
            assert_eq!(event.version, session.version);
        }
    }

    #[test]
    fn the_json_shape_is_the_documented_one() {
        let session = session();
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_738_324_800, 123_456_789);
        let event = AuditEvent { event_id: "evt-1".into(), ..AuditEvent::of(SessionChangeKind::Updated, &session, at) };
        let json: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "event_id": "evt-1",
                "tenant": "acme",
                "user": "alice",
                "session_id": session.id.as_str(),
                "kind": "UPDATED",
                "version": 1,
                "occurred_at": "2025-01-31T12:00:00.123456Z",
                "attributes": {"theme": "dark"},
            })
        );
    }

    #[test]
    fn an_event_survives_a_json_round_trip() {
        let session = session();
        for kind in SessionChangeKind::ALL {
            let event = AuditEvent::of(kind, &session, SystemTime::now());
            assert_eq!(AuditEvent::from_json(&event.to_json()).unwrap(), event);
        }
    }

    #[test]
    fn events_without_attributes_may_say_null_and_unknown_fields_are_ignored() {
        let json = format!(
            r#"{{"event_id":"e","tenant":"t","user":"u","session_id":"{}","kind":"DELETED","version":2,
                "occurred_at":"2025-01-31T12:00:00Z","attributes":null,"added_later":true}}"#,
            SessionId::generate()
        );
        let event = AuditEvent::from_json(json.as_bytes()).unwrap();
        assert_eq!((event.kind, event.version.get(), event.attributes), (SessionChangeKind::Deleted, 2, None));
    }

    #[test]
    fn malformed_events_are_refused() {
        assert!(AuditEvent::from_json(b"{}").is_err());
        assert!(AuditEvent::from_json(b"not json").is_err());
        let bad_version = format!(
            r#"{{"event_id":"e","tenant":"t","user":"u","session_id":"{}","kind":"CREATED","version":0,
                "occurred_at":"2025-01-31T12:00:00Z"}}"#,
            SessionId::generate()
        );
        assert!(AuditEvent::from_json(bad_version.as_bytes()).is_err());
    }
}
