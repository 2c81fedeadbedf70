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
        "chorus_segments_quarantined",
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
fn origin_tree_has_no_links_or_children() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let tree = Admin::new(&broker, None).get("/v1/tree");
    assert_eq!(tree["role"], "origin");
    assert_eq!(tree["upstream"], Value::Null);
    assert_eq!(tree["links"], Value::Array(Vec::new()));
    assert_eq!(tree["topics"], Value::Array(Vec::new()));
    assert_eq!(tree["children"], Value::Array(Vec::new()));
    assert_eq!(tree["links_reported"], true);
}

#[test]
fn ban_endpoints_add_list_and_lift_bans() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let admin = Admin::new(&broker, None);

    let (status, banned) = admin.json("POST", "/v1/bans?user=spammer&reason=links");
    assert_eq!(status, 200, "{banned}");
    assert_eq!(banned["already_banned"], false);
    let list = admin.get("/v1/bans");
    assert_eq!(list["bans"][0]["user"], "spammer");
    assert_eq!(list["bans"][0]["reason"], "links");
    assert_eq!(list["bans"][0]["by"], "admin");

    let (status, lifted) = admin.json("DELETE", "/v1/bans/spammer");
    assert_eq!(status, 200, "{lifted}");
    let (status, again) = admin.json("DELETE", "/v1/bans/spammer");
    assert_eq!(status, 404, "{again}");
    assert_eq!(admin.get("/v1/bans")["bans"], Value::Array(Vec::new()));
}

#[test]
fn ban_request_with_half_a_purge_is_400() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let admin = Admin::new(&broker, None);
    let cases = [
        "/v1/bans",
        "/v1/bans?user=u&purge_topic=live",
        "/v1/bans?user=u&purge_s=10",
        "/v1/bans?user=u&purge_topic=live&purge_s=0",
        "/v1/bans?user=u&purge_topic=..&purge_s=10",
        "/v1/bans?user=u&topic=live&seconds=10",
    ];
    for path in cases {
        let (status, reply) = admin.json("POST", path);
        assert_eq!(status, 400, "{path}: {reply}");
    }
}

#[test]
fn comment_endpoint_deletes_a_comment() {
    let dir = TestDir::new();
    let broker = start(&dir);
    publish(&broker, "live", 3);
    let admin = Admin::new(&broker, None);

    let (status, deleted) = admin.json("DELETE", "/v1/topics/live/comments/1");
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["tombstone"], 3);
    let (status, again) = admin.json("DELETE", "/v1/topics/live/comments/1");
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["already_deleted"], true);
    let (status, missing) = admin.json("DELETE", "/v1/topics/live/comments/99");
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["code"], "COMMENT_NOT_FOUND");
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
fn body_to_ban_endpoint_is_413() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let request = "POST /v1/bans HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    let response = raw_exchange(broker.admin_addr(), request);
    assert_eq!(raw_status(&response), 413, "{response}");
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

/// Segment size small enough that a few dozen comments fill several segments.
const SMALL_SEGMENTS: &str = "segment_bytes = 1024\n";

/// Waits this long for the retention thread, a relay link or a delivery.
const WAIT: Duration = Duration::from_secs(20);

/// Starts a broker whose storage uses small segments and checks retention every
/// `check_interval_ms`, with its configuration file in `dir`.
fn start_small_segments(dir: &TestDir, check_interval_ms: u64) -> Broker {
    let config = dir.write_config(&format!(
        "[storage]\n{SMALL_SEGMENTS}retention_check_interval_ms = {check_interval_ms}\n"
    ));
    Broker::start(&dir.data(), &["--config", &config])
}

/// Publishes `count` comments of about 100 bytes each.
fn publish_padded(broker: &Broker, name: &str, count: usize) {
    let mut conn = connect(&broker.addr_string());
    let payloads: Vec<Vec<u8>> = (0..count)
        .map(|i| util::client::padded_payload(&format!("comment {i}"), 100))
        .collect();
    util::client::publish_pipelined(&mut conn, &topic(name), &payloads);
}

#[test]
fn retention_change_deletes_old_segments_at_next_check() {
    let dir = TestDir::new();
    let broker = start_small_segments(&dir, 100);
    publish_padded(&broker, "aged", 40);
    let admin = Admin::new(&broker, None);
    let before = admin.get("/v1/topics/aged");
    assert!(before["segments"].as_u64().unwrap() > 2, "{before}");
    assert_eq!(before["earliest"], 0);

    let (status, reply) = admin.json("PUT", "/v1/topics/aged/retention?max_age_ms=1");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["retention"]["max_age_ms"], 1);
    assert_eq!(reply["retention"]["max_age_set"], true);
    assert_eq!(reply["retention"]["max_bytes_set"], false);

    // Every comment is older than 1 ms, so the checks close the active segment and delete
    // every closed one, which leaves the log empty at its end offset.
    let emptied = wait_until(WAIT, || {
        let topic = admin.get("/v1/topics/aged");
        topic["earliest"] == 40
    });
    assert!(emptied, "{}", admin.get("/v1/topics/aged"));
    let after = admin.get("/v1/topics/aged");
    assert_eq!(after["end"], 40);
    assert_eq!(after["segments"], 1);
}

#[test]
fn retention_change_survives_restart() {
    let dir = TestDir::new();
    // One check at the start and none for an hour, so nothing is deleted before the restart.
    let mut broker = start_small_segments(&dir, 3_600_000);
    publish_padded(&broker, "event/kept", 40);
    let admin = Admin::new(&broker, None);
    let (status, reply) = admin.json("PUT", "/v1/topics/event%2Fkept/retention?max_bytes=2048");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["retention"]["max_bytes"], 2048);
    let segments_before = reply["segments"].as_u64().unwrap();
    assert!(segments_before > 3, "{reply}");
    assert!(broker.stop());

    let broker = start_small_segments(&dir, 100);
    let admin = Admin::new(&broker, None);
    let listed = admin.get("/v1/topics/event%2Fkept");
    assert_eq!(listed["retention"]["max_bytes"], 2048);
    assert_eq!(listed["retention"]["max_bytes_set"], true);
    assert_eq!(listed["retention"]["max_age_set"], false);
    assert_eq!(listed["retention"]["max_age_ms"], 7 * 24 * 3_600_000);

    // The retention thread opens the topic because its files pass the stored size limit.
    let trimmed = wait_until(WAIT, || {
        let topic = admin.get("/v1/topics/event%2Fkept");
        topic["earliest"]
            .as_u64()
            .is_some_and(|earliest| earliest > 0)
    });
    assert!(trimmed, "{}", admin.get("/v1/topics/event%2Fkept"));
    let after = admin.get("/v1/topics/event%2Fkept");
    assert!(
        after["segments"].as_u64().unwrap() < segments_before,
        "{after}"
    );
    assert_eq!(after["end"], 40);
}

#[test]
fn retention_reset_returns_to_configured_limits() {
    let dir = TestDir::new();
    let broker = start_small_segments(&dir, 3_600_000);
    publish(&broker, "reset", 2);
    let admin = Admin::new(&broker, None);
    let (status, _) = admin.json(
        "PUT",
        "/v1/topics/reset/retention?max_age_ms=60000&max_bytes=0",
    );
    assert_eq!(status, 200);

    let (status, reply) = admin.json("PUT", "/v1/topics/reset/retention?max_age_ms=default");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["retention"]["max_age_set"], false);
    assert_eq!(reply["retention"]["max_bytes_set"], true);

    let (status, reply) = admin.json("DELETE", "/v1/topics/reset/retention");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["retention"]["max_bytes_set"], false);
    assert_eq!(reply["retention"]["max_bytes"], Value::Null);
    assert_eq!(reply["retention"]["max_age_ms"], 7 * 24 * 3_600_000);
    let topic_dir = dir.data().join("topics").join("reset");
    assert!(!topic_dir.join("topic.retention").exists());
}

#[test]
fn retention_bad_values_are_400() {
    let dir = TestDir::new();
    let broker = start(&dir);
    publish(&broker, "strict", 1);
    let admin = Admin::new(&broker, None);
    let cases = [
        ("?max_age_ms=2h", "invalid max_age_ms"),
        ("?max_bytes=-1", "invalid max_bytes"),
        ("?max_bytes=", "invalid max_bytes"),
        ("?max_age=5", "unknown query parameter"),
        ("", "missing retention"),
    ];
    for (query, expected) in cases {
        let (status, reply) = admin.json("PUT", &format!("/v1/topics/strict/retention{query}"));
        assert_eq!(status, 400, "{query}: {reply}");
        let message = reply["error"].as_str().unwrap();
        assert!(message.contains(expected), "{query}: {message}");
    }
    let listed = admin.get("/v1/topics/strict");
    assert_eq!(listed["retention"]["max_age_set"], false);
}

#[test]
fn retention_of_unknown_topic_is_404() {
    let dir = TestDir::new();
    let broker = start(&dir);
    let (status, reply) =
        Admin::new(&broker, None).json("PUT", "/v1/topics/never/retention?max_age_ms=1000");
    assert_eq!(status, 404, "{reply}");
    assert!(!dir.data().join("topics").join("never").exists());
}

/// Recovery must count a closed segment that it found damaged in the middle, which it cuts and
/// moves on from, so that an operator learns of the damage from the metrics.
#[test]
fn damaged_closed_segment_is_counted_as_quarantined() {
    let dir = TestDir::new();
    let mut broker = start_small_segments(&dir, 3_600_000);
    publish_padded(&broker, "damaged", 40);
    assert!(broker.stop());

    let topic_dir = dir.data().join("topics").join("damaged");
    let first = topic_dir.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    // Without its index files, recovery scans the segment instead of trusting them.
    for suffix in ["index", "timeindex"] {
        let _ = std::fs::remove_file(topic_dir.join(format!("{:020}.{suffix}", 0)));
    }

    let broker = start_small_segments(&dir, 3_600_000);
    let admin = Admin::new(&broker, None);
    let status = admin.get("/v1/status");
    assert_eq!(status["segments_quarantined"], 0);

    // Recovery runs when the topic is first used after the start.
    publish(&broker, "damaged", 1);
    let (_, text) = admin.request("GET", "/metrics");
    let line = text
        .lines()
        .find(|l| l.starts_with("chorus_segments_quarantined_total "))
        .unwrap_or_else(|| panic!("no quarantine counter in:\n{text}"));
    assert_eq!(line, "chorus_segments_quarantined_total 1");
    assert_eq!(admin.get("/v1/status")["segments_quarantined"], 1);
}

/// Writes a configuration with a TLS listener that uses `cert`, starts chorusd, and returns it
/// with the TLS listener's address.
fn start_tls(dir: &TestDir, cert: &util::pki::Issued) -> (Broker, String) {
    let config = dir.write_config(&format!(
        "[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = {:?}\nkey_file = {:?}\n",
        cert.cert, cert.key
    ));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let line = broker.wait_for_log("listening with TLS", WAIT);
    let addr = line[line.find("addr=").unwrap() + 5..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    (broker, addr)
}

/// Connects over TLS, trusting only the CA in `ca_file`.
fn connect_tls(addr: &str, ca_file: &std::path::Path) -> Result<Connection, ClientError> {
    let options = Options {
        tls: Some(chorus_client::TlsOptions {
            ca_file: Some(ca_file.to_owned()),
            server_name: Some("localhost".to_owned()),
            ..chorus_client::TlsOptions::default()
        }),
        ..options()
    };
    Connection::connect(addr, &options)
}

#[test]
fn reload_replaces_certificate_for_new_connections() {
    let dir = TestDir::new();
    let first_ca = util::pki::Pki::new(dir.root(), "first");
    let second_ca = util::pki::Pki::new(dir.root(), "second");
    let cert = first_ca.server("server", false);
    let (broker, tls_addr) = start_tls(&dir, &cert);
    let admin = Admin::new(&broker, None);
    let mut existing = connect_tls(&tls_addr, &first_ca.ca_file).unwrap();

    // The renewed certificate comes from another CA, so a client tells the two apart by the
    // CA it trusts.
    let renewed = second_ca.server("renewed", false);
    std::fs::copy(&renewed.cert, &cert.cert).unwrap();
    std::fs::copy(&renewed.key, &cert.key).unwrap();
    let (status, reply) = admin.json("POST", "/v1/reload");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["tls_reloaded"], true);

    let mut renewed_conn = connect_tls(&tls_addr, &second_ca.ca_file).unwrap();
    assert!(connect_tls(&tls_addr, &first_ca.ca_file).is_err());
    let ack = existing.publish(&topic("secure"), b"still here").unwrap();
    assert_eq!(ack.offset, 0);
    let ack = renewed_conn.publish(&topic("secure"), b"renewed").unwrap();
    assert_eq!(ack.offset, 1);
}

#[test]
fn reload_rejects_bad_certificate_and_keeps_old() {
    let dir = TestDir::new();
    let ca = util::pki::Pki::new(dir.root(), "main");
    let cert = ca.server("server", false);
    let (broker, tls_addr) = start_tls(&dir, &cert);
    let admin = Admin::new(&broker, None);

    std::fs::write(&cert.cert, "not a certificate").unwrap();
    let (status, reply) = admin.json("POST", "/v1/reload");
    assert_eq!(status, 400, "{reply}");
    let message = reply["error"].as_str().unwrap();
    assert!(message.contains("unchanged"), "{message}");
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("server.pem"), "{message}");
    broker.wait_for_log("configuration reload rejected", WAIT);

    let mut conn = connect_tls(&tls_addr, &ca.ca_file).unwrap();
    let ack = conn.publish(&topic("secure"), b"old certificate").unwrap();
    assert_eq!(ack.offset, 0);
}

/// Starts a relay named `node_id` below `upstreams`, with short reconnect delays.
fn start_relay(dir: &TestDir, node_id: &str, upstreams: &[String]) -> Broker {
    let list: Vec<String> = upstreams.iter().map(|u| format!("{u:?}")).collect();
    let config = dir.write_config(&format!(
        "role = \"relay\"\nnode_id = \"{node_id}\"\n[relay]\nupstreams = [{}]\n\
         reconnect_initial_ms = 20\nreconnect_max_ms = 300\n",
        list.join(", ")
    ));
    Broker::start(&dir.data(), &["--config", &config])
}

/// Returns a loopback address on which nothing listens.
fn closed_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn tree_shows_links_lag_and_children() {
    let origin_dir = TestDir::new();
    let origin_config = origin_dir.write_config("node_id = \"origin\"\n");
    let origin = Broker::start(&origin_dir.data(), &["--config", &origin_config]);
    // The regional relay's primary upstream is down, so it fails over to the origin.
    let regional_dir = TestDir::new();
    let upstreams = [closed_addr(), origin.addr_string()];
    let regional = start_relay(&regional_dir, "regional", &upstreams);
    let edge_dir = TestDir::new();
    let edge = start_relay(&edge_dir, "edge", &[regional.addr_string()]);

    let name = topic("tree/live");
    let mut viewer = connect(&edge.addr_string());
    viewer.subscribe(&name, StartAt::Latest, 0).unwrap();
    publish(&origin, "tree/live", 3);
    assert_eq!(collect_events_of(&mut viewer, &name, 3), 3);

    let edge_tree = Admin::new(&edge, None).get("/v1/tree");
    assert_eq!(edge_tree["node_id"], "edge");
    assert_eq!(edge_tree["role"], "relay");
    let link = &edge_tree["links"][0];
    assert_eq!(link["address"], regional.addr_string());
    assert_eq!(link["connected"], true);
    assert_eq!(link["failovers"], 0);
    assert!(link["since_unix_ms"].as_u64().unwrap() > 0, "{link}");
    assert_eq!(edge_tree["upstream"], regional.addr_string());
    let lag = &edge_tree["topics"][0];
    assert_eq!(lag["topic"], "tree/live");
    assert_eq!(lag["state"], "subscribed");
    assert_eq!(lag["cache_end"], 3);
    assert_eq!(lag["offset_lag"], 0);
    assert!(lag["time_lag_ms"].is_u64(), "{lag}");
    assert!(lag["last_batch_age_ms"].is_u64(), "{lag}");
    assert_eq!(lag["subscribers"], 1);
    assert_eq!(edge_tree["children"], Value::Array(Vec::new()));

    let regional_tree = Admin::new(&regional, None).get("/v1/tree");
    let link = &regional_tree["links"][0];
    assert_eq!(link["address"], origin.addr_string());
    assert_eq!(link["connected"], true);
    assert_eq!(link["failovers"], 1);
    let child = &regional_tree["children"][0];
    assert_eq!(child["node_id"], "edge");
    assert_eq!(child["topics"], serde_json::json!(["tree/live"]));

    // A relay keeps no log, so it has no retention to change.
    let (status, reply) =
        Admin::new(&edge, None).json("PUT", "/v1/topics/tree%2Flive/retention?max_age_ms=1000");
    assert_eq!(status, 409, "{reply}");

    let origin_tree = Admin::new(&origin, None).get("/v1/tree");
    assert_eq!(origin_tree["links"], Value::Array(Vec::new()));
    let child = &origin_tree["children"][0];
    assert_eq!(child["node_id"], "regional");
    assert_eq!(child["topics"], serde_json::json!(["tree/live"]));
}

/// Receives comments of `name` until `count` have arrived, and returns how many did.
fn collect_events_of(conn: &mut Connection, name: &chorus_client::Topic, count: usize) -> usize {
    util::client::collect_events(conn, name, count).len()
}
