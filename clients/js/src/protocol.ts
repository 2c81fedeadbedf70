/**
 * The chorus wire format, protocol version 1: frame types, entry flags, an encoder, an
 * incremental decoder, the CRC-32, topic validation and error codes.
 *
 * This module does no I/O and keeps no clock. A connection layer feeds received bytes to
 * {@link FrameDecoder} in whatever pieces the transport delivers and sends the bytes that
 * {@link encodeFrame} returns. The byte layout is specified in `spec/PROTOCOL.md` of the chorus
 * repository, and `spec/vectors/` contains the conformance vectors this module is tested against.
 *
 * u64 fields are `bigint`, because a JavaScript number loses precision above 2^53.
 */

import { ErrorCode } from "./codes.js";
import { ChorusProtocolError } from "./errors.js";

export { describeCode, ErrorCode, errorCodeName, type ErrorCodeName } from "./codes.js";
export { ChorusProtocolError } from "./errors.js";

/** Protocol version spoken by this module. */
export const VERSION = 1;

/** Maximum frame body length, in bytes, that a side accepts unless it announces another. */
export const DEFAULT_MAX_FRAME = 1_048_576;

/** Length of the frame header, in bytes; a frame's length field does not count it. */
export const HEADER_LEN = 12;

/** Length of the connection preamble, in bytes. */
export const PREAMBLE_LEN = 8;

/** ASCII `CHORUS`, the first 6 bytes of the preamble. */
const MAGIC = [0x43, 0x48, 0x4f, 0x52, 0x55, 0x53] as const;

const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** Type byte of each frame type. */
export const FrameType = {
  HELLO: 0x01,
  WELCOME: 0x02,
  SUBSCRIBE: 0x03,
  SUBSCRIBED: 0x04,
  UNSUBSCRIBE: 0x05,
  PUBLISH: 0x06,
  PUBLISH_ACK: 0x07,
  EVENTS: 0x08,
  PING: 0x09,
  PONG: 0x0a,
  ERROR: 0x0b,
  MODERATE: 0x0c,
  MODERATE_ACK: 0x0d,
  REACT: 0x0e,
  CAP: 0x0f,
  SKIPPED: 0x10,
  AUDIENCE: 0x11,
  RELAY_PUBLISH: 0x12,
} as const;

/** Name of a frame type, such as `"PUBLISH_ACK"`. */
export type FrameTypeName = keyof typeof FrameType;

/** Start position of a subscription; the JSON test vectors use the same shape. */
export type StartAt =
  | { readonly mode: "latest" }
  | { readonly mode: "earliest" }
  | { readonly mode: "offset"; readonly value: bigint }
  | { readonly mode: "last"; readonly value: bigint }
  | { readonly mode: "since"; readonly value: bigint };

/** Constructors of the four start modes. */
export const StartAt = {
  /** The next comment published after the subscription. */
  latest: Object.freeze({ mode: "latest" }) as StartAt,
  /** The oldest comment the topic still keeps. */
  earliest: Object.freeze({ mode: "earliest" }) as StartAt,
  /** Offset `offset`; an offset below the oldest one kept starts at the oldest one. */
  offset: (offset: bigint): StartAt => Object.freeze({ mode: "offset", value: offset }),
  /** The last `count` comments kept, then everything after them. */
  last: (count: bigint): StartAt => Object.freeze({ mode: "last", value: count }),
  /**
   * The first comment kept whose broker time is `timeUs` or later, in microseconds since the
   * Unix epoch; the next comment published when there is none. The server compares with the
   * time it stored in each comment (`Event.timeUs`), not with the client's clock.
   */
  since: (timeUs: bigint): StartAt => Object.freeze({ mode: "since", value: timeUs }),
};

/** Wire value of each start mode. */
const START_MODES = { latest: 0, offset: 1, last: 2, earliest: 3, since: 4 } as const;

/** HELLO: opens the session, the client's first frame after the preamble. */
export interface Hello {
  readonly type: "HELLO";
  readonly version: number;
  /** Largest frame body, in bytes, that the client accepts. */
  readonly maxFrame: number;
  readonly clientName: string;
  /** Authentication token; empty when the client has none. */
  readonly token: string;
  /**
   * Optional features asked for, as bits (0x1 is ZSTD_EVENTS). Absent on the wire means 0, and
   * the field is encoded only when set and not 0. This client asks for none.
   */
  readonly features?: number;
}

/** WELCOME: the server accepts the session and announces its limits. */
export interface Welcome {
  readonly type: "WELCOME";
  readonly version: number;
  /** Largest frame body, in bytes, that the server accepts. */
  readonly maxFrame: number;
  readonly serverName: string;
  /** Largest PUBLISH payload, in bytes, that the server stores. */
  readonly maxPayload: number;
  /** Milliseconds without a received byte after which the server closes; 0 means never. */
  readonly idleTimeoutMs: number;
  /** Features of the HELLO granted on this connection; absent when the server sent none. */
  readonly features?: number;
}

/** SUBSCRIBE: starts a subscription to one topic. */
export interface Subscribe {
  readonly type: "SUBSCRIBE";
  readonly topic: string;
  readonly start: StartAt;
  /** Stream id the client last saw on the topic, or 0. */
  readonly stream: bigint;
}

/** SUBSCRIBED: confirms a subscription and reports where it starts. */
export interface Subscribed {
  readonly type: "SUBSCRIBED";
  readonly topic: string;
  /** The topic's current stream id; 0 when the topic does not exist yet. */
  readonly stream: bigint;
  /** Offset of the first comment this subscription delivers. */
  readonly start: bigint;
  /** Oldest offset the topic still keeps. */
  readonly earliest: bigint;
  /** Offset the next published comment will get. */
  readonly end: bigint;
}

/** UNSUBSCRIBE: ends a subscription; the server sends no reply. */
export interface Unsubscribe {
  readonly type: "UNSUBSCRIBE";
  readonly topic: string;
}

/** PUBLISH: publishes one comment. */
export interface Publish {
  readonly type: "PUBLISH";
  /** Number chosen by the client and echoed in the PUBLISH_ACK. */
  readonly seq: bigint;
  readonly topic: string;
  readonly payload: Uint8Array;
}

/** PUBLISH_ACK: accepts or rejects one PUBLISH. */
export interface PublishAck {
  readonly type: "PUBLISH_ACK";
  readonly seq: bigint;
  /** `ErrorCode.OK` when the comment is stored, otherwise the reason it was rejected. */
  readonly code: number;
  /** Offset assigned to the comment; 0 when rejected. */
  readonly offset: bigint;
  /** Stream id of the topic; 0 when rejected. */
  readonly stream: bigint;
}

/** One comment in an EVENTS frame. */
export interface EventEntry {
  /** Position of the comment in its topic, assigned by the origin. */
  readonly offset: bigint;
  /** Time the origin accepted the comment, in microseconds since the Unix epoch (UTC). */
  readonly timeUs: bigint;
  /** Entry flags, a combination of {@link EntryFlag} bits; receivers ignore unknown bits. */
  readonly flags: number;
  /** Id of the publisher; empty when the broker has none. */
  readonly publisher: string;
  readonly payload: Uint8Array;
}

/** EVENTS: a batch of comments of one topic, in increasing offset order. */
export interface Events {
  readonly type: "EVENTS";
  readonly topic: string;
  readonly stream: bigint;
  readonly events: readonly EventEntry[];
}

/** PING: requests a PONG with the same nonce from the peer. */
export interface Ping {
  readonly type: "PING";
  readonly nonce: bigint;
}

/** PONG: the reply to a PING. */
export interface Pong {
  readonly type: "PONG";
  readonly nonce: bigint;
}

/** ERROR: reports an error, and whether the sender closes the connection after it. */
export interface ErrorFrame {
  readonly type: "ERROR";
  /** Error code; codes that version 1 does not name are accepted as they are. */
  readonly code: number;
  readonly close: boolean;
  /** Topic the error concerns, as free text; empty when it concerns the connection. */
  readonly topic: string;
  readonly message: string;
}

/**
 * A moderation action, as carried in MODERATE. Build one with the {@link ModAction}
 * constructors, which give every action the same shape as the decoder does.
 */
export type ModAction =
  | {
      /** Deletes one comment: the origin appends a tombstone that names its offset. */
      readonly kind: "deleteComment";
      readonly topic: string;
      readonly offset: bigint;
    }
  | {
      /** Bans a user from publishing, and optionally deletes their recent comments in a topic. */
      readonly kind: "ban";
      /** User id, as in the `sub` claim of the user's tokens; 1 to 255 bytes of UTF-8. */
      readonly user: string;
      /** Topic whose comments by the user from the last `seconds` seconds are deleted too. */
      readonly purge?: { readonly topic: string; readonly seconds: bigint };
    }
  | {
      /** Lifts a ban. */
      readonly kind: "unban";
      readonly user: string;
    }
  | {
      /** Sets the minimum interval between two comments of one user in a topic. */
      readonly kind: "slowMode";
      readonly topic: string;
      /** Minimum interval in milliseconds; 0 turns slow mode off. */
      readonly intervalMs: bigint;
    };

/** Constructors of the four moderation actions. */
export const ModAction = {
  /** Deletes the comment at `offset` of `topic`. */
  deleteComment: (topic: string, offset: bigint): ModAction =>
    Object.freeze({ kind: "deleteComment", topic, offset }),
  /**
   * Bans `user`. With `purge`, also deletes the user's comments that the origin stored in
   * `purge.topic` in the last `purge.seconds` seconds (at least 1).
   */
  ban: (user: string, purge?: { readonly topic: string; readonly seconds: bigint }): ModAction =>
    Object.freeze(
      purge === undefined
        ? { kind: "ban", user }
        : {
            kind: "ban",
            user,
            purge: Object.freeze({ topic: purge.topic, seconds: purge.seconds }),
          },
    ),
  /** Lifts the ban of `user`. */
  unban: (user: string): ModAction => Object.freeze({ kind: "unban", user }),
  /**
   * Sets slow mode on `topic`: at most one comment per user every `intervalMs` milliseconds.
   * An interval of 0 turns slow mode off.
   */
  slowMode: (topic: string, intervalMs: bigint): ModAction =>
    Object.freeze({ kind: "slowMode", topic, intervalMs }),
};

/** Wire value of each moderation action. */
const MOD_ACTIONS = { deleteComment: 1, ban: 2, unban: 3, slowMode: 4 } as const;

/** MODERATE: requests a moderation action; the server replies with one MODERATE_ACK. */
export interface Moderate {
  readonly type: "MODERATE";
  /** Number chosen by the client and echoed in the MODERATE_ACK. */
  readonly seq: bigint;
  readonly action: ModAction;
}

/** MODERATE_ACK: carries out or rejects one MODERATE. */
export interface ModerateAck {
  readonly type: "MODERATE_ACK";
  readonly seq: bigint;
  /** `ErrorCode.OK` when the action was carried out, otherwise the reason it was not. */
  readonly code: number;
}

/** Maximum length of a reaction kind, in bytes of UTF-8. */
export const MAX_REACTION_KIND_BYTES = 32;

/** REACT: adds reactions to a topic; the server sends no reply. */
export interface React {
  readonly type: "REACT";
  readonly topic: string;
  /** Reaction kind, 1 to 32 bytes of UTF-8, such as `heart`. */
  readonly kind: string;
  /** Number of reactions, at least 1; only relay sessions may send more than 1. */
  readonly count: number;
}

/** CAP: caps the delivery rate of one subscription; the server sends no reply. */
export interface Cap {
  readonly type: "CAP";
  readonly topic: string;
  /** Maximum comments per second to deliver; 0 removes the cap. */
  readonly maxPerSec: number;
}

/** SKIPPED: counts the comments a capped subscription did not deliver. */
export interface Skipped {
  readonly type: "SKIPPED";
  readonly topic: string;
  /** Comments not delivered since the previous SKIPPED of this subscription. */
  readonly count: bigint;
  /** Offset after the last comment this notice accounts for. */
  readonly through: bigint;
}

/** One topic of an AUDIENCE frame. */
export interface AudienceEntry {
  readonly topic: string;
  /** Subscribers of the topic at the relay and at every relay below it. */
  readonly viewers: bigint;
}

/** AUDIENCE: a relay reports its subscriber counts per topic to its upstream. */
export interface Audience {
  readonly type: "AUDIENCE";
  readonly entries: readonly AudienceEntry[];
}

/** RELAY_PUBLISH: a relay publishes one comment on behalf of a user it verified. */
export interface RelayPublish {
  readonly type: "RELAY_PUBLISH";
  /** Number chosen by the relay and echoed in the PUBLISH_ACK. */
  readonly seq: bigint;
  readonly topic: string;
  /** User id from the token the relay verified, 1 to 255 bytes; stored as the publisher. */
  readonly user: string;
  /** Whether the user's comments get the PRIORITY flag. */
  readonly priority: boolean;
  readonly payload: Uint8Array;
}

/** Any frame of protocol version 1. */
export type Frame =
  | Hello
  | Welcome
  | Subscribe
  | Subscribed
  | Unsubscribe
  | Publish
  | PublishAck
  | Events
  | Ping
  | Pong
  | ErrorFrame
  | Moderate
  | ModerateAck
  | React
  | Cap
  | Skipped
  | Audience
  | RelayPublish;

// ---------------------------------------------------------------------------------------------
// Entry flags

/** Bits of an EVENTS entry's `flags` byte. */
export const EntryFlag = {
  /** The origin gave the comment priority because of its publisher's role or token. */
  PRIORITY: 0x01,
  /**
   * The entry is the deletion of a comment, not a comment: its payload is the 8-byte big-endian
   * offset of the deleted comment in the same topic, and its publisher is the moderator.
   */
  TOMBSTONE: 0x02,
  /** The comment at this offset was deleted after it was published; its payload is empty. */
  DELETED: 0x04,
} as const;

/** Returns whether the entry has the PRIORITY flag. */
export function isPriority(entry: EventEntry): boolean {
  return (entry.flags & EntryFlag.PRIORITY) !== 0;
}

/** Returns whether the entry is a tombstone: the deletion of an earlier comment. */
export function isTombstone(entry: EventEntry): boolean {
  return (entry.flags & EntryFlag.TOMBSTONE) !== 0;
}

/** Returns whether the entry is a comment that was deleted after it was published. */
export function isDeleted(entry: EventEntry): boolean {
  return (entry.flags & EntryFlag.DELETED) !== 0;
}

/**
 * Returns the offset of the comment that a tombstone deletes, or `undefined` when the entry is
 * not a tombstone or its payload is not the 8 bytes of an offset.
 */
export function tombstoneTarget(entry: EventEntry): bigint | undefined {
  const payload = entry.payload;
  if (!isTombstone(entry) || payload.byteLength !== 8) {
    return undefined;
  }
  return new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0);
}

// ---------------------------------------------------------------------------------------------
// CRC-32

/**
 * Lookup table of the reflected CRC-32 of IEEE 802.3 (polynomial 0x04C11DB7, reflected as
 * 0xEDB88320), 1 KiB built once. A table keeps the browser build free of dependencies, and Node
 * 20 has no built-in CRC-32 because `zlib.crc32` arrived in Node 22.2.
 */
const CRC_TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let bit = 0; bit < 8; bit++) {
      c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    }
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * Computes the CRC-32 of IEEE 802.3, zlib and PNG over `bytes`. Pass the result of an earlier
 * call as `crc` to continue over bytes that follow: `crc32(b, crc32(a))` is the CRC of `a` then
 * `b`.
 */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    // The index is masked to 0..255, so the table entry exists.
    c = (CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8)) >>> 0;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** Computes a frame's CRC: over header bytes 0 to 7, then the body. */
function frameCrc(frame: Uint8Array): number {
  return crc32(frame.subarray(HEADER_LEN), crc32(frame.subarray(0, 8)));
}

// ---------------------------------------------------------------------------------------------
// Topic names

const SLASH = 0x2f;
const DOT = 0x2e;
const MAX_TOPIC_BYTES = 255;
const MAX_SEGMENT_BYTES = 64;
const ALLOWED_BYTES = "only ASCII letters, digits, _, - and . are allowed in a segment";

function isTopicByte(b: number): boolean {
  return (
    (b >= 0x30 && b <= 0x39) || // 0-9
    (b >= 0x41 && b <= 0x5a) || // A-Z
    (b >= 0x61 && b <= 0x7a) || // a-z
    b === 0x5f || // _
    b === 0x2d || // -
    b === DOT
  );
}

/**
 * Checks topic name bytes against the naming rules and returns what is wrong, or `undefined` when
 * the name is valid. A valid name is 1 to 255 bytes of segments separated by `/`. Each segment is
 * 1 to 64 ASCII letters, digits, `_`, `-` and `.`, and does not start with `.`.
 */
function topicBytesProblem(bytes: Uint8Array): string | undefined {
  if (bytes.length === 0) {
    return "is empty";
  }
  if (bytes.length > MAX_TOPIC_BYTES) {
    return `is ${bytes.length} bytes long; the maximum is ${MAX_TOPIC_BYTES}`;
  }
  let segmentStart = 0;
  for (let i = 0; i <= bytes.length; i++) {
    const b = i < bytes.length ? bytes[i]! : SLASH;
    if (b !== SLASH) {
      if (!isTopicByte(b)) {
        return `contains byte 0x${b.toString(16).padStart(2, "0")}; ${ALLOWED_BYTES}`;
      }
      continue;
    }
    const length = i - segmentStart;
    if (length === 0) {
      return "has an empty segment (a leading, trailing or doubled /)";
    }
    if (length > MAX_SEGMENT_BYTES) {
      return `has a segment of ${length} bytes; the maximum is ${MAX_SEGMENT_BYTES}`;
    }
    if (bytes[segmentStart] === DOT) {
      return "has a segment that starts with '.'";
    }
    segmentStart = i + 1;
  }
  return undefined;
}

/**
 * Checks a topic name against the naming rules of the protocol and returns what is wrong with it,
 * or `undefined` when it is valid. Valid examples: `live`, `event/2026-final`, `a/b/c.d_e-f`.
 */
export function topicProblem(name: string): string | undefined {
  const bytes = new Uint8Array(name.length);
  for (let i = 0; i < name.length; i++) {
    const code = name.charCodeAt(i);
    if (code > 0x7f) {
      return `contains the non-ASCII character ${JSON.stringify(name[i])}; ${ALLOWED_BYTES}`;
    }
    bytes[i] = code;
  }
  return topicBytesProblem(bytes);
}

/** Returns whether `name` is a valid topic name. */
export function isValidTopic(name: string): boolean {
  return topicProblem(name) === undefined;
}

/** Throws a `RangeError` naming the problem when `name` is not a valid topic name. */
export function checkTopic(name: string): void {
  const problem = topicProblem(name);
  if (problem !== undefined) {
    throw new RangeError(`invalid topic ${JSON.stringify(name)}: it ${problem}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Preamble

/** Returns the 8-byte connection preamble: `CHORUS` and the version, u16 big-endian. */
export function encodePreamble(version: number = VERSION): Uint8Array {
  const bytes = new Uint8Array(PREAMBLE_LEN);
  bytes.set(MAGIC);
  new DataView(bytes.buffer).setUint16(6, version);
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Encoding

const utf8Encoder = new TextEncoder();

/** Matches a UTF-16 surrogate that is not part of a pair, which UTF-8 cannot encode. */
const LONE_SURROGATE = /\p{Surrogate}/u;

/** Appends big-endian fields to a growing buffer. */
class Writer {
  #bytes = new Uint8Array(256);
  #view = new DataView(this.#bytes.buffer);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  /** Returns the bytes written so far, without copying. */
  bytes(): Uint8Array {
    return this.#bytes.subarray(0, this.#length);
  }

  skip(n: number): void {
    this.#reserve(n);
    this.#length += n;
  }

  u8(value: number, field: string): void {
    checkInteger(value, 0xff, field);
    this.#reserve(1);
    this.#view.setUint8(this.#length, value);
    this.#length += 1;
  }

  u16(value: number, field: string): void {
    checkInteger(value, 0xffff, field);
    this.#reserve(2);
    this.#view.setUint16(this.#length, value);
    this.#length += 2;
  }

  u32(value: number, field: string): void {
    checkInteger(value, 0xffff_ffff, field);
    this.#reserve(4);
    this.#view.setUint32(this.#length, value);
    this.#length += 4;
  }

  u64(value: bigint, field: string): void {
    if (typeof value !== "bigint" || value < 0n || value > U64_MAX) {
      throw new RangeError(`${field} must be a bigint from 0 to 2^64 - 1, got ${String(value)}`);
    }
    this.#reserve(8);
    this.#view.setBigUint64(this.#length, value);
    this.#length += 8;
  }

  bool(value: boolean): void {
    this.u8(value ? 1 : 0, "bool");
  }

  raw(bytes: Uint8Array): void {
    this.#reserve(bytes.length);
    this.#bytes.set(bytes, this.#length);
    this.#length += bytes.length;
  }

  str8(text: string, field: string): void {
    const bytes = encodeUtf8(text, 0xff, field);
    this.u8(bytes.length, field);
    this.raw(bytes);
  }

  str16(text: string, field: string): void {
    const bytes = encodeUtf8(text, 0xffff, field);
    this.u16(bytes.length, field);
    this.raw(bytes);
  }

  topic(name: string): void {
    checkTopic(name);
    this.str8(name, "topic");
  }

  /** Writes a user id, which must not be empty. */
  user(user: string, field: string): void {
    checkUser(user, field);
    this.str8(user, field);
  }

  bytes32(bytes: Uint8Array, field: string): void {
    this.u32(bytes.length, field);
    this.raw(bytes);
  }

  #reserve(n: number): void {
    const needed = this.#length + n;
    if (needed <= this.#bytes.length) {
      return;
    }
    let capacity = this.#bytes.length * 2;
    while (capacity < needed) {
      capacity *= 2;
    }
    const grown = new Uint8Array(capacity);
    grown.set(this.bytes());
    this.#bytes = grown;
    this.#view = new DataView(grown.buffer);
  }
}

function checkInteger(value: number, max: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${field} must be an integer from 0 to ${max}, got ${String(value)}`);
  }
}

function encodeUtf8(text: string, maxBytes: number, field: string): Uint8Array {
  if (LONE_SURROGATE.test(text)) {
    throw new RangeError(`${field} contains a lone UTF-16 surrogate, which UTF-8 cannot encode`);
  }
  const bytes = utf8Encoder.encode(text);
  if (bytes.length > maxBytes) {
    throw new RangeError(`${field} is ${bytes.length} bytes of UTF-8; the maximum is ${maxBytes}`);
  }
  return bytes;
}

/**
 * Encodes `frame`, header included, into a new byte array.
 *
 * Throws a `RangeError` for a frame that version 1 cannot carry. That is a number outside its
 * field's range, a string too long for its length field or with a lone surrogate, or an invalid
 * topic. It is also a body longer than 2^32 - 1 bytes, EVENTS whose offsets do not strictly
 * increase, or a value the frame's rules forbid, such as an empty REACT kind or user id. The
 * encoder never shortens a value to make it fit.
 */
export function encodeFrame(frame: Frame): Uint8Array {
  const w = new Writer();
  w.skip(HEADER_LEN);
  encodeBody(w, frame);

  const bodyLength = w.length - HEADER_LEN;
  if (bodyLength > 0xffff_ffff) {
    throw new RangeError(`${frame.type} body of ${bodyLength} bytes does not fit a u32 length`);
  }
  const bytes = w.bytes();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  view.setUint32(0, bodyLength);
  view.setUint8(4, FrameType[frame.type]);
  // Flags (byte 5) and reserved bytes (6 and 7) stay 0 in version 1.
  view.setUint32(8, frameCrc(bytes));
  return bytes.slice();
}

function encodeBody(w: Writer, frame: Frame): void {
  switch (frame.type) {
    case "HELLO":
      w.u16(frame.version, "HELLO version");
      w.u32(frame.maxFrame, "HELLO max_frame");
      w.str8(frame.clientName, "HELLO client_name");
      w.str16(frame.token, "HELLO token");
      if (frame.features) w.u32(frame.features, "HELLO features");
      return;
    case "WELCOME":
      w.u16(frame.version, "WELCOME version");
      w.u32(frame.maxFrame, "WELCOME max_frame");
      w.str8(frame.serverName, "WELCOME server_name");
      w.u32(frame.maxPayload, "WELCOME max_payload");
      w.u32(frame.idleTimeoutMs, "WELCOME idle_timeout_ms");
      if (frame.features) w.u32(frame.features, "WELCOME features");
      return;
    case "SUBSCRIBE":
      w.topic(frame.topic);
      w.u8(START_MODES[frame.start.mode], "SUBSCRIBE start mode");
      w.u64(startValue(frame.start), "SUBSCRIBE start value");
      w.u64(frame.stream, "SUBSCRIBE stream");
      return;
    case "SUBSCRIBED":
      w.topic(frame.topic);
      w.u64(frame.stream, "SUBSCRIBED stream");
      w.u64(frame.start, "SUBSCRIBED start");
      w.u64(frame.earliest, "SUBSCRIBED earliest");
      w.u64(frame.end, "SUBSCRIBED end");
      return;
    case "UNSUBSCRIBE":
      w.topic(frame.topic);
      return;
    case "PUBLISH":
      w.u64(frame.seq, "PUBLISH seq");
      w.topic(frame.topic);
      w.bytes32(frame.payload, "PUBLISH payload");
      return;
    case "PUBLISH_ACK":
      w.u64(frame.seq, "PUBLISH_ACK seq");
      w.u16(frame.code, "PUBLISH_ACK code");
      w.u64(frame.offset, "PUBLISH_ACK offset");
      w.u64(frame.stream, "PUBLISH_ACK stream");
      return;
    case "EVENTS":
      encodeEvents(w, frame);
      return;
    case "PING":
    case "PONG":
      w.u64(frame.nonce, `${frame.type} nonce`);
      return;
    case "ERROR":
      w.u16(frame.code, "ERROR code");
      w.bool(frame.close);
      w.str8(frame.topic, "ERROR topic");
      w.str16(frame.message, "ERROR message");
      return;
    case "MODERATE":
      encodeModerate(w, frame);
      return;
    case "MODERATE_ACK":
      w.u64(frame.seq, "MODERATE_ACK seq");
      w.u16(frame.code, "MODERATE_ACK code");
      return;
    case "REACT":
      encodeReact(w, frame);
      return;
    case "CAP":
      w.topic(frame.topic);
      w.u32(frame.maxPerSec, "CAP max_per_sec");
      return;
    case "SKIPPED":
      w.topic(frame.topic);
      w.u64(frame.count, "SKIPPED count");
      w.u64(frame.through, "SKIPPED through");
      return;
    case "AUDIENCE":
      w.u32(frame.entries.length, "AUDIENCE count");
      for (const entry of frame.entries) {
        w.topic(entry.topic);
        w.u64(entry.viewers, "AUDIENCE viewers");
      }
      return;
    case "RELAY_PUBLISH":
      w.u64(frame.seq, "RELAY_PUBLISH seq");
      w.topic(frame.topic);
      w.user(frame.user, "RELAY_PUBLISH user");
      w.bool(frame.priority);
      w.bytes32(frame.payload, "RELAY_PUBLISH payload");
      return;
    default:
      throw new RangeError(
        `unknown frame type ${JSON.stringify((frame as { type: unknown }).type)}`,
      );
  }
}

/** Returns the wire fields of a moderation action: topic (empty for none), offset, user, value. */
function moderateFields(action: ModAction): [string, bigint, string, bigint] {
  switch (action.kind) {
    case "deleteComment":
      return [action.topic, action.offset, "", 0n];
    case "ban":
      return action.purge === undefined
        ? ["", 0n, action.user, 0n]
        : [action.purge.topic, 0n, action.user, action.purge.seconds];
    case "unban":
      return ["", 0n, action.user, 0n];
    case "slowMode":
      return [action.topic, 0n, "", action.intervalMs];
    default:
      throw new RangeError(
        `unknown moderation action ${JSON.stringify((action as { kind: unknown }).kind)}`,
      );
  }
}

function encodeModerate(w: Writer, frame: Moderate): void {
  const action = frame.action;
  const [topic, offset, user, value] = moderateFields(action);
  if (action.kind === "ban" || action.kind === "unban") {
    checkUser(action.user, `MODERATE ${action.kind} user`);
  }
  if (action.kind === "ban" && action.purge !== undefined && action.purge.seconds === 0n) {
    throw new RangeError("MODERATE ban purge seconds must be at least 1");
  }
  w.u64(frame.seq, "MODERATE seq");
  w.u8(MOD_ACTIONS[action.kind], "MODERATE action");
  if (topic === "") {
    w.str8("", "MODERATE topic");
  } else {
    w.topic(topic);
  }
  w.u64(offset, "MODERATE offset");
  w.str8(user, "MODERATE user");
  w.u64(value, "MODERATE value");
}

function encodeReact(w: Writer, frame: React): void {
  const kindBytes = encodeUtf8(frame.kind, MAX_REACTION_KIND_BYTES, "REACT kind");
  if (kindBytes.length === 0) {
    throw new RangeError("REACT kind must not be empty");
  }
  if (frame.count === 0) {
    throw new RangeError("REACT count must be at least 1");
  }
  w.topic(frame.topic);
  w.str8(frame.kind, "REACT kind");
  w.u32(frame.count, "REACT count");
}

/** Throws a `RangeError` unless `user` is a user id of 1 to 255 bytes of UTF-8. */
function checkUser(user: string, field: string): void {
  if (encodeUtf8(user, 0xff, field).length === 0) {
    throw new RangeError(`${field} must not be empty`);
  }
}

function startValue(start: StartAt): bigint {
  return start.mode === "latest" || start.mode === "earliest" ? 0n : start.value;
}

function encodeEvents(w: Writer, frame: Events): void {
  w.topic(frame.topic);
  w.u64(frame.stream, "EVENTS stream");
  w.u32(frame.events.length, "EVENTS count");
  let previous: bigint | undefined;
  for (const entry of frame.events) {
    if (previous !== undefined && entry.offset <= previous) {
      throw new RangeError(
        `EVENTS offsets must strictly increase, but ${entry.offset} follows ${previous}`,
      );
    }
    previous = entry.offset;
    w.u64(entry.offset, "EVENTS entry offset");
    w.u64(entry.timeUs, "EVENTS entry time_us");
    w.u8(entry.flags, "EVENTS entry flags");
    w.str8(entry.publisher, "EVENTS entry publisher");
    w.bytes32(entry.payload, "EVENTS entry payload");
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

// `ignoreBOM` keeps a leading U+FEFF in the text instead of dropping it, so strings arrive
// exactly as sent. `fatal` rejects invalid UTF-8, overlong forms and encoded surrogates.
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function malformed(detail: string): ChorusProtocolError {
  return new ChorusProtocolError(ErrorCode.MALFORMED_FRAME, detail);
}

/** Reads big-endian fields from a frame body; each read names its field in errors. */
class Reader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  #pos = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get remaining(): number {
    return this.#bytes.length - this.#pos;
  }

  u8(field: string): number {
    this.#need(1, field);
    const value = this.#view.getUint8(this.#pos);
    this.#pos += 1;
    return value;
  }

  u16(field: string): number {
    this.#need(2, field);
    const value = this.#view.getUint16(this.#pos);
    this.#pos += 2;
    return value;
  }

  u32(field: string): number {
    this.#need(4, field);
    const value = this.#view.getUint32(this.#pos);
    this.#pos += 4;
    return value;
  }

  u64(field: string): bigint {
    this.#need(8, field);
    const value = this.#view.getBigUint64(this.#pos);
    this.#pos += 8;
    return value;
  }

  bool(field: string): boolean {
    const value = this.u8(field);
    if (value > 1) {
      throw malformed(`${field} is ${value}; a bool must be 0 or 1`);
    }
    return value === 1;
  }

  str8(field: string): string {
    return this.#utf8(this.u8(field), field);
  }

  str16(field: string): string {
    return this.#utf8(this.u16(field), field);
  }

  /** Reads a topic; a length past the body is MALFORMED_FRAME, a bad name INVALID_TOPIC. */
  topic(field: string): string {
    const bytes = this.#take(this.u8(field), field);
    const problem = topicBytesProblem(bytes);
    if (problem !== undefined) {
      throw new ChorusProtocolError(ErrorCode.INVALID_TOPIC, `${field} ${problem}`);
    }
    // Valid topics are ASCII, so each byte is one character.
    return String.fromCharCode(...bytes);
  }

  /** Reads a str8 that is either empty, returned as `undefined`, or a valid topic name. */
  optionalTopic(field: string): string | undefined {
    if (this.remaining > 0 && this.#bytes[this.#pos] === 0) {
      this.#pos += 1;
      return undefined;
    }
    return this.topic(field);
  }

  /** Reads a bytes32 field into a copy that does not keep the received buffer alive. */
  bytes32(field: string): Uint8Array {
    return this.#take(this.u32(field), field).slice();
  }

  #utf8(length: number, field: string): string {
    const bytes = this.#take(length, field);
    try {
      return utf8Decoder.decode(bytes);
    } catch {
      throw malformed(`${field} is not valid UTF-8`);
    }
  }

  #take(length: number, field: string): Uint8Array {
    this.#need(length, field);
    const bytes = this.#bytes.subarray(this.#pos, this.#pos + length);
    this.#pos += length;
    return bytes;
  }

  #need(n: number, field: string): void {
    if (this.remaining < n) {
      throw malformed(`body ends inside ${field}: ${n} bytes needed, ${this.remaining} left`);
    }
  }
}

/**
 * Decodes one whole frame, header included, checking it in the order the specification gives:
 * CRC, flags, reserved bytes, type, then the body's fields in wire order and the absence of
 * bytes after them. Throws {@link ChorusProtocolError} with the code of the first failure.
 *
 * The caller has already checked the length field against its maximum; {@link FrameDecoder}
 * does both.
 */
export function decodeFrame(frame: Uint8Array): Frame {
  if (frame.length < HEADER_LEN) {
    throw malformed(`frame of ${frame.length} bytes is shorter than its 12-byte header`);
  }
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const declared = view.getUint32(0);
  if (declared !== frame.length - HEADER_LEN) {
    const given = frame.length - HEADER_LEN;
    throw malformed(`length field declares ${declared} body bytes, but the frame has ${given}`);
  }
  const expected = view.getUint32(8);
  const actual = frameCrc(frame);
  if (expected !== actual) {
    throw new ChorusProtocolError(
      ErrorCode.BAD_CRC,
      `frame carries CRC ${hex32(expected)}, but its bytes give ${hex32(actual)}`,
    );
  }
  if (frame[5] !== 0) {
    throw malformed(`flags byte is 0x${frame[5]!.toString(16)}; version 1 defines no flags`);
  }
  if (frame[6] !== 0 || frame[7] !== 0) {
    throw malformed("reserved header bytes are not zero");
  }
  return decodeBody(frame[4]!, new Reader(frame.subarray(HEADER_LEN)));
}

function hex32(value: number): string {
  return `0x${value.toString(16).padStart(8, "0")}`;
}

/** Reads the optional trailing `features` u32 of HELLO and WELCOME, absent when the body ended. */
function optionalFeatures(r: Reader, field: string): { features?: number } {
  return r.remaining > 0 ? { features: r.u32(field) } : {};
}

function decodeBody(type: number, r: Reader): Frame {
  const frame = decodeFields(type, r);
  if (r.remaining > 0) {
    throw malformed(`${frame.type} body has ${r.remaining} bytes after its last field`);
  }
  return frame;
}

function decodeFields(type: number, r: Reader): Frame {
  switch (type) {
    case FrameType.HELLO:
      return {
        type: "HELLO",
        version: r.u16("HELLO version"),
        maxFrame: r.u32("HELLO max_frame"),
        clientName: r.str8("HELLO client_name"),
        token: r.str16("HELLO token"),
        ...optionalFeatures(r, "HELLO features"),
      };
    case FrameType.WELCOME:
      return {
        type: "WELCOME",
        version: r.u16("WELCOME version"),
        maxFrame: r.u32("WELCOME max_frame"),
        serverName: r.str8("WELCOME server_name"),
        maxPayload: r.u32("WELCOME max_payload"),
        idleTimeoutMs: r.u32("WELCOME idle_timeout_ms"),
        ...optionalFeatures(r, "WELCOME features"),
      };
    case FrameType.SUBSCRIBE:
      return decodeSubscribe(r);
    case FrameType.SUBSCRIBED:
      return {
        type: "SUBSCRIBED",
        topic: r.topic("SUBSCRIBED topic"),
        stream: r.u64("SUBSCRIBED stream"),
        start: r.u64("SUBSCRIBED start"),
        earliest: r.u64("SUBSCRIBED earliest"),
        end: r.u64("SUBSCRIBED end"),
      };
    case FrameType.UNSUBSCRIBE:
      return { type: "UNSUBSCRIBE", topic: r.topic("UNSUBSCRIBE topic") };
    case FrameType.PUBLISH:
      return {
        type: "PUBLISH",
        seq: r.u64("PUBLISH seq"),
        topic: r.topic("PUBLISH topic"),
        payload: r.bytes32("PUBLISH payload"),
      };
    case FrameType.PUBLISH_ACK:
      return {
        type: "PUBLISH_ACK",
        seq: r.u64("PUBLISH_ACK seq"),
        code: r.u16("PUBLISH_ACK code"),
        offset: r.u64("PUBLISH_ACK offset"),
        stream: r.u64("PUBLISH_ACK stream"),
      };
    case FrameType.EVENTS:
      return decodeEvents(r);
    case FrameType.PING:
      return { type: "PING", nonce: r.u64("PING nonce") };
    case FrameType.PONG:
      return { type: "PONG", nonce: r.u64("PONG nonce") };
    case FrameType.ERROR:
      return {
        type: "ERROR",
        code: r.u16("ERROR code"),
        close: r.bool("ERROR close"),
        topic: r.str8("ERROR topic"),
        message: r.str16("ERROR message"),
      };
    case FrameType.MODERATE:
      return decodeModerate(r);
    case FrameType.MODERATE_ACK:
      return {
        type: "MODERATE_ACK",
        seq: r.u64("MODERATE_ACK seq"),
        code: r.u16("MODERATE_ACK code"),
      };
    case FrameType.REACT:
      return decodeReact(r);
    case FrameType.CAP:
      return {
        type: "CAP",
        topic: r.topic("CAP topic"),
        maxPerSec: r.u32("CAP max_per_sec"),
      };
    case FrameType.SKIPPED:
      return {
        type: "SKIPPED",
        topic: r.topic("SKIPPED topic"),
        count: r.u64("SKIPPED count"),
        through: r.u64("SKIPPED through"),
      };
    case FrameType.AUDIENCE:
      return decodeAudience(r);
    case FrameType.RELAY_PUBLISH:
      return decodeRelayPublish(r);
    default:
      throw new ChorusProtocolError(
        ErrorCode.UNKNOWN_FRAME_TYPE,
        `frame type 0x${type.toString(16).padStart(2, "0")} is not defined in version 1`,
      );
  }
}

function decodeSubscribe(r: Reader): Subscribe {
  const topic = r.topic("SUBSCRIBE topic");
  const mode = r.u8("SUBSCRIBE start mode");
  const value = r.u64("SUBSCRIBE start value");
  const start = decodeStart(mode, value);
  const stream = r.u64("SUBSCRIBE stream");
  return { type: "SUBSCRIBE", topic, start, stream };
}

function decodeStart(mode: number, value: bigint): StartAt {
  switch (mode) {
    case START_MODES.latest:
    case START_MODES.earliest:
      if (value !== 0n) {
        throw malformed(`SUBSCRIBE start mode ${mode} requires a start value of 0, got ${value}`);
      }
      return mode === START_MODES.latest ? StartAt.latest : StartAt.earliest;
    case START_MODES.offset:
      return StartAt.offset(value);
    case START_MODES.last:
      return StartAt.last(value);
    case START_MODES.since:
      return StartAt.since(value);
    default:
      throw malformed(`SUBSCRIBE start mode ${mode} is not defined; modes are 0 to 4`);
  }
}

function decodeModerate(r: Reader): Moderate {
  const seq = r.u64("MODERATE seq");
  const action = r.u8("MODERATE action");
  const topic = r.optionalTopic("MODERATE topic");
  const offset = r.u64("MODERATE offset");
  const user = r.str8("MODERATE user");
  const value = r.u64("MODERATE value");
  return { type: "MODERATE", seq, action: decodeModAction(action, topic, offset, user, value) };
}

/**
 * Builds a moderation action from its wire fields, or throws MALFORMED_FRAME naming the rule
 * they break. `topic` is `undefined` when the field is empty.
 */
function decodeModAction(
  action: number,
  topic: string | undefined,
  offset: bigint,
  user: string,
  value: bigint,
): ModAction {
  switch (action) {
    case MOD_ACTIONS.deleteComment:
      if (topic !== undefined && user === "" && value === 0n) {
        return ModAction.deleteComment(topic, offset);
      }
      break;
    case MOD_ACTIONS.ban:
      if (user === "" || offset !== 0n) {
        break;
      }
      if (topic === undefined && value === 0n) {
        return ModAction.ban(user);
      }
      if (topic !== undefined && value > 0n) {
        return ModAction.ban(user, { topic, seconds: value });
      }
      throw malformed("MODERATE ban needs both a topic and a purge window, or neither");
    case MOD_ACTIONS.unban:
      if (topic === undefined && user !== "" && offset === 0n && value === 0n) {
        return ModAction.unban(user);
      }
      break;
    case MOD_ACTIONS.slowMode:
      if (topic !== undefined && user === "" && offset === 0n) {
        return ModAction.slowMode(topic, value);
      }
      break;
    default:
      throw malformed(`MODERATE action ${action} is not defined; actions are 1 to 4`);
  }
  throw malformed(`MODERATE fields do not fit action ${action}`);
}

function decodeReact(r: Reader): React {
  const topic = r.topic("REACT topic");
  const kind = r.str8("REACT kind");
  const kindBytes = utf8Encoder.encode(kind).length;
  if (kindBytes === 0 || kindBytes > MAX_REACTION_KIND_BYTES) {
    throw malformed(`REACT kind is ${kindBytes} bytes; it must be 1 to 32`);
  }
  const count = r.u32("REACT count");
  if (count === 0) {
    throw malformed("REACT count is 0; it must be at least 1");
  }
  return { type: "REACT", topic, kind, count };
}

/** Minimum bytes of one AUDIENCE entry: a 1-byte topic with its length, and a u64. */
const MIN_AUDIENCE_ENTRY_BYTES = 1 + 1 + 8;

function decodeAudience(r: Reader): Audience {
  const count = r.u32("AUDIENCE count");
  // Checked before reading entries, so a huge count allocates nothing.
  if (count > Math.floor(r.remaining / MIN_AUDIENCE_ENTRY_BYTES)) {
    throw malformed(`AUDIENCE count ${count} needs more bytes than the ${r.remaining} left`);
  }
  const entries: AudienceEntry[] = [];
  for (let i = 0; i < count; i++) {
    entries.push({ topic: r.topic("AUDIENCE topic"), viewers: r.u64("AUDIENCE viewers") });
  }
  return { type: "AUDIENCE", entries };
}

function decodeRelayPublish(r: Reader): RelayPublish {
  const seq = r.u64("RELAY_PUBLISH seq");
  const topic = r.topic("RELAY_PUBLISH topic");
  const user = r.str8("RELAY_PUBLISH user");
  if (user === "") {
    throw malformed("RELAY_PUBLISH user is empty");
  }
  const priority = r.bool("RELAY_PUBLISH priority");
  const payload = r.bytes32("RELAY_PUBLISH payload");
  return { type: "RELAY_PUBLISH", seq, topic, user, priority, payload };
}

function decodeEvents(r: Reader): Events {
  const topic = r.topic("EVENTS topic");
  const stream = r.u64("EVENTS stream");
  const count = r.u32("EVENTS count");
  const events: EventEntry[] = [];
  let previous: bigint | undefined;
  for (let i = 0; i < count; i++) {
    const entry: EventEntry = {
      offset: r.u64("EVENTS entry offset"),
      timeUs: r.u64("EVENTS entry time_us"),
      flags: r.u8("EVENTS entry flags"),
      publisher: r.str8("EVENTS entry publisher"),
      payload: r.bytes32("EVENTS entry payload"),
    };
    if (previous !== undefined && entry.offset <= previous) {
      throw malformed(`EVENTS offset ${entry.offset} follows ${previous}; offsets must increase`);
    }
    previous = entry.offset;
    events.push(entry);
  }
  return { type: "EVENTS", topic, stream, events };
}

/**
 * Splits a received byte stream into frames.
 *
 * Feed it bytes with {@link push} in any pieces, then call {@link readPreamble} once until it
 * returns the version, and {@link next} until it returns `undefined`. A frame's length is
 * checked against the maximum as soon as its 4 length bytes are in, so the decoder never keeps
 * more than one frame of at most `12 + maxFrame` bytes plus the piece that completed it, as long
 * as the caller calls `next` after each push. After an error the stream cannot be resynchronised
 * and the connection must be closed.
 */
export class FrameDecoder {
  /** Largest frame body, in bytes, that the decoder accepts. */
  readonly maxFrame: number;
  #chunks: Uint8Array[] = [];
  /** Bytes of `#chunks[0]` already consumed. */
  #head = 0;
  #buffered = 0;

  constructor(maxFrame: number = DEFAULT_MAX_FRAME) {
    checkInteger(maxFrame, 0xffff_ffff, "maxFrame");
    this.maxFrame = maxFrame;
  }

  /** Number of bytes received and not yet decoded. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Appends received bytes. The decoder keeps a reference to them, so do not modify them. */
  push(bytes: Uint8Array): void {
    if (bytes.length === 0) {
      return;
    }
    // A plain view, because Node's Buffer.slice shares memory where Uint8Array.slice copies.
    this.#chunks.push(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    this.#buffered += bytes.length;
  }

  /**
   * Checks and removes the peer's preamble. Returns its version once all 8 bytes are in, and
   * `undefined` while waiting for more. Wrong magic fails as soon as its first wrong byte is in
   * (`BAD_PREAMBLE`); a version other than 1 fails with `UNSUPPORTED_VERSION`.
   */
  readPreamble(): number | undefined {
    const seen = this.#peek(Math.min(this.#buffered, MAGIC.length));
    for (let i = 0; i < seen.length; i++) {
      if (seen[i] !== MAGIC[i]) {
        throw new ChorusProtocolError(
          ErrorCode.BAD_PREAMBLE,
          "the peer's first bytes are not the magic CHORUS, so it does not speak chorus",
        );
      }
    }
    if (this.#buffered < PREAMBLE_LEN) {
      return undefined;
    }
    const preamble = this.#take(PREAMBLE_LEN);
    const version = (preamble[6]! << 8) | preamble[7]!;
    if (version !== VERSION) {
      throw new ChorusProtocolError(
        ErrorCode.UNSUPPORTED_VERSION,
        `the peer speaks protocol version ${version}; this client speaks version ${VERSION}`,
      );
    }
    return version;
  }

  /**
   * Removes and decodes the next whole frame. Returns `undefined` while the frame is incomplete;
   * throws {@link ChorusProtocolError} when the bytes are not a valid frame.
   */
  next(): Frame | undefined {
    if (this.#buffered < 4) {
      return undefined;
    }
    const lengthBytes = this.#peek(4);
    const length =
      ((lengthBytes[0]! << 24) |
        (lengthBytes[1]! << 16) |
        (lengthBytes[2]! << 8) |
        lengthBytes[3]!) >>>
      0;
    if (length > this.maxFrame) {
      throw new ChorusProtocolError(
        ErrorCode.FRAME_TOO_LARGE,
        `frame body of ${length} bytes exceeds the maximum of ${this.maxFrame}`,
      );
    }
    if (this.#buffered < HEADER_LEN + length) {
      return undefined;
    }
    return decodeFrame(this.#take(HEADER_LEN + length));
  }

  /**
   * Reports the end of the stream: throws `TRUNCATED_FRAME` when bytes of an incomplete frame or
   * preamble are left.
   */
  finish(): void {
    if (this.#buffered > 0) {
      throw new ChorusProtocolError(
        ErrorCode.TRUNCATED_FRAME,
        `the stream ended inside a frame, with ${this.#buffered} bytes of it received`,
      );
    }
  }

  /** Returns a copy of the first `n` buffered bytes without removing them; `n` is small. */
  #peek(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let filled = 0;
    let skip = this.#head;
    for (const chunk of this.#chunks) {
      if (filled === n) {
        break;
      }
      const part = chunk.subarray(skip, skip + (n - filled));
      out.set(part, filled);
      filled += part.length;
      skip = 0;
    }
    return out;
  }

  /** Removes the first `n` buffered bytes; the caller has checked that `n <= buffered`. */
  #take(n: number): Uint8Array {
    const first = this.#chunks[0]!;
    if (first.length - this.#head >= n) {
      // The whole range lies in the first chunk, so it needs no copy.
      const bytes = first.subarray(this.#head, this.#head + n);
      this.#consume(n);
      return bytes;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
      const part = chunk.subarray(this.#head, this.#head + (n - filled));
      out.set(part, filled);
      filled += part.length;
      this.#consume(part.length);
    }
    return out;
  }

  /** Advances past `n` bytes that lie in the first chunk. */
  #consume(n: number): void {
    this.#head += n;
    this.#buffered -= n;
    if (this.#head === this.#chunks[0]!.length) {
      this.#chunks.shift();
      this.#head = 0;
    }
  }
}
