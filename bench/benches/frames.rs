//! Micro-benchmarks of the frame codec on the broker's hot paths: encoding and decoding a
//! PUBLISH, an EVENTS frame of 100 comments, and building one with `EventsFrameBuilder`.
//!
//! Run with `cargo bench -p chorus-bench --bench frames`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use chorus_protocol::event::{encode_events_frame, EventsFrameBuilder};
use chorus_protocol::{Decoder, Event, Events, Frame, Publish, Topic, DEFAULT_MAX_FRAME};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Comments per EVENTS frame.
const BATCH: usize = 100;

/// A typical live comment: about a hundred bytes of JSON.
const PAYLOAD: &[u8] =
    br#"{"i":123456,"a":"u_8c1f2d","t":"what a goal!!! \u26bd\ufe0f unbelievable finish"}"#;

fn topic() -> Topic {
    Topic::new("event/final-2026/comments").expect("valid topic name")
}

fn publish_frame() -> Frame {
    Frame::Publish(Publish {
        seq: 42,
        topic: topic(),
        payload: Bytes::from_static(PAYLOAD),
    })
}

fn events(count: usize) -> Vec<Event> {
    (0..count as u64)
        .map(|i| Event {
            offset: 1_000 + i,
            time_us: 1_760_000_000_000_000 + i,
            flags: 0,
            publisher: "backend-1".to_owned(),
            payload: Bytes::from_static(PAYLOAD),
        })
        .collect()
}

fn publish(c: &mut Criterion) {
    let frame = publish_frame();
    let encoded = frame.to_bytes();
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(1024);
        b.iter(|| {
            buf.clear();
            black_box(&frame).encode(&mut buf);
            black_box(buf.len())
        })
    });
    group.bench_function("decode", |b| {
        let mut decoder = Decoder::new(DEFAULT_MAX_FRAME);
        b.iter(|| {
            let mut buf = BytesMut::from(&encoded[..]);
            black_box(decoder.decode(&mut buf).expect("valid frame"))
        })
    });
    group.finish();
}

fn events_frames(c: &mut Criterion) {
    let batch = Frame::Events(Events::new(topic(), 7, &events(BATCH)));
    let encoded = batch.to_bytes();
    let mut group = c.benchmark_group("events_100");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(encoded.len());
        b.iter(|| {
            buf.clear();
            black_box(&batch).encode(&mut buf);
            black_box(buf.len())
        })
    });
    group.bench_function("decode_and_iterate", |b| {
        let mut decoder = Decoder::new(DEFAULT_MAX_FRAME);
        b.iter(|| {
            let mut buf = BytesMut::from(&encoded[..]);
            let Some(Frame::Events(events)) = decoder.decode(&mut buf).expect("valid frame") else {
                unreachable!("the input is an EVENTS frame");
            };
            let bytes: usize = events.iter().map(|e| e.payload.len()).sum();
            black_box(bytes)
        })
    });
    group.finish();
}

fn builder(c: &mut Criterion) {
    let topic = topic();
    let events = events(BATCH);
    let capacity: usize = events
        .iter()
        .map(|e| chorus_protocol::event::entry_len(e.publisher.len(), e.payload.len()))
        .sum();
    let mut entries = BytesMut::new();
    for e in &events {
        chorus_protocol::event::encode_entry(
            &mut entries,
            e.offset,
            e.time_us,
            e.flags,
            &e.publisher,
            &e.payload,
        );
    }
    let mut group = c.benchmark_group("events_builder_100");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("push_finish", |b| {
        b.iter(|| {
            let mut builder = EventsFrameBuilder::new(&topic, 7, capacity);
            for e in &events {
                builder.push(e.offset, e.time_us, e.flags, &e.publisher, &e.payload);
            }
            black_box(builder.finish())
        })
    });
    group.bench_function("encode_events_frame", |b| {
        b.iter(|| black_box(encode_events_frame(&topic, 7, BATCH as u32, &entries)))
    });
    group.finish();
}

criterion_group!(benches, publish, events_frames, builder);
criterion_main!(benches);
