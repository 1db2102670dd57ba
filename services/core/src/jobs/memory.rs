//! [`MemoryJobQueue`]: the in-process job queue of the embedded default and the test
//! double. It keeps the semantics of the Redis implementation (groups, visibility timeout
//! and reclaim, backoff, dead letters) on `tokio::time`, but nothing survives the process.
//!
//! Each queue is a log of entries with increasing sequence numbers, like a Redis stream;
//! each group has a cursor into it, its in-flight entries and its retries waiting for their
//! backoff. A retry that is due is appended to the log again, addressed to its group only.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::names::{check_group_name, check_member_names};
use super::{
    BoxFuture, DeadLetter, Delivery, FailOutcome, Job, JobError, JobId, JobQueue, JobQueueSettings, QueueName,
    QueueStats,
};

/// The in-process [`JobQueue`].
#[derive(Debug, Default)]
pub struct MemoryJobQueue {
    settings: JobQueueSettings,
    queues: Mutex<HashMap<QueueName, QueueState>>,
    /// Woken on every enqueue, so blocked claims return at once.
    enqueued: Notify,
}

impl MemoryJobQueue {
    /// An empty queue set with `settings`.
    pub fn new(settings: JobQueueSettings) -> Self {
        Self { settings, ..Self::default() }
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<QueueName, QueueState>> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the queue, so a poisoned lock is used as is.
        self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn claim_now(&self, queue: &QueueName, group: &str, consumer: &str, max: usize) -> Vec<Delivery> {
        let now = Instant::now();
        let mut queues = self.queues();
        let state = queues.entry(queue.clone()).or_default();
        let claimed = state.claim(queue, group, consumer, max, now, &self.settings);
        state.trim();
        claimed
    }
}

impl JobQueue for MemoryJobQueue {
    fn enqueue<'a>(
        &'a self,
        queue: &'a QueueName,
        id: &'a JobId,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            if payload.len() > self.settings.max_payload {
                return Err(JobError::PayloadTooLarge { size: payload.len(), limit: self.settings.max_payload });
            }
            let entry = Entry {
                seq: 0,
                id: id.clone(),
                payload,
                attempt: 1,
                enqueued_at: SystemTime::now(),
                last_error: None,
                only_group: None,
            };
            self.queues().entry(queue.clone()).or_default().append(entry);
            self.enqueued.notify_waiters();
            Ok(())
        })
    }

    fn claim<'a>(
        &'a self,
        queue: &'a QueueName,
        group: &'a str,
        consumer: &'a str,
        max: usize,
        block_for: Duration,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, JobError>> {
        Box::pin(async move {
            check_member_names(group, consumer)?;
            if max == 0 {
                return Ok(Vec::new());
            }
            let deadline = Instant::now() + block_for;
            loop {
                // Registered before looking, so an enqueue in between still wakes us.
                let enqueued = self.enqueued.notified();
                tokio::pin!(enqueued);
                enqueued.as_mut().enable();
                let claimed = self.claim_now(queue, group, consumer, max);
                let now = Instant::now();
                if !claimed.is_empty() || now >= deadline {
                    return Ok(claimed);
                }
                // Retries and reclaims fall due without a wake-up: look again at least
                // every poll interval.
                let _ = tokio::time::timeout((deadline - now).min(self.settings.poll_interval), enqueued).await;
            }
        })
    }

    fn create_group<'a>(&'a self, queue: &'a QueueName, group: &'a str) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            check_group_name(group)?;
            let mut queues = self.queues();
            let state = queues.entry(queue.clone()).or_default();
            let start = state.first_seq();
            state.groups.entry(group.to_owned()).or_insert_with(|| GroupState { cursor: start, ..Default::default() });
            Ok(())
        })
    }

    fn ack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), JobError>> {
        self.ack_all(std::slice::from_ref(delivery))
    }

    fn ack_all<'a>(&'a self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let mut queues = self.queues();
            let mut acked = HashSet::new();
            for delivery in deliveries {
                let Ok(seq) = delivery.entry.parse::<u64>() else { continue };
                let Some(state) = queues.get_mut(&delivery.job.queue) else { continue };
                if let Some(group) = state.groups.get_mut(&delivery.group) {
                    group.in_flight.remove(&seq);
                }
                acked.insert(&delivery.job.queue);
            }
            // Trimmed once per queue, as the Redis script does.
            for queue in acked {
                if let Some(state) = queues.get_mut(queue) {
                    state.trim();
                }
            }
            Ok(())
        })
    }

    fn fail<'a>(&'a self, delivery: &'a Delivery, error: String) -> BoxFuture<'a, Result<FailOutcome, JobError>> {
        Box::pin(async move {
            let Ok(seq) = delivery.entry.parse::<u64>() else { return Ok(FailOutcome::Stale) };
            let mut queues = self.queues();
            let Some(state) = queues.get_mut(&delivery.job.queue) else { return Ok(FailOutcome::Stale) };
            let Some(group) = state.groups.get_mut(&delivery.group) else { return Ok(FailOutcome::Stale) };
            match group.in_flight.get(&seq) {
                Some(in_flight)
                    if in_flight.consumer == delivery.consumer && in_flight.deliveries == delivery.number => {}
                _ => return Ok(FailOutcome::Stale),
            }
            group.in_flight.remove(&seq);
            let job = &delivery.job;
            let outcome = if job.attempt >= self.settings.attempts() {
                state.dead.push(dead_letter(job.clone(), &delivery.group, error));
                FailOutcome::DeadLettered
            } else {
                let delay = self.settings.backoff_delay(job.attempt);
                let retry = Retry {
                    id: job.id.clone(),
                    payload: job.payload.clone(),
                    attempt: job.attempt + 1,
                    enqueued_at: job.enqueued_at,
                    last_error: error,
                };
                group.retrying.insert((Instant::now() + delay, seq), retry);
                FailOutcome::Retrying { next_attempt: job.attempt + 1, delay }
            };
            state.trim();
            Ok(outcome)
        })
    }

    fn dead_letters<'a>(
        &'a self,
        queue: &'a QueueName,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, JobError>> {
        Box::pin(async move {
            let queues = self.queues();
            let dead = queues.get(queue).map(|state| state.dead.iter().take(limit).cloned().collect());
            Ok(dead.unwrap_or_default())
        })
    }

    fn stats<'a>(&'a self, queue: &'a QueueName, group: &'a str) -> BoxFuture<'a, Result<QueueStats, JobError>> {
        Box::pin(async move {
            check_group_name(group)?;
            let queues = self.queues();
            Ok(queues.get(queue).map(|state| state.stats(group)).unwrap_or_default())
        })
    }
}

/// One queue: its log, its groups, its dead letters.
#[derive(Debug, Default)]
struct QueueState {
    /// Entries still needed by some group; `entries[i].seq == first seq + i`.
    entries: VecDeque<Entry>,
    /// Sequence number of the last appended entry (0: none yet).
    last_seq: u64,
    groups: HashMap<String, GroupState>,
    dead: Vec<DeadLetter>,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    id: JobId,
    payload: Bytes,
    /// The attempt its first delivery from this entry is.
    attempt: u32,
    enqueued_at: SystemTime,
    last_error: Option<String>,
    /// Set on retries: only this group receives the entry.
    only_group: Option<String>,
}

#[derive(Debug, Default)]
struct GroupState {
    /// Next sequence number to deliver.
    cursor: u64,
    /// Delivered entries neither acked nor failed, by sequence number.
    in_flight: BTreeMap<u64, InFlight>,
    /// Failed jobs by (due time, sequence number of the failed entry).
    retrying: BTreeMap<(Instant, u64), Retry>,
}

#[derive(Debug)]
struct InFlight {
    consumer: String,
    claimed_at: Instant,
    /// Deliveries of this entry so far (1 + reclaims).
    deliveries: u32,
}

#[derive(Debug)]
struct Retry {
    id: JobId,
    payload: Bytes,
    attempt: u32,
    enqueued_at: SystemTime,
    last_error: String,
}

impl QueueState {
    fn append(&mut self, mut entry: Entry) {
        self.last_seq += 1;
        entry.seq = self.last_seq;
        self.entries.push_back(entry);
    }

    /// The sequence number of the oldest entry held (the next one when none is).
    fn first_seq(&self) -> u64 {
        self.last_seq + 1 - self.entries.len() as u64
    }

    fn entry(&self, seq: u64) -> Option<&Entry> {
        let first = self.entries.front()?.seq;
        self.entries.get(usize::try_from(seq.checked_sub(first)?).ok()?)
    }

    fn claim(
        &mut self,
        queue: &QueueName,
        group_name: &str,
        consumer: &str,
        max: usize,
        now: Instant,
        settings: &JobQueueSettings,
    ) -> Vec<Delivery> {
        // The group is taken out of the map while the log is changed, and put back.
        let start = self.first_seq();
        let mut group = self.groups.remove(group_name).unwrap_or(GroupState { cursor: start, ..Default::default() });
        let mut claimed = Vec::new();

        // 1. Retries whose backoff elapsed go back into the log, for this group only.
        let due: Vec<(Instant, u64)> = group.retrying.range(..=(now, u64::MAX)).map(|(key, _)| *key).collect();
        for retry in due.into_iter().filter_map(|key| group.retrying.remove(&key)) {
            self.append(Entry {
                seq: 0,
                id: retry.id,
                payload: retry.payload,
                attempt: retry.attempt,
                enqueued_at: retry.enqueued_at,
                last_error: Some(retry.last_error),
                only_group: Some(group_name.to_owned()),
            });
        }

        // 2. Deliveries of crashed or stalled consumers, oldest first, as their next
        //    attempt; one beyond the last attempt is dead-lettered instead.
        let expired: Vec<u64> = group
            .in_flight
            .iter()
            .filter(|(_, in_flight)| now.duration_since(in_flight.claimed_at) >= settings.visibility_timeout)
            .map(|(seq, _)| *seq)
            .take(max)
            .collect();
        for seq in expired {
            let (Some(entry), Some(in_flight)) = (self.entry(seq), group.in_flight.get_mut(&seq)) else { continue };
            in_flight.deliveries += 1;
            in_flight.consumer = consumer.to_owned();
            in_flight.claimed_at = now;
            let attempt = entry.attempt + in_flight.deliveries - 1;
            if attempt > settings.attempts() {
                let lost = attempt - 1;
                let error = format!("attempt {lost} was not acknowledged within the visibility timeout");
                let letter = dead_letter(entry.job(queue, lost), group_name, error);
                self.dead.push(letter);
                group.in_flight.remove(&seq);
                continue;
            }
            claimed.push(delivery(entry.job(queue, attempt), group_name, consumer, seq, in_flight.deliveries));
        }

        // 3. New entries, in order; retries addressed to another group are skipped.
        while claimed.len() < max && group.cursor <= self.last_seq {
            let seq = group.cursor;
            group.cursor += 1;
            let Some(entry) = self.entry(seq) else { continue };
            if entry.only_group.as_deref().is_some_and(|only| only != group_name) {
                continue;
            }
            group.in_flight.insert(seq, InFlight { consumer: consumer.to_owned(), claimed_at: now, deliveries: 1 });
            claimed.push(delivery(entry.job(queue, entry.attempt), group_name, consumer, seq, 1));
        }

        self.groups.insert(group_name.to_owned(), group);
        claimed
    }

    /// Drops the entries every group is done with (below each group's oldest in-flight
    /// entry and its cursor).
    fn trim(&mut self) {
        let Some(keep_from) = self
            .groups
            .values()
            .map(|group| group.in_flight.keys().next().copied().unwrap_or(group.cursor).min(group.cursor))
            .min()
        else {
            return;
        };
        while self.entries.front().is_some_and(|entry| entry.seq < keep_from) {
            self.entries.pop_front();
        }
    }

    fn stats(&self, group_name: &str) -> QueueStats {
        let Some(group) = self.groups.get(group_name) else {
            let oldest =
                self.entries.iter().filter(|entry| entry.only_group.is_none()).map(|entry| entry.enqueued_at).min();
            let ready = self.entries.iter().filter(|entry| entry.only_group.is_none()).count() as u64;
            return QueueStats {
                ready,
                oldest_age: age(oldest),
                dead: self.dead.len() as u64,
                ..QueueStats::default()
            };
        };
        let ready_entries = self
            .entries
            .iter()
            .filter(|entry| entry.seq >= group.cursor)
            .filter(|entry| entry.only_group.as_deref().is_none_or(|only| only == group_name));
        let in_flight_entries = group.in_flight.keys().filter_map(|seq| self.entry(*seq));
        let oldest = ready_entries
            .clone()
            .chain(in_flight_entries)
            .map(|entry| entry.enqueued_at)
            .chain(group.retrying.values().map(|retry| retry.enqueued_at))
            .min();
        QueueStats {
            ready: ready_entries.count() as u64,
            in_flight: group.in_flight.len() as u64,
            retrying: group.retrying.len() as u64,
            oldest_age: age(oldest),
            dead: self.dead.len() as u64,
        }
    }
}

impl Entry {
    fn job(&self, queue: &QueueName, attempt: u32) -> Job {
        Job {
            id: self.id.clone(),
            queue: queue.clone(),
            payload: self.payload.clone(),
            attempt,
            enqueued_at: self.enqueued_at,
            last_error: self.last_error.clone(),
        }
    }
}

fn delivery(job: Job, group: &str, consumer: &str, seq: u64, number: u32) -> Delivery {
    Delivery { job, group: group.to_owned(), consumer: consumer.to_owned(), entry: seq.to_string(), number }
}

fn dead_letter(job: Job, group: &str, error: String) -> DeadLetter {
    // The last error is `error`; the job's own `last_error` would be the one before.
    let job = Job { last_error: None, ..job };
    DeadLetter { job, group: group.to_owned(), error, dead_at: SystemTime::now() }
}

fn age(oldest: Option<SystemTime>) -> Option<Duration> {
    oldest.map(|at| SystemTime::now().duration_since(at).unwrap_or_default())
}
