//! Property tests of the codec: round trips, arbitrary input, arbitrary splits and bit flips.

use bytes::{Bytes, BytesMut};
use chorus_protocol::{
    decode_frame, decode_preamble, frame::kind, frame::MAX_REACTION_KIND, AudienceEntry, Cap,
    DecodeError, Decoder, ErrorCode, ErrorFrame, Event, Events, Frame, Hello, ModAction, Moderate,
    ModerateAck, Publish, PublishAck, React, RelayPublish, Skipped, StartAt, Subscribe, Subscribed,
    Topic, Welcome, DEFAULT_MAX_FRAME, HEADER_LEN,
};
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use proptest::string::string_regex;
use proptest::test_runner::FileFailurePersistence;

/// Failing cases are saved beside this file, in `properties.proptest-regressions`.
const REGRESSIONS: FileFailurePersistence =
    FileFailurePersistence::WithSource("proptest-regressions");

/// Upper bound on decode calls per fed piece, so a decoder bug cannot loop forever.
const MAX_FRAMES_PER_PIECE: usize = 64;

fn regex(pattern: &str) -> BoxedStrategy<String> {
    string_regex(pattern)
        .expect("pattern is a valid regex")
        .boxed()
}

/// Valid topic names: short hierarchical ones, and ones near the 255-byte maximum.
fn topic() -> impl Strategy<Value = Topic> {
    let segment = "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,15}";
    prop_oneof![
        regex(&format!("{segment}(/{segment}){{0,3}}")),
        regex("[a-z]{64}/[A-Z]{64}/[0-9]{64}/[a-z][a-z_.-]{0,59}"),
    ]
    .prop_map(|name| Topic::new(name).expect("strategy generates valid topic names"))
}

/// Any UTF-8 text that fits a str8 field: at most 63 characters of at most 4 bytes each.
fn text8() -> BoxedStrategy<String> {
    regex("(?s).{0,63}")
}

/// Any UTF-8 text longer than a str8 can hold, for str16 fields.
fn text16() -> BoxedStrategy<String> {
    regex("(?s).{0,300}")
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode::from_u16)
}

fn start_at() -> impl Strategy<Value = StartAt> {
    prop_oneof![
        Just(StartAt::Latest),
        any::<u64>().prop_map(StartAt::Offset),
        any::<u64>().prop_map(StartAt::Last),
        Just(StartAt::Earliest),
        any::<u64>().prop_map(StartAt::Since),
    ]
}

/// Up to 8 events with strictly increasing offsets, as EVENTS requires.
fn events() -> impl Strategy<Value = Vec<Event>> {
    let fields = (any::<u64>(), any::<u8>(), text8(), payload());
    (btree_set(any::<u64>(), 0..8), vec(fields, 8)).prop_map(|(offsets, fields)| {
        offsets
            .into_iter()
            .zip(fields)
            .map(|(offset, (time_us, flags, publisher, payload))| Event {
                offset,
                time_us,
                flags,
                publisher,
                payload,
            })
            .collect()
    })
}

fn hello() -> impl Strategy<Value = Frame> {
    (any::<u16>(), any::<u32>(), text8(), text16()).prop_map(
        |(version, max_frame, client_name, token)| {
            Frame::Hello(Hello {
                version,
                max_frame,
                client_name,
                token,
                features: 0,
            })
        },
    )
}

fn welcome() -> impl Strategy<Value = Frame> {
    (
        any::<u16>(),
        any::<u32>(),
        text8(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(version, max_frame, server_name, max_payload, idle_timeout_ms)| {
                Frame::Welcome(Welcome {
                    version,
                    max_frame,
                    server_name,
                    max_payload,
                    idle_timeout_ms,
                    features: 0,
                })
            },
        )
}

fn subscribe() -> impl Strategy<Value = Frame> {
    (topic(), start_at(), any::<u64>()).prop_map(|(topic, start, stream)| {
        Frame::Subscribe(Subscribe {
            topic,
            start,
            stream,
        })
    })
}

fn subscribed() -> impl Strategy<Value = Frame> {
    (topic(), any::<[u64; 4]>()).prop_map(|(topic, [stream, start, earliest, end])| {
        Frame::Subscribed(Subscribed {
            topic,
            stream,
            start,
            earliest,
            end,
        })
    })
}

fn publish() -> impl Strategy<Value = Frame> {
    (any::<u64>(), topic(), payload()).prop_map(|(seq, topic, payload)| {
        Frame::Publish(Publish {
            seq,
            topic,
            payload,
        })
    })
}

fn publish_ack() -> impl Strategy<Value = Frame> {
    (any::<u64>(), error_code(), any::<u64>(), any::<u64>()).prop_map(
        |(seq, code, offset, stream)| {
            Frame::PublishAck(PublishAck {
                seq,
                code,
                offset,
                stream,
            })
        },
    )
}

fn events_frame() -> impl Strategy<Value = Frame> {
    (topic(), any::<u64>(), events())
        .prop_map(|(topic, stream, events)| Frame::Events(Events::new(topic, stream, &events)))
}

fn error_frame() -> impl Strategy<Value = Frame> {
    (error_code(), any::<bool>(), text8(), text16()).prop_map(|(code, close, topic, message)| {
        Frame::Error(ErrorFrame {
            code,
            close,
            topic,
            message,
        })
    })
}

/// Nonempty UTF-8 text that fits a str8 field, for user ids.
fn user() -> BoxedStrategy<String> {
    regex("(?s).{1,63}")
}

/// Every moderation action, with field values that fit the action table.
fn mod_action() -> impl Strategy<Value = ModAction> {
    prop_oneof![
        (topic(), any::<u64>())
            .prop_map(|(topic, offset)| ModAction::DeleteComment { topic, offset }),
        (user(), prop::option::of((topic(), 1..=u64::MAX)))
            .prop_map(|(user, purge)| ModAction::Ban { user, purge }),
        user().prop_map(|user| ModAction::Unban { user }),
        (topic(), any::<u64>())
            .prop_map(|(topic, interval_ms)| ModAction::SlowMode { topic, interval_ms }),
    ]
}

fn moderate() -> impl Strategy<Value = Frame> {
    (any::<u64>(), mod_action()).prop_map(|(seq, action)| Frame::Moderate(Moderate { seq, action }))
}

/// Reaction kinds of 1 to 32 bytes: up to 8 characters of at most 4 bytes each.
fn reaction_kind() -> BoxedStrategy<String> {
    regex("(?s).{1,8}")
        .prop_filter("kind fits 32 bytes", |kind| kind.len() <= MAX_REACTION_KIND)
        .boxed()
}

fn relay_or_moderation_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        moderate(),
        (any::<u64>(), error_code())
            .prop_map(|(seq, code)| Frame::ModerateAck(ModerateAck { seq, code })),
        (topic(), reaction_kind(), 1..=u32::MAX)
            .prop_map(|(topic, kind, count)| Frame::React(React { topic, kind, count })),
        (topic(), any::<u32>())
            .prop_map(|(topic, max_per_sec)| Frame::Cap(Cap { topic, max_per_sec })),
        (topic(), any::<u64>(), any::<u64>()).prop_map(|(topic, count, through)| {
            Frame::Skipped(Skipped {
                topic,
                count,
                through,
            })
        }),
        vec((topic(), any::<u64>()), 0..6).prop_map(|entries| {
            let entries = entries
                .into_iter()
                .map(|(topic, viewers)| AudienceEntry { topic, viewers })
                .collect();
            Frame::Audience(entries)
        }),
        (any::<u64>(), topic(), user(), any::<bool>(), payload()).prop_map(
            |(seq, topic, user, priority, payload)| {
                Frame::RelayPublish(RelayPublish {
                    seq,
                    topic,
                    user,
                    priority,
                    payload,
                })
            }
        ),
    ]
}

/// Any frame of any type, with arbitrary field values that fit their encodings.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        hello(),
        welcome(),
        subscribe(),
        subscribed(),
        topic().prop_map(Frame::Unsubscribe),
        publish(),
        publish_ack(),
        events_frame(),
        any::<u64>().prop_map(Frame::Ping),
        any::<u64>().prop_map(Frame::Pong),
        error_frame(),
        relay_or_moderation_frame(),
    ]
}

/// Builds a frame with a correct header and CRC around an arbitrary type byte and body.
fn raw_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&out);
    hasher.update(body);
    out.extend_from_slice(&hasher.finalize().to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Everything a decoder produced from a stream that then closed.
#[derive(Debug, PartialEq)]
struct Decoded {
    frames: Vec<Frame>,
    error: Option<DecodeError>,
    left_over: usize,
}

/// Feeds `input` to a decoder in pieces of the given sizes (cycled), stopping at the first error.
fn decode_in_pieces(input: &[u8], pieces: &[usize], max_frame: u32) -> Decoded {
    let mut decoder = Decoder::new(max_frame);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut sizes = pieces.iter().copied().cycle();
    while pos < input.len() {
        let size = sizes
            .next()
            .unwrap_or(input.len())
            .clamp(1, input.len() - pos);
        buf.extend_from_slice(&input[pos..pos + size]);
        pos += size;
        for _ in 0..MAX_FRAMES_PER_PIECE {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    return Decoded {
                        frames,
                        error: Some(error),
                        left_over: buf.len(),
                    }
                }
            }
        }
    }
    Decoded {
        frames,
        error: None,
        left_over: buf.len(),
    }
}

fn flip_bit(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[bit / 8] ^= 0x80 >> (bit % 8);
    out
}

fn declared_len(frame: &[u8]) -> u32 {
    u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]])
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(REGRESSIONS)),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_frame_round_trips(frame in frame()) {
        let encoded = frame.to_bytes();
        prop_assert_eq!(declared_len(&encoded) as usize, encoded.len() - HEADER_LEN);
        prop_assert_eq!(decode_frame(encoded.clone()), Ok(frame.clone()));

        let mut buf = BytesMut::from(&encoded[..]);
        let mut decoder = Decoder::new(DEFAULT_MAX_FRAME);
        prop_assert_eq!(decoder.decode(&mut buf), Ok(Some(frame)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn events_round_trip_entry_by_entry(
        topic in topic(),
        stream in any::<u64>(),
        events in events(),
    ) {
        let frame = Frame::Events(Events::new(topic.clone(), stream, &events));
        let Ok(Frame::Events(decoded)) = decode_frame(frame.to_bytes()) else {
            return Err(TestCaseError::fail("EVENTS frame did not decode to EVENTS"));
        };
        prop_assert_eq!(decoded.topic(), &topic);
        prop_assert_eq!(decoded.stream(), stream);
        prop_assert_eq!(decoded.iter().collect::<Vec<_>>(), events);
    }

    /// The encoding is canonical: whatever decodes re-encodes to the bytes it came from.
    #[test]
    fn arbitrary_body_with_valid_crc_never_panics(
        kind in 0u8..=kind::RELAY_PUBLISH + 1,
        body in vec(any::<u8>(), 0..200),
    ) {
        let raw = raw_frame(kind, &body);
        if let Ok(frame) = decode_frame(Bytes::from(raw.clone())) {
            prop_assert_eq!(frame.to_bytes().to_vec(), raw);
        }
    }

    /// Corrupts the body of a valid frame and fixes the CRC, so the damage reaches the body parser.
    #[test]
    fn corrupted_body_with_valid_crc_never_panics(
        frame in frame(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let encoded = frame.to_bytes();
        let mut body = encoded[HEADER_LEN..].to_vec();
        if body.is_empty() {
            return Ok(());
        }
        let len = body.len();
        for (index, value) in edits {
            body[index.index(len)] = value;
        }
        let raw = raw_frame(encoded[4], &body);
        if let Ok(decoded) = decode_frame(Bytes::from(raw.clone())) {
            prop_assert_eq!(decoded.to_bytes().to_vec(), raw);
        }
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(
        input in vec(any::<u8>(), 0..2048),
        pieces in vec(1usize..300, 1..16),
        max_frame in prop_oneof![Just(DEFAULT_MAX_FRAME), 0u32..4096, Just(u32::MAX)],
    ) {
        let decoded = decode_in_pieces(&input, &pieces, max_frame);
        let consumed: usize = decoded.frames.iter().map(|f| f.to_bytes().len()).sum();
        prop_assert!(consumed + decoded.left_over <= input.len());
    }

    #[test]
    fn preamble_check_never_panics(input in vec(any::<u8>(), 0..16)) {
        let mut buf = BytesMut::from(&input[..]);
        if let Ok(Some(version)) = decode_preamble(&mut buf) {
            prop_assert_eq!(version, chorus_protocol::VERSION);
            prop_assert_eq!(&input[..8], &chorus_protocol::preamble()[..]);
            prop_assert_eq!(buf.len(), input.len() - 8);
        }
    }

    #[test]
    fn split_stream_decodes_same_frames(
        frames in vec(frame(), 1..8),
        pieces in vec(1usize..64, 1..16),
    ) {
        let mut stream = Vec::new();
        for frame in &frames {
            stream.extend_from_slice(&frame.to_bytes());
        }
        let decoded = decode_in_pieces(&stream, &pieces, DEFAULT_MAX_FRAME);
        prop_assert_eq!(decoded, Decoded { frames, error: None, left_over: 0 });
    }

    /// CRC-32 detects every single-bit error in the bytes it covers, and a flip in the CRC field
    /// itself makes the CRC disagree, so a flip outside the length field is always BAD_CRC.
    ///
    /// A flip in the length field changes which bytes form the frame. A larger length within the
    /// maximum leaves the decoder waiting for bytes that never come. A length above the maximum
    /// is FRAME_TOO_LARGE. A smaller length cuts the body short, and then the CRC of different
    /// bytes is compared with the stored one: a chance match, with probability 2^-32 for each
    /// shortened frame, would make this test fail, very rarely.
    #[test]
    fn single_bit_flip_is_detected(frame in frame()) {
        let encoded = frame.to_bytes();
        for bit in 0..encoded.len() * 8 {
            let flipped = flip_bit(&encoded, bit);
            let mut buf = BytesMut::from(&flipped[..]);
            let result = Decoder::new(DEFAULT_MAX_FRAME).decode(&mut buf);
            let in_length = bit < 32;
            let grown = declared_len(&flipped) > declared_len(&encoded);
            let code = result.as_ref().map_err(DecodeError::code);
            match code {
                Ok(None) => prop_assert!(in_length && grown, "bit {bit} left the decoder waiting"),
                Ok(Some(_)) => prop_assert!(false, "bit {bit} flipped and a frame decoded"),
                Err(ErrorCode::FrameTooLarge) => prop_assert!(in_length && grown, "bit {bit}"),
                Err(code) => prop_assert_eq!(code, ErrorCode::BadCrc, "bit {}", bit),
            }
        }
    }

    /// A flipped frame followed by valid frames never turns into a frame, even when a grown
    /// length field pulls the following bytes into it (with the same 2^-32 chance of a match).
    #[test]
    fn flipped_frame_before_valid_frames_fails(
        first in frame(),
        rest in vec(frame(), 1..4),
        bit in any::<prop::sample::Index>(),
    ) {
        let encoded = first.to_bytes();
        let mut stream = flip_bit(&encoded, bit.index(encoded.len() * 8));
        for frame in &rest {
            stream.extend_from_slice(&frame.to_bytes());
        }
        let decoded = decode_in_pieces(&stream, &[stream.len()], DEFAULT_MAX_FRAME);
        prop_assert!(decoded.frames.is_empty(), "decoded {:?}", decoded.frames);
        prop_assert!(decoded.error.is_some() || decoded.left_over > 0);
    }
}
