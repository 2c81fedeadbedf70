//! The WebSocket listener carries the same protocol as TCP, one frame per binary message.

mod util;

use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_protocol::{
    decode_frame, ErrorCode, Frame, Hello, Publish, StartAt, Subscribe, Topic, DEFAULT_MAX_FRAME,
    VERSION,
};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};
use util::{Broker, TestDir};

type Ws = WebSocket<TcpStream>;

fn start_broker(dir: &TestDir, extra: &[&str]) -> (Broker, String) {
    let mut flags = vec!["--ws-listen", "127.0.0.1:0"];
    flags.extend_from_slice(extra);
    let broker = Broker::start(&dir.data(), &flags);
    let line = broker.wait_for_log("listening for WebSocket", Duration::from_secs(10));
    let addr = line[line.find("addr=").expect("log line names the address") + 5..]
        .split_whitespace()
        .next()
        .expect("address follows addr=")
        .to_owned();
    (broker, addr)
}

fn open(addr: &str, origin: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("ws://{addr}/").into_client_request()?;
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("chorus.v1"),
    );
    if let Some(origin) = origin {
        headers.insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ws, response) = tungstenite::client(request, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
    })?;
    let protocol = response.headers().get("sec-websocket-protocol").cloned();
    assert_eq!(protocol, Some(HeaderValue::from_static("chorus.v1")));
    Ok(ws)
}

fn send(ws: &mut Ws, frame: &Frame) {
    ws.send(Message::Binary(frame.to_bytes())).unwrap();
}

fn recv_binary(ws: &mut Ws) -> Bytes {
    loop {
        match ws.read().expect("read a message") {
            Message::Binary(data) => return data,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

fn recv_frame(ws: &mut Ws) -> Frame {
    decode_frame(recv_binary(ws)).expect("server frames decode")
}

/// Opens a session: preamble and HELLO out, preamble and WELCOME back.
fn handshake(ws: &mut Ws) {
    ws.send(Message::Binary(Bytes::copy_from_slice(
        &chorus_protocol::preamble(),
    )))
    .unwrap();
    send(
        ws,
        &Frame::Hello(Hello {
            version: VERSION,
            max_frame: DEFAULT_MAX_FRAME,
            client_name: "websocket-test".into(),
            token: String::new(),
            features: 0,
        }),
    );
    let preamble = recv_binary(ws);
    assert_eq!(&preamble[..], &chorus_protocol::preamble()[..]);
    assert!(matches!(recv_frame(ws), Frame::Welcome(_)));
}

#[test]
fn websocket_publish_reaches_tcp_and_websocket_subscribers() {
    let dir = TestDir::new();
    let (broker, ws_addr) = start_broker(&dir, &[]);
    let topic = Topic::new("ws/feed").unwrap();

    let mut subscriber = open(&ws_addr, Some("https://viewer.example")).unwrap();
    handshake(&mut subscriber);
    send(
        &mut subscriber,
        &Frame::Subscribe(Subscribe {
            topic: topic.clone(),
            start: StartAt::Latest,
            stream: 0,
        }),
    );
    assert!(matches!(recv_frame(&mut subscriber), Frame::Subscribed(_)));

    let mut tcp = util::client::connect(&broker.addr_string());
    tcp.subscribe(&topic, StartAt::Latest, 0).unwrap();

    let mut publisher = open(&ws_addr, None).unwrap();
    handshake(&mut publisher);
    for seq in 0..20u64 {
        let payload = Bytes::from(format!("comment {seq}"));
        send(
            &mut publisher,
            &Frame::Publish(Publish {
                seq,
                topic: topic.clone(),
                payload,
            }),
        );
    }
    for seq in 0..20u64 {
        match recv_frame(&mut publisher) {
            Frame::PublishAck(ack) => {
                assert_eq!(ack.seq, seq);
                assert_eq!(ack.code, ErrorCode::Ok);
                assert_eq!(ack.offset, seq);
            }
            other => panic!("expected PUBLISH_ACK, got {other:?}"),
        }
    }

    let mut received = Vec::new();
    while received.len() < 20 {
        match recv_frame(&mut subscriber) {
            Frame::Events(events) => received.extend(events.iter()),
            other => panic!("expected EVENTS, got {other:?}"),
        }
    }
    let tcp_events = util::client::collect_events(&mut tcp, &topic, 20);
    for (i, event) in received.iter().enumerate() {
        assert_eq!(event.offset, i as u64);
        assert_eq!(event.payload, format!("comment {i}").as_bytes());
    }
    assert_eq!(tcp_events.len(), 20);
    assert_eq!(tcp_events[19].payload, "comment 19".as_bytes());
}

#[test]
fn websocket_rejects_disallowed_origin() {
    let dir = TestDir::new();
    let config = dir.write_config("[websocket]\nallowed_origins = [\"https://chat.example\"]\n");
    let (_broker, ws_addr) = start_broker(&dir, &["--config", &config]);

    let rejected = open(&ws_addr, Some("https://evil.example"));
    match rejected {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected HTTP 403, got {other:?}"),
    }
    let mut allowed = open(&ws_addr, Some("https://chat.example")).unwrap();
    handshake(&mut allowed);
}

#[test]
fn websocket_text_message_closes_with_error() {
    let dir = TestDir::new();
    let (_broker, ws_addr) = start_broker(&dir, &[]);
    let mut ws = open(&ws_addr, None).unwrap();
    handshake(&mut ws);

    ws.send(Message::text("hello")).unwrap();
    match recv_frame(&mut ws) {
        Frame::Error(e) => {
            assert_eq!(e.code, ErrorCode::MalformedFrame);
            assert!(e.close);
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
}

#[test]
fn websocket_bad_crc_closes_with_error() {
    let dir = TestDir::new();
    let (_broker, ws_addr) = start_broker(&dir, &[]);
    let mut ws = open(&ws_addr, None).unwrap();
    handshake(&mut ws);

    let mut frame = BytesMut::from(&Frame::Ping(7).to_bytes()[..]);
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    ws.send(Message::Binary(frame.freeze())).unwrap();
    match recv_frame(&mut ws) {
        Frame::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadCrc);
            assert!(e.close);
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
}
