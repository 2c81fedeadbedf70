//! Resumes at an edge relay: where a new local subscription starts, what the edge cache serves
//! at once, and whether the upstream is asked for anything.

use bytes::Bytes;
use chorus_protocol::{decode_frame, Event, Events, Frame, StartAt, Subscribe, Subscribed, Topic};

use super::SimClock;
use crate::handler::start_offset;
use crate::relay::cache::{frame_span, EdgeCache};
use crate::relay::config::RelayConfig;
use crate::relay::link::{apply_subscribed, cache_upstream_batch, subscribe_request};
use crate::relay::{RelayTopic, Upstream};

/// One relay topic at an edge, subscribed to an upstream that publishes to it, for the
/// decisions of a resume: where a subscription starts, what the cache serves, and whether the
/// upstream is asked for anything.
#[derive(Debug)]
struct EdgeSim {
    name: Topic,
    relay: RelayTopic,
    clock: SimClock,
    /// Stream id of the topic at the upstream.
    upstream_stream: u64,
    /// Offset of the upstream's next comment.
    upstream_end: u64,
    /// SUBSCRIBE frames the link sent upstream.
    requests: Vec<Subscribe>,
    generation: u64,
}

/// Number of comments in each EVENTS frame of the simulated upstream's backlog.
const BACKLOG_FRAME: u64 = 10;

/// The outcome of a new local subscription at the edge.
#[derive(Debug, PartialEq, Eq)]
struct Resume {
    /// The first offset it receives, or `None` while it waits for the upstream SUBSCRIBED.
    start: Option<u64>,
    /// Offsets served from the cache at once, in order.
    served: Vec<u64>,
    /// Stream ids of the frames served from the cache.
    streams: Vec<u64>,
    /// SUBSCRIBE frames this subscription made the link send upstream.
    upstream_requests: usize,
}

impl EdgeSim {
    /// Creates an idle relay topic whose upstream has `upstream_end` comments on stream
    /// `upstream_stream`, with the cache limits of `config`.
    fn new(config: &RelayConfig, upstream_stream: u64, upstream_end: u64) -> EdgeSim {
        EdgeSim {
            name: Topic::new("event/final").expect("a valid topic name"),
            relay: RelayTopic::new(config),
            clock: SimClock::new(),
            upstream_stream,
            upstream_end,
            requests: Vec::new(),
            generation: 1,
        }
    }

    /// Encodes the upstream's comments `first..end` on `stream` as one EVENTS frame, with
    /// broker time `offset * 1000` µs.
    fn events_frame(&self, stream: u64, first: u64, end: u64) -> Bytes {
        let events: Vec<Event> = (first..end)
            .map(|offset| Event {
                offset,
                time_us: offset * 1000,
                flags: 0,
                publisher: String::new(),
                payload: Bytes::from(format!("comment {offset}")),
            })
            .collect();
        Frame::Events(Events::new(self.name.clone(), stream, &events)).to_bytes()
    }

    /// Has the link send the SUBSCRIBE that the topic's state calls for. The upstream replies
    /// with SUBSCRIBED and then sends the comments from its start on, in frames of
    /// [`BACKLOG_FRAME`] comments.
    fn serve_subscribe(&mut self, cache_comments: u64) {
        let Some(subscribe) =
            subscribe_request(&mut self.relay, &self.name, self.generation, cache_comments)
        else {
            return;
        };
        let start = match (subscribe.start, subscribe.stream) {
            (StartAt::Last(count), _) => self.upstream_end.saturating_sub(count),
            // The upstream's own rule: another stream id gets the stream from its start.
            (StartAt::Offset(_), stream) if stream != 0 && stream != self.upstream_stream => 0,
            (StartAt::Offset(offset), _) => offset.min(self.upstream_end),
            (other, _) => panic!("the link never subscribes from {other:?}"),
        };
        self.requests.push(subscribe);
        let subscribed = Subscribed {
            topic: self.name.clone(),
            stream: self.upstream_stream,
            start,
            earliest: 0,
            end: self.upstream_end,
        };
        apply_subscribed(&mut self.relay, &self.name, &subscribed);
        let mut first = start;
        while first < self.upstream_end {
            let end = (first + BACKLOG_FRAME).min(self.upstream_end);
            self.receive(self.upstream_stream, first, end);
            first = end;
        }
    }

    /// Has the reader put the upstream's comments `first..end` on `stream` into the cache.
    fn receive(&mut self, stream: u64, first: u64, end: u64) {
        let frame = self.events_frame(stream, first, end);
        let span = frame_span(&frame).expect("a frame with comments");
        let now = self.clock.instant();
        cache_upstream_batch(&mut self.relay, &self.name, stream, frame, span, now);
    }

    /// Has the upstream publish `count` comments, which reach the cache in one frame.
    fn publish_upstream(&mut self, count: u64) {
        let first = self.upstream_end;
        self.upstream_end += count;
        self.receive(self.upstream_stream, first, self.upstream_end);
    }

    /// Recreates the topic upstream: a new stream id, with offsets from 0 again.
    fn recreate_upstream(&mut self, stream: u64) {
        self.upstream_stream = stream;
        self.upstream_end = 0;
    }

    /// Drops the link's connection and opens a new one, which resumes the topic.
    fn reconnect(&mut self, cache_comments: u64) {
        self.generation += 1;
        self.serve_subscribe(cache_comments);
    }

    /// Adds a local subscriber that requests `start` on `stream` (0 for any), and reads from
    /// the cache what it gets at once, as the worker's catch-up does.
    fn resume(&mut self, start: StartAt, stream: u64, cache_comments: u64) -> Resume {
        let requests_before = self.requests.len();
        // `Worker::on_relay_subscribe`: the first local subscriber subscribes upstream.
        if self.relay.upstream == Upstream::Idle {
            self.relay.upstream = Upstream::Subscribing;
            self.relay.idle_since = None;
            self.serve_subscribe(cache_comments);
        }
        let upstream_requests = self.requests.len() - requests_before;

        if self.relay.upstream != Upstream::Subscribed {
            return Resume {
                start: None,
                served: Vec::new(),
                streams: Vec::new(),
                upstream_requests,
            };
        }

        // `relay_start`: an offset past the cache's end starts at the end.
        let position = self.relay.position();
        let start = match start {
            StartAt::Offset(offset) if offset > position.end => StartAt::Offset(position.end),
            other => other,
        };
        let subscribe = Subscribe {
            topic: self.name.clone(),
            start,
            stream,
        };
        let cache = &self.relay.cache;
        let first = start_offset(&subscribe, position, |time_us| {
            cache.offset_for_time(time_us)
        })
        .unwrap_or(position.end);

        let (served, streams) = self.read_cache(first);
        Resume {
            start: Some(first),
            served,
            streams,
            upstream_requests,
        }
    }

    /// Reads the cache from `next` on until it has nothing more, and returns the offsets and
    /// the stream ids of the frames read.
    fn read_cache(&self, mut next: u64) -> (Vec<u64>, Vec<u64>) {
        let mut offsets = Vec::new();
        let mut streams = Vec::new();
        next = next.max(self.relay.cache.earliest());
        while let Some(read) = self.relay.cache.read_from(&self.name, next) {
            match decode_frame(read.frame).expect("a valid cached frame") {
                Frame::Events(events) => {
                    streams.push(events.stream());
                    offsets.extend(events.iter().map(|e| e.offset));
                }
                other => panic!("the cache returned {other:?}"),
            }
            next = read.end;
        }
        (offsets, streams)
    }

    fn cache(&self) -> &EdgeCache {
        &self.relay.cache
    }
}

mod tests {
    use super::*;

    fn edge(upstream_end: u64) -> (EdgeSim, u64) {
        let cache_comments = 50;
        let config = RelayConfig {
            cache_comments,
            ..RelayConfig::default()
        };
        (EdgeSim::new(&config, 7, upstream_end), cache_comments)
    }

    #[test]
    fn first_subscriber_warms_cache_from_upstream() {
        let (mut sim, n) = edge(200);
        let resume = sim.resume(StartAt::Last(10), 0, n);
        assert_eq!(resume.upstream_requests, 1);
        assert_eq!(sim.requests[0].start, StartAt::Last(50));
        assert_eq!(sim.cache().earliest(), 150);
        assert_eq!(resume.start, Some(190));
        assert_eq!(resume.served, (190..200).collect::<Vec<u64>>());
    }

    #[test]
    fn resume_inside_cache_is_served_locally() {
        let (mut sim, n) = edge(200);
        sim.resume(StartAt::Latest, 0, n);
        sim.publish_upstream(20);
        let resume = sim.resume(StartAt::Offset(170), 7, n);
        assert_eq!(resume.upstream_requests, 0);
        assert_eq!(resume.start, Some(170));
        assert_eq!(resume.served, (170..220).collect::<Vec<u64>>());
        assert_eq!(sim.requests.len(), 1);
    }

    #[test]
    fn resume_past_end_waits_for_live() {
        let (mut sim, n) = edge(200);
        sim.resume(StartAt::Latest, 0, n);
        let resume = sim.resume(StartAt::Offset(500), 7, n);
        assert_eq!(resume.upstream_requests, 0);
        assert_eq!(resume.start, Some(200));
        assert!(resume.served.is_empty());
        // The next upstream comments reach it live, from the cache's end on.
        sim.publish_upstream(5);
        let (served, _) = sim.read_cache(200);
        assert_eq!(served, (200..205).collect::<Vec<u64>>());
    }

    #[test]
    fn resume_before_cache_starts_at_oldest_cached() {
        let (mut sim, n) = edge(200);
        sim.resume(StartAt::Latest, 0, n);
        let resume = sim.resume(StartAt::Offset(20), 7, n);
        assert_eq!(resume.upstream_requests, 0);
        assert_eq!(resume.served.first(), Some(&150));
    }

    #[test]
    fn resume_on_old_stream_is_not_spliced() {
        // The client last saw stream 3: its offset means nothing on stream 7, so it gets
        // stream 7 from the oldest cached comment instead of from offset 180.
        let (mut sim, n) = edge(200);
        sim.resume(StartAt::Latest, 0, n);
        let resume = sim.resume(StartAt::Offset(180), 3, n);
        assert_eq!(resume.upstream_requests, 0);
        assert_eq!(resume.start, Some(150));
        assert_eq!(resume.served, (150..200).collect::<Vec<u64>>());
        assert!(resume.streams.iter().all(|s| *s == 7));
    }

    #[test]
    fn stream_change_upstream_drops_old_cache() {
        // The topic is recreated upstream during the subscription: the first frame on the new
        // stream starts the cache over, and nothing of the old stream is served with it.
        let (mut sim, n) = edge(200);
        sim.resume(StartAt::Latest, 0, n);
        sim.recreate_upstream(9);
        sim.publish_upstream(5);
        assert_eq!(sim.cache().stream(), 9);
        assert_eq!(sim.cache().earliest(), 0);
        assert_eq!(sim.cache().end(), 5);
        let resume = sim.resume(StartAt::Offset(180), 7, n);
        assert_eq!(resume.start, Some(0));
        assert_eq!(resume.served, (0..5).collect::<Vec<u64>>());
        assert_eq!(resume.streams, [9]);
    }

    #[test]
    fn reconnect_to_recreated_topic_resets_cache() {
        // The link resumes from the cache's end on stream 7. The upstream recreated the topic
        // meanwhile, so it replies on stream 9 from its start.
        let (mut sim, n) = edge(200);
        sim.resume(StartAt::Latest, 0, n);
        sim.recreate_upstream(9);
        sim.upstream_end = 30;
        sim.reconnect(n);
        let resumed = &sim.requests[1];
        assert_eq!(resumed.start, StartAt::Offset(200));
        assert_eq!(resumed.stream, 7);
        assert_eq!(sim.cache().stream(), 9);
        let (served, streams) = sim.read_cache(0);
        assert_eq!(served, (0..30).collect::<Vec<u64>>());
        assert_eq!(streams, [9, 9, 9]);
    }

    #[test]
    fn reconnect_on_same_stream_keeps_cache() {
        // The upstream published 20 comments while the link was down. The resumed
        // subscription starts at the cache's end, and they join the cached ones.
        let (mut sim, n) = edge(200);
        sim.resume(StartAt::Latest, 0, n);
        sim.upstream_end = 220;
        sim.reconnect(n);
        assert_eq!(sim.requests[1].start, StartAt::Offset(200));
        assert_eq!(sim.requests[1].stream, 7);
        assert_eq!(sim.cache().stream(), 7);
        let (served, _) = sim.read_cache(0);
        assert_eq!(served, (170..220).collect::<Vec<u64>>());
    }
}
