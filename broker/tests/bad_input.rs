//! Hostile and broken input sent over raw sockets to the real chorusd.
//!
//! Each test connects a well-behaved client first, attacks on another connection, and checks
//! that the attacker gets the ERROR the protocol specifies followed by a close, and that the
//! well-behaved client still publishes and receives afterwards.

mod util;

use std::collections::BTreeSet;
use std::net::Shutdown;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_protocol::frame::kind;
use chorus_protocol::{
    preamble, ErrorCode, Event, Events, Frame, Publish, PublishAck, StartAt, Subscribed, Topic,
    Welcome, DEFAULT_MAX_FRAME, VERSION,
};
use socket2::SockRef;
use util::client::{self, GoodClient};
use util::raw::{
    hello_frame, hello_frame_with_max, max_tcp_send_buffer, publish_body, raw_frame,
    raw_frame_with_header, str8, subscribe_body, RawConn, FLOOD_ACK_LEN, FLOOD_TOPIC,
};
use util::{list_dir, Broker, TestDir};

/// Topic of the well-behaved client; stored as `topics/good+client`.
const GOOD_TOPIC: &str = "good/client";

/// Largest payload a broker with default settings stores.
const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;

/// A leak guard, not a benchmark: how much the broker's resident memory may grow while one
/// client floods it. Reading from that client pauses once its queue is full, which keeps the
/// real growth far below this.
const RSS_GROWTH_LIMIT: u64 = 64 * 1024 * 1024;

/// Starts a broker with the given flags and connects the well-behaved client.
fn start(dir: &TestDir, flags: &[&str]) -> (Broker, GoodClient) {
    let broker = Broker::start(&dir.data(), flags);
    let good = GoodClient::connect(&broker.addr_string(), GOOD_TOPIC);
    (broker, good)
}

/// Opens a raw connection that has completed the handshake.
fn ready_conn(broker: &Broker) -> RawConn {
    let mut conn = RawConn::connect(broker.addr);
    conn.handshake();
    conn
}

fn publish_frame(seq: u64, topic: &str, payload: Vec<u8>) -> Frame {
    Frame::Publish(Publish {
        seq,
        topic: Topic::new(topic).unwrap(),
        payload: Bytes::from(payload),
    })
}

#[test]
fn frame_length_over_maximum_is_rejected() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let mut attacker = ready_conn(&broker);

    // Only the length field is sent: the broker must reject it before the rest arrives.
    attacker.send(&(DEFAULT_MAX_FRAME + 1).to_be_bytes());
    attacker.expect_close_error(ErrorCode::FrameTooLarge);

    good.check();
}

#[test]
fn bad_crc_is_rejected() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let mut attacker = ready_conn(&broker);

    let mut frame = Frame::Ping(7).to_bytes().to_vec();
    frame[8] ^= 0xff;
    attacker.send(&frame);
    attacker.expect_close_error(ErrorCode::BadCrc);

    good.check();
}

#[test]
fn garbage_preamble_is_rejected() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let mut attacker = RawConn::connect(broker.addr);

    attacker.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    attacker.read_server_preamble();
    attacker.expect_close_error(ErrorCode::BadPreamble);

    good.check();
}

#[test]
fn preamble_version_2_is_rejected() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let mut attacker = RawConn::connect(broker.addr);

    attacker.send(b"CHORUS\x00\x02");
    attacker.read_server_preamble();
    attacker.expect_close_error(ErrorCode::UnsupportedVersion);

    good.check();
}

#[test]
fn unknown_frame_type_is_rejected() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);

    for frame_type in [0x00, kind::EVENTS_ZSTD + 1, 0xff] {
        let mut attacker = ready_conn(&broker);
        attacker.send(&raw_frame(frame_type, &[]));
        attacker.expect_close_error(ErrorCode::UnknownFrameType);
    }

    good.check();
}

#[test]
fn truncated_frame_is_reported_before_close() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let mut attacker = ready_conn(&broker);

    let frame = publish_frame(1, "event/truncated", b"never finished".to_vec()).to_bytes();
    attacker.send(&frame[..frame.len() / 2]);
    attacker.stream().shutdown(Shutdown::Write).unwrap();
    attacker.expect_close_error(ErrorCode::TruncatedFrame);

    good.check();
}

#[test]
fn frame_before_hello_is_unexpected() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let mut attacker = RawConn::connect(broker.addr);

    let mut bytes = preamble().to_vec();
    bytes.extend_from_slice(&publish_frame(1, "event/early", b"hi".to_vec()).to_bytes());
    attacker.send(&bytes);
    attacker.read_server_preamble();
    attacker.expect_close_error(ErrorCode::UnexpectedFrame);

    good.check();
}

#[test]
fn hello_with_version_2_is_rejected() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let mut attacker = RawConn::connect(broker.addr);

    let mut bytes = preamble().to_vec();
    bytes.extend_from_slice(&hello_frame(VERSION + 1));
    attacker.send(&bytes);
    attacker.read_server_preamble();
    attacker.expect_close_error(ErrorCode::UnsupportedVersion);

    good.check();
}

#[test]
fn hello_with_small_max_frame_is_rejected() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let mut attacker = RawConn::connect(broker.addr);

    // A broker with default settings builds EVENTS batches of up to 256 KiB
    // (limits.max_batch_bytes), which a client that accepts only 1 KiB could not read.
    let mut bytes = preamble().to_vec();
    bytes.extend_from_slice(&hello_frame_with_max(VERSION, 1024));
    attacker.send(&bytes);
    attacker.read_server_preamble();
    attacker.expect_close_error(ErrorCode::FrameTooLarge);

    good.check();
}

#[test]
fn malformed_frames_are_rejected() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let ping_body = 7u64.to_be_bytes();
    let topic = str8(b"event/malformed");
    let mut long_ping = ping_body.to_vec();
    long_ping.push(0);
    let mut bad_name_hello = 1u16.to_be_bytes().to_vec();
    bad_name_hello.extend_from_slice(&DEFAULT_MAX_FRAME.to_be_bytes());
    bad_name_hello.extend_from_slice(&str8(b"\xff\xfe"));
    bad_name_hello.extend_from_slice(&0u16.to_be_bytes());

    let cases = [
        (
            "flags set",
            raw_frame_with_header(kind::PING, 1, 0, &ping_body),
        ),
        (
            "reserved bytes set",
            raw_frame_with_header(kind::PING, 0, 1, &ping_body),
        ),
        (
            "bytes after the last field",
            raw_frame(kind::PING, &long_ping),
        ),
        (
            "body ends inside a field",
            raw_frame(kind::PING, &ping_body[..7]),
        ),
        (
            "unknown start mode 255",
            raw_frame(kind::SUBSCRIBE, &subscribe_body(&topic, 255, 0, 0)),
        ),
        (
            "earliest with a value",
            raw_frame(kind::SUBSCRIBE, &subscribe_body(&topic, 3, 1, 0)),
        ),
        (
            "latest with a value",
            raw_frame(kind::SUBSCRIBE, &subscribe_body(&topic, 0, 5, 0)),
        ),
        (
            "ERROR close byte 2",
            raw_frame(kind::ERROR, &[0, 1, 2, 0, 0, 0]),
        ),
        (
            "HELLO name not UTF-8",
            raw_frame(kind::HELLO, &bad_name_hello),
        ),
    ];
    for (label, frame) in cases {
        eprintln!("sending a frame with {label}");
        let mut attacker = ready_conn(&broker);
        attacker.send(&frame);
        attacker.expect_close_error(ErrorCode::MalformedFrame);
    }

    good.check();
}

#[test]
fn server_frames_from_client_are_unexpected() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let topic = Topic::new("event/reversed").unwrap();
    let welcome = Welcome {
        version: VERSION,
        max_frame: DEFAULT_MAX_FRAME,
        server_name: "not a server".to_owned(),
        max_payload: 1024,
        idle_timeout_ms: 0,
        features: 0,
    };
    let subscribed = Subscribed {
        topic: topic.clone(),
        stream: 1,
        start: 0,
        earliest: 0,
        end: 0,
    };
    let ack = PublishAck {
        seq: 1,
        code: ErrorCode::Ok,
        offset: 0,
        stream: 1,
    };
    let event = Event {
        offset: 0,
        time_us: 0,
        flags: 0,
        publisher: String::new(),
        payload: Bytes::from_static(b"forged"),
    };
    let cases = [
        ("second HELLO", hello_frame(VERSION)),
        ("WELCOME", Frame::Welcome(welcome).to_bytes().to_vec()),
        (
            "SUBSCRIBED",
            Frame::Subscribed(subscribed).to_bytes().to_vec(),
        ),
        ("PUBLISH_ACK", Frame::PublishAck(ack).to_bytes().to_vec()),
        (
            "EVENTS",
            Frame::Events(Events::new(topic, 1, &[event]))
                .to_bytes()
                .to_vec(),
        ),
    ];
    for (label, frame) in cases {
        eprintln!("sending {label}");
        let mut attacker = ready_conn(&broker);
        attacker.send(&frame);
        attacker.expect_close_error(ErrorCode::UnexpectedFrame);
    }

    good.check();
}

#[test]
fn error_from_client_closes_connection() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let mut conn = ready_conn(&broker);

    conn.send_frame(&Frame::Error(chorus_protocol::ErrorFrame {
        code: ErrorCode::MalformedFrame,
        close: true,
        topic: String::new(),
        message: "client gives up".to_owned(),
    }));
    conn.expect_eof();

    good.check();
}

#[test]
fn payload_over_maximum_is_rejected_and_connection_stays_open() {
    let dir = TestDir::new();
    let (broker, mut good) = start(&dir, &[]);
    let mut conn = ready_conn(&broker);
    let topic = "event/large";

    conn.send_frame(&publish_frame(
        1,
        topic,
        vec![b'x'; DEFAULT_MAX_PAYLOAD + 1],
    ));
    let rejected = PublishAck {
        seq: 1,
        code: ErrorCode::PayloadTooLarge,
        offset: 0,
        stream: 0,
    };
    assert_eq!(conn.read_frame(), Frame::PublishAck(rejected));

    conn.send_frame(&publish_frame(2, topic, vec![b'x'; DEFAULT_MAX_PAYLOAD]));
    let Frame::PublishAck(accepted) = conn.read_frame() else {
        panic!("expected PUBLISH_ACK");
    };
    assert_eq!(accepted.seq, 2);
    assert_eq!(accepted.code, ErrorCode::Ok);
    assert_eq!(accepted.offset, 0);

    good.check();
}

/// Encoded topic fields that break the naming rules, with a label for failure messages.
fn invalid_topic_fields() -> Vec<(&'static str, Vec<u8>)> {
    // A str8 cannot carry 256 bytes: a sender that wraps the length to a byte sends length 0
    // followed by the 256 bytes.
    let mut wrapped = vec![0u8];
    wrapped.extend_from_slice(&[b'a'; 256]);
    vec![
        ("empty", str8(b"")),
        ("256 bytes, length wrapped to 0", wrapped),
        ("255-byte segment", str8(&[b'a'; 255])),
        ("..", str8(b"..")),
        ("../x", str8(b"../x")),
        ("a/../../../x", str8(b"a/../../../x")),
        ("/etc/passwd", str8(b"/etc/passwd")),
        ("a//b", str8(b"a//b")),
        ("a\\nb", str8(b"a\nb")),
        ("a\\0b", str8(b"a\0b")),
        ("not UTF-8", str8(b"a\xffb")),
    ]
}

/// Names an escaped topic could leave behind in a directory near the data directory.
fn escape_names() -> BTreeSet<String> {
    [
        "x",
        "..+x",
        "etc",
        "passwd",
        "+etc+passwd",
        "a",
        "b",
        "a\nb",
        "a\0b",
        "a++b",
    ]
    .iter()
    .map(|name| name.to_string())
    .collect()
}

#[test]
fn invalid_topics_are_rejected_and_touch_no_files() {
    let dir = TestDir::new();
    let temp_parent = dir.root().parent().unwrap().to_owned();
    let temp_before = list_dir(&temp_parent);
    let passwd_before = std::fs::read(Path::new("/etc/passwd")).ok();
    let (broker, mut good) = start(&dir, &[]);

    for (label, field) in invalid_topic_fields() {
        let attacks = [
            (
                "PUBLISH",
                raw_frame(kind::PUBLISH, &publish_body(1, &field, b"x")),
            ),
            (
                "SUBSCRIBE",
                raw_frame(kind::SUBSCRIBE, &subscribe_body(&field, 0, 0, 0)),
            ),
            ("UNSUBSCRIBE", raw_frame(kind::UNSUBSCRIBE, &field)),
        ];
        for (frame_name, frame) in attacks {
            eprintln!("sending {frame_name} with topic {label}");
            let mut attacker = ready_conn(&broker);
            attacker.send(&frame);
            attacker.expect_close_error(ErrorCode::InvalidTopic);
        }
    }
    good.check();

    let data = dir.data();
    let expected_data: BTreeSet<String> = ["LOCK", "node_id", "topics"].map(String::from).into();
    assert_eq!(
        list_dir(&data),
        expected_data,
        "entries of the data directory"
    );
    let expected_topics: BTreeSet<String> = [GOOD_TOPIC.replace('/', "+")].into();
    assert_eq!(
        list_dir(&data.join("topics")),
        expected_topics,
        "topic directories"
    );
    let expected_root: BTreeSet<String> = ["data".to_owned()].into();
    assert_eq!(
        list_dir(dir.root()),
        expected_root,
        "entries beside the data directory"
    );

    let new_in_temp: BTreeSet<String> = list_dir(&temp_parent)
        .difference(&temp_before)
        .filter(|name| escape_names().contains(*name))
        .cloned()
        .collect();
    assert!(
        new_in_temp.is_empty(),
        "entries created in {temp_parent:?}: {new_in_temp:?}"
    );
    let passwd_after = std::fs::read(Path::new("/etc/passwd")).ok();
    assert!(passwd_before == passwd_after, "/etc/passwd changed");
}

#[test]
fn silent_client_gets_hello_timeout() {
    let dir = TestDir::new();
    let config = dir.write_config("[limits]\nhello_timeout_ms = 500\n");
    let (broker, mut good) = start(&dir, &["--config", &config]);

    let opened = Instant::now();
    let mut silent = RawConn::connect(broker.addr);
    silent.read_server_preamble();
    silent.expect_close_error(ErrorCode::Timeout);
    let waited = opened.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "TIMEOUT arrived after {waited:?}"
    );

    good.check();
}

#[test]
fn idle_client_gets_ping_then_timeout() {
    let dir = TestDir::new();
    let config = dir.write_config("[limits]\nidle_timeout_ms = 3000\n");
    let (broker, mut good) = start(&dir, &["--config", &config]);
    let mut idle = ready_conn(&broker);

    // The broker pings after half the idle time; a client that sends nothing back is closed
    // once the whole idle time has passed. The good client keeps itself busy meanwhile.
    let frame = idle.read_frame();
    assert!(
        matches!(frame, Frame::Ping(_)),
        "expected PING, got {frame:?}"
    );
    good.check();
    idle.expect_close_error(ErrorCode::Timeout);

    good.check();
}

/// Outbound queue limit of the flood tests' broker, in bytes.
const FLOOD_QUEUE_LIMIT: u64 = 65_536;

/// Starts a broker with a small outbound queue and a client that has completed the handshake
/// and has a small receive buffer, so that the broker's queue for it fills early.
fn start_flood(dir: &TestDir) -> (Broker, GoodClient, RawConn) {
    let config = dir.write_config(&format!(
        "[limits]\noutbound_queue_bytes = {FLOOD_QUEUE_LIMIT}\nmax_batch_bytes = 65536\n\
         max_payload = 32768\n"
    ));
    let (broker, good) = start(dir, &["--config", &config]);
    let mut flooder = RawConn::connect_with_recv_buffer(broker.addr, 16 * 1024);
    flooder.handshake();
    (broker, good, flooder)
}

#[test]
fn client_that_never_reads_acks_does_not_grow_memory() {
    let dir = TestDir::new();
    let (broker, mut good, mut flooder) = start_flood(&dir);
    let rss_before = broker.rss_bytes();

    flooder.flood_until_stalled();

    let rss_after = broker.rss_bytes();
    assert!(
        rss_after < rss_before + RSS_GROWTH_LIMIT,
        "chorusd grew from {rss_before} to {rss_after} bytes of resident memory"
    );
    good.check();
}

/// The acknowledgements a broker produces for a client that never reads them can only sit in
/// three places: the client's receive buffer, the broker's socket send buffer, and the
/// broker's outbound queue for the connection, which `limits.outbound_queue_bytes` bounds.
/// Everything beyond the first two must therefore fit the limit, plus the acknowledgements of
/// one read of publishes.
///
/// NOTE: an overshoot shows only when the broker finds megabytes of publishes waiting in one
/// loop iteration, so on a heavily loaded machine this test exercises the limit less.
#[test]
fn unread_acks_stay_within_queue_limit() {
    const SLACK: u64 = 256 * 1024;

    let dir = TestDir::new();
    let (broker, mut good, mut flooder) = start_flood(&dir);

    flooder.flood_until_stalled();

    // Every publish the broker read is stored and acknowledged, so the topic's end offset
    // counts the acknowledgements.
    let mut probe = client::connect(&broker.addr_string());
    let subscribed = probe
        .subscribe(&client::topic(FLOOD_TOPIC), StartAt::Latest, 0)
        .unwrap();
    let ack_bytes = subscribed.end * FLOOD_ACK_LEN;
    let client_buffer = SockRef::from(flooder.stream()).recv_buffer_size().unwrap() as u64;
    let bound = FLOOD_QUEUE_LIMIT + max_tcp_send_buffer() + 2 * client_buffer + SLACK;
    assert!(
        ack_bytes <= bound,
        "the broker produced {ack_bytes} bytes of acknowledgements for a client that reads \
         nothing; its queue limit and the socket buffers hold at most {bound}"
    );
    good.check();
}

#[test]
fn clients_dropping_mid_frame_do_not_disturb_others() {
    const CLIENTS: usize = 100;

    let dir = TestDir::new();
    let (mut broker, mut good) = start(&dir, &[]);
    let half_publish = publish_frame(1, "event/dropped", vec![b'd'; 64]).to_bytes();
    let half_publish = &half_publish[..half_publish.len() / 2];
    let hello = hello_frame(VERSION);

    for i in 0..CLIENTS {
        let mut client = RawConn::connect(broker.addr);
        match i % 4 {
            0 => client.send(&preamble()[..5]),
            1 => {
                let mut bytes = preamble().to_vec();
                bytes.extend_from_slice(&hello[..hello.len() - 3]);
                client.send(&bytes);
            }
            _ => {
                let mut bytes = preamble().to_vec();
                bytes.extend_from_slice(&hello);
                bytes.extend_from_slice(half_publish);
                client.send(&bytes);
            }
        }
        // Half of the clients reset the connection instead of closing it.
        if i % 2 == 0 {
            SockRef::from(client.stream())
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        drop(client);
    }

    good.check();
    assert!(broker.is_running(), "chorusd exited");
    let mut late = ready_conn(&broker);
    late.send_frame(&Frame::Ping(42));
    assert_eq!(late.read_frame(), Frame::Pong(42));
}
