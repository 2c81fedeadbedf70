//! Commits, acknowledgements, live fan-out and catch-up from the log.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_protocol::event::EventsFrameBuilder;
use chorus_protocol::frame::features;
use chorus_protocol::{ErrorCode, Frame, PublishAck};
use mio::Token;
use tracing::error;

use crate::capped::{offer_sampled, sample_cached, SampleCache, MAX_CAPPED_READS_PER_TURN};
use crate::conn::{Conn, Delivery};
use crate::moderation::push_entry;
use crate::topics::{Batch, TopicInner, TopicState};
use crate::worker::{PendingAck, Worker, FIRST_CONN};

/// Outcome of committing one topic, for its acknowledgements.
pub(crate) struct Committed {
    pub(crate) result: Result<u64, ()>,
    stream: u64,
}

impl Worker {
    /// Commits every topic appended to in this iteration, hands its batches to the workers with
    /// subscribers, and answers the publishes that waited for the commit.
    ///
    /// With a batching window, a topic waits until its first acknowledgement has waited the
    /// window, so that comments arriving close together share one batch; `batch_due` then
    /// holds the earliest time a waiting topic is due.
    pub(crate) fn commit_dirty_topics(&mut self) {
        let window = Duration::from_micros(self.shared.config.delivery.batch_window_us);
        let dirty: Vec<_> = if window.is_zero() || self.shared.shutdown.load(Ordering::Acquire) {
            self.batch_due = None;
            self.dirty.drain().map(|(_, value)| value).collect()
        } else {
            let now = Instant::now();
            let mut due_ids = Vec::new();
            let mut next_due: Option<Instant> = None;
            for (&id, (_, acks)) in &self.dirty {
                let due = acks.first().map_or(now, |ack| ack.received + window);
                if due <= now {
                    due_ids.push(id);
                } else {
                    next_due = Some(next_due.map_or(due, |next| next.min(due)));
                }
            }
            self.batch_due = next_due;
            due_ids
                .iter()
                .filter_map(|id| self.dirty.remove(id))
                .collect()
        };
        for (topic, acks) in dirty {
            let committed = self.commit_topic(&topic);
            for ack in acks {
                self.answer_publish(ack, &committed);
            }
        }
    }

    pub(crate) fn commit_topic(&mut self, topic: &Arc<TopicState>) -> Committed {
        let mut wake = Vec::new();
        let committed = {
            let mut inner = topic.inner.lock();
            let result = match inner.commit() {
                Ok(end) => Ok(end),
                Err(e) => {
                    error!(topic = %topic.name, error = %e, "commit failed; the topic rejects publishes until restart");
                    inner.failed = Some(e.to_string());
                    Err(())
                }
            };
            // Batches go out while the lock is held so that every worker receives a topic's
            // batches in offset order.
            self.distribute(topic, &mut inner, &mut wake);
            Committed {
                result,
                stream: inner.position().stream,
            }
        };
        for worker in wake {
            self.shared.workers[worker].wake();
        }
        committed
    }

    fn distribute(
        &mut self,
        topic: &Arc<TopicState>,
        inner: &mut TopicInner,
        wake: &mut Vec<usize>,
    ) {
        let ready = std::mem::take(&mut inner.ready);
        if ready.is_empty() {
            return;
        }
        for (worker, &count) in inner.interest.iter().enumerate() {
            if count == 0 {
                continue;
            }
            for batch in &ready {
                if worker == self.index {
                    self.inbox.push_back((topic.clone(), batch.clone()));
                } else if !self.shared.workers[worker].send_batch(topic.clone(), batch.clone()) {
                    self.metrics().worker_batches_dropped.add(1);
                }
            }
            if worker != self.index {
                wake.push(worker);
            }
        }
    }

    fn answer_publish(&mut self, ack: PendingAck, committed: &Committed) {
        if committed.result.is_ok_and(|end| ack.offset < end) {
            self.record_publish(ack.received);
        }
        let Some(conn) = self.conn_mut(ack.token) else {
            return;
        };
        if conn.id != ack.conn_id {
            return;
        }
        conn.pending_acks = conn.pending_acks.saturating_sub(1);
        let frame = match committed.result {
            Ok(end) if ack.offset < end => Frame::PublishAck(PublishAck {
                seq: ack.seq,
                code: ErrorCode::Ok,
                offset: ack.offset,
                stream: committed.stream,
            }),
            _ => Frame::PublishAck(PublishAck {
                seq: ack.seq,
                code: ErrorCode::StorageFailed,
                offset: 0,
                stream: 0,
            }),
        };
        self.send(ack.token, &frame);
    }

    /// Queues each received batch for the local subscribers that are live and due for it.
    pub(crate) fn deliver_inbox(&mut self) {
        let limit = self.limits.outbound_queue_bytes;
        let zstd_level = self.shared.config.compression.zstd_level;
        let mut samples = SampleCache::default();
        while let Some((topic, batch)) = self.inbox.pop_front() {
            let Some(tokens) = self.local_subs.get(&topic.id) else {
                continue;
            };
            samples.clear();
            let (mut queued, mut behind) = (0, 0);
            let (mut sampled_kept, mut sampled_skipped) = (0, 0);
            for &token in tokens {
                let Some(conn) = self.conns.get_mut(token.0 - FIRST_CONN) else {
                    continue;
                };
                match offer_batch(conn, topic.id, &batch, limit, zstd_level, &mut samples) {
                    Offer::Queued => {
                        self.to_flush.insert(token);
                        queued += 1;
                    }
                    Offer::Behind => {
                        self.catching_up.insert(token);
                        behind += 1;
                    }
                    Offer::Sampled { kept, skipped } => {
                        if kept > 0 {
                            self.to_flush.insert(token);
                        }
                        sampled_kept += kept;
                        sampled_skipped += skipped;
                    }
                    Offer::Skipped => {}
                }
            }
            self.record_delivery(&batch, queued, behind);
            self.record_sampled(sampled_kept, sampled_skipped);
        }
    }

    /// Moves every live subscription of `topic` on this worker to catch-up, because a batch of
    /// the topic did not fit this worker's queue. The batch is committed, so catch-up reads it
    /// from the log, or from the cache at a relay.
    pub(crate) fn on_missed_batch(&mut self, topic: &Arc<TopicState>) {
        let Some(tokens) = self.local_subs.get(&topic.id) else {
            return;
        };
        let mut switched = 0;
        for &token in tokens {
            let Some(conn) = self.conns.get_mut(token.0 - FIRST_CONN) else {
                continue;
            };
            let Some(sub) = conn.subs.get_mut(&topic.id) else {
                continue;
            };
            if sub.delivery != Delivery::CatchUp {
                sub.delivery = Delivery::CatchUp;
                self.catching_up.insert(token);
                switched += 1;
            }
        }
        self.metrics().slow_consumer_switches.add(switched);
    }

    /// Counts the comments that capped subscriptions were given and left out.
    fn record_sampled(&self, kept: u64, skipped: u64) {
        if kept == 0 && skipped == 0 {
            return;
        }
        let metrics = self.metrics();
        metrics.live_deliveries.add(kept);
        metrics.comments_skipped.add(skipped);
    }

    /// Returns whether a catching-up subscriber has room in its queue for more from the log.
    pub(crate) fn catch_up_can_progress(&self) -> bool {
        let low_water = self.limits.outbound_queue_bytes / 2;
        self.catching_up.iter().any(|token| {
            self.conns.get(token.0 - FIRST_CONN).is_some_and(|c| {
                c.phase != crate::conn::Phase::Closing && c.out.bytes() < low_water
            })
        })
    }

    /// Feeds catching-up subscribers from the log while their queues are below half the limit,
    /// and switches each back to live batches once it reaches the end of the log.
    pub(crate) fn serve_catch_up(&mut self) {
        let limits = &self.limits;
        let low_water = limits.outbound_queue_bytes / 2;
        let max_batch = limits.max_batch_bytes;

        let tokens: Vec<Token> = self.catching_up.iter().copied().collect();
        let (mut delivered, mut skipped) = (0, 0);
        for token in tokens {
            let Some(conn) = self.conns.get_mut(token.0 - FIRST_CONN) else {
                self.catching_up.remove(&token);
                continue;
            };
            if conn.phase == crate::conn::Phase::Closing {
                continue;
            }
            let failed = feed_from_log(conn, low_water, max_batch, &mut delivered, &mut skipped);
            if conn.out.bytes() > 0 {
                self.to_flush.insert(token);
            }
            if !conn.is_catching_up() {
                self.catching_up.remove(&token);
            }
            for (topic, message) in failed {
                self.send_topic_error(token, ErrorCode::StorageFailed, &topic.name, message);
                self.remove_failed_subscription(token, &topic);
            }
        }
        self.metrics().catch_up_deliveries.add(delivered);
        self.metrics().comments_skipped.add(skipped);
    }

    fn remove_failed_subscription(&mut self, token: Token, topic: &Arc<TopicState>) {
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if conn.subs.remove(&topic.id).is_some() {
            topic.inner.lock().interest[self.index] -= 1;
            if let Some(set) = self.local_subs.get_mut(&topic.id) {
                set.remove(&token);
            }
        }
    }
}

pub(crate) enum Offer {
    Queued,
    /// The subscriber switched to catch-up: its queue is full or the batch left a gap.
    Behind,
    /// A capped subscription took the batch: `kept` entries were queued in a frame of its own
    /// and `skipped` comments were left out.
    Sampled {
        kept: u64,
        skipped: u64,
    },
    Skipped,
}

fn offer_batch(
    conn: &mut Conn,
    topic_id: u64,
    batch: &Batch,
    limit: usize,
    zstd_level: i32,
    samples: &mut SampleCache,
) -> Offer {
    if conn.phase == crate::conn::Phase::Closing {
        return Offer::Skipped;
    }
    let queued = conn.out.bytes();
    let Some(sub) = conn.subs.get_mut(&topic_id) else {
        return Offer::Skipped;
    };
    if sub.delivery == Delivery::CatchUp {
        return Offer::Skipped;
    }
    if sub.stream != batch.stream {
        if sub.stream != 0 {
            // Only at a relay: the topic was recreated upstream, so the subscriber starts over
            // on the new stream, from the cache.
            sub.stream = batch.stream;
            sub.next = 0;
            sub.delivery = Delivery::CatchUp;
            return Offer::Behind;
        }
        sub.stream = batch.stream;
    }
    if batch.end <= sub.next {
        return Offer::Skipped;
    }
    if sub.cap.is_some() {
        return offer_sampled(sub, &mut conn.out, batch, limit, samples);
    }
    if batch.first != sub.next || queued + batch.frame.len() > limit {
        sub.delivery = Delivery::CatchUp;
        return Offer::Behind;
    }
    // Only live batches go compressed; catch-up frames read from the log or cache stay plain.
    if conn.features & features::ZSTD_EVENTS != 0 && zstd_level > 0 {
        conn.out
            .push(batch.compressed.frame_for_zstd(&batch.frame, zstd_level));
    } else {
        conn.out.push(batch.frame.clone());
    }
    sub.next = batch.end;
    Offer::Queued
}

/// Moves a relay subscription (its stream id and next offset) to the stream its topic's cache
/// holds. A subscription that had none adopts it; one on a replaced stream starts over at the
/// new stream's first offset.
fn follow_stream(sub_stream: &mut u64, next: &mut u64, stream: u64) {
    if *sub_stream == stream {
        return;
    }
    if *sub_stream != 0 {
        *next = 0;
    }
    *sub_stream = stream;
}

/// Reads from the log for each catching-up subscription of `conn` until its queue reaches
/// `low_water`, adding the number of comments queued to `delivered` and the number that capped
/// subscriptions left out to `skipped`. Returns the subscriptions whose log read failed, with
/// the reason.
fn feed_from_log(
    conn: &mut Conn,
    low_water: usize,
    max_batch: usize,
    delivered: &mut u64,
    skipped: &mut u64,
) -> Vec<(Arc<TopicState>, String)> {
    let mut failed = Vec::new();
    for sub in conn.subs.values_mut() {
        let mut reads = 0;
        while sub.delivery == Delivery::CatchUp && conn.out.bytes() < low_water {
            if sub.cap.is_some() && reads == MAX_CAPPED_READS_PER_TURN {
                break;
            }
            reads += 1;
            let mut inner = sub.topic.inner.lock();
            if let Some(relay) = inner.relay.as_ref() {
                follow_stream(&mut sub.stream, &mut sub.next, relay.cache.stream());
            }
            let position = inner.position();
            // Checked under the topic lock: every batch committed from here on starts at
            // `position.end`, so a subscriber at the end can join the live batches.
            if sub.next >= position.end {
                sub.delivery = Delivery::Live;
                break;
            }
            // NOTE: at a relay, `earliest` is the oldest cached comment, so a subscriber behind
            // the cache skips to it and the offsets it receives jump. A deeper resume at a relay
            // needs a larger relay.cache_comments.
            sub.next = sub.next.max(position.earliest);
            // Deleted comments are rewritten as this read passes them; the log keeps them.
            let mut redactor = match inner.redactor(sub.next, position.end) {
                Ok(redactor) => redactor,
                Err(e) => {
                    let message = format!("failed to read the deleted offsets: {e}");
                    failed.push((sub.topic.clone(), message));
                    break;
                }
            };
            let Some(log) = inner.log.as_ref() else {
                let read = inner
                    .relay
                    .as_ref()
                    .and_then(|relay| relay.cache.read_from(&sub.topic.name, sub.next));
                let Some(read) = read else {
                    sub.delivery = Delivery::Live;
                    break;
                };
                drop(inner);
                let (frame, comments) = match sub.cap.as_mut() {
                    Some(cap) => sample_cached(cap, &sub.topic.name, &read.frame, skipped),
                    None => (Some(read.frame), read.comments),
                };
                if let Some(frame) = frame {
                    conn.out.push(frame);
                }
                sub.next = read.end;
                *delivered += comments;
                continue;
            };
            let mut builder = EventsFrameBuilder::new(&sub.topic.name, position.stream, max_batch);
            let mut bad_entry = None;
            let mut cap = sub.cap.clone();
            let read = log.read(sub.next, usize::MAX, max_batch, |offset, entry| {
                // A capped subscription always delivers a deleted entry, as it does tombstones.
                let deleted = redactor.is_deleted(offset);
                if !deleted && cap.as_mut().is_some_and(|cap| !cap.keep(entry)) {
                    return;
                }
                if let Err(e) = push_entry(&mut builder, entry, deleted) {
                    bad_entry.get_or_insert(e);
                }
            });
            drop(inner);
            match (read, bad_entry) {
                (Ok(summary), None) if summary.count > 0 => {
                    if let (Some(before), Some(after)) = (sub.cap.as_ref(), cap.as_ref()) {
                        *skipped += after.skipped_since(before);
                    }
                    sub.cap = cap;
                    *delivered += u64::from(builder.count());
                    if !builder.is_empty() {
                        conn.out.push(builder.finish());
                    }
                    sub.next = summary.next_offset;
                }
                (Ok(_), None) => break,
                (Ok(_), Some(e)) => {
                    failed.push((sub.topic.clone(), format!("invalid entry in the log: {e}")));
                    break;
                }
                (Err(e), _) => {
                    failed.push((sub.topic.clone(), format!("failed to read the log: {e}")));
                    break;
                }
            }
        }
    }
    failed
}
