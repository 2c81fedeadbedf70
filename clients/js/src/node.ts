/**
 * The chorus client for Node: connections over TCP with `node:net`, and over WebSocket with a
 * WebSocket class such as the `ws` package's.
 *
 * ```ts
 * import { connect, StartAt, Subscriber } from "@chorus/client";
 *
 * const connection = await connect("127.0.0.1", 7400);
 * const ack = await connection.publish("event/final", "what a goal");
 * console.log(`stored at offset ${ack.offset}`);
 *
 * const subscriber = await Subscriber.connect(
 *   () => connect("127.0.0.1", 7400),
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
import type { Options } from "./options.js";
import { tcpTransport } from "./tcp.js";
import { webSocketTransport, type WebSocketOptions } from "./websocket.js";

export * from "./core.js";
export { tcpTransport } from "./tcp.js";

/**
 * Connects to a chorus server over TCP, exchanges preambles, sends HELLO and waits for WELCOME.
 */
export function connect(host: string, port: number, options?: Options): Promise<Connection> {
  return Connection.open(tcpTransport(host, port), options);
}

/**
 * Connects to a chorus server over WebSocket (`ws://` or `wss://` URL). Node 20 has no global
 * WebSocket, so pass one in `options.WebSocket`, such as the `ws` package's.
 */
export function connectWebSocket(url: string, options?: WebSocketOptions): Promise<Connection> {
  return Connection.open(webSocketTransport(url, options?.WebSocket), options);
}
