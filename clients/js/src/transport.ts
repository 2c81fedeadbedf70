/**
 * The boundary between a {@link Connection} and the channel that carries its bytes: a TCP socket
 * in Node, a WebSocket in browsers. A transport moves bytes and nothing else; the codec and every
 * protocol rule live above it.
 *
 * @module
 */

import type { Connection } from "./connection.js";

/** Callbacks through which a transport hands over what it receives. */
export interface TransportHandlers {
  /** Receives the next piece of the byte stream, in order; pieces need not be whole frames. */
  data(bytes: Uint8Array): void;
  /** Called once when the channel has closed; `error` is set when it failed rather than ended. */
  closed(error?: Error): void;
}

/** An open, reliable, ordered channel to a chorus server. */
export interface Transport {
  /** Peer address for messages, such as `127.0.0.1:7400` or a WebSocket URL. */
  readonly peer: string;

  /**
   * Sends the preamble or one whole frame. A message-based transport sends each call as one
   * message, as the WebSocket mapping requires.
   */
  send(bytes: Uint8Array): void;

  /** Closes the channel after the bytes already sent, then calls `closed`. */
  close(): void;

  /**
   * Stops handing over received bytes until {@link resume}, so the peer's sends back up.
   * Returns false when the transport cannot pause, as with a browser WebSocket.
   */
  pause(): boolean;

  /** Hands over received bytes again after {@link pause}. */
  resume(): void;
}

/**
 * Opens a transport that delivers to `handlers`. Rejects when the channel cannot be opened, and
 * gives up, closing whatever it opened, once `signal` aborts.
 */
export type OpenTransport = (
  handlers: TransportHandlers,
  signal: AbortSignal,
) => Promise<Transport>;

/** Returns a {@link Connection}; {@link Subscriber} calls it for every new connection. */
export type Dial = () => Promise<Connection>;
