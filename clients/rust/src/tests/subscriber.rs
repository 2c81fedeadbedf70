use std::time::Duration;

use bytes::Bytes;
use chorus_protocol::{
    ErrorCode, ErrorFrame, Event, Events, Frame, StartAt, Subscribe, Subscribed, Topic,
};

use super::fake::{options, welcome, FakeServer, Peer, Script};
use crate::{ClientError, Subscriber};

fn topic() -> Topic {
    Topic::new("news/breaking").unwrap()
}

fn events(stream: u64, offsets: impl IntoIterator<Item = u64>) -> Frame {
    let batch: Vec<Event> = offsets
        .into_iter()
        .map(|offset| Event {
            offset,
            time_us: 1_700_000_000_000_000,
            flags: 0,
            publisher: String::new(),
            payload: Bytes::from(format!("comment {offset}")),
        })
        .collect();
    Frame::Events(Events::new(topic(), stream, &batch))
}

fn error(code: ErrorCode, close: bool) -> Frame {
    Frame::Error(ErrorFrame {
        code,
        close,
        topic: topic().to_string(),
        message: "scripted error".to_owned(),
    })
}

/// Completes the handshake, checks the SUBSCRIBE and confirms it with `stream` and `start`.
fn accept_subscribe(peer: &mut Peer, start: StartAt, stream: u64, reply: (u64, u64)) {
    peer.handshake();
    let expected = Subscribe {
        topic: topic(),
        start,
        stream,
    };
    assert_eq!(peer.recv(), Frame::Subscribe(expected));
    let (new_stream, new_start) = reply;
    peer.send(Frame::Subscribed(Subscribed {
        topic: topic(),
        stream: new_stream,
        start: new_start,
        earliest: 0,
        end: new_start,
    }));
}

fn next_offsets(subscriber: &mut Subscriber, count: usize) -> Vec<u64> {
    (0..count)
        .map(|_| subscriber.next_event().unwrap().offset)
        .collect()
}

#[test]
fn resume_after_drop_has_no_gap_or_duplicate() {
    let first: Script = Box::new(|peer| {
        accept_subscribe(peer, StartAt::Latest, 0, (7, 0));
        peer.send(events(7, 0..3));
        peer.send(events(7, [3]));
    });
    // The second connection resumes at offset 4 and gets a batch that repeats 2 and 3.
    let second: Script = Box::new(|peer| {
        accept_subscribe(peer, StartAt::Offset(4), 7, (7, 2));
        peer.send(events(7, 2..7));
    });
    let server = FakeServer::start(vec![first, second]);
    let mut subscriber =
        Subscriber::connect(server.addr(), topic(), StartAt::Latest, options()).unwrap();

    let offsets = next_offsets(&mut subscriber, 7);

    assert_eq!(offsets, (0..7).collect::<Vec<u64>>());
    assert_eq!(subscriber.reconnects(), 1);
    assert_eq!(subscriber.next_offset(), 7);
    assert_eq!(subscriber.subscribed().start, 2);
    drop(subscriber);
    server.join();
}

#[test]
fn stream_change_is_reported_once() {
    let first: Script = Box::new(|peer| {
        accept_subscribe(peer, StartAt::Earliest, 0, (7, 0));
        peer.send(events(7, 0..2));
    });
    let second: Script = Box::new(|peer| {
        accept_subscribe(peer, StartAt::Offset(2), 7, (8, 0));
        peer.send(events(8, 0..2));
    });
    let server = FakeServer::start(vec![first, second]);
    let mut subscriber =
        Subscriber::connect(server.addr(), topic(), StartAt::Earliest, options()).unwrap();

    let before = next_offsets(&mut subscriber, 2);
    let notice = subscriber.next_event().unwrap_err();
    let after = next_offsets(&mut subscriber, 2);

    assert_eq!(before, vec![0, 1]);
    assert!(
        matches!(notice, ClientError::StreamChanged { old: 7, new: 8 }),
        "{notice:?}"
    );
    assert_eq!(after, vec![0, 1]);
    assert_eq!(subscriber.stream(), 8);
    drop(subscriber);
    server.join();
}

#[test]
fn stream_change_within_connection_is_reported() {
    let server = FakeServer::one(|peer| {
        accept_subscribe(peer, StartAt::Latest, 0, (7, 10));
        peer.send(events(7, [10]));
        peer.send(events(9, [0]));
    });
    let mut subscriber =
        Subscriber::connect(server.addr(), topic(), StartAt::Latest, options()).unwrap();

    let before = next_offsets(&mut subscriber, 1);
    let notice = subscriber.next_event().unwrap_err();
    let after = next_offsets(&mut subscriber, 1);

    assert_eq!(before, vec![10]);
    assert!(
        matches!(notice, ClientError::StreamChanged { old: 7, new: 9 }),
        "{notice:?}"
    );
    assert_eq!(after, vec![0]);
    drop(subscriber);
    server.join();
}

#[test]
fn shutting_down_error_reconnects() {
    let first: Script = Box::new(|peer| {
        accept_subscribe(peer, StartAt::Latest, 0, (7, 0));
        peer.send(events(7, [0]));
        peer.send(error(ErrorCode::ShuttingDown, true));
    });
    let second: Script = Box::new(|peer| {
        accept_subscribe(peer, StartAt::Offset(1), 7, (7, 1));
        peer.send(events(7, [1]));
    });
    let server = FakeServer::start(vec![first, second]);
    let mut subscriber =
        Subscriber::connect(server.addr(), topic(), StartAt::Latest, options()).unwrap();

    let offsets = next_offsets(&mut subscriber, 2);

    assert_eq!(offsets, vec![0, 1]);
    assert_eq!(subscriber.reconnects(), 1);
    drop(subscriber);
    server.join();
}

#[test]
fn permanent_error_on_resubscribe_is_returned() {
    let first: Script = Box::new(|peer| {
        accept_subscribe(peer, StartAt::Latest, 0, (7, 0));
    });
    let second: Script = Box::new(|peer| {
        peer.handshake();
        let _subscribe = peer.recv();
        peer.send(error(ErrorCode::TopicNotFound, false));
    });
    let server = FakeServer::start(vec![first, second]);
    let mut subscriber =
        Subscriber::connect(server.addr(), topic(), StartAt::Latest, options()).unwrap();

    let err = subscriber.next_event().unwrap_err();

    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::TopicNotFound,
                ..
            }
        ),
        "{err:?}"
    );
    drop(subscriber);
    server.join();
}

#[test]
fn initial_subscribe_error_is_returned() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        let _subscribe = peer.recv();
        peer.send(error(ErrorCode::TooManySubscriptions, false));
    });

    let err = Subscriber::connect(server.addr(), topic(), StartAt::Latest, options()).unwrap_err();

    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::TooManySubscriptions,
                ..
            }
        ),
        "{err:?}"
    );
    server.join();
}

#[test]
fn reconnect_gives_up_after_max_attempts() {
    let first: Script = Box::new(|peer| {
        accept_subscribe(peer, StartAt::Latest, 0, (7, 0));
    });
    let reject_handshake: fn(&mut Peer) = |peer| {
        peer.send_raw(&chorus_protocol::preamble());
        peer.send(Frame::Error(ErrorFrame {
            code: ErrorCode::ShuttingDown,
            close: true,
            topic: String::new(),
            message: "restarting".to_owned(),
        }));
    };
    let server = FakeServer::start(vec![
        first,
        Box::new(reject_handshake),
        Box::new(reject_handshake),
    ]);
    let mut options = options();
    options.backoff.max_attempts = Some(2);
    let mut subscriber =
        Subscriber::connect(server.addr(), topic(), StartAt::Latest, options).unwrap();

    let err = subscriber.next_event().unwrap_err();

    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::ShuttingDown,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(subscriber.reconnects(), 0);
    drop(subscriber);
    server.join();
}

#[test]
fn zero_attempts_returns_cause() {
    let server = FakeServer::one(|peer| {
        accept_subscribe(peer, StartAt::Latest, 0, (7, 0));
    });
    let mut options = options();
    options.backoff.max_attempts = Some(0);
    let mut subscriber =
        Subscriber::connect(server.addr(), topic(), StartAt::Latest, options).unwrap();

    let err = subscriber.next_event().unwrap_err();

    assert!(matches!(err, ClientError::Closed), "{err:?}");
    drop(subscriber);
    server.join();
}

#[test]
fn read_timeout_is_returned_without_reconnect() {
    let server = FakeServer::one(|peer| {
        accept_subscribe(peer, StartAt::Latest, 0, (7, 0));
        peer.expect_closed();
    });
    let mut options = options();
    options.read_timeout = Some(Duration::from_millis(50));
    let mut subscriber =
        Subscriber::connect(server.addr(), topic(), StartAt::Latest, options).unwrap();

    let err = subscriber.next_event().unwrap_err();

    assert!(matches!(err, ClientError::Timeout), "{err:?}");
    assert_eq!(subscriber.reconnects(), 0);
    drop(subscriber);
    server.join();
}

#[test]
fn silent_server_past_idle_timeout_reconnects() {
    // The first server announces a 100 ms idle timeout and then sends nothing, not even PING,
    // as a connection that died without a FIN looks. The subscriber gives up on it after
    // 2 * 100 ms + 1 s and resumes on a new connection.
    let first: Script = Box::new(|peer| {
        let mut short_idle = welcome();
        short_idle.idle_timeout_ms = 100;
        peer.handshake_with(short_idle);
        let _subscribe = peer.recv();
        peer.send(Frame::Subscribed(Subscribed {
            topic: topic(),
            stream: 7,
            start: 0,
            earliest: 0,
            end: 0,
        }));
        peer.expect_closed();
    });
    let second: Script = Box::new(|peer| {
        accept_subscribe(peer, StartAt::Offset(0), 7, (7, 0));
        peer.send(events(7, [0]));
    });
    let server = FakeServer::start(vec![first, second]);
    let mut subscriber =
        Subscriber::connect(server.addr(), topic(), StartAt::Latest, options()).unwrap();

    let event = subscriber.next_event().unwrap();

    assert_eq!(event.offset, 0);
    assert_eq!(subscriber.reconnects(), 1);
    drop(subscriber);
    server.join();
}

#[test]
fn topic_created_after_subscribe_is_no_stream_change() {
    // A server confirms a subscription to a topic that does not exist yet with stream 0. The
    // first comments then carry the new topic's stream id, which is no change of stream.
    let server = FakeServer::one(|peer| {
        accept_subscribe(peer, StartAt::Latest, 0, (0, 0));
        peer.send(events(5, [0, 1]));
    });
    let mut subscriber =
        Subscriber::connect(server.addr(), topic(), StartAt::Latest, options()).unwrap();

    let offsets = next_offsets(&mut subscriber, 2);

    assert_eq!(offsets, vec![0, 1]);
    assert_eq!(subscriber.stream(), 5);
    drop(subscriber);
    server.join();
}

#[test]
fn topic_created_while_disconnected_is_no_stream_change() {
    let first: Script = Box::new(|peer| {
        accept_subscribe(peer, StartAt::Latest, 0, (0, 0));
    });
    let second: Script = Box::new(|peer| {
        accept_subscribe(peer, StartAt::Offset(0), 0, (5, 0));
        peer.send(events(5, [0]));
    });
    let server = FakeServer::start(vec![first, second]);
    let mut subscriber =
        Subscriber::connect(server.addr(), topic(), StartAt::Latest, options()).unwrap();

    let offsets = next_offsets(&mut subscriber, 1);

    assert_eq!(offsets, vec![0]);
    assert_eq!(subscriber.stream(), 5);
    drop(subscriber);
    server.join();
}
