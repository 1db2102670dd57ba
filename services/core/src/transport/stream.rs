//! The stream contract in protobuf (`mesh.stream.v1`): conversions between the broker's
//! positions and confirmations and the messages every streaming RPC sends, so each service
//! adapter only wraps them in its own response type.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use mesh_proto::mesh::stream::v1 as pb;
use tokio_stream::Stream;

use crate::FieldViolation;
use crate::broker::subscription::{Confirmation, StreamEvent, Subscription};
use crate::broker::{ChannelKey, Epoch, Position, Publication};

/// How one streaming RPC wraps the stream contract's events in its response message.
pub trait ContractMessages: Unpin {
    /// The RPC's response message.
    type Message;

    /// The confirmation, wrapped.
    fn confirmed(&self, confirmed: pb::SubscriptionConfirmed) -> Self::Message;

    /// A heartbeat, wrapped.
    fn heartbeat(&self, heartbeat: pb::Heartbeat) -> Self::Message;

    /// A publication as the RPC's message, and whether it is the stream's last (the stream
    /// then ends OK after it); an error ends the stream with it.
    fn publication(&mut self, publication: &Publication) -> Result<(Self::Message, bool), tonic::Status>;
}

/// A subscription as a gRPC response stream: confirmation, publications and heartbeats as
/// `M` wraps them; a subscription error ends it with that status.
pub struct ContractStream<M> {
    inner: Subscription,
    messages: M,
    heartbeat_interval: Duration,
    done: bool,
}

impl<M> ContractStream<M> {
    /// Sends `inner`'s events through `messages`; `heartbeat_interval` is announced in the
    /// confirmation.
    pub fn new(inner: Subscription, messages: M, heartbeat_interval: Duration) -> Self {
        Self { inner, messages, heartbeat_interval, done: false }
    }
}

impl<M: ContractMessages> Stream for ContractStream<M> {
    type Item = Result<M::Message, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let event = match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => {
                this.done = true;
                return Poll::Ready(Some(Err(tonic::Status::from(error))));
            }
            Poll::Ready(Some(Ok(event))) => event,
        };
        let message = match event {
            StreamEvent::Confirmed(confirmation) => {
                this.messages.confirmed(confirmed(&confirmation, this.heartbeat_interval))
            }
            StreamEvent::Heartbeat => this.messages.heartbeat(heartbeat()),
            StreamEvent::Publication(publication) => match this.messages.publication(&publication) {
                Ok((message, last)) => {
                    this.done = last;
                    message
                }
                Err(status) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
            },
        };
        Poll::Ready(Some(Ok(message)))
    }
}

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

/// A protobuf timestamp as a time (before the epoch, or malformed, counts as the epoch).
pub fn system_time(timestamp: prost_types::Timestamp) -> SystemTime {
    let seconds = u64::try_from(timestamp.seconds).unwrap_or(0);
    let nanos = u32::try_from(timestamp.nanos).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos)
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
