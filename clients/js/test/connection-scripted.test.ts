/**
 * Connection behaviour against a scripted in-memory server: the frames a real broker sends only
 * in rare situations (PING, ERROR, damaged or cut-off bytes) and flow control.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  ChorusClosedError,
  ChorusProtocolError,
  ChorusPublishError,
  ChorusServerError,
  ChorusTimeoutError,
  Connection,
  ErrorCode,
  StartAt,
} from "@chorus/client";
import { encodeFrame, encodePreamble } from "@chorus/client/protocol";

import { connectFake, FakeServer } from "./util/fake-server.js";
import { take, waitUntil, withTimeout } from "./util/wait.js";
import { toHex } from "./util/vectors.js";

const WAIT_MS = 2000;

describe("handshake", () => {
  test("sends the preamble and HELLO as separate sends", async () => {
    const { connection, server } = await connectFake({ clientName: "test/1", token: "t0k" });

    assert.equal(toHex(server.sent[0]!), toHex(encodePreamble()));
    const hello = {
      type: "HELLO",
      version: 1,
      maxFrame: 1_048_576,
      clientName: "test/1",
      token: "t0k",
    } as const;
    assert.equal(toHex(server.sent[1]!), toHex(encodeFrame(hello)));
    await connection.close();
  });

  test("exposes the server's WELCOME", async () => {
    const { connection } = await connectFake({}, {}, { maxPayload: 1234, serverName: "s/2" });

    assert.equal(connection.welcome.maxPayload, 1234);
    assert.equal(connection.welcome.serverName, "s/2");
    await connection.close();
  });

  test("wrong server preamble fails with BAD_PREAMBLE and sends nothing more", async () => {
    const server = new FakeServer();
    const script = (async () => {
      await server.expect("HELLO");
      server.sendBytes(new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n"));
    })();

    const opening = Connection.open(server.transport(), { keepAliveMs: 0 });

    await assert.rejects(opening, { name: "ChorusProtocolError", code: ErrorCode.BAD_PREAMBLE });
    await script;
    assert.equal(server.sent.length, 2, "only the preamble and HELLO were sent");
    assert.equal(server.closedByClient, true);
  });

  test("ERROR instead of WELCOME fails with ChorusServerError", async () => {
    const server = new FakeServer();
    const script = (async () => {
      await server.expect("HELLO");
      server.sendPreamble();
      server.send({
        type: "ERROR",
        code: ErrorCode.FRAME_TOO_LARGE,
        close: true,
        topic: "",
        message: "max_frame must be at least 1048576",
      });
    })();

    const opening = Connection.open(server.transport(), { keepAliveMs: 0, maxFrame: 1024 });

    await assert.rejects(opening, (error: unknown) => {
      assert.ok(error instanceof ChorusServerError);
      assert.equal(error.code, ErrorCode.FRAME_TOO_LARGE);
      assert.equal(error.close, true);
      assert.equal(error.serverMessage, "max_frame must be at least 1048576");
      return true;
    });
    await script;
  });

  test("silent server fails with ChorusTimeoutError", async () => {
    const server = new FakeServer();

    const opening = Connection.open(server.transport(), { keepAliveMs: 0, connectTimeoutMs: 50 });

    await assert.rejects(opening, ChorusTimeoutError);
    assert.equal(server.closedByClient, true);
  });
});

describe("requests", () => {
  test("acks are matched to publishes by seq in any order", async () => {
    const { connection, server } = await connectFake();

    const first = connection.publish("live", "a");
    const second = connection.publish("live", "b");
    const publishA = await server.expect("PUBLISH");
    const publishB = await server.expect("PUBLISH");
    server.send({ type: "PUBLISH_ACK", seq: publishB.seq, code: 0, offset: 11n, stream: 5n });
    server.send({ type: "PUBLISH_ACK", seq: publishA.seq, code: 0, offset: 10n, stream: 5n });

    assert.deepEqual(await first, { seq: publishA.seq, offset: 10n, stream: 5n });
    assert.deepEqual(await second, { seq: publishB.seq, offset: 11n, stream: 5n });
    await connection.close();
  });

  test("publish sends a string payload as UTF-8", async () => {
    const { connection, server } = await connectFake();

    void connection.publish("live", "olé").catch(() => undefined);
    const publish = await server.expect("PUBLISH");

    assert.equal(toHex(publish.payload), "6f6cc3a9");
    await connection.close();
  });

  test("rejected publish fails with ChorusPublishError", async () => {
    const { connection, server } = await connectFake();

    const publishing = connection.publish("live", "x");
    const publish = await server.expect("PUBLISH");
    server.send({
      type: "PUBLISH_ACK",
      seq: publish.seq,
      code: ErrorCode.STORAGE_FAILED,
      offset: 0n,
      stream: 0n,
    });

    await assert.rejects(publishing, (error: unknown) => {
      assert.ok(error instanceof ChorusPublishError);
      assert.equal(error.code, ErrorCode.STORAGE_FAILED);
      assert.equal(error.seq, publish.seq);
      return true;
    });
    assert.equal(connection.isClosed, false);
    await connection.close();
  });

  test("payload above max_payload is rejected without sending", async () => {
    const { connection, server } = await connectFake({}, {}, { maxPayload: 4 });

    await assert.rejects(connection.publish("live", "12345"), (error: unknown) => {
      assert.ok(error instanceof ChorusPublishError);
      assert.equal(error.code, ErrorCode.PAYLOAD_TOO_LARGE);
      assert.equal(error.seq, undefined);
      return true;
    });
    assert.equal(server.sent.length, 2, "only the preamble and HELLO were sent");
    await connection.close();
  });

  test("invalid topic is rejected with a RangeError", async () => {
    const { connection } = await connectFake();

    await assert.rejects(connection.publish("a//b", "x"), RangeError);
    await assert.rejects(connection.subscribe("../x"), RangeError);
    await connection.close();
  });

  test("server PING is answered with PONG of the same nonce", async () => {
    const { connection, server } = await connectFake();

    server.send({ type: "PING", nonce: 2n ** 63n + 1n });

    assert.deepEqual(await server.expect("PONG"), { type: "PONG", nonce: 2n ** 63n + 1n });
    await connection.close();
  });

  test("ping resolves when the matching PONG arrives", async () => {
    const { connection, server } = await connectFake();

    const pinging = connection.ping();
    const ping = await server.expect("PING");
    server.send({ type: "PONG", nonce: ping.nonce + 100n });
    server.send({ type: "PONG", nonce: ping.nonce });

    assert.equal(typeof (await withTimeout(pinging, WAIT_MS, "the PONG")), "number");
    await connection.close();
  });
});

describe("server errors", () => {
  test("ERROR close=1 fails waiting requests with ChorusServerError", async () => {
    const { connection, server } = await connectFake();

    const publishing = connection.publish("live", "x");
    await server.expect("PUBLISH");
    server.send({
      type: "ERROR",
      code: ErrorCode.SHUTTING_DOWN,
      close: true,
      topic: "",
      message: "bye",
    });

    await assert.rejects(publishing, { name: "ChorusServerError", code: ErrorCode.SHUTTING_DOWN });
    const reason = await withTimeout(connection.closed, WAIT_MS, "the close");
    assert.ok(reason instanceof ChorusServerError);
    assert.equal(connection.isClosed, true);
    assert.equal(server.closedByClient, true);
  });

  test("ERROR close=0 fails only the named topic's subscription", async () => {
    const { connection, server } = await connectFake();
    const subscribingA = connection.subscribe("a");
    await server.acceptSubscribe({ stream: 1n, start: 0n });
    const subscribingB = connection.subscribe("b");
    await server.acceptSubscribe({ stream: 2n, start: 0n });
    const [a, b] = await Promise.all([subscribingA, subscribingB]);

    server.send({
      type: "ERROR",
      code: ErrorCode.STORAGE_FAILED,
      close: false,
      topic: "a",
      message: "disk",
    });
    server.sendEvents("b", 2n, [0n]);

    await assert.rejects(a.next(), { name: "ChorusServerError", code: ErrorCode.STORAGE_FAILED });
    const [event] = await take(b, 1, WAIT_MS, "events of b");
    assert.equal(event?.offset, 0n);
    assert.equal(connection.isClosed, false);
    await connection.close();
  });

  test("ERROR close=0 rejects a waiting subscribe", async () => {
    const { connection, server } = await connectFake();

    const subscribing = connection.subscribe("live", StartAt.offset(99n));
    await server.expect("SUBSCRIBE");
    server.send({
      type: "ERROR",
      code: ErrorCode.OFFSET_OUT_OF_RANGE,
      close: false,
      topic: "live",
      message: "offset 99 is past the end 3",
    });

    await assert.rejects(subscribing, (error: unknown) => {
      assert.ok(error instanceof ChorusServerError);
      assert.equal(error.code, ErrorCode.OFFSET_OUT_OF_RANGE);
      assert.equal(error.topic, "live");
      assert.equal(error.close, false);
      return true;
    });
    await connection.close();
  });

  test("unknown error code is kept as a number", async () => {
    const { connection, server } = await connectFake();

    const subscribing = connection.subscribe("live");
    await server.expect("SUBSCRIBE");
    server.send({ type: "ERROR", code: 999, close: false, topic: "live", message: "new" });

    await assert.rejects(subscribing, { name: "ChorusServerError", code: 999 });
    await connection.close();
  });
});

describe("invalid data from the server", () => {
  test("frame a server may not send closes with UNEXPECTED_FRAME", async () => {
    const { connection, server } = await connectFake();

    server.send({ type: "UNSUBSCRIBE", topic: "live" });

    const error = await server.expect("ERROR");
    assert.equal(error.code, ErrorCode.UNEXPECTED_FRAME);
    assert.equal(error.close, true);
    const reason = await withTimeout(connection.closed, WAIT_MS, "the close");
    assert.ok(reason instanceof ChorusProtocolError);
    assert.equal(reason.code, ErrorCode.UNEXPECTED_FRAME);
  });

  test("damaged frame closes with BAD_CRC and reports it to the server", async () => {
    const { connection, server } = await connectFake();
    const publishing = connection.publish("live", "x");
    await server.expect("PUBLISH");

    const frame = encodeFrame({ type: "PING", nonce: 1n });
    frame[frame.length - 1]! ^= 0x01;
    server.sendBytes(frame);

    await assert.rejects(publishing, { name: "ChorusProtocolError", code: ErrorCode.BAD_CRC });
    const error = await server.expect("ERROR");
    assert.equal(error.code, ErrorCode.BAD_CRC);
    assert.equal(error.close, true);
  });

  test("stream ending inside a frame is TRUNCATED_FRAME", async () => {
    const { connection, server } = await connectFake();
    const publishing = connection.publish("live", "x");
    await server.expect("PUBLISH");

    server.sendBytes(encodeFrame({ type: "PING", nonce: 1n }).subarray(0, 5));
    server.end();

    await assert.rejects(publishing, {
      name: "ChorusProtocolError",
      code: ErrorCode.TRUNCATED_FRAME,
    });
  });

  test("clean end of the stream fails waiting requests with ChorusClosedError", async () => {
    const { connection, server } = await connectFake();
    const publishing = connection.publish("live", "x");
    await server.expect("PUBLISH");

    server.end();

    await assert.rejects(publishing, ChorusClosedError);
    assert.ok((await connection.closed) instanceof ChorusClosedError);
  });
});

describe("subscriptions", () => {
  test("events arrive in order with their topic and stream", async () => {
    const { connection, server } = await connectFake();
    const subscribing = connection.subscribe("live", StartAt.earliest);
    const subscribe = await server.acceptSubscribe({
      stream: 7n,
      start: 4n,
      earliest: 4n,
      end: 6n,
    });
    const subscription = await subscribing;

    server.sendEvents("live", 7n, [4n, 5n]);
    server.sendEvents("live", 7n, [6n]);
    const events = await take(subscription, 3, WAIT_MS, "events");

    assert.deepEqual(subscribe.start, StartAt.earliest);
    assert.equal(subscription.subscribed.start, 4n);
    assert.deepEqual(
      events.map((e) => e.offset),
      [4n, 5n, 6n],
    );
    assert.equal(events[0]?.topic, "live");
    assert.equal(events[0]?.stream, 7n);
    assert.equal(new TextDecoder().decode(events[2]?.payload), "comment-6");
    await connection.close();
  });

  test("unsubscribe ends the iterator and sends UNSUBSCRIBE", async () => {
    const { connection, server } = await connectFake();
    const subscribing = connection.subscribe("live");
    await server.acceptSubscribe({ stream: 1n, start: 0n });
    const subscription = await subscribing;

    await subscription.unsubscribe();
    server.sendEvents("live", 1n, [0n]);

    assert.deepEqual(await server.expect("UNSUBSCRIBE"), { type: "UNSUBSCRIBE", topic: "live" });
    assert.deepEqual(await subscription.next(), { done: true, value: undefined });
    await connection.close();
  });

  test("leaving a for-await loop unsubscribes", async () => {
    const { connection, server } = await connectFake();
    const subscribing = connection.subscribe("live");
    await server.acceptSubscribe({ stream: 1n, start: 0n });
    const subscription = await subscribing;
    server.sendEvents("live", 1n, [0n, 1n]);

    for await (const event of subscription) {
      assert.equal(event.offset, 0n);
      break;
    }

    assert.equal((await server.expect("UNSUBSCRIBE")).topic, "live");
    await connection.close();
  });

  test("a second subscribe to a topic replaces the first", async () => {
    const { connection, server } = await connectFake();
    const subscribingFirst = connection.subscribe("live");
    await server.acceptSubscribe({ stream: 1n, start: 0n });
    const first = await subscribingFirst;

    const subscribingSecond = connection.subscribe("live", StartAt.offset(0n));
    await server.acceptSubscribe({ stream: 1n, start: 0n });
    const second = await subscribingSecond;
    server.sendEvents("live", 1n, [0n]);

    assert.deepEqual(await first.next(), { done: true, value: undefined });
    assert.equal((await take(second, 1, WAIT_MS, "events"))[0]?.offset, 0n);
    await connection.close();
  });

  test("close returns queued events, then ends", async () => {
    const { connection, server } = await connectFake();
    const subscribing = connection.subscribe("live");
    await server.acceptSubscribe({ stream: 1n, start: 0n });
    const subscription = await subscribing;
    server.sendEvents("live", 1n, [0n, 1n]);
    // The client handles frames in order, so the PONG means the EVENTS are queued.
    server.send({ type: "PING", nonce: 1n });
    await server.expect("PONG");

    await connection.close();

    const events = await take(subscription, 2, WAIT_MS, "events");
    assert.equal(events.length, 2);
    assert.deepEqual(await subscription.next(), { done: true, value: undefined });
    await assert.rejects(connection.publish("live", "late"), ChorusClosedError);
  });
});

describe("flow control", () => {
  /** Sends `count` events of about 100 bytes each to a new subscription and returns it. */
  async function flood(
    options: { maxBufferedBytes: number },
    serverOptions: { pausable: boolean },
    count: number,
  ) {
    const { connection, server } = await connectFake(options, serverOptions);
    const subscribing = connection.subscribe("live");
    await server.acceptSubscribe({ stream: 1n, start: 0n });
    const subscription = await subscribing;
    const offsets = Array.from({ length: count }, (_, i) => BigInt(i));
    server.sendEvents("live", 1n, offsets);
    return { connection, server, subscription };
  }

  test("reading pauses past maxBufferedBytes and resumes once read", async () => {
    const { connection, server, subscription } = await flood(
      { maxBufferedBytes: 1000 },
      { pausable: true },
      20,
    );
    await waitUntil(() => server.paused, WAIT_MS, "the client to pause");

    const events = await take(subscription, 20, WAIT_MS, "events");

    assert.equal(server.paused, false);
    assert.equal(events.length, 20);
    await connection.close();
  });

  test("a channel that cannot pause is closed past maxBufferedBytes", async () => {
    const { connection, subscription } = await flood(
      { maxBufferedBytes: 1000 },
      { pausable: false },
      20,
    );
    const reason = await withTimeout(connection.closed, WAIT_MS, "the close");

    const events = await take(subscription, 20, WAIT_MS, "events");

    assert.ok(reason instanceof ChorusClosedError);
    assert.match(reason.message, /maxBufferedBytes/);
    assert.equal(events.length, 20, "events received before the close are kept");
    await assert.rejects(subscription.next(), ChorusClosedError);
  });
});

describe("keep-alive", () => {
  test("idle connection sends PING", async () => {
    const { connection, server } = await connectFake({ keepAliveMs: 20 });

    const ping = await server.expect("PING");

    server.send({ type: "PONG", nonce: ping.nonce });
    await connection.close();
  });

  test("server silent for three periods closes with ChorusTimeoutError", async () => {
    const { connection } = await connectFake({ keepAliveMs: 20 });

    const reason = await withTimeout(connection.closed, WAIT_MS, "the close");

    assert.ok(reason instanceof ChorusTimeoutError);
  });
});
