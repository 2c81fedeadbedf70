//! The relay's side: viewer totals and reaction sums sent upstream.

use chorus_protocol::{AudienceEntry, Frame};
use tracing::warn;

use super::sums::{fit_audience, react_frames, ReactionSums, UpstreamLedger, ViewerCounts};
use crate::worker::Worker;

impl Worker {
    /// Sends one AUDIENCE frame per link with the totals of the topics that link serves: every
    /// topic with viewers, and once more with 0 each topic whose viewers all left.
    pub(super) fn send_audience_upstream(
        &mut self,
        ledger: &mut UpstreamLedger,
        totals: &ViewerCounts,
    ) {
        let Some(relay) = self.shared.relay.as_ref() else {
            return;
        };
        let entries = ledger.entries(totals);
        if entries.is_empty() {
            return;
        }
        let mut by_link: Vec<Vec<AudienceEntry>> = vec![Vec::new(); relay.links()];
        for entry in entries {
            by_link[relay.link_index(&entry.topic)].push(entry);
        }
        // NOTE: the upstream's own limit is not known here. Nodes of one tree normally share
        // limits.max_frame, and the link drops a frame larger than its upstream announced.
        let max_body = self.limits.max_frame as usize;
        for (link, mut entries) in by_link.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            let left_out = fit_audience(&mut entries, max_body);
            if left_out > 0 && self.log_limiter.allow() {
                warn!(
                    link,
                    left_out,
                    max_frame = max_body,
                    "AUDIENCE does not fit one frame; the topics with the fewest viewers are \
                     left out"
                );
            }
            relay.send_report(link, vec![Frame::Audience(entries)]);
        }
    }

    /// Sends the reaction sums of this interval upstream, one REACT frame per topic and kind,
    /// over the link that serves each topic.
    ///
    /// NOTE: an upstream that does not take this relay for a relay session (with
    /// authentication, a token without the relay role) answers sums above 1 with ERROR
    /// `FORBIDDEN` naming the topic, which the link's reader takes for a rejected subscription.
    pub(super) fn send_reactions_upstream(&self, sums: ReactionSums) {
        let Some(relay) = self.shared.relay.as_ref() else {
            return;
        };
        let mut by_link: Vec<Vec<Frame>> = vec![Vec::new(); relay.links()];
        for (topic, kinds) in sums.into_topics() {
            let frames = &mut by_link[relay.link_index(&topic)];
            for (kind, sum) in kinds {
                frames.extend(
                    react_frames(&topic, &kind, sum)
                        .into_iter()
                        .map(Frame::React),
                );
            }
        }
        for (link, frames) in by_link.into_iter().enumerate() {
            if !frames.is_empty() {
                relay.send_report(link, frames);
            }
        }
    }
}
