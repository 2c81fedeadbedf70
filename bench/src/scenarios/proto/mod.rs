//! Minimal clients for each broker under test, written sans-I/O: a session turns received bytes
//! into [`Incoming`] events and appends the bytes to send to an output buffer, so the same
//! session drives a blocking publisher thread and a non-blocking connection pool alike.
//!
//! Every broker gets the same treatment: one TCP connection, the handshake its protocol needs,
//! one subscription, and publishes whose payloads the bench stamps itself. Only what the
//! scenarios use is implemented; anything else a broker sends is an error.

mod chorus;
mod mqtt;
mod nats;
mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use chorus_protocol::Topic;
use clap::ValueEnum;
use serde::Serialize;

/// Broker under test, named by the protocol the bench speaks to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BrokerKind {
    /// chorusd, over the chorus protocol.
    Chorus,
    /// NATS core publish/subscribe (no JetStream), over the NATS text protocol.
    Nats,
    /// Redis publish/subscribe, over RESP2.
    Redis,
    /// An MQTT 3.1.1 broker such as Mosquitto.
    Mqtt,
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            BrokerKind::Chorus => "chorus",
            BrokerKind::Nats => "nats",
            BrokerKind::Redis => "redis",
            BrokerKind::Mqtt => "mqtt",
        };
        f.write_str(name)
    }
}

/// What a connection does after its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Publishes; ready once the handshake is done.
    Publisher,
    /// Subscribes to the topic with this index; ready once the broker confirmed the subscription.
    Subscriber(usize),
}

/// Settings every session of a run shares; cloning shares the topic lists.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub(crate) kind: BrokerKind,
    /// Topic names in the broker's syntax.
    topics: Arc<[String]>,
    /// The same topics as validated chorus topics; empty for other brokers.
    chorus_topics: Arc<[Topic]>,
    /// MQTT quality of service for publishes and subscriptions: 0 or 1.
    pub(crate) mqtt_qos: u8,
    /// Name the connection gives itself where the protocol has one; MQTT client ids append a
    /// connection number to it.
    pub(crate) client_name: String,
}

impl SessionConfig {
    /// Maps the bench's topic names (`bench/fanout-1700000000/0`) to the broker's syntax: NATS
    /// separates subject tokens with `.`, the other brokers take the names as they are.
    pub(crate) fn new(
        kind: BrokerKind,
        names: &[String],
        mqtt_qos: u8,
        client_name: String,
    ) -> anyhow::Result<SessionConfig> {
        anyhow::ensure!(mqtt_qos <= 1, "--mqtt-qos must be 0 or 1, not {mqtt_qos}");
        let topics: Arc<[String]> = match kind {
            BrokerKind::Nats => names.iter().map(|n| n.replace('/', ".")).collect(),
            _ => names.iter().cloned().collect(),
        };
        let chorus_topics = match kind {
            BrokerKind::Chorus => names
                .iter()
                .map(|n| Topic::new(n.as_str()).map_err(|e| anyhow::anyhow!("topic {n:?}: {e:?}")))
                .collect::<anyhow::Result<_>>()?,
            _ => Arc::from(Vec::new()),
        };
        Ok(SessionConfig {
            kind,
            topics,
            chorus_topics,
            mqtt_qos,
            client_name,
        })
    }

    /// Returns topic `index` in the broker's syntax; the empty string for an unknown index.
    pub(crate) fn topic(&self, index: usize) -> &str {
        self.topics.get(index).map_or("", String::as_str)
    }

    pub(crate) fn topic_count(&self) -> usize {
        self.topics.len()
    }

    fn chorus_topic(&self, index: usize) -> Option<&Topic> {
        self.chorus_topics.get(index)
    }
}

/// Something a session read from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// The handshake, and for a subscriber its subscription, completed. `start` is the offset
    /// of the first comment the subscription delivers, for brokers that assign offsets.
    Ready { start: Option<u64> },
    /// A message delivered to a subscription, with its offset where the broker assigns one.
    Message { payload: Bytes, offset: Option<u64> },
    /// The broker's reply to the publish that returned `key`.
    Ack { key: u64, accepted: bool },
    /// The broker's reply to the oldest barrier not yet answered.
    BarrierReply,
    /// The broker sent a keepalive ping, already answered in the output.
    Ping,
    /// The broker reported an error that does not close the connection.
    Notice(String),
}

/// Why a session cannot go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The broker sent bytes this client cannot parse.
    #[error("invalid data from the broker: {0}")]
    Protocol(String),
    /// The broker reported an error and closes, or should close, the connection.
    #[error("broker error: {0}")]
    Server(String),
}

/// One connection's protocol state.
pub(crate) trait Session: Send {
    /// Appends the bytes to send once the TCP connection is open; a subscriber's subscription
    /// follows by itself once the handshake allows it.
    fn start(&mut self, out: &mut BytesMut);

    /// Appends a publish of `payload` to topic `topic` (an index into the run's topics) and
    /// returns the key its [`Incoming::Ack`] will carry, or `None` when the protocol
    /// acknowledges no publish.
    fn publish(&mut self, topic: usize, payload: &[u8], out: &mut BytesMut) -> Option<u64>;

    /// Appends a request that the broker answers once it has read everything sent before it,
    /// and returns whether the protocol has one.
    fn barrier(&mut self, out: &mut BytesMut) -> bool;

    /// Appends the keepalive bytes due at `now`, if the protocol needs the client to send any.
    fn tick(&mut self, now: Instant, out: &mut BytesMut) {
        let _ = (now, out);
    }

    /// Consumes the complete messages at the front of `input`, appends replies the protocol
    /// requires (PONG, PUBACK) to `out` and pushes what was read to `events`.
    fn receive(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        events: &mut Vec<Incoming>,
    ) -> Result<(), SessionError>;

    /// Returns a session in the same state, for the second thread of a split connection.
    fn clone_box(&self) -> Box<dyn Session>;
}

impl BrokerKind {
    /// Returns whether the broker replies to each publish, so that publish->ack latencies and a
    /// window of unacknowledged publishes apply without barriers.
    pub(crate) fn acks_each_publish(self, mqtt_qos: u8) -> bool {
        match self {
            BrokerKind::Chorus | BrokerKind::Redis => true,
            BrokerKind::Nats => false,
            BrokerKind::Mqtt => mqtt_qos > 0,
        }
    }
}

/// Returns a new session for connection number `conn` of a run.
pub(crate) fn new_session(config: &SessionConfig, role: Role, conn: usize) -> Box<dyn Session> {
    match config.kind {
        BrokerKind::Chorus => Box::new(chorus::ChorusSession::new(config, role)),
        BrokerKind::Nats => Box::new(nats::NatsSession::new(config, role)),
        BrokerKind::Redis => Box::new(redis::RedisSession::new(config, role)),
        BrokerKind::Mqtt => Box::new(mqtt::MqttSession::new(config, role, conn)),
    }
}

/// Returns the position of the first CRLF in `buf`.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Longest control line the text protocols accept before the CRLF.
const MAX_LINE: usize = 64 * 1024;

#[cfg(test)]
pub(crate) fn test_config(kind: BrokerKind, topics: &[&str], mqtt_qos: u8) -> SessionConfig {
    let names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    SessionConfig::new(kind, &names, mqtt_qos, "bench-test".to_owned()).unwrap()
}
