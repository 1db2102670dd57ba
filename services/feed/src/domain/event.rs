//! [`FeedEvent`]: what the feed log carries. Each event is published once on the tenant's
//! `global` channel and once on its actor's channel (same payload, a position in each);
//! Subscribe streams it, and the projectors build the read models from it.
//!
//! The payload is JSON, encoded once by the publisher and shared by every subscriber:
//!
//! ```json
//! {"published":{"id":"...","tenant":"acme","actor":"alice","verb":"post",...}}
//! {"deleted":{"id":"...","actor":"alice","delete_time":1700000000123}}
//! ```

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::activity::millis;
use super::{Activity, ActivityId, FeedError};

/// One event of the feed log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedEvent {
    /// An activity was published.
    Published(Activity),
    /// An activity was deleted.
    Deleted(Tombstone),
}

/// The deletion of an activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The deleted activity.
    pub id: ActivityId,
    /// Its actor (the tombstone goes to the actor's feed too).
    pub actor: String,
    /// When it was deleted (server clock, whole milliseconds).
    #[serde(with = "millis")]
    pub delete_time: SystemTime,
}

impl FeedEvent {
    /// The payload published on the channels.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a feed event serializes")
    }

    /// Reads a published payload; a malformed one is a backend fault.
    pub fn decode(payload: &[u8]) -> Result<Self, FeedError> {
        serde_json::from_slice(payload)
            .map_err(|error| FeedError::Unavailable(format!("a feed event does not decode: {error}")))
    }

    /// The activity the event is about.
    pub fn activity_id(&self) -> &ActivityId {
        match self {
            Self::Published(activity) => &activity.id,
            Self::Deleted(tombstone) => &tombstone.id,
        }
    }

    /// The event's id, unique in its tenant: the activity id for a publication, the
    /// activity id and `:deleted` for its tombstone (an activity is deleted at most once).
    /// Job-queue consumers and the archive are idempotent on it.
    pub fn event_id(&self) -> String {
        match self {
            Self::Published(activity) => activity.id.to_string(),
            Self::Deleted(tombstone) => format!("{}:deleted", tombstone.id),
        }
    }

    /// When it happened: the activity's create time or the tombstone's delete time.
    pub fn time(&self) -> SystemTime {
        match self {
            Self::Published(activity) => activity.create_time,
            Self::Deleted(tombstone) => tombstone.delete_time,
        }
    }

    /// Its actor.
    pub fn actor(&self) -> &str {
        match self {
            Self::Published(activity) => &activity.actor,
            Self::Deleted(tombstone) => &tombstone.actor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewActivity;

    #[test]
    fn events_round_trip_through_their_payload() {
        let new = NewActivity::parse("post", Some(("post", "1")), "hi", []).unwrap();
        let activity = Activity::new(ActivityId::generate(), "acme", "alice", new, SystemTime::now());
        let published = FeedEvent::Published(activity.clone());
        assert_eq!(FeedEvent::decode(&published.encode()).unwrap(), published);
        let deleted = FeedEvent::Deleted(Tombstone {
            id: activity.id.clone(),
            actor: "alice".into(),
            delete_time: crate::domain::activity::to_millis(SystemTime::now()),
        });
        assert_eq!(FeedEvent::decode(&deleted.encode()).unwrap(), deleted);
        assert_eq!((deleted.activity_id(), deleted.actor()), (&activity.id, "alice"));
        assert!(matches!(FeedEvent::decode(b"{}"), Err(FeedError::Unavailable(_))));
    }
}
