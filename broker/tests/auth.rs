//! Token authentication with real chorusd processes on loopback: HS256 and EdDSA tokens made in
//! the test, anonymous sessions, role and topic-pattern checks, expiry while connected, and a
//! relay that authenticates upstream with a relay token.

mod util;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_client::{ClientError, Connection, ErrorCode, Frame, Options, StartAt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use util::client::{collect_events, options, topic};
use util::{wait_until, Broker, TestDir};

/// Shared secret of the test's HS256 tokens.
const SECRET: &str = "test-secret-for-hs256-tokens";

/// Maximum wait for an expiry, a connection or a delivery.
const WAIT: Duration = Duration::from_secs(20);

/// A broker with authentication on, and the directory of its data and configuration.
struct AuthNode {
    broker: Broker,
    _dir: TestDir,
}

impl AuthNode {
    fn addr(&self) -> String {
        self.broker.addr_string()
    }
}

/// An Ed25519 key pair generated for the test run.
struct EdKey {
    private_pem: String,
    public_pem: String,
}

fn ed_key() -> EdKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("generate Ed25519 key");
    EdKey {
        private_pem: pair.serialize_pem(),
        public_pem: pair.public_key_pem(),
    }
}

/// Returns the `[auth]` table that trusts `SECRET` and the public key in `public_key_file`.
fn auth_table(public_key_file: &Path) -> String {
    format!(
        "[auth]\nenabled = true\nhs256_secret = {SECRET:?}\neddsa_public_key_file = {:?}\n\
         anonymous_subscribe = [\"public/**\"]\nleeway_s = 0\n",
        public_key_file.to_str().expect("temporary paths are UTF-8")
    )
}

/// Starts a broker with authentication on, with `extra` TOML before the `[auth]` table.
fn start(key: &EdKey, extra: &str) -> AuthNode {
    let dir = TestDir::new();
    let public_key_file = dir.root().join("ed25519-public.pem");
    std::fs::write(&public_key_file, &key.public_pem).expect("write the public key");
    let config = dir.write_config(&format!("{extra}{}", auth_table(&public_key_file)));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    AuthNode { broker, _dir: dir }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock is after 1970")
        .as_secs()
}

/// Returns claims for `sub` with `role`, the same subscribe and publish patterns, valid for an
/// hour.
fn claims(sub: &str, role: &str, topics: &[&str]) -> Value {
    json!({
        "sub": sub,
        "role": role,
        "sub_topics": topics,
        "pub_topics": topics,
        "exp": now_s() + 3600,
    })
}

fn hs256_token(claims: &Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("HS256 key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("encode token")
}

fn eddsa_token(claims: &Value, key: &EdKey) -> String {
    let key = EncodingKey::from_ed_pem(key.private_pem.as_bytes()).expect("Ed25519 key");
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &key).expect("encode token")
}

fn token_options(token: &str) -> Options {
    Options {
        token: token.to_owned(),
        ..options()
    }
}

fn connect_with(addr: &str, token: &str) -> Connection {
    Connection::connect(addr, &token_options(token)).expect("connect with a valid token")
}

/// Returns the code and close flag of a server ERROR, and fails the test on any other result.
fn server_error<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (ErrorCode, bool) {
    match result {
        Err(ClientError::Server { code, close, .. }) => (code, close),
        other => panic!("expected an ERROR from the server, got {other:?}"),
    }
}

/// Returns the rejection code of a publish, and fails the test on any other result.
fn rejection<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Rejected { code, .. }) => code,
        other => panic!("expected a rejected publish, got {other:?}"),
    }
}

/// Publishes one comment with `token` and returns the publisher id the subscriber receives.
fn delivered_publisher(addr: &str, token: &str, name: &str) -> String {
    let topic = topic(name);
    let mut subscriber = connect_with(addr, token);
    subscriber
        .subscribe(&topic, StartAt::Latest, 0)
        .expect("subscribe inside the token's patterns");
    let mut publisher = connect_with(addr, token);
    publisher
        .publish(&topic, b"hello")
        .expect("publish inside the token's patterns");
    let events = collect_events(&mut subscriber, &topic, 1);
    events[0].publisher.clone()
}

#[test]
fn hs256_token_publishes_as_its_subject() {
    let key = ed_key();
    let node = start(&key, "");
    let token = hs256_token(&claims("alice", "commenter", &["live/**"]), SECRET);

    let publisher = delivered_publisher(&node.addr(), &token, "live/hs256");

    assert_eq!(publisher, "alice");
}

#[test]
fn eddsa_token_publishes_as_its_subject() {
    let key = ed_key();
    let node = start(&key, "");
    let token = eddsa_token(&claims("bob", "commenter", &["live/**"]), &key);

    let publisher = delivered_publisher(&node.addr(), &token, "live/eddsa");

    assert_eq!(publisher, "bob");
}

#[test]
fn invalid_tokens_are_unauthenticated() {
    let key = ed_key();
    let other_key = ed_key();
    let node = start(&key, "");
    let mut expired = claims("carol", "commenter", &["live/**"]);
    expired["exp"] = json!(now_s() - 60);
    let mut no_sub = claims("carol", "commenter", &["live/**"]);
    no_sub.as_object_mut().unwrap().remove("sub");
    let unknown_role = claims("carol", "owner", &["live/**"]);
    let bad_pattern = claims("carol", "commenter", &["live/***"]);
    let valid = claims("carol", "commenter", &["live/**"]);
    let cases = [
        ("wrong HS256 secret", hs256_token(&valid, "another-secret")),
        ("Ed25519 key not trusted", eddsa_token(&valid, &other_key)),
        ("expired", hs256_token(&expired, SECRET)),
        ("missing sub", hs256_token(&no_sub, SECRET)),
        ("unknown role", hs256_token(&unknown_role, SECRET)),
        ("invalid topic pattern", hs256_token(&bad_pattern, SECRET)),
        ("not a JWT", "not-a-token".to_owned()),
    ];

    for (case, token) in cases {
        let result = Connection::connect(&node.addr(), &token_options(&token));
        let (code, close) = server_error(result);
        assert_eq!(code, ErrorCode::Unauthenticated, "{case}: code");
        assert!(close, "{case}: close flag");
    }
}

#[test]
fn anonymous_session_subscribes_to_configured_patterns_only() {
    let key = ed_key();
    let node = start(&key, "");
    let mut conn = connect_with(&node.addr(), "");

    let public = conn.subscribe(&topic("public/news"), StartAt::Latest, 0);
    let private = conn.subscribe(&topic("private/news"), StartAt::Latest, 0);
    let publish = conn.publish(&topic("public/news"), b"anonymous comment");

    assert!(public.is_ok(), "subscribe to public/news: {public:?}");
    assert_eq!(
        server_error(private),
        (ErrorCode::Forbidden, false),
        "subscribe to private/news"
    );
    assert_eq!(
        rejection(publish),
        ErrorCode::Forbidden,
        "anonymous publish"
    );
}

#[test]
fn viewer_publish_is_forbidden() {
    let key = ed_key();
    let node = start(&key, "");
    let token = hs256_token(&claims("dave", "viewer", &["live/**"]), SECRET);
    let mut conn = connect_with(&node.addr(), &token);

    let publish = conn.publish(&topic("live/viewer"), b"viewer comment");
    let subscribe = conn.subscribe(&topic("live/viewer"), StartAt::Latest, 0);

    assert_eq!(rejection(publish), ErrorCode::Forbidden);
    assert!(subscribe.is_ok(), "viewer subscribe: {subscribe:?}");
}

#[test]
fn subscribe_outside_patterns_keeps_connection_open() {
    let key = ed_key();
    let node = start(&key, "");
    let token = hs256_token(&claims("erin", "commenter", &["live/*"]), SECRET);
    let mut conn = connect_with(&node.addr(), &token);

    let outside = conn.subscribe(&topic("live/final/chat"), StartAt::Latest, 0);
    let inside = conn.subscribe(&topic("live/final"), StartAt::Latest, 0);

    assert_eq!(server_error(outside), (ErrorCode::Forbidden, false));
    assert!(inside.is_ok(), "subscribe after FORBIDDEN: {inside:?}");
}

#[test]
fn publish_outside_patterns_is_forbidden() {
    let key = ed_key();
    let node = start(&key, "");
    let token = hs256_token(&claims("frank", "commenter", &["live/*"]), SECRET);
    let mut conn = connect_with(&node.addr(), &token);

    let outside = conn.publish(&topic("sports/final"), b"comment");
    let inside = conn.publish(&topic("live/final"), b"comment");

    assert_eq!(rejection(outside), ErrorCode::Forbidden);
    assert!(inside.is_ok(), "publish after FORBIDDEN: {inside:?}");
}

#[test]
fn token_expiry_closes_connection() {
    let key = ed_key();
    let node = start(&key, "");
    let mut short = claims("grace", "commenter", &["live/**"]);
    short["exp"] = json!(now_s() + 2);
    let mut conn = connect_with(&node.addr(), &hs256_token(&short, SECRET));
    conn.subscribe(&topic("live/expiry"), StartAt::Latest, 0)
        .expect("subscribe before expiry");

    // The broker checks expiry in its tick, so the ERROR comes within about a second of the
    // expiry. Each read is bounded by the client's read timeout, and the loop by WAIT.
    let deadline = Instant::now() + WAIT;
    let outcome = loop {
        assert!(
            Instant::now() < deadline,
            "no TOKEN_EXPIRED within {WAIT:?}"
        );
        match conn.recv() {
            Ok(Frame::Pong(_)) => continue,
            other => break other,
        }
    };

    assert_eq!(server_error(outcome), (ErrorCode::TokenExpired, true));
}

#[test]
fn enabled_auth_without_key_fails_to_start() {
    let dir = TestDir::new();
    let config = dir.write_config("[auth]\nenabled = true\n");

    let started = Broker::try_start_on(&dir.data(), "127.0.0.1:0", &["--config", &config]);

    assert!(started.is_err(), "chorusd started without a token key");
}

#[test]
fn broker_without_auth_stores_empty_publisher() {
    let dir = TestDir::new();
    let broker = Broker::start(&dir.data(), &[]);
    // The token is ignored when authentication is off.
    let token = hs256_token(&claims("ignored", "commenter", &["**"]), SECRET);

    let publisher = delivered_publisher(&broker.addr_string(), &token, "live/open");

    assert_eq!(publisher, "");
}

/// Starts a relay with authentication on whose upstream link sends `relay_token`.
fn start_relay(key: &EdKey, upstream: &str, relay_token: &str) -> AuthNode {
    let relay_table = format!(
        "role = \"relay\"\n[relay]\nupstreams = [{upstream:?}]\nreconnect_initial_ms = 20\n\
         reconnect_max_ms = 300\ntoken = {relay_token:?}\n"
    );
    start(key, &relay_table)
}

#[test]
fn relay_with_relay_token_serves_subscriber() {
    let key = ed_key();
    let origin = start(&key, "");
    let relay_token = hs256_token(&claims("relay-eu-1", "relay", &["live/**"]), SECRET);
    let relay = start_relay(&key, &origin.addr(), &relay_token);
    let connected = wait_until(WAIT, || {
        let log = relay.broker.log_lines();
        log.iter().any(|line| line.contains("connected upstream"))
    });
    assert!(connected, "relay did not connect upstream");
    let topic = topic("live/relayed");
    let viewer = hs256_token(&claims("heidi", "viewer", &["live/**"]), SECRET);
    let mut subscriber = connect_with(&relay.addr(), &viewer);
    subscriber
        .subscribe(&topic, StartAt::Latest, 0)
        .expect("subscribe at the relay");

    let author = hs256_token(&claims("ivan", "commenter", &["live/**"]), SECRET);
    connect_with(&origin.addr(), &author)
        .publish(&topic, b"from the origin")
        .expect("publish at the origin");
    let events = collect_events(&mut subscriber, &topic, 1);

    assert_eq!(events[0].publisher, "ivan");
}

/// A relay forwards its clients' publishes as RELAY_PUBLISH, which names the user of the token
/// the relay verified, so the origin stores that user rather than the relay's.
#[test]
fn relay_forwarded_publish_carries_author_subject() {
    let key = ed_key();
    let origin = start(&key, "");
    let relay_token = hs256_token(&claims("relay-eu-2", "relay", &["live/**"]), SECRET);
    let relay = start_relay(&key, &origin.addr(), &relay_token);
    let topic = topic("live/forwarded");
    let reader = hs256_token(&claims("judy", "viewer", &["live/**"]), SECRET);
    let mut subscriber = connect_with(&origin.addr(), &reader);
    subscriber
        .subscribe(&topic, StartAt::Latest, 0)
        .expect("subscribe at the origin");

    let author = hs256_token(&claims("mallory", "commenter", &["live/**"]), SECRET);
    let mut at_relay = connect_with(&relay.addr(), &author);
    let deadline = Instant::now() + WAIT;
    // The relay's upstream link may still be connecting, which rejects the first publishes.
    let ack = loop {
        match at_relay.publish(&topic, b"through the relay") {
            Err(ClientError::Rejected {
                code: ErrorCode::UpstreamUnavailable,
                ..
            }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => break other,
        }
    };
    assert!(ack.is_ok(), "publish through the relay: {ack:?}");
    let events = collect_events(&mut subscriber, &topic, 1);

    assert_eq!(events[0].publisher, "mallory");
}

#[test]
fn relay_checks_client_permissions_locally() {
    let key = ed_key();
    let origin = start(&key, "");
    let relay_token = hs256_token(&claims("relay-eu-3", "relay", &["**"]), SECRET);
    let relay = start_relay(&key, &origin.addr(), &relay_token);
    let viewer = hs256_token(&claims("niaj", "viewer", &["live/*"]), SECRET);
    let mut conn = connect_with(&relay.addr(), &viewer);

    let publish = conn.publish(&topic("live/local"), b"comment");
    let subscribe = conn.subscribe(&topic("other/local"), StartAt::Latest, 0);

    assert_eq!(rejection(publish), ErrorCode::Forbidden);
    assert_eq!(server_error(subscribe), (ErrorCode::Forbidden, false));
}

#[test]
fn relay_without_token_cannot_subscribe_upstream() {
    let key = ed_key();
    let origin = start(&key, "");
    let relay = start_relay(&key, &origin.addr(), "");
    let viewer = hs256_token(&claims("olivia", "viewer", &["live/**"]), SECRET);
    let mut conn = connect_with(&relay.addr(), &viewer);

    // The relay allows the subscription locally, and the origin rejects the relay's anonymous
    // upstream subscription, which the relay passes on.
    let subscribe = conn.subscribe(&topic("live/no-relay-token"), StartAt::Latest, 0);

    assert_eq!(server_error(subscribe), (ErrorCode::Forbidden, false));
}

/// Every relay token expires, so a relay reads `relay.token_file` again before each connection
/// to its upstream: renewing the file must bring a relay that was refused back into service
/// without a restart.
#[test]
fn relay_picks_up_renewed_token_file() {
    let key = ed_key();
    let origin = start(&key, "");
    let token_dir = TestDir::new();
    let token_file = token_dir.root().join("relay-token");
    std::fs::write(&token_file, "not-a-valid-token\n").expect("write the token file");
    let relay_table = format!(
        "role = \"relay\"\n[relay]\nupstreams = [{:?}]\nreconnect_initial_ms = 20\n\
         reconnect_max_ms = 300\ntoken_file = {:?}\n",
        origin.addr(),
        token_file.to_str().expect("temporary paths are UTF-8")
    );
    let relay = start(&key, &relay_table);
    relay
        .broker
        .wait_for_log("upstream rejected the relay's token", WAIT);

    let renewed = hs256_token(&claims("relay-eu-1", "relay", &["live/**"]), SECRET);
    std::fs::write(&token_file, format!("{renewed}\n")).expect("renew the token file");
    relay.broker.wait_for_log("connected upstream", WAIT);

    let topic = topic("live/renewed");
    let viewer = hs256_token(&claims("judy", "viewer", &["live/**"]), SECRET);
    let mut subscriber = connect_with(&relay.addr(), &viewer);
    subscriber
        .subscribe(&topic, StartAt::Latest, 0)
        .expect("subscribe at the relay");
    let author = hs256_token(&claims("ken", "commenter", &["live/**"]), SECRET);
    connect_with(&origin.addr(), &author)
        .publish(&topic, b"after renewal")
        .expect("publish at the origin");
    let events = collect_events(&mut subscriber, &topic, 1);
    assert_eq!(events[0].payload, b"after renewal".as_slice());
}
