/**
 * Conformance with the shared test vectors in spec/vectors. Every valid frame decodes to its
 * fields and encodes to its bytes, and every invalid stream fails with its error code. Truncated
 * streams wait for more bytes, and preambles are checked as soon as their bytes allow.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  ChorusProtocolError,
  DEFAULT_MAX_FRAME,
  encodeFrame,
  errorCodeName,
  FrameDecoder,
  type Frame,
} from "@chorus/client/protocol";

import {
  frameFromJson,
  fromHex,
  loadVectors,
  toHex,
  type InvalidVector,
  type PreambleVector,
  type ValidVector,
} from "./util/vectors.js";

const allValid = loadVectors<ValidVector>("valid");
const allInvalid = loadVectors<InvalidVector>("invalid");
const preamble = loadVectors<PreambleVector>("preamble");

/** Frame type byte of EVENTS_ZSTD, the fifth byte of its header. */
const EVENTS_ZSTD_TYPE = "13";

/**
 * Whether a vector's first frame is EVENTS_ZSTD. This client does not decode EVENTS_ZSTD: it
 * never asks for ZSTD_EVENTS in HELLO, so servers do not send it, and no maintained npm zstd
 * decoder that works in both Node and the browser build, with output capped at `raw_len`, was
 * found (fzstd 0.1.1 is pure JavaScript but has had no release since 2023).
 */
function isCompressed(vector: { hex: string }): boolean {
  return vector.hex.slice(8, 10) === EVENTS_ZSTD_TYPE;
}

const valid = { ...allValid, vectors: allValid.vectors.filter((v) => !isCompressed(v)) };
const invalid = { ...allInvalid, vectors: allInvalid.vectors.filter((v) => !isCompressed(v)) };

/** Piece sizes the decoder is fed in, besides the whole stream at once. */
const PIECE_SIZES = [1, 5, 13];

function maxFrameOf(vector: { max_frame?: number }, file: { default_max_frame?: number }): number {
  return vector.max_frame ?? file.default_max_frame ?? DEFAULT_MAX_FRAME;
}

/** Feeds `bytes` in pieces of `size`, decoding after each, and returns every frame decoded. */
function decodeInPieces(decoder: FrameDecoder, bytes: Uint8Array, size: number): Frame[] {
  const frames: Frame[] = [];
  for (let start = 0; start < bytes.length; start += size) {
    decoder.push(bytes.subarray(start, start + size));
    for (let frame = decoder.next(); frame !== undefined; frame = decoder.next()) {
      frames.push(frame);
    }
  }
  return frames;
}

/** Decodes `bytes` as a stream that then ends and returns the first error's code name. */
function firstErrorCode(decoder: FrameDecoder, bytes: Uint8Array, size: number): string {
  try {
    decodeInPieces(decoder, bytes, size);
    decoder.finish();
  } catch (error) {
    assert.ok(
      error instanceof ChorusProtocolError,
      `expected ChorusProtocolError, got ${String(error)}`,
    );
    return errorCodeName(error.code) ?? `code ${error.code}`;
  }
  return "no error";
}

describe("EVENTS_ZSTD vectors", () => {
  const skipped = [...allValid.vectors, ...allInvalid.vectors].filter(isCompressed);
  for (const vector of skipped) {
    test(vector.description, { skip: "this client does not decode EVENTS_ZSTD" }, () => {});
  }
});

test("vector files are protocol version 1", () => {
  assert.equal(valid.protocol_version, 1);
  assert.equal(invalid.protocol_version, 1);
  assert.equal(preamble.protocol_version, 1);
});

describe("valid vectors decode to their frame", () => {
  for (const vector of valid.vectors) {
    test(vector.description, () => {
      const decoder = new FrameDecoder(maxFrameOf(vector, valid));
      decoder.push(fromHex(vector.hex));

      const frame = decoder.next();

      assert.deepEqual(frame, frameFromJson(vector.frame));
      assert.equal(decoder.buffered, 0, "bytes left after the frame");
      assert.equal(decoder.next(), undefined, "a second frame");
    });
  }
});

describe("valid vectors decode the same from pieces", () => {
  for (const vector of valid.vectors) {
    test(vector.description, () => {
      for (const size of PIECE_SIZES) {
        const decoder = new FrameDecoder(maxFrameOf(vector, valid));

        const frames = decodeInPieces(decoder, fromHex(vector.hex), size);

        assert.deepEqual(frames, [frameFromJson(vector.frame)], `pieces of ${size} bytes`);
        assert.equal(decoder.buffered, 0, `bytes left with pieces of ${size}`);
      }
    });
  }
});

describe("valid vectors encode to their bytes", () => {
  for (const vector of valid.vectors) {
    test(vector.description, () => {
      assert.equal(toHex(encodeFrame(frameFromJson(vector.frame))), vector.hex);
    });
  }
});

describe("invalid vectors fail with their error code", () => {
  for (const vector of invalid.vectors) {
    test(vector.description, () => {
      const bytes = fromHex(vector.hex);
      for (const size of [bytes.length, ...PIECE_SIZES]) {
        const decoder = new FrameDecoder(maxFrameOf(vector, invalid));
        assert.equal(firstErrorCode(decoder, bytes, size), vector.error, `pieces of ${size} bytes`);
      }
    });
  }
});

describe("truncated vectors wait for more bytes", () => {
  for (const vector of invalid.vectors.filter((v) => v.error === "TRUNCATED_FRAME")) {
    test(vector.description, () => {
      const decoder = new FrameDecoder(maxFrameOf(vector, invalid));

      // Complete frames before the cut one decode; the cut one returns "need more bytes".
      decodeInPieces(decoder, fromHex(vector.hex), Number.MAX_SAFE_INTEGER);

      assert.equal(decoder.next(), undefined);
      assert.ok(decoder.buffered > 0, "the decoder keeps the bytes of the cut frame");
    });
  }
});

describe("preamble vectors", () => {
  for (const vector of preamble.vectors) {
    test(vector.description, () => {
      const bytes = fromHex(vector.hex);
      const decoder = new FrameDecoder();
      decoder.push(bytes);

      let version: number | undefined;
      let code: string | undefined;
      try {
        version = decoder.readPreamble();
      } catch (error) {
        assert.ok(error instanceof ChorusProtocolError);
        code = errorCodeName(error.code);
      }

      if (vector.version !== undefined) {
        assert.equal(version, vector.version);
        assert.equal(decoder.buffered, bytes.length - 8, "bytes after the preamble stay");
      } else if (vector.error !== undefined) {
        assert.equal(code, vector.error);
      } else {
        assert.equal(vector.incomplete, true, "a vector is valid, invalid or incomplete");
        assert.equal(code, undefined);
        assert.equal(version, undefined);
        assert.equal(decoder.buffered, bytes.length, "the decoder keeps waiting bytes");
      }
    });
  }
});

describe("preamble vectors with wrong magic fail on the first wrong byte", () => {
  for (const vector of preamble.vectors.filter((v) => v.error === "BAD_PREAMBLE")) {
    test(vector.description, () => {
      const bytes = fromHex(vector.hex);
      const firstWrong = bytes.findIndex((b, i) => i < 6 && b !== "CHORUS".charCodeAt(i));
      const decoder = new FrameDecoder();

      decoder.push(bytes.subarray(0, firstWrong + 1));

      assert.throws(() => decoder.readPreamble(), { code: 1 });
    });
  }
});
