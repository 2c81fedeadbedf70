"""Unit and property tests of the codec beyond the shared vectors."""

from __future__ import annotations

import zlib
from typing import List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorus.protocol import (
    DEFAULT_MAX_FRAME,
    PREAMBLE,
    U64_MAX,
    Audience,
    AudienceEntry,
    BadCrc,
    BadPreamble,
    Ban,
    Cap,
    DeleteComment,
    Earliest,
    EntryFlag,
    ErrorCode,
    ErrorFrame,
    Event,
    Events,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    Hello,
    InvalidTopic,
    Last,
    Latest,
    MalformedFrame,
    Moderate,
    ModerateAck,
    ModerationAction,
    Offset,
    Ping,
    Pong,
    ProtocolError,
    Publish,
    PublishAck,
    React,
    RelayPublish,
    Since,
    Skipped,
    SlowMode,
    Subscribe,
    Subscribed,
    Unban,
    Unsubscribe,
    Welcome,
    decode_frame,
    encode,
    error_code,
    is_valid_topic,
    validate_topic,
)


def test_crc_is_crc32_ieee() -> None:
    assert zlib.crc32(b"123456789") == 0xCBF43926


@pytest.mark.parametrize(
    "name",
    ["live", "event/2026-final", "a/b/c.d_e-f", "x" * 64, "/".join(["y" * 63] * 4)],
)
def test_topic_accepts(name: str) -> None:
    assert validate_topic(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        ".hidden",
        "a/.b",
        "/abs",
        "a/",
        "a//b",
        "a b",
        "a+b",
        "a\\b",
        "café",
        "x" * 65,
        "/".join(["y" * 64] * 4),
        "\ud800",
    ],
)
def test_topic_rejects(name: str) -> None:
    with pytest.raises(InvalidTopic):
        validate_topic(name)


def test_topic_rejects_non_str() -> None:
    assert not is_valid_topic(b"live")  # type: ignore[arg-type]


def test_invalid_topic_has_spec_code() -> None:
    with pytest.raises(InvalidTopic) as raised:
        validate_topic("../x")
    assert raised.value.code == ErrorCode.INVALID_TOPIC


def test_encode_keeps_u64_max() -> None:
    frame = Subscribed("t", U64_MAX, U64_MAX, U64_MAX, U64_MAX)
    assert decode_frame(encode(frame))[0] == frame


@pytest.mark.parametrize("value", [-1, U64_MAX + 1, 2**70])
def test_encode_rejects_u64_out_of_range(value: int) -> None:
    with pytest.raises(MalformedFrame):
        encode(Ping(value))


def test_encode_rejects_non_integer() -> None:
    with pytest.raises(MalformedFrame):
        encode(Ping(1.5))  # type: ignore[arg-type]


def test_encode_rejects_long_str8() -> None:
    with pytest.raises(MalformedFrame):
        encode(Hello(1, DEFAULT_MAX_FRAME, "n" * 256, ""))


def test_encode_rejects_long_str16() -> None:
    with pytest.raises(MalformedFrame):
        encode(ErrorFrame(ErrorCode.TIMEOUT, True, "", "m" * 65_536))


def test_encode_rejects_lone_surrogate() -> None:
    with pytest.raises(MalformedFrame):
        encode(Hello(1, DEFAULT_MAX_FRAME, "\udc80", ""))


def test_encode_rejects_invalid_topic() -> None:
    with pytest.raises(InvalidTopic):
        encode(Publish(1, "../x", b""))


def test_encode_rejects_unordered_events() -> None:
    entries = [Event(5, 0, 0, "", b""), Event(5, 0, 0, "", b"")]
    with pytest.raises(MalformedFrame):
        encode(Events("t", 1, entries))


def test_encode_rejects_non_frame() -> None:
    with pytest.raises(MalformedFrame):
        encode("PING")  # type: ignore[arg-type]


def test_event_flags_read_as_properties() -> None:
    priority = Event(1, 0, EntryFlag.PRIORITY, "host", b"hi")
    assert priority.is_priority
    assert not priority.is_tombstone
    assert not priority.is_deleted
    assert priority.tombstone_target is None


def test_deleted_event_is_deleted() -> None:
    deleted = Event(5, 0, EntryFlag.DELETED, "u-81", b"")
    assert deleted.is_deleted
    assert not deleted.is_tombstone
    assert deleted.tombstone_target is None


def test_tombstone_names_its_target() -> None:
    tombstone = Event(9, 0, EntryFlag.TOMBSTONE, "mod-3", (1042).to_bytes(8, "big"))
    assert tombstone.is_tombstone
    assert tombstone.tombstone_target == 1042


def test_tombstone_target_keeps_u64_max() -> None:
    tombstone = Event(9, 0, EntryFlag.TOMBSTONE, "m", U64_MAX.to_bytes(8, "big"))
    assert tombstone.tombstone_target == U64_MAX


def test_tombstone_with_short_payload_has_no_target() -> None:
    assert Event(9, 0, EntryFlag.TOMBSTONE, "m", b"\x00" * 7).tombstone_target is None


def test_unknown_flag_bits_are_ignored() -> None:
    event = Event(1, 0, 0xF8, "", b"x")
    assert not event.is_priority
    assert not event.is_tombstone
    assert not event.is_deleted


@pytest.mark.parametrize(
    "action",
    [
        Ban("u-81", "live/final", 0),
        Ban("u-81", None, 300),
        Ban(""),
        Unban(""),
        DeleteComment("", 5),
        SlowMode("", 1000),
    ],
    ids=repr,
)
def test_encode_rejects_action_outside_table(action: ModerationAction) -> None:
    with pytest.raises((MalformedFrame, InvalidTopic)):
        encode(Moderate(1, action))


def test_encode_rejects_unknown_action() -> None:
    with pytest.raises(MalformedFrame):
        encode(Moderate(1, "delete"))  # type: ignore[arg-type]


def test_ban_with_empty_purge_topic_is_plain_ban() -> None:
    assert encode(Moderate(1, Ban("u", "", 0))) == encode(Moderate(1, Ban("u")))


@pytest.mark.parametrize("kind", ["", "k" * 33, "\u00e9" * 17])
def test_encode_rejects_reaction_kind_length(kind: str) -> None:
    with pytest.raises(MalformedFrame):
        encode(React("t", kind, 1))


def test_encode_accepts_32_byte_reaction_kind() -> None:
    frame = React("t", "\u00e9" * 16, 1)
    assert decode_frame(encode(frame))[0] == frame


def test_encode_rejects_zero_reactions() -> None:
    with pytest.raises(MalformedFrame):
        encode(React("t", "heart", 0))


def test_encode_rejects_relay_publish_without_user() -> None:
    with pytest.raises(MalformedFrame):
        encode(RelayPublish(1, "t", "", False, b"x"))


def test_audience_compares_equal_from_list_or_tuple() -> None:
    entries = [AudienceEntry("t", 1)]
    assert Audience(entries) == Audience(tuple(entries))


def test_unknown_error_code_stays_int() -> None:
    frame = ErrorFrame(999, False, "t", "?")
    decoded = decode_frame(encode(frame))[0]
    assert isinstance(decoded, ErrorFrame)
    assert decoded.code == 999
    assert not isinstance(decoded.code, ErrorCode)


def test_known_error_code_becomes_member() -> None:
    assert error_code(12) is ErrorCode.SLOW_CONSUMER


def test_events_compare_equal_from_list_or_tuple() -> None:
    entry = Event(1, 2, 0, "p", b"x")
    assert Events("t", 1, [entry]) == Events("t", 1, (entry,))


def test_decoder_error_is_sticky() -> None:
    data = bytearray(encode(Ping(1)))
    data[-1] ^= 1
    decoder = FrameDecoder()
    decoder.feed(bytes(data))
    with pytest.raises(BadCrc):
        decoder.next_frame()
    with pytest.raises(BadCrc):
        decoder.feed(encode(Ping(2)))
    with pytest.raises(BadCrc):
        decoder.next_frame()


def test_decoder_does_not_buffer_oversized_frame() -> None:
    decoder = FrameDecoder(max_frame=64)
    decoder.feed((65).to_bytes(4, "big") + b"\x09\x00\x00\x00" + bytes(1000))
    decoder.feed(bytes(1000))
    assert decoder.buffered == 4


def test_decoder_rejects_oversized_after_length_bytes() -> None:
    decoder = FrameDecoder(max_frame=64)
    decoder.feed((65).to_bytes(4, "big"))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


def test_decoder_returns_frames_before_oversized_one() -> None:
    decoder = FrameDecoder(max_frame=64)
    decoder.feed(encode(Ping(7)) + (1000).to_bytes(4, "big"))
    assert decoder.next_frame() == Ping(7)
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


def test_decoder_accepts_body_of_exactly_max() -> None:
    decoder = FrameDecoder(max_frame=8)
    decoder.feed(encode(Pong(3)))
    assert decoder.next_frame() == Pong(3)


def test_decoder_reads_preamble_then_frames() -> None:
    decoder = FrameDecoder(expect_preamble=True)
    decoder.feed(PREAMBLE + encode(Ping(9)))
    assert decoder.next_frame() == Ping(9)
    assert decoder.version == 1


def test_decoder_rejects_frame_without_preamble() -> None:
    decoder = FrameDecoder(expect_preamble=True)
    decoder.feed(encode(Ping(9)))
    with pytest.raises(BadPreamble):
        decoder.next_frame()


def test_decoder_clean_end_between_frames() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode(Ping(1)))
    assert list(decoder) == [Ping(1)]
    decoder.end_of_stream()


def test_decoder_handles_many_frames_across_compaction() -> None:
    frames: List[Frame] = [Publish(i, "t", bytes(100)) for i in range(2000)]
    data = b"".join(encode(f) for f in frames)
    decoder = FrameDecoder()
    decoded: List[Frame] = []
    for i in range(0, len(data), 4093):
        decoder.feed(data[i : i + 4093])
        decoded.extend(decoder)
    assert decoded == frames


# Property tests: random frames round-trip, and random or damaged bytes raise only
# ProtocolError subclasses.

u64 = st.integers(0, U64_MAX)
u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)
segment = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,20}", fullmatch=True)
topics = st.lists(segment, min_size=1, max_size=4).map("/".join)
text8 = st.text(max_size=40)
start_at = st.one_of(
    st.just(Latest()),
    st.just(Earliest()),
    u64.map(Offset),
    u64.map(Last),
    u64.map(Since),
)


@st.composite
def event_batches(draw: st.DrawFn) -> Events:
    offsets = sorted(draw(st.sets(u64, max_size=5)))
    entries = [
        Event(o, draw(u64), draw(st.integers(0, 255)), draw(text8), draw(st.binary(max_size=50)))
        for o in offsets
    ]
    return Events(draw(topics), draw(u64), entries)


user_ids = st.text(min_size=1, max_size=40)
moderation_actions = st.one_of(
    st.builds(DeleteComment, topics, u64),
    st.builds(Ban, user_ids),
    st.builds(Ban, user_ids, topics, st.integers(1, U64_MAX)),
    st.builds(Unban, user_ids),
    st.builds(SlowMode, topics, u64),
)
# Up to 8 characters of at most 4 UTF-8 bytes each, so a kind never exceeds 32 bytes.
reaction_kinds = st.text(min_size=1, max_size=8)

frames = st.one_of(
    st.builds(Hello, u16, u32, text8, st.text(max_size=300)),
    st.builds(Welcome, u16, u32, text8, u32, u32),
    st.builds(Subscribe, topics, start_at, u64),
    st.builds(Subscribed, topics, u64, u64, u64, u64),
    st.builds(Unsubscribe, topics),
    st.builds(Publish, u64, topics, st.binary(max_size=200)),
    st.builds(PublishAck, u64, u16.map(error_code), u64, u64),
    event_batches(),
    st.builds(Ping, u64),
    st.builds(Pong, u64),
    st.builds(ErrorFrame, u16.map(error_code), st.booleans(), text8, st.text(max_size=300)),
    st.builds(Moderate, u64, moderation_actions),
    st.builds(ModerateAck, u64, u16.map(error_code)),
    st.builds(React, topics, reaction_kinds, st.integers(1, 2**32 - 1)),
    st.builds(Cap, topics, u32),
    st.builds(Skipped, topics, u64, u64),
    st.builds(Audience, st.lists(st.builds(AudienceEntry, topics, u64), max_size=5)),
    st.builds(RelayPublish, u64, topics, user_ids, st.booleans(), st.binary(max_size=100)),
)


@given(frames)
def test_any_frame_round_trips(frame: Frame) -> None:
    data = encode(frame)
    assert decode_frame(data, max_frame=len(data)) == (frame, len(data))


@given(st.lists(frames, min_size=1, max_size=5), st.integers(1, 64))
def test_frame_stream_round_trips_in_pieces(sent: List[Frame], piece: int) -> None:
    data = b"".join(encode(f) for f in sent)
    decoder = FrameDecoder()
    received: List[Frame] = []
    for i in range(0, len(data), piece):
        decoder.feed(data[i : i + piece])
        received.extend(decoder)
    assert received == sent


def drain(decoder: FrameDecoder, data: bytes, piece: int) -> None:
    for i in range(0, len(data), piece):
        decoder.feed(data[i : i + piece])
        for _ in decoder:
            pass
    decoder.end_of_stream()


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(1, 32), st.booleans())
def test_random_bytes_raise_only_protocol_errors(data: bytes, piece: int, preamble: bool) -> None:
    decoder = FrameDecoder(max_frame=256, expect_preamble=preamble)
    try:
        drain(decoder, data, piece)
    except ProtocolError:
        pass


@settings(max_examples=300)
@given(frames, st.data())
def test_damaged_frames_raise_only_protocol_errors(frame: Frame, data: st.DataObject) -> None:
    raw = bytearray(encode(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    decoder = FrameDecoder()
    try:
        drain(decoder, bytes(raw[:cut]), 7)
    except ProtocolError:
        pass


@settings(max_examples=300)
@given(frames, st.data())
def test_damaged_body_with_valid_crc(frame: Frame, data: st.DataObject) -> None:
    # Fixing the CRC after the damage gets the bytes past the CRC check into the field parsers.
    raw = bytearray(encode(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(4, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    raw[8:12] = zlib.crc32(bytes(raw[12:]), zlib.crc32(bytes(raw[:8]))).to_bytes(4, "big")
    decoder = FrameDecoder()
    try:
        drain(decoder, bytes(raw), len(raw))
    except ProtocolError:
        pass
