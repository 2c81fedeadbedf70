//! TLS connections against an in-process rustls server that speaks the protocol, and the hints
//! for a client and a server that disagree about TLS.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use bytes::BytesMut;
use chorus_protocol::{
    decode_preamble, preamble, Decoder, ErrorCode, Event, Events, Frame, PublishAck, Topic,
    DEFAULT_MAX_FRAME,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::fake::{options, welcome, FakeServer, WAIT};
use crate::{ClientError, Connection, Options, TlsOptions};

/// A test CA, a server certificate it signed for localhost and 127.0.0.1, and the server
/// configuration that presents it.
struct TestPki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    server_config: Arc<ServerConfig>,
}

/// Creates a PKI whose CA is named `name`; CAs with different names do not trust each other's
/// certificates.
fn test_pki(name: &str) -> TestPki {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .unwrap();
    config.alpn_protocols = vec![b"chorus/1".to_vec()];
    TestPki {
        _dir: dir,
        ca_file,
        server_config: Arc::new(config),
    }
}

/// Client options that trust the test CA.
fn tls_options(pki: &TestPki) -> Options {
    Options {
        tls: Some(TlsOptions {
            ca_file: Some(pki.ca_file.clone()),
            ..TlsOptions::default()
        }),
        ..options()
    }
}

/// A server thread that accepts one TLS connection and runs a script on it.
struct TlsServer {
    addr: String,
    handle: JoinHandle<()>,
}

impl TlsServer {
    fn one(config: Arc<ServerConfig>, script: impl FnOnce(&mut TlsPeer) + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = thread::spawn(move || {
            // The client connects right after the server starts, so a blocking accept ends;
            // the read timeout below bounds every later wait.
            let (socket, _) = listener.accept().unwrap();
            socket.set_read_timeout(Some(WAIT)).unwrap();
            let conn = ServerConnection::new(config).unwrap();
            let mut peer = TlsPeer {
                stream: StreamOwned::new(conn, socket),
                buf: BytesMut::new(),
                decoder: Decoder::new(DEFAULT_MAX_FRAME),
            };
            script(&mut peer);
        });
        TlsServer { addr, handle }
    }

    fn join(self) {
        if let Err(panic) = self.handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// The server's side of one TLS connection.
struct TlsPeer {
    stream: StreamOwned<ServerConnection, TcpStream>,
    buf: BytesMut,
    decoder: Decoder,
}

impl TlsPeer {
    /// Reads the client's preamble and HELLO, then sends the server preamble and WELCOME.
    fn handshake(&mut self) {
        while decode_preamble(&mut self.buf).unwrap().is_none() {
            self.fill();
        }
        assert!(matches!(self.recv(), Frame::Hello(_)));
        self.stream.write_all(&preamble()).unwrap();
        self.send(&Frame::Welcome(welcome()));
    }

    fn recv(&mut self) -> Frame {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).unwrap() {
                return frame;
            }
            self.fill();
        }
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.stream.read(&mut chunk).unwrap();
        assert_ne!(read, 0, "client closed the connection");
        self.buf.extend_from_slice(&chunk[..read]);
    }

    fn send(&mut self, frame: &Frame) {
        self.stream.write_all(&frame.to_bytes()).unwrap();
        self.stream.flush().unwrap();
    }

    /// Reads a PUBLISH and acknowledges it with `offset`.
    fn ack_publish(&mut self, offset: u64) {
        let Frame::Publish(publish) = self.recv() else {
            panic!("expected PUBLISH");
        };
        let ack = PublishAck {
            seq: publish.seq,
            code: ErrorCode::Ok,
            offset,
            stream: 1,
        };
        self.send(&Frame::PublishAck(ack));
    }
}

fn topic() -> Topic {
    Topic::new("secure/launch").unwrap()
}

#[test]
fn publish_over_tls_is_acknowledged() {
    let pki = test_pki("main");
    let server = TlsServer::one(Arc::clone(&pki.server_config), |peer| {
        peer.handshake();
        let alpn = peer.stream.conn.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(alpn, Some(b"chorus/1".to_vec()));
        peer.ack_publish(41);
    });

    let mut conn = Connection::connect(&server.addr, &tls_options(&pki)).unwrap();
    let ack = conn.publish(&topic(), b"encrypted comment").unwrap();

    assert_eq!(ack.offset, 41);
    drop(conn);
    server.join();
}

#[test]
fn key_update_keeps_split_connection_working() {
    // The server renews its keys every 50 acks and requests that the client renews too. The client's
    // reader decrypts with the new keys, and the KeyUpdate the client owes goes out before its
    // next publish, whichever half sends it. Payloads of 1 KiB make each flush larger than
    // rustls encrypts in one call.
    const COUNT: u64 = 1000;
    let pki = test_pki("main");
    let server = TlsServer::one(Arc::clone(&pki.server_config), |peer| {
        peer.handshake();
        let version = peer.stream.conn.protocol_version();
        assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
        for offset in 0..COUNT {
            if offset % 50 == 49 {
                peer.stream.conn.refresh_traffic_keys().unwrap();
            }
            peer.ack_publish(offset);
        }
    });
    let conn = Connection::connect(&server.addr, &tls_options(&pki)).unwrap();
    let (mut writer, mut reader) = conn.split().unwrap();

    let sender = thread::spawn(move || {
        for _ in 0..COUNT {
            writer.send_publish(&topic(), &[b'x'; 1024]).unwrap();
        }
        writer.flush().unwrap();
        writer
    });
    let mut offsets = Vec::new();
    for _ in 0..COUNT {
        match reader.recv().unwrap() {
            Frame::PublishAck(ack) => offsets.push(ack.offset),
            other => panic!("expected PUBLISH_ACK, got {other:?}"),
        }
    }
    let writer = sender.join().unwrap();

    assert_eq!(offsets, (0..COUNT).collect::<Vec<u64>>());
    drop((writer, reader));
    server.join();
}

/// Returns an EVENTS frame of 300 comments of 1 KiB each, larger than one read of the client.
pub(super) fn large_batch() -> (Frame, Vec<Event>) {
    let events: Vec<Event> = (0..300)
        .map(|offset| Event {
            offset,
            time_us: 1_700_000_000_000_000,
            flags: 0,
            publisher: "user-1".to_owned(),
            payload: vec![b'a' + (offset % 26) as u8; 1024].into(),
        })
        .collect();
    (Frame::Events(Events::new(topic(), 3, &events)), events)
}

#[test]
fn large_batch_arrives_intact_over_tls() {
    let pki = test_pki("main");
    let server = TlsServer::one(Arc::clone(&pki.server_config), |peer| {
        peer.handshake();
        peer.send(&large_batch().0);
    });
    let mut conn = Connection::connect(&server.addr, &tls_options(&pki)).unwrap();

    let received = match conn.recv().unwrap() {
        Frame::Events(events) => events.iter().collect::<Vec<Event>>(),
        other => panic!("expected EVENTS, got {other:?}"),
    };

    assert_eq!(received, large_batch().1);
    drop(conn);
    server.join();
}

#[test]
fn close_notify_from_server_is_closed() {
    let pki = test_pki("main");
    let server = TlsServer::one(Arc::clone(&pki.server_config), |peer| {
        peer.handshake();
        peer.stream.conn.send_close_notify();
        peer.stream.flush().unwrap();
        // Keeps the TCP connection open until the client is gone, so that only the alert
        // ends the session for the client.
        let mut rest = Vec::new();
        let _ = peer.stream.sock.read_to_end(&mut rest);
    });
    let mut conn = Connection::connect(&server.addr, &tls_options(&pki)).unwrap();

    let error = conn.recv().unwrap_err();

    assert!(matches!(error, ClientError::Closed), "{error:?}");
    drop(conn);
    server.join();
}

#[test]
fn unknown_ca_is_tls_error() {
    let pki = test_pki("main");
    let other = test_pki("other");
    let server = TlsServer::one(Arc::clone(&pki.server_config), |peer| {
        let mut byte = [0u8; 1];
        // The handshake fails on the client's side, which sends an alert and closes.
        assert!(peer.stream.read(&mut byte).is_err());
    });

    let error = Connection::connect(&server.addr, &tls_options(&other)).unwrap_err();

    assert!(
        error
            .to_string()
            .contains("invalid peer certificate: UnknownIssuer"),
        "{error}"
    );
    server.join();
}

#[test]
fn insecure_skip_verify_accepts_unknown_ca() {
    let pki = test_pki("main");
    let server = TlsServer::one(Arc::clone(&pki.server_config), |peer| {
        peer.handshake();
        peer.ack_publish(0);
    });
    let options = Options {
        tls: Some(TlsOptions {
            insecure_skip_verify_for_testing: true,
            ..TlsOptions::default()
        }),
        ..options()
    };

    let mut conn = Connection::connect(&server.addr, &options).unwrap();

    assert_eq!(conn.publish(&topic(), b"unverified").unwrap().offset, 0);
    drop(conn);
    server.join();
}

#[test]
fn server_name_overrides_address_host() {
    let pki = test_pki("main");
    let server = TlsServer::one(Arc::clone(&pki.server_config), |peer| {
        let mut byte = [0u8; 1];
        assert!(peer.stream.read(&mut byte).is_err());
    });
    let mut options = tls_options(&pki);
    if let Some(tls) = options.tls.as_mut() {
        tls.server_name = Some("elsewhere.example".to_owned());
    }

    let error = Connection::connect(&server.addr, &options).unwrap_err();

    assert!(
        matches!(
            &error,
            ClientError::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{error:?}"
    );
    server.join();
}

#[test]
fn tls_client_on_plain_server_gets_hint() {
    let server = FakeServer::one(|peer| {
        // A chorus server replies to bytes that are not a preamble with its own preamble and
        // an ERROR, so the client receives the chorus magic where a TLS record belongs.
        peer.send_raw(&preamble());
        let _ = peer.try_recv();
        peer.close_now();
    });
    let options = Options {
        tls: Some(TlsOptions {
            insecure_skip_verify_for_testing: true,
            ..TlsOptions::default()
        }),
        ..options()
    };

    let error = Connection::connect(server.addr(), &options).unwrap_err();

    assert!(matches!(error, ClientError::TlsNotOffered), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the server does not speak TLS on this port; connect without TLS or to its TLS port"
    );
    server.join();
}

#[test]
fn plain_client_on_tls_server_gets_hint() {
    let pki = test_pki("main");
    let server = TlsServer::one(Arc::clone(&pki.server_config), |peer| {
        let mut byte = [0u8; 1];
        // rustls rejects the preamble, sends an alert and fails the read.
        assert!(peer.stream.read(&mut byte).is_err());
    });

    let error = Connection::connect(&server.addr, &options()).unwrap_err();

    assert!(matches!(error, ClientError::TlsRequired), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the server speaks TLS on this port; connect with TLS"
    );
    server.join();
}

#[test]
fn unreadable_ca_file_fails_before_connecting() {
    // Nothing listens on the address: a connect attempt would fail differently.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let options = Options {
        tls: Some(TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        }),
        ..options()
    };

    let error = Connection::connect(&addr, &options).unwrap_err();

    assert!(matches!(error, ClientError::TlsSetup { .. }), "{error:?}");
}
