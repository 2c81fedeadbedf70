/**
 * Subscriber behaviour against scripted in-memory servers: resume positions, repeated comments,
 * recreated topics, and when it stops retrying.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  Backoff,
  ChorusConnectError,
  ChorusServerError,
  ErrorCode,
  StartAt,
  Subscriber,
  type Dial,
  type StreamChange,
} from "@chorus/client";

import { fakeDial, type FakeServer } from "./util/fake-server.js";
import { take, withTimeout } from "./util/wait.js";

const WAIT_MS = 2000;
const FAST = new Backoff({ initialMs: 1, maxMs: 5 });

/** Completes the handshake, replies to SUBSCRIBE and returns the SUBSCRIBE frame. */
async function accept(server: FakeServer, stream: bigint, start: bigint) {
  await server.handshake();
  return server.acceptSubscribe({ stream, start });
}

function offsets(events: readonly { offset: bigint }[]): bigint[] {
  return events.map((e) => e.offset);
}

describe("Subscriber", () => {
  test("resumes after the last comment it returned", async () => {
    const subscribes: { start: StartAt; stream: bigint }[] = [];
    const { dial } = fakeDial(async (server, index) => {
      if (index === 0) {
        subscribes.push(await accept(server, 7n, 0n));
        server.sendEvents("live", 7n, [0n, 1n, 2n]);
        server.end();
      } else {
        subscribes.push(await accept(server, 7n, 3n));
        server.sendEvents("live", 7n, [3n, 4n]);
      }
    });
    const subscriber = await Subscriber.connect(dial, "live", StartAt.earliest, { backoff: FAST });

    const events = await take(subscriber, 5, WAIT_MS, "comments");

    assert.deepEqual(offsets(events), [0n, 1n, 2n, 3n, 4n]);
    assert.deepEqual(subscribes[1], {
      type: "SUBSCRIBE",
      topic: "live",
      start: StartAt.offset(3n),
      stream: 7n,
    });
    assert.equal(subscriber.reconnects, 1);
    assert.equal(subscriber.nextOffset, 5n);
    await subscriber.close();
  });

  test("drops comments a server repeats after a resume", async () => {
    const { dial } = fakeDial(async (server, index) => {
      if (index === 0) {
        await accept(server, 7n, 0n);
        server.sendEvents("live", 7n, [0n, 1n]);
        server.end();
      } else {
        await accept(server, 7n, 2n);
        server.sendEvents("live", 7n, [0n, 1n, 2n, 3n]);
      }
    });
    const subscriber = await Subscriber.connect(dial, "live", StartAt.earliest, { backoff: FAST });

    const events = await take(subscriber, 4, WAIT_MS, "comments");

    assert.deepEqual(offsets(events), [0n, 1n, 2n, 3n]);
    await subscriber.close();
  });

  test("reports a topic recreated while disconnected", async () => {
    const changes: StreamChange[] = [];
    const { dial } = fakeDial(async (server, index) => {
      if (index === 0) {
        await accept(server, 7n, 0n);
        server.sendEvents("live", 7n, [0n, 1n]);
        server.end();
      } else {
        await accept(server, 9n, 0n);
        server.sendEvents("live", 9n, [0n]);
      }
    });
    const subscriber = await Subscriber.connect(dial, "live", StartAt.earliest, {
      backoff: FAST,
      onStreamChange: (change) => changes.push(change),
    });

    const events = await take(subscriber, 3, WAIT_MS, "comments");

    assert.deepEqual(offsets(events), [0n, 1n, 0n]);
    assert.equal(events[2]?.stream, 9n);
    assert.deepEqual(changes, [{ topic: "live", previous: 7n, current: 9n, start: 0n }]);
    assert.equal(subscriber.stream, 9n);
    await subscriber.close();
  });

  test("reports a topic recreated during the subscription", async () => {
    const changes: StreamChange[] = [];
    const { dial } = fakeDial(async (server) => {
      await accept(server, 7n, 0n);
      server.sendEvents("live", 7n, [0n, 1n]);
      server.sendEvents("live", 9n, [0n, 1n]);
    });
    const subscriber = await Subscriber.connect(dial, "live", StartAt.earliest, {
      onStreamChange: (change) => changes.push(change),
    });

    const events = await take(subscriber, 4, WAIT_MS, "comments");

    assert.deepEqual(offsets(events), [0n, 1n, 0n, 1n]);
    assert.deepEqual(changes, [{ topic: "live", previous: 7n, current: 9n, start: 0n }]);
    await subscriber.close();
  });

  test("topic created after subscribing is no stream change", async () => {
    const changes: StreamChange[] = [];
    const { dial } = fakeDial(async (server) => {
      await accept(server, 0n, 0n);
      server.sendEvents("live", 4n, [0n]);
    });
    const subscriber = await Subscriber.connect(dial, "live", StartAt.latest, {
      onStreamChange: (change) => changes.push(change),
    });

    const events = await take(subscriber, 1, WAIT_MS, "comments");

    assert.equal(events[0]?.stream, 4n);
    assert.deepEqual(changes, []);
    await subscriber.close();
  });

  test("transient server error reconnects", async () => {
    const { dial, servers } = fakeDial(async (server, index) => {
      await accept(server, 7n, index === 0 ? 0n : 1n);
      if (index === 0) {
        server.sendEvents("live", 7n, [0n]);
        server.send({
          type: "ERROR",
          code: ErrorCode.SLOW_CONSUMER,
          close: true,
          topic: "live",
          message: "queue full",
        });
      } else {
        server.sendEvents("live", 7n, [1n]);
      }
    });
    const subscriber = await Subscriber.connect(dial, "live", StartAt.earliest, { backoff: FAST });

    const events = await take(subscriber, 2, WAIT_MS, "comments");

    assert.deepEqual(offsets(events), [0n, 1n]);
    assert.equal(servers.length, 2);
    await subscriber.close();
  });

  test("permanent server error is thrown without reconnecting", async () => {
    const { dial, servers } = fakeDial(async (server) => {
      await accept(server, 7n, 0n);
      server.send({
        type: "ERROR",
        code: ErrorCode.TOPIC_NOT_FOUND,
        close: false,
        topic: "live",
        message: "gone",
      });
    });
    const subscriber = await Subscriber.connect(dial, "live", StartAt.earliest, { backoff: FAST });

    await assert.rejects(withTimeout(subscriber.next(), WAIT_MS, "the error"), (error: unknown) => {
      assert.ok(error instanceof ChorusServerError);
      assert.equal(error.code, ErrorCode.TOPIC_NOT_FOUND);
      return true;
    });
    assert.equal(servers.length, 1);
    await subscriber.close();
  });

  test("gives up after maxAttempts with the last error", async () => {
    const { dial: firstDial } = fakeDial(async (server) => {
      await accept(server, 7n, 0n);
      server.end();
    });
    let dials = 0;
    const dial: Dial = () => {
      dials += 1;
      if (dials === 1) {
        return firstDial();
      }
      return Promise.reject(new ChorusConnectError("fake", "connection refused"));
    };
    const backoff = new Backoff({ initialMs: 1, maxMs: 5, maxAttempts: 3 });
    const subscriber = await Subscriber.connect(dial, "live", StartAt.earliest, { backoff });

    await assert.rejects(withTimeout(subscriber.next(), WAIT_MS, "the error"), ChorusConnectError);
    assert.equal(dials, 4, "one connect and three reconnect attempts");
    await subscriber.close();
  });

  test("close ends a waiting next", async () => {
    const { dial } = fakeDial(async (server) => {
      await accept(server, 7n, 0n);
    });
    const subscriber = await Subscriber.connect(dial, "live");

    const waiting = subscriber.next();
    await subscriber.close();

    assert.deepEqual(await withTimeout(waiting, WAIT_MS, "next"), { done: true, value: undefined });
  });

  test("first connect error is thrown without retries", async () => {
    let dials = 0;
    const dial: Dial = () => {
      dials += 1;
      return Promise.reject(new ChorusConnectError("fake", "connection refused"));
    };

    await assert.rejects(Subscriber.connect(dial, "live"), ChorusConnectError);
    assert.equal(dials, 1);
  });

  test("saved stream id is sent with the first subscribe", async () => {
    let subscribe: { stream: bigint; start: StartAt } | undefined;
    const { dial } = fakeDial(async (server) => {
      subscribe = await accept(server, 7n, 42n);
    });

    const subscriber = await Subscriber.connect(dial, "live", StartAt.offset(42n), { stream: 7n });

    assert.equal(subscribe?.stream, 7n);
    assert.deepEqual(subscribe?.start, StartAt.offset(42n));
    assert.equal(subscriber.nextOffset, 42n);
    await subscriber.close();
  });
});
