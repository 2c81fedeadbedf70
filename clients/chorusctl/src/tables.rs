//! Readable text for the admin endpoint's JSON: tables for lists, aligned fields for single
//! objects. A value the broker did not report shows as `-`.

use std::time::{SystemTime, UNIX_EPOCH};

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, Table};
use serde_json::Value;

/// Formats `GET /v1/status`.
pub(crate) fn status(status: &Value) -> String {
    let window = status["rate_window_s"]
        .as_f64()
        .map_or_else(dash, |w| format!("{w:.0}"));
    let rows = [
        ("version", text(&status["version"])),
        ("role", text(&status["role"])),
        (
            "uptime",
            status["uptime_s"].as_u64().map_or_else(dash, duration),
        ),
        ("workers", number(&status["workers"])),
        ("connections", number(&status["connections"])),
        ("topics loaded", number(&status["topics_loaded"])),
        (
            "published",
            format!(
                "{}/s over the last {window} s",
                rate(&status["published_per_s"])
            ),
        ),
        (
            "delivered",
            format!(
                "{}/s over the last {window} s",
                rate(&status["delivered_per_s"])
            ),
        ),
        ("upstream", upstream(status)),
    ];
    fields(&rows)
}

/// Formats the topics of `GET /v1/topics`.
pub(crate) fn topics(topics: &[Value]) -> String {
    let mut table = new_table(&[
        "TOPIC",
        "STREAM",
        "EARLIEST",
        "END",
        "PER_S",
        "SUBS",
        "SIZE",
        "RETENTION",
    ]);
    for topic in topics {
        table.add_row(vec![
            text(&topic["name"]),
            number(&topic["stream"]),
            number(&topic["earliest"]),
            number(&topic["end"]),
            rate(&topic["comments_per_s"]),
            number(&topic["subscribers"]),
            topic["bytes_on_disk"].as_u64().map_or_else(dash, bytes),
            retention(&topic["retention"]),
        ]);
    }
    align_right(&mut table, &[1, 2, 3, 4, 5, 6]);
    finish(table)
}

/// Formats the connections of `GET /v1/connections`.
pub(crate) fn connections(connections: &[Value]) -> String {
    let mut table = new_table(&[
        "ID",
        "PEER",
        "CLIENT",
        "PHASE",
        "QUEUED",
        "STATE",
        "SUBSCRIPTIONS",
    ]);
    for conn in connections {
        table.add_row(vec![
            number(&conn["id"]),
            text(&conn["peer"]),
            text(&conn["client"]),
            text(&conn["phase"]),
            conn["queued_bytes"].as_u64().map_or_else(dash, bytes),
            conn_state(conn),
            subscriptions(&conn["subscriptions"]),
        ]);
    }
    align_right(&mut table, &[0, 4]);
    finish(table)
}

/// Formats `GET /v1/tree`: the node, then a table each for its upstream links, its relay
/// topics and the relays connected below it.
pub(crate) fn tree(tree: &Value) -> String {
    let head = fields(&[
        ("node", text(&tree["node_id"])),
        ("role", text(&tree["role"])),
        ("upstream", upstream(tree)),
    ]);
    if !links_reported(tree) {
        return head;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let sections = [
        head,
        section(&tree["links"], "no upstream links", |links| {
            link_table(links, now_ms)
        }),
        section(&tree["topics"], "no topics subscribed upstream", lag_table),
        section(
            &tree["children"],
            "no relays connected below",
            children_table,
        ),
    ];
    sections.join("\n\n")
}

/// Formats a list as a table, or `empty` when it has no items.
fn section(list: &Value, empty: &str, table: impl Fn(&[Value]) -> String) -> String {
    match list.as_array() {
        Some(items) if !items.is_empty() => table(items),
        _ => empty.to_owned(),
    }
}

fn link_table(links: &[Value], now_ms: u64) -> String {
    let mut table = new_table(&[
        "LINK",
        "ADDRESS",
        "STATE",
        "FOR",
        "CONNECTIONS",
        "FAILOVERS",
        "LAST_ERROR",
        "LAST_LOSS",
    ]);
    for link in links {
        let state = match link["connected"].as_bool() {
            Some(true) => "connected",
            Some(false) => "disconnected",
            None => "-",
        };
        let since = link["since_unix_ms"]
            .as_u64()
            .map_or_else(dash, |since| duration(now_ms.saturating_sub(since) / 1000));
        table.add_row(vec![
            number(&link["link"]),
            text(&link["address"]),
            state.to_owned(),
            since,
            number(&link["connections"]),
            number(&link["failovers"]),
            text(&link["last_error"]),
            text(&link["last_loss"]),
        ]);
    }
    align_right(&mut table, &[0, 4, 5]);
    finish(table)
}

fn lag_table(topics: &[Value]) -> String {
    let mut table = new_table(&[
        "TOPIC",
        "STATE",
        "CACHE_END",
        "UPSTREAM_END",
        "OFFSET_LAG",
        "TIME_LAG",
        "LAST_BATCH",
        "SUBS",
    ]);
    for topic in topics {
        let ms = |value: &Value| value.as_u64().map_or_else(dash, |ms| format!("{ms} ms"));
        table.add_row(vec![
            text(&topic["topic"]),
            text(&topic["state"]),
            number(&topic["cache_end"]),
            number(&topic["upstream_end"]),
            number(&topic["offset_lag"]),
            ms(&topic["time_lag_ms"]),
            ms(&topic["last_batch_age_ms"]),
            number(&topic["subscribers"]),
        ]);
    }
    align_right(&mut table, &[2, 3, 4, 5, 6, 7]);
    finish(table)
}

fn children_table(children: &[Value]) -> String {
    let mut table = new_table(&["CHILD", "ADDRESS", "CONN", "RELAYS_BELOW", "TOPICS"]);
    for child in children {
        table.add_row(vec![
            text(&child["node_id"]),
            text(&child["address"]),
            number(&child["conn"]),
            joined(&child["relays_below"]),
            joined(&child["topics"]),
        ]);
    }
    align_right(&mut table, &[2]);
    finish(table)
}

/// Joins a list of strings with ", ", or returns `-` for an empty or missing list.
fn joined(list: &Value) -> String {
    let items: Vec<String> = list
        .as_array()
        .map(|items| items.iter().map(text).collect())
        .unwrap_or_default();
    if items.is_empty() {
        dash()
    } else {
        items.join(", ")
    }
}

/// Formats the reply to `POST /v1/reload`.
pub(crate) fn reload(reply: &Value) -> String {
    let applied = reply["applied"].as_array().cloned().unwrap_or_default();
    let restart = reply["restart_required"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let tls = reply["tls_reloaded"].as_bool() == Some(true);
    if applied.is_empty() && restart.is_empty() && !tls {
        return "configuration reloaded: nothing changed".to_owned();
    }
    let mut lines = Vec::new();
    if tls {
        lines.push("reloaded: TLS certificate and key, for new connections".to_owned());
    }
    for change in &applied {
        lines.push(format!(
            "applied: {} {} -> {}",
            text(&change["key"]),
            change["running"],
            change["file"]
        ));
    }
    for change in &restart {
        lines.push(format!(
            "needs a restart: {} (running {}, file {})",
            text(&change["key"]),
            change["running"],
            change["file"]
        ));
    }
    lines.join("\n")
}

/// Formats retention limits as `7d`, `1.0 GiB` or both; `none` when neither is set.
fn retention(retention: &Value) -> String {
    if !retention.is_object() {
        return dash();
    }
    let age = retention["max_age_ms"].as_u64().map(compact_duration);
    let size = retention["max_bytes"].as_u64().map(bytes);
    match (age, size) {
        (Some(age), Some(size)) => format!("{age}, {size}"),
        (Some(limit), None) | (None, Some(limit)) => limit,
        (None, None) => "none".to_owned(),
    }
}

/// Formats the retention in force with the source of each limit, such as
/// `max age 2h (set at run time), max size none (configuration file)`.
pub(crate) fn retention_in_force(retention: &Value) -> String {
    let source = |set: &Value| match set.as_bool() {
        Some(true) => "set at run time",
        Some(false) => "configuration file",
        None => "source unknown",
    };
    let none = || "none".to_owned();
    let age = retention["max_age_ms"]
        .as_u64()
        .map_or_else(none, compact_duration);
    let size = retention["max_bytes"].as_u64().map_or_else(none, bytes);
    format!(
        "max age {age} ({}), max size {size} ({})",
        source(&retention["max_age_set"]),
        source(&retention["max_bytes_set"])
    )
}

/// Shown for relay links when the broker does not report them.
const NOT_REPORTED: &str = "not reported by this chorusd";

/// Returns whether a status or tree reply describes the node's relay links.
fn links_reported(reply: &Value) -> bool {
    reply["links_reported"].as_bool() != Some(false)
}

fn upstream(reply: &Value) -> String {
    if links_reported(reply) {
        optional_text(&reply["upstream"], "none")
    } else {
        NOT_REPORTED.to_owned()
    }
}

fn conn_state(conn: &Value) -> String {
    let mut states = Vec::new();
    if conn["slow_consumer"].as_bool() == Some(true) {
        states.push("catching-up");
    }
    if conn["read_paused"].as_bool() == Some(true) {
        states.push("read-paused");
    }
    if states.is_empty() {
        "ok".to_owned()
    } else {
        states.join(",")
    }
}

/// Formats subscriptions as `topic@next` with the delivery mode, such as `live@12 (catch-up)`.
fn subscriptions(subs: &Value) -> String {
    let Some(subs) = subs.as_array() else {
        return dash();
    };
    if subs.is_empty() {
        return dash();
    }
    subs.iter()
        .map(|sub| {
            format!(
                "{}@{} ({})",
                text(&sub["topic"]),
                number(&sub["next"]),
                text(&sub["delivery"])
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING);
    table.set_header(header.to_vec());
    table
}

fn align_right(table: &mut Table, columns: &[usize]) {
    for &index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Formats name and value pairs as two aligned columns.
fn fields(rows: &[(&str, String)]) -> String {
    let mut table = Table::new();
    table.load_style(NOTHING);
    for (name, value) in rows {
        table.add_row(vec![(*name).to_owned(), value.clone()]);
    }
    finish(table)
}

/// Renders a table with two spaces between columns and none at the ends of the lines.
fn finish(mut table: Table) -> String {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt()
}

fn dash() -> String {
    "-".to_owned()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null | Value::String(_) => dash(),
        other => other.to_string(),
    }
}

fn optional_text(value: &Value, absent: &str) -> String {
    if value.is_null() {
        absent.to_owned()
    } else {
        text(value)
    }
}

/// Formats a rate with one decimal.
fn rate(value: &Value) -> String {
    value.as_f64().map_or_else(dash, |r| format!("{r:.1}"))
}

fn number(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        _ => dash(),
    }
}

/// Formats seconds as `1d 2h 3m 4s`, leaving out leading zero units.
fn duration(total: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut rest = total;
    let mut parts = Vec::new();
    for (size, name) in units {
        let count = rest / size;
        rest %= size;
        if count > 0 || !parts.is_empty() || size == 1 {
            parts.push(format!("{count}{name}"));
        }
    }
    parts.join(" ")
}

/// Formats milliseconds in the largest unit that divides them, such as `7d`, `36h` or `1500ms`.
fn compact_duration(ms: u64) -> String {
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    for (size, name) in units {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{name}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Formats a byte count with binary units, such as `1.5 MiB`.
fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn duration_skips_leading_zero_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(61), "1m 1s");
        assert_eq!(duration(90_061), "1d 1h 1m 1s");
        assert_eq!(duration(3_600), "1h 0m 0s");
    }

    #[test]
    fn compact_duration_uses_largest_exact_unit() {
        assert_eq!(compact_duration(7 * 86_400_000), "7d");
        assert_eq!(compact_duration(36 * 3_600_000), "36h");
        assert_eq!(compact_duration(1_500), "1500ms");
    }

    #[test]
    fn retention_shows_both_limits() {
        let value = json!({"max_age_ms": 86_400_000, "max_bytes": 1024, "idle_delete_ms": null});
        assert_eq!(retention(&value), "1d, 1.0 KiB");
        assert_eq!(
            retention(&json!({"max_age_ms": null, "max_bytes": null})),
            "none"
        );
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn topics_table_has_header_and_row() {
        let topic = json!({
            "name": "live", "stream": 7, "earliest": 0, "end": 3, "comments_per_s": 0.3,
            "subscribers": 2, "bytes_on_disk": 100, "retention": null,
        });
        let text = topics(&[topic]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("TOPIC"));
        assert!(lines[1].contains("live"));
        assert!(lines[1].contains("100 B"));
    }

    #[test]
    fn connection_row_lists_subscriptions() {
        let conn = json!({
            "id": 4, "peer": "127.0.0.1:5000", "client": "c/1", "phase": "ready",
            "queued_bytes": 0, "slow_consumer": true, "read_paused": false,
            "subscriptions": [{"topic": "live", "next": 12, "delivery": "catch-up"}],
        });
        let text = connections(&[conn]);
        assert!(text.contains("live@12 (catch-up)"));
        assert!(text.contains("catching-up"));
    }

    #[test]
    fn missing_values_show_as_dash() {
        let topic = json!({"name": "cold", "stream": null, "bytes_on_disk": 10});
        let text = topics(&[topic]);
        assert!(text.lines().nth(1).unwrap().contains('-'));
    }

    #[test]
    fn retention_in_force_names_sources() {
        let value = json!({
            "max_age_ms": 7_200_000, "max_bytes": null,
            "max_age_set": true, "max_bytes_set": false,
        });
        assert_eq!(
            retention_in_force(&value),
            "max age 2h (set at run time), max size none (configuration file)"
        );
    }

    #[test]
    fn tree_lists_links_topics_and_children() {
        let reply = json!({
            "node_id": "edge-1", "role": "relay", "upstream": "127.0.0.1:7400",
            "links_reported": true,
            "links": [{
                "link": 0, "address": "127.0.0.1:7400", "connected": true,
                "since_unix_ms": 0, "connections": 1, "failovers": 2, "last_error": null,
                "last_loss": "127.0.0.1:7400: upstream silent for 130s",
            }],
            "topics": [{
                "topic": "live", "state": "subscribed", "cache_end": 10, "upstream_end": 12,
                "offset_lag": 2, "time_lag_ms": 5, "last_batch_age_ms": 100, "subscribers": 3,
            }],
            "children": [{
                "node_id": "edge-2", "address": "127.0.0.1:5000", "conn": 7,
                "relays_below": [], "topics": ["live"],
            }],
        });
        let text = tree(&reply);
        assert!(text.contains("edge-1"), "{text}");
        assert!(text.contains("connected"), "{text}");
        assert!(text.contains("5 ms"), "{text}");
        assert!(text.contains("edge-2"), "{text}");
        assert!(text.contains("upstream silent for 130s"), "{text}");
    }

    #[test]
    fn origin_tree_says_it_has_no_links() {
        let reply = json!({
            "node_id": "origin", "role": "origin", "upstream": null, "links_reported": true,
            "links": [], "topics": [], "children": [],
        });
        let text = tree(&reply);
        assert!(text.contains("no upstream links"), "{text}");
        assert!(text.contains("no relays connected below"), "{text}");
    }

    #[test]
    fn reload_lists_tls_reload() {
        let reply = json!({"applied": [], "restart_required": [], "tls_reloaded": true});
        assert!(reload(&reply).contains("TLS certificate"));
    }

    #[test]
    fn reload_without_changes_says_so() {
        let reply = json!({"applied": [], "restart_required": []});
        assert_eq!(reload(&reply), "configuration reloaded: nothing changed");
    }
}
