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
  ErrorCode,
  errorCodeName,
  FrameDecoder,
  isValidTopic,
  StartAt,
  topicProblem,
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
