/**
 * The chorus client for Node: connections over TCP with `node:net`, or over TLS with `node:tls`,
 * and over WebSocket with a WebSocket class such as the `ws` package's.
 *
 * ```ts
 * import { connect, StartAt, Subscriber } from "@chorus/client";
 *
 * const connection = await connect("127.0.0.1", 7400);
 * const ack = await connection.publish("event/final", "what a goal");
 * console.log(`stored at offset ${ack.offset}`);
 *
 * const subscriber = await Subscriber.connect(
 *   () => connect("127.0.0.1", 7443, { tls: { caFile: "/etc/chorus/ca.pem" } }),
 *   "event/final",
 *   StartAt.last(10n),
 * );
 * for await (const event of subscriber) {
 *   console.log(event.offset, new TextDecoder().decode(event.payload));
 * }
 * ```
 *
 * @module
 */

import { Connection } from "./connection.js";
import { ChorusTlsError } from "./errors.js";
import type { Options } from "./options.js";
import { tcpTransport } from "./tcp.js";
import { tlsConnectOptions, tlsHandshakeError, type TlsOptions } from "./tls.js";
import type { OpenTransport } from "./transport.js";
import {
  webSocketTransport,
  type WebSocketConstructor,
  type WebSocketLike,
  type WebSocketOptions,
} from "./websocket.js";

export * from "./core.js";
export { tcpTransport, type TcpTransportOptions } from "./tcp.js";
export { ALPN_PROTOCOL, type TlsOptions } from "./tls.js";

/** {@link Options} of a connection in Node. */
export interface NodeOptions extends Options {
  /** TLS settings; unset connects over plain TCP. */
  tls?: TlsOptions;
}

/** {@link WebSocketOptions} of a connection in Node. */
export interface NodeWebSocketOptions extends WebSocketOptions {
  /**
   * TLS settings of a `wss://` URL. They need a `WebSocket` class that takes the `ws` package's
   * options as its third constructor argument; without them `wss://` uses Node's default CA
   * store.
   */
  tls?: TlsOptions;
}

/**
 * Connects to a chorus server over TCP, or over TLS when `options.tls` is set, exchanges
 * preambles, sends HELLO and waits for WELCOME. TLS failures reject with
 * {@link ChorusTlsError}.
 */
export function connect(host: string, port: number, options?: NodeOptions): Promise<Connection> {
  const transport = tcpTransport(host, port, { tls: options?.tls, logger: options?.logger });
  return Connection.open(transport, options);
}

/**
 * Connects to a chorus server over WebSocket (`ws://` or `wss://` URL). Node 20 has no global
 * WebSocket, so pass one in `options.WebSocket`, such as the `ws` package's.
 */
export function connectWebSocket(url: string, options?: NodeWebSocketOptions): Promise<Connection> {
  if (options?.tls === undefined) {
    return Connection.open(webSocketTransport(url, options?.WebSocket), options);
  }
  return Connection.open(secureWebSocketTransport(url, options.tls, options), options);
}

/** A WebSocket class whose third constructor argument takes `node:tls` options, as `ws`'s does. */
type WebSocketWithOptions = new (
  url: string,
  protocols: string | string[] | undefined,
  options: object,
) => WebSocketLike & { on?(event: "error", listener: (error: Error) => void): unknown };

/**
 * Returns an {@link OpenTransport} that opens a WebSocket with the TLS settings `tls`, and reports
 * TLS failures as {@link ChorusTlsError}.
 */
function secureWebSocketTransport(
  url: string,
  tls: TlsOptions,
  options: NodeWebSocketOptions,
): OpenTransport {
  return async (handlers, signal) => {
    if (options.WebSocket === undefined) {
      throw new ChorusTlsError(
        url,
        "setup",
        "the tls option needs a WebSocket class that takes the ws package's options, " +
          "such as WebSocket from ws",
      );
    }
    const parsed = new URL(url);
    if (parsed.protocol !== "wss:") {
      throw new ChorusTlsError(url, "setup", "the tls option needs a wss:// URL");
    }
    const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
    const tlsOptions = await tlsConnectOptions(tls, host, url, undefined, options.logger);
    const Base = options.WebSocket as unknown as WebSocketWithOptions;
    let tlsError: ChorusTlsError | undefined;
    class SecureWebSocket extends Base {
      constructor(address: string, protocols?: string | string[]) {
        super(address, protocols, tlsOptions);
        this.on?.("error", (error) => {
          tlsError ??= tlsHandshakeError(error, url);
        });
      }
    }
    try {
      return await webSocketTransport(url, SecureWebSocket as WebSocketConstructor)(
        handlers,
        signal,
      );
    } catch (error) {
      throw tlsError ?? error;
    }
  };
}
