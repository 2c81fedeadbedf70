/**
 * The chorus client for browsers and other runtimes without `node:net`: connections over
 * WebSocket, with the subprotocol `chorus.v1`. It has no dependencies and imports no Node module.
 *
 * ```ts
 * import { connect, StartAt, Subscriber } from "@chorus/client";
 *
 * const subscriber = await Subscriber.connect(
 *   () => connect("ws://127.0.0.1:7401"),
 *   "event/final",
 *   StartAt.last(50n),
 * );
 * for await (const event of subscriber) {
 *   show(new TextDecoder().decode(event.payload));
 * }
 * ```
 *
 * @module
 */

import { Connection } from "./connection.js";
import { webSocketTransport, type WebSocketOptions } from "./websocket.js";

export * from "./core.js";

/**
 * Connects to a chorus server over WebSocket (`ws://` or `wss://` URL), exchanges preambles,
 * sends HELLO and waits for WELCOME. Uses the global `WebSocket` unless `options.WebSocket`
 * names another class.
 */
export function connect(url: string, options?: WebSocketOptions): Promise<Connection> {
  return Connection.open(webSocketTransport(url, options?.WebSocket), options);
}

/** The same as {@link connect}; the name matches the Node entry point's. */
export const connectWebSocket = connect;
