//! Moderation at the origin with real chorusd processes on loopback: who may moderate, deleted
//! comments and their tombstones across restarts, bans and purges, slow mode, the per-user rate
//! limit, duplicate suppression, blocked words, reserved topics and RELAY_PUBLISH.
//!
//! Most tests run without authentication and publish as named users with RELAY_PUBLISH. They
//! send it from a connection whose HELLO carries a relay chain, because without authentication
//! that chain is what makes a session a relay session. Limits whose counts depend on time use
//! intervals of an hour or a minute, so the counts are exact however slow the machine is.

mod util;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chorus_client::{ClientError, Connection, ErrorCode, Event, Frame, Options, StartAt};
use chorus_protocol::event::flags;
use chorus_protocol::{ModAction, RelayPublish};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use util::client::{collect_events, connect, options, topic};
use util::{Broker, TestDir};

/// Shared secret of the test's HS256 tokens.
const SECRET: &str = "test-secret-for-moderation-tokens";

/// `client_name` of a connection that the origin treats as a relay session.
const RELAY_CLIENT_NAME: &str = "moderation-test chorus-relay/test-relay";

/// First `seq` of the RELAY_PUBLISH frames a test sends itself, far from the client's own.
const FIRST_RELAY_SEQ: u64 = 1 << 40;

/// A broker and the directory of its data and configuration.
struct Node {
    broker: Broker,
    dir: TestDir,
    config: String,
}

impl Node {
    /// Starts a broker with `config` as its configuration file.
    fn start(config: &str) -> Node {
        let dir = TestDir::new();
        let config = dir.write_config(config);
        let broker = Broker::start(&dir.data(), &["--config", &config]);
        Node {
            broker,
            dir,
            config,
        }
    }

    fn addr(&self) -> String {
        self.broker.addr_string()
    }

    /// Stops the broker and starts it again on the same data directory and configuration.
    fn restart(&mut self) {
        assert!(self.broker.stop(), "chorusd exited with an error");
        self.broker = Broker::start(&self.dir.data(), &["--config", &self.config]);
    }
}

/// A connection that sends RELAY_PUBLISH frames as a relay would.
struct RelaySession {
    conn: Connection,
    next_seq: u64,
}

impl RelaySession {
    fn connect(addr: &str) -> RelaySession {
        let options = Options {
            client_name: RELAY_CLIENT_NAME.to_owned(),
            ..options()
        };
        let conn = Connection::connect(addr, &options).expect("connect as a relay");
        RelaySession {
            conn,
            next_seq: FIRST_RELAY_SEQ,
        }
    }

    /// Publishes `payload` to `topic` as `user` and returns the acknowledgement's code.
    fn publish(&mut self, topic_name: &str, user: &str, payload: &[u8]) -> ErrorCode {
        self.publish_with(topic_name, user, false, payload).code
    }

    /// Publishes as `user` with the priority flag, and returns the acknowledgement.
    fn publish_with(
        &mut self,
        topic_name: &str,
        user: &str,
        priority: bool,
        payload: &[u8],
    ) -> chorus_client::PublishAck {
        let seq = self.next_seq;
        self.next_seq += 1;
        let frame = Frame::RelayPublish(RelayPublish {
            seq,
            topic: topic(topic_name),
            user: user.to_owned(),
            priority,
            payload: Bytes::copy_from_slice(payload),
        });
        self.conn.send(&frame).expect("send RELAY_PUBLISH");
        wait_for_ack(&mut self.conn, seq)
    }
}

/// Reads frames until the PUBLISH_ACK with `seq`.
fn wait_for_ack(conn: &mut Connection, seq: u64) -> chorus_client::PublishAck {
    for _ in 0..1000 {
        match conn.recv().expect("read PUBLISH_ACK") {
            Frame::PublishAck(ack) if ack.seq == seq => return ack,
            Frame::PublishAck(_) => {}
            other => panic!("expected PUBLISH_ACK, got {other:?}"),
        }
    }
    panic!("no PUBLISH_ACK for seq {seq} within 1000 frames");
}

/// Returns the code of a PUBLISH: OK or the rejection.
fn publish_code(conn: &mut Connection, topic_name: &str, payload: &[u8]) -> ErrorCode {
    match conn.publish(&topic(topic_name), payload) {
        Ok(_) => ErrorCode::Ok,
        Err(ClientError::Rejected { code, .. }) => code,
        Err(other) => panic!("publish failed: {other}"),
    }
}

/// Returns the code of a MODERATE: OK or the refusal.
fn moderate_code(conn: &mut Connection, action: ModAction) -> ErrorCode {
    match conn.moderate(action) {
        Ok(()) => ErrorCode::Ok,
        Err(ClientError::Refused { code, .. }) => code,
        Err(other) => panic!("moderate failed: {other}"),
    }
}

/// Subscribes from the earliest offset and returns the first `count` entries.
fn read_from_earliest(addr: &str, topic_name: &str, count: usize) -> Vec<Event> {
    let mut conn = connect(addr);
    let topic = topic(topic_name);
    conn.subscribe(&topic, StartAt::Earliest, 0)
        .expect("subscribe from earliest");
    collect_events(&mut conn, &topic, count)
}

/// Returns the offset the next comment of `topic` will get.
fn end_offset(addr: &str, topic_name: &str) -> u64 {
    let mut conn = connect(addr);
    let subscribed = conn
        .subscribe(&topic(topic_name), StartAt::Latest, 0)
        .expect("subscribe");
    subscribed.end
}

fn delete(topic_name: &str, offset: u64) -> ModAction {
    ModAction::DeleteComment {
        topic: topic(topic_name),
        offset,
    }
}

fn ban(user: &str) -> ModAction {
    ModAction::Ban {
        user: user.to_owned(),
        purge: None,
    }
}

fn tombstone_target(event: &Event) -> Option<u64> {
    event.tombstone_target()
}

// --- Permissions -------------------------------------------------------------------------------

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock is after 1970")
        .as_secs()
}

fn claims(sub: &str, role: &str) -> Value {
    json!({
        "sub": sub,
        "role": role,
        "sub_topics": ["**"],
        "pub_topics": ["**"],
        "exp": now_s() + 3600,
    })
}

fn hs256_token(claims: &Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("HS256 key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("encode token")
}

fn auth_config() -> String {
    format!("[auth]\nenabled = true\nhs256_secret = {SECRET:?}\nleeway_s = 0\n")
}

fn connect_with_token(addr: &str, token: &str) -> Connection {
    let options = Options {
        token: token.to_owned(),
        ..options()
    };
    Connection::connect(addr, &options).expect("connect with a token")
}

#[test]
fn moderate_permissions_follow_the_role() {
    let node = Node::start(&auth_config());
    let addr = node.addr();
    let mut admin = connect_with_token(&addr, &hs256_token(&claims("boss", "admin"), SECRET));
    for i in 0..12 {
        assert_eq!(
            publish_code(&mut admin, "live/perm", format!("comment {i}").as_bytes()),
            ErrorCode::Ok
        );
    }
    let roles: [(&str, Option<&str>, bool); 6] = [
        ("viewer", Some("viewer"), false),
        ("commenter", Some("commenter"), false),
        ("moderator", Some("moderator"), true),
        ("relay", Some("relay"), true),
        ("admin", Some("admin"), true),
        ("anonymous", None, false),
    ];

    let mut next_offset = 0;
    for (name, role, allowed) in roles {
        let token = role.map_or(String::new(), |role| {
            hs256_token(&claims(name, role), SECRET)
        });
        let mut conn = connect_with_token(&addr, &token);
        let actions = [
            ("delete comment", delete("live/perm", next_offset)),
            ("ban", ban("target")),
            (
                "unban",
                ModAction::Unban {
                    user: "target".into(),
                },
            ),
            (
                "slow mode",
                ModAction::SlowMode {
                    topic: topic("live/perm"),
                    interval_ms: 0,
                },
            ),
        ];
        for (action_name, action) in actions {
            let expected = if allowed {
                ErrorCode::Ok
            } else {
                ErrorCode::Forbidden
            };
            assert_eq!(
                moderate_code(&mut conn, action),
                expected,
                "{name} sends {action_name}"
            );
        }
        if allowed {
            next_offset += 1;
        }
    }
}

#[test]
fn invalid_tokens_are_refused_at_hello() {
    let node = Node::start(&auth_config());
    let mut expired = claims("mod", "moderator");
    expired["exp"] = json!(now_s() - 60);
    let valid = claims("mod", "moderator");
    let mut tampered = hs256_token(&valid, SECRET);
    let signature_start = tampered.rfind('.').expect("a JWT has three parts") + 1;
    let flipped = if tampered.as_bytes()[signature_start] == b'A' {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(signature_start..signature_start + 1, flipped);
    let cases = [
        ("expired", hs256_token(&expired, SECRET)),
        (
            "forged with another secret",
            hs256_token(&valid, "not-the-secret"),
        ),
        ("signature changed", tampered),
    ];

    for (case, token) in cases {
        let options = Options { token, ..options() };
        match Connection::connect(&node.addr(), &options) {
            Err(ClientError::Server { code, close, .. }) => {
                assert_eq!(code, ErrorCode::Unauthenticated, "{case}: code");
                assert!(close, "{case}: close flag");
            }
            other => panic!("{case}: expected an ERROR, got {other:?}"),
        }
    }
}

#[test]
fn relay_publish_from_other_sessions_is_forbidden() {
    let node = Node::start(&auth_config());
    let token = hs256_token(&claims("carol", "commenter"), SECRET);
    let mut conn = connect_with_token(&node.addr(), &token);
    let frame = Frame::RelayPublish(RelayPublish {
        seq: 77,
        topic: topic("live/relay"),
        user: "mallory".into(),
        priority: true,
        payload: Bytes::from_static(b"impersonation"),
    });

    conn.send(&frame).expect("send RELAY_PUBLISH");
    let ack = wait_for_ack(&mut conn, 77);

    assert_eq!(ack.code, ErrorCode::Forbidden);
}

#[test]
fn relay_publish_stores_user_and_priority() {
    let node = Node::start("");
    let mut relay = RelaySession::connect(&node.addr());

    let plain = relay.publish_with("live/relayed", "alice", false, b"hello");
    let host = relay.publish_with("live/relayed", "host", true, b"welcome");
    let events = read_from_earliest(&node.addr(), "live/relayed", 2);

    assert_eq!(plain.code, ErrorCode::Ok);
    assert_eq!(host.code, ErrorCode::Ok);
    assert_eq!(events[0].publisher, "alice");
    assert_eq!(events[0].flags & flags::PRIORITY, 0);
    assert_eq!(events[1].publisher, "host");
    assert_eq!(events[1].flags & flags::PRIORITY, flags::PRIORITY);
}

// --- Deleting comments -------------------------------------------------------------------------

#[test]
fn deleted_comment_reads_as_deleted_after_restart() {
    let mut node = Node::start("");
    let mut relay = RelaySession::connect(&node.addr());
    for text in ["first", "rude", "third"] {
        assert_eq!(
            relay.publish("live/del", "alice", text.as_bytes()),
            ErrorCode::Ok
        );
    }
    let mut live = connect(&node.addr());
    live.subscribe(&topic("live/del"), StartAt::Latest, 0)
        .expect("subscribe");
    let mut moderator = connect(&node.addr());

    assert_eq!(
        moderate_code(&mut moderator, delete("live/del", 1)),
        ErrorCode::Ok
    );

    let tombstones = collect_events(&mut live, &topic("live/del"), 1);
    assert_eq!(tombstones[0].offset, 3);
    assert_eq!(tombstones[0].flags & flags::TOMBSTONE, flags::TOMBSTONE);
    assert_eq!(tombstone_target(&tombstones[0]), Some(1));

    for phase in ["before restart", "after restart"] {
        let events = read_from_earliest(&node.addr(), "live/del", 4);
        assert_eq!(events[0].payload.as_ref(), b"first", "{phase}");
        assert_eq!(events[1].offset, 1, "{phase}");
        assert_eq!(events[1].flags & flags::DELETED, flags::DELETED, "{phase}");
        assert!(events[1].payload.is_empty(), "{phase}: deleted payload");
        assert_eq!(events[1].publisher, "alice", "{phase}: publisher kept");
        assert_eq!(events[2].payload.as_ref(), b"third", "{phase}");
        assert_eq!(events[2].flags & flags::DELETED, 0, "{phase}");
        assert_eq!(tombstone_target(&events[3]), Some(1), "{phase}");
        if phase == "before restart" {
            node.restart();
        }
    }
}

#[test]
fn last_and_since_reads_return_deleted_comment() {
    let node = Node::start("");
    let mut relay = RelaySession::connect(&node.addr());
    for text in ["a", "b", "c"] {
        assert_eq!(
            relay.publish("live/modes", "alice", text.as_bytes()),
            ErrorCode::Ok
        );
    }
    let mut moderator = connect(&node.addr());
    assert_eq!(
        moderate_code(&mut moderator, delete("live/modes", 2)),
        ErrorCode::Ok
    );
    let topic = topic("live/modes");

    for start in [StartAt::Last(3), StartAt::Since(0), StartAt::Offset(2)] {
        let mut conn = connect(&node.addr());
        let subscribed = conn.subscribe(&topic, start, 0).expect("subscribe");
        let count = (subscribed.end - subscribed.start) as usize;
        let events = collect_events(&mut conn, &topic, count);
        let deleted = events
            .iter()
            .find(|e| e.offset == 2)
            .expect("offset 2 is read");
        assert_eq!(deleted.flags & flags::DELETED, flags::DELETED, "{start:?}");
        assert!(deleted.payload.is_empty(), "{start:?}");
    }
}

#[test]
fn deleting_twice_appends_one_tombstone() {
    let node = Node::start("");
    let mut relay = RelaySession::connect(&node.addr());
    assert_eq!(relay.publish("live/twice", "alice", b"oops"), ErrorCode::Ok);
    let mut moderator = connect(&node.addr());

    let first = moderate_code(&mut moderator, delete("live/twice", 0));
    let second = moderate_code(&mut moderator, delete("live/twice", 0));

    assert_eq!(first, ErrorCode::Ok);
    assert_eq!(second, ErrorCode::Ok);
    assert_eq!(end_offset(&node.addr(), "live/twice"), 2);
}

#[test]
fn delete_outside_kept_comments_is_not_found() {
    let node = Node::start("");
    let mut relay = RelaySession::connect(&node.addr());
    assert_eq!(relay.publish("live/nf", "alice", b"only"), ErrorCode::Ok);
    let mut moderator = connect(&node.addr());
    assert_eq!(
        moderate_code(&mut moderator, delete("live/nf", 0)),
        ErrorCode::Ok
    );

    let cases = [
        ("past the end", delete("live/nf", 2)),
        ("far past the end", delete("live/nf", u64::MAX)),
        ("a tombstone", delete("live/nf", 1)),
        ("a topic without comments", delete("live/empty", 0)),
    ];
    for (case, action) in cases {
        assert_eq!(
            moderate_code(&mut moderator, action),
            ErrorCode::CommentNotFound,
            "{case}"
        );
    }
}

// --- Bans ----------------------------------------------------------------------------------------

#[test]
fn ban_is_kept_across_restart() {
    let mut node = Node::start("");
    let mut moderator = connect(&node.addr());
    assert_eq!(moderate_code(&mut moderator, ban("spammer")), ErrorCode::Ok);

    let mut relay = RelaySession::connect(&node.addr());
    assert_eq!(
        relay.publish("live/ban", "spammer", b"buy"),
        ErrorCode::Banned
    );
    assert_eq!(relay.publish("live/ban", "alice", b"hi"), ErrorCode::Ok);

    node.restart();
    let mut relay = RelaySession::connect(&node.addr());
    assert_eq!(
        relay.publish("live/ban", "spammer", b"buy"),
        ErrorCode::Banned
    );

    let mut moderator = connect(&node.addr());
    let unban = ModAction::Unban {
        user: "spammer".into(),
    };
    assert_eq!(moderate_code(&mut moderator, unban), ErrorCode::Ok);
    assert_eq!(
        relay.publish("live/ban", "spammer", b"sorry"),
        ErrorCode::Ok
    );
}

#[test]
fn ban_purge_deletes_recent_comments_only() {
    let node = Node::start("");
    let mut relay = RelaySession::connect(&node.addr());
    // Stored long enough before the ban to fall outside a purge window of 2 seconds.
    assert_eq!(
        relay.publish("live/purge", "spammer", b"old"),
        ErrorCode::Ok
    );
    std::thread::sleep(Duration::from_secs(4));
    let recent = [
        ("spammer", "spam 1"),
        ("alice", "hello"),
        ("spammer", "spam 2"),
        ("bob", "spam 2"),
        ("spammer", "spam 3"),
    ];
    for (user, text) in recent {
        assert_eq!(
            relay.publish("live/purge", user, text.as_bytes()),
            ErrorCode::Ok
        );
    }
    assert_eq!(
        relay.publish("live/other", "spammer", b"elsewhere"),
        ErrorCode::Ok
    );
    let mut moderator = connect(&node.addr());

    let purge = ModAction::Ban {
        user: "spammer".into(),
        purge: Some((topic("live/purge"), 2)),
    };
    assert_eq!(moderate_code(&mut moderator, purge), ErrorCode::Ok);

    let events = read_from_earliest(&node.addr(), "live/purge", 9);
    let deleted: Vec<u64> = events
        .iter()
        .filter(|e| e.flags & flags::DELETED != 0)
        .map(|e| e.offset)
        .collect();
    let targets: Vec<u64> = events.iter().filter_map(tombstone_target).collect();
    assert_eq!(deleted, vec![1, 3, 5]);
    assert_eq!(targets, vec![1, 3, 5]);
    assert_eq!(events.len(), 9);
    let other = read_from_earliest(&node.addr(), "live/other", 1);
    assert_eq!(other[0].flags & flags::DELETED, 0);
}

#[test]
fn purge_longer_than_the_maximum_is_forbidden() {
    let node = Node::start("[moderation]\nmax_purge_s = 60\n");
    let mut moderator = connect(&node.addr());
    let purge = ModAction::Ban {
        user: "spammer".into(),
        purge: Some((topic("live/max"), 61)),
    };

    assert_eq!(moderate_code(&mut moderator, purge), ErrorCode::Forbidden);
    let mut relay = RelaySession::connect(&node.addr());
    assert_eq!(
        relay.publish("live/max", "spammer", b"still here"),
        ErrorCode::Ok
    );
}

// --- Publish limits ------------------------------------------------------------------------------

#[test]
fn slow_mode_allows_one_comment_per_interval() {
    let mut node = Node::start("");
    let mut moderator = connect(&node.addr());
    let slow = ModAction::SlowMode {
        topic: topic("live/slow"),
        interval_ms: 3_600_000,
    };
    assert_eq!(moderate_code(&mut moderator, slow), ErrorCode::Ok);
    let mut relay = RelaySession::connect(&node.addr());

    let codes: Vec<ErrorCode> = (0..4)
        .map(|i| relay.publish("live/slow", "alice", format!("try {i}").as_bytes()))
        .collect();
    assert_eq!(
        codes,
        [
            ErrorCode::Ok,
            ErrorCode::SlowMode,
            ErrorCode::SlowMode,
            ErrorCode::SlowMode
        ]
    );
    assert_eq!(relay.publish("live/slow", "bob", b"hi"), ErrorCode::Ok);
    assert_eq!(relay.publish("live/fast", "alice", b"hi"), ErrorCode::Ok);

    node.restart();
    let mut relay = RelaySession::connect(&node.addr());
    assert_eq!(relay.publish("live/slow", "carol", b"one"), ErrorCode::Ok);
    assert_eq!(
        relay.publish("live/slow", "carol", b"two"),
        ErrorCode::SlowMode
    );

    let mut moderator = connect(&node.addr());
    let off = ModAction::SlowMode {
        topic: topic("live/slow"),
        interval_ms: 0,
    };
    assert_eq!(moderate_code(&mut moderator, off), ErrorCode::Ok);
    assert_eq!(relay.publish("live/slow", "carol", b"three"), ErrorCode::Ok);
}

#[test]
fn rate_limit_allows_the_burst_exactly() {
    // One token a minute: no token comes back while the test runs.
    let node = Node::start("[moderation]\nrate_per_minute = 1\nrate_burst = 3\n");
    let mut relay = RelaySession::connect(&node.addr());

    let codes: Vec<ErrorCode> = (0..5)
        .map(|i| relay.publish(&format!("live/rate{i}"), "alice", b"hi"))
        .collect();

    assert_eq!(
        codes,
        [
            ErrorCode::Ok,
            ErrorCode::Ok,
            ErrorCode::Ok,
            ErrorCode::RateLimited,
            ErrorCode::RateLimited
        ]
    );
    assert_eq!(relay.publish("live/rate0", "bob", b"hi"), ErrorCode::Ok);
}

#[test]
fn rejected_comment_keeps_its_token() {
    let config = "[moderation]\nrate_per_minute = 1\nrate_burst = 2\n\
                  duplicate_window_ms = 3600000\nblocked_words = [\"spam\"]\n";
    let node = Node::start(config);
    let mut relay = RelaySession::connect(&node.addr());

    let codes = [
        relay.publish("live/count", "alice", b"same"),
        relay.publish("live/count", "alice", b"same"),
        relay.publish("live/count", "alice", b"spam"),
        relay.publish("live/count", "alice", b"other"),
        relay.publish("live/count", "alice", b"third"),
    ];

    assert_eq!(
        codes,
        [
            ErrorCode::Ok,
            ErrorCode::DuplicateComment,
            ErrorCode::BlockedContent,
            ErrorCode::Ok,
            ErrorCode::RateLimited
        ]
    );
}

#[test]
fn duplicate_payload_is_rejected_per_user_and_topic() {
    let node = Node::start("[moderation]\nduplicate_window_ms = 3600000\n");
    let mut relay = RelaySession::connect(&node.addr());

    let cases = [
        ("first time", "live/dup", "alice", "gooal", ErrorCode::Ok),
        (
            "same again",
            "live/dup",
            "alice",
            "gooal",
            ErrorCode::DuplicateComment,
        ),
        (
            "other payload",
            "live/dup",
            "alice",
            "what a match",
            ErrorCode::Ok,
        ),
        ("other user", "live/dup", "bob", "gooal", ErrorCode::Ok),
        ("other topic", "live/dup2", "alice", "gooal", ErrorCode::Ok),
        (
            "still a duplicate",
            "live/dup",
            "alice",
            "gooal",
            ErrorCode::DuplicateComment,
        ),
    ];
    for (case, topic_name, user, text, expected) in cases {
        assert_eq!(
            relay.publish(topic_name, user, text.as_bytes()),
            expected,
            "{case}"
        );
    }
}

#[test]
fn blocked_words_match_whole_words_case_insensitively() {
    let node = Node::start("[moderation]\nblocked_words = [\"spam\", \"free money\"]\n");
    let mut conn = connect(&node.addr());

    let cases: [(&str, &[u8], ErrorCode); 6] = [
        ("word", b"buy SPAM now", ErrorCode::BlockedContent),
        ("word with punctuation", b"spam!", ErrorCode::BlockedContent),
        ("longer word", b"no spammers here", ErrorCode::Ok),
        ("phrase", b"get Free Money today", ErrorCode::BlockedContent),
        ("phrase words apart", b"free the money", ErrorCode::Ok),
        (
            "not UTF-8",
            &[0xff, b' ', b's', b'p', b'a', b'm'],
            ErrorCode::Ok,
        ),
    ];
    for (case, payload, expected) in cases {
        assert_eq!(
            publish_code(&mut conn, "live/words", payload),
            expected,
            "{case}"
        );
    }
}

#[test]
fn reserved_topics_reject_publishes_but_not_subscribers() {
    let node = Node::start("");
    let mut conn = connect(&node.addr());
    let mut relay = RelaySession::connect(&node.addr());

    let subscribed = conn.subscribe(&topic("_viewers/live"), StartAt::Latest, 0);

    assert!(subscribed.is_ok(), "{subscribed:?}");
    assert_eq!(
        publish_code(&mut conn, "_viewers/live", b"{}"),
        ErrorCode::Forbidden
    );
    assert_eq!(
        relay.publish("_reactions/live", "alice", b"{}"),
        ErrorCode::Forbidden
    );
    assert_eq!(
        publish_code(&mut conn, "live/_not_reserved", b"ok"),
        ErrorCode::Ok
    );
}

#[test]
fn moderation_file_is_in_the_data_directory() {
    let node = Node::start("");
    let mut moderator = connect(&node.addr());
    assert_eq!(moderate_code(&mut moderator, ban("someone")), ErrorCode::Ok);

    let text = std::fs::read_to_string(node.dir.data().join("moderation.json"))
        .expect("read moderation.json");
    let file: Value = serde_json::from_str(&text).expect("moderation.json is JSON");

    assert_eq!(file["version"], 1);
    assert!(file["bans"]["someone"].is_object(), "{file}");
}
