import { connect as netConnect, type Socket } from "node:net";

import { ChorusConnectError } from "./errors.js";
import type { OpenTransport, Transport, TransportHandlers } from "./transport.js";

/** Milliseconds a closing socket may take to flush before it is destroyed. */
const CLOSE_GRACE_MS = 1000;

/** Returns an {@link OpenTransport} that opens a TCP connection to `host` and `port`. */
export function tcpTransport(host: string, port: number): OpenTransport {
  const peer = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  return (handlers, signal) =>
    new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      const socket = netConnect({ host, port });
      const onAbort = (): void => {
        socket.destroy();
        reject(signal.reason);
      };
      const onError = (error: Error): void => {
        signal.removeEventListener("abort", onAbort);
        socket.destroy();
        reject(new ChorusConnectError(peer, error.message, error));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      socket.once("error", onError);
      socket.once("connect", () => {
        signal.removeEventListener("abort", onAbort);
        socket.off("error", onError);
        resolve(new TcpTransport(socket, peer, handlers));
      });
    });
}

/** A connected `node:net` socket. */
class TcpTransport implements Transport {
  readonly peer: string;
  readonly #socket: Socket;
  #corked = false;
  #closing = false;
  #error: Error | undefined;

  constructor(socket: Socket, peer: string, handlers: TransportHandlers) {
    this.peer = peer;
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => handlers.data(chunk));
    socket.on("error", (error) => {
      this.#error = error;
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
}
