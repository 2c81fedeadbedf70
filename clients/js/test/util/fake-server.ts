/**
 * A scripted server at the other end of an in-memory transport, for behaviour that a real broker
 * does not show on demand: server PINGs, ERROR frames, damaged bytes, streams that stop mid-frame.
 */

import {
  Connection,
  type Dial,
  type OpenTransport,
  type Options,
  type TransportHandlers,
} from "@chorus/client";
import {
  encodeFrame,
  encodePreamble,
  FrameDecoder,
  type Frame,
  type Hello,
  type Subscribe,
  type Welcome,
} from "@chorus/client/protocol";

import { withTimeout } from "./wait.js";

/** How long a test waits for the client's next frame. */
const FRAME_TIMEOUT_MS = 2000;

export const WELCOME: Welcome = {
  type: "WELCOME",
  version: 1,
  maxFrame: 1_048_576,
  serverName: "fake",
  maxPayload: 65_536,
  idleTimeoutMs: 0,
};

export interface FakeServerOptions {
  /** Whether the transport can pause reading; default true. */
  pausable?: boolean;
}

/** The server end of one in-memory connection. */
export class FakeServer {
  /** Bytes of each `send` call of the client, in order: one entry per preamble or frame. */
  readonly sent: Uint8Array[] = [];
  /** Whether the client has paused reading. */
  paused = false;
  /** Whether the client closed the transport. */
  closedByClient = false;

  readonly #pausable: boolean;
  readonly #decoder = new FrameDecoder();
  #preambleSeen = false;
  readonly #frames: Frame[] = [];
  #wake: (() => void) | undefined;
  #handlers: TransportHandlers | undefined;
  /** Bytes held back while the client is paused. */
  readonly #held: Uint8Array[] = [];
  #ended = false;

  constructor(options: FakeServerOptions = {}) {
    this.#pausable = options.pausable ?? true;
  }

  /** Returns the transport a client connects with; it can be opened once. */
  transport(): OpenTransport {
    return async (handlers) => {
      this.#handlers = handlers;
      return {
        peer: "fake-server",
        send: (bytes) => this.#receive(bytes),
        close: () => {
          this.closedByClient = true;
          this.end();
        },
        pause: () => {
          if (this.#pausable) {
            this.paused = true;
          }
          return this.#pausable;
        },
        resume: () => {
          this.paused = false;
          for (const bytes of this.#held.splice(0)) {
            this.#deliver(bytes);
          }
        },
      };
    };
  }

  /** Returns the client's next frame, failing after 2 seconds. */
  async nextFrame(): Promise<Frame> {
    const waitForFrame = async (): Promise<Frame> => {
      while (this.#frames.length === 0) {
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
        });
      }
      // The loop above ends only once a frame is queued.
      return this.#frames.shift()!;
    };
    return withTimeout(waitForFrame(), FRAME_TIMEOUT_MS, "a frame from the client");
  }

  /** Returns the client's next frame, failing unless it has type `type`. */
  async expect<T extends Frame["type"]>(type: T): Promise<Extract<Frame, { type: T }>> {
    const frame = await this.nextFrame();
    if (frame.type !== type) {
      throw new Error(`expected ${type} from the client, got ${frame.type}`);
    }
    return frame as Extract<Frame, { type: T }>;
  }

  /** Waits for the client's preamble and HELLO, and replies with a preamble and WELCOME. */
  async handshake(welcome: Partial<Welcome> = {}): Promise<Hello> {
    const hello = await this.expect("HELLO");
    this.sendPreamble();
    this.send({ ...WELCOME, ...welcome });
    return hello;
  }

  /** Replies to the next SUBSCRIBE with SUBSCRIBED for the given position. */
  async acceptSubscribe(position: {
    stream: bigint;
    start: bigint;
    earliest?: bigint;
    end?: bigint;
  }): Promise<Subscribe> {
    const subscribe = await this.expect("SUBSCRIBE");
    this.send({
      type: "SUBSCRIBED",
      topic: subscribe.topic,
      stream: position.stream,
      start: position.start,
      earliest: position.earliest ?? 0n,
      end: position.end ?? position.start,
    });
    return subscribe;
  }

  sendPreamble(): void {
    this.sendBytes(encodePreamble());
  }

  send(frame: Frame): void {
    this.sendBytes(encodeFrame(frame));
  }

  /** Sends EVENTS with one entry per offset, each with the payload `comment-<offset>`. */
  sendEvents(topic: string, stream: bigint, offsets: readonly bigint[]): void {
    const events = offsets.map((offset) => ({
      offset,
      timeUs: 1_780_000_000_000_000n + offset,
      flags: 0,
      publisher: "",
      payload: new TextEncoder().encode(`comment-${offset}`),
    }));
    this.send({ type: "EVENTS", topic, stream, events });
  }

  /** Sends raw bytes; while the client is paused they wait until it resumes. */
  sendBytes(bytes: Uint8Array): void {
    if (this.paused) {
      this.#held.push(bytes);
      return;
    }
    this.#deliver(bytes);
  }

  /** Closes the channel, as a server that goes away does; `error` reports a failure. */
  end(error?: Error): void {
    if (this.#ended) {
      return;
    }
    this.#ended = true;
    // Delivered after the bytes already sent, as a socket would.
    setImmediate(() => this.#handlers?.closed(error));
  }

  #deliver(bytes: Uint8Array): void {
    setImmediate(() => this.#handlers?.data(bytes));
  }

  #receive(bytes: Uint8Array): void {
    this.sent.push(bytes.slice());
    this.#decoder.push(bytes);
    if (!this.#preambleSeen) {
      if (this.#decoder.readPreamble() === undefined) {
        return;
      }
      this.#preambleSeen = true;
    }
    for (let frame = this.#decoder.next(); frame !== undefined; frame = this.#decoder.next()) {
      this.#frames.push(frame);
    }
    this.#wake?.();
  }
}

/**
 * Opens a connection to a new fake server that completes the handshake with `welcome`, and
 * returns both. The connection's keep-alive is off unless `options` turns it on.
 */
export async function connectFake(
  options: Options = {},
  serverOptions: FakeServerOptions = {},
  welcome: Partial<Welcome> = {},
): Promise<{ connection: Connection; server: FakeServer }> {
  const server = new FakeServer(serverOptions);
  const handshake = server.handshake(welcome);
  const connection = await Connection.open(server.transport(), { keepAliveMs: 0, ...options });
  await handshake;
  return { connection, server };
}

/**
 * Returns a dial function whose every call connects to a new fake server running `script` with
 * the call's index, and the servers created so far.
 */
export function fakeDial(
  script: (server: FakeServer, index: number) => Promise<void>,
  options: Options = {},
): { dial: Dial; servers: FakeServer[]; failures: unknown[] } {
  const servers: FakeServer[] = [];
  const failures: unknown[] = [];
  const dial: Dial = () => {
    const server = new FakeServer();
    const index = servers.length;
    servers.push(server);
    script(server, index).catch((error: unknown) => failures.push(error));
    return Connection.open(server.transport(), {
      keepAliveMs: 0,
      connectTimeoutMs: 2000,
      ...options,
    });
  };
  return { dial, servers, failures };
}
