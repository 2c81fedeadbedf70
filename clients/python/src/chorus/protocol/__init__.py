"""The chorus wire format, version 1: frames, encoding and decoding, with no I/O.

This package turns frames into bytes (:func:`encode`) and bytes into frames
(:class:`FrameDecoder`, :func:`decode_frame`, :func:`parse_preamble`). It never reads a socket
or a clock; the connection layer in :mod:`chorus.connection` does that. On bad input it raises
only :class:`ProtocolError` subclasses, each carrying the protocol's error code in ``code``.

Example::

    from chorus.protocol import FrameDecoder, Publish, encode

    data = encode(Publish(seq=1, topic="live/final", payload=b"GOAL!"))
    decoder = FrameDecoder()
    decoder.feed(data[:7])
    assert decoder.next_frame() is None  # waits for the rest
    decoder.feed(data[7:])
    assert decoder.next_frame() == Publish(1, "live/final", b"GOAL!")
"""

from .decode import FrameDecoder, decode_frame, parse_preamble
from .encode import encode, frame_bytes
from .errors import (
    BadCrc,
    BadPreamble,
    ChorusError,
    Code,
    ErrorCode,
    FrameTooLarge,
    InvalidTopic,
    MalformedFrame,
    ProtocolError,
    TruncatedFrame,
    UnexpectedFrame,
    UnknownFrameType,
    UnsupportedVersion,
    code_name,
    error_code,
)
from .frames import (
    DEFAULT_MAX_FRAME,
    HEADER_LEN,
    MAGIC,
    PREAMBLE,
    U64_MAX,
    VERSION,
    Earliest,
    ErrorFrame,
    Event,
    Events,
    Frame,
    FrameType,
    Hello,
    Last,
    Latest,
    Offset,
    Ping,
    Pong,
    Publish,
    PublishAck,
    Since,
    StartAt,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
)
from .topic import MAX_SEGMENT_BYTES, MAX_TOPIC_BYTES, is_valid_topic, validate_topic

__all__ = [
    "BadCrc",
    "BadPreamble",
    "ChorusError",
    "Code",
    "DEFAULT_MAX_FRAME",
    "Earliest",
    "ErrorCode",
    "ErrorFrame",
    "Event",
    "Events",
    "Frame",
    "FrameDecoder",
    "FrameTooLarge",
    "FrameType",
    "HEADER_LEN",
    "Hello",
    "InvalidTopic",
    "Last",
    "Latest",
    "MAGIC",
    "MAX_SEGMENT_BYTES",
    "MAX_TOPIC_BYTES",
    "MalformedFrame",
    "Offset",
    "PREAMBLE",
    "Ping",
    "Pong",
    "ProtocolError",
    "Publish",
    "PublishAck",
    "Since",
    "StartAt",
    "Subscribe",
    "Subscribed",
    "TruncatedFrame",
    "U64_MAX",
    "UnexpectedFrame",
    "UnknownFrameType",
    "Unsubscribe",
    "UnsupportedVersion",
    "VERSION",
    "Welcome",
    "code_name",
    "decode_frame",
    "encode",
    "error_code",
    "frame_bytes",
    "is_valid_topic",
    "parse_preamble",
    "validate_topic",
]
