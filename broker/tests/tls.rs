//! TLS on the client and WebSocket listeners: certificates generated at run time, real chorusd.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_protocol::{
    Decoder, ErrorCode, Frame, Hello, Publish, StartAt, Subscribe, Topic, DEFAULT_MAX_FRAME,
    VERSION,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use util::pki::{Issued, Pki};
use util::{Broker, TestDir};

type TlsClient = StreamOwned<ClientConnection, TcpStream>;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes a configuration with a TLS listener on an ephemeral port and starts chorusd.
fn start_tls_broker(dir: &TestDir, server: &Issued, extra_tls: &str) -> (Broker, SocketAddr) {
    let config = dir.write_config(&format!(
        "[tls]\nlisten = [\"127.0.0.1:0\"]\nws_listen = [\"127.0.0.1:0\"]\ncert_file = {:?}\nkey_file = {:?}\n{extra_tls}\n[limits]\nhello_timeout_ms = 500\n",
        server.cert, server.key
    ));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let line = broker.wait_for_log("listening with TLS", IO_TIMEOUT);
    let addr = line[line.find("addr=").unwrap() + 5..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (broker, addr)
}

fn client_config(ca_file: &Path, client_cert: Option<&Issued>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some(issued) => {
            let chain = CertificateDer::pem_file_iter(&issued.cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(&issued.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"chorus/1".to_vec()];
    Arc::new(config)
}

fn connect_tls(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsClient {
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    StreamOwned::new(conn, socket)
}

/// Sends the preamble and HELLO and reads the preamble and WELCOME; returns the first error.
fn open_session(stream: &mut impl ReadWrite) -> std::io::Result<()> {
    stream.write_all(&chorus_protocol::preamble())?;
    let hello = Frame::Hello(Hello {
        version: VERSION,
        max_frame: DEFAULT_MAX_FRAME,
        client_name: "tls-test".into(),
        token: String::new(),
        features: 0,
    });
    stream.write_all(&hello.to_bytes())?;
    stream.flush()?;
    let mut preamble = [0u8; 8];
    stream.read_exact(&mut preamble)?;
    assert_eq!(preamble, chorus_protocol::preamble());
    let mut buf = BytesMut::new();
    match read_frame(stream, &mut buf)? {
        Frame::Welcome(_) => Ok(()),
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn read_frame(stream: &mut impl Read, buf: &mut BytesMut) -> std::io::Result<Frame> {
    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME);
    loop {
        if let Some(frame) = decoder.decode(buf).expect("server frames decode") {
            return Ok(frame);
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn send(stream: &mut impl Write, frame: &Frame) {
    stream.write_all(&frame.to_bytes()).unwrap();
    stream.flush().unwrap();
}

fn topic() -> Topic {
    Topic::new("secure/feed").unwrap()
}

/// Publishes `count` comments and reads their acknowledgements.
fn publish(stream: &mut TlsClient, count: u64) {
    for seq in 0..count {
        let publish = Frame::Publish(Publish {
            seq,
            topic: topic(),
            payload: format!("secret {seq}").into(),
        });
        stream.write_all(&publish.to_bytes()).unwrap();
    }
    stream.flush().unwrap();
    let mut buf = BytesMut::new();
    for seq in 0..count {
        match read_frame(stream, &mut buf).unwrap() {
            Frame::PublishAck(ack) => {
                assert_eq!(ack.seq, seq);
                assert_eq!(ack.code, ErrorCode::Ok);
            }
            other => panic!("expected PUBLISH_ACK, got {other:?}"),
        }
    }
}

/// Reads until the server closes, or fails after the deadline.
fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let end = Instant::now() + deadline;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Err(_) => {}
        }
        assert!(
            Instant::now() < end,
            "server did not close the connection in time"
        );
    }
}

#[test]
fn tls_publish_reaches_tls_and_plain_subscribers() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let server = pki.server("server", false);
    let (broker, tls_addr) = start_tls_broker(&dir, &server, "");

    let mut subscriber = connect_tls(tls_addr, client_config(&pki.ca_file, None));
    open_session(&mut subscriber).unwrap();
    let alpn = subscriber.conn.alpn_protocol().map(<[u8]>::to_vec);
    assert_eq!(alpn, Some(b"chorus/1".to_vec()));
    send(
        &mut subscriber,
        &Frame::Subscribe(Subscribe {
            topic: topic(),
            start: StartAt::Latest,
            stream: 0,
        }),
    );
    let mut sub_buf = BytesMut::new();
    assert!(matches!(
        read_frame(&mut subscriber, &mut sub_buf).unwrap(),
        Frame::Subscribed(_)
    ));

    let mut plain = util::client::connect(&broker.addr_string());
    plain.subscribe(&topic(), StartAt::Latest, 0).unwrap();

    let mut publisher = connect_tls(tls_addr, client_config(&pki.ca_file, None));
    open_session(&mut publisher).unwrap();
    publish(&mut publisher, 100);

    let mut offsets = Vec::new();
    while offsets.len() < 100 {
        match read_frame(&mut subscriber, &mut sub_buf).unwrap() {
            Frame::Events(events) => {
                for event in events.iter() {
                    assert_eq!(event.payload, format!("secret {}", event.offset).as_bytes());
                    offsets.push(event.offset);
                }
            }
            other => panic!("expected EVENTS, got {other:?}"),
        }
    }
    assert_eq!(offsets, (0..100).collect::<Vec<u64>>());
    let plain_events = util::client::collect_events(&mut plain, &topic(), 100);
    assert_eq!(plain_events.last().map(|e| e.offset), Some(99));
}

#[test]
fn plaintext_client_on_tls_port_gets_alert_and_close() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let (broker, tls_addr) = start_tls_broker(&dir, &pki.server("server", false), "");

    let mut raw = TcpStream::connect(tls_addr).unwrap();
    raw.write_all(&chorus_protocol::preamble()).unwrap();
    let received = read_until_closed(&mut raw, IO_TIMEOUT);
    // 0x15 is the TLS alert record type: the server answered in TLS, then closed.
    assert_eq!(received.first(), Some(&0x15));
    broker.wait_for_log("TLS error", IO_TIMEOUT);
}

#[test]
fn unfinished_handshake_is_closed_after_timeout() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let (_broker, tls_addr) = start_tls_broker(&dir, &pki.server("server", false), "");

    let mut raw = TcpStream::connect(tls_addr).unwrap();
    // The first bytes of a ClientHello record, and nothing more.
    raw.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let started = Instant::now();
    read_until_closed(&mut raw, Duration::from_secs(15));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the timeout"
    );
}

#[test]
fn expired_certificate_fails_the_handshake() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let (broker, tls_addr) = start_tls_broker(&dir, &pki.server("expired", true), "");

    let mut client = connect_tls(tls_addr, client_config(&pki.ca_file, None));
    let error = open_session(&mut client).unwrap_err();
    assert!(
        error.to_string().contains("certificate expired"),
        "unexpected error: {error}"
    );
    broker.wait_for_log("TLS error", IO_TIMEOUT);
}

#[test]
fn certificate_from_unknown_ca_fails_the_handshake() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let other = Pki::new(dir.root(), "other");
    let (_broker, tls_addr) = start_tls_broker(&dir, &pki.server("server", false), "");

    let mut client = connect_tls(tls_addr, client_config(&other.ca_file, None));
    let error = open_session(&mut client).unwrap_err();
    assert!(
        error.to_string().contains("UnknownIssuer"),
        "unexpected error: {error}"
    );
}

#[test]
fn mutual_tls_requires_a_client_certificate() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let server = pki.server("server", false);
    let extra = format!("client_ca_file = {:?}", pki.ca_file);
    let (broker, tls_addr) = start_tls_broker(&dir, &server, &extra);

    // In TLS 1.3 the client learns of the rejection only after its handshake completes, so
    // its first write can meet the closed socket before it reads the alert: the client sees
    // either the alert or a broken pipe, and the broker's log names the cause.
    let mut anonymous = connect_tls(tls_addr, client_config(&pki.ca_file, None));
    let error = open_session(&mut anonymous).unwrap_err().to_string();
    let expected = ["CertificateRequired", "Broken pipe", "Connection reset"];
    assert!(
        expected.iter().any(|e| error.contains(e)),
        "unexpected error: {error}"
    );
    broker.wait_for_log("peer sent no certificates", IO_TIMEOUT);

    let relay = pki.client("relay");
    let mut trusted = connect_tls(tls_addr, client_config(&pki.ca_file, Some(&relay)));
    open_session(&mut trusted).unwrap();
    publish(&mut trusted, 3);
}

#[test]
fn truncated_record_closes_only_that_connection() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let (broker, tls_addr) = start_tls_broker(&dir, &pki.server("server", false), "");

    let mut good = connect_tls(tls_addr, client_config(&pki.ca_file, None));
    open_session(&mut good).unwrap();

    let mut bad = connect_tls(tls_addr, client_config(&pki.ca_file, None));
    open_session(&mut bad).unwrap();
    // An application-data record header that promises 256 bytes, followed by 10 of them.
    bad.sock
        .write_all(&[0x17, 0x03, 0x03, 0x01, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        .unwrap();
    bad.sock.shutdown(Shutdown::Write).unwrap();
    read_until_closed(&mut bad.sock, IO_TIMEOUT);
    broker.wait_for_log("without close_notify", IO_TIMEOUT);

    publish(&mut good, 5);
}

#[test]
fn sighup_reloads_certificate_for_new_connections() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let server = pki.server("server", false);
    let (broker, tls_addr) = start_tls_broker(&dir, &server, "");

    let mut before = connect_tls(tls_addr, client_config(&pki.ca_file, None));
    open_session(&mut before).unwrap();
    let old_cert = before.conn.peer_certificates().unwrap()[0].to_vec();

    // A new certificate replaces the files, then SIGHUP.
    let renewed = pki.server("renewed", false);
    std::fs::copy(&renewed.cert, &server.cert).unwrap();
    std::fs::copy(&renewed.key, &server.key).unwrap();
    signal(&broker, "HUP");
    broker.wait_for_log("TLS certificates reloaded", IO_TIMEOUT);

    let mut after = connect_tls(tls_addr, client_config(&pki.ca_file, None));
    open_session(&mut after).unwrap();
    let new_cert = after.conn.peer_certificates().unwrap()[0].to_vec();
    assert_ne!(new_cert, old_cert);
    publish(&mut before, 2);

    // A broken certificate file is rejected and the renewed one stays in use.
    std::fs::write(&server.cert, "not a certificate").unwrap();
    signal(&broker, "HUP");
    broker.wait_for_log("failed to reload TLS certificates", IO_TIMEOUT);
    let mut later = connect_tls(tls_addr, client_config(&pki.ca_file, None));
    open_session(&mut later).unwrap();
    assert_eq!(
        later.conn.peer_certificates().unwrap()[0].to_vec(),
        new_cert
    );
}

fn signal(broker: &Broker, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), broker.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn wss_carries_the_protocol() {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::http::HeaderValue;
    use tungstenite::Message;

    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let (broker, _) = start_tls_broker(&dir, &pki.server("server", false), "");
    let line = broker.wait_for_log("listening for WebSocket with TLS", IO_TIMEOUT);
    let wss_addr: SocketAddr = line[line.find("addr=").unwrap() + 5..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let mut config = (*client_config(&pki.ca_file, None)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = connect_tls(wss_addr, Arc::new(config));
    let mut request = format!("wss://localhost:{}/", wss_addr.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("chorus.v1"),
    );
    let (mut ws, _) = tungstenite::client(request, tls).unwrap();

    ws.send(Message::Binary(chorus_protocol::preamble().to_vec().into()))
        .unwrap();
    let hello = Frame::Hello(Hello {
        version: VERSION,
        max_frame: DEFAULT_MAX_FRAME,
        client_name: "wss-test".into(),
        token: String::new(),
        features: 0,
    });
    ws.send(Message::Binary(hello.to_bytes())).unwrap();
    let publish = Frame::Publish(Publish {
        seq: 1,
        topic: topic(),
        payload: "over wss".into(),
    });
    ws.send(Message::Binary(publish.to_bytes())).unwrap();

    let mut frames = Vec::new();
    while frames.len() < 3 {
        if let Message::Binary(data) = ws.read().unwrap() {
            frames.push(data);
        }
    }
    assert_eq!(&frames[0][..], &chorus_protocol::preamble()[..]);
    assert!(matches!(
        chorus_protocol::decode_frame(frames[1].clone()),
        Ok(Frame::Welcome(_))
    ));
    match chorus_protocol::decode_frame(frames[2].clone()) {
        Ok(Frame::PublishAck(ack)) => assert_eq!(ack.code, ErrorCode::Ok),
        other => panic!("expected PUBLISH_ACK, got {other:?}"),
    }
}
