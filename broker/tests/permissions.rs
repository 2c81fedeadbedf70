//! The permission matrix with a real chorusd on loopback: every role, and a session without a
//! token, against every operation a client can request. Each row gives the expected result of
//! one operation for each session, and a denied operation must change nothing.
//!
//! Tokens that fail verification (expired, forged, signed with an untrusted key) are refused at
//! HELLO; `auth.rs` covers them.

mod util;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chorus_client::{ClientError, Connection, ErrorCode, Frame, Options, StartAt, Topic};
use chorus_protocol::event::flags;
use chorus_protocol::{AudienceEntry, ModAction, React, RelayPublish};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use util::client::{collect_events, options, topic};
use util::{Broker, TestDir};

/// Shared secret of the test's HS256 tokens.
const SECRET: &str = "test-secret-for-the-permission-matrix";

/// Topic that every token's patterns cover.
const TOPIC: &str = "live/matrix";

/// Comments published before the matrix runs, so that deletions have targets.
const SEEDED: u64 = 10;

/// A session: a role claim, or `None` for a client without a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Anonymous,
    Viewer,
    Commenter,
    Moderator,
    Relay,
    Admin,
}

const EVERYONE: [Who; 6] = [
    Who::Anonymous,
    Who::Viewer,
    Who::Commenter,
    Who::Moderator,
    Who::Relay,
    Who::Admin,
];

impl Who {
    fn role(self) -> Option<&'static str> {
        match self {
            Who::Anonymous => None,
            Who::Viewer => Some("viewer"),
            Who::Commenter => Some("commenter"),
            Who::Moderator => Some("moderator"),
            Who::Relay => Some("relay"),
            Who::Admin => Some("admin"),
        }
    }

    /// Returns the offset this session tries to delete: a distinct one per session, so that
    /// each allowed deletion has a comment of its own.
    fn delete_target(self) -> u64 {
        EVERYONE.iter().position(|w| *w == self).expect("listed") as u64
    }
}

/// Expected result of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Carried out.
    Allowed,
    /// Refused with FORBIDDEN; the connection stays open.
    Refused,
    /// Refused with an ERROR FORBIDDEN that closes the connection.
    Closed,
}

use Answer::{Allowed, Closed, Refused};

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock is after 1970")
        .as_secs()
}

fn token(who: Who) -> String {
    let Some(role) = who.role() else {
        return String::new();
    };
    let claims = json!({
        "sub": format!("user-{role}"),
        "role": role,
        "sub_topics": ["live/**"],
        "pub_topics": ["live/**"],
        "exp": now_s() + 3600,
    });
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("HS256 key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("encode token")
}

fn start(dir: &TestDir) -> Broker {
    let config = dir.write_config(&format!(
        "[auth]\nenabled = true\nhs256_secret = {SECRET:?}\nanonymous_subscribe = [\"public/**\"]\n"
    ));
    Broker::start(&dir.data(), &["--config", &config])
}

fn connect(broker: &Broker, who: Who) -> Connection {
    let options = Options {
        token: token(who),
        ..options()
    };
    Connection::connect(&broker.addr_string(), &options)
        .unwrap_or_else(|e| panic!("{who:?}: connect: {e}"))
}

/// Classifies the result of an operation that the server acknowledges.
fn answer_of<T: std::fmt::Debug>(who: Who, op: &str, result: Result<T, ClientError>) -> Answer {
    match result {
        Ok(_) => Allowed,
        Err(ClientError::Rejected { code, .. }) | Err(ClientError::Refused { code, .. }) => {
            assert_eq!(code, ErrorCode::Forbidden, "{who:?} {op}: refusal code");
            Refused
        }
        Err(ClientError::Server { code, close, .. }) => {
            assert_eq!(code, ErrorCode::Forbidden, "{who:?} {op}: ERROR code");
            if close {
                Closed
            } else {
                Refused
            }
        }
        Err(other) => panic!("{who:?} {op}: unexpected {other}"),
    }
}

/// Sends a frame that the server does not acknowledge when it accepts it, then a round trip
/// that every session can make (a SUBSCRIBE to a topic open to everyone). Classifies the reply:
/// the round trip succeeds only when the frame was accepted.
fn unanswered(conn: &mut Connection, who: Who, op: &str, frame: &Frame) -> Answer {
    conn.send(frame)
        .unwrap_or_else(|e| panic!("{who:?} {op}: send: {e}"));
    let probe = topic("public/probe");
    answer_of(who, op, conn.subscribe(&probe, StartAt::Latest, 0))
}

fn subscribe(broker: &Broker, who: Who, topic: &Topic) -> Answer {
    let mut conn = connect(broker, who);
    answer_of(who, "SUBSCRIBE", conn.subscribe(topic, StartAt::Latest, 0))
}

fn publish(broker: &Broker, who: Who, topic: &Topic) -> Answer {
    let mut conn = connect(broker, who);
    answer_of(who, "PUBLISH", conn.publish(topic, b"matrix comment"))
}

fn delete(broker: &Broker, who: Who, topic: &Topic) -> Answer {
    let mut conn = connect(broker, who);
    let action = ModAction::DeleteComment {
        topic: topic.clone(),
        offset: who.delete_target(),
    };
    answer_of(who, "MODERATE delete", conn.moderate(action))
}

fn ban(broker: &Broker, who: Who) -> Answer {
    let mut conn = connect(broker, who);
    let action = ModAction::Ban {
        user: format!("banned-by-{who:?}"),
        purge: None,
    };
    answer_of(who, "MODERATE ban", conn.moderate(action))
}

fn unban(broker: &Broker, who: Who) -> Answer {
    let mut conn = connect(broker, who);
    let action = ModAction::Unban {
        user: format!("banned-by-{who:?}"),
    };
    answer_of(who, "MODERATE unban", conn.moderate(action))
}

fn slow_mode(broker: &Broker, who: Who, topic: &Topic) -> Answer {
    let mut conn = connect(broker, who);
    let action = ModAction::SlowMode {
        topic: topic.clone(),
        interval_ms: 0,
    };
    answer_of(who, "MODERATE slow mode", conn.moderate(action))
}

fn relay_publish(broker: &Broker, who: Who, topic: &Topic) -> Answer {
    let mut conn = connect(broker, who);
    let frame = Frame::RelayPublish(RelayPublish {
        seq: 1,
        topic: topic.clone(),
        user: "someone-below".to_owned(),
        priority: false,
        payload: Bytes::from_static(b"forwarded comment"),
    });
    conn.send(&frame)
        .unwrap_or_else(|e| panic!("{who:?} RELAY_PUBLISH: send: {e}"));
    let result = match conn.recv() {
        Ok(Frame::PublishAck(ack)) if ack.code == ErrorCode::Ok => Ok(()),
        Ok(Frame::PublishAck(ack)) => Err(ClientError::Rejected {
            seq: ack.seq,
            code: ack.code,
        }),
        Ok(other) => panic!("{who:?} RELAY_PUBLISH: expected PUBLISH_ACK, got {other:?}"),
        Err(e) => Err(e),
    };
    answer_of(who, "RELAY_PUBLISH", result)
}

fn react_sum(broker: &Broker, who: Who, topic: &Topic) -> Answer {
    let mut conn = connect(broker, who);
    let frame = Frame::React(React {
        topic: topic.clone(),
        kind: "clap".to_owned(),
        count: 2,
    });
    unanswered(&mut conn, who, "REACT count 2", &frame)
}

fn audience(broker: &Broker, who: Who, topic: &Topic) -> Answer {
    let mut conn = connect(broker, who);
    let frame = Frame::Audience(vec![AudienceEntry {
        topic: topic.clone(),
        viewers: 7,
    }]);
    unanswered(&mut conn, who, "AUDIENCE", &frame)
}

/// Expected answers, in the order of [`EVERYONE`]: anonymous, viewer, commenter, moderator,
/// relay, admin.
type Row = [Answer; 6];

const SUBSCRIBE: Row = [Refused, Allowed, Allowed, Allowed, Allowed, Allowed];
const PUBLISH: Row = [Refused, Refused, Allowed, Allowed, Allowed, Allowed];
const MODERATE: Row = [Refused, Refused, Refused, Allowed, Allowed, Allowed];
const RELAY_PUBLISH: Row = [Refused, Refused, Refused, Refused, Allowed, Refused];
const RELAY_ONLY_FRAME: Row = [Closed, Closed, Closed, Closed, Allowed, Closed];

/// Publishes the comments that deletions target, as an admin.
fn seed(broker: &Broker, topic: &Topic) {
    let mut seeder = connect(broker, Who::Admin);
    for i in 0..SEEDED {
        seeder
            .publish(topic, format!("seed {i}").as_bytes())
            .expect("admin seeds the topic");
    }
}

fn check_row(op: &str, expected: Row, mut run: impl FnMut(Who) -> Answer) {
    for (who, want) in EVERYONE.into_iter().zip(expected) {
        assert_eq!(run(who), want, "{op} by {who:?}");
    }
}

#[test]
fn every_role_gets_the_answer_its_permissions_give() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let topic = topic(TOPIC);
    seed(&broker, &topic);

    check_row("SUBSCRIBE", SUBSCRIBE, |who| {
        subscribe(&broker, who, &topic)
    });
    check_row("PUBLISH", PUBLISH, |who| publish(&broker, who, &topic));
    check_row("MODERATE delete", MODERATE, |who| {
        delete(&broker, who, &topic)
    });
    check_row("MODERATE ban", MODERATE, |who| ban(&broker, who));
    check_row("MODERATE unban", MODERATE, |who| unban(&broker, who));
    check_row("MODERATE slow mode", MODERATE, |who| {
        slow_mode(&broker, who, &topic)
    });
    check_row("RELAY_PUBLISH", RELAY_PUBLISH, |who| {
        relay_publish(&broker, who, &topic)
    });
    check_row("REACT count 2", RELAY_ONLY_FRAME, |who| {
        react_sum(&broker, who, &topic)
    });
    check_row("AUDIENCE", RELAY_ONLY_FRAME, |who| {
        audience(&broker, who, &topic)
    });
}

#[test]
fn refused_deletions_leave_the_comments_in_history() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let topic = topic(TOPIC);
    seed(&broker, &topic);
    for who in EVERYONE {
        delete(&broker, who, &topic);
    }

    let allowed: Vec<u64> = EVERYONE
        .into_iter()
        .zip(MODERATE)
        .filter(|(_, rule)| *rule == Allowed)
        .map(|(who, _)| who.delete_target())
        .collect();
    let mut reader = connect(&broker, Who::Admin);
    reader
        .subscribe(&topic, StartAt::Offset(0), 0)
        .expect("admin reads history");
    // History contains the seeded comments, then one tombstone per allowed deletion.
    let events = collect_events(&mut reader, &topic, SEEDED as usize + allowed.len());
    for who in EVERYONE {
        let event = &events[who.delete_target() as usize];
        let deleted = event.flags & flags::DELETED != 0;
        assert_eq!(
            deleted,
            allowed.contains(&who.delete_target()),
            "comment {} that {who:?} tried to delete: {event:?}",
            event.offset
        );
    }
    let targets: Vec<Option<u64>> = events[SEEDED as usize..]
        .iter()
        .map(|e| e.tombstone_target())
        .collect();
    let expected: Vec<Option<u64>> = allowed.iter().map(|o| Some(*o)).collect();
    assert_eq!(targets, expected, "tombstones after the seeded comments");
}
