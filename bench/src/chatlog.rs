//! Readers for recorded chat logs.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::DateTime;
use clap::ValueEnum;
use serde::Serialize;

use crate::workload::Comment;

/// Layout of a recorded chat log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// YouTube live chat: UTF-8 CSV with the header `video_id,author_id,message,published_at`,
    /// where `published_at` is RFC 3339 such as `2025-03-31T14:02:03.123456+08:00`.
    Youtube,
}

/// Names of the columns a format reads, looked up in the header so column order is free.
struct Columns {
    author: &'static str,
    text: &'static str,
    time: &'static str,
}

impl LogFormat {
    fn columns(self) -> Columns {
        match self {
            LogFormat::Youtube => Columns {
                author: "author_id",
                text: "message",
                time: "published_at",
            },
        }
    }
}

/// Error from parsing a chat log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    #[error("invalid CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("header has no column {column:?}; found {header:?}")]
    MissingColumn {
        column: &'static str,
        header: String,
    },
    #[error("record on line {line} has no field {column:?}")]
    MissingField { line: u64, column: &'static str },
    #[error("record on line {line}: invalid timestamp {value:?}: {source}")]
    InvalidTime {
        line: u64,
        value: String,
        source: chrono::ParseError,
    },
}

/// Reads the comments of the log at `path`, at most `limit` of them.
pub(crate) fn read_log(
    path: &Path,
    format: LogFormat,
    limit: Option<usize>,
) -> anyhow::Result<Vec<Comment>> {
    if !path.exists() {
        bail!(
            "chat log {} not found; pass an existing file to --log, \
             or use --synthetic to generate comments",
            path.display()
        );
    }
    let file =
        File::open(path).with_context(|| format!("failed to open chat log {}", path.display()))?;
    parse_log(BufReader::new(file), format, limit)
        .with_context(|| format!("failed to read chat log {}", path.display()))
}

/// Parses a chat log in `format` from `reader`, at most `limit` comments.
///
/// Comment times are relative to the first comment. A comment stamped earlier than the first
/// gets time zero, so it is sent at once.
pub(crate) fn parse_log<R: Read>(
    reader: R,
    format: LogFormat,
    limit: Option<usize>,
) -> Result<Vec<Comment>, LogError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let columns = format.columns();
    let header = csv.headers()?.clone();
    let find = |column: &'static str| {
        header
            .iter()
            .position(|h| h == column)
            .ok_or_else(|| LogError::MissingColumn {
                column,
                header: header.iter().collect::<Vec<_>>().join(","),
            })
    };
    let (author_at, text_at, time_at) = (
        find(columns.author)?,
        find(columns.text)?,
        find(columns.time)?,
    );

    let mut comments = Vec::new();
    let mut first_us: Option<i64> = None;
    let limit = limit.unwrap_or(usize::MAX);
    for record in csv.records() {
        if comments.len() >= limit {
            break;
        }
        let record = record?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |at: usize, column: &'static str| {
            record
                .get(at)
                .ok_or(LogError::MissingField { line, column })
        };
        let time = field(time_at, columns.time)?;
        let time_us = parse_timestamp(time).map_err(|source| LogError::InvalidTime {
            line,
            value: time.to_owned(),
            source,
        })?;
        let first = *first_us.get_or_insert(time_us);
        let since_first = u64::try_from(time_us - first).unwrap_or(0);
        comments.push(Comment {
            at: Duration::from_micros(since_first),
            author: field(author_at, columns.author)?.to_owned(),
            text: field(text_at, columns.text)?.to_owned(),
        });
    }
    Ok(comments)
}

/// Parses an RFC 3339 timestamp with offset into microseconds since the Unix epoch.
pub(crate) fn parse_timestamp(value: &str) -> Result<i64, chrono::ParseError> {
    Ok(DateTime::parse_from_rfc3339(value)?.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "video_id,author_id,message,published_at\n";

    fn parse(body: &str) -> Result<Vec<Comment>, LogError> {
        parse_log(
            format!("{HEADER}{body}").as_bytes(),
            LogFormat::Youtube,
            None,
        )
    }

    #[test]
    fn timestamp_with_offset_and_micros() {
        let us = parse_timestamp("2025-03-31T14:02:03.123456+08:00").unwrap();
        assert_eq!(us, 1_743_400_923_123_456);
    }

    #[test]
    fn timestamp_in_utc() {
        let us = parse_timestamp("2025-03-31T06:02:03Z").unwrap();
        assert_eq!(us, 1_743_400_923_000_000);
    }

    #[test]
    fn timestamp_without_offset_is_rejected() {
        assert!(parse_timestamp("2025-03-31T14:02:03.123456").is_err());
    }

    #[test]
    fn csv_keeps_quoted_newlines() {
        let comments = parse(
            "vid,u_1,\"first line\nsecond line\",2025-03-31T14:00:00.000000+08:00\n\
             vid,u_2,plain,2025-03-31T14:00:01.500000+08:00\n",
        )
        .unwrap();
        assert_eq!(comments.len(), 2);
        assert_eq!(comments[0].text, "first line\nsecond line");
        assert_eq!(comments[1].text, "plain");
    }

    #[test]
    fn csv_keeps_emoji_cjk_and_quotes() {
        let comments = parse(
            "vid,u_1,\"加油 🎉🎉, \"\"go\"\"\",2025-03-31T14:00:00.000000+08:00\n\
             vid,u_2,:face-blue-smiling: 你好,2025-03-31T14:00:00.250000+08:00\n",
        )
        .unwrap();
        assert_eq!(comments[0].text, "加油 🎉🎉, \"go\"");
        assert_eq!(comments[1].text, ":face-blue-smiling: 你好");
        assert_eq!(comments[1].author, "u_2");
    }

    #[test]
    fn times_are_relative_to_first_comment() {
        let comments = parse(
            "vid,u_1,a,2025-03-31T14:00:00.000000+08:00\n\
             vid,u_2,b,2025-03-31T14:00:02.000250+08:00\n\
             vid,u_3,c,2025-03-31T06:00:03.000000Z\n",
        )
        .unwrap();
        assert_eq!(comments[0].at, Duration::ZERO);
        assert_eq!(comments[1].at, Duration::from_micros(2_000_250));
        assert_eq!(comments[2].at, Duration::from_secs(3));
    }

    #[test]
    fn earlier_timestamp_gets_time_zero() {
        let comments = parse(
            "vid,u_1,a,2025-03-31T14:00:05.000000+08:00\n\
             vid,u_2,b,2025-03-31T14:00:04.000000+08:00\n",
        )
        .unwrap();
        assert_eq!(comments[1].at, Duration::ZERO);
    }

    #[test]
    fn limit_stops_early() {
        let body = "vid,u_1,a,2025-03-31T14:00:00.000000+08:00\n\
                    vid,u_2,b,2025-03-31T14:00:01.000000+08:00\n\
                    vid,u_3,c,not a time\n";
        let comments = parse_log(
            format!("{HEADER}{body}").as_bytes(),
            LogFormat::Youtube,
            Some(2),
        )
        .unwrap();
        assert_eq!(comments.len(), 2);
    }

    #[test]
    fn columns_are_found_by_name() {
        let log = "published_at,message,author_id\n2025-03-31T14:00:00+08:00,hi,u_9\n";
        let comments = parse_log(log.as_bytes(), LogFormat::Youtube, None).unwrap();
        assert_eq!(comments[0].author, "u_9");
        assert_eq!(comments[0].text, "hi");
    }

    #[test]
    fn invalid_time_names_line() {
        let err = parse(
            "vid,u_1,a,2025-03-31T14:00:00.000000+08:00\n\
             vid,u_2,\"two\nlines\",yesterday\n",
        )
        .unwrap_err();
        assert!(
            matches!(err, LogError::InvalidTime { line: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_column_is_reported() {
        let err = parse_log("a,b\n1,2\n".as_bytes(), LogFormat::Youtube, None).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::MissingColumn {
                    column: "author_id",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn short_record_is_rejected() {
        assert!(matches!(parse("vid,u_1\n"), Err(LogError::Csv(_))));
    }

    #[test]
    fn missing_file_suggests_synthetic() {
        let err = read_log(Path::new("/nonexistent/chat.csv"), LogFormat::Youtube, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--synthetic"), "{err}");
    }

    /// Parses the recorded YouTube chat that benchmarks replay. The file is not part of the
    /// repository because its terms allow no redistribution, so the test skips without it.
    #[test]
    fn recorded_youtube_log_has_every_message() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/chatlogs/youtube-live-hk-stream.csv");
        if !path.exists() {
            eprintln!("skipped: recorded chat log {} is absent", path.display());
            return;
        }
        let comments = read_log(&path, LogFormat::Youtube, None).unwrap();
        assert_eq!(comments.len(), 28_013);
    }
}
