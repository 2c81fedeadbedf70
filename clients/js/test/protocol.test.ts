/** Codec behaviour beyond the shared vectors: CRC, topic rules, encoder checks, decoder limits. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  checkTopic,
  crc32,
  decodeFrame,
  describeCode,
  encodeFrame,
  encodePreamble,
  EntryFlag,
  ErrorCode,
  errorCodeName,
  FrameDecoder,
  FrameType,
  isDeleted,
  isPriority,
  isTombstone,
  isValidTopic,
  ModAction,
  StartAt,
  tombstoneTarget,
  topicProblem,
  type EventEntry,
  type Frame,
} from "@chorus/client/protocol";

import { toHex } from "./util/vectors.js";

const ascii = (text: string): Uint8Array => new TextEncoder().encode(text);

describe("crc32", () => {
  test("check value of 123456789 is 0xcbf43926", () => {
    assert.equal(crc32(ascii("123456789")), 0xcbf43926);
  });

  test("of no bytes is 0", () => {
    assert.equal(crc32(new Uint8Array()), 0);
  });

  test("continues over split input", () => {
    const whole = ascii("live comments for everyone");
    assert.equal(crc32(whole.subarray(9), crc32(whole.subarray(0, 9))), crc32(whole));
  });
});

describe("topic names", () => {
  const validNames = ["live", "event/2026-final", "a/b/c.d_e-f", "x".repeat(64), "A/z/0/9"];
  for (const name of validNames) {
    test(`accepts ${JSON.stringify(name.length > 20 ? `${name.slice(0, 10)}...` : name)}`, () => {
      assert.equal(topicProblem(name), undefined);
    });
  }

  const invalidNames: [string, string][] = [
    ["", "is empty"],
    ["a//b", "has an empty segment"],
    ["/abs", "has an empty segment"],
    ["a/", "has an empty segment"],
    [".hidden", "starts with '.'"],
    ["a/../b", "starts with '.'"],
    ["x".repeat(65), "segment of 65 bytes"],
    [`${"abcdefg/".repeat(32)}x`.slice(0, 256), "256 bytes long"],
    ["a b", "byte 0x20"],
    ["a+b", "byte 0x2b"],
    ["café", "non-ASCII"],
  ];
  for (const [name, problem] of invalidNames) {
    test(`rejects ${JSON.stringify(name.length > 20 ? `${name.slice(0, 10)}...` : name)}`, () => {
      const found = topicProblem(name);
      assert.ok(found?.includes(problem), `expected "${problem}", got ${String(found)}`);
      assert.equal(isValidTopic(name), false);
      assert.throws(() => checkTopic(name), RangeError);
    });
  }
});

describe("error codes", () => {
  test("carry the specification's names", () => {
    assert.equal(ErrorCode.SLOW_CONSUMER, 12);
    assert.equal(errorCodeName(12), "SLOW_CONSUMER");
    assert.equal(errorCodeName(17), "TOPIC_NOT_FOUND");
  });

  test("of moderation and publish limits carry their names", () => {
    const expected: [number, string][] = [
      [23, "BANNED"],
      [24, "RATE_LIMITED"],
      [25, "SLOW_MODE"],
      [26, "DUPLICATE_COMMENT"],
      [27, "BLOCKED_CONTENT"],
      [28, "COMMENT_NOT_FOUND"],
    ];
    for (const [code, name] of expected) {
      assert.equal(errorCodeName(code), name, `code ${code}`);
    }
  });

  test("unknown to version 1 have no name but are described", () => {
    assert.equal(errorCodeName(999), undefined);
    assert.equal(describeCode(999), "code 999");
  });
});

describe("encoder", () => {
  test("writes the version 1 preamble", () => {
    assert.equal(toHex(encodePreamble()), "43484f5255530001");
  });

  test("rejects a u64 above its range", () => {
    assert.throws(() => encodeFrame({ type: "PING", nonce: 2n ** 64n }), RangeError);
  });

  test("rejects a negative u64", () => {
    assert.throws(() => encodeFrame({ type: "PING", nonce: -1n }), RangeError);
  });

  test("rejects an invalid topic", () => {
    assert.throws(() => encodeFrame({ type: "UNSUBSCRIBE", topic: "../x" }), /invalid topic/);
  });

  test("rejects a str8 longer than 255 bytes instead of cutting it", () => {
    const hello: Frame = {
      type: "HELLO",
      version: 1,
      maxFrame: 1024,
      clientName: "é".repeat(128),
      token: "",
    };
    assert.throws(() => encodeFrame(hello), /256 bytes of UTF-8; the maximum is 255/);
  });

  test("rejects a lone surrogate, which UTF-8 cannot carry", () => {
    const error: Frame = { type: "ERROR", code: 6, close: true, topic: "", message: "\ud800" };
    assert.throws(() => encodeFrame(error), /lone UTF-16 surrogate/);
  });

  test("rejects EVENTS offsets that do not increase", () => {
    const entry = { offset: 5n, timeUs: 0n, flags: 0, publisher: "", payload: new Uint8Array() };
    const events: Frame = { type: "EVENTS", topic: "t", stream: 1n, events: [entry, entry] };
    assert.throws(() => encodeFrame(events), /strictly increase/);
  });

  test("round-trips every start mode", () => {
    const starts = [
      StartAt.latest,
      StartAt.earliest,
      StartAt.offset(7n),
      StartAt.last(50n),
      StartAt.since(1_767_225_600_000_000n),
    ];
    for (const start of starts) {
      const frame: Frame = { type: "SUBSCRIBE", topic: "live", start, stream: 3n };
      assert.deepEqual(decodeFrame(encodeFrame(frame)), frame, start.mode);
    }
  });
});

describe("decoder", () => {
  test("rejects an oversized length from its 4 length bytes alone", () => {
    const decoder = new FrameDecoder(1024);
    decoder.push(Uint8Array.of(0x00, 0x00, 0x04, 0x01));
    assert.throws(() => decoder.next(), { code: ErrorCode.FRAME_TOO_LARGE });
  });

  test("keeps a leading byte order mark in strings", () => {
    const frame: Frame = { type: "ERROR", code: 6, close: false, topic: "t", message: "\ufeffhi" };
    const decoded = decodeFrame(encodeFrame(frame));
    assert.equal(decoded.type === "ERROR" && decoded.message, "\ufeffhi");
  });

  test("returns payloads that do not share the received buffer", () => {
    const bytes = encodeFrame({ type: "PUBLISH", seq: 1n, topic: "t", payload: ascii("abc") });
    const decoded = decodeFrame(bytes);
    bytes.fill(0);
    assert.equal(decoded.type === "PUBLISH" && toHex(decoded.payload), "616263");
  });

  test("decodes frames that arrive together in one piece", () => {
    const decoder = new FrameDecoder();
    const ping = encodeFrame({ type: "PING", nonce: 1n });
    const pong = encodeFrame({ type: "PONG", nonce: 2n });
    const both = new Uint8Array(ping.length + pong.length);
    both.set(ping);
    both.set(pong, ping.length);

    decoder.push(both);

    assert.deepEqual(decoder.next(), { type: "PING", nonce: 1n });
    assert.deepEqual(decoder.next(), { type: "PONG", nonce: 2n });
    assert.equal(decoder.next(), undefined);
  });

  test("leaves the first frame after the preamble in its buffer", () => {
    const decoder = new FrameDecoder();
    decoder.push(encodePreamble());
    decoder.push(encodeFrame({ type: "PING", nonce: 9n }));

    assert.equal(decoder.readPreamble(), 1);
    assert.deepEqual(decoder.next(), { type: "PING", nonce: 9n });
  });

  test("finish is quiet on a clean end", () => {
    const decoder = new FrameDecoder();
    decoder.push(encodeFrame({ type: "PING", nonce: 1n }));
    decoder.next();
    assert.doesNotThrow(() => decoder.finish());
  });
});

/** Builds a whole frame of `type` around `body`, with a correct header and CRC. */
function frameWithBody(type: number, body: Uint8Array): Uint8Array {
  const frame = new Uint8Array(12 + body.length);
  const view = new DataView(frame.buffer);
  view.setUint32(0, body.length);
  frame[4] = type;
  frame.set(body, 12);
  view.setUint32(8, crc32(body, crc32(frame.subarray(0, 8))));
  return frame;
}

/** Concatenates byte arrays and numbers, each number taken as one byte. */
function bytes(...parts: (Uint8Array | number)[]): Uint8Array {
  const arrays = parts.map((part) => (typeof part === "number" ? Uint8Array.of(part) : part));
  const out = new Uint8Array(arrays.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of arrays) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function u64(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value);
  return out;
}

function u32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

/** Encodes `text` as a str8: its length byte, then its ASCII bytes. */
function str8(text: string): Uint8Array {
  return bytes(text.length, ascii(text));
}

/** Builds a MODERATE body from its wire fields. */
function moderateBody(
  action: number,
  topic: string,
  offset: bigint,
  user: string,
  value: bigint,
): Uint8Array {
  return bytes(u64(1n), action, str8(topic), u64(offset), str8(user), u64(value));
}

/** Returns the error code that decoding `frame` fails with, or "no error". */
function decodeErrorCode(frame: Uint8Array): string {
  try {
    decodeFrame(frame);
  } catch (error) {
    const code = (error as { code?: number }).code;
    return code === undefined ? String(error) : (errorCodeName(code) ?? `code ${code}`);
  }
  return "no error";
}

describe("moderation, reaction, cap and relay frames", () => {
  const roundTrips: [string, Frame][] = [
    [
      "MODERATE delete",
      { type: "MODERATE", seq: 1n, action: ModAction.deleteComment("live", 42n) },
    ],
    ["MODERATE ban", { type: "MODERATE", seq: 2n, action: ModAction.ban("user-7") }],
    [
      "MODERATE ban with purge",
      {
        type: "MODERATE",
        seq: 3n,
        action: ModAction.ban("user-7", { topic: "live", seconds: 600n }),
      },
    ],
    ["MODERATE unban", { type: "MODERATE", seq: 4n, action: ModAction.unban("user-7") }],
    [
      "MODERATE slow mode",
      { type: "MODERATE", seq: 2n ** 64n - 1n, action: ModAction.slowMode("live", 5000n) },
    ],
    ["MODERATE_ACK", { type: "MODERATE_ACK", seq: 9n, code: ErrorCode.COMMENT_NOT_FOUND }],
    ["REACT", { type: "REACT", topic: "live", kind: "❤️", count: 1 }],
    [
      "REACT of 32 bytes",
      { type: "REACT", topic: "live", kind: "k".repeat(32), count: 2 ** 32 - 1 },
    ],
    ["CAP", { type: "CAP", topic: "live/final", maxPerSec: 20 }],
    ["CAP removal", { type: "CAP", topic: "live", maxPerSec: 0 }],
    ["SKIPPED", { type: "SKIPPED", topic: "live", count: 17n, through: 1234n }],
    [
      "AUDIENCE",
      {
        type: "AUDIENCE",
        entries: [
          { topic: "live", viewers: 1000n },
          { topic: "live/final", viewers: 0n },
        ],
      },
    ],
    ["AUDIENCE empty", { type: "AUDIENCE", entries: [] }],
    [
      "RELAY_PUBLISH",
      {
        type: "RELAY_PUBLISH",
        seq: 5n,
        topic: "live",
        user: "host",
        priority: true,
        payload: ascii("welcome"),
      },
    ],
  ];
  for (const [name, frame] of roundTrips) {
    test(`${name} round-trips`, () => {
      assert.deepEqual(decodeFrame(encodeFrame(frame)), frame);
    });
  }

  test("use type bytes 0x0c to 0x12", () => {
    assert.equal(FrameType.MODERATE, 0x0c);
    assert.equal(FrameType.MODERATE_ACK, 0x0d);
    assert.equal(FrameType.REACT, 0x0e);
    assert.equal(FrameType.CAP, 0x0f);
    assert.equal(FrameType.SKIPPED, 0x10);
    assert.equal(FrameType.AUDIENCE, 0x11);
    assert.equal(FrameType.RELAY_PUBLISH, 0x12);
  });

  test("type 0x13 is unknown", () => {
    assert.equal(decodeErrorCode(frameWithBody(0x13, new Uint8Array())), "UNKNOWN_FRAME_TYPE");
  });

  test("MODERATE encodes its fields in wire order", () => {
    const frame: Frame = { type: "MODERATE", seq: 1n, action: ModAction.deleteComment("t", 42n) };
    const expected = frameWithBody(FrameType.MODERATE, moderateBody(1, "t", 42n, "", 0n));
    assert.equal(toHex(encodeFrame(frame)), toHex(expected));
  });

  test("MODERATE ban with purge puts the seconds in value", () => {
    const action = ModAction.ban("u", { topic: "t", seconds: 60n });
    const frame: Frame = { type: "MODERATE", seq: 1n, action };
    const expected = frameWithBody(FrameType.MODERATE, moderateBody(2, "t", 0n, "u", 60n));
    assert.equal(toHex(encodeFrame(frame)), toHex(expected));
  });

  const invalidModerate: [string, Uint8Array, string][] = [
    ["action 0", moderateBody(0, "", 0n, "", 0n), "MALFORMED_FRAME"],
    ["action 5", moderateBody(5, "t", 0n, "", 0n), "MALFORMED_FRAME"],
    ["delete without topic", moderateBody(1, "", 3n, "", 0n), "MALFORMED_FRAME"],
    ["delete with a user", moderateBody(1, "t", 3n, "u", 0n), "MALFORMED_FRAME"],
    ["delete with a value", moderateBody(1, "t", 3n, "", 1n), "MALFORMED_FRAME"],
    ["ban without user", moderateBody(2, "", 0n, "", 0n), "MALFORMED_FRAME"],
    ["ban with an offset", moderateBody(2, "", 1n, "u", 0n), "MALFORMED_FRAME"],
    ["ban with topic but no seconds", moderateBody(2, "t", 0n, "u", 0n), "MALFORMED_FRAME"],
    ["ban with seconds but no topic", moderateBody(2, "", 0n, "u", 5n), "MALFORMED_FRAME"],
    ["unban with a topic", moderateBody(3, "t", 0n, "u", 0n), "MALFORMED_FRAME"],
    ["unban without user", moderateBody(3, "", 0n, "", 0n), "MALFORMED_FRAME"],
    ["slow mode without topic", moderateBody(4, "", 0n, "", 10n), "MALFORMED_FRAME"],
    ["slow mode with a user", moderateBody(4, "t", 0n, "u", 10n), "MALFORMED_FRAME"],
    ["an invalid topic", moderateBody(1, "a//b", 3n, "", 0n), "INVALID_TOPIC"],
    ["an invalid topic and action 9", moderateBody(9, "../x", 0n, "", 0n), "INVALID_TOPIC"],
  ];
  for (const [name, body, code] of invalidModerate) {
    test(`MODERATE with ${name} is ${code}`, () => {
      assert.equal(decodeErrorCode(frameWithBody(FrameType.MODERATE, body)), code);
    });
  }

  const invalidOthers: [string, number, Uint8Array, string][] = [
    [
      "REACT with an empty kind",
      FrameType.REACT,
      bytes(str8("t"), str8(""), u32(1)),
      "MALFORMED_FRAME",
    ],
    [
      "REACT with a 33-byte kind",
      FrameType.REACT,
      bytes(str8("t"), str8("k".repeat(33)), u32(1)),
      "MALFORMED_FRAME",
    ],
    [
      "REACT with count 0",
      FrameType.REACT,
      bytes(str8("t"), str8("clap"), u32(0)),
      "MALFORMED_FRAME",
    ],
    ["CAP with an invalid topic", FrameType.CAP, bytes(str8("a b"), u32(1)), "INVALID_TOPIC"],
    ["SKIPPED cut short", FrameType.SKIPPED, bytes(str8("t"), u64(1n)), "MALFORMED_FRAME"],
    [
      "AUDIENCE whose count runs past the body",
      FrameType.AUDIENCE,
      bytes(u32(2), str8("t"), u64(1n)),
      "MALFORMED_FRAME",
    ],
    [
      "AUDIENCE with a huge count",
      FrameType.AUDIENCE,
      bytes(u32(0xffff_ffff), str8("t"), u64(1n)),
      "MALFORMED_FRAME",
    ],
    [
      "RELAY_PUBLISH with an empty user",
      FrameType.RELAY_PUBLISH,
      bytes(u64(1n), str8("t"), str8(""), 0, u32(0)),
      "MALFORMED_FRAME",
    ],
    [
      "RELAY_PUBLISH with priority 2",
      FrameType.RELAY_PUBLISH,
      bytes(u64(1n), str8("t"), str8("u"), 2, u32(0)),
      "MALFORMED_FRAME",
    ],
    [
      "MODERATE_ACK with a byte after its code",
      FrameType.MODERATE_ACK,
      bytes(u64(1n), 0, 0, 0),
      "MALFORMED_FRAME",
    ],
  ];
  for (const [name, type, body, code] of invalidOthers) {
    test(`${name} is ${code}`, () => {
      assert.equal(decodeErrorCode(frameWithBody(type, body)), code);
    });
  }

  const unencodable: [string, Frame, RegExp][] = [
    ["a REACT with an empty kind", { type: "REACT", topic: "t", kind: "", count: 1 }, /empty/],
    [
      "a REACT kind over 32 bytes",
      { type: "REACT", topic: "t", kind: "é".repeat(17), count: 1 },
      /34 bytes of UTF-8; the maximum is 32/,
    ],
    ["a REACT count of 0", { type: "REACT", topic: "t", kind: "clap", count: 0 }, /at least 1/],
    ["a CAP above u32", { type: "CAP", topic: "t", maxPerSec: 2 ** 32 }, /CAP max_per_sec/],
    [
      "a ban of an empty user",
      { type: "MODERATE", seq: 1n, action: ModAction.ban("") },
      /user must not be empty/,
    ],
    [
      "a ban purge of 0 seconds",
      { type: "MODERATE", seq: 1n, action: ModAction.ban("u", { topic: "t", seconds: 0n }) },
      /at least 1/,
    ],
    [
      "a delete in an invalid topic",
      { type: "MODERATE", seq: 1n, action: ModAction.deleteComment("../x", 1n) },
      /invalid topic/,
    ],
    [
      "a RELAY_PUBLISH with an empty user",
      {
        type: "RELAY_PUBLISH",
        seq: 1n,
        topic: "t",
        user: "",
        priority: false,
        payload: new Uint8Array(),
      },
      /user must not be empty/,
    ],
  ];
  for (const [name, frame, message] of unencodable) {
    test(`encoder rejects ${name}`, () => {
      assert.throws(() => encodeFrame(frame), message);
    });
  }
});

describe("entry flags", () => {
  const entry = (flags: number, payload: Uint8Array = new Uint8Array()): EventEntry => ({
    offset: 10n,
    timeUs: 0n,
    flags,
    publisher: "mod",
    payload,
  });

  test("have the specification's bit values", () => {
    assert.equal(EntryFlag.PRIORITY, 0x01);
    assert.equal(EntryFlag.TOMBSTONE, 0x02);
    assert.equal(EntryFlag.DELETED, 0x04);
  });

  test("helpers read their own bit only", () => {
    const all = entry(0xff);
    const none = entry(0xf8);
    assert.equal(isPriority(all), true);
    assert.equal(isTombstone(all), true);
    assert.equal(isDeleted(all), true);
    assert.equal(isPriority(none), false);
    assert.equal(isTombstone(none), false);
    assert.equal(isDeleted(none), false);
  });

  test("tombstone target is the payload's big-endian offset", () => {
    const tombstone = entry(EntryFlag.TOMBSTONE, u64(0x0102_0304_0506_0708n));
    assert.equal(tombstoneTarget(tombstone), 0x0102_0304_0506_0708n);
  });

  test("tombstone target reads a payload inside a larger buffer", () => {
    const buffer = bytes(0xaa, u64(77n), 0xbb);
    const tombstone = entry(EntryFlag.TOMBSTONE, buffer.subarray(1, 9));
    assert.equal(tombstoneTarget(tombstone), 77n);
  });

  test("tombstone target is undefined for a comment", () => {
    assert.equal(tombstoneTarget(entry(EntryFlag.PRIORITY, u64(5n))), undefined);
  });

  test("tombstone target is undefined for a payload that is not 8 bytes", () => {
    assert.equal(tombstoneTarget(entry(EntryFlag.TOMBSTONE, new Uint8Array(7))), undefined);
  });

  test("survive an EVENTS round trip", () => {
    const events: Frame = {
      type: "EVENTS",
      topic: "live",
      stream: 1n,
      events: [
        { ...entry(EntryFlag.DELETED), offset: 3n },
        { ...entry(EntryFlag.TOMBSTONE, u64(3n)), offset: 4n },
      ],
    };
    const decoded = decodeFrame(encodeFrame(events));
    assert.ok(decoded.type === "EVENTS");
    assert.equal(isDeleted(decoded.events[0]!), true);
    assert.equal(tombstoneTarget(decoded.events[1]!), 3n);
  });
});
