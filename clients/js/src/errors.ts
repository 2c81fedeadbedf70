import { describeCode, ErrorCode } from "./codes.js";

/** Base class of the errors this library raises for connections and requests. */
export class ChorusError extends Error {
  override name = "ChorusError";
}

/** No connection could be opened to the server. */
export class ChorusConnectError extends ChorusError {
  override name = "ChorusConnectError";

  /** Address as given by the caller, such as `127.0.0.1:7400` or a WebSocket URL. */
  readonly address: string;

  constructor(address: string, detail: string, cause?: unknown) {
    super(`cannot connect to ${address}: ${detail}`, { cause });
    this.address = address;
  }
}

/** The connection was closed or lost; requests still waiting for an answer fail with this. */
export class ChorusClosedError extends ChorusError {
  override name = "ChorusClosedError";
}

/** The server did not answer within the allowed time. */
export class ChorusTimeoutError extends ChorusError {
  override name = "ChorusTimeoutError";
}

/**
 * The peer sent bytes that are not valid protocol version 1, or a frame that is not allowed at
 * that point. `code` is the error code the specification gives the failure, such as `BAD_CRC`.
 */
export class ChorusProtocolError extends ChorusError {
  override name = "ChorusProtocolError";

  /** Error code of the failure, a value of {@link ErrorCode}. */
  readonly code: number;

  constructor(code: number, detail: string) {
    super(`${describeCode(code)}: ${detail}`);
    this.code = code;
  }
}

/** The server sent an ERROR frame. */
export class ChorusServerError extends ChorusError {
  override name = "ChorusServerError";

  /** Error code sent by the server; codes that version 1 does not name are kept as they are. */
  readonly code: number;
  /** Topic the error concerns; empty when it concerns the connection. */
  readonly topic: string;
  /** The server's explanation, as sent. */
  readonly serverMessage: string;
  /** Whether the server closes the connection after the error. */
  readonly close: boolean;

  constructor(code: number, topic: string, message: string, close: boolean) {
    const where = topic === "" ? "" : ` on topic ${topic}`;
    super(`server error ${describeCode(code)}${where}: ${message}`);
    this.code = code;
    this.topic = topic;
    this.serverMessage = message;
    this.close = close;
  }
}

/** A publish was not stored: the server rejected it, or the client did not send it. */
export class ChorusPublishError extends ChorusError {
  override name = "ChorusPublishError";

  /** Sequence number of the rejected publish; `undefined` when it was never sent. */
  readonly seq: bigint | undefined;
  /** Reason for the rejection, a value of {@link ErrorCode} such as `PAYLOAD_TOO_LARGE`. */
  readonly code: number;

  constructor(seq: bigint | undefined, code: number, detail?: string) {
    const what = seq === undefined ? "publish" : `publish ${seq}`;
    super(`${what} rejected: ${describeCode(code)}${detail === undefined ? "" : `: ${detail}`}`);
    this.seq = seq;
    this.code = code;
  }
}

/** The server did not carry out a moderation action; `code` gives the reason. */
export class ChorusModerationError extends ChorusError {
  override name = "ChorusModerationError";

  /** Sequence number of the MODERATE frame. */
  readonly seq: bigint;
  /** Reason from the MODERATE_ACK, a value of {@link ErrorCode} such as `FORBIDDEN`. */
  readonly code: number;

  constructor(seq: bigint, code: number) {
    super(`moderation action ${seq} rejected: ${describeCode(code)}`);
    this.seq = seq;
    this.code = code;
  }
}

/** Cause of a {@link ChorusTlsError}. */
export type TlsFailure =
  /** A CA, certificate or key file of the TLS options could not be read. */
  | "setup"
  /** The server's certificate was not accepted: an unknown CA, a wrong name, or expired. */
  | "certificate"
  /** The server rejected the client's certificate, or required one and got none. */
  | "clientCertificate"
  /** The handshake failed for another reason, such as a TLS alert from the server. */
  | "handshake"
  /** A plaintext connection got a TLS record back, so the port serves TLS only. */
  | "tlsRequired"
  /** A TLS handshake got a reply that is not TLS, so the port does not serve TLS. */
  | "tlsNotOffered";

/**
 * A TLS connection could not be set up, or the client and the port disagree about TLS. Unlike
 * other connect failures it is permanent: trying again gives the same result until the
 * configuration changes.
 */
export class ChorusTlsError extends ChorusConnectError {
  override name = "ChorusTlsError";

  readonly failure: TlsFailure;
  /** Error code from Node or OpenSSL, such as `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, if any. */
  readonly tlsCode: string | undefined;

  constructor(
    address: string,
    failure: TlsFailure,
    detail: string,
    tlsCode?: string,
    cause?: unknown,
  ) {
    super(address, detail, cause);
    this.failure = failure;
    this.tlsCode = tlsCode;
  }
}

/** Server error codes after which a new connection is worth trying, after a back-off. */
const TRANSIENT_SERVER_CODES: ReadonlySet<number> = new Set([
  ErrorCode.SHUTTING_DOWN,
  ErrorCode.SLOW_CONSUMER,
  ErrorCode.TIMEOUT,
  ErrorCode.STORAGE_FAILED,
]);

/**
 * Returns whether a new connection may succeed where `error` failed.
 *
 * Failed and lost connections, timeouts, damaged frames and the server errors SHUTTING_DOWN,
 * SLOW_CONSUMER, TIMEOUT and STORAGE_FAILED are transient. A peer that does not speak protocol
 * version 1, TLS failures, every other server error, rejected publishes and moderation actions,
 * and errors that this library did not raise (such as an invalid topic name) are permanent.
 */
export function isTransient(error: unknown): boolean {
  if (error instanceof ChorusTlsError) {
    return false;
  }
  if (
    error instanceof ChorusConnectError ||
    error instanceof ChorusClosedError ||
    error instanceof ChorusTimeoutError
  ) {
    return true;
  }
  if (error instanceof ChorusProtocolError) {
    return error.code !== ErrorCode.BAD_PREAMBLE && error.code !== ErrorCode.UNSUPPORTED_VERSION;
  }
  if (error instanceof ChorusServerError) {
    return TRANSIENT_SERVER_CODES.has(error.code);
  }
  return false;
}
