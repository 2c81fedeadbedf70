//! `chorusctl publish`: one comment from the command line, or one per line of standard input.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader};

use chorus_client::{ClientError, Connection, Frame, PublishAck, Topic};
use serde_json::json;

use crate::cli::{Cli, PublishArgs};
use crate::failure::{Failure, Status};
use crate::output::emit;

/// Most publishes sent and not yet acknowledged while reading standard input. Acks are read
/// whenever this many are outstanding, so neither side's socket buffer fills up with them.
const WINDOW: usize = 1024;

pub(crate) fn run(cli: &Cli, args: &PublishArgs) -> Result<(), Failure> {
    let mut conn = Connection::connect(&cli.server, &crate::client_options(cli)?)
        .map_err(|e| Failure::client(&cli.server, e))?;
    if args.text == "-" {
        publish_lines(cli, &mut conn, &args.topic)
    } else {
        publish_one(cli, &mut conn, &args.topic, &args.text)
    }
}

fn publish_one(cli: &Cli, conn: &mut Connection, topic: &Topic, text: &str) -> Result<(), Failure> {
    let ack = conn
        .publish(topic, text.as_bytes())
        .map_err(|e| Failure::client(&cli.server, e))?;
    if cli.json {
        let value = json!({
            "topic": topic.as_str(),
            "offset": ack.offset,
            "stream": ack.stream,
        });
        emit(&value.to_string())
    } else {
        emit(&format!(
            "published to {topic} at offset {} (stream {})",
            ack.offset, ack.stream
        ))
    }
}

/// Publishes each non-empty line of standard input, pipelined, and prints a summary.
fn publish_lines(cli: &Cli, conn: &mut Connection, topic: &Topic) -> Result<(), Failure> {
    let mut input = BufReader::with_capacity(64 * 1024, io::stdin());
    let mut tally = Tally::default();
    let mut line = Vec::new();
    let mut number: u64 = 0;
    loop {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::local_io("reading standard input", e))?;
        if read == 0 {
            break;
        }
        number += 1;
        trim_line_end(&mut line);
        if line.is_empty() {
            continue;
        }
        send_line(cli, conn, topic, &line, number, &mut tally)?;

        if tally.outstanding() >= WINDOW {
            conn.flush().map_err(|e| tally.lost(cli, e))?;
            while tally.outstanding() > WINDOW / 2 {
                receive_ack(cli, conn, &mut tally)?;
            }
        } else if input.buffer().is_empty() {
            // Nothing more is buffered, so the next read may wait for a person typing: send
            // what was read so far instead of holding it back.
            conn.flush().map_err(|e| tally.lost(cli, e))?;
        }
    }

    conn.flush().map_err(|e| tally.lost(cli, e))?;
    while tally.outstanding() > 0 {
        receive_ack(cli, conn, &mut tally)?;
    }
    print_summary(cli, topic, &tally)?;
    if tally.rejected > 0 {
        let message = format!(
            "{} of {} comments were rejected",
            tally.rejected,
            tally.total()
        );
        return Err(Failure::new(Status::Rejected, message));
    }
    Ok(())
}

fn send_line(
    cli: &Cli,
    conn: &mut Connection,
    topic: &Topic,
    line: &[u8],
    number: u64,
    tally: &mut Tally,
) -> Result<(), Failure> {
    match conn.send_publish(topic, line) {
        Ok(seq) => {
            tally.lines.insert(seq, number);
            Ok(())
        }
        Err(e @ ClientError::PayloadTooLarge { .. }) => {
            eprintln!("chorusctl: line {number} not published: {e}");
            tally.rejected += 1;
            Ok(())
        }
        Err(e) => Err(tally.lost(cli, e)),
    }
}

fn receive_ack(cli: &Cli, conn: &mut Connection, tally: &mut Tally) -> Result<(), Failure> {
    match conn.recv() {
        Ok(Frame::PublishAck(ack)) => {
            tally.record(&ack);
            Ok(())
        }
        // This connection subscribes to nothing, so other frames carry nothing to count.
        Ok(_) => Ok(()),
        Err(e) => Err(tally.lost(cli, e)),
    }
}

fn print_summary(cli: &Cli, topic: &Topic, tally: &Tally) -> Result<(), Failure> {
    if cli.json {
        let value = json!({
            "topic": topic.as_str(),
            "published": tally.published,
            "rejected": tally.rejected,
            "first_offset": tally.first_offset,
            "last_offset": tally.last_offset,
            "stream": tally.stream,
        });
        return emit(&value.to_string());
    }
    let mut summary = format!("published {} comments to {topic}", tally.published);
    if let (Some(first), Some(last), Some(stream)) =
        (tally.first_offset, tally.last_offset, tally.stream)
    {
        summary.push_str(&format!(
            " (first offset {first}, last offset {last}, stream {stream})"
        ));
    }
    emit(&summary)
}

/// Removes a trailing `\n` or `\r\n`.
fn trim_line_end(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

/// Counts of pipelined publishes, and the input line of each one not yet acknowledged.
#[derive(Debug, Default)]
struct Tally {
    published: u64,
    rejected: u64,
    first_offset: Option<u64>,
    last_offset: Option<u64>,
    stream: Option<u64>,
    lines: HashMap<u64, u64>,
}

impl Tally {
    fn outstanding(&self) -> usize {
        self.lines.len()
    }

    fn total(&self) -> u64 {
        self.published + self.rejected + self.lines.len() as u64
    }

    fn record(&mut self, ack: &PublishAck) {
        let Some(number) = self.lines.remove(&ack.seq) else {
            tracing::warn!(
                seq = ack.seq,
                "ignored an ack for a publish that was not sent"
            );
            return;
        };
        if ack.code != chorus_client::ErrorCode::Ok {
            eprintln!(
                "chorusctl: line {number} rejected by the server: {}",
                ack.code
            );
            self.rejected += 1;
            return;
        }
        self.published += 1;
        self.first_offset.get_or_insert(ack.offset);
        self.last_offset = Some(ack.offset);
        self.stream = Some(ack.stream);
    }

    /// Wraps an error that ended the run, saying how far it got.
    fn lost(&self, cli: &Cli, error: ClientError) -> Failure {
        let mut failure = Failure::client(&cli.server, error);
        failure.message = format!(
            "{}\n{} comments were acknowledged, {} rejected and {} unconfirmed before the error",
            failure.message,
            self.published,
            self.rejected,
            self.lines.len()
        );
        failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_removes_newline() {
        let mut line = b"hello\n".to_vec();
        trim_line_end(&mut line);
        assert_eq!(line, b"hello");
    }

    #[test]
    fn trim_removes_crlf() {
        let mut line = b"hello\r\n".to_vec();
        trim_line_end(&mut line);
        assert_eq!(line, b"hello");
    }

    #[test]
    fn trim_keeps_last_line_without_newline() {
        let mut line = b"hello".to_vec();
        trim_line_end(&mut line);
        assert_eq!(line, b"hello");
    }
}
