//! [`FeedName`]: a tenant's feeds, `global` and `actors/{actor_id}`, which are also the
//! tenant-relative channel names of the feed log.

use std::fmt;

use mesh_core::FieldViolation;
use mesh_core::auth::is_valid_principal_id;
use mesh_core::broker::{ChannelKey, ChannelName};

/// Name of the tenant-wide feed.
const GLOBAL: &str = "global";
/// Prefix of an actor's feed.
const ACTORS: &str = "actors/";

/// One feed of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FeedName {
    /// Every activity of the tenant.
    Global,
    /// The activities of one actor (a user id).
    Actor(String),
}

impl FeedName {
    /// Reads request field `field`: `global` or `actors/{actor_id}` with a valid user id.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        if raw == GLOBAL {
            return Ok(Self::Global);
        }
        match raw.strip_prefix(ACTORS) {
            Some(actor) if is_valid_principal_id(actor) => Ok(Self::Actor(actor.to_owned())),
            _ => Err(FieldViolation::new(field, "must be `global` or `actors/{actor_id}` with a valid user id")),
        }
    }

    /// How many of the newest activities the feed's read model keeps (1,000 for `global`,
    /// 100 for an actor's).
    pub fn capacity(&self) -> usize {
        match self {
            Self::Global => 1000,
            Self::Actor(_) => 100,
        }
    }

    /// The feed of `actor`.
    pub fn actor(actor: &str) -> Self {
        Self::Actor(actor.to_owned())
    }

    /// The feed's channel in `tenant`.
    pub fn channel(&self, tenant: &str) -> Result<ChannelKey, FieldViolation> {
        let name = ChannelName::parse(&self.to_string(), "feed")?;
        ChannelKey::new(tenant, name)
    }

    /// The feed of a channel of the feed log, if it is one.
    pub fn of_channel(channel: &ChannelKey) -> Option<Self> {
        Self::parse(channel.name().as_str(), "channel").ok()
    }
}

impl fmt::Display for FeedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str(GLOBAL),
            Self::Actor(actor) => write!(f, "{ACTORS}{actor}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_and_actor_feeds_parse_and_print_back() {
        for raw in ["global", "actors/alice", "actors/u-1.b_2"] {
            assert_eq!(FeedName::parse(raw, "feed").unwrap().to_string(), raw);
        }
        assert_eq!(FeedName::parse("actors/alice", "feed").unwrap(), FeedName::actor("alice"));
    }

    #[test]
    fn anything_else_is_a_violation_of_the_field() {
        for raw in ["", "Global", "actors/", "actors/../x", "actors/a/b", "users/alice", "global/x", "actors/-x"] {
            assert_eq!(FeedName::parse(raw, "channels[1].channel").unwrap_err().field, "channels[1].channel", "{raw}");
        }
    }

    #[test]
    fn a_feed_is_a_channel_of_its_tenant_and_back() {
        let channel = FeedName::actor("alice").channel("acme").unwrap();
        assert_eq!(channel.full(), "acme/actors/alice");
        assert_eq!(FeedName::of_channel(&channel), Some(FeedName::actor("alice")));
    }
}
