/**
 * Payload formats of the demo page, with no DOM: comments, reactions and viewer counts as JSON.
 *
 * @module
 */

/** A comment as the feed shows it. */
export interface Comment {
  /** Author name; empty when the payload names none. */
  readonly author: string;
  readonly text: string;
  /** Origin of the payload format: the demo page, chorus-bench replay, or unknown bytes. */
  readonly kind: "demo" | "bench" | "raw";
}

/** Reactions the page offers as buttons, in display order. */
export const REACTIONS: readonly string[] = ["👏", "❤️", "😂", "😮", "🎉"];

const decoder = new TextDecoder("utf-8", { fatal: false });

/**
 * Decodes a comment payload. The demo page publishes `{"a": author, "t": text}`; chorus-bench
 * replay publishes `{"i": index, "a": author, "t": text}`. Any other payload is shown as its
 * UTF-8 text, with invalid bytes replaced.
 */
export function decodeComment(payload: Uint8Array): Comment {
  const text = decoder.decode(payload);
  const value = parseObject(text);
  if (value === undefined || typeof value["t"] !== "string") {
    return { author: "", text, kind: "raw" };
  }
  const author = typeof value["a"] === "string" ? value["a"] : "";
  const kind = typeof value["i"] === "number" ? "bench" : "demo";
  return { author, text: value["t"], kind };
}

/** Encodes a comment as the demo page publishes it. */
export function encodeComment(author: string, text: string): string {
  return JSON.stringify({ a: author, t: text });
}

/** Encodes a reaction as the demo page publishes it on the reactions topic. */
export function encodeReaction(reaction: string): string {
  return JSON.stringify({ reaction });
}

/** Returns the reaction of a `{"reaction": "👏"}` payload, or `undefined` for anything else. */
export function decodeReaction(payload: Uint8Array): string | undefined {
  const value = parseObject(decoder.decode(payload));
  const reaction = value?.["reaction"];
  return typeof reaction === "string" ? reaction : undefined;
}

/**
 * Returns the viewer count of a payload on the viewers topic: `{"viewers": 1234}` or a bare
 * non-negative integer such as `1234`. Returns `undefined` for anything else.
 */
export function decodeViewers(payload: Uint8Array): number | undefined {
  const text = decoder.decode(payload).trim();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const count = isObject(value) ? value["viewers"] : value;
  return typeof count === "number" && Number.isSafeInteger(count) && count >= 0 ? count : undefined;
}

/** Returns the companion topic that carries reactions to the comments on `topic`. */
export function reactionsTopic(topic: string): string {
  return `${topic}/reactions`;
}

/** Returns the companion topic that carries viewer counts of `topic`. */
export function viewersTopic(topic: string): string {
  return `${topic}/viewers`;
}

function parseObject(text: string): Record<string, unknown> | undefined {
  // Only a JSON object can be one of the formats, so skip the parser for anything else.
  if (!text.trimStart().startsWith("{")) {
    return undefined;
  }
  try {
    const value: unknown = JSON.parse(text);
    return isObject(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
