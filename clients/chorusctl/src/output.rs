//! Formatting of results and comments, and writing them to standard output.

use std::io::{self, Write};

use chorus_client::{Event, Topic};
use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Value};

use crate::failure::Failure;

/// Writes one line to standard output.
///
/// When the reader of a pipe has gone (`chorusctl tail t | head`), the program exits at once
/// with status 0, as command-line filters do. Nothing is left to clean up at that point.
pub(crate) fn emit(line: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Failure::local_io("writing to standard output", e)),
    }
}

/// Formats a comment as `OFFSET  TIME  PUBLISHER  TEXT`.
///
/// A missing publisher id shows as `-`. The payload is shown as UTF-8, with invalid bytes
/// replaced and control characters escaped, so every comment takes one line.
pub(crate) fn event_line(event: &Event) -> String {
    let publisher = if event.publisher.is_empty() {
        "-"
    } else {
        &event.publisher
    };
    format!(
        "{}  {}  {}  {}",
        event.offset,
        format_time(event.time_us),
        printable(publisher),
        printable(&String::from_utf8_lossy(&event.payload))
    )
}

/// Formats a comment as one JSON object.
pub(crate) fn event_json(topic: &Topic, stream: u64, event: &Event) -> Value {
    json!({
        "topic": topic.as_str(),
        "stream": stream,
        "offset": event.offset,
        "time": format_time(event.time_us),
        "time_us": event.time_us,
        "publisher": event.publisher,
        "text": String::from_utf8_lossy(&event.payload),
    })
}

/// Formats microseconds since the Unix epoch as RFC 3339 in UTC with milliseconds.
pub(crate) fn format_time(time_us: u64) -> String {
    let time = i64::try_from(time_us)
        .ok()
        .and_then(DateTime::from_timestamp_micros);
    match time {
        Some(time) => time.to_rfc3339_opts(SecondsFormat::Millis, true),
        // Beyond the year 262143: show the raw value rather than fail.
        None => format!("{time_us}us"),
    }
}

/// Escapes control characters, line breaks included.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chorus_client::Event;

    use super::*;

    fn event(publisher: &str, payload: &'static [u8]) -> Event {
        Event {
            offset: 42,
            time_us: 1_767_225_600_123_456,
            flags: 0,
            publisher: publisher.to_owned(),
            payload: payload.into(),
        }
    }

    #[test]
    fn time_is_rfc3339_utc_with_millis() {
        assert_eq!(
            format_time(1_767_225_600_123_456),
            "2026-01-01T00:00:00.123Z"
        );
    }

    #[test]
    fn event_line_has_four_columns() {
        let line = event_line(&event("ana", b"what a save"));
        assert_eq!(line, "42  2026-01-01T00:00:00.123Z  ana  what a save");
    }

    #[test]
    fn event_line_shows_missing_publisher_as_dash() {
        let line = event_line(&event("", b"hi"));
        assert_eq!(line, "42  2026-01-01T00:00:00.123Z  -  hi");
    }

    #[test]
    fn event_line_escapes_line_breaks() {
        let line = event_line(&event("ana", b"one\ntwo"));
        assert_eq!(line, "42  2026-01-01T00:00:00.123Z  ana  one\\ntwo");
    }

    #[test]
    fn event_line_replaces_invalid_utf8() {
        let line = event_line(&event("ana", b"caf\xff"));
        assert_eq!(line, "42  2026-01-01T00:00:00.123Z  ana  caf\u{fffd}");
    }

    #[test]
    fn event_json_has_fields() {
        let topic = Topic::new("live").unwrap();
        let value = event_json(&topic, 3, &event("ana", b"hi"));
        let expected = json!({
            "topic": "live",
            "stream": 3,
            "offset": 42,
            "time": "2026-01-01T00:00:00.123Z",
            "time_us": 1_767_225_600_123_456u64,
            "publisher": "ana",
            "text": "hi",
        });
        assert_eq!(value, expected);
    }
}
