import { DEFAULT_MAX_FRAME } from "./protocol.js";

/** Version of this package, sent in HELLO as part of the client name. */
export const CLIENT_VERSION = "0.1.0";

/** Receives the library's log records; `console` fits. Nothing is logged without one. */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

/** Settings of a {@link Connection}. Every field is optional. */
export interface Options {
  /** Client name and version sent in HELLO, for the server's logs; at most 255 bytes. */
  clientName?: string;
  /** Authentication token sent in HELLO; empty when the client has none. */
  token?: string;
  /** Milliseconds allowed to open the channel and finish the handshake together. Default 5000. */
  connectTimeoutMs?: number;
  /** Largest frame body, in bytes, the client accepts; sent in HELLO. Default 1 MiB. */
  maxFrame?: number;
  /**
   * Milliseconds between PING frames on a connection that sends nothing else, which keeps the
   * server's idle timeout from closing it and detects a dead connection: one that has received
   * nothing for three of these periods fails with a timeout. The default is a third of the
   * server's `idleTimeoutMs`, or 30,000 when the server has none; 0 turns it off.
   */
  keepAliveMs?: number;
  /**
   * Bytes of received comments that may wait in subscriptions for the application to read them.
   * Past the limit the connection stops reading from the channel, so the server slows down or
   * catches the subscriber up from its log later. A channel that cannot pause (a browser
   * WebSocket) is closed instead, and a {@link Subscriber} resumes on a new one. Default 8 MiB.
   */
  maxBufferedBytes?: number;
  /** Receives debug and warning records. */
  logger?: Logger;
}

/** {@link Options} with every default filled in. */
export interface ResolvedOptions {
  readonly clientName: string;
  readonly token: string;
  readonly connectTimeoutMs: number;
  readonly maxFrame: number;
  readonly keepAliveMs: number | undefined;
  readonly maxBufferedBytes: number;
  readonly logger: Logger | undefined;
}

export function resolveOptions(options: Options = {}): ResolvedOptions {
  return {
    clientName: options.clientName ?? `chorus-js/${CLIENT_VERSION}`,
    token: options.token ?? "",
    connectTimeoutMs: options.connectTimeoutMs ?? 5000,
    maxFrame: options.maxFrame ?? DEFAULT_MAX_FRAME,
    keepAliveMs: options.keepAliveMs,
    maxBufferedBytes: options.maxBufferedBytes ?? 8 * 1024 * 1024,
    logger: options.logger,
  };
}

/** Settings of a {@link Backoff}. */
export interface BackoffOptions {
  /** Ceiling of the first delay, in milliseconds. Default 100. */
  initialMs?: number;
  /** Largest ceiling any delay can have, in milliseconds. Default 5000. */
  maxMs?: number;
  /** Reconnect attempts allowed after a connection is lost; unset retries forever. */
  maxAttempts?: number;
}

/**
 * Exponential backoff with full jitter.
 *
 * Before attempt `n` (counted from 0) the delay is drawn uniformly from zero to
 * `min(maxMs, initialMs * 2^n)`, so clients that lost their connections at the same moment do
 * not come back at the same moment.
 */
export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly maxAttempts: number | undefined;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? 100;
    this.maxMs = options.maxMs ?? 5000;
    this.maxAttempts = options.maxAttempts;
  }

  /** Returns the largest delay, in milliseconds, before attempt `attempt`. */
  ceiling(attempt: number): number {
    return Math.min(this.maxMs, this.initialMs * 2 ** attempt);
  }

  /**
   * Draws the delay, in milliseconds, before attempt `attempt`. `random` returns a number in
   * [0, 1), as `Math.random` does.
   */
  delay(attempt: number, random: () => number = Math.random): number {
    return random() * this.ceiling(attempt);
  }

  /** Returns whether another attempt is allowed after `attempts` failed ones. */
  allows(attempts: number): boolean {
    return this.maxAttempts === undefined || attempts < this.maxAttempts;
  }
}
