use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use chorus_protocol::{
    DecodeError, ErrorCode, ErrorFrame, Event, Events, Frame, PublishAck, StartAt, Subscribe,
    Subscribed, Topic, DEFAULT_MAX_FRAME, VERSION,
};

use super::fake::{options, welcome, FakeServer, Peer};
use super::tls::large_batch;
use crate::{Ack, ClientError, Connection};

fn topic() -> Topic {
    Topic::new("match/final").unwrap()
}

fn event(offset: u64, text: &str) -> Event {
    Event {
        offset,
        time_us: 1_700_000_000_000_000 + offset,
        flags: 0,
        publisher: "user-1".to_owned(),
        payload: Bytes::copy_from_slice(text.as_bytes()),
    }
}

fn ack(seq: u64, code: ErrorCode, offset: u64) -> Frame {
    Frame::PublishAck(PublishAck {
        seq,
        code,
        offset,
        stream: 7,
    })
}

fn error(code: ErrorCode, topic: &str, close: bool) -> Frame {
    Frame::Error(ErrorFrame {
        code,
        close,
        topic: topic.to_owned(),
        message: "scripted error".to_owned(),
    })
}

/// Reads a PUBLISH and returns its sequence number and payload.
fn expect_publish(peer: &mut Peer) -> (u64, Bytes) {
    match peer.recv() {
        Frame::Publish(p) => (p.seq, p.payload),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[test]
fn handshake_returns_welcome() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
    });

    let conn = Connection::connect(server.addr(), &options()).unwrap();

    assert_eq!(*conn.welcome(), welcome());
    drop(conn);
    server.join();
}

#[test]
fn handshake_sends_hello_fields() {
    let server = FakeServer::one(|peer| {
        let hello = peer.handshake();
        assert_eq!(hello.version, VERSION);
        assert_eq!(hello.max_frame, DEFAULT_MAX_FRAME);
        assert_eq!(hello.client_name, "unit-test");
        assert_eq!(hello.token, "secret");
    });
    let mut options = options();
    options.token = "secret".to_owned();

    let conn = Connection::connect(server.addr(), &options).unwrap();

    drop(conn);
    server.join();
}

#[test]
fn wrong_preamble_is_decode_error() {
    let server = FakeServer::one(|peer| {
        peer.send_raw(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });

    let err = Connection::connect(server.addr(), &options()).unwrap_err();

    assert!(
        matches!(err, ClientError::Decode(DecodeError::BadPreamble)),
        "{err:?}"
    );
    server.join();
}

#[test]
fn handshake_error_frame_is_server_error() {
    let server = FakeServer::one(|peer| {
        peer.send_raw(&chorus_protocol::preamble());
        peer.send(error(ErrorCode::UnsupportedVersion, "", true));
    });

    let err = Connection::connect(server.addr(), &options()).unwrap_err();

    match err {
        ClientError::Server { code, close, .. } => {
            assert_eq!(code, ErrorCode::UnsupportedVersion);
            assert!(close);
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    server.join();
}

#[test]
fn silent_server_times_out_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut options = options();
    options.connect_timeout = Duration::from_millis(50);

    // The listener's backlog completes the TCP handshake, but no server reads the preamble.
    let err = Connection::connect(&addr, &options).unwrap_err();

    assert!(matches!(err, ClientError::Timeout), "{err:?}");
}

#[test]
fn address_without_port_is_invalid() {
    let err = Connection::connect("127.0.0.1", &options()).unwrap_err();

    assert!(
        matches!(err, ClientError::InvalidAddress(ref a) if a == "127.0.0.1"),
        "{err:?}"
    );
}

#[test]
fn refused_connection_is_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);

    let err = Connection::connect(&addr, &options()).unwrap_err();

    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

#[test]
fn publish_returns_ack() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        let (seq, payload) = expect_publish(peer);
        assert_eq!(payload, Bytes::from_static(b"goal!"));
        peer.send(ack(seq, ErrorCode::Ok, 41));
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    let ack = conn.publish(&topic(), b"goal!").unwrap();

    let expected = Ack {
        seq: 1,
        offset: 41,
        stream: 7,
    };
    assert_eq!(ack, expected);
    drop(conn);
    server.join();
}

#[test]
fn rejected_publish_is_rejected_error() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        let (seq, _) = expect_publish(peer);
        peer.send(ack(seq, ErrorCode::StorageFailed, 0));
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    let err = conn.publish(&topic(), b"lost").unwrap_err();

    assert!(
        matches!(
            err,
            ClientError::Rejected {
                seq: 1,
                code: ErrorCode::StorageFailed
            }
        ),
        "{err:?}"
    );
    drop(conn);
    server.join();
}

#[test]
fn publish_keeps_events_for_recv() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        let (seq, _) = expect_publish(peer);
        peer.send(Frame::Events(Events::new(
            topic(),
            7,
            &[event(3, "earlier")],
        )));
        peer.send(ack(seq, ErrorCode::Ok, 4));
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    let ack = conn.publish(&topic(), b"mine").unwrap();
    let frame = conn.recv().unwrap();

    assert_eq!(ack.offset, 4);
    let Frame::Events(events) = frame else {
        panic!("expected EVENTS, got {frame:?}");
    };
    assert_eq!(events.iter().collect::<Vec<_>>(), vec![event(3, "earlier")]);
    drop(conn);
    server.join();
}

#[test]
fn oversized_payload_is_not_sent() {
    let server = FakeServer::one(|peer| {
        let mut small = welcome();
        small.max_payload = 8;
        peer.handshake_with(small);
        let (seq, payload) = expect_publish(peer);
        assert_eq!(payload, Bytes::from_static(b"short"));
        peer.send(ack(seq, ErrorCode::Ok, 0));
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    let err = conn.publish(&topic(), b"far too long").unwrap_err();
    let ack = conn.publish(&topic(), b"short").unwrap();

    assert!(
        matches!(err, ClientError::PayloadTooLarge { len: 12, max: 8 }),
        "{err:?}"
    );
    assert_eq!(ack.offset, 0);
    drop(conn);
    server.join();
}

#[test]
fn pipelined_publishes_are_acked_in_order() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        for offset in 0..3 {
            let (seq, _) = expect_publish(peer);
            peer.send(ack(seq, ErrorCode::Ok, offset));
        }
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    let seqs: Vec<u64> = (0..3)
        .map(|_| conn.send_publish(&topic(), b"x").unwrap())
        .collect();
    conn.flush().unwrap();
    let acked: Vec<u64> = (0..3)
        .map(|_| match conn.recv().unwrap() {
            Frame::PublishAck(ack) => ack.seq,
            other => panic!("expected PUBLISH_ACK, got {other:?}"),
        })
        .collect();

    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(acked, seqs);
    drop(conn);
    server.join();
}

#[test]
fn ping_is_answered_during_recv() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        peer.send(Frame::Ping(0xfeed));
        assert_eq!(peer.recv(), Frame::Pong(0xfeed));
        peer.send(Frame::Events(Events::new(
            topic(),
            7,
            &[event(0, "after ping")],
        )));
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    let frame = conn.recv().unwrap();

    assert!(matches!(frame, Frame::Events(_)), "{frame:?}");
    drop(conn);
    server.join();
}

#[test]
fn error_frame_is_server_error() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        peer.send(error(ErrorCode::SlowConsumer, "match/final", true));
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    let err = conn.recv().unwrap_err();

    match err {
        ClientError::Server {
            code,
            topic,
            message,
            close,
        } => {
            assert_eq!(code, ErrorCode::SlowConsumer);
            assert_eq!(topic, "match/final");
            assert_eq!(message, "scripted error");
            assert!(close);
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    drop(conn);
    server.join();
}

#[test]
fn server_close_is_closed() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    let err = conn.recv().unwrap_err();

    assert!(matches!(err, ClientError::Closed), "{err:?}");
    drop(conn);
    server.join();
}

#[test]
fn subscribe_returns_subscribed() {
    let expected = Subscribed {
        topic: topic(),
        stream: 7,
        start: 90,
        earliest: 0,
        end: 100,
    };
    let answer = expected.clone();
    let server = FakeServer::one(move |peer| {
        peer.handshake();
        let subscribe = Subscribe {
            topic: topic(),
            start: StartAt::Last(10),
            stream: 0,
        };
        assert_eq!(peer.recv(), Frame::Subscribe(subscribe));
        peer.send(Frame::Subscribed(answer));
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    let subscribed = conn.subscribe(&topic(), StartAt::Last(10), 0).unwrap();

    assert_eq!(subscribed, expected);
    drop(conn);
    server.join();
}

#[test]
fn subscribe_error_for_topic_is_server_error() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        let _subscribe = peer.recv();
        peer.send(error(ErrorCode::TopicNotFound, "match/final", false));
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    let err = conn.subscribe(&topic(), StartAt::Earliest, 0).unwrap_err();

    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::TopicNotFound,
                close: false,
                ..
            }
        ),
        "{err:?}"
    );
    drop(conn);
    server.join();
}

#[test]
fn unsubscribe_sends_frame() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        assert_eq!(peer.recv(), Frame::Unsubscribe(topic()));
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    conn.unsubscribe(&topic()).unwrap();

    drop(conn);
    server.join();
}

#[test]
fn read_timeout_keeps_partial_frame() {
    let events = Frame::Events(Events::new(topic(), 7, &[event(5, "split in two")])).to_bytes();
    let (head, tail) = (events.slice(..5), events.slice(5..));
    let server = FakeServer::one(move |peer| {
        peer.handshake();
        peer.send_raw(&head);
        let (seq, _) = expect_publish(peer);
        peer.send_raw(&tail);
        peer.send(ack(seq, ErrorCode::Ok, 6));
    });
    let mut options = options();
    options.read_timeout = Some(Duration::from_millis(50));
    let mut conn = Connection::connect(server.addr(), &options).unwrap();

    let first = conn.recv().unwrap_err();
    let ack = conn.publish(&topic(), b"while waiting").unwrap();
    let frame = conn.recv().unwrap();

    assert!(matches!(first, ClientError::Timeout), "{first:?}");
    assert_eq!(ack.offset, 6);
    let Frame::Events(events) = frame else {
        panic!("expected EVENTS, got {frame:?}");
    };
    assert_eq!(events.iter().next(), Some(event(5, "split in two")));
    drop(conn);
    server.join();
}

#[test]
fn pings_do_not_extend_read_timeout() {
    // The server pings every 20 ms, and each PING is data on the socket. A read timeout of
    // 100 ms must still end recv, because no frame for the caller arrived.
    let server = FakeServer::one(|peer| {
        peer.handshake();
        for nonce in 0..250 {
            if peer.try_send(Frame::Ping(nonce)).is_err() {
                break;
            }
            match peer.try_recv() {
                Ok(Frame::Pong(n)) => assert_eq!(n, nonce),
                Ok(other) => panic!("expected PONG, got {other:?}"),
                Err(_) => break,
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    let mut options = options();
    options.read_timeout = Some(Duration::from_millis(100));
    let mut conn = Connection::connect(server.addr(), &options).unwrap();

    let err = conn.recv().unwrap_err();

    assert!(matches!(err, ClientError::Timeout), "{err:?}");
    drop(conn);
    server.join();
}

#[test]
fn publish_after_server_close_reports_reason() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        peer.send(error(ErrorCode::Timeout, "", true));
        peer.close_now();
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();
    // Wait until the server has closed its side, as an idle connection finds it.
    server.join();

    // The first write after the close may still succeed, the connection reset then fails a
    // later one. Either way the error names the server's reason.
    let err = (0..10)
        .find_map(|_| conn.publish(&topic(), b"too late").err())
        .unwrap();

    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::Timeout,
                close: true,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn large_batch_arrives_intact_over_tcp() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        peer.send(large_batch().0);
    });
    let mut conn = Connection::connect(server.addr(), &options()).unwrap();

    let received = match conn.recv().unwrap() {
        Frame::Events(events) => events.iter().collect::<Vec<Event>>(),
        other => panic!("expected EVENTS, got {other:?}"),
    };

    assert_eq!(received, large_batch().1);
    drop(conn);
    server.join();
}
