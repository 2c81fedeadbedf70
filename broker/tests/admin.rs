//! The admin endpoint and Prometheus metrics of a real chorusd process, over HTTP on loopback.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chorus_client::{ClientError, Connection, ErrorCode, Options, StartAt};
use serde_json::Value;
use util::client::{connect, options, topic};
use util::{wait_until, Broker, TestDir};

const TOKEN: &str = "admin-test-token";

/// An HTTP client for one broker's admin endpoint.
struct Admin {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Admin {
    fn new(broker: &Broker, token: Option<&str>) -> Admin {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        Admin {
            base: format!("http://{}", broker.admin_addr()),
            token: token.map(str::to_owned),
            agent,
        }
    }

    fn request(&self, method: &str, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let builder = ureq::http::Request::builder().method(method).uri(url);
        let builder = match &self.token {
            Some(token) => builder.header("Authorization", format!("Bearer {token}")),
            None => builder,
        };
        let request = builder.body(()).expect("valid request");
        let mut response = self.agent.run(request).expect("admin request failed");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("readable body");
        (status, body)
    }

    /// Sends a request and returns the status and the JSON body.
    fn json(&self, method: &str, path: &str) -> (u16, Value) {
        let (status, body) = self.request(method, path);
        let value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {path} returned non-JSON {body:?}: {e}"));
        (status, value)
    }

    /// Sends GET and returns the JSON body of a 200 response.
    fn get(&self, path: &str) -> Value {
        let (status, value) = self.json("GET", path);
        assert_eq!(status, 200, "GET {path}: {value}");
        value
    }
}

fn start(dir: &TestDir) -> Broker {
    Broker::start(&dir.data(), &[])
}

/// Publishes `count` comments and returns the stream id of the last acknowledgement.
fn publish(broker: &Broker, name: &str, count: usize) -> u64 {
    let mut conn = connect(&broker.addr_string());
    let topic = topic(name);
    let mut stream = 0;
    for i in 0..count {
        stream = conn
            .publish(&topic, format!("comment {i}").as_bytes())
            .unwrap()
            .stream;
    }
    stream
}

/// Opens a connection named `client_name` subscribed to `name` from its end.
fn subscriber(broker: &Broker, name: &str, client_name: &str) -> Connection {
    let options = Options {
        client_name: client_name.to_owned(),
        ..options()
    };
    let mut conn = Connection::connect(&broker.addr_string(), &options).unwrap();
    conn.subscribe(&topic(name), StartAt::Latest, 0).unwrap();
    conn
}

fn find_topic<'a>(topics: &'a Value, name: &str) -> &'a Value {
    topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("topic {name} not listed in {topics}"))
}

fn find_client<'a>(conns: &'a Value, client_name: &str) -> &'a Value {
    conns["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == client_name)
        .unwrap_or_else(|| panic!("client {client_name} not listed in {conns}"))
}

#[test]
fn status_reports_origin_fields() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let status = Admin::new(&broker, None).get("/v1/status");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["role"], "origin");
    assert_eq!(status["upstream"], Value::Null);
    assert_eq!(status["workers"], 2);
    assert_eq!(status["connections"], 0);
    assert!(status["uptime_s"].is_u64());
    assert!(status["published_per_s"].is_number());
    assert!(status["delivered_per_s"].is_number());
}

#[test]
fn status_counts_open_connections() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let _first = connect(&broker.addr_string());
    let _second = connect(&broker.addr_string());
    let status = Admin::new(&broker, None).get("/v1/status");
    assert_eq!(status["connections"], 2);
}

#[test]
fn topics_show_end_offset_after_publishes() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let stream = publish(&broker, "event/final", 5);

    let topics = Admin::new(&broker, None).get("/v1/topics");
    let listed = find_topic(&topics, "event/final");
    assert_eq!(listed["end"], 5);
    assert_eq!(listed["earliest"], 0);
    assert_eq!(listed["stream"], stream);
    assert_eq!(listed["subscribers"], 0);
    assert!(listed["bytes_on_disk"].as_u64().unwrap() > 0);
}

#[test]
fn single_topic_path_takes_encoded_slash() {
    let dir = TestDir::new();
    let broker = start(&dir);
    publish(&broker, "event/final", 2);
    let listed = Admin::new(&broker, None).get("/v1/topics/event%2Ffinal");
    assert_eq!(listed["name"], "event/final");
    assert_eq!(listed["end"], 2);
}

#[test]
fn topics_list_unloaded_topic_after_restart() {
    let dir = TestDir::new();
    let mut broker = start(&dir);
    publish(&broker, "cold", 3);
    assert!(broker.stop());

    let broker = start(&dir);
    let topics = Admin::new(&broker, None).get("/v1/topics");
    let listed = find_topic(&topics, "cold");
    assert_eq!(listed["loaded"], false);
    assert!(listed["bytes_on_disk"].as_u64().unwrap() > 0);
}

#[test]
fn connections_list_subscriber_next_offset() {
    let dir = TestDir::new();
    let broker = start(&dir);
    publish(&broker, "live", 3);
    let _sub = subscriber(&broker, "live", "watcher/1");

    let conns = Admin::new(&broker, None).get("/v1/connections");
    let conn = find_client(&conns, "watcher/1");
    let subs = conn["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["topic"], "live");
    assert_eq!(subs[0]["next"], 3);
    assert_eq!(subs[0]["delivery"], "live");
    assert_eq!(conn["slow_consumer"], false);
    assert_eq!(conn["phase"], "ready");
}

#[test]
fn connections_filter_by_topic() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let _a = subscriber(&broker, "a", "client-a");
    let _b = subscriber(&broker, "b", "client-b");

    let conns = Admin::new(&broker, None).get("/v1/connections?topic=b");
    let listed = conns["connections"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["client"], "client-b");
    assert_eq!(conns["total"], 1);
}

#[test]
fn kick_closes_client_with_error() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let mut sub = subscriber(&broker, "live", "kick-me");
    let admin = Admin::new(&broker, None);
    let id = find_client(&admin.get("/v1/connections"), "kick-me")["id"]
        .as_u64()
        .unwrap();

    let (status, reply) = admin.json("POST", &format!("/v1/connections/{id}/kick"));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["kicked"]["id"], id);
    match sub.recv() {
        Err(ClientError::Server {
            code,
            close,
            message,
            ..
        }) => {
            assert_eq!(code, ErrorCode::ShuttingDown);
            assert!(close);
            assert!(message.contains("administrator"), "{message}");
        }
        other => panic!("expected an ERROR frame, got {other:?}"),
    }
    assert!(matches!(
        sub.recv(),
        Err(ClientError::Closed | ClientError::Io(_))
    ));
}

#[test]
fn kick_of_unknown_connection_is_404() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let (status, reply) = Admin::new(&broker, None).json("POST", "/v1/connections/999999/kick");
    assert_eq!(status, 404);
    assert!(reply["error"].as_str().unwrap().contains("999999"));
}

#[test]
fn delete_topic_restarts_at_zero_with_new_stream() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let old_stream = publish(&broker, "event/delete-me", 4);
    let mut sub = subscriber(&broker, "event/delete-me", "deleted-sub");
    let admin = Admin::new(&broker, None);

    let (status, reply) = admin.json("DELETE", "/v1/topics/event%2Fdelete-me");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["stream"], old_stream);
    assert_eq!(reply["end"], 4);
    assert_eq!(reply["subscriptions_ended"], 1);

    match sub.recv() {
        Err(ClientError::Server {
            code, topic, close, ..
        }) => {
            assert_eq!(code, ErrorCode::TopicNotFound);
            assert_eq!(topic, "event/delete-me");
            assert!(!close);
        }
        other => panic!("expected an ERROR frame, got {other:?}"),
    }
    let topic_dir = dir.data().join("topics").join("event+delete-me");
    assert!(!topic_dir.exists(), "{} still exists", topic_dir.display());

    let mut conn = connect(&broker.addr_string());
    let ack = conn.publish(&topic("event/delete-me"), b"again").unwrap();
    assert_eq!(ack.offset, 0);
    assert_ne!(ack.stream, old_stream);
}

#[test]
fn delete_of_unknown_topic_is_404() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let (status, _) = Admin::new(&broker, None).json("DELETE", "/v1/topics/never");
    assert_eq!(status, 404);
}

#[test]
fn delete_of_unloaded_topic_removes_it() {
    let dir = TestDir::new();
    let mut broker = start(&dir);
    publish(&broker, "cold", 2);
    assert!(broker.stop());

    let broker = start(&dir);
    let (status, reply) = Admin::new(&broker, None).json("DELETE", "/v1/topics/cold");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["end"], 2);
    assert!(!dir.data().join("topics").join("cold").exists());
}

#[test]
fn missing_token_is_401_when_token_configured() {
    let dir = TestDir::new();
    let config = dir.write_config(&format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    let broker = Broker::start(&dir.data(), &["--config", &config]);

    let (status, reply) = Admin::new(&broker, None).json("GET", "/v1/status");
    assert_eq!(status, 401);
    assert!(reply["error"].as_str().unwrap().contains("token"));
    let (status, _) = Admin::new(&broker, Some("wrong")).json("GET", "/v1/status");
    assert_eq!(status, 401);
    let (status, _) = Admin::new(&broker, Some(TOKEN)).json("GET", "/v1/status");
    assert_eq!(status, 200);
    let (status, _) = Admin::new(&broker, None).request("GET", "/metrics");
    assert_eq!(status, 401);
}

#[test]
fn token_file_is_read_at_start() {
    let dir = TestDir::new();
    let token_path = dir.root().join("admin.token");
    std::fs::write(&token_path, format!("{TOKEN}\n")).unwrap();
    let config = dir.write_config(&format!("[admin]\ntoken_file = {:?}\n", token_path));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let (status, _) = Admin::new(&broker, Some(TOKEN)).json("GET", "/v1/status");
    assert_eq!(status, 200);
}

#[test]
fn endpoint_without_token_warns_at_start() {
    let dir = TestDir::new();
    let broker = start(&dir);
    broker.wait_for_log("admin endpoint is unauthenticated", Duration::from_secs(10));
}

#[test]
fn metrics_count_published_comments() {
    let dir = TestDir::new();
    let broker = start(&dir);
    publish(&broker, "counted", 7);

    let (status, text) = Admin::new(&broker, None).request("GET", "/metrics");
    assert_eq!(status, 200);
    let line = text
        .lines()
        .find(|l| l.starts_with("chorus_comments_published_total "))
        .unwrap_or_else(|| panic!("no published counter in:\n{text}"));
    assert_eq!(line, "chorus_comments_published_total 7");
}

#[test]
fn metrics_count_live_deliveries() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let mut sub = subscriber(&broker, "fanout", "metrics-sub");
    publish(&broker, "fanout", 3);
    let events = util::client::collect_events(&mut sub, &topic("fanout"), 3);
    assert_eq!(events.len(), 3);

    let (_, text) = Admin::new(&broker, None).request("GET", "/metrics");
    let line = text
        .lines()
        .find(|l| l.starts_with("chorus_deliveries_total{mode=\"live\"}"))
        .unwrap_or_else(|| panic!("no live deliveries counter in:\n{text}"));
    assert_eq!(line, "chorus_deliveries_total{mode=\"live\"} 3");
}

#[test]
fn metrics_list_every_family() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let (_, text) = Admin::new(&broker, None).request("GET", "/metrics");
    let families = [
        "chorus_comments_published",
        "chorus_deliveries",
        "chorus_connections",
        "chorus_publish_ack_latency_seconds",
        "chorus_publish_deliver_latency_seconds",
        "chorus_outbound_queue_bytes",
        "chorus_slow_consumer_switches",
        "chorus_catch_up_subscriptions",
        "chorus_disk_bytes",
        "chorus_errors",
    ];
    for family in families {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no {family} in:\n{text}"
        );
    }
}

#[test]
fn tree_says_links_are_not_reported() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let tree = Admin::new(&broker, None).get("/v1/tree");
    assert_eq!(tree["upstream"], Value::Null);
    assert_eq!(tree["children"], Value::Array(Vec::new()));
    assert_eq!(tree["links_reported"], false);
}

#[test]
fn moderation_endpoints_are_501() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let admin = Admin::new(&broker, None);
    let cases = [
        ("POST", "/v1/bans", "moderation"),
        ("DELETE", "/v1/bans/someone", "moderation"),
        ("DELETE", "/v1/topics/live/comments/3", "moderation"),
        (
            "PUT",
            "/v1/topics/live/retention",
            "runtime retention changes",
        ),
    ];
    for (method, path, feature) in cases {
        let (status, reply) = admin.json(method, path);
        assert_eq!(status, 501, "{method} {path}");
        assert_eq!(reply["missing"], feature, "{method} {path}");
    }
}

#[test]
fn unknown_path_and_wrong_method_are_rejected() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let admin = Admin::new(&broker, None);
    let (status, reply) = admin.json("GET", "/v1/nothing");
    assert_eq!(status, 404);
    assert!(reply["error"].is_string());
    let (status, _) = admin.json("DELETE", "/v1/status");
    assert_eq!(status, 405);
    let (status, _) = admin.json("POST", "/v1/connections/abc/kick");
    assert_eq!(status, 400);
}

#[test]
fn reload_applies_limits_and_reports_restart_keys() {
    let dir = TestDir::new();
    let config = dir.write_config("[limits]\nmax_subscriptions = 1024\n");
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let admin = Admin::new(&broker, None);

    dir.write_config("[limits]\nmax_subscriptions = 1\n[storage]\nsegment_bytes = 1048576\n");
    let (status, reply) = admin.json("POST", "/v1/reload");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["applied"][0]["key"], "limits.max_subscriptions");
    assert_eq!(reply["applied"][0]["file"], 1);
    let restart: Vec<&str> = reply["restart_required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(restart, ["storage.segment_bytes"]);

    let mut conn = connect(&broker.addr_string());
    conn.subscribe(&topic("first"), StartAt::Latest, 0).unwrap();
    match conn.subscribe(&topic("second"), StartAt::Latest, 0) {
        Err(ClientError::Server { code, .. }) => {
            assert_eq!(code, ErrorCode::TooManySubscriptions)
        }
        other => panic!("expected TOO_MANY_SUBSCRIPTIONS, got {other:?}"),
    }
}

#[test]
fn reload_of_invalid_file_keeps_running_config() {
    let dir = TestDir::new();
    let config = dir.write_config("");
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    dir.write_config("[limits]\nmax_payload = \"lots\"\n");
    let (status, reply) = Admin::new(&broker, None).json("POST", "/v1/reload");
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().unwrap().contains("unchanged"));
}

/// How long a raw admin connection waits for the response and the close.
const RAW_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Connections the admin endpoint serves at once; further ones are rejected with 503.
const MAX_ADMIN_CONNECTIONS: usize = 16;

/// Opens a TCP connection to the admin endpoint with bounded reads and writes.
fn raw_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the admin endpoint");
    stream.set_read_timeout(Some(RAW_READ_TIMEOUT)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection, and returns what arrived. A read timeout or
/// reset fails the test, since the server must respond and close on its own.
fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("admin connection not closed cleanly after {bytes:?}: {e}"));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sends `head` on a new connection and returns the whole response.
fn raw_exchange(addr: SocketAddr, head: &str) -> String {
    let mut stream = raw_connect(addr);
    stream.write_all(head.as_bytes()).unwrap();
    read_until_closed(&mut stream)
}

/// Returns the status code of a raw response.
fn raw_status(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP/1.1 status line in {response:?}"))
}

/// Returns the JSON body of a raw response.
fn raw_json(response: &str) -> Value {
    let (_, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {response:?}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("non-JSON body {body:?}: {e}"))
}

// A Content-Length of 99999999999 on a GET once made the HTTP library allocate that many bytes to
// drain the unread body, and the failed allocation aborted chorusd.
#[test]
fn huge_content_length_is_413_and_broker_lives() {
    let dir = TestDir::new();
    let mut broker = start(&dir);
    let head = "GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n";

    let response = raw_exchange(broker.admin_addr(), head);
    assert_eq!(raw_status(&response), 413, "{response}");
    assert!(raw_json(&response)["error"].is_string(), "{response}");
    assert!(broker.is_running());
    assert_eq!(
        Admin::new(&broker, None).get("/v1/status")["role"],
        "origin"
    );
}

#[test]
fn chunked_body_is_413() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let request = "POST /v1/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n0\r\n\r\n";
    let response = raw_exchange(broker.admin_addr(), request);
    assert_eq!(raw_status(&response), 413, "{response}");
}

#[test]
fn empty_chunked_body_is_served() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let request = "POST /v1/connections/999999/kick HTTP/1.1\r\nHost: x\r\n\
                   Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let response = raw_exchange(broker.admin_addr(), request);
    assert_eq!(raw_status(&response), 404, "{response}");
}

#[test]
fn body_to_missing_feature_is_501() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let request = "POST /v1/bans HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    let response = raw_exchange(broker.admin_addr(), request);
    assert_eq!(raw_status(&response), 501, "{response}");
}

#[test]
fn malformed_request_is_400() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let response = raw_exchange(broker.admin_addr(), "GET /v1/status HTTP/9\r\n\r\n");
    assert_eq!(raw_status(&response), 400, "{response}");
    assert!(raw_json(&response)["error"].is_string(), "{response}");
}

#[test]
fn oversized_head_is_431() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let padding = "a".repeat(20 * 1024);
    let head = format!("GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Padding: {padding}\r\n\r\n");
    let response = raw_exchange(broker.admin_addr(), &head);
    assert_eq!(raw_status(&response), 431, "{response}");
}

// A client that declared a body and sent none once held the only admin thread until it
// disconnected, so metrics scrapes and chorusctl timed out.
#[test]
fn declared_body_not_sent_does_not_block_status() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let mut stalled = raw_connect(broker.admin_addr());
    let head = "POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000000\r\n\r\n";
    stalled.write_all(head.as_bytes()).unwrap();

    let status = Admin::new(&broker, None).get("/v1/status");
    assert_eq!(status["role"], "origin");
    let response = read_until_closed(&mut stalled);
    assert_eq!(raw_status(&response), 413, "{response}");
}

#[test]
fn slow_head_does_not_block_and_times_out() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let mut reader = raw_connect(broker.admin_addr());
    let mut writer = reader.try_clone().unwrap();
    let (sent, sent_count) = mpsc::channel();
    // Sends one byte every 200 ms for at most 30 s, far past the server's deadline for the
    // head, and stops when the server has closed the connection.
    let slow = std::thread::spawn(move || {
        let head = format!("GET /v1/status HTTP/1.1\r\nX-Slow: {}", "a".repeat(150));
        for (i, byte) in head.bytes().enumerate() {
            if writer.write_all(&[byte]).is_err() {
                return false;
            }
            let _ = sent.send(i + 1);
            std::thread::sleep(Duration::from_millis(200));
        }
        true
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent_count.recv_timeout(deadline.saturating_duration_since(Instant::now())) != Ok(5) {
        assert!(Instant::now() < deadline, "slow client did not start");
    }

    let status = Admin::new(&broker, None).get("/v1/status");
    assert_eq!(status["role"], "origin");
    let response = read_until_closed(&mut reader);
    assert_eq!(raw_status(&response), 408, "{response}");
    drop(reader);
    let sent_whole_head = slow.join().unwrap();
    assert!(
        !sent_whole_head,
        "the server waited for the whole slow head"
    );
}

#[test]
fn connections_beyond_cap_get_503() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let addr = broker.admin_addr();
    let idle: Vec<TcpStream> = (0..MAX_ADMIN_CONNECTIONS)
        .map(|_| raw_connect(addr))
        .collect();
    // The server accepts connections in the order they were established, so the idle ones fill
    // every slot and the later ones are rejected.
    let mut extra: Vec<TcpStream> = (0..4).map(|_| raw_connect(addr)).collect();

    for stream in &mut extra {
        let response = read_until_closed(stream);
        assert_eq!(raw_status(&response), 503, "{response}");
        assert!(raw_json(&response)["error"].is_string(), "{response}");
    }
    drop(idle);
    let admin = Admin::new(&broker, None);
    let served = wait_until(Duration::from_secs(10), || {
        admin.request("GET", "/v1/status").0 == 200
    });
    assert!(
        served,
        "status still rejected after the idle connections closed"
    );
}
