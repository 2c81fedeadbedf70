use std::thread;

use chorus_protocol::{ErrorCode, Frame, PublishAck, Topic};

use super::fake::{options, FakeServer};
use crate::{ClientError, Connection};

fn topic() -> Topic {
    Topic::new("launch").unwrap()
}

#[test]
fn reader_receives_acks_for_writer() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        for offset in 0..100 {
            let Frame::Publish(publish) = peer.recv() else {
                panic!("expected PUBLISH");
            };
            let ack = PublishAck {
                seq: publish.seq,
                code: ErrorCode::Ok,
                offset,
                stream: 1,
            };
            peer.send(Frame::PublishAck(ack));
        }
    });
    let conn = Connection::connect(server.addr(), &options()).unwrap();
    let (mut writer, mut reader) = conn.split().unwrap();

    let sender = thread::spawn(move || {
        for _ in 0..100 {
            writer.send_publish(&topic(), b"launch comment").unwrap();
        }
        writer.flush().unwrap();
        writer
    });
    let mut offsets = Vec::new();
    for _ in 0..100 {
        match reader.recv().unwrap() {
            Frame::PublishAck(ack) => offsets.push(ack.offset),
            other => panic!("expected PUBLISH_ACK, got {other:?}"),
        }
    }
    let writer = sender.join().unwrap();

    assert_eq!(offsets, (0..100).collect::<Vec<u64>>());
    drop((writer, reader));
    server.join();
}

#[test]
fn reader_answers_ping() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        peer.send(Frame::Ping(9));
        assert_eq!(peer.recv(), Frame::Pong(9));
        peer.send(Frame::Pong(10));
    });
    let conn = Connection::connect(server.addr(), &options()).unwrap();
    let (writer, mut reader) = conn.split().unwrap();

    let frame = reader.recv().unwrap();

    assert_eq!(frame, Frame::Pong(10));
    drop((writer, reader));
    server.join();
}

#[test]
fn writer_send_writes_at_once() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        assert_eq!(peer.recv(), Frame::Ping(3));
        peer.send(Frame::Pong(3));
    });
    let conn = Connection::connect(server.addr(), &options()).unwrap();
    let (mut writer, mut reader) = conn.split().unwrap();

    writer.send(&Frame::Ping(3)).unwrap();
    let frame = reader.recv().unwrap();

    assert_eq!(frame, Frame::Pong(3));
    drop((writer, reader));
    server.join();
}

#[test]
fn shutdown_wakes_reader() {
    let server = FakeServer::one(|peer| {
        peer.handshake();
        peer.expect_closed();
    });
    let conn = Connection::connect(server.addr(), &options()).unwrap();
    let (writer, mut reader) = conn.split().unwrap();

    let receiver = thread::spawn(move || reader.recv());
    writer.shutdown().unwrap();
    let result = receiver.join().unwrap();

    assert!(matches!(result, Err(ClientError::Closed)), "{result:?}");
    drop(writer);
    server.join();
}
