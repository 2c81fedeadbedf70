//! Batches between publishers and workers, with real chorusd processes on loopback. Comments
//! from different publishers that arrive within the batching window (`delivery.batch_window_us`)
//! share one EVENTS frame, and every publish is still acknowledged with its own offset. Batches
//! that do not fit a worker's queue (`limits.worker_queue_bytes`) reach its subscribers through
//! catch-up from the log instead, exactly once and in order.

mod util;

use std::thread;
use std::time::{Duration, Instant};

use chorus_client::{Frame, StartAt};
use util::client::{assert_in_order, collect_events, connect, publish_pipelined, topic};
use util::{Broker, TestDir};

/// The longest window the configuration accepts, so that two publishes sent one right after the
/// other fall inside it even on a loaded machine.
const WINDOW_US: u64 = 100_000;

/// Maximum wait for a frame.
const WAIT: Duration = Duration::from_secs(20);

fn start(window_us: u64) -> (Broker, TestDir) {
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "workers = 1\n[delivery]\nbatch_window_us = {window_us}\n"
    ));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    (broker, dir)
}

/// Sends one publish from each of three connections without waiting, then returns the
/// comment counts of the EVENTS frames the subscriber receives until it has all three, and
/// the offsets of the three acknowledgements.
fn publish_from_three(broker: &Broker) -> (Vec<usize>, Vec<u64>) {
    let name = topic("batching/window");
    let mut subscriber = connect(&broker.addr_string());
    subscriber.subscribe(&name, StartAt::Latest, 0).unwrap();
    let mut publishers: Vec<_> = (0..3).map(|_| connect(&broker.addr_string())).collect();
    for (i, publisher) in publishers.iter_mut().enumerate() {
        publisher
            .send_publish(&name, format!("comment {i}").as_bytes())
            .unwrap();
        publisher.flush().unwrap();
    }

    let mut counts = Vec::new();
    let deadline = Instant::now() + WAIT;
    while counts.iter().sum::<usize>() < 3 && Instant::now() < deadline {
        if let Ok(Frame::Events(events)) = subscriber.recv() {
            counts.push(events.len());
        }
    }
    let mut offsets = Vec::new();
    for publisher in &mut publishers {
        while Instant::now() < deadline {
            if let Ok(Frame::PublishAck(ack)) = publisher.recv() {
                offsets.push(ack.offset);
                break;
            }
        }
    }
    offsets.sort_unstable();
    (counts, offsets)
}

#[test]
fn publishes_within_window_share_one_batch() {
    let (broker, _dir) = start(WINDOW_US);
    let (counts, offsets) = publish_from_three(&broker);
    assert_eq!(counts, vec![3], "comments per EVENTS frame");
    assert_eq!(offsets, vec![0, 1, 2], "acknowledged offsets");
}

#[test]
fn window_of_zero_still_acknowledges_every_publish() {
    let (broker, _dir) = start(0);
    let (counts, offsets) = publish_from_three(&broker);
    assert_eq!(counts.iter().sum::<usize>(), 3, "comments delivered");
    assert_eq!(offsets, vec![0, 1, 2], "acknowledged offsets");
}

/// Comments published in the worker-queue test.
const FLOOD: usize = 20_000;

#[test]
fn full_worker_queue_loses_no_comment() {
    let dir = TestDir::new();
    // The smallest queue the configuration accepts: one batch of at most 4 KiB, which must
    // hold the largest comment.
    let config = dir.write_config(
        "workers = 2\n[limits]\nmax_payload = 2048\nmax_batch_bytes = 4096\n\
         worker_queue_bytes = 4096\n",
    );
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let name = topic("batching/flood");

    let readers: Vec<_> = (0..6)
        .map(|_| {
            let mut subscriber = connect(&broker.addr_string());
            subscriber.subscribe(&name, StartAt::Latest, 0).unwrap();
            let name = name.clone();
            thread::spawn(move || collect_events(&mut subscriber, &name, FLOOD))
        })
        .collect();
    let payloads: Vec<Vec<u8>> = (0..FLOOD)
        .map(|i| format!("flood comment {i}").into_bytes())
        .collect();
    let mut publisher = connect(&broker.addr_string());
    publish_pipelined(&mut publisher, &name, &payloads);

    for reader in readers {
        let events = reader.join().expect("subscriber thread panicked");
        assert_in_order(&events, 0, |offset| {
            format!("flood comment {offset}").into_bytes()
        });
    }
}
