import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";

import { ChorusConnectError, ChorusTlsError } from "./errors.js";
import type { Logger } from "./options.js";
import {
  ALPN_PROTOCOL,
  isTlsRecordStart,
  tlsConnectOptions,
  tlsHandshakeError,
  type TlsOptions,
} from "./tls.js";
import type { OpenTransport, Transport, TransportHandlers } from "./transport.js";

/** Milliseconds a closing socket may take to flush before it is destroyed. */
const CLOSE_GRACE_MS = 1000;

/** Settings of {@link tcpTransport}. */
export interface TcpTransportOptions {
  /** TLS settings; unset connects over plain TCP. */
  tls?: TlsOptions | undefined;
  /** Receives the warning that {@link TlsOptions.insecureSkipVerifyForTesting} logs. */
  logger?: Logger | undefined;
}

/**
 * Returns an {@link OpenTransport} that opens a TCP connection to `host` and `port`, with a TLS
 * handshake first when `options.tls` is set.
 */
export function tcpTransport(
  host: string,
  port: number,
  options: TcpTransportOptions = {},
): OpenTransport {
  const peer = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const tls = options.tls;
  return async (handlers, signal) => {
    if (signal.aborted) {
      throw signal.reason;
    }
    if (tls === undefined) {
      const socket = netConnect({ host, port });
      await connected(socket, "connect", peer, signal, undefined);
      return new TcpTransport(socket, peer, handlers, false);
    }
    const tlsOptions = await tlsConnectOptions(tls, host, peer, ALPN_PROTOCOL, options.logger);
    if (signal.aborted) {
      throw signal.reason;
    }
    const socket = tlsConnect({ ...tlsOptions, host, port });
    await connected(socket, "secureConnect", peer, signal, (error) =>
      tlsHandshakeError(error, peer),
    );
    options.logger?.debug("TLS handshake done", {
      peer,
      version: socket.getProtocol(),
      cipher: socket.getCipher().name,
      alpn: socket.alpnProtocol,
    });
    return new TcpTransport(socket, peer, handlers, true);
  };
}

/**
 * Waits for `socket` to emit `event`. Rejects with the abort reason once `signal` aborts, and
 * otherwise with `classify`'s error for a socket error, or a {@link ChorusConnectError}.
 */
function connected(
  socket: Socket,
  event: "connect" | "secureConnect",
  peer: string,
  signal: AbortSignal,
  classify: ((error: Error) => ChorusConnectError | undefined) | undefined,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      socket.destroy();
      reject(signal.reason);
    };
    const onError = (error: Error): void => {
      signal.removeEventListener("abort", onAbort);
      socket.destroy();
      reject(classify?.(error) ?? new ChorusConnectError(peer, error.message, error));
    };
    // A server that closes during the TLS handshake ends the socket without an error.
    const onClose = (): void => onError(new Error("the server closed the connection"));
    signal.addEventListener("abort", onAbort, { once: true });
    socket.once("error", onError);
    socket.once("close", onClose);
    socket.once(event, () => {
      signal.removeEventListener("abort", onAbort);
      socket.off("error", onError);
      socket.off("close", onClose);
      resolve();
    });
  });
}

/** A connected `node:net` socket, or a `node:tls` socket after its handshake. */
class TcpTransport implements Transport {
  readonly peer: string;
  readonly #socket: Socket | TLSSocket;
  #corked = false;
  #closing = false;
  #error: Error | undefined;

  constructor(socket: Socket, peer: string, handlers: TransportHandlers, secure: boolean) {
    this.peer = peer;
    this.#socket = socket;
    socket.setNoDelay(true);
    let first = !secure;
    socket.on("data", (chunk: Buffer) => {
      if (first && chunk.length > 0) {
        first = false;
        if (isTlsRecordStart(chunk[0]!)) {
          this.#failTlsRequired();
          return;
        }
      }
      handlers.data(chunk);
    });
    socket.on("error", (error) => {
      this.#error ??= secure ? afterHandshakeError(error, peer) : error;
    });
    socket.on("close", () => handlers.closed(this.#error));
  }

  send(bytes: Uint8Array): void {
    if (!this.#socket.writable) {
      return;
    }
    // Frames sent in one turn of the event loop leave in one write instead of one each.
    if (!this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      process.nextTick(() => {
        this.#corked = false;
        this.#socket.uncork();
      });
    }
    this.#socket.write(bytes);
  }

  close(): void {
    if (this.#closing) {
      return;
    }
    this.#closing = true;
    this.#socket.end();
    const timer = setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS);
    timer.unref();
    this.#socket.once("close", () => clearTimeout(timer));
  }

  pause(): boolean {
    this.#socket.pause();
    return true;
  }

  resume(): void {
    this.#socket.resume();
  }

  /** Closes a plaintext connection whose server replied with a TLS record. */
  #failTlsRequired(): void {
    this.#error ??= new ChorusTlsError(
      this.peer,
      "tlsRequired",
      "the server speaks TLS on this port; connect with the tls option",
    );
    this.#socket.destroy();
  }
}

/**
 * Returns the error to report for a TLS socket that failed after its handshake: a
 * {@link ChorusTlsError} when the server rejected the client's certificate, which TLS 1.3
 * reports only then, and `error` itself otherwise.
 */
function afterHandshakeError(error: Error, peer: string): Error {
  const tlsError = tlsHandshakeError(error, peer);
  return tlsError?.failure === "clientCertificate" ? tlsError : error;
}
