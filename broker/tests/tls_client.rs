//! The Rust client over TLS against the real chorusd: publishing, subscribing, resuming across
//! a restart, certificate checks, mutual TLS, the hints for a client and a port that disagree
//! about TLS, and a recorded chat replayed through TLS connections.

mod util;

use std::net::TcpListener;
use std::path::Path;
use std::thread;
use std::time::Duration;

use chorus_client::{
    Backoff, ClientError, Connection, Event, Options, StartAt, Subscriber, TlsOptions, Topic,
};
use util::chatlog::{print_skip, recorded_chat};
use util::client::{assert_in_order, collect_events, options, publish_pipelined, topic};
use util::pki::{Issued, Pki};
use util::{Broker, TestDir};

/// How long a broker may take to open its TLS listener after it logged the plain one.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Comments of the recorded chat replayed over TLS.
const REPLAY_COMMENTS: usize = 5_000;

/// Subscribers that each check every replayed comment.
const REPLAY_SUBSCRIBERS: usize = 3;

/// A chorusd with a plain listener and a TLS listener.
struct TlsBroker {
    broker: Broker,
    /// Address of the TLS listener, as host:port.
    tls_addr: String,
    /// Configuration file, kept for a restart.
    config: String,
}

impl TlsBroker {
    /// Starts chorusd serving `server`'s certificate on `tls_listen`, which may name port 0.
    /// `extra_tls` is appended to the `[tls]` section.
    fn start(dir: &TestDir, server: &Issued, tls_listen: &str, extra_tls: &str) -> TlsBroker {
        let config = dir.write_config(&format!(
            "[tls]\nlisten = [{tls_listen:?}]\ncert_file = {:?}\nkey_file = {:?}\n{extra_tls}\n",
            server.cert, server.key
        ));
        let broker = Broker::start(&dir.data(), &["--config", &config]);
        TlsBroker::with_listener(broker, config)
    }

    /// Waits for the TLS listener of `broker` and reads its address from the log.
    fn with_listener(broker: Broker, config: String) -> TlsBroker {
        let line = broker.wait_for_log("listening with TLS", LISTEN_TIMEOUT);
        let tls_addr = line[line.find("addr=").expect("log line has addr=") + 5..]
            .split_whitespace()
            .next()
            .expect("addr= has a value")
            .to_owned();
        TlsBroker {
            broker,
            tls_addr,
            config,
        }
    }

    /// Stops chorusd with SIGTERM and starts it again on the same addresses and data.
    fn restart(mut self) -> TlsBroker {
        assert!(
            self.broker.stop(),
            "chorusd did not exit cleanly after SIGTERM"
        );
        let plain = self.broker.addr_string();
        let broker = Broker::restart_on(&self.broker.data_dir, &plain, &["--config", &self.config]);
        TlsBroker::with_listener(broker, self.config)
    }
}

/// Returns a loopback address with a port that was free a moment ago, for a listener that must
/// keep its port across a restart.
fn free_loopback_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("failed to bind a loopback port");
    listener
        .local_addr()
        .expect("bound socket has an address")
        .to_string()
}

/// Client options that trust `ca_file`, with reads bounded as in [`options`].
fn tls_options(ca_file: &Path, client_cert: Option<&Issued>) -> Options {
    Options {
        tls: Some(TlsOptions {
            ca_file: Some(ca_file.to_owned()),
            client_cert: client_cert.map(|issued| (issued.cert.clone(), issued.key.clone())),
            ..TlsOptions::default()
        }),
        ..options()
    }
}

fn payloads(label: &str, count: u64) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| format!("{label} {i}").into_bytes())
        .collect()
}

#[test]
fn publish_and_subscribe_over_tls() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let tls = TlsBroker::start(&dir, &pki.server("server", false), "127.0.0.1:0", "");
    let options = tls_options(&pki.ca_file, None);
    let topic = topic("secure/chat");

    let mut subscriber = Subscriber::connect(
        &tls.tls_addr,
        topic.clone(),
        StartAt::Latest,
        options.clone(),
    )
    .unwrap();
    let mut publisher = Connection::connect(&tls.tls_addr, &options).unwrap();
    let single = publisher.publish(&topic, b"first over TLS").unwrap();
    let acks = publish_pipelined(&mut publisher, &topic, &payloads("pipelined", 999));

    assert_eq!(single.offset, 0);
    assert_eq!(acks.last().map(|ack| ack.offset), Some(999));
    let events: Vec<Event> = (0..1000)
        .map(|_| subscriber.next_event().unwrap())
        .collect();
    assert_eq!(events[0].payload.as_ref(), b"first over TLS");
    assert_in_order(&events[1..], 1, |offset| {
        format!("pipelined {}", offset - 1).into_bytes()
    });
}

#[test]
fn subscriber_resumes_across_restart_over_tls() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let tls_listen = free_loopback_addr();
    let tls = TlsBroker::start(&dir, &pki.server("server", false), &tls_listen, "");
    let topic = topic("secure/restart");
    let options = tls_options(&pki.ca_file, None);
    let mut publisher = Connection::connect(&tls.tls_addr, &options).unwrap();
    publish_pipelined(&mut publisher, &topic, &payloads("before", 1));

    let subscriber_options = Options {
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_attempts: Some(200),
        },
        ..options.clone()
    };
    let mut subscriber = Subscriber::connect(
        &tls.tls_addr,
        topic.clone(),
        StartAt::Earliest,
        subscriber_options,
    )
    .unwrap();
    let stream = subscriber.stream();
    publish_pipelined(&mut publisher, &topic, &payloads("before", 500)[1..]);
    let before: Vec<Event> = (0..500).map(|_| subscriber.next_event().unwrap()).collect();
    drop(publisher);

    let tls = tls.restart();
    assert_eq!(tls.tls_addr, tls_listen, "TLS address after the restart");
    let reader = thread::spawn(move || {
        let after: Vec<Event> = (0..500).map(|_| subscriber.next_event().unwrap()).collect();
        (subscriber, after)
    });
    let mut publisher = Connection::connect(&tls.tls_addr, &options).unwrap();
    publish_pipelined(&mut publisher, &topic, &payloads("after", 500));
    let (subscriber, after) = reader.join().unwrap();

    assert!(
        subscriber.reconnects() >= 1,
        "the subscriber never reconnected"
    );
    assert_eq!(subscriber.stream(), stream, "stream id after the restart");
    assert_in_order(&before, 0, |offset| format!("before {offset}").into_bytes());
    assert_in_order(&after, 500, |offset| {
        format!("after {}", offset - 500).into_bytes()
    });
}

#[test]
fn unknown_ca_fails_with_unknown_issuer() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let other = Pki::new(dir.root(), "other");
    let tls = TlsBroker::start(&dir, &pki.server("server", false), "127.0.0.1:0", "");

    let error = Connection::connect(&tls.tls_addr, &tls_options(&other.ca_file, None)).unwrap_err();

    assert!(matches!(error, ClientError::Tls(_)), "{error:?}");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
}

#[test]
fn tls_client_on_plain_port_gets_hint() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let tls = TlsBroker::start(&dir, &pki.server("server", false), "127.0.0.1:0", "");

    let plain = tls.broker.addr_string();
    let error = Connection::connect(&plain, &tls_options(&pki.ca_file, None)).unwrap_err();

    assert!(matches!(error, ClientError::TlsNotOffered), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("does not speak TLS on this port"),
        "{error}"
    );
}

#[test]
fn plain_client_on_tls_port_gets_hint() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let tls = TlsBroker::start(&dir, &pki.server("server", false), "127.0.0.1:0", "");

    let error = Connection::connect(&tls.tls_addr, &options()).unwrap_err();

    assert!(matches!(error, ClientError::TlsRequired), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("speaks TLS on this port; connect with TLS"),
        "{error}"
    );
}

#[test]
fn mutual_tls_rejects_client_without_certificate() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let extra = format!("client_ca_file = {:?}", pki.ca_file);
    let tls = TlsBroker::start(&dir, &pki.server("server", false), "127.0.0.1:0", &extra);

    let error = Connection::connect(&tls.tls_addr, &tls_options(&pki.ca_file, None)).unwrap_err();

    assert!(matches!(error, ClientError::Tls(_)), "{error:?}");
    assert!(error.to_string().contains("CertificateRequired"), "{error}");
}

#[test]
fn mutual_tls_accepts_client_certificate() {
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let extra = format!("client_ca_file = {:?}", pki.ca_file);
    let tls = TlsBroker::start(&dir, &pki.server("server", false), "127.0.0.1:0", &extra);
    let relay = pki.client("relay");
    let options = tls_options(&pki.ca_file, Some(&relay));
    let topic = topic("secure/relay");

    let mut subscriber = Connection::connect(&tls.tls_addr, &options).unwrap();
    subscriber.subscribe(&topic, StartAt::Latest, 0).unwrap();
    let mut publisher = Connection::connect(&tls.tls_addr, &options).unwrap();
    let acks = publish_pipelined(&mut publisher, &topic, &payloads("relayed", 20));

    assert_eq!(acks.len(), 20);
    let events = collect_events(&mut subscriber, &topic, 20);
    assert_in_order(&events, 0, |offset| {
        format!("relayed {offset}").into_bytes()
    });
}

#[test]
fn recorded_chat_over_tls_arrives_once_in_order() {
    let Some(texts) = recorded_chat(REPLAY_COMMENTS) else {
        print_skip("recorded_chat_over_tls_arrives_once_in_order");
        return;
    };
    assert_eq!(
        texts.len(),
        REPLAY_COMMENTS,
        "comments read from the chat log"
    );
    let dir = TestDir::new();
    let pki = Pki::new(dir.root(), "main");
    let tls = TlsBroker::start(&dir, &pki.server("server", false), "127.0.0.1:0", "");
    let options = tls_options(&pki.ca_file, None);
    let topic = topic("secure/replay");

    // Plain connections rather than Subscribers, because a Subscriber drops repeated
    // comments itself and would hide a duplicate delivered by the broker.
    let subscribers: Vec<_> = (0..REPLAY_SUBSCRIBERS)
        .map(|_| {
            let mut conn = Connection::connect(&tls.tls_addr, &options).unwrap();
            conn.subscribe(&topic, StartAt::Latest, 0).unwrap();
            let topic: Topic = topic.clone();
            thread::spawn(move || collect_events(&mut conn, &topic, REPLAY_COMMENTS))
        })
        .collect();
    let mut publisher = Connection::connect(&tls.tls_addr, &options).unwrap();
    let acks = publish_pipelined(&mut publisher, &topic, &texts);

    assert_eq!(acks.first().map(|ack| ack.offset), Some(0));
    assert_eq!(
        acks.last().map(|ack| ack.offset),
        Some(REPLAY_COMMENTS as u64 - 1)
    );
    for (number, subscriber) in subscribers.into_iter().enumerate() {
        let events = subscriber.join().unwrap();
        assert_eq!(
            events.len(),
            REPLAY_COMMENTS,
            "comments of subscriber {number}"
        );
        assert_in_order(&events, 0, |offset| texts[offset as usize].clone());
    }
}
