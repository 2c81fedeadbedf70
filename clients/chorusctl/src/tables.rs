//! Readable text for the admin endpoint's JSON: tables for lists, aligned fields for single
//! objects. A value the broker did not report shows as `-`.

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

/// Formats `GET /v1/tree`.
pub(crate) fn tree(tree: &Value) -> String {
    let children = match tree["children"].as_array() {
        _ if !links_reported(tree) => NOT_REPORTED.to_owned(),
        Some(children) => children.len().to_string(),
        None => dash(),
    };
    let mut rows = vec![
        ("role", text(&tree["role"])),
        ("upstream", upstream(tree)),
        ("children", children),
    ];
    if let Some(note) = tree["note"].as_str() {
        rows.push(("note", note.to_owned()));
    }
    fields(&rows)
}

/// Formats the reply to `POST /v1/reload`.
pub(crate) fn reload(reply: &Value) -> String {
    let applied = reply["applied"].as_array().cloned().unwrap_or_default();
    let restart = reply["restart_required"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if applied.is_empty() && restart.is_empty() {
        return "configuration reloaded: nothing changed".to_owned();
    }
    let mut lines = Vec::new();
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
    fn reload_without_changes_says_so() {
        let reply = json!({"applied": [], "restart_required": []});
        assert_eq!(reload(&reply), "configuration reloaded: nothing changed");
    }
}
