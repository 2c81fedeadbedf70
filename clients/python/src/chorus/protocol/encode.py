"""Frame encoding.

Every function checks its values before it writes them, so a value that does not fit its field
raises :class:`~chorus.protocol.errors.MalformedFrame` (or ``InvalidTopic`` for a topic) instead
of producing bytes that a receiver would reject.
"""

from __future__ import annotations

import struct
import zlib
from typing import Callable, Dict, List, Type

from .errors import FrameTooLarge, MalformedFrame
from .frames import (
    MAX_REACTION_KIND,
    Audience,
    Ban,
    Cap,
    DeleteComment,
    ErrorFrame,
    Events,
    EventsZstd,
    Frame,
    Hello,
    Moderate,
    ModerateAck,
    Ping,
    Pong,
    Publish,
    PublishAck,
    React,
    RelayPublish,
    Skipped,
    SlowMode,
    Subscribe,
    Subscribed,
    Unban,
    Unsubscribe,
    Welcome,
)
from .topic import validate_topic

_HEADER_START = struct.Struct(">IBBH")
_U32 = struct.Struct(">I")
_MAX_BODY = (1 << 32) - 1


class _Writer:
    """Collects the encoded fields of one body."""

    def __init__(self) -> None:
        self.parts: List[bytes] = []

    def uint(self, value: int, size: int, field: str) -> None:
        if not isinstance(value, int) or not 0 <= value < (1 << (8 * size)):
            raise MalformedFrame(f"{field} {value!r} does not fit an unsigned {8 * size}-bit field")
        self.parts.append(value.to_bytes(size, "big"))

    def boolean(self, value: bool, field: str) -> None:
        if not isinstance(value, bool):
            raise MalformedFrame(f"{field} must be a bool, not {type(value).__name__}")
        self.parts.append(b"\x01" if value else b"\x00")

    def text(self, value: str, prefix: int, field: str) -> None:
        self.prefixed(_utf8(value, field), prefix, field)

    def topic(self, value: str) -> None:
        self.prefixed(validate_topic(value).encode("ascii"), 1, "topic")

    def prefixed(self, raw: bytes, prefix: int, field: str) -> None:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise MalformedFrame(f"{field} must be bytes, not {type(raw).__name__}")
        limit = (1 << (8 * prefix)) - 1
        if len(raw) > limit:
            raise MalformedFrame(f"{field} is {len(raw)} bytes long, the maximum is {limit}")
        self.parts.append(len(raw).to_bytes(prefix, "big"))
        self.parts.append(bytes(raw))

    def body(self) -> bytes:
        return b"".join(self.parts)


def _utf8(value: str, field: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedFrame(f"{field} must be a str, not {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedFrame(f"{field} {value!r} is not valid Unicode") from None


def _hello(w: _Writer, f: Hello) -> None:
    w.uint(f.version, 2, "version")
    w.uint(f.max_frame, 4, "max_frame")
    w.text(f.client_name, 1, "client_name")
    w.text(f.token, 2, "token")
    if f.features:
        w.uint(f.features, 4, "features")


def _welcome(w: _Writer, f: Welcome) -> None:
    w.uint(f.version, 2, "version")
    w.uint(f.max_frame, 4, "max_frame")
    w.text(f.server_name, 1, "server_name")
    w.uint(f.max_payload, 4, "max_payload")
    w.uint(f.idle_timeout_ms, 4, "idle_timeout_ms")
    if f.features:
        w.uint(f.features, 4, "features")


def _subscribe(w: _Writer, f: Subscribe) -> None:
    w.topic(f.topic)
    mode = getattr(f.start, "mode", None)
    if not isinstance(mode, int):
        raise MalformedFrame(
            f"start must be Latest, Offset, Last, Earliest or Since, not {f.start!r}"
        )
    w.uint(mode, 1, "start_mode")
    w.uint(f.start.value, 8, "start_value")
    w.uint(f.stream, 8, "stream")


def _subscribed(w: _Writer, f: Subscribed) -> None:
    w.topic(f.topic)
    w.uint(f.stream, 8, "stream")
    w.uint(f.start, 8, "start")
    w.uint(f.earliest, 8, "earliest")
    w.uint(f.end, 8, "end")


def _unsubscribe(w: _Writer, f: Unsubscribe) -> None:
    w.topic(f.topic)


def _publish(w: _Writer, f: Publish) -> None:
    w.uint(f.seq, 8, "seq")
    w.topic(f.topic)
    w.prefixed(f.payload, 4, "payload")


def _publish_ack(w: _Writer, f: PublishAck) -> None:
    w.uint(f.seq, 8, "seq")
    w.uint(f.code, 2, "code")
    w.uint(f.offset, 8, "offset")
    w.uint(f.stream, 8, "stream")


def _events(w: _Writer, f: Events) -> None:
    w.topic(f.topic)
    w.uint(f.stream, 8, "stream")
    w.uint(len(f.events), 4, "count")
    previous = -1
    for event in f.events:
        w.uint(event.offset, 8, "offset")
        if event.offset <= previous:
            raise MalformedFrame(
                f"entry offsets must increase strictly, {event.offset} follows {previous}"
            )
        previous = event.offset
        w.uint(event.time_us, 8, "time_us")
        w.uint(event.flags, 1, "flags")
        w.text(event.publisher, 1, "publisher")
        w.prefixed(event.payload, 4, "payload")


def _ping(w: _Writer, f: Ping) -> None:
    w.uint(f.nonce, 8, "nonce")


def _pong(w: _Writer, f: Pong) -> None:
    w.uint(f.nonce, 8, "nonce")


def _error(w: _Writer, f: ErrorFrame) -> None:
    w.uint(f.code, 2, "code")
    w.boolean(f.close, "close")
    w.text(f.topic, 1, "topic")
    w.text(f.message, 2, "message")


def _moderate(w: _Writer, f: Moderate) -> None:
    w.uint(f.seq, 8, "seq")
    action = f.action
    if isinstance(action, DeleteComment):
        _moderate_fields(w, 1, validate_topic(action.topic), action.offset, "", 0)
    elif isinstance(action, Ban):
        _ban_fields(w, action)
    elif isinstance(action, Unban):
        _require_user(action.user)
        _moderate_fields(w, 3, "", 0, action.user, 0)
    elif isinstance(action, SlowMode):
        _moderate_fields(w, 4, validate_topic(action.topic), 0, "", action.interval_ms)
    else:
        raise MalformedFrame(
            f"action must be DeleteComment, Ban, Unban or SlowMode, not {action!r}"
        )


def _ban_fields(w: _Writer, ban: Ban) -> None:
    _require_user(ban.user)
    topic = ban.purge_topic or ""
    if bool(topic) != (ban.purge_seconds != 0):
        raise MalformedFrame(
            "a ban takes both purge_topic and purge_seconds above 0, or neither; got "
            f"purge_topic {ban.purge_topic!r} and purge_seconds {ban.purge_seconds!r}"
        )
    _moderate_fields(w, 2, topic, 0, ban.user, ban.purge_seconds)


def _require_user(user: str) -> None:
    if user == "":
        raise MalformedFrame("user must not be empty")


def _moderate_fields(
    w: _Writer, action: int, topic: str, offset: int, user: str, value: int
) -> None:
    """Write the fields after ``seq``; an empty ``topic`` is written as an empty str8."""
    w.uint(action, 1, "action")
    if topic == "":
        w.prefixed(b"", 1, "topic")
    else:
        w.topic(topic)
    w.uint(offset, 8, "offset")
    w.text(user, 1, "user")
    w.uint(value, 8, "value")


def _moderate_ack(w: _Writer, f: ModerateAck) -> None:
    w.uint(f.seq, 8, "seq")
    w.uint(f.code, 2, "code")


def _react(w: _Writer, f: React) -> None:
    w.topic(f.topic)
    kind = _utf8(f.kind, "kind")
    if not 1 <= len(kind) <= MAX_REACTION_KIND:
        raise MalformedFrame(
            f"reaction kind {f.kind!r} is {len(kind)} bytes long, it must be 1 to "
            f"{MAX_REACTION_KIND}"
        )
    w.prefixed(kind, 1, "kind")
    if f.count == 0:
        raise MalformedFrame("reaction count must be at least 1, got 0")
    w.uint(f.count, 4, "count")


def _cap(w: _Writer, f: Cap) -> None:
    w.topic(f.topic)
    w.uint(f.max_per_sec, 4, "max_per_sec")


def _skipped(w: _Writer, f: Skipped) -> None:
    w.topic(f.topic)
    w.uint(f.count, 8, "count")
    w.uint(f.through, 8, "through")


def _audience(w: _Writer, f: Audience) -> None:
    w.uint(len(f.entries), 4, "count")
    for entry in f.entries:
        w.topic(entry.topic)
        w.uint(entry.viewers, 8, "viewers")


def _relay_publish(w: _Writer, f: RelayPublish) -> None:
    w.uint(f.seq, 8, "seq")
    w.topic(f.topic)
    _require_user(f.user)
    w.text(f.user, 1, "user")
    w.boolean(f.priority, "priority")
    w.prefixed(f.payload, 4, "payload")


def _events_zstd(w: _Writer, f: EventsZstd) -> None:
    # The zstd data is written as given: this codec decompresses but does not compress.
    w.topic(f.topic)
    w.uint(f.stream, 8, "stream")
    w.uint(len(f.events), 4, "count")
    w.uint(f.raw_len, 4, "raw_len")
    w.parts.append(bytes(f.data))


_BODY_WRITERS: Dict[Type[object], Callable[[_Writer, object], None]] = {
    Hello: _hello,  # type: ignore[dict-item]
    Welcome: _welcome,  # type: ignore[dict-item]
    Subscribe: _subscribe,  # type: ignore[dict-item]
    Subscribed: _subscribed,  # type: ignore[dict-item]
    Unsubscribe: _unsubscribe,  # type: ignore[dict-item]
    Publish: _publish,  # type: ignore[dict-item]
    PublishAck: _publish_ack,  # type: ignore[dict-item]
    Events: _events,  # type: ignore[dict-item]
    Ping: _ping,  # type: ignore[dict-item]
    Pong: _pong,  # type: ignore[dict-item]
    ErrorFrame: _error,  # type: ignore[dict-item]
    Moderate: _moderate,  # type: ignore[dict-item]
    ModerateAck: _moderate_ack,  # type: ignore[dict-item]
    React: _react,  # type: ignore[dict-item]
    Cap: _cap,  # type: ignore[dict-item]
    Skipped: _skipped,  # type: ignore[dict-item]
    Audience: _audience,  # type: ignore[dict-item]
    RelayPublish: _relay_publish,  # type: ignore[dict-item]
    EventsZstd: _events_zstd,  # type: ignore[dict-item]
}


def frame_bytes(frame_type: int, body: bytes) -> bytes:
    """Prefix ``body`` with a frame header of type ``frame_type``, flags 0 and its CRC.

    Raises :class:`~chorus.protocol.errors.FrameTooLarge` when the body does not fit the u32
    length field.
    """
    if len(body) > _MAX_BODY:
        raise FrameTooLarge(f"frame body of {len(body)} bytes does not fit the length field")
    start = _HEADER_START.pack(len(body), frame_type, 0, 0)
    crc = zlib.crc32(body, zlib.crc32(start))
    return start + _U32.pack(crc) + body


def encode(frame: Frame) -> bytes:
    """Encode ``frame`` into its header and body.

    Raises :class:`~chorus.protocol.errors.MalformedFrame` for a field value the wire format
    cannot carry and :class:`~chorus.protocol.errors.InvalidTopic` for a topic that breaks the
    naming rules. Strings are never cut to fit.
    """
    body_writer = _BODY_WRITERS.get(type(frame))
    if body_writer is None:
        raise MalformedFrame(f"{type(frame).__name__} is not a frame type")
    writer = _Writer()
    body_writer(writer, frame)
    return frame_bytes(frame.TYPE, writer.body())
