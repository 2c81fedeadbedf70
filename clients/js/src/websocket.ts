/**
 * The WebSocket transport. chorus over WebSocket uses the subprotocol `chorus.v1`: the first
 * binary message in each direction is the 8-byte preamble, and every frame after it travels in
 * exactly one binary message. This module uses only the WebSocket API of browsers, which the
 * `ws` package for Node also offers.
 *
 * @module
 */

import { ErrorCode } from "./codes.js";
import { ChorusConnectError, ChorusProtocolError } from "./errors.js";
import type { Options } from "./options.js";
import type { OpenTransport, Transport, TransportHandlers } from "./transport.js";

/** WebSocket subprotocol of chorus protocol version 1. */
export const SUBPROTOCOL = "chorus.v1";

/** WebSocket `readyState` of an open socket. */
const OPEN = 1;

/** Close code of a normal closure. */
const NORMAL_CLOSURE = 1000;

/** Close code a socket reports when the close frame carried no code. */
const NO_STATUS = 1005;

/**
 * The part of the WebSocket API this library uses; the browser's `WebSocket` and the `ws`
 * package's `WebSocket` both fit. Handler arguments are typed loosely so that both do.
 */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  /** Present in the `ws` package, absent in browsers. */
  pause?(): void;
  resume?(): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
}

/** A WebSocket class, such as `globalThis.WebSocket` or the `ws` package's `WebSocket`. */
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
) => WebSocketLike;

/** {@link Options} of a connection over WebSocket. */
export interface WebSocketOptions extends Options {
  /**
   * WebSocket class to open the socket with. Default: the global `WebSocket`, which browsers
   * have and Node 20 lacks; in Node 20 pass `WebSocket` from the `ws` package.
   */
  WebSocket?: WebSocketConstructor;
}

/** Returns an {@link OpenTransport} that opens a WebSocket to `url` (`ws://` or `wss://`). */
export function webSocketTransport(
  url: string,
  WebSocketClass?: WebSocketConstructor,
): OpenTransport {
  return (handlers, signal) =>
    new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      const Class =
        WebSocketClass ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
      if (Class === undefined) {
        reject(
          new ChorusConnectError(
            url,
            "this runtime has no global WebSocket; pass a WebSocket class in the WebSocket option",
          ),
        );
        return;
      }
      let socket: WebSocketLike;
      try {
        socket = new Class(url, SUBPROTOCOL);
      } catch (error) {
        reject(new ChorusConnectError(url, describe(error), error));
        return;
      }
      socket.binaryType = "arraybuffer";

      let lastError: string | undefined;
      const fail = (error: unknown): void => {
        signal.removeEventListener("abort", onAbort);
        socket.onopen = socket.onclose = socket.onerror = socket.onmessage = null;
        socket.close(NORMAL_CLOSURE);
        reject(error);
      };
      const onAbort = (): void => fail(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      socket.onerror = (event) => {
        lastError = describe(event);
      };
      socket.onclose = (event: { code?: number }) => {
        const detail = lastError ?? `the socket closed with code ${event.code ?? "unknown"}`;
        fail(new ChorusConnectError(url, detail));
      };
      socket.onopen = () => {
        if (socket.protocol !== SUBPROTOCOL) {
          const offered = socket.protocol === "" ? "none" : socket.protocol;
          const detail =
            `the server did not accept the WebSocket subprotocol ${SUBPROTOCOL} ` +
            `(it chose ${offered})`;
          fail(new ChorusConnectError(url, detail));
          return;
        }
        signal.removeEventListener("abort", onAbort);
        resolve(new WebSocketTransport(socket, url, handlers));
      };
    });
}

/** An open WebSocket carrying chorus. */
class WebSocketTransport implements Transport {
  readonly peer: string;
  readonly #socket: WebSocketLike;
  #error: Error | undefined;

  constructor(socket: WebSocketLike, url: string, handlers: TransportHandlers) {
    this.peer = url;
    this.#socket = socket;
    // NOTE: received messages are decoded as one byte stream, so a server that splits a frame
    // over several messages, against the mapping, is accepted rather than rejected.
    socket.onmessage = (event: { data?: unknown }) => {
      const bytes = binaryData(event.data);
      if (bytes === undefined) {
        this.#error ??= new ChorusProtocolError(
          ErrorCode.MALFORMED_FRAME,
          "the server sent a text WebSocket message; chorus uses binary messages only",
        );
        this.close();
        return;
      }
      handlers.data(bytes);
    };
    socket.onerror = (event) => {
      this.#error ??= new Error(describe(event));
    };
    socket.onclose = (event: { code?: number; reason?: string }) => {
      socket.onopen = socket.onclose = socket.onerror = socket.onmessage = null;
      handlers.closed(this.#error ?? closeError(event));
    };
  }

  send(bytes: Uint8Array): void {
    if (this.#socket.readyState === OPEN) {
      this.#socket.send(bytes);
    }
  }

  close(): void {
    this.#socket.close(NORMAL_CLOSURE);
  }

  pause(): boolean {
    if (this.#socket.pause === undefined) {
      return false;
    }
    this.#socket.pause();
    return true;
  }

  resume(): void {
    this.#socket.resume?.();
  }
}

/** Returns the bytes of a binary message, or `undefined` for a text message. */
function binaryData(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) {
    return new Uint8Array(data);
  }
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  return undefined;
}

/** Returns an error for an unclean close, or `undefined` for a normal one. */
function closeError(event: { code?: number; reason?: string }): Error | undefined {
  const code = event.code;
  if (code === NORMAL_CLOSURE || code === NO_STATUS) {
    return undefined;
  }
  const reason = event.reason === undefined || event.reason === "" ? "" : `: ${event.reason}`;
  return new Error(`the WebSocket closed with code ${code ?? "unknown"}${reason}`);
}

/** Returns a message for an error or an `error` event, which browsers give no detail. */
function describe(value: unknown): string {
  if (value instanceof Error) {
    return value.message;
  }
  const message = (value as { message?: unknown } | null)?.message;
  return typeof message === "string" && message !== "" ? message : "the WebSocket failed";
}
