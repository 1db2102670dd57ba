//! How a session's changes travel on the broker: each session has the channel
//! `sessions/<id>` of its tenant ([`channel_of`]), and each change is one publication whose
//! payload is a small JSON object. Both stores write the same shape (the Redis store from its
//! Lua scripts, the memory store through [`encode_change`]) and [`decode_change`] reads it:
//!
//! ```json
//! {"kind":"UPDATED","at":1700000000123,"user":"alice","version":3,
//!  "attributes":"{\"theme\":\"dark\"}","create":1700000000000,"update":1700000000123,
//!  "expire":1700003600123,"max_expire":1700028800000}
//! ```
//!
//! Times are milliseconds since the epoch. `attributes` is the attributes' JSON object as a
//! string (as the session hash stores it). DELETED and EXPIRED carry only `kind`, `at`,
//! `user` and `version`. Tenant and session id are the channel's.

use bytes::Bytes;
use mesh_core::broker::{ChannelKey, ChannelName};
use serde::{Deserialize, Serialize};

use super::{from_millis, millis};
use crate::SessionError;
use crate::domain::{Attributes, Session, SessionChange, SessionChangeKind, SessionId, Version};

/// The channel of session `id` of `tenant`: `sessions/<id>`.
pub fn channel_of(tenant: &str, id: &SessionId) -> Result<ChannelKey, SessionError> {
    let name =
        ChannelName::parse(&format!("sessions/{id}"), "session_id").map_err(|v| SessionError::Invalid(vec![v]))?;
    ChannelKey::new(tenant, name).map_err(|v| SessionError::Invalid(vec![v]))
}

#[derive(Serialize, Deserialize)]
struct Wire {
    kind: SessionChangeKind,
    at: i64,
    user: String,
    version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attributes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    create: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    update: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expire: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_expire: Option<i64>,
}

/// The payload of `change`.
pub fn encode_change(change: &SessionChange) -> Bytes {
    let snapshot = change.session.as_ref();
    let wire = Wire {
        kind: change.kind,
        at: millis(change.at),
        user: change.owner.clone(),
        version: change.version.get(),
        attributes: snapshot.map(|s| serde_json::to_string(&s.attributes).expect("attributes serialize")),
        create: snapshot.map(|s| millis(s.create_time)),
        update: snapshot.map(|s| millis(s.update_time)),
        expire: snapshot.map(|s| millis(s.expire_time)),
        max_expire: snapshot.map(|s| millis(s.max_expire_time)),
    };
    Bytes::from(serde_json::to_vec(&wire).expect("a change serializes"))
}

/// Reads the payload of a change published on the channel of session `id` of `tenant`.
pub fn decode_change(tenant: &str, id: &SessionId, payload: &[u8]) -> Result<SessionChange, SessionError> {
    let bad = |what: &str| SessionError::Unavailable(format!("a published session change has a bad {what}"));
    let wire: Wire = serde_json::from_slice(payload).map_err(|_| bad("shape"))?;
    let version = Version::new(wire.version).ok_or_else(|| bad("version"))?;
    let session = if wire.kind.ends_session() {
        None
    } else {
        let attributes = wire.attributes.as_deref().ok_or_else(|| bad("snapshot"))?;
        let attributes: Attributes = serde_json::from_str(attributes).map_err(|_| bad("attributes"))?;
        let time = |ms: Option<i64>| ms.map(from_millis).ok_or_else(|| bad("snapshot"));
        Some(Session {
            id: id.clone(),
            tenant: tenant.to_owned(),
            user: wire.user.clone(),
            attributes,
            version,
            create_time: time(wire.create)?,
            update_time: time(wire.update)?,
            expire_time: time(wire.expire)?,
            max_expire_time: time(wire.max_expire)?,
        })
    };
    Ok(SessionChange {
        kind: wire.kind,
        session_id: id.clone(),
        owner: wire.user,
        version,
        session,
        at: from_millis(wire.at),
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::domain::Lifetimes;

    #[test]
    fn a_change_survives_its_payload() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let value = "a \"quoted\"\nvalue".to_string();
        let attributes = Attributes::parse([("theme".to_string(), value)], "attributes").unwrap();
        let session = Session::create(SessionId::generate(), "t", "u", attributes, now, &Lifetimes::default());
        for kind in SessionChangeKind::ALL {
            let change = SessionChange::of(kind, &session, now);
            let decoded = decode_change("t", &session.id, &encode_change(&change)).unwrap();
            assert_eq!(decoded, change, "{kind}");
        }
    }

    #[test]
    fn a_session_channel_is_named_after_the_session() {
        let id = SessionId::generate();
        assert_eq!(channel_of("acme", &id).unwrap().full(), format!("acme/sessions/{id}"));
    }
}
