"""Frame and preamble decoding, whole or incremental.

Checks run in the order the specification fixes. The length is checked against the maximum as
soon as its 4 bytes arrive. Once the whole frame is there, the CRC comes next, then the flags
byte, the reserved bytes, the type byte, the body's fields in wire order and finally any bytes
left over. The first failed check raises its :class:`~chorus.protocol.errors.ProtocolError`
subclass, and no other exception escapes on bad bytes.
"""

from __future__ import annotations

import struct
import zlib
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from .errors import (
    BadCrc,
    BadPreamble,
    FrameTooLarge,
    InvalidTopic,
    MalformedFrame,
    ProtocolError,
    TruncatedFrame,
    UnknownFrameType,
    UnsupportedVersion,
    error_code,
)
from .frames import (
    DEFAULT_MAX_FRAME,
    HEADER_LEN,
    MAGIC,
    MAX_REACTION_KIND,
    PREAMBLE,
    VERSION,
    Audience,
    AudienceEntry,
    Ban,
    Cap,
    DeleteComment,
    Earliest,
    ErrorFrame,
    Event,
    Events,
    EventsZstd,
    Frame,
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
    Unban,
    Unsubscribe,
    Welcome,
)
from .topic import topic_problem

_HEADER = struct.Struct(">IBBHI")
_LENGTH = struct.Struct(">I")

# Consumed bytes are dropped from the decoder's buffer once this many have piled up, so that
# feeding many small frames does not cost a copy of the buffer per frame.
_COMPACT_AFTER = 64 * 1024


class _Reader:
    """Reads the fields of one frame body in order."""

    __slots__ = ("_body", "_pos")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._pos = 0

    def take(self, size: int, field: str) -> bytes:
        end = self._pos + size
        if end > len(self._body):
            missing = end - len(self._body)
            raise MalformedFrame(f"body ends {missing} bytes before the end of {field}")
        chunk = self._body[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def boolean(self, field: str) -> bool:
        value = self.uint(1, field)
        if value > 1:
            raise MalformedFrame(f"{field} is 0x{value:02x}, a bool must be 0x00 or 0x01")
        return value == 1

    def text(self, prefix: int, field: str) -> str:
        raw = self.blob(prefix, field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedFrame(f"{field} is not valid UTF-8: {e.reason}") from None

    def blob(self, prefix: int, field: str) -> bytes:
        size = self.uint(prefix, f"{field} length")
        return self.take(size, field)

    def topic(self) -> str:
        raw = self.blob(1, "topic")
        problem = topic_problem(raw)
        if problem is not None:
            raise InvalidTopic(problem)
        return raw.decode("ascii")

    def optional_topic(self, field: str) -> str:
        """Read a str8 that is empty or a valid topic name."""
        raw = self.blob(1, field)
        if not raw:
            return ""
        problem = topic_problem(raw)
        if problem is not None:
            raise InvalidTopic(problem)
        return raw.decode("ascii")

    def optional_u32(self, field: str) -> int:
        """Read a trailing u32 that older peers leave out: 0 when the body has ended."""
        if self.remaining == 0:
            return 0
        return self.uint(4, field)

    @property
    def remaining(self) -> int:
        return len(self._body) - self._pos

    def finish(self) -> None:
        left = len(self._body) - self._pos
        if left:
            raise MalformedFrame(f"{left} bytes after the last field")


def _hello(r: _Reader) -> Hello:
    return Hello(
        version=r.uint(2, "version"),
        max_frame=r.uint(4, "max_frame"),
        client_name=r.text(1, "client_name"),
        token=r.text(2, "token"),
        features=r.optional_u32("features"),
    )


def _welcome(r: _Reader) -> Welcome:
    return Welcome(
        version=r.uint(2, "version"),
        max_frame=r.uint(4, "max_frame"),
        server_name=r.text(1, "server_name"),
        max_payload=r.uint(4, "max_payload"),
        idle_timeout_ms=r.uint(4, "idle_timeout_ms"),
        features=r.optional_u32("features"),
    )


def _start_at(r: _Reader) -> StartAt:
    mode = r.uint(1, "start_mode")
    if mode > 4:
        raise MalformedFrame(f"start_mode {mode} is not defined, the modes are 0 to 4")
    value = r.uint(8, "start_value")
    if mode == 1:
        return Offset(value)
    if mode == 2:
        return Last(value)
    if mode == 4:
        return Since(value)
    if value != 0:
        raise MalformedFrame(f"start_mode {mode} requires start_value 0, got {value}")
    return Latest() if mode == 0 else Earliest()


def _subscribe(r: _Reader) -> Subscribe:
    topic = r.topic()
    start = _start_at(r)
    return Subscribe(topic, start, r.uint(8, "stream"))


def _subscribed(r: _Reader) -> Subscribed:
    return Subscribed(
        topic=r.topic(),
        stream=r.uint(8, "stream"),
        start=r.uint(8, "start"),
        earliest=r.uint(8, "earliest"),
        end=r.uint(8, "end"),
    )


def _unsubscribe(r: _Reader) -> Unsubscribe:
    return Unsubscribe(r.topic())


def _publish(r: _Reader) -> Publish:
    return Publish(seq=r.uint(8, "seq"), topic=r.topic(), payload=r.blob(4, "payload"))


def _publish_ack(r: _Reader) -> PublishAck:
    return PublishAck(
        seq=r.uint(8, "seq"),
        code=error_code(r.uint(2, "code")),
        offset=r.uint(8, "offset"),
        stream=r.uint(8, "stream"),
    )


def _event(r: _Reader) -> Event:
    return Event(
        offset=r.uint(8, "entry offset"),
        time_us=r.uint(8, "entry time_us"),
        flags=r.uint(1, "entry flags"),
        publisher=r.text(1, "entry publisher"),
        payload=r.blob(4, "entry payload"),
    )


def _events(r: _Reader) -> Events:
    topic = r.topic()
    stream = r.uint(8, "stream")
    count = r.uint(4, "count")
    return Events(topic, stream, _entries(r, count))


def _entries(r: _Reader, count: int) -> List[Event]:
    # The count comes from the peer, so entries are read one by one rather than preallocated:
    # a count larger than the body allows fails on the first missing entry.
    entries: List[Event] = []
    for _ in range(count):
        event = _event(r)
        if entries and event.offset <= entries[-1].offset:
            raise MalformedFrame(
                f"entry offsets must increase strictly, {event.offset} follows {entries[-1].offset}"
            )
        entries.append(event)
    return entries


def _events_zstd(r: _Reader, max_frame: int) -> EventsZstd:
    topic = r.topic()
    stream = r.uint(8, "stream")
    count = r.uint(4, "count")
    raw_len = r.uint(4, "raw_len")
    if raw_len > max_frame:
        raise FrameTooLarge(
            f"EVENTS_ZSTD raw_len of {raw_len} bytes exceeds the maximum of {max_frame}"
        )
    data = r.take(r.remaining, "data")
    raw = _Reader(_decompress_exact(data, raw_len))
    entries = _entries(raw, count)
    raw.finish()
    return EventsZstd(topic, stream, raw_len, entries, data)


def _decompress_exact(data: bytes, raw_len: int) -> bytes:
    """Decompress ``data``, exactly one zstd frame, into exactly ``raw_len`` bytes.

    A frame header that announces another size is rejected before anything is decompressed,
    and output is capped at ``raw_len`` bytes, so a compression bomb allocates no more.
    Needs the ``zstandard`` package, which only EVENTS_ZSTD needs.
    """
    import zstandard

    try:
        announced = zstandard.frame_content_size(data)
        if announced not in (-1, raw_len):
            raise MalformedFrame(
                f"EVENTS_ZSTD zstd frame announces {announced} bytes, raw_len is {raw_len}"
            )
        out = zstandard.ZstdDecompressor().decompress(
            data, max_output_size=raw_len, allow_extra_data=False
        )
    except zstandard.ZstdError as e:
        raise MalformedFrame(f"EVENTS_ZSTD data does not decompress: {e}") from None
    if len(out) != raw_len:
        raise MalformedFrame(f"EVENTS_ZSTD data decompresses to {len(out)} bytes, not {raw_len}")
    return out


def _ping(r: _Reader) -> Ping:
    return Ping(r.uint(8, "nonce"))


def _pong(r: _Reader) -> Pong:
    return Pong(r.uint(8, "nonce"))


def _error(r: _Reader) -> ErrorFrame:
    return ErrorFrame(
        code=error_code(r.uint(2, "code")),
        close=r.boolean("close"),
        topic=r.text(1, "topic"),
        message=r.text(2, "message"),
    )


def _moderate(r: _Reader) -> Moderate:
    seq = r.uint(8, "seq")
    action = r.uint(1, "action")
    topic = r.optional_topic("topic")
    offset = r.uint(8, "offset")
    user = r.text(1, "user")
    value = r.uint(8, "value")
    return Moderate(seq, _moderation_action(action, topic, offset, user, value))


def _moderation_action(
    action: int, topic: str, offset: int, user: str, value: int
) -> ModerationAction:
    """Build the action from its wire fields, which must fit the action table."""
    if action == 1 and topic and not user and value == 0:
        return DeleteComment(topic, offset)
    if action == 2 and user and offset == 0 and bool(topic) == (value != 0):
        return Ban(user, topic or None, value)
    if action == 3 and user and not topic and offset == 0 and value == 0:
        return Unban(user)
    if action == 4 and topic and not user and offset == 0:
        return SlowMode(topic, value)
    if 1 <= action <= 4:
        raise MalformedFrame(
            f"MODERATE fields do not fit action {action}: topic {topic!r}, offset {offset}, "
            f"user {user!r}, value {value}"
        )
    raise MalformedFrame(f"MODERATE action {action} is not defined, the actions are 1 to 4")


def _moderate_ack(r: _Reader) -> ModerateAck:
    return ModerateAck(seq=r.uint(8, "seq"), code=error_code(r.uint(2, "code")))


def _react(r: _Reader) -> React:
    topic = r.topic()
    kind = r.text(1, "kind")
    size = len(kind.encode("utf-8"))
    if not 1 <= size <= MAX_REACTION_KIND:
        raise MalformedFrame(f"REACT kind is {size} bytes, it must be 1 to {MAX_REACTION_KIND}")
    count = r.uint(4, "count")
    if count == 0:
        raise MalformedFrame("REACT count is 0, it must be at least 1")
    return React(topic, kind, count)


def _cap(r: _Reader) -> Cap:
    return Cap(topic=r.topic(), max_per_sec=r.uint(4, "max_per_sec"))


def _skipped(r: _Reader) -> Skipped:
    return Skipped(topic=r.topic(), count=r.uint(8, "count"), through=r.uint(8, "through"))


# Smallest AUDIENCE entry: a 1-byte topic with its length byte, and the u64 viewer count.
_MIN_AUDIENCE_ENTRY = 1 + 1 + 8


def _audience(r: _Reader) -> Audience:
    count = r.uint(4, "count")
    if count > r.remaining // _MIN_AUDIENCE_ENTRY:
        raise MalformedFrame(
            f"AUDIENCE count {count} needs more than the {r.remaining} bytes left in the body"
        )
    entries = [AudienceEntry(r.topic(), r.uint(8, "viewers")) for _ in range(count)]
    return Audience(entries)


def _relay_publish(r: _Reader) -> RelayPublish:
    seq = r.uint(8, "seq")
    topic = r.topic()
    user = r.text(1, "user")
    if not user:
        raise MalformedFrame("RELAY_PUBLISH user is empty")
    priority = r.boolean("priority")
    return RelayPublish(seq, topic, user, priority, r.blob(4, "payload"))


_BODY_READERS: Dict[int, Callable[[_Reader], Frame]] = {
    FrameType.HELLO: _hello,
    FrameType.WELCOME: _welcome,
    FrameType.SUBSCRIBE: _subscribe,
    FrameType.SUBSCRIBED: _subscribed,
    FrameType.UNSUBSCRIBE: _unsubscribe,
    FrameType.PUBLISH: _publish,
    FrameType.PUBLISH_ACK: _publish_ack,
    FrameType.EVENTS: _events,
    FrameType.PING: _ping,
    FrameType.PONG: _pong,
    FrameType.ERROR: _error,
    FrameType.MODERATE: _moderate,
    FrameType.MODERATE_ACK: _moderate_ack,
    FrameType.REACT: _react,
    FrameType.CAP: _cap,
    FrameType.SKIPPED: _skipped,
    FrameType.AUDIENCE: _audience,
    FrameType.RELAY_PUBLISH: _relay_publish,
}


def _check_length(length: int, max_frame: int) -> None:
    if length > max_frame:
        raise FrameTooLarge(f"frame body of {length} bytes exceeds the maximum of {max_frame}")


def _decode_complete(frame: bytes, max_frame: int) -> Frame:
    """Decode one whole frame whose length already passed the maximum check.

    ``max_frame`` also bounds the decompressed entries of EVENTS_ZSTD.
    """
    _length, frame_type, flags, reserved, crc = _HEADER.unpack_from(frame)
    body = frame[HEADER_LEN:]
    actual = zlib.crc32(body, zlib.crc32(frame[:8]))
    if actual != crc:
        raise BadCrc(f"frame CRC is 0x{crc:08x}, its bytes give 0x{actual:08x}")
    if flags != 0:
        raise MalformedFrame(f"header flags are 0x{flags:02x}, version 1 requires 0")
    if reserved != 0:
        raise MalformedFrame(f"header reserved bytes are 0x{reserved:04x}, version 1 requires 0")
    reader = _Reader(body)
    if frame_type == FrameType.EVENTS_ZSTD:
        # Not in _BODY_READERS, because it also needs the receiver's max_frame.
        zstd_frame = _events_zstd(reader, max_frame)
        reader.finish()
        return zstd_frame
    body_reader = _BODY_READERS.get(frame_type)
    if body_reader is None:
        raise UnknownFrameType(f"frame type 0x{frame_type:02x} is not defined")
    decoded = body_reader(reader)
    reader.finish()
    return decoded


def decode_frame(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> Tuple[Frame, int]:
    """Decode the frame at the start of ``data`` and return it with the bytes it took.

    Bytes after the frame are left alone. A buffer that ends inside the frame raises
    :class:`~chorus.protocol.errors.TruncatedFrame`, unless its length field already exceeds
    ``max_frame``, which raises ``FrameTooLarge``.
    """
    data = bytes(data)
    if len(data) < _LENGTH.size:
        raise TruncatedFrame(f"{len(data)} bytes end before the frame's length field")
    (length,) = _LENGTH.unpack_from(data)
    _check_length(length, max_frame)
    total = HEADER_LEN + length
    if len(data) < total:
        raise TruncatedFrame(f"frame of {total} bytes cut after {len(data)} bytes")
    return _decode_complete(data[:total], max_frame), total


def parse_preamble(data: bytes) -> Optional[int]:
    """Check the preamble at the start of ``data``.

    Returns the version (always 1) once all 8 bytes are there and valid, or ``None`` while
    ``data`` is a correct but incomplete start. Wrong magic raises
    :class:`~chorus.protocol.errors.BadPreamble` at the first wrong byte; another version
    raises ``UnsupportedVersion``.
    """
    head = bytes(data[: len(MAGIC)])
    if head != MAGIC[: len(head)]:
        raise BadPreamble(f"preamble starts with {head!r}, expected the magic bytes b'CHORUS'")
    if len(data) < len(PREAMBLE):
        return None
    version = int.from_bytes(data[len(MAGIC) : len(PREAMBLE)], "big")
    if version != VERSION:
        raise UnsupportedVersion(
            f"peer speaks protocol version {version}, this client speaks {VERSION}", version
        )
    return version


class FrameDecoder:
    """Incremental decoder of one direction of a connection.

    Feed it bytes as they arrive, in pieces of any size, with :meth:`feed`, and take complete
    frames with :meth:`next_frame` (or by iterating). The length field of every frame is checked
    against ``max_frame`` as soon as its 4 bytes arrive, and bytes after an oversized length are
    not buffered. After a failure the decoder raises the same error on every later call, because
    the next frame boundary can no longer be found.

    With ``expect_preamble`` the stream starts with the 8-byte preamble, which
    :meth:`read_preamble` (or the first :meth:`next_frame`) checks and removes.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, *, expect_preamble: bool = False):
        self.max_frame = max_frame
        self.version: Optional[int] = None if expect_preamble else VERSION
        self._buf = bytearray()
        self._start = 0
        # Position of the next length field not yet checked, or None until the preamble is gone.
        self._scan: Optional[int] = None if expect_preamble else 0
        self._error: Optional[ProtocolError] = None

    @property
    def buffered(self) -> int:
        """Number of bytes received and not yet returned as a preamble or frame."""
        return len(self._buf) - self._start

    def feed(self, data: bytes) -> None:
        """Append received bytes.

        Raises the decoder's earlier error if it failed, and nothing otherwise. A length field
        above the maximum is detected here, and the next :meth:`next_frame` raises it.
        """
        if self._error is not None:
            raise self._error
        if self._oversized():
            return
        self._buf += data
        self._check_lengths()

    def read_preamble(self) -> Optional[int]:
        """Check and remove the preamble; return its version, or ``None`` until 8 bytes arrive.

        Returns the version at once when the preamble was already read or not expected.
        """
        if self.version is not None:
            return self.version
        self._raise_if_failed()
        try:
            version = parse_preamble(bytes(self._buf[self._start : self._start + len(PREAMBLE)]))
        except ProtocolError as e:
            self._error = e
            raise
        if version is not None:
            self._start += len(PREAMBLE)
            self.version = version
            self._scan = self._start
            self._check_lengths()
        return version

    def next_frame(self) -> Optional[Frame]:
        """Return the next complete frame, or ``None`` until more bytes arrive."""
        if self.read_preamble() is None:
            return None
        self._raise_if_failed()
        available = self.buffered
        if available < HEADER_LEN:
            self._compact()
            return None
        (length,) = _LENGTH.unpack_from(self._buf, self._start)
        total = HEADER_LEN + length
        if available < total:
            self._compact()
            return None
        frame = bytes(self._buf[self._start : self._start + total])
        self._start += total
        if self._start >= _COMPACT_AFTER:
            self._compact()
        try:
            return _decode_complete(frame, self.max_frame)
        except ProtocolError as e:
            self._error = e
            raise

    def __iter__(self) -> Iterator[Frame]:
        """Yield every complete frame buffered so far."""
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame

    def end_of_stream(self) -> None:
        """Report that the peer closed the stream.

        Raises :class:`~chorus.protocol.errors.TruncatedFrame` when part of a preamble or
        frame is buffered, or the decoder's earlier error; returns when the stream ended
        cleanly between frames.
        """
        self._raise_if_failed()
        if self.buffered:
            raise TruncatedFrame(f"stream ended with {self.buffered} bytes of an incomplete frame")

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        # Frames before an oversized one are complete and are returned first.
        if self._scan == self._start and self._oversized():
            (length,) = _LENGTH.unpack_from(self._buf, self._start)
            try:
                _check_length(length, self.max_frame)
            except FrameTooLarge as e:
                self._error = e
                raise

    def _oversized(self) -> bool:
        """Return whether the frame at the scan position has a length above the maximum."""
        if self._scan is None or len(self._buf) - self._scan < _LENGTH.size:
            return False
        (length,) = _LENGTH.unpack_from(self._buf, self._scan)
        return bool(length > self.max_frame)

    def _check_lengths(self) -> None:
        """Move the scan position over every frame whose length field has arrived and is valid.

        Stops at an oversized length and drops the bytes after its length field, so that a
        peer cannot make the decoder buffer a frame it will reject.
        """
        if self._scan is None:
            return
        while len(self._buf) - self._scan >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buf, self._scan)
            if length > self.max_frame:
                del self._buf[self._scan + _LENGTH.size :]
                return
            self._scan += HEADER_LEN + length

    def _compact(self) -> None:
        if self._start == 0:
            return
        del self._buf[: self._start]
        if self._scan is not None:
            self._scan -= self._start
        self._start = 0
