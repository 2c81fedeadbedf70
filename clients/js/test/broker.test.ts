/**
 * Integration tests against a real chorusd on a loopback port with a temporary data directory:
 * publishing, every start mode, server errors, a resume across a broker restart, and fan-out.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  Backoff,
  ChorusConnectError,
  ChorusServerError,
  connect,
  ErrorCode,
  StartAt,
  Subscriber,
  type Ack,
  type Connection,
  type Event,
} from "@chorus/client";

import { Broker } from "./util/broker.js";
import { unusedPort } from "./util/ports.js";
import { take, withTimeout } from "./util/wait.js";

const WAIT_MS = 10_000;

const text = (event: Event): string => new TextDecoder().decode(event.payload);

let topicCounter = 0;
/** Returns a topic name no other test uses. */
function freshTopic(): string {
  topicCounter += 1;
  return `test/js-${process.pid}-${topicCounter}`;
}

/** Publishes `count` comments `comment-<i>`, with at most `window` waiting for their ack. */
async function publishMany(
  connection: Connection,
  topic: string,
  count: number,
  window = 100,
  first = 0,
): Promise<Ack[]> {
  const acks: Ack[] = [];
  for (let start = 0; start < count; start += window) {
    const batch = [];
    for (let i = start; i < Math.min(start + window, count); i++) {
      batch.push(connection.publish(topic, `comment-${first + i}`));
    }
    acks.push(...(await withTimeout(Promise.all(batch), WAIT_MS, "publish acks")));
  }
  return acks;
}

describe("against chorusd", () => {
  let broker: Broker;
  let connection: Connection;

  before(async () => {
    broker = await Broker.start();
    connection = await connect(broker.host, broker.port);
  });

  after(async () => {
    await connection?.close();
    await broker?.cleanup();
  });

  test("WELCOME announces the broker's limits", () => {
    assert.equal(connection.welcome.version, 1);
    assert.ok(connection.welcome.maxFrame >= 1_048_576);
    assert.ok(connection.welcome.maxPayload > 0);
  });

  test("publish returns consecutive offsets on one stream", async () => {
    const topic = freshTopic();

    const acks = await publishMany(connection, topic, 3);

    assert.deepEqual(
      acks.map((a) => a.offset),
      [0n, 1n, 2n],
    );
    assert.notEqual(acks[0]?.stream, 0n);
    assert.equal(acks[1]?.stream, acks[0]?.stream);
    assert.equal(acks[2]?.stream, acks[0]?.stream);
    assert.ok(acks[1]!.seq > acks[0]!.seq);
  });

  test("payload above max_payload is rejected and the connection stays usable", async () => {
    const topic = freshTopic();
    const tooLarge = new Uint8Array(connection.welcome.maxPayload + 1);

    await assert.rejects(connection.publish(topic, tooLarge), {
      name: "ChorusPublishError",
      code: ErrorCode.PAYLOAD_TOO_LARGE,
    });
    const ack = await connection.publish(topic, "fits");
    assert.equal(ack.offset, 0n);
  });

  test("binary payload and its fields arrive unchanged", async () => {
    const topic = freshTopic();
    const payload = Uint8Array.of(0x00, 0xff, 0xfe, 0x80, 0x0a);
    const before = BigInt(Date.now()) * 1000n;
    const ack = await connection.publish(topic, payload);

    const subscription = await connection.subscribe(topic, StartAt.earliest);
    const [event] = await take(subscription, 1, WAIT_MS, "comments");
    await subscription.unsubscribe();

    assert.deepEqual(event?.payload, payload);
    assert.equal(event?.offset, ack.offset);
    assert.equal(event?.stream, ack.stream);
    assert.equal(event?.topic, topic);
    assert.equal(typeof event?.publisher, "string");
    // The broker stamps the comment when it accepts it; allow a minute of clock difference.
    assert.ok(event!.timeUs > before - 60_000_000n, `time_us ${event?.timeUs} before ${before}`);
    assert.ok(event!.timeUs < before + 60_000_000n, `time_us ${event?.timeUs} after ${before}`);
  });

  describe("start modes", () => {
    let topic: string;
    let acks: Ack[];

    before(async () => {
      topic = freshTopic();
      acks = await publishMany(connection, topic, 10);
    });

    test("latest delivers only comments published after subscribing", async () => {
      const subscription = await connection.subscribe(topic, StartAt.latest);
      const ack = await connection.publish(topic, "after");
      const [event] = await take(subscription, 1, WAIT_MS, "comments");
      await subscription.unsubscribe();

      assert.equal(subscription.subscribed.start, subscription.subscribed.end);
      assert.equal(event?.offset, ack.offset);
      assert.equal(event && text(event), "after");
    });

    test("earliest delivers from the oldest comment kept", async () => {
      const subscription = await connection.subscribe(topic, StartAt.earliest);
      const events = await take(subscription, 10, WAIT_MS, "comments");
      await subscription.unsubscribe();

      assert.equal(subscription.subscribed.start, 0n);
      assert.equal(subscription.subscribed.stream, acks[0]?.stream);
      assert.deepEqual(
        events.map(text),
        acks.map((_, i) => `comment-${i}`),
      );
    });

    test("offset delivers from that offset", async () => {
      const subscription = await connection.subscribe(topic, StartAt.offset(7n), acks[0]!.stream);
      const events = await take(subscription, 3, WAIT_MS, "comments");
      await subscription.unsubscribe();

      assert.equal(subscription.subscribed.start, 7n);
      assert.deepEqual(
        events.map((e) => e.offset),
        [7n, 8n, 9n],
      );
    });

    test("last N delivers the last N comments", async () => {
      const subscription = await connection.subscribe(topic, StartAt.last(4n));
      const events = await take(subscription, 4, WAIT_MS, "comments");
      await subscription.unsubscribe();

      const end = subscription.subscribed.end;
      assert.equal(subscription.subscribed.start, end - 4n);
      assert.deepEqual(
        events.map((e) => e.offset),
        [end - 4n, end - 3n, end - 2n, end - 1n],
      );
    });

    test("since T starts at the first comment stored at T or later", async () => {
      const all = await connection.subscribe(topic, StartAt.earliest);
      const kept = await take(all, 10, WAIT_MS, "comments");
      await all.unsubscribe();
      const time = kept[5]!.timeUs;
      // Comments stored within one microsecond share a time, so the first match may be earlier.
      const expected = kept.find((e) => e.timeUs >= time)!.offset;

      const since = await connection.subscribe(topic, StartAt.since(time));
      const [event] = await take(since, 1, WAIT_MS, "comments");
      await since.unsubscribe();

      assert.equal(since.subscribed.start, expected);
      assert.equal(event?.offset, expected);
    });

    test("since 0 starts at the earliest and since the maximum at the end", async () => {
      const fromZero = await connection.subscribe(topic, StartAt.since(0n));
      await fromZero.unsubscribe();
      const fromMax = await connection.subscribe(topic, StartAt.since(2n ** 64n - 1n));
      await fromMax.unsubscribe();

      assert.equal(fromZero.subscribed.start, fromZero.subscribed.earliest);
      assert.equal(fromMax.subscribed.start, fromMax.subscribed.end);
    });

    test("offset past the end fails with OFFSET_OUT_OF_RANGE", async () => {
      const subscribing = connection.subscribe(topic, StartAt.offset(1_000_000n));

      await assert.rejects(subscribing, (error: unknown) => {
        assert.ok(error instanceof ChorusServerError);
        assert.equal(error.code, ErrorCode.OFFSET_OUT_OF_RANGE);
        assert.equal(error.topic, topic);
        assert.equal(error.close, false);
        return true;
      });
      assert.equal(connection.isClosed, false);
    });
  });

  test("subscribe to a missing topic waits for its first comment", async () => {
    const topic = freshTopic();
    const subscription = await connection.subscribe(topic, StartAt.latest);

    const ack = await connection.publish(topic, "first");
    const [event] = await take(subscription, 1, WAIT_MS, "comments");
    await subscription.unsubscribe();

    assert.equal(subscription.subscribed.stream, 0n);
    assert.equal(subscription.subscribed.start, 0n);
    assert.equal(event?.offset, 0n);
    assert.equal(event?.stream, ack.stream);
  });

  test("unsubscribe ends the iterator", async () => {
    const topic = freshTopic();
    const subscription = await connection.subscribe(topic, StartAt.latest);

    await subscription.unsubscribe();
    await connection.publish(topic, "unseen");

    assert.deepEqual(await subscription.next(), { done: true, value: undefined });
  });

  test("ping gets its PONG", async () => {
    const roundTrip = await withTimeout(connection.ping(), WAIT_MS, "the PONG");

    assert.ok(roundTrip >= 0);
  });

  test("connect to a closed port fails with ChorusConnectError", async () => {
    const port = await unusedPort();

    await assert.rejects(connect("127.0.0.1", port), ChorusConnectError);
  });
});

describe("Subscriber against chorusd", () => {
  test("resume after restart has no gap or duplicate", { timeout: 60_000 }, async () => {
    let broker = await Broker.start();
    const topic = freshTopic();
    const dial = () => connect(broker.host, broker.port, { connectTimeoutMs: 2000 });
    const backoff = new Backoff({ initialMs: 20, maxMs: 200 });
    try {
      const publisher = await dial();
      const firstAcks = await publishMany(publisher, topic, 60);
      await publisher.close();
      const subscriber = await Subscriber.connect(dial, topic, StartAt.earliest, { backoff });
      // 40 are read before the restart; 20 more wait in the subscriber or in the log.
      const before = await take(subscriber, 40, WAIT_MS, "comments before the restart");

      broker = await broker.restart();
      const republisher = await dial();
      const laterAcks = await publishMany(republisher, topic, 40, 100, 60);
      await republisher.close();
      const afterRestart = await take(subscriber, 60, 30_000, "comments after the restart");
      await subscriber.close();

      const events = [...before, ...afterRestart];
      const expected = Array.from({ length: 100 }, (_, i) => BigInt(i));
      assert.deepEqual(
        events.map((e) => e.offset),
        expected,
      );
      assert.deepEqual(
        events.map(text),
        expected.map((i) => `comment-${i}`),
      );
      assert.equal(laterAcks[0]?.stream, firstAcks[0]?.stream, "the stream survives a restart");
      assert.ok(subscriber.reconnects >= 1, `reconnects: ${subscriber.reconnects}`);
      assert.equal(subscriber.nextOffset, 100n);
    } finally {
      await broker.cleanup();
    }
  });

  test(
    "1,000 comments reach 5 subscribers exactly once in order",
    { timeout: 60_000 },
    async () => {
      const broker = await Broker.start();
      const topic = freshTopic();
      const dial = () => connect(broker.host, broker.port);
      try {
        const subscribers = await Promise.all(
          Array.from({ length: 5 }, () => Subscriber.connect(dial, topic, StartAt.latest)),
        );
        const publisher = await dial();

        const publishing = publishMany(publisher, topic, 1000);
        const received = await Promise.all(
          subscribers.map((s) => take(s, 1000, 30_000, "comments")),
        );
        const acks = await publishing;
        await publisher.close();
        await Promise.all(subscribers.map((s) => s.close()));

        const expectedOffsets = acks.map((a) => a.offset);
        const expectedTexts = acks.map((_, i) => `comment-${i}`);
        assert.deepEqual(
          expectedOffsets,
          Array.from({ length: 1000 }, (_, i) => BigInt(i)),
          "offsets follow publish order",
        );
        for (const [index, events] of received.entries()) {
          assert.deepEqual(
            events.map((e) => e.offset),
            expectedOffsets,
            `subscriber ${index} offsets`,
          );
          assert.deepEqual(events.map(text), expectedTexts, `subscriber ${index} payloads`);
        }
      } finally {
        await broker.cleanup();
      }
    },
  );
});
