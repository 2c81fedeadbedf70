//! Runs the shared test vectors in `spec/vectors/` against the codec, in both directions.
//!
//! The vector files are the contract that every client implementation must pass, and
//! `spec/vectors/README.md` describes their schema. This test also checks that the tables in
//! `spec/PROTOCOL.md` list the same frame types and error codes as the code.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use chorus_protocol::{
    decode_frame, decode_preamble, frame::kind, AudienceEntry, Cap, Decoder, ErrorCode, ErrorFrame,
    Event, Events, Frame, Hello, ModAction, Moderate, ModerateAck, Publish, PublishAck, React,
    RelayPublish, Skipped, StartAt, Subscribe, Subscribed, Topic, Welcome, DEFAULT_MAX_FRAME,
};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// Vector files this test runs. Any other JSON file in the folder fails the test.
const VECTOR_FILES: [&str; 3] = ["invalid.json", "preamble.json", "valid.json"];

/// Highest error code that version 1 names.
const LAST_NAMED_CODE: u16 = 28;

/// Upper bound on frames decoded from one vector, so a decoder bug cannot loop forever.
const MAX_FRAMES_PER_VECTOR: usize = 16;

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec")
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> VectorFile<T> {
    let path = spec_dir().join("vectors").join(name);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorFile<T> {
    protocol_version: u16,
    #[serde(default)]
    default_max_frame: Option<u32>,
    vectors: Vec<T>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidVector {
    description: String,
    frame: FrameJson,
    hex: Hex,
    #[serde(default)]
    max_frame: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidVector {
    description: String,
    hex: Hex,
    error: String,
    #[serde(default)]
    max_frame: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreambleVector {
    description: String,
    hex: Hex,
    #[serde(default)]
    version: Option<u16>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    incomplete: bool,
}

/// A frame as written in `valid.json`: the type name and the fields of its body.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
enum FrameJson {
    Hello {
        version: u16,
        max_frame: u32,
        client_name: String,
        token: String,
        #[serde(default)]
        features: u32,
    },
    Welcome {
        version: u16,
        max_frame: u32,
        server_name: String,
        max_payload: u32,
        idle_timeout_ms: u32,
        #[serde(default)]
        features: u32,
    },
    Subscribe {
        topic: String,
        start: StartJson,
        stream: U64,
    },
    Subscribed {
        topic: String,
        stream: U64,
        start: U64,
        earliest: U64,
        end: U64,
    },
    Unsubscribe {
        topic: String,
    },
    Publish {
        seq: U64,
        topic: String,
        payload: Hex,
    },
    PublishAck {
        seq: U64,
        code: CodeJson,
        offset: U64,
        stream: U64,
    },
    Events {
        topic: String,
        stream: U64,
        events: Vec<EventJson>,
    },
    Ping {
        nonce: U64,
    },
    Pong {
        nonce: U64,
    },
    Error {
        code: CodeJson,
        close: bool,
        topic: String,
        message: String,
    },
    Moderate {
        seq: U64,
        action: u8,
        topic: String,
        offset: U64,
        user: String,
        value: U64,
    },
    ModerateAck {
        seq: U64,
        code: CodeJson,
    },
    React {
        topic: String,
        kind: String,
        count: u32,
    },
    Cap {
        topic: String,
        max_per_sec: u32,
    },
    Skipped {
        topic: String,
        count: U64,
        through: U64,
    },
    Audience {
        entries: Vec<AudienceJson>,
    },
    RelayPublish {
        seq: U64,
        topic: String,
        user: String,
        priority: bool,
        payload: Hex,
    },
    /// zstd encoders differ in their output, so the vector gives the decompressed entries and
    /// is checked by decoding only.
    EventsZstd {
        topic: String,
        stream: U64,
        raw_len: u32,
        events: Vec<EventJson>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AudienceJson {
    topic: String,
    viewers: U64,
}

#[derive(Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
enum StartJson {
    Latest,
    Offset { value: U64 },
    Last { value: U64 },
    Earliest,
    Since { value: U64 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventJson {
    offset: U64,
    time_us: U64,
    flags: u8,
    publisher: String,
    payload: Hex,
}

/// An error code given by its specification name, or by number when version 1 names none.
#[derive(Deserialize)]
#[serde(untagged)]
enum CodeJson {
    Name(String),
    Value(u16),
}

/// A u64 written as a decimal string, so that JSON parsers with 53-bit numbers read it exactly.
struct U64(u64);

impl<'de> Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<U64, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(U64).map_err(D::Error::custom)
    }
}

/// Bytes written as lower-case hex.
struct Hex(Vec<u8>);

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Hex, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(D::Error::custom("hex must be lower case"));
        }
        hex::decode(text).map(Hex).map_err(D::Error::custom)
    }
}

fn code_by_name(name: &str) -> ErrorCode {
    (0..=LAST_NAMED_CODE)
        .map(ErrorCode::from_u16)
        .find(|code| code.name() == name)
        .unwrap_or_else(|| panic!("no error code is named {name:?}"))
}

impl CodeJson {
    fn to_code(&self) -> ErrorCode {
        match self {
            CodeJson::Name(name) => code_by_name(name),
            CodeJson::Value(value) => {
                assert!(
                    *value > LAST_NAMED_CODE,
                    "code {value} has a name; write the name"
                );
                ErrorCode::from_u16(*value)
            }
        }
    }
}

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap_or_else(|e| panic!("valid vector has invalid topic {name:?}: {e}"))
}

impl StartJson {
    fn to_start(&self) -> StartAt {
        match self {
            StartJson::Latest => StartAt::Latest,
            StartJson::Offset { value } => StartAt::Offset(value.0),
            StartJson::Last { value } => StartAt::Last(value.0),
            StartJson::Earliest => StartAt::Earliest,
            StartJson::Since { value } => StartAt::Since(value.0),
        }
    }
}

impl EventJson {
    fn to_event(&self) -> Event {
        Event {
            offset: self.offset.0,
            time_us: self.time_us.0,
            flags: self.flags,
            publisher: self.publisher.clone(),
            payload: Bytes::from(self.payload.0.clone()),
        }
    }
}

/// Builds the action that MODERATE's wire fields describe, panicking on fields that break the
/// action table of `PROTOCOL.md`, since valid vectors must follow it.
fn mod_action(action: u8, topic_name: &str, offset: u64, user: &str, value: u64) -> ModAction {
    let context = format!("action {action}, topic {topic_name:?}, offset {offset}, user {user:?}");
    match action {
        1 => {
            assert!(user.is_empty(), "{context}");
            assert_eq!(value, 0, "{context}");
            ModAction::DeleteComment {
                topic: topic(topic_name),
                offset,
            }
        }
        2 => {
            assert_eq!(offset, 0, "{context}");
            let purge = (!topic_name.is_empty()).then(|| (topic(topic_name), value));
            ModAction::Ban {
                user: user.to_owned(),
                purge,
            }
        }
        3 => {
            assert!(topic_name.is_empty(), "{context}");
            assert_eq!(offset, 0, "{context}");
            assert_eq!(value, 0, "{context}");
            ModAction::Unban {
                user: user.to_owned(),
            }
        }
        4 => {
            assert!(user.is_empty(), "{context}");
            assert_eq!(offset, 0, "{context}");
            ModAction::SlowMode {
                topic: topic(topic_name),
                interval_ms: value,
            }
        }
        _ => panic!("valid vector has unknown MODERATE action: {context}"),
    }
}

impl FrameJson {
    fn to_frame(&self) -> Frame {
        match self {
            FrameJson::Hello {
                version,
                max_frame,
                client_name,
                token,
                features,
            } => Frame::Hello(Hello {
                version: *version,
                max_frame: *max_frame,
                client_name: client_name.clone(),
                token: token.clone(),
                features: *features,
            }),
            FrameJson::Welcome {
                version,
                max_frame,
                server_name,
                max_payload,
                idle_timeout_ms,
                features,
            } => Frame::Welcome(Welcome {
                version: *version,
                max_frame: *max_frame,
                server_name: server_name.clone(),
                max_payload: *max_payload,
                idle_timeout_ms: *idle_timeout_ms,
                features: *features,
            }),
            FrameJson::Subscribe {
                topic: name,
                start,
                stream,
            } => Frame::Subscribe(Subscribe {
                topic: topic(name),
                start: start.to_start(),
                stream: stream.0,
            }),
            FrameJson::Subscribed {
                topic: name,
                stream,
                start,
                earliest,
                end,
            } => Frame::Subscribed(Subscribed {
                topic: topic(name),
                stream: stream.0,
                start: start.0,
                earliest: earliest.0,
                end: end.0,
            }),
            FrameJson::Unsubscribe { topic: name } => Frame::Unsubscribe(topic(name)),
            FrameJson::Publish {
                seq,
                topic: name,
                payload,
            } => Frame::Publish(Publish {
                seq: seq.0,
                topic: topic(name),
                payload: Bytes::from(payload.0.clone()),
            }),
            FrameJson::PublishAck {
                seq,
                code,
                offset,
                stream,
            } => Frame::PublishAck(PublishAck {
                seq: seq.0,
                code: code.to_code(),
                offset: offset.0,
                stream: stream.0,
            }),
            FrameJson::Events {
                topic: name,
                stream,
                events,
            } => {
                let events: Vec<Event> = events.iter().map(EventJson::to_event).collect();
                Frame::Events(Events::new(topic(name), stream.0, &events))
            }
            FrameJson::Ping { nonce } => Frame::Ping(nonce.0),
            FrameJson::Pong { nonce } => Frame::Pong(nonce.0),
            FrameJson::Error {
                code,
                close,
                topic,
                message,
            } => Frame::Error(ErrorFrame {
                code: code.to_code(),
                close: *close,
                topic: topic.clone(),
                message: message.clone(),
            }),
            other => other.relay_or_moderation_frame(),
        }
    }

    /// Builds the frames of types 0x0c to 0x12.
    fn relay_or_moderation_frame(&self) -> Frame {
        match self {
            FrameJson::Moderate {
                seq,
                action,
                topic: name,
                offset,
                user,
                value,
            } => Frame::Moderate(Moderate {
                seq: seq.0,
                action: mod_action(*action, name, offset.0, user, value.0),
            }),
            FrameJson::ModerateAck { seq, code } => Frame::ModerateAck(ModerateAck {
                seq: seq.0,
                code: code.to_code(),
            }),
            FrameJson::React {
                topic: name,
                kind,
                count,
            } => Frame::React(React {
                topic: topic(name),
                kind: kind.clone(),
                count: *count,
            }),
            FrameJson::Cap {
                topic: name,
                max_per_sec,
            } => Frame::Cap(Cap {
                topic: topic(name),
                max_per_sec: *max_per_sec,
            }),
            FrameJson::Skipped {
                topic: name,
                count,
                through,
            } => Frame::Skipped(Skipped {
                topic: topic(name),
                count: count.0,
                through: through.0,
            }),
            FrameJson::Audience { entries } => Frame::Audience(
                entries
                    .iter()
                    .map(|entry| AudienceEntry {
                        topic: topic(&entry.topic),
                        viewers: entry.viewers.0,
                    })
                    .collect(),
            ),
            FrameJson::RelayPublish {
                seq,
                topic: name,
                user,
                priority,
                payload,
            } => Frame::RelayPublish(RelayPublish {
                seq: seq.0,
                topic: topic(name),
                user: user.clone(),
                priority: *priority,
                payload: Bytes::from(payload.0.clone()),
            }),
            FrameJson::EventsZstd { .. } => {
                panic!("EVENTS_ZSTD vectors are checked by decoding only; see is_compressed")
            }
            _ => unreachable!("to_frame handles the frame types 0x01 to 0x0b"),
        }
    }

    /// Returns whether the vector is an EVENTS_ZSTD frame, which has no exact encoding.
    fn is_compressed(&self) -> bool {
        matches!(self, FrameJson::EventsZstd { .. })
    }
}

/// Valid vectors whose frame has exactly one encoding: every type but EVENTS_ZSTD.
fn exact_vectors(file: &VectorFile<ValidVector>) -> impl Iterator<Item = &ValidVector> {
    file.vectors.iter().filter(|v| !v.frame.is_compressed())
}

/// Result of decoding a byte stream that then closes.
#[derive(Debug, PartialEq)]
enum StreamOutcome {
    /// Frames decoded, and the buffer was empty afterwards.
    Frames(Vec<Frame>),
    /// The stream ended inside a frame: the decoder waits, with this many bytes left over.
    Truncated { frames: usize, left: usize },
    /// The decoder rejected the bytes after this many good frames.
    Failed { frames: usize, code: ErrorCode },
}

/// Decodes `input` delivered in pieces of `piece` bytes, then treats the stream as closed.
fn decode_stream(input: &[u8], max_frame: u32, piece: usize) -> StreamOutcome {
    let mut decoder = Decoder::new(max_frame);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in input.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        for _ in 0..MAX_FRAMES_PER_VECTOR {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    return StreamOutcome::Failed {
                        frames: frames.len(),
                        code: e.code(),
                    }
                }
            }
        }
    }
    if buf.is_empty() {
        StreamOutcome::Frames(frames)
    } else {
        StreamOutcome::Truncated {
            frames: frames.len(),
            left: buf.len(),
        }
    }
}

fn piece_sizes(len: usize) -> [usize; 4] {
    [len.max(1), 1, 5, 13]
}

#[test]
fn vector_folder_has_only_known_files() {
    let dir = spec_dir().join("vectors");
    let mut json_files: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    json_files.sort();
    assert_eq!(json_files, VECTOR_FILES);
}

#[test]
fn vector_files_are_for_version_1() {
    let valid = load::<ValidVector>("valid.json");
    let invalid = load::<InvalidVector>("invalid.json");
    let preamble = load::<PreambleVector>("preamble.json");
    assert_eq!(valid.protocol_version, chorus_protocol::VERSION);
    assert_eq!(invalid.protocol_version, chorus_protocol::VERSION);
    assert_eq!(preamble.protocol_version, chorus_protocol::VERSION);
    assert_eq!(valid.default_max_frame, Some(DEFAULT_MAX_FRAME));
    assert_eq!(invalid.default_max_frame, Some(DEFAULT_MAX_FRAME));
}

fn assert_unique(file: &str, descriptions: Vec<&str>) {
    let mut sorted = descriptions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        descriptions.len(),
        "{file} repeats a description"
    );
}

#[test]
fn vector_descriptions_are_unique() {
    let valid = load::<ValidVector>("valid.json");
    let invalid = load::<InvalidVector>("invalid.json");
    let preamble = load::<PreambleVector>("preamble.json");
    assert_unique(
        "valid.json",
        valid
            .vectors
            .iter()
            .map(|v| v.description.as_str())
            .collect(),
    );
    assert_unique(
        "invalid.json",
        invalid
            .vectors
            .iter()
            .map(|v| v.description.as_str())
            .collect(),
    );
    assert_unique(
        "preamble.json",
        preamble
            .vectors
            .iter()
            .map(|v| v.description.as_str())
            .collect(),
    );
}

#[test]
fn valid_vectors_decode_to_their_fields() {
    let file = load::<ValidVector>("valid.json");
    for v in exact_vectors(&file) {
        let expected = v.frame.to_frame();
        let max_frame = v.max_frame.unwrap_or(DEFAULT_MAX_FRAME);
        for piece in piece_sizes(v.hex.0.len()) {
            let outcome = decode_stream(&v.hex.0, max_frame, piece);
            let want = StreamOutcome::Frames(vec![expected.clone()]);
            assert_eq!(outcome, want, "{} (pieces of {piece})", v.description);
        }
        let direct = decode_frame(Bytes::from(v.hex.0.clone()));
        assert_eq!(
            direct.as_ref(),
            Ok(&expected),
            "{} (decode_frame)",
            v.description
        );
    }
}

#[test]
fn valid_vectors_encode_to_their_hex() {
    let file = load::<ValidVector>("valid.json");
    for v in exact_vectors(&file) {
        let encoded = v.frame.to_frame().to_bytes();
        assert_eq!(
            hex::encode(&encoded),
            hex::encode(&v.hex.0),
            "{}",
            v.description
        );
    }
}

/// `Events` compares its encoded entries, so also check the entries one by one as decoded.
#[test]
fn valid_events_vectors_iterate_their_entries() {
    let file = load::<ValidVector>("valid.json");
    for v in &file.vectors {
        let FrameJson::Events { events, stream, .. } = &v.frame else {
            continue;
        };
        let Ok(Frame::Events(decoded)) = decode_frame(Bytes::from(v.hex.0.clone())) else {
            panic!("{}: does not decode to EVENTS", v.description);
        };
        let want: Vec<Event> = events.iter().map(EventJson::to_event).collect();
        assert_eq!(
            decoded.iter().collect::<Vec<_>>(),
            want,
            "{}",
            v.description
        );
        assert_eq!(decoded.len(), want.len(), "{}", v.description);
        assert_eq!(decoded.stream(), stream.0, "{}", v.description);
    }
}

/// Decodes an EVENTS_ZSTD vector, whole and in pieces, and checks its fields and its entries
/// after decompression.
#[test]
fn valid_compressed_vectors_decode_to_their_entries() {
    let file = load::<ValidVector>("valid.json");
    let mut checked = 0;
    for v in &file.vectors {
        let FrameJson::EventsZstd {
            topic: name,
            stream,
            raw_len,
            events,
        } = &v.frame
        else {
            continue;
        };
        checked += 1;
        let want = Events::new(
            topic(name),
            stream.0,
            &events.iter().map(EventJson::to_event).collect::<Vec<_>>(),
        );
        let max_frame = v.max_frame.unwrap_or(DEFAULT_MAX_FRAME);
        for piece in piece_sizes(v.hex.0.len()) {
            let context = format!("{} (pieces of {piece})", v.description);
            let StreamOutcome::Frames(frames) = decode_stream(&v.hex.0, max_frame, piece) else {
                panic!("{context}: does not decode");
            };
            assert_eq!(frames.len(), 1, "{context}");
            let Frame::EventsZstd(decoded) = &frames[0] else {
                panic!("{context}: decodes to {:?}", frames[0]);
            };
            assert_eq!(decoded.raw_len(), *raw_len, "{context}");
            assert_eq!(decoded.events(), &want, "{context}");
            // The decoded frame keeps the received zstd bytes, so it encodes back to them.
            assert_eq!(
                hex::encode(frames[0].to_bytes()),
                hex::encode(&v.hex.0),
                "{context}"
            );
        }
    }
    assert!(checked > 0, "valid.json has no EVENTS_ZSTD vector");
}

#[test]
fn valid_vectors_cover_every_frame_type() {
    let file = load::<ValidVector>("valid.json");
    let mut kinds: Vec<u8> = file
        .vectors
        .iter()
        .map(|v| match v.frame.is_compressed() {
            true => kind::EVENTS_ZSTD,
            false => v.frame.to_frame().kind(),
        })
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        (kind::HELLO..=kind::EVENTS_ZSTD).collect::<Vec<u8>>()
    );
}

/// Every named code appears in a valid ERROR, PUBLISH_ACK or MODERATE_ACK vector. Codes 23 to
/// 28 travel only in acknowledgements, so their vectors are PUBLISH_ACK and MODERATE_ACK frames.
#[test]
fn valid_vectors_cover_every_error_code() {
    let file = load::<ValidVector>("valid.json");
    let mut codes: Vec<u16> = exact_vectors(&file)
        .filter_map(|v| match v.frame.to_frame() {
            Frame::Error(e) => Some(e.code.as_u16()),
            Frame::PublishAck(ack) => Some(ack.code.as_u16()),
            Frame::ModerateAck(ack) => Some(ack.code.as_u16()),
            _ => None,
        })
        .filter(|&code| code <= LAST_NAMED_CODE)
        .collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes, (0..=LAST_NAMED_CODE).collect::<Vec<u16>>());
}

#[test]
fn invalid_vectors_fail_with_their_error() {
    let file = load::<InvalidVector>("invalid.json");
    for v in &file.vectors {
        let max_frame = v.max_frame.unwrap_or(DEFAULT_MAX_FRAME);
        for piece in piece_sizes(v.hex.0.len()) {
            let outcome = decode_stream(&v.hex.0, max_frame, piece);
            let context = format!("{} (pieces of {piece}): {outcome:?}", v.description);
            match outcome {
                // The decoder waits for the rest of a frame that never comes; the connection
                // layer reports that as TRUNCATED_FRAME when the stream closes.
                StreamOutcome::Truncated { left, .. } => {
                    assert_eq!(v.error, "TRUNCATED_FRAME", "{context}");
                    assert!(left > 0, "{context}");
                }
                StreamOutcome::Failed { code, .. } => {
                    assert_eq!(code.name(), v.error, "{context}");
                }
                StreamOutcome::Frames(_) => panic!("{context}: decoded without an error"),
            }
        }
    }
}

/// Every complete invalid frame fails in `decode_frame` too, with the same code, except where
/// the length check comes first (oversized) or no complete frame is present (truncated).
#[test]
fn invalid_single_frames_fail_in_decode_frame() {
    let file = load::<InvalidVector>("invalid.json");
    let stream_level = ["TRUNCATED_FRAME", "FRAME_TOO_LARGE"];
    for v in file
        .vectors
        .iter()
        .filter(|v| !stream_level.contains(&v.error.as_str()))
    {
        let result = decode_frame(Bytes::from(v.hex.0.clone()));
        let code = result.as_ref().map_err(|e| e.code());
        assert_eq!(
            code.err().map(ErrorCode::name),
            Some(v.error.as_str()),
            "{}",
            v.description
        );
    }
}

#[test]
fn invalid_vectors_name_only_specified_codes() {
    let file = load::<InvalidVector>("invalid.json");
    for v in &file.vectors {
        assert_ne!(code_by_name(&v.error), ErrorCode::Ok, "{}", v.description);
    }
}

#[test]
fn preamble_vectors_give_their_result() {
    let file = load::<PreambleVector>("preamble.json");
    for v in &file.vectors {
        let results = [v.version.is_some(), v.error.is_some(), v.incomplete];
        let count = results.iter().filter(|&&set| set).count();
        assert_eq!(
            count, 1,
            "{}: set exactly one of version, error, incomplete",
            v.description
        );

        for piece in piece_sizes(v.hex.0.len()) {
            check_preamble(v, piece);
        }
    }
}

/// Feeds a preamble vector in pieces and checks the first result that is not a wait.
fn check_preamble(v: &PreambleVector, piece: usize) {
    let context = format!("{} (pieces of {piece})", v.description);
    let mut buf = BytesMut::new();
    let mut chunks = v.hex.0.chunks(piece.max(1));
    let result = loop {
        let waiting = decode_preamble(&mut buf);
        if !matches!(waiting, Ok(None)) {
            break waiting;
        }
        match chunks.next() {
            Some(chunk) => buf.extend_from_slice(chunk),
            None => break waiting,
        }
    };
    match result {
        Ok(Some(version)) => {
            assert_eq!(Some(version), v.version, "{context}");
            // The preamble is removed and nothing else: bytes after it stay for the decoder.
            chunks.for_each(|chunk| buf.extend_from_slice(chunk));
            assert_eq!(
                &buf[..],
                &v.hex.0[chorus_protocol::PREAMBLE_LEN..],
                "{context}"
            );
        }
        Ok(None) => assert!(v.incomplete, "{context}: decoder still waits"),
        Err(e) => assert_eq!(Some(e.code().name()), v.error.as_deref(), "{context}"),
    }
}

/// Rows of the first Markdown table in `section` whose first cell is a number.
fn numbered_rows(spec: &str, section: &str) -> Vec<(String, String)> {
    let start = spec
        .find(section)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no section {section:?}"));
    spec[start..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let number = cells.get(1)?.trim_matches('`');
            let name = cells.get(2)?.trim_matches('`');
            number
                .starts_with(|c: char| c.is_ascii_digit())
                .then(|| (number.into(), name.into()))
        })
        .collect()
}

fn read_spec() -> String {
    let path = spec_dir().join("PROTOCOL.md");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn spec_error_table_matches_codes() {
    let rows = numbered_rows(&read_spec(), "## Error codes");
    let want: Vec<(String, String)> = (0..=LAST_NAMED_CODE)
        .map(|value| {
            (
                value.to_string(),
                ErrorCode::from_u16(value).name().to_owned(),
            )
        })
        .collect();
    assert_eq!(rows, want);
}

#[test]
fn spec_frame_type_table_matches_kinds() {
    let rows = numbered_rows(&read_spec(), "## Frame types");
    let want: Vec<(String, String)> = [
        (kind::HELLO, "HELLO"),
        (kind::WELCOME, "WELCOME"),
        (kind::SUBSCRIBE, "SUBSCRIBE"),
        (kind::SUBSCRIBED, "SUBSCRIBED"),
        (kind::UNSUBSCRIBE, "UNSUBSCRIBE"),
        (kind::PUBLISH, "PUBLISH"),
        (kind::PUBLISH_ACK, "PUBLISH_ACK"),
        (kind::EVENTS, "EVENTS"),
        (kind::PING, "PING"),
        (kind::PONG, "PONG"),
        (kind::ERROR, "ERROR"),
        (kind::MODERATE, "MODERATE"),
        (kind::MODERATE_ACK, "MODERATE_ACK"),
        (kind::REACT, "REACT"),
        (kind::CAP, "CAP"),
        (kind::SKIPPED, "SKIPPED"),
        (kind::AUDIENCE, "AUDIENCE"),
        (kind::RELAY_PUBLISH, "RELAY_PUBLISH"),
        (kind::EVENTS_ZSTD, "EVENTS_ZSTD"),
    ]
    .iter()
    .map(|(byte, name)| (format!("0x{byte:02x}"), (*name).to_owned()))
    .collect();
    assert_eq!(rows, want);
}
