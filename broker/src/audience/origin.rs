//! The origin's side: records appended to the companion topics `_viewers/T` and
//! `_reactions/T`.

use chorus_protocol::Topic;
use tracing::error;

use super::companion::{reactions_payload, reactions_topic, viewers_payload, viewers_topic};
use super::sums::{ReactionSums, ViewerCounts, ViewerLedger};
use crate::metrics::ReactionDrop;
use crate::worker::Worker;

impl Worker {
    /// Appends `{"viewers":N}` to `_viewers/T` for every topic `T` whose total count differs
    /// from the last one written, 0 included once when the last viewer left.
    pub(super) fn write_viewer_records(
        &mut self,
        ledger: &mut ViewerLedger,
        totals: &ViewerCounts,
    ) {
        let owned: ViewerCounts = totals
            .iter()
            .filter(|(topic, _)| self.writes_companions(topic))
            .map(|(topic, viewers)| (topic.clone(), *viewers))
            .collect();
        for (topic, viewers) in ledger.changes(&owned) {
            let Some(name) = viewers_topic(&topic) else {
                continue;
            };
            if self.append_companion(&name, &viewers_payload(viewers)) {
                ledger.record(topic, viewers);
            }
        }
    }

    /// Appends one record per topic with reactions in this interval to `_reactions/T`.
    pub(super) fn write_reaction_records(&mut self, sums: ReactionSums) {
        let interval_ms = self.shared.config.audience.reaction_interval_ms;
        for (topic, kinds) in sums.into_topics() {
            let name = reactions_topic(&topic).filter(|_| self.writes_companions(&topic));
            let Some(name) = name else {
                let count = kinds.values().fold(0u64, |sum, n| sum.saturating_add(*n));
                self.metrics()
                    .reactions_dropped(ReactionDrop::NoCompanionTopic, count);
                continue;
            };
            self.append_companion(&name, &reactions_payload(interval_ms, &kinds));
        }
    }

    /// Returns whether this origin writes the companion topics of `topic`: the topic has a log
    /// here, which its first comment creates, and this origin owns it in the cluster's topic
    /// map, if there is one.
    ///
    /// Requiring a log keeps clients that subscribe to made-up topic names from making the
    /// origin create companion logs on disk for each of them.
    fn writes_companions(&self, topic: &Topic) -> bool {
        let cluster = self.shared.cluster.as_ref();
        if cluster.is_some_and(|map| !map.owns(topic)) {
            return false;
        }
        self.shared
            .registry
            .find(topic)
            .is_some_and(|state| state.inner.lock().log.is_some())
    }

    /// Appends a record with an empty publisher to companion topic `name`. The record is
    /// committed, stored and delivered with this loop iteration's other appends. Returns
    /// whether it was appended, and logs a failure.
    fn append_companion(&mut self, name: &Topic, payload: &[u8]) -> bool {
        let topic = match self.shared.registry.get(name) {
            Ok(topic) => topic,
            Err(e) => {
                if self.log_limiter.allow() {
                    error!(topic = %name, error = %e, "failed to open companion topic log");
                }
                return false;
            }
        };
        let max_batch = self.limits.max_batch_bytes;
        let appended =
            self.shared
                .registry
                .append_internal(&topic, payload, max_batch, &mut self.scratch);
        if let Err(e) = appended {
            if self.log_limiter.allow() {
                error!(topic = %name, error = %e, "failed to append to companion topic");
            }
            return false;
        }
        self.dirty
            .entry(topic.id)
            .or_insert_with(|| (topic.clone(), Vec::new()));
        true
    }
}
