/**
 * Moderation, capped delivery and reactions against a real chorusd without authentication, where
 * every session may moderate: tombstones and deleted entries, slow mode, SKIPPED notices and the
 * `_reactions/` stream.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  ChorusModerationError,
  ChorusPublishError,
  connect,
  ErrorCode,
  isDeleted,
  isTombstone,
  ModAction,
  StartAt,
  tombstoneTarget,
  type Connection,
  type Event,
  type Subscription,
} from "@chorus/client";

import { Broker } from "./util/broker.js";
import { take, waitUntil, withTimeout } from "./util/wait.js";

const WAIT_MS = 10_000;

const text = (event: Event): string => new TextDecoder().decode(event.payload);

let topicCounter = 0;
function freshTopic(): string {
  topicCounter += 1;
  return `test/mod-${process.pid}-${topicCounter}`;
}

/**
 * Reads comments until `done` returns true for those read so far, failing after `ms`. Returns
 * the comments read.
 */
async function readUntil(
  subscription: Subscription,
  done: (events: readonly Event[]) => boolean,
  ms: number,
  what: string,
): Promise<Event[]> {
  const events: Event[] = [];
  const deadline = Date.now() + ms;
  while (!done(events)) {
    const left = Math.max(deadline - Date.now(), 0);
    const result = await withTimeout(subscription.next(), left, what);
    if (result.done === true) {
      throw new Error(`the subscription ended while waiting for ${what}`);
    }
    events.push(result.value);
  }
  return events;
}

describe("moderation against chorusd", () => {
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

  test("deleting a comment appends a tombstone and marks the comment deleted", async () => {
    const topic = freshTopic();
    const doomed = await connection.publish(topic, "spoiler");
    await connection.publish(topic, "kept");

    await withTimeout(
      connection.moderate(ModAction.deleteComment(topic, doomed.offset)),
      WAIT_MS,
      "MODERATE_ACK",
    );
    const subscription = await connection.subscribe(topic, StartAt.earliest);
    const [deleted, kept, tombstone] = await take(subscription, 3, WAIT_MS, "entries");
    await subscription.unsubscribe();

    assert.equal(deleted?.offset, doomed.offset);
    assert.equal(deleted !== undefined && isDeleted(deleted), true);
    assert.equal(deleted?.payload.byteLength, 0);
    assert.equal(kept !== undefined && text(kept), "kept");
    assert.equal(kept !== undefined && isDeleted(kept), false);
    assert.equal(tombstone !== undefined && isTombstone(tombstone), true);
    assert.equal(tombstone === undefined ? undefined : tombstoneTarget(tombstone), doomed.offset);
  });

  test("deleting an offset the topic does not keep is COMMENT_NOT_FOUND", async () => {
    const topic = freshTopic();
    await connection.publish(topic, "only one");

    const error = await withTimeout(
      connection.moderate(ModAction.deleteComment(topic, 999n)).catch((e: unknown) => e),
      WAIT_MS,
      "MODERATE_ACK",
    );

    assert.ok(error instanceof ChorusModerationError, String(error));
    assert.equal(error.code, ErrorCode.COMMENT_NOT_FOUND);
  });

  test("slow mode rejects a second comment within the interval", async () => {
    const topic = freshTopic();
    await withTimeout(
      connection.moderate(ModAction.slowMode(topic, 600_000n)),
      WAIT_MS,
      "MODERATE_ACK",
    );

    await connection.publish(topic, "first");
    const error = await connection.publish(topic, "second").catch((e: unknown) => e);

    assert.ok(error instanceof ChorusPublishError, String(error));
    assert.equal(error.code, ErrorCode.SLOW_MODE);
  });

  test("capped subscription counts every comment it leaves out", async () => {
    const topic = freshTopic();
    const count = 30;
    const viewer = await connect(broker.host, broker.port);
    const subscription = await viewer.subscribe(topic, StartAt.latest);
    await viewer.cap(topic, 2);
    // A PING round trip after CAP means the server has read the CAP before the comments.
    await viewer.ping();
    // Notices are handed over while a read waits, so a reader runs the whole time, as an
    // application's `for await` loop does. It ends when the viewer closes.
    const delivered: Event[] = [];
    const reading = (async () => {
      for await (const event of subscription) {
        delivered.push(event);
      }
    })();

    for (let i = 0; i < count; i++) {
      await connection.publish(topic, `burst-${i}`);
    }
    await waitUntil(
      () => BigInt(delivered.length) + subscription.skipped >= BigInt(count),
      WAIT_MS,
      "comments and SKIPPED notices that account for the burst",
    );
    await viewer.close();
    await reading;

    assert.ok(subscription.skipped > 0n, "some comments were skipped");
    assert.equal(BigInt(delivered.length) + subscription.skipped, BigInt(count));
  });

  test("reactions are summed in the _reactions stream", async () => {
    const topic = freshTopic();
    // chorusd writes companion streams only for topics that exist, which a first comment does.
    await connection.publish(topic, "kick-off");
    // NOTE: chorusd writes no `_reactions/` record for a topic that no connection subscribes
    // to, and the specification does not say whether it may drop them, so a viewer watches.
    const viewing = await connection.subscribe(topic, StartAt.latest);
    const watcher = await connection.subscribe(`_reactions/${topic}`, StartAt.latest);

    for (let i = 0; i < 3; i++) {
      await connection.react(topic, "heart");
    }
    const hearts = (events: readonly Event[]): number =>
      events
        .map((event) => JSON.parse(text(event)) as { reactions: Record<string, number> })
        .reduce((sum, interval) => sum + (interval.reactions["heart"] ?? 0), 0);
    const events = await readUntil(watcher, (read) => hearts(read) >= 3, WAIT_MS, "reactions");

    assert.equal(hearts(events), 3);
    await watcher.unsubscribe();
    await viewing.unsubscribe();
  });
});
