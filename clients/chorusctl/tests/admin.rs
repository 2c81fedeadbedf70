//! The admin commands of the real chorusctl binary against a broker on loopback.
//!
//! The broker runs in the test process through `chorus_broker::Server`, which is what chorusd
//! runs after parsing its flags. A test of one package cannot build another package's binary,
//! so chorusd itself is not started here.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chorus_broker::{Config, Server};
use chorus_client::{ClientError, Connection, ErrorCode, Frame, Options, StartAt, Topic};
use chorus_protocol::event::flags;
use chorus_protocol::RelayPublish;
use serde_json::Value;

const TOKEN: &str = "ctl-test-token";

/// A broker with its admin endpoint on ephemeral loopback ports, stopped when dropped.
struct TestBroker {
    server: Option<Server>,
    /// The configuration the broker started with.
    config: Config,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    fn start(token: Option<&str>) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().join("data"),
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            workers: 2,
            ..Config::default()
        };
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.token = token.map(str::to_owned);
        let server = Server::start(config.clone()).expect("broker starts");
        TestBroker {
            config,
            addr: server.local_addrs()[0],
            admin: server.admin_addr().expect("admin endpoint is enabled"),
            server: Some(server),
            _dir: dir,
        }
    }

    /// Returns a chorusctl command aimed at this broker, with no settings from the environment.
    fn ctl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chorusctl"));
        for var in [
            "CHORUS_SERVER",
            "CHORUS_ADMIN",
            "CHORUS_TOKEN",
            "CHORUS_ADMIN_TOKEN",
        ] {
            command.env_remove(var);
        }
        command
            .args(["--server", &self.addr.to_string()])
            .args(["--admin", &self.admin.to_string()])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.ctl(args).output().expect("chorusctl runs")
    }

    /// Runs chorusctl, checks that it succeeded, and returns its standard output.
    fn stdout(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "chorusctl {args:?}: {}",
            stderr(&output)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs chorusctl with `--json` and returns each line of its output as JSON.
    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let mut args = args.to_vec();
        args.push("--json");
        self.stdout(&args)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn subscriber(&self, topic: &str, client_name: &str) -> Connection {
        let options = Options {
            client_name: client_name.to_owned(),
            read_timeout: Some(Duration::from_secs(15)),
            ..Options::default()
        };
        let mut conn = Connection::connect(&self.addr.to_string(), &options).unwrap();
        conn.subscribe(&Topic::new(topic).unwrap(), StartAt::Latest, 0)
            .unwrap();
        conn
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn find_client(conns: &[Value], client_name: &str) -> Value {
    conns
        .iter()
        .find(|c| c["client"] == client_name)
        .cloned()
        .unwrap_or_else(|| panic!("client {client_name} not in {conns:?}"))
}

#[test]
fn status_prints_fields() {
    let broker = TestBroker::start(None);
    let text = broker.stdout(&["status"]);
    assert!(text.contains("role"), "{text}");
    assert!(text.contains("origin"), "{text}");
}

#[test]
fn status_json_has_role() {
    let broker = TestBroker::start(None);
    let status = broker.json_lines(&["status"]);
    assert_eq!(status.len(), 1);
    assert_eq!(status[0]["role"], "origin");
    assert_eq!(status[0]["upstream"], Value::Null);
}

#[test]
fn topics_list_published_topic() {
    let broker = TestBroker::start(None);
    for text in ["one", "two", "three"] {
        broker.stdout(&["publish", "event/final", text]);
    }

    let topics = broker.json_lines(&["topics"]);
    let topic = topics
        .iter()
        .find(|t| t["name"] == "event/final")
        .expect("topic listed");
    assert_eq!(topic["end"], 3);

    let table = broker.stdout(&["topics"]);
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("TOPIC"), "{table}");
    assert!(table.contains("event/final"), "{table}");
}

#[test]
fn topics_with_name_shows_one_topic() {
    let broker = TestBroker::start(None);
    broker.stdout(&["publish", "a/b", "x"]);
    broker.stdout(&["publish", "c", "y"]);
    let topics = broker.json_lines(&["topics", "a/b"]);
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0]["name"], "a/b");
}

#[test]
fn conns_show_subscriber_offset() {
    let broker = TestBroker::start(None);
    broker.stdout(&["publish", "live", "before"]);
    let _sub = broker.subscriber("live", "conns-test");

    let conns = broker.json_lines(&["conns"]);
    let conn = find_client(&conns, "conns-test");
    assert_eq!(conn["subscriptions"][0]["topic"], "live");
    assert_eq!(conn["subscriptions"][0]["next"], 1);

    let table = broker.stdout(&["conns"]);
    assert!(table.contains("live@1 (live)"), "{table}");
}

#[test]
fn kick_closes_listed_connection() {
    let broker = TestBroker::start(None);
    let mut sub = broker.subscriber("live", "kick-test");
    let id = find_client(&broker.json_lines(&["conns"]), "kick-test")["id"]
        .as_u64()
        .unwrap();

    let text = broker.stdout(&["kick", &id.to_string()]);
    assert!(
        text.starts_with(&format!("kicked connection {id}")),
        "{text}"
    );
    match sub.recv() {
        Err(ClientError::Server { code, close, .. }) => {
            assert_eq!(code, ErrorCode::ShuttingDown);
            assert!(close);
        }
        other => panic!("expected an ERROR frame, got {other:?}"),
    }
}

#[test]
fn kick_of_unknown_id_exits_3() {
    let broker = TestBroker::start(None);
    let output = broker.run(&["kick", "424242"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("not found"), "{}", stderr(&output));
}

#[test]
fn delete_without_terminal_needs_yes() {
    let broker = TestBroker::start(None);
    broker.stdout(&["publish", "doomed", "x"]);
    let output = broker.run(&["delete", "doomed"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--yes"), "{}", stderr(&output));
    let topics = broker.json_lines(&["topics"]);
    assert!(topics.iter().any(|t| t["name"] == "doomed"));
}

#[test]
fn delete_with_yes_removes_topic() {
    let broker = TestBroker::start(None);
    broker.stdout(&["publish", "doomed", "x"]);
    let reply = broker.json_lines(&["delete", "doomed", "--yes"]);
    assert_eq!(reply[0]["deleted"], "doomed");
    let topics = broker.json_lines(&["topics"]);
    assert!(!topics.iter().any(|t| t["name"] == "doomed"), "{topics:?}");
}

#[test]
fn wrong_token_exits_3() {
    let broker = TestBroker::start(Some(TOKEN));
    let output = broker.run(&["status", "--token", "wrong"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("401"), "{}", stderr(&output));
}

#[test]
fn token_from_environment_is_sent() {
    let broker = TestBroker::start(Some(TOKEN));
    let output = broker
        .ctl(&["status"])
        .env("CHORUS_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn token_file_is_read() {
    let broker = TestBroker::start(Some(TOKEN));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    let output = broker.run(&["status", "--token-file", path_str(&path)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn unreachable_admin_exits_2() {
    let broker = TestBroker::start(None);
    let output = broker.run(&["status", "--admin", "127.0.0.1:1"]);
    assert_eq!(output.status.code(), Some(2));
}

/// Publishes `payload` to `topic` as `user` with RELAY_PUBLISH, from a connection whose
/// HELLO carries a relay chain, and returns the acknowledgement's code.
fn publish_as(broker: &TestBroker, topic: &str, user: &str, payload: &[u8]) -> ErrorCode {
    let options = Options {
        client_name: "ctl-test chorus-relay/ctl-test-relay".to_owned(),
        read_timeout: Some(Duration::from_secs(15)),
        ..Options::default()
    };
    let mut conn = Connection::connect(&broker.addr.to_string(), &options).unwrap();
    let frame = Frame::RelayPublish(RelayPublish {
        seq: 1,
        topic: Topic::new(topic).unwrap(),
        user: user.to_owned(),
        priority: false,
        payload: payload.to_vec().into(),
    });
    conn.send(&frame).unwrap();
    match conn.recv().unwrap() {
        Frame::PublishAck(ack) => ack.code,
        other => panic!("expected PUBLISH_ACK, got {other:?}"),
    }
}

#[test]
fn ban_stops_the_users_publishes() {
    let broker = TestBroker::start(None);

    let out = broker.stdout(&["ban", "spammer", "--reason", "links & ads"]);

    assert_eq!(out.trim(), "banned spammer");
    assert_eq!(
        publish_as(&broker, "live", "spammer", b"buy"),
        ErrorCode::Banned
    );
    assert_eq!(publish_as(&broker, "live", "alice", b"hi"), ErrorCode::Ok);
}

#[test]
fn ban_with_purge_deletes_recent_comments() {
    let broker = TestBroker::start(None);
    for (user, text) in [("spammer", "a"), ("alice", "b"), ("spammer", "c")] {
        assert_eq!(
            publish_as(&broker, "live", user, text.as_bytes()),
            ErrorCode::Ok
        );
    }

    let args = [
        "ban",
        "spammer",
        "--purge",
        "live",
        "--purge-seconds",
        "600",
    ];
    let reply = broker.json_lines(&args);

    assert_eq!(reply[0]["purged"], 2);
    assert_eq!(reply[0]["already_banned"], false);
}

#[test]
fn unban_lets_the_user_publish_again() {
    let broker = TestBroker::start(None);
    broker.stdout(&["ban", "spammer"]);

    let out = broker.stdout(&["unban", "spammer"]);
    let again = broker.run(&["unban", "spammer"]);

    assert_eq!(out.trim(), "lifted the ban on spammer");
    assert_eq!(
        publish_as(&broker, "live", "spammer", b"sorry"),
        ErrorCode::Ok
    );
    assert_eq!(again.status.code(), Some(3));
    assert!(stderr(&again).contains("not banned"), "{}", stderr(&again));
}

#[test]
fn delete_with_offset_deletes_one_comment() {
    let broker = TestBroker::start(None);
    for text in ["one", "two", "three"] {
        broker.stdout(&["publish", "live", text]);
    }

    let out = broker.stdout(&["delete", "live", "1"]);
    let missing = broker.run(&["delete", "live", "99"]);

    assert_eq!(
        out.trim(),
        "deleted comment 1 of live (tombstone at offset 3)"
    );
    assert_eq!(missing.status.code(), Some(3));
    let mut conn = Connection::connect(&broker.addr.to_string(), &Options::default()).unwrap();
    let topic = Topic::new("live").unwrap();
    conn.subscribe(&topic, StartAt::Earliest, 0).unwrap();
    let mut events = Vec::new();
    while events.len() < 4 {
        match conn.recv().unwrap() {
            Frame::Events(batch) => events.extend(batch.iter()),
            other => panic!("expected EVENTS, got {other:?}"),
        }
    }
    assert_eq!(events[1].flags & flags::DELETED, flags::DELETED);
    assert!(events[1].payload.is_empty());
    assert_eq!(events[3].tombstone_target(), Some(1));
}

#[test]
fn tree_json_has_no_children() {
    let broker = TestBroker::start(None);
    let tree = broker.json_lines(&["tree"]);
    assert_eq!(tree[0]["children"], Value::Array(Vec::new()));
    assert_eq!(tree[0]["links"], Value::Array(Vec::new()));
    assert_eq!(tree[0]["links_reported"], true);
}

#[test]
fn tree_text_of_origin_names_empty_sections() {
    let broker = TestBroker::start(None);
    let text = broker.stdout(&["tree"]);
    assert!(text.contains("origin"), "{text}");
    assert!(text.contains("no upstream links"), "{text}");
    assert!(text.contains("no relays connected below"), "{text}");
}

#[test]
fn retention_sets_both_limits() {
    let broker = TestBroker::start(None);
    broker.stdout(&["publish", "event/kept", "one"]);
    let text = broker.stdout(&[
        "retention",
        "event/kept",
        "--max-age",
        "2h",
        "--max-bytes",
        "1GiB",
    ]);
    assert_eq!(
        text.trim(),
        "retention of event/kept: max age 2h (set at run time), max size 1.0 GiB (set at run time)"
    );
    let topics = broker.json_lines(&["topics", "event/kept"]);
    assert_eq!(topics[0]["retention"]["max_age_ms"], 7_200_000);
    assert_eq!(topics[0]["retention"]["max_bytes"], 1u64 << 30);
}

#[test]
fn retention_reset_shows_configured_limits() {
    let broker = TestBroker::start(None);
    broker.stdout(&["publish", "live", "one"]);
    broker.stdout(&["retention", "live", "--max-bytes", "none"]);
    let reply = broker.json_lines(&["retention", "live", "--reset"]);
    assert_eq!(reply[0]["retention"]["max_bytes_set"], false);
    assert_eq!(reply[0]["retention"]["max_age_set"], false);
}

#[test]
fn retention_of_unknown_topic_exits_3() {
    let broker = TestBroker::start(None);
    let output = broker.run(&["retention", "never", "--max-age", "1d"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("not found"), "{}", stderr(&output));
}

#[test]
fn retention_with_bad_size_exits_1() {
    let broker = TestBroker::start(None);
    let output = broker.run(&["retention", "live", "--max-bytes", "1.5GiB"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("invalid size"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn reload_without_changes_says_so() {
    let broker = TestBroker::start(None);
    let config = broker.config.clone();
    broker
        .server
        .as_ref()
        .unwrap()
        .set_config_loader(Box::new(move || Ok(config.clone())));
    let text = broker.stdout(&["reload"]);
    assert_eq!(text.trim(), "configuration reloaded: nothing changed");
}

#[test]
fn completions_print_bash_script() {
    let broker = TestBroker::start(None);
    let script = broker.stdout(&["completions", "bash"]);
    assert!(script.contains("_chorusctl()"), "{script}");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}
