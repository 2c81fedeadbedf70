"""Conformance with the shared test vectors in spec/vectors.

Every vector is checked in both directions. Valid frames decode to their fields and encode to
their bytes, whole and in pieces. Invalid byte streams fail with the expected error code, and
truncated ones leave the decoder waiting. Preambles are accepted, rejected or awaited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from chorus.protocol import (
    Audience,
    AudienceEntry,
    Ban,
    Cap,
    DeleteComment,
    Earliest,
    ErrorCode,
    ErrorFrame,
    Event,
    Events,
    EventsZstd,
    Frame,
    FrameDecoder,
    FrameType,
    Hello,
    Last,
    Latest,
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
    StartAt,
    Subscribe,
    Subscribed,
    TruncatedFrame,
    Unban,
    Unsubscribe,
    Welcome,
    decode_frame,
    encode,
    parse_preamble,
)

VECTORS = Path(__file__).resolve().parent / ".." / ".." / ".." / "spec" / "vectors"

Vector = Dict[str, Any]


def load(name: str) -> Dict[str, Any]:
    with open(VECTORS / name, encoding="utf-8") as f:
        data: Dict[str, Any] = json.load(f)
    return data


VALID = load("valid.json")
INVALID = load("invalid.json")
PREAMBLES = load("preamble.json")


def params(file: Dict[str, Any]) -> List[Any]:
    return [pytest.param(v, id=v["description"]) for v in file["vectors"]]


def max_frame(file: Dict[str, Any], vector: Vector) -> int:
    value = vector.get("max_frame", file.get("default_max_frame"))
    assert isinstance(value, int)
    return value


def u64(value: Any) -> int:
    assert isinstance(value, str), f"u64 {value!r} must be a decimal string in the vectors"
    return int(value)


def code(value: Any) -> int:
    if isinstance(value, str):
        return ErrorCode[value]
    assert isinstance(value, int)
    return value


def start_at(value: Dict[str, Any]) -> StartAt:
    mode = value["mode"]
    if mode == "latest":
        return Latest()
    if mode == "earliest":
        return Earliest()
    if mode == "offset":
        return Offset(u64(value["value"]))
    if mode == "since":
        return Since(u64(value["value"]))
    assert mode == "last", mode
    return Last(u64(value["value"]))


def event(value: Dict[str, Any]) -> Event:
    return Event(
        offset=u64(value["offset"]),
        time_us=u64(value["time_us"]),
        flags=value["flags"],
        publisher=value["publisher"],
        payload=bytes.fromhex(value["payload"]),
    )


def moderation_action(f: Dict[str, Any]) -> ModerationAction:
    """Build the action of a MODERATE object from its wire fields, following the action table."""
    action, topic, offset, user, value = (
        f["action"],
        f["topic"],
        u64(f["offset"]),
        f["user"],
        u64(f["value"]),
    )
    if action == 1:
        assert (user, value) == ("", 0), f
        return DeleteComment(topic, offset)
    if action == 2:
        assert offset == 0, f
        return Ban(user, topic or None, value)
    if action == 3:
        assert (topic, offset, value) == ("", 0, 0), f
        return Unban(user)
    assert action == 4, f
    assert (offset, user) == (0, ""), f
    return SlowMode(topic, value)


def frame_from_json(f: Dict[str, Any]) -> Frame:
    """Build the frame that a valid.json ``frame`` object describes."""
    kind = f["type"]
    if kind == "HELLO":
        return Hello(
            f["version"], f["max_frame"], f["client_name"], f["token"], f.get("features", 0)
        )
    if kind == "WELCOME":
        return Welcome(
            f["version"],
            f["max_frame"],
            f["server_name"],
            f["max_payload"],
            f["idle_timeout_ms"],
            f.get("features", 0),
        )
    if kind == "SUBSCRIBE":
        return Subscribe(f["topic"], start_at(f["start"]), u64(f["stream"]))
    if kind == "SUBSCRIBED":
        return Subscribed(
            f["topic"], u64(f["stream"]), u64(f["start"]), u64(f["earliest"]), u64(f["end"])
        )
    if kind == "UNSUBSCRIBE":
        return Unsubscribe(f["topic"])
    if kind == "PUBLISH":
        return Publish(u64(f["seq"]), f["topic"], bytes.fromhex(f["payload"]))
    if kind == "PUBLISH_ACK":
        return PublishAck(u64(f["seq"]), code(f["code"]), u64(f["offset"]), u64(f["stream"]))
    if kind == "EVENTS":
        return Events(f["topic"], u64(f["stream"]), [event(e) for e in f["events"]])
    if kind == "EVENTS_ZSTD":
        # No zstd data: it takes no part in comparisons, and vectors give none.
        events = [event(e) for e in f["events"]]
        return EventsZstd(f["topic"], u64(f["stream"]), f["raw_len"], events)
    if kind == "PING":
        return Ping(u64(f["nonce"]))
    if kind == "PONG":
        return Pong(u64(f["nonce"]))
    if kind == "ERROR":
        return ErrorFrame(code(f["code"]), f["close"], f["topic"], f["message"])
    return relay_or_moderation_frame(f)


def relay_or_moderation_frame(f: Dict[str, Any]) -> Frame:
    """Build a frame of the types 0x0c to 0x12 from its valid.json object."""
    kind = f["type"]
    if kind == "MODERATE":
        return Moderate(u64(f["seq"]), moderation_action(f))
    if kind == "MODERATE_ACK":
        return ModerateAck(u64(f["seq"]), code(f["code"]))
    if kind == "REACT":
        return React(f["topic"], f["kind"], f["count"])
    if kind == "CAP":
        return Cap(f["topic"], f["max_per_sec"])
    if kind == "SKIPPED":
        return Skipped(f["topic"], u64(f["count"]), u64(f["through"]))
    if kind == "AUDIENCE":
        entries = [AudienceEntry(e["topic"], u64(e["viewers"])) for e in f["entries"]]
        return Audience(entries)
    assert kind == "RELAY_PUBLISH", kind
    return RelayPublish(
        u64(f["seq"]), f["topic"], f["user"], f["priority"], bytes.fromhex(f["payload"])
    )


def decode_in_pieces(data: bytes, size: int, limit: int) -> List[Frame]:
    decoder = FrameDecoder(limit)
    frames: List[Frame] = []
    for i in range(0, len(data), size):
        decoder.feed(data[i : i + size])
        frames.extend(decoder)
    assert decoder.buffered == 0
    return frames


def first_failure(data: bytes, limit: int, piece: Optional[int] = None) -> Optional[ProtocolError]:
    """Feed ``data`` (whole, or in pieces of ``piece`` bytes) and return the first error.

    Returns None when every byte was accepted, with or without a frame left incomplete.
    """
    decoder = FrameDecoder(limit)
    size = piece or max(len(data), 1)
    try:
        for i in range(0, len(data), size):
            decoder.feed(data[i : i + size])
            for _ in decoder:
                pass
        decoder.end_of_stream()
    except ProtocolError as e:
        return e
    return None


def test_vector_files_cover_every_frame_type() -> None:
    kinds = {v["frame"]["type"] for v in VALID["vectors"]}
    assert kinds == {t.name for t in FrameType}


def test_vector_files_cover_every_error_code() -> None:
    frames = [frame_from_json(v["frame"]) for v in VALID["vectors"]]
    codes = {f.code for f in frames if isinstance(f, (ErrorFrame, PublishAck, ModerateAck))}
    assert set(ErrorCode) <= codes


def test_vector_files_cover_every_moderation_action() -> None:
    actions = {v["frame"]["action"] for v in VALID["vectors"] if v["frame"]["type"] == "MODERATE"}
    assert actions == {1, 2, 3, 4}


@pytest.mark.parametrize("vector", params(VALID))
def test_valid_vector_decodes(vector: Vector) -> None:
    data = bytes.fromhex(vector["hex"])
    decoder = FrameDecoder(max_frame(VALID, vector))
    decoder.feed(data)
    assert decoder.next_frame() == frame_from_json(vector["frame"])
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


def exact_params(file: Dict[str, Any]) -> List[Any]:
    """Valid vectors with exactly one encoding: every type but EVENTS_ZSTD, whose zstd data
    differs between encoders."""
    return [p for p in params(file) if p.values[0]["frame"]["type"] != "EVENTS_ZSTD"]


@pytest.mark.parametrize("vector", exact_params(VALID))
def test_valid_vector_encodes(vector: Vector) -> None:
    assert encode(frame_from_json(vector["frame"])).hex() == vector["hex"]


@pytest.mark.parametrize(
    "vector", [p for p in params(VALID) if p.values[0]["frame"]["type"] == "EVENTS_ZSTD"]
)
def test_compressed_vector_reencodes_its_data(vector: Vector) -> None:
    frame, _ = decode_frame(bytes.fromhex(vector["hex"]))
    assert encode(frame).hex() == vector["hex"]


@pytest.mark.parametrize("vector", params(VALID))
def test_valid_vector_decodes_whole_buffer(vector: Vector) -> None:
    data = bytes.fromhex(vector["hex"])
    frame, used = decode_frame(data, max_frame(VALID, vector))
    assert frame == frame_from_json(vector["frame"])
    assert used == len(data)


@pytest.mark.parametrize("piece", [1, 5, 13])
@pytest.mark.parametrize("vector", params(VALID))
def test_valid_vector_decodes_in_pieces(vector: Vector, piece: int) -> None:
    data = bytes.fromhex(vector["hex"])
    frames = decode_in_pieces(data, piece, max_frame(VALID, vector))
    assert frames == [frame_from_json(vector["frame"])]


def test_valid_vectors_decode_back_to_back() -> None:
    # Every frame that fits the default maximum, in one stream, as a server would send them.
    vectors = [v for v in VALID["vectors"] if "max_frame" not in v]
    data = b"".join(bytes.fromhex(v["hex"]) for v in vectors)
    frames = decode_in_pieces(data, 997, VALID["default_max_frame"])
    assert frames == [frame_from_json(v["frame"]) for v in vectors]


@pytest.mark.parametrize("vector", params(INVALID))
def test_invalid_vector_fails_with_its_code(vector: Vector) -> None:
    data = bytes.fromhex(vector["hex"])
    error = first_failure(data, max_frame(INVALID, vector))
    assert error is not None, "the decoder accepted every byte"
    assert error.code.name == vector["error"]


@pytest.mark.parametrize("vector", params(INVALID))
def test_invalid_vector_fails_byte_by_byte(vector: Vector) -> None:
    data = bytes.fromhex(vector["hex"])
    error = first_failure(data, max_frame(INVALID, vector), piece=1)
    assert error is not None, "the decoder accepted every byte"
    assert error.code.name == vector["error"]


@pytest.mark.parametrize(
    "vector", [p for p in params(INVALID) if p.values[0]["error"] == "TRUNCATED_FRAME"]
)
def test_truncated_vector_leaves_decoder_waiting(vector: Vector) -> None:
    decoder = FrameDecoder(max_frame(INVALID, vector))
    decoder.feed(bytes.fromhex(vector["hex"]))
    for _ in decoder:
        pass
    assert decoder.next_frame() is None
    assert decoder.buffered > 0
    with pytest.raises(TruncatedFrame):
        decoder.end_of_stream()


@pytest.mark.parametrize(
    "vector", [p for p in params(INVALID) if p.values[0]["error"] == "TRUNCATED_FRAME"]
)
def test_truncated_vector_fails_as_whole_buffer(vector: Vector) -> None:
    data = bytes.fromhex(vector["hex"])
    limit = max_frame(INVALID, vector)
    with pytest.raises(TruncatedFrame):
        while True:
            _, used = decode_frame(data, limit)
            data = data[used:]


@pytest.mark.parametrize("vector", params(PREAMBLES))
def test_preamble_vector(vector: Vector) -> None:
    data = bytes.fromhex(vector["hex"])
    decoder = FrameDecoder(expect_preamble=True)
    decoder.feed(data)
    if "version" in vector:
        assert decoder.read_preamble() == vector["version"]
        assert decoder.buffered == len(data) - 8
    elif "error" in vector:
        with pytest.raises(ProtocolError) as raised:
            decoder.read_preamble()
        assert raised.value.code.name == vector["error"]
    else:
        assert vector["incomplete"] is True
        assert decoder.read_preamble() is None
        assert decoder.buffered == len(data)


@pytest.mark.parametrize(
    "vector", [p for p in params(PREAMBLES) if p.values[0].get("error") == "BAD_PREAMBLE"]
)
def test_bad_magic_fails_at_first_wrong_byte(vector: Vector) -> None:
    data = bytes.fromhex(vector["hex"])
    wrong = next(i for i, byte in enumerate(data) if byte != b"CHORUS"[i])
    assert parse_preamble(data[:wrong]) is None
    with pytest.raises(ProtocolError) as raised:
        parse_preamble(data[: wrong + 1])
    assert raised.value.code == ErrorCode.BAD_PREAMBLE


def test_worked_example_publish_matches_spec() -> None:
    expected = "0000001c06000000338565fa00000000000000010a6c6976652f66696e616c00000005474f414c21"
    assert encode(Publish(1, "live/final", b"GOAL!")).hex() == expected


def test_worked_example_events_matches_spec() -> None:
    expected = (
        "00000036080000002b7ebb520a6c6976652f66696e616c0000000000000007000000010000000000000412"
        "000652e68bb340000004752d383100000005474f414c21"
    )
    comment = Event(1042, 1_780_000_000_000_000, 0, "u-81", b"GOAL!")
    assert encode(Events("live/final", 7, [comment])).hex() == expected
