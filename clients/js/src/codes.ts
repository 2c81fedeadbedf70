/**
 * Error codes of protocol version 1, by the names used in the specification and the test
 * vectors. Codes are stable: a value is never reused for another meaning.
 */
export const ErrorCode = {
  OK: 0,
  BAD_PREAMBLE: 1,
  UNSUPPORTED_VERSION: 2,
  FRAME_TOO_LARGE: 3,
  BAD_CRC: 4,
  UNKNOWN_FRAME_TYPE: 5,
  MALFORMED_FRAME: 6,
  INVALID_TOPIC: 7,
  TRUNCATED_FRAME: 8,
  UNEXPECTED_FRAME: 9,
  PAYLOAD_TOO_LARGE: 10,
  OFFSET_OUT_OF_RANGE: 11,
  SLOW_CONSUMER: 12,
  STORAGE_FAILED: 13,
  SHUTTING_DOWN: 14,
  TIMEOUT: 15,
  TOO_MANY_SUBSCRIPTIONS: 16,
  TOPIC_NOT_FOUND: 17,
  WRONG_ORIGIN: 18,
  UPSTREAM_UNAVAILABLE: 19,
  UNAUTHENTICATED: 20,
  TOKEN_EXPIRED: 21,
  FORBIDDEN: 22,
  BANNED: 23,
  RATE_LIMITED: 24,
  SLOW_MODE: 25,
  DUPLICATE_COMMENT: 26,
  BLOCKED_CONTENT: 27,
  COMMENT_NOT_FOUND: 28,
} as const;

/** Name of an error code that version 1 defines, such as `"SLOW_CONSUMER"`. */
export type ErrorCodeName = keyof typeof ErrorCode;

const NAMES: ReadonlyMap<number, ErrorCodeName> = new Map(
  (Object.keys(ErrorCode) as ErrorCodeName[]).map((name) => [ErrorCode[name], name]),
);

/**
 * Returns the specification's name of `code`, or `undefined` for a code that version 1 does not
 * name. Receivers accept such codes, because later servers may add codes without a new version.
 */
export function errorCodeName(code: number): ErrorCodeName | undefined {
  return NAMES.get(code);
}

/** Returns the name of `code` for messages: the specification's name, or `code 999`. */
export function describeCode(code: number): string {
  return errorCodeName(code) ?? `code ${code}`;
}
