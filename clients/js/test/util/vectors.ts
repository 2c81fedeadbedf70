/** Loads the protocol test vectors in `spec/vectors/` and turns their JSON into frames. */

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

import {
  ErrorCode,
  ModAction,
  StartAt,
  type ErrorCodeName,
  type EventEntry,
  type Frame,
} from "@chorus/client/protocol";

/** `spec/vectors/` of the repository: tests run from `clients/js/dist/test/util/`. */
const VECTORS_DIR = resolve(
  fileURLToPath(new URL(".", import.meta.url)),
  "../../../../../spec/vectors",
);

export interface VectorFile<V> {
  readonly protocol_version: number;
  readonly default_max_frame?: number;
  readonly vectors: readonly V[];
}

export interface ValidVector {
  readonly description: string;
  readonly frame: Record<string, unknown>;
  readonly hex: string;
  readonly max_frame?: number;
}

export interface InvalidVector {
  readonly description: string;
  readonly hex: string;
  readonly error: ErrorCodeName;
  readonly max_frame?: number;
}

export interface PreambleVector {
  readonly description: string;
  readonly hex: string;
  readonly version?: number;
  readonly error?: ErrorCodeName;
  readonly incomplete?: boolean;
}

export function loadVectors<V>(name: "valid" | "invalid" | "preamble"): VectorFile<V> {
  const text = readFileSync(resolve(VECTORS_DIR, `${name}.json`), "utf8");
  return JSON.parse(text) as VectorFile<V>;
}

export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-f]*$/.test(hex)) {
    throw new Error(`invalid hex string of length ${hex.length}`);
  }
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) {
    bytes[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return bytes;
}

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Converts a vector's `frame` object, with snake_case fields and u64 strings, into a frame. */
export function frameFromJson(json: Record<string, unknown>): Frame {
  // The shape of each frame object is given in spec/vectors/README.md.
  const j = json as Record<string, any>;
  switch (j["type"] as string) {
    case "HELLO":
      return {
        type: "HELLO",
        version: j["version"],
        maxFrame: j["max_frame"],
        clientName: j["client_name"],
        token: j["token"],
        ...(j["features"] === undefined ? {} : { features: j["features"] }),
      };
    case "WELCOME":
      return {
        type: "WELCOME",
        version: j["version"],
        maxFrame: j["max_frame"],
        serverName: j["server_name"],
        maxPayload: j["max_payload"],
        idleTimeoutMs: j["idle_timeout_ms"],
        ...(j["features"] === undefined ? {} : { features: j["features"] }),
      };
    case "SUBSCRIBE":
      return {
        type: "SUBSCRIBE",
        topic: j["topic"],
        start: startFromJson(j["start"]),
        stream: BigInt(j["stream"]),
      };
    case "SUBSCRIBED":
      return {
        type: "SUBSCRIBED",
        topic: j["topic"],
        stream: BigInt(j["stream"]),
        start: BigInt(j["start"]),
        earliest: BigInt(j["earliest"]),
        end: BigInt(j["end"]),
      };
    case "UNSUBSCRIBE":
      return { type: "UNSUBSCRIBE", topic: j["topic"] };
    case "PUBLISH":
      return {
        type: "PUBLISH",
        seq: BigInt(j["seq"]),
        topic: j["topic"],
        payload: fromHex(j["payload"]),
      };
    case "PUBLISH_ACK":
      return {
        type: "PUBLISH_ACK",
        seq: BigInt(j["seq"]),
        code: codeFromJson(j["code"]),
        offset: BigInt(j["offset"]),
        stream: BigInt(j["stream"]),
      };
    case "EVENTS":
      return {
        type: "EVENTS",
        topic: j["topic"],
        stream: BigInt(j["stream"]),
        events: (j["events"] as Record<string, unknown>[]).map(entryFromJson),
      };
    case "PING":
    case "PONG":
      return { type: j["type"], nonce: BigInt(j["nonce"]) };
    case "ERROR":
      return {
        type: "ERROR",
        code: codeFromJson(j["code"]),
        close: j["close"],
        topic: j["topic"],
        message: j["message"],
      };
    case "MODERATE":
      return { type: "MODERATE", seq: BigInt(j["seq"]), action: modActionFromJson(j) };
    case "MODERATE_ACK":
      return { type: "MODERATE_ACK", seq: BigInt(j["seq"]), code: codeFromJson(j["code"]) };
    case "REACT":
      return { type: "REACT", topic: j["topic"], kind: j["kind"], count: j["count"] };
    case "CAP":
      return { type: "CAP", topic: j["topic"], maxPerSec: j["max_per_sec"] };
    case "SKIPPED":
      return {
        type: "SKIPPED",
        topic: j["topic"],
        count: BigInt(j["count"]),
        through: BigInt(j["through"]),
      };
    case "AUDIENCE":
      return {
        type: "AUDIENCE",
        entries: (j["entries"] as { topic: string; viewers: string }[]).map((entry) => ({
          topic: entry.topic,
          viewers: BigInt(entry.viewers),
        })),
      };
    case "RELAY_PUBLISH":
      return {
        type: "RELAY_PUBLISH",
        seq: BigInt(j["seq"]),
        topic: j["topic"],
        user: j["user"],
        priority: j["priority"],
        payload: fromHex(j["payload"]),
      };
    default:
      throw new Error(`vector has unknown frame type ${String(j["type"])}`);
  }
}

/** Converts MODERATE's wire fields `action, topic, offset, user, value` into an action. */
function modActionFromJson(j: Record<string, any>): ModAction {
  const topic = j["topic"] as string;
  const user = j["user"] as string;
  const value = BigInt(j["value"]);
  switch (j["action"]) {
    case 1:
      return ModAction.deleteComment(topic, BigInt(j["offset"]));
    case 2:
      return topic === "" ? ModAction.ban(user) : ModAction.ban(user, { topic, seconds: value });
    case 3:
      return ModAction.unban(user);
    case 4:
      return ModAction.slowMode(topic, value);
    default:
      throw new Error(`vector has unknown MODERATE action ${String(j["action"])}`);
  }
}

function startFromJson(json: { mode: string; value?: string }): StartAt {
  switch (json.mode) {
    case "latest":
      return StartAt.latest;
    case "earliest":
      return StartAt.earliest;
    case "offset":
      return StartAt.offset(BigInt(json.value ?? "missing"));
    case "last":
      return StartAt.last(BigInt(json.value ?? "missing"));
    case "since":
      return StartAt.since(BigInt(json.value ?? "missing"));
    default:
      throw new Error(`vector has unknown start mode ${json.mode}`);
  }
}

function entryFromJson(entry: Record<string, unknown>): EventEntry {
  const json = entry as Record<string, any>;
  return {
    offset: BigInt(json["offset"]),
    timeUs: BigInt(json["time_us"]),
    flags: json["flags"],
    publisher: json["publisher"],
    payload: fromHex(json["payload"]),
  };
}

/** Converts an error code as the vectors write it, a name or a number, into its value. */
export function codeFromJson(code: string | number): number {
  if (typeof code === "number") {
    return code;
  }
  const value = ErrorCode[code as ErrorCodeName];
  if (value === undefined) {
    throw new Error(`vector names unknown error code ${code}`);
  }
  return value;
}
