//! [`RedisFeed`]: the process's ONE Redis pub/sub connection (separate from the bb8 command
//! pool), owned by a task. Subscribe and unsubscribe calls are queued to the task in call
//! order; it keeps the set of wanted channels, sends one SUBSCRIBE per channel, and hands
//! every message to the hub.
//!
//! When the connection drops, or stops answering (every command has a deadline, and the
//! task pings on idle), the task reconnects with exponential backoff and jitter,
//! subscribes to every wanted channel again, and then tells the hub it resumed, so the hub
//! can check each channel against history. Calls made while Redis is unreachable fail at
//! once with `Unavailable` (the caller's stream fails and its client retries) but the
//! channel stays wanted, so a subscriber that is already there keeps its channel.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;

use super::redis::RedisBroker;
use super::{BoxFuture, BrokerError, ChannelKey, LiveFeed, LiveSink};

/// Longest wait for Redis to answer a connect, SUBSCRIBE, UNSUBSCRIBE or PING.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an otherwise quiet connection is pinged, to notice one that stopped answering.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// First reconnect delay; doubles up to [`MAX_BACKOFF`], with jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

type Reply = oneshot::Sender<Result<(), BrokerError>>;

enum Command {
    Subscribe(ChannelKey, Reply),
    Unsubscribe(ChannelKey, Reply),
}

/// The Redis pub/sub [`LiveFeed`].
pub struct RedisFeed {
    // Unbounded on purpose: the hub sends at most one subscribe and one unsubscribe per
    // change of a channel's local interest, so the queue is bounded by the channel count,
    // and an unsubscribe must never be dropped (the channel would stay subscribed).
    commands: mpsc::UnboundedSender<Command>,
    sink: Arc<OnceLock<Arc<dyn LiveSink>>>,
}

impl std::fmt::Debug for RedisFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFeed").finish_non_exhaustive()
    }
}

impl RedisFeed {
    /// Starts the connection task for `client` (it connects in the background; until it
    /// has, subscribe calls fail with `Unavailable`). The task ends when the feed is dropped.
    pub fn start(client: redis::Client) -> Self {
        let (commands, queue) = mpsc::unbounded_channel();
        let sink: Arc<OnceLock<Arc<dyn LiveSink>>> = Arc::new(OnceLock::new());
        tokio::spawn(run(client, queue, sink.clone()));
        Self { commands, sink }
    }

    fn enqueue(&self, command: impl FnOnce(Reply) -> Command) -> BoxFuture<'static, Result<(), BrokerError>> {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.send(command(reply));
        Box::pin(async move {
            queued.map_err(|_| BrokerError::Unavailable("the pub/sub connection task ended".to_owned()))?;
            answer
                .await
                .unwrap_or_else(|_| Err(BrokerError::Unavailable("the pub/sub connection task ended".to_owned())))
        })
    }
}

impl LiveFeed for RedisFeed {
    fn attach(&self, sink: Arc<dyn LiveSink>) {
        let _ = self.sink.set(sink);
    }

    fn subscribe(&self, channel: &ChannelKey) -> BoxFuture<'static, Result<(), BrokerError>> {
        let channel = channel.clone();
        self.enqueue(|reply| Command::Subscribe(channel, reply))
    }

    fn unsubscribe(&self, channel: &ChannelKey) -> BoxFuture<'static, Result<(), BrokerError>> {
        let channel = channel.clone();
        self.enqueue(|reply| Command::Unsubscribe(channel, reply))
    }
}

/// The connection task: connect, serve commands and messages, reconnect on loss.
async fn run(
    client: redis::Client,
    mut queue: mpsc::UnboundedReceiver<Command>,
    sink: Arc<OnceLock<Arc<dyn LiveSink>>>,
) {
    let mut wanted: HashSet<ChannelKey> = HashSet::new();
    let mut backoff = FIRST_BACKOFF;
    let mut connected_before = false;
    loop {
        let connected = tokio::time::timeout(COMMAND_TIMEOUT, connect(&client, &wanted))
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "connect timed out"))));
        let (mut subscriber, mut messages) = match connected {
            Ok(halves) => halves,
            Err(error) => {
                tracing::warn!(%error, "redis pub/sub connection failed; retrying");
                // Answer calls while waiting, so none hangs on a Redis that is down.
                let delay = tokio::time::sleep(jittered(backoff));
                tokio::pin!(delay);
                loop {
                    tokio::select! {
                        () = &mut delay => break,
                        command = queue.recv() => match command {
                            None => return,
                            Some(command) => refuse_while_down(command, &mut wanted),
                        },
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        if connected_before {
            tracing::info!(channels = wanted.len(), "redis pub/sub reconnected and resubscribed");
            if let Some(sink) = sink.get() {
                sink.resumed();
            }
        }
        connected_before = true;

        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        loop {
            tokio::select! {
                command = queue.recv() => match command {
                    None => return,
                    Some(Command::Subscribe(channel, reply)) => {
                        if wanted.contains(&channel) {
                            let _ = reply.send(Ok(()));
                            continue;
                        }
                        let done = within(subscriber.subscribe(RedisBroker::pubsub_channel(&channel))).await;
                        let lost = done.is_err();
                        if !lost {
                            wanted.insert(channel);
                        }
                        let _ = reply.send(done);
                        if lost {
                            break;
                        }
                    }
                    Some(Command::Unsubscribe(channel, reply)) => {
                        // Forgotten first: even if Redis does not answer, the reconnect will
                        // not subscribe it again.
                        if !wanted.remove(&channel) {
                            let _ = reply.send(Ok(()));
                            continue;
                        }
                        let done = within(subscriber.unsubscribe(RedisBroker::pubsub_channel(&channel))).await;
                        let lost = done.is_err();
                        let _ = reply.send(done);
                        if lost {
                            break;
                        }
                    }
                },
                message = messages.next() => match message {
                    Some(message) => deliver(&sink, &message),
                    None => break,
                },
                _ = ping.tick() => {
                    if within(subscriber.ping::<redis::Value>()).await.is_err() {
                        break;
                    }
                }
            }
        }
        tracing::warn!("redis pub/sub connection lost; reconnecting");
        if let Some(sink) = sink.get() {
            sink.interrupted();
        }
    }
}

/// Runs a pub/sub command with [`COMMAND_TIMEOUT`]; a timeout counts as a lost connection.
async fn within<T>(command: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, BrokerError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(BrokerError::Unavailable(error.to_string())),
        Err(_) => Err(BrokerError::Unavailable("redis did not answer in time".to_owned())),
    }
}

/// Opens the connection and subscribes to every wanted channel.
async fn connect(
    client: &redis::Client,
    wanted: &HashSet<ChannelKey>,
) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
    let pubsub = client.get_async_pubsub().await?;
    let (mut subscriber, messages) = pubsub.split();
    if !wanted.is_empty() {
        let names: Vec<String> = wanted.iter().map(RedisBroker::pubsub_channel).collect();
        subscriber.subscribe(names).await?;
    }
    Ok((subscriber, messages))
}

fn refuse_while_down(command: Command, wanted: &mut HashSet<ChannelKey>) {
    match command {
        Command::Subscribe(_, reply) => {
            let _ = reply.send(Err(BrokerError::Unavailable("redis pub/sub is reconnecting".to_owned())));
        }
        Command::Unsubscribe(channel, reply) => {
            wanted.remove(&channel);
            let _ = reply.send(Ok(()));
        }
    }
}

fn deliver(sink: &OnceLock<Arc<dyn LiveSink>>, message: &redis::Msg) {
    let Some(sink) = sink.get() else {
        return;
    };
    let Some(channel) = RedisBroker::channel_from_pubsub(message.get_channel_name()) else {
        tracing::warn!(channel = message.get_channel_name(), "message on an unexpected pub/sub channel");
        return;
    };
    match RedisBroker::decode_message(channel, message.get_payload_bytes()) {
        Some(publication) => sink.deliver(publication),
        None => tracing::warn!(channel = message.get_channel_name(), "undecodable pub/sub message"),
    }
}

fn jittered(delay: Duration) -> Duration {
    let factor = rand::thread_rng().gen_range(0.5..1.5);
    delay.mul_f64(factor)
}
