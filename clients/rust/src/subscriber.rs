//! A subscription that survives lost connections.

use std::thread;
use std::time::{Duration, Instant};

use chorus_protocol::event::EventIter;
use chorus_protocol::{Event, Events, Frame, StartAt, Subscribed, Topic, Welcome};

use crate::wire::frame_name;
use crate::{ClientError, Connection, Options};

/// A subscription to one topic that reconnects and resumes after a lost connection.
///
/// The subscriber tracks the offset of the next comment it expects. After a lost connection,
/// or an ERROR that [`ClientError::is_transient`] calls transient, it reconnects with
/// [`crate::Backoff`] and subscribes again from that offset with the stream id it holds. It
/// drops comments below that offset, so the caller sees no comment twice and, unless the
/// server no longer keeps them, misses none.
///
/// A server that announces an idle timeout in WELCOME sends a PING, or closes the connection,
/// within that time of client silence. So a connection from which nothing arrives for twice
/// the idle timeout plus one second counts as lost, which catches connections that died
/// without being closed. NOTE: with an idle timeout of 0 such a connection is only noticed when
/// [`Options::read_timeout`] is set, and then it comes back as [`ClientError::Timeout`].
#[derive(Debug)]
pub struct Subscriber {
    addr: String,
    topic: Topic,
    options: Options,
    conn: Option<Connection>,
    subscribed: Subscribed,
    next_offset: u64,
    stream: u64,
    reconnects: u64,
    batch: Option<EventIter>,
    notice: Option<ClientError>,
}

impl Subscriber {
    /// Connects to `addr`, subscribes to `topic` from `start` and waits for SUBSCRIBED.
    ///
    /// This first connection is tried once: its errors come back as they are, without retries.
    pub fn connect(
        addr: &str,
        topic: Topic,
        start: StartAt,
        options: Options,
    ) -> Result<Subscriber, ClientError> {
        let mut conn = Connection::connect(addr, &options)?;
        let subscribed = conn.subscribe(&topic, start, 0)?;
        tracing::debug!(
            topic = %topic,
            stream = subscribed.stream,
            start = subscribed.start,
            "subscribed"
        );
        Ok(Subscriber {
            addr: addr.to_owned(),
            topic,
            options,
            conn: Some(conn),
            next_offset: subscribed.start,
            stream: subscribed.stream,
            subscribed,
            reconnects: 0,
            batch: None,
            notice: None,
        })
    }

    /// Returns the next comment, blocking until one arrives.
    ///
    /// Reconnects as described on [`Subscriber`]. Returns [`ClientError::StreamChanged`] once
    /// when the topic was recreated, then continues with the new stream from the start that
    /// the server confirmed. Permanent errors, and transient ones once
    /// [`crate::Backoff::max_attempts`] reconnects failed, come back as errors; calling again
    /// after one tries to reconnect.
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Some(notice) = self.notice.take() {
                return Err(notice);
            }
            if let Some(event) = self.next_buffered() {
                return Ok(event);
            }
            self.receive()?;
        }
    }

    /// Returns the offset of the next comment the subscriber will return.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Returns the stream id of the topic as the subscriber last saw it; 0 while the topic
    /// does not exist yet.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// Returns the SUBSCRIBED frame of the latest subscription.
    pub fn subscribed(&self) -> &Subscribed {
        &self.subscribed
    }

    /// Returns the topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Returns how many times the subscriber reconnected and subscribed again.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Takes the next comment of the current batch that is not below the next offset.
    fn next_buffered(&mut self) -> Option<Event> {
        let batch = self.batch.as_mut()?;
        for event in batch.by_ref() {
            if event.offset < self.next_offset {
                tracing::trace!(offset = event.offset, "dropped a comment already returned");
                continue;
            }
            if event.offset > self.next_offset {
                tracing::debug!(
                    expected = self.next_offset,
                    offset = event.offset,
                    "comments missing before this offset"
                );
            }
            self.next_offset = event.offset + 1;
            return Some(event);
        }
        self.batch = None;
        None
    }

    /// Receives one frame, or reconnects when the connection was lost.
    fn receive(&mut self) -> Result<(), ClientError> {
        let Some(conn) = self.conn.as_mut() else {
            return self.reconnect(ClientError::Closed);
        };
        let now = Instant::now();
        let caller_deadline = self.options.read_timeout.map(|timeout| now + timeout);
        let silence_deadline = max_silence(conn.welcome()).map(|silence| now + silence);
        match conn.recv_until(earliest(caller_deadline, silence_deadline)) {
            Ok(Frame::Events(events)) => {
                self.accept(events);
                Ok(())
            }
            Ok(other) => {
                tracing::trace!(kind = frame_name(&other), "ignored a frame");
                Ok(())
            }
            // The read timeout is the caller's bound on waiting, not a sign of a lost connection.
            Err(ClientError::Timeout) if caller_deadline.is_some_and(|d| Instant::now() >= d) => {
                Err(ClientError::Timeout)
            }
            Err(ClientError::Timeout) => {
                tracing::debug!(topic = %self.topic, "server silent past its idle timeout");
                self.reconnect(ClientError::Timeout)
            }
            Err(e) if e.is_transient() => {
                tracing::debug!(topic = %self.topic, error = %e, "connection lost");
                self.reconnect(e)
            }
            Err(e) => Err(e),
        }
    }

    fn accept(&mut self, events: Events) {
        if *events.topic() != self.topic {
            tracing::trace!(topic = %events.topic(), "ignored comments of another topic");
            return;
        }
        if self.stream == 0 {
            // Subscribed before the topic existed: its first comments open the stream.
            self.stream = events.stream();
        } else if events.stream() != self.stream {
            // The topic was recreated during the subscription, so its offsets start again.
            let first = events.iter().next().map_or(0, |event| event.offset);
            self.stream_changed(events.stream(), first);
        }
        self.batch = Some(events.iter());
    }

    /// Reconnects with backoff until a subscription succeeds, a permanent error occurs or the
    /// attempts run out; `cause` is returned when no attempt is allowed.
    fn reconnect(&mut self, cause: ClientError) -> Result<(), ClientError> {
        self.conn = None;
        self.batch = None;
        let mut last = cause;
        let mut attempt: u32 = 0;
        while self.options.backoff.allows(attempt) {
            thread::sleep(self.options.backoff.delay(attempt));
            match self.resubscribe() {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() => {
                    tracing::debug!(topic = %self.topic, attempt, error = %e, "reconnect failed");
                    last = e;
                }
                Err(e) => return Err(e),
            }
            attempt = attempt.saturating_add(1);
        }
        Err(last)
    }

    fn resubscribe(&mut self) -> Result<(), ClientError> {
        let mut conn = Connection::connect(&self.addr, &self.options)?;
        let start = StartAt::Offset(self.next_offset);
        let subscribed = conn.subscribe(&self.topic, start, self.stream)?;

        self.reconnects += 1;
        if self.stream == 0 {
            // The topic did not exist before, so nothing of this stream was returned yet.
            self.stream = subscribed.stream;
        } else if subscribed.stream != self.stream {
            self.stream_changed(subscribed.stream, subscribed.start);
        } else if subscribed.start > self.next_offset {
            tracing::debug!(
                expected = self.next_offset,
                start = subscribed.start,
                "comments before the resume point are no longer kept"
            );
        }
        tracing::debug!(
            topic = %self.topic,
            stream = subscribed.stream,
            start = subscribed.start,
            reconnects = self.reconnects,
            "resubscribed"
        );
        self.subscribed = subscribed;
        self.conn = Some(conn);
        Ok(())
    }

    fn stream_changed(&mut self, new: u64, start: u64) {
        tracing::debug!(topic = %self.topic, old = self.stream, new, start, "stream changed");
        self.notice = Some(ClientError::StreamChanged {
            old: self.stream,
            new,
        });
        self.stream = new;
        self.next_offset = start;
    }
}

/// Allowance for the server's timer granularity in [`max_silence`].
const SILENCE_SLACK: Duration = Duration::from_secs(1);

/// Returns how long a live server can stay silent, or `None` when it announced no idle timeout.
fn max_silence(welcome: &Welcome) -> Option<Duration> {
    if welcome.idle_timeout_ms == 0 {
        return None;
    }
    let idle = Duration::from_millis(u64::from(welcome.idle_timeout_ms));
    Some(idle * 2 + SILENCE_SLACK)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
