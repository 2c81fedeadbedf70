//! The `compression` benchmark: how well zstd compresses EVENTS batches of a recorded chat, and
//! what it costs, as a chorusd origin would compress them for its relays.
//!
//! The log's comments are cut into batches of consecutive comments, each encoded as the EVENTS
//! frame the broker would send (publisher = author, payload = the replay scenario's JSON). Each
//! batch is compressed into an EVENTS_ZSTD frame with `compress_events_frame`, as the broker
//! does, and decoded again with the receiver's checks. Throughputs are in MB (10^6 bytes) of
//! plain EVENTS frames per second of one thread.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use chorus_protocol::event::EventsFrameBuilder;
use chorus_protocol::{compress_events_frame, decode_frame_with_max, Frame, Topic};
use clap::Args;

use crate::chatlog::{self, LogFormat};
use crate::workload::{encode_payload, Comment};

/// Smallest saving, in percent, for which chorusd sends the compressed frame.
const MIN_SAVING_PERCENT: usize = 10;

/// Arguments of `chorus-bench compression`.
#[derive(Debug, Args)]
pub(crate) struct CompressionArgs {
    /// Recorded chat log to cut into batches. When the file is missing, the benchmark prints
    /// that it skipped and exits with success.
    #[arg(long)]
    log: PathBuf,

    /// Layout of the chat log.
    #[arg(long, value_enum, default_value_t = LogFormat::Youtube)]
    format: LogFormat,

    /// Comments per batch; one row of results per size and level.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128,512")]
    batch_sizes: Vec<usize>,

    /// zstd levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    levels: Vec<i32>,

    /// Times every batch is compressed and decoded; the fastest round is reported.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
}

/// Figures of one batch size at one level.
struct Row {
    batch: usize,
    level: i32,
    batches: usize,
    plain_bytes: usize,
    compressed_bytes: usize,
    /// Batches that save at least [`MIN_SAVING_PERCENT`] and so go compressed.
    worth_sending: usize,
    compress: Duration,
    decode: Duration,
}

pub(crate) fn run(args: CompressionArgs) -> anyhow::Result<bool> {
    if !args.log.exists() {
        println!(
            "skipped: chat log {} not found; pass a recorded log with --log",
            args.log.display()
        );
        return Ok(true);
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let comments = chatlog::read_log(&args.log, args.format, None)?;
    println!(
        "{} comments from {}; {} round(s), fastest kept",
        comments.len(),
        args.log.display(),
        args.rounds
    );
    println!(
        "{:>6} {:>5} {:>8} {:>12} {:>12} {:>6} {:>9} {:>12} {:>12}",
        "batch",
        "level",
        "batches",
        "plain B",
        "zstd B",
        "ratio",
        "sent zstd",
        "compr MB/s",
        "decode MB/s"
    );
    for &batch in &args.batch_sizes {
        if batch == 0 {
            bail!("--batch-sizes must be at least 1");
        }
        let frames = batch_frames(&comments, batch)?;
        for &level in &args.levels {
            let row = measure(&frames, batch, level, args.rounds)?;
            print_row(&row);
        }
    }
    Ok(true)
}

/// Encodes the comments as EVENTS frames of `batch` consecutive comments each.
fn batch_frames(comments: &[Comment], batch: usize) -> anyhow::Result<Vec<Bytes>> {
    let topic = Topic::new("bench/compression").context("benchmark topic name")?;
    let frames = comments
        .chunks(batch)
        .enumerate()
        .map(|(chunk, slice)| {
            let mut builder = EventsFrameBuilder::new(&topic, 1, 0);
            for (i, comment) in slice.iter().enumerate() {
                let offset = (chunk * batch + i) as u64;
                let payload = encode_payload(offset, &comment.author, &comment.text);
                // Broker time: a fixed start plus the comment's time in the log.
                let time_us = 1_743_400_000_000_000 + comment.at.as_micros() as u64;
                builder.push(offset, time_us, 0, &comment.author, &payload);
            }
            builder.finish()
        })
        .collect();
    Ok(frames)
}

fn measure(frames: &[Bytes], batch: usize, level: i32, rounds: u32) -> anyhow::Result<Row> {
    let mut row = Row {
        batch,
        level,
        batches: frames.len(),
        plain_bytes: frames.iter().map(Bytes::len).sum(),
        compressed_bytes: 0,
        worth_sending: 0,
        compress: Duration::MAX,
        decode: Duration::MAX,
    };
    for _ in 0..rounds {
        let start = Instant::now();
        let compressed: Vec<Bytes> = frames
            .iter()
            .map(|frame| compress_events_frame(frame, level))
            .collect::<Result<_, _>>()
            .context("compression failed")?;
        row.compress = row.compress.min(start.elapsed());

        let start = Instant::now();
        for frame in &compressed {
            let decoded = decode_frame_with_max(frame.clone(), u32::MAX)
                .context("a compressed batch failed to decode")?;
            if !matches!(decoded, Frame::EventsZstd(_)) {
                bail!("a compressed batch decoded to another frame type");
            }
        }
        row.decode = row.decode.min(start.elapsed());

        row.compressed_bytes = compressed.iter().map(Bytes::len).sum();
        row.worth_sending = frames
            .iter()
            .zip(&compressed)
            .filter(|(plain, small)| small.len() * 100 <= plain.len() * (100 - MIN_SAVING_PERCENT))
            .count();
    }
    Ok(row)
}

fn print_row(row: &Row) {
    let mb_per_s = |elapsed: Duration| row.plain_bytes as f64 / 1e6 / elapsed.as_secs_f64();
    println!(
        "{:>6} {:>5} {:>8} {:>12} {:>12} {:>6.2} {:>8.0}% {:>12.1} {:>12.1}",
        row.batch,
        row.level,
        row.batches,
        row.plain_bytes,
        row.compressed_bytes,
        row.plain_bytes as f64 / row.compressed_bytes as f64,
        100.0 * row.worth_sending as f64 / row.batches as f64,
        mb_per_s(row.compress),
        mb_per_s(row.decode),
    );
}
