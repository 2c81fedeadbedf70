/** Payload formats of the demo page: comments, reactions and viewer counts. */

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  decodeComment,
  decodeReaction,
  decodeViewers,
  encodeComment,
  encodeReaction,
  reactionsTopic,
  viewersTopic,
} from "../demo/payload.js";

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

test("bench comment shows author and text", () => {
  const comment = decodeComment(bytes('{"i":7,"a":"u_1","t":"goal! ⚽"}'));
  assert.deepEqual(comment, { author: "u_1", text: "goal! ⚽", kind: "bench" });
});

test("demo comment round-trips", () => {
  const comment = decodeComment(bytes(encodeComment("alice", 'say "hi"')));
  assert.deepEqual(comment, { author: "alice", text: 'say "hi"', kind: "demo" });
});

test("comment without author has empty author", () => {
  assert.deepEqual(decodeComment(bytes('{"t":"anonymous"}')), {
    author: "",
    text: "anonymous",
    kind: "demo",
  });
});

test("plain text comment shows as text", () => {
  assert.deepEqual(decodeComment(bytes("what a goal")), {
    author: "",
    text: "what a goal",
    kind: "raw",
  });
});

test("JSON without text shows as raw text", () => {
  const payload = '{"a":"u_1","text":"other format"}';
  assert.deepEqual(decodeComment(bytes(payload)), { author: "", text: payload, kind: "raw" });
});

test("invalid JSON object shows as raw text", () => {
  assert.equal(decodeComment(bytes('{"t": ')).kind, "raw");
});

test("invalid UTF-8 is replaced, not rejected", () => {
  const comment = decodeComment(new Uint8Array([0x68, 0xff, 0x69]));
  assert.equal(comment.text, "h\uFFFDi");
});

test("reaction round-trips", () => {
  assert.equal(decodeReaction(bytes(encodeReaction("👏"))), "👏");
});

test("reaction of another format is undefined", () => {
  assert.equal(decodeReaction(bytes('{"reaction":5}')), undefined);
  assert.equal(decodeReaction(bytes("👏")), undefined);
});

test("viewer count from object or bare number", () => {
  assert.equal(decodeViewers(bytes('{"viewers":1234}')), 1234);
  assert.equal(decodeViewers(bytes(" 42\n")), 42);
});

test("invalid viewer counts are undefined", () => {
  for (const payload of ['{"viewers":-1}', '{"viewers":1.5}', '"12"', "many", "{}"]) {
    assert.equal(decodeViewers(bytes(payload)), undefined, payload);
  }
});

test("companion topics extend the topic", () => {
  assert.equal(reactionsTopic("event/final"), "event/final/reactions");
  assert.equal(viewersTopic("event/final"), "event/final/viewers");
});
