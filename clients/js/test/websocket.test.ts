/**
 * The WebSocket transport, with the `ws` package in place of a browser's WebSocket. It runs
 * against chorusd's own WebSocket listener, and through an in-test bridge to chorusd's TCP port.
 * The bridge also checks the message mapping: the preamble, then exactly one frame per message.
 */

import assert from "node:assert/strict";
import { connect as netConnect } from "node:net";
import { after, before, describe, test } from "node:test";

import { WebSocket, WebSocketServer, type RawData } from "ws";

import {
  Backoff,
  ChorusConnectError,
  connect,
  connectWebSocket,
  StartAt,
  SUBPROTOCOL,
  Subscriber,
  type Connection,
  type Event,
  type WebSocketConstructor,
  type WebSocketOptions,
} from "@chorus/client";

import { Broker, hasWebSocketListener } from "./util/broker.js";
import { unusedPort } from "./util/ports.js";
import { take, withTimeout } from "./util/wait.js";

const WAIT_MS = 10_000;

/** The `ws` package's WebSocket, typed as the browser-like class the client expects. */
const NodeWebSocket: WebSocketConstructor = WebSocket;

/** The browser entry point, loaded from the build; Node resolves the package to the Node one. */
interface BrowserEntry {
  connect(url: string, options?: WebSocketOptions): Promise<Connection>;
}
const browser = (await import(new URL("../browser.js", import.meta.url).href)) as BrowserEntry;

const text = (event: Event): string => new TextDecoder().decode(event.payload);

let topicCounter = 0;
function freshTopic(): string {
  topicCounter += 1;
  return `test/ws-${process.pid}-${topicCounter}`;
}

/** Publishes and reads back one comment over `connection`. */
async function roundTrip(connection: Connection, topic: string): Promise<Event> {
  const subscription = await connection.subscribe(topic, StartAt.latest);
  const ack = await connection.publish(topic, "over websocket");
  const [event] = await take(subscription, 1, WAIT_MS, "comments");
  await subscription.unsubscribe();
  assert.equal(event?.offset, ack.offset);
  // take() returned one event, so it is defined.
  return event!;
}

const realListener = hasWebSocketListener();

describe(
  "WebSocket to chorusd's listener",
  { skip: realListener ? false : "this chorusd build has no --ws-listen flag" },
  () => {
    let broker: Broker;

    before(async () => {
      broker = await Broker.start({ wsListen: "127.0.0.1:0" });
    });

    after(async () => {
      await broker?.cleanup();
    });

    test("browser entry publishes and subscribes", async () => {
      const connection = await browser.connect(broker.wsUrl!, { WebSocket: NodeWebSocket });

      const event = await roundTrip(connection, freshTopic());

      assert.equal(text(event), "over websocket");
      assert.equal(connection.welcome.version, 1);
      await connection.close();
    });

    test("comment published over TCP reaches a WebSocket subscriber", async () => {
      const topic = freshTopic();
      const viewer = await connectWebSocket(broker.wsUrl!, { WebSocket: NodeWebSocket });
      const backend = await connect(broker.host, broker.port);
      const subscription = await viewer.subscribe(topic, StartAt.latest);

      const ack = await backend.publish(topic, "from the backend");
      const [event] = await take(subscription, 1, WAIT_MS, "comments");

      assert.equal(event?.offset, ack.offset);
      assert.equal(event && text(event), "from the backend");
      await viewer.close();
      await backend.close();
    });

    test("Subscriber over WebSocket resumes after a restart", { timeout: 60_000 }, async () => {
      const topic = freshTopic();
      const dial = () =>
        connectWebSocket(broker.wsUrl!, { WebSocket: NodeWebSocket, connectTimeoutMs: 2000 });
      const backoff = new Backoff({ initialMs: 20, maxMs: 200 });
      const backend = await connect(broker.host, broker.port);
      await Promise.all([0, 1, 2].map((i) => backend.publish(topic, `comment-${i}`)));
      await backend.close();
      const subscriber = await Subscriber.connect(dial, topic, StartAt.earliest, { backoff });
      const before = await take(subscriber, 3, WAIT_MS, "comments before the restart");

      broker = await broker.restart();
      const republisher = await connect(broker.host, broker.port);
      await Promise.all([3, 4].map((i) => republisher.publish(topic, `comment-${i}`)));
      await republisher.close();
      const afterRestart = await take(subscriber, 2, 30_000, "comments after the restart");
      await subscriber.close();

      assert.deepEqual(
        [...before, ...afterRestart].map(text),
        [0, 1, 2, 3, 4].map((i) => `comment-${i}`),
      );
      assert.ok(subscriber.reconnects >= 1);
    });
  },
);

/** A WebSocket server that relays each client to chorusd's TCP port, checking message bounds. */
class Bridge {
  readonly violations: string[] = [];
  messages = 0;
  readonly #server: WebSocketServer;

  private constructor(server: WebSocketServer) {
    this.#server = server;
  }

  /** Starts a bridge to `port`; `subprotocol` false makes it refuse every subprotocol. */
  static async start(port: number, subprotocol: string | false = SUBPROTOCOL): Promise<Bridge> {
    const server = new WebSocketServer({
      host: "127.0.0.1",
      port: 0,
      handleProtocols: (offered) =>
        subprotocol !== false && offered.has(subprotocol) ? subprotocol : false,
    });
    await new Promise<void>((resolve) => server.once("listening", resolve));
    const bridge = new Bridge(server);
    server.on("connection", (socket) => bridge.#relay(socket, port));
    return bridge;
  }

  get url(): string {
    const address = this.#server.address();
    if (address === null || typeof address === "string") {
      throw new Error("the bridge has no TCP address");
    }
    return `ws://127.0.0.1:${address.port}`;
  }

  async close(): Promise<void> {
    for (const client of this.#server.clients) {
      client.terminate();
    }
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #relay(socket: WebSocket, port: number): void {
    const tcp = netConnect({ host: "127.0.0.1", port });
    let first = true;
    socket.on("message", (data: RawData, isBinary: boolean) => {
      const bytes = Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]);
      this.#check(bytes, isBinary, first);
      first = false;
      tcp.write(bytes);
    });

    // chorusd's stream is cut back into the preamble and whole frames, one message each.
    let pending = Buffer.alloc(0);
    let preambleSent = false;
    tcp.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (!preambleSent && pending.length >= 8) {
        socket.send(pending.subarray(0, 8));
        pending = pending.subarray(8);
        preambleSent = true;
      }
      while (preambleSent && pending.length >= 12) {
        const total = 12 + pending.readUInt32BE(0);
        if (pending.length < total) {
          break;
        }
        socket.send(pending.subarray(0, total));
        pending = pending.subarray(total);
      }
    });
    tcp.on("close", () => socket.close());
    tcp.on("error", () => socket.terminate());
    socket.on("close", () => tcp.end());
  }

  #check(bytes: Buffer, isBinary: boolean, first: boolean): void {
    this.messages += 1;
    if (!isBinary) {
      this.violations.push(`message ${this.messages} is text`);
    } else if (first && bytes.length !== 8) {
      this.violations.push(`the first message is ${bytes.length} bytes, not the 8-byte preamble`);
    } else if (!first && (bytes.length < 12 || 12 + bytes.readUInt32BE(0) !== bytes.length)) {
      this.violations.push(`message ${this.messages} of ${bytes.length} bytes is not one frame`);
    }
  }
}

describe("WebSocket through a bridge to chorusd's TCP port", () => {
  let broker: Broker;
  let bridge: Bridge;

  before(async () => {
    broker = await Broker.start();
    bridge = await Bridge.start(broker.port);
  });

  after(async () => {
    await bridge?.close();
    await broker?.cleanup();
  });

  test("publishes and subscribes", async () => {
    const connection = await connectWebSocket(bridge.url, { WebSocket: NodeWebSocket });

    const event = await roundTrip(connection, freshTopic());

    assert.equal(text(event), "over websocket");
    await connection.close();
  });

  test("sends the preamble, then exactly one frame per message", async () => {
    const connection = await connectWebSocket(bridge.url, { WebSocket: NodeWebSocket });
    const topic = freshTopic();
    await Promise.all([1, 2, 3].map((i) => connection.publish(topic, `burst-${i}`)));
    await connection.ping();
    await connection.close();

    assert.deepEqual(bridge.violations, []);
    assert.ok(bridge.messages >= 6, `the bridge saw ${bridge.messages} messages`);
  });

  test("server refusing the subprotocol fails with ChorusConnectError", async () => {
    const refusing = await Bridge.start(broker.port, false);
    try {
      const opening = connectWebSocket(refusing.url, { WebSocket: NodeWebSocket });

      await assert.rejects(withTimeout(opening, WAIT_MS, "the refusal"), ChorusConnectError);
    } finally {
      await refusing.close();
    }
  });

  test("closed port fails with ChorusConnectError", async () => {
    const port = await unusedPort();
    const opening = connectWebSocket(`ws://127.0.0.1:${port}`, { WebSocket: NodeWebSocket });

    await assert.rejects(withTimeout(opening, WAIT_MS, "the failure"), ChorusConnectError);
  });
});
