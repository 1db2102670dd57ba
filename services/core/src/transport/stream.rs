//! The stream contract in protobuf (`mesh.stream.v1`): conversions between the broker's
//! positions and confirmations and the messages every streaming RPC sends, so each service
//! adapter only wraps them in its own response type.

use std::time::{Duration, SystemTime};

use mesh_proto::mesh::stream::v1 as pb;

use crate::FieldViolation;
use crate::broker::subscription::Confirmation;
use crate::broker::{ChannelKey, Epoch, Position};

/// `position` as a `mesh.stream.v1.Position`.
pub fn position(position: &Position) -> pb::Position {
    pb::Position { offset: position.offset, epoch: position.epoch.as_str().to_owned() }
}

/// The position of `channel` as a `ChannelPosition` (the tenant-relative channel name).
pub fn channel_position(channel: &ChannelKey, at: &Position) -> pb::ChannelPosition {
    pb::ChannelPosition { channel: channel.name().as_str().to_owned(), position: Some(position(at)) }
}

/// A client's last position (request field `field`): `None` when unset; an empty epoch is
/// INVALID_ARGUMENT.
pub fn last_position(raw: Option<&pb::Position>, field: &str) -> Result<Option<Position>, FieldViolation> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if raw.epoch.is_empty() || raw.epoch.len() > 64 {
        return Err(FieldViolation::new(
            format!("{field}.epoch"),
            "a position's epoch is the 1 to 64 characters the server sent",
        ));
    }
    Ok(Some(Position { offset: raw.offset, epoch: Epoch(raw.epoch.as_str().into()) }))
}

/// The first message of a stream.
pub fn confirmed(confirmation: &Confirmation, heartbeat_interval: Duration) -> pb::SubscriptionConfirmed {
    pb::SubscriptionConfirmed {
        positions: confirmation.positions.iter().map(|(channel, at)| channel_position(channel, at)).collect(),
        recovered: confirmation.recovered,
        unrecovered_channels: confirmation.unrecovered.iter().map(|c| c.name().as_str().to_owned()).collect(),
        heartbeat_interval: Some(duration(heartbeat_interval)),
        recovery_requested: confirmation.recovery_requested,
    }
}

/// A heartbeat stamped with the server's clock.
pub fn heartbeat() -> pb::Heartbeat {
    pb::Heartbeat { server_time: Some(timestamp(SystemTime::now())) }
}

/// `time` as a protobuf timestamp.
pub fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

/// `duration` as a protobuf duration.
pub fn duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(duration).unwrap_or(prost_types::Duration { seconds: i64::MAX, nanos: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_position_round_trips_and_an_empty_epoch_is_refused() {
        let at = Position { offset: 7, epoch: Epoch("e1".into()) };
        assert_eq!(last_position(Some(&position(&at)), "last_position").unwrap(), Some(at));
        assert_eq!(last_position(None, "last_position").unwrap(), None);
        let bad = pb::Position { offset: 1, epoch: String::new() };
        assert_eq!(last_position(Some(&bad), "last_position").unwrap_err().field, "last_position.epoch");
    }
}
