//! [`Revocations`]: the in-process view of revoked credentials that the auth layer checks on
//! every call, and the one way credentials are revoked ([`Revocations::revoke`]).
//!
//! Revoking writes the [`RevocationStore`] (so any instance can look it up), applies it to
//! this process's view at once, and publishes it on the broker: on the tenant's channel
//! `revocations` and on the mesh-wide channel `revocations/all` (what WatchRevocations
//! streams). Every process follows `revocations/all` ([`Revocations::watch`]) and applies
//! what arrives, so a revocation reaches every instance's auth layer in one broker fan-out.
//!
//! The staleness bound. While the view is *live* (its subscription confirmed and caught up,
//! and the hub's feed connected) a call is checked against memory only: a revocation is
//! seen as soon as its publication arrives (milliseconds; the benchmark measures it).
//! Whenever the view is not live (at start-up until the first catch-up, while the feed
//! reconnects, after the subscription ended) the auth layer asks the store instead, so no
//! revocation older than one store round trip is ever missed. A feed whose connection
//! silently stops answering is noticed by its ping (within 10 s); that is the one case in
//! which the bound is the ping deadline rather than the fan-out.
//!
//! After a (re)subscription that could not replay what was missed, the view loads every
//! revocation in force from the store ([`RevocationStore::active`]) before it is live again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use mesh_proto::mesh::auth::v1 as pb;
use prost::Message as _;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::Caller;
use super::revocation::{ActiveRevocation, RevocationStore, Revoked};
use crate::Error;
use crate::broker::hub::Hub;
use crate::broker::subscription::{ChannelRequest, StreamEvent, SubscriptionSettings, subscribe};
use crate::broker::{ChannelKey, ChannelName, Position};
use crate::transport::stream::system_time;

/// Name of each tenant's revocation channel.
pub const TENANT_CHANNEL: &str = "revocations";
/// Name of the mesh-wide revocation channel (every tenant's revocations).
pub const ALL_CHANNEL: &str = "revocations/all";

/// Events the watcher may have waiting before the hub cuts it off (it then resumes from
/// history): revocations come in bursts at most.
const WATCH_QUEUE: usize = 10_000;
/// First pause before the watcher subscribes again; doubles up to [`WATCH_PAUSE_MAX`].
const WATCH_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between the watcher's attempts.
const WATCH_PAUSE_MAX: Duration = Duration::from_secs(2);
/// How often expired entries are dropped from the view (at most).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The channel of `tenant`'s revocations.
pub fn tenant_channel(tenant: &str) -> Result<ChannelKey, Error> {
    let name = ChannelName::parse(TENANT_CHANNEL, "channel").expect("a valid channel name");
    ChannelKey::new(tenant, name).map_err(|violation| Error::invalid_argument(vec![violation]))
}

/// The mesh-wide channel of every tenant's revocations.
pub fn all_channel() -> ChannelKey {
    ChannelKey::mesh_wide(ChannelName::parse(ALL_CHANNEL, "channel").expect("a valid channel name"))
}

/// What a process knows to be revoked, and whether it can trust that knowledge alone.
pub struct Revocations {
    store: Arc<dyn RevocationStore>,
    hub: Hub,
    view: RwLock<View>,
    live: AtomicBool,
}

#[derive(Default)]
struct View {
    tenants: HashMap<Box<str>, TenantView>,
    pruned: Option<SystemTime>,
}

#[derive(Default)]
struct TenantView {
    sessions: HashMap<Box<str>, SystemTime>,
    tokens: HashMap<Box<str>, SystemTime>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").field("live", &self.is_live()).finish_non_exhaustive()
    }
}

impl Revocations {
    /// A view over `store`, fed through `hub` once [`watch`](Self::watch) runs; not live
    /// until then (every check asks the store).
    pub fn new(store: Arc<dyn RevocationStore>, hub: Hub) -> Arc<Self> {
        Arc::new(Self { store, hub, view: RwLock::new(View::default()), live: AtomicBool::new(false) })
    }

    /// Whether checks are answered from memory alone.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire) && self.hub.feed_connected()
    }

    /// The answer from memory: `Some(true)` if `caller`'s token is known revoked,
    /// `Some(false)` if it is not and the view is live, `None` if only the store can tell.
    pub fn check_local(&self, caller: &Caller) -> Option<bool> {
        let now = SystemTime::now();
        let view = self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let revoked = view.tenants.get(caller.tenant.as_str()).is_some_and(|tenant| {
            let live = |until: Option<&SystemTime>| until.is_some_and(|until| now < *until);
            live(tenant.tokens.get(caller.token_id.as_str()))
                || caller.session.as_deref().is_some_and(|session| live(tenant.sessions.get(session)))
        });
        drop(view);
        if revoked {
            Some(true)
        } else if self.is_live() {
            Some(false)
        } else {
            None
        }
    }

    /// Whether `caller`'s token may be used: UNAUTHENTICATED (reason `TOKEN_REVOKED`) if its
    /// session or the token itself was revoked, UNAVAILABLE if that cannot be told (the
    /// store is down while the view is not live: fail closed).
    pub async fn check(&self, caller: &Caller) -> Result<(), Error> {
        let revoked = match self.check_local(caller) {
            Some(revoked) => revoked,
            None => self
                .store
                .is_revoked(&caller.tenant, caller.session.as_deref(), &caller.token_id, SystemTime::now())
                .await
                .map_err(|error| {
                    Error::unavailable("REVOCATION_CHECK_UNAVAILABLE", "cannot check the token against revocations")
                        .with_source(anyhow::anyhow!(error))
                })?,
        };
        if revoked { Err(revoked_error()) } else { Ok(()) }
    }

    /// Revokes what `revocation` names (its `tenant_id`, `session_ids`, `token_ids`, until
    /// its `expire_time`): in the store, in this process's view, then published on the
    /// tenant's channel and the mesh-wide one. Returns the position on the tenant's
    /// channel. UNAVAILABLE if the store or the broker failed; retrying is safe.
    pub async fn revoke(&self, revocation: &pb::Revocation) -> Result<Position, Error> {
        let tenant = revocation.tenant_id.as_str();
        let until = revocation.expire_time.map(system_time).unwrap_or_else(SystemTime::now);
        let revoked = revoked_items(revocation);
        self.store.revoke(tenant, &revoked, until).await.map_err(|error| {
            Error::unavailable("BACKEND_UNAVAILABLE", "the revocation store is unavailable")
                .with_source(anyhow::anyhow!(error))
        })?;
        self.apply(tenant, &revoked, until);
        let payload = bytes::Bytes::from(revocation.encode_to_vec());
        let broker = self.hub.broker();
        // The mesh-wide channel first: it is the one every auth layer follows.
        broker.publish(&all_channel(), payload.clone()).await?;
        Ok(broker.publish(&tenant_channel(tenant)?, payload).await?)
    }

    /// Revokes every access token of `sessions` of `user` in `tenant` for `reason`, for
    /// `hold` (the longest an affected token can still verify: the access-token TTL plus
    /// the verification leeway), with the refresh-token `families` ended with them named
    /// in the notice. See [`revoke`](Self::revoke).
    pub async fn revoke_sessions(
        &self,
        tenant: &str,
        user: &str,
        sessions: Vec<String>,
        families: Vec<String>,
        reason: pb::RevocationReason,
        hold: Duration,
    ) -> Result<Position, Error> {
        let now = SystemTime::now();
        let revocation = pb::Revocation {
            position: None,
            session_ids: sessions,
            token_ids: Vec::new(),
            refresh_family_ids: families,
            user_id: user.to_owned(),
            reason: reason.into(),
            revoke_time: Some(crate::transport::stream::timestamp(now)),
            expire_time: Some(crate::transport::stream::timestamp(now + hold)),
            tenant_id: tenant.to_owned(),
        };
        self.revoke(&revocation).await
    }

    /// Adds revocations to this process's view.
    pub fn apply(&self, tenant: &str, revoked: &[Revoked], until: SystemTime) {
        let now = SystemTime::now();
        if until <= now {
            return;
        }
        let mut view = self.view.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if view.pruned.is_none_or(|at| now.duration_since(at).unwrap_or_default() >= PRUNE_EVERY) {
            view.prune(now);
        }
        let entry = view.tenants.entry(tenant.into()).or_default();
        for revoked in revoked {
            let (map, id) = match revoked {
                Revoked::Session(id) => (&mut entry.sessions, id),
                Revoked::Token(id) => (&mut entry.tokens, id),
            };
            let at = map.entry(id.as_str().into()).or_insert(until);
            *at = (*at).max(until);
        }
    }

    /// Follows the mesh-wide revocation channel until `stop`, keeping the view current
    /// and live (see the module documentation). Runs as one background task per process.
    pub async fn watch(self: Arc<Self>, settings: SubscriptionSettings, stop: CancellationToken) {
        let settings = SubscriptionSettings { queue_capacity: WATCH_QUEUE, ..settings };
        let mut since = None;
        let mut pause = WATCH_PAUSE;
        loop {
            let ended = tokio::select! {
                () = stop.cancelled() => return,
                ended = self.follow(&settings, &mut since) => ended,
            };
            let was_live = self.live.swap(false, Ordering::AcqRel);
            tracing::warn!(reason = %ended, "revocation feed interrupted: checking tokens against the store meanwhile");
            if was_live {
                pause = WATCH_PAUSE;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(WATCH_PAUSE_MAX);
        }
    }

    /// One subscription: returns why it ended.
    async fn follow(&self, settings: &SubscriptionSettings, since: &mut Option<Position>) -> String {
        let channel = all_channel();
        let request = vec![ChannelRequest { channel, since: since.clone() }];
        let mut subscription = match subscribe(&self.hub, request, settings).await {
            Ok(subscription) => subscription,
            Err(error) => return error.to_string(),
        };
        // Live once what the confirmation says was missed has been applied: the replayed
        // publications follow the confirmation, up to its position.
        let mut catching_up_to: Option<Position> = None;
        while let Some(event) = subscription.next().await {
            match event {
                Err(error) => return error.to_string(),
                Ok(StreamEvent::Confirmed(confirmation)) => {
                    let head = confirmation.positions.first().map(|(_, position)| position.clone());
                    if confirmation.recovered {
                        if since.as_ref() != head.as_ref() {
                            catching_up_to = head;
                        }
                    } else {
                        // Nothing (or not all) was replayed: what is in force comes from
                        // the store; what is published from now on is already queued.
                        match self.store.active(SystemTime::now()).await {
                            Ok(active) => {
                                for ActiveRevocation { tenant, revoked, until } in active {
                                    self.apply(&tenant, std::slice::from_ref(&revoked), until);
                                }
                            }
                            Err(error) => return error.to_string(),
                        }
                        *since = head;
                    }
                    if catching_up_to.is_none() {
                        self.live.store(true, Ordering::Release);
                        tracing::debug!("revocation feed live");
                    }
                }
                Ok(StreamEvent::Publication(publication)) => {
                    match pb::Revocation::decode(publication.payload.as_ref()) {
                        Ok(revocation) => {
                            let until = revocation.expire_time.map(system_time).unwrap_or(SystemTime::UNIX_EPOCH);
                            self.apply(&revocation.tenant_id, &revoked_items(&revocation), until);
                        }
                        Err(error) => tracing::warn!(%error, "undecodable revocation ignored"),
                    }
                    *since = Some(publication.position.clone());
                    if catching_up_to.as_ref().is_some_and(|head| head.is_at_or_before(&publication.position)) {
                        catching_up_to = None;
                        self.live.store(true, Ordering::Release);
                        tracing::debug!("revocation feed caught up and live");
                    }
                }
                Ok(StreamEvent::Heartbeat) => {}
            }
        }
        "the subscription ended".to_owned()
    }
}

impl View {
    fn prune(&mut self, now: SystemTime) {
        self.tenants.retain(|_, tenant| {
            tenant.sessions.retain(|_, until| now < *until);
            tenant.tokens.retain(|_, until| now < *until);
            !tenant.sessions.is_empty() || !tenant.tokens.is_empty()
        });
        self.pruned = Some(now);
    }
}

/// The error of a revoked token.
pub fn revoked_error() -> Error {
    Error::unauthenticated("TOKEN_REVOKED", "the access token was revoked (its session ended)")
}

fn revoked_items(revocation: &pb::Revocation) -> Vec<Revoked> {
    let sessions = revocation.session_ids.iter().map(|id| Revoked::Session(id.clone()));
    sessions.chain(revocation.token_ids.iter().map(|id| Revoked::Token(id.clone()))).collect()
}
