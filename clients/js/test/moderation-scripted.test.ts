/**
 * Moderation, reactions, capped delivery and SKIPPED notices against a scripted in-memory
 * server: the frames the client sends, and how it matches and surfaces the server's replies.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  Backoff,
  ChorusClosedError,
  ChorusModerationError,
  ChorusProtocolError,
  ErrorCode,
  isTransient,
  ModAction,
  StartAt,
  Subscriber,
  type Skipped,
} from "@chorus/client";

import { connectFake, fakeDial, type FakeServer } from "./util/fake-server.js";
import { take, waitUntil, withTimeout } from "./util/wait.js";

const WAIT_MS = 2000;
const FAST = new Backoff({ initialMs: 1, maxMs: 5 });

function offsets(events: readonly { offset: bigint }[]): bigint[] {
  return events.map((e) => e.offset);
}

/** Replies to the next MODERATE with MODERATE_ACK `code` and returns the MODERATE. */
async function answerModerate(server: FakeServer, code: number) {
  const moderate = await server.expect("MODERATE");
  server.send({ type: "MODERATE_ACK", seq: moderate.seq, code });
  return moderate;
}

describe("moderate", () => {
  test("resolves on MODERATE_ACK OK", async () => {
    const { connection, server } = await connectFake();

    const done = connection.moderate(ModAction.deleteComment("live", 42n));
    const moderate = await answerModerate(server, ErrorCode.OK);

    assert.equal(await withTimeout(done, WAIT_MS, "MODERATE_ACK"), undefined);
    assert.deepEqual(moderate.action, ModAction.deleteComment("live", 42n));
    await connection.close();
  });

  test("rejects with the code of a rejected action", async () => {
    const { connection, server } = await connectFake();

    const done = connection.moderate(ModAction.ban("user-7"));
    const moderate = await answerModerate(server, ErrorCode.FORBIDDEN);

    const error = await withTimeout(
      done.catch((e: unknown) => e),
      WAIT_MS,
      "rejection",
    );
    assert.ok(error instanceof ChorusModerationError, String(error));
    assert.equal(error.code, ErrorCode.FORBIDDEN);
    assert.equal(error.seq, moderate.seq);
    assert.match(error.message, /rejected: FORBIDDEN/);
    assert.equal(isTransient(error), false);
    await connection.close();
  });

  test("matches acknowledgements by sequence number", async () => {
    const { connection, server } = await connectFake();

    const first = connection.moderate(ModAction.deleteComment("live", 1n));
    // Caught at once, because it rejects before the test awaits it.
    const second = connection
      .moderate(ModAction.deleteComment("live", 2n))
      .catch((e: unknown) => e);
    const one = await server.expect("MODERATE");
    const two = await server.expect("MODERATE");
    server.send({ type: "MODERATE_ACK", seq: two.seq, code: ErrorCode.COMMENT_NOT_FOUND });
    server.send({ type: "MODERATE_ACK", seq: one.seq, code: ErrorCode.OK });

    await withTimeout(first, WAIT_MS, "first MODERATE_ACK");
    const error = await withTimeout(second, WAIT_MS, "second MODERATE_ACK");
    assert.ok(error instanceof ChorusModerationError, String(error));
    assert.equal(error.code, ErrorCode.COMMENT_NOT_FOUND);
    assert.notEqual(one.seq, two.seq);
    await connection.close();
  });

  test("uses sequence numbers that publishes do not", async () => {
    const { connection, server } = await connectFake();

    const published = connection.publish("live", "hi");
    const publish = await server.expect("PUBLISH");
    const moderated = connection.moderate(ModAction.unban("user-7"));
    const moderate = await answerModerate(server, ErrorCode.OK);
    server.send({
      type: "PUBLISH_ACK",
      seq: publish.seq,
      code: ErrorCode.OK,
      offset: 0n,
      stream: 1n,
    });

    await withTimeout(Promise.all([published, moderated]), WAIT_MS, "both acknowledgements");
    assert.notEqual(moderate.seq, publish.seq);
    await connection.close();
  });

  test("rejects an invalid action without sending it", async () => {
    const { connection, server } = await connectFake();

    await assert.rejects(connection.moderate(ModAction.ban("")), RangeError);
    await assert.rejects(connection.moderate(ModAction.slowMode("a//b", 1n)), RangeError);

    assert.equal(server.sent.length, 2, "only the preamble and HELLO were sent");
    await connection.close();
  });

  test("fails a waiting action when the connection closes", async () => {
    const { connection, server } = await connectFake();

    const done = connection.moderate(ModAction.slowMode("live", 3000n));
    await server.expect("MODERATE");
    server.end();

    await assert.rejects(withTimeout(done, WAIT_MS, "rejection"), ChorusClosedError);
  });

  test("ignores a MODERATE_ACK for no waiting action", async () => {
    const warnings: string[] = [];
    const logger = { debug: () => undefined, warn: (message: string) => warnings.push(message) };
    const { connection, server } = await connectFake({ logger });

    server.send({ type: "MODERATE_ACK", seq: 99n, code: ErrorCode.OK });
    await waitUntil(() => warnings.length > 0, WAIT_MS, "a warning");

    assert.match(warnings[0]!, /MODERATE_ACK for no waiting moderation action/);
    assert.equal(connection.isClosed, false);
    await connection.close();
  });
});

describe("react and cap", () => {
  test("react sends one reaction by default", async () => {
    const { connection, server } = await connectFake();

    await connection.react("live", "heart");

    assert.deepEqual(await server.expect("REACT"), {
      type: "REACT",
      topic: "live",
      kind: "heart",
      count: 1,
    });
    await connection.close();
  });

  test("react sends the count it is given", async () => {
    const { connection, server } = await connectFake();

    await connection.react("live", "clap", 12);

    assert.equal((await server.expect("REACT")).count, 12);
    await connection.close();
  });

  test("react rejects an empty kind, a long kind and count 0", async () => {
    const { connection, server } = await connectFake();

    await assert.rejects(connection.react("live", ""), RangeError);
    await assert.rejects(connection.react("live", "x".repeat(33)), RangeError);
    await assert.rejects(connection.react("live", "heart", 0), RangeError);

    assert.equal(server.sent.length, 2, "only the preamble and HELLO were sent");
    await connection.close();
  });

  test("cap sends CAP with the rate", async () => {
    const { connection, server } = await connectFake();

    await connection.cap("live", 20);
    await connection.cap("live", 0);

    assert.deepEqual(await server.expect("CAP"), { type: "CAP", topic: "live", maxPerSec: 20 });
    assert.deepEqual(await server.expect("CAP"), { type: "CAP", topic: "live", maxPerSec: 0 });
    await connection.close();
  });

  test("react on a closed connection rejects", async () => {
    const { connection } = await connectFake();
    await connection.close();

    await assert.rejects(connection.react("live", "heart"), ChorusClosedError);
    await assert.rejects(connection.cap("live", 1), ChorusClosedError);
  });

  test("a client frame from the server is UNEXPECTED_FRAME", async () => {
    const { connection, server } = await connectFake();

    server.send({ type: "CAP", topic: "live", maxPerSec: 1 });
    const reason = await withTimeout(connection.closed, WAIT_MS, "the connection to close");

    assert.ok(reason instanceof ChorusProtocolError, String(reason));
    assert.equal(reason.code, ErrorCode.UNEXPECTED_FRAME);
  });
});

describe("SKIPPED", () => {
  test("reaches onSkipped between the comments around it", async () => {
    const { connection, server } = await connectFake();
    const subscribing = connection.subscribe("live", StartAt.latest);
    await server.acceptSubscribe({ stream: 1n, start: 0n });
    const subscription = await subscribing;
    const seen: string[] = [];
    subscription.onSkipped = (notice) => seen.push(`skipped ${notice.count}`);

    server.sendEvents("live", 1n, [0n]);
    server.send({ type: "SKIPPED", topic: "live", count: 5n, through: 6n });
    server.sendEvents("live", 1n, [6n]);
    // One at a time, so that each comment is recorded before the next read runs the callback.
    for (let i = 0; i < 2; i++) {
      const [event] = await take(subscription, 1, WAIT_MS, "comments");
      seen.push(`comment ${event?.offset}`);
    }

    assert.deepEqual(seen, ["comment 0", "skipped 5", "comment 6"]);
    await connection.close();
  });

  test("adds up in the subscription's skipped total", async () => {
    const { connection, server } = await connectFake();
    const subscribing = connection.subscribe("live", StartAt.latest);
    await server.acceptSubscribe({ stream: 1n, start: 0n });
    const subscription = await subscribing;

    server.send({ type: "SKIPPED", topic: "live", count: 5n, through: 5n });
    server.send({ type: "SKIPPED", topic: "live", count: 3n, through: 9n });
    server.sendEvents("live", 1n, [9n]);
    await take(subscription, 1, WAIT_MS, "comments");

    assert.equal(subscription.skipped, 8n);
    await connection.close();
  });

  test("for a topic without a subscription is ignored", async () => {
    const { connection, server } = await connectFake();

    server.send({ type: "SKIPPED", topic: "other", count: 1n, through: 1n });
    const pinging = connection.ping();
    const ping = await server.expect("PING");
    server.send({ type: "PONG", nonce: ping.nonce });
    await withTimeout(pinging, WAIT_MS, "PONG");

    assert.equal(connection.isClosed, false);
    await connection.close();
  });
});

describe("Subscriber with maxPerSec", () => {
  test("sends CAP after every subscribe", async () => {
    const caps: number[] = [];
    const { dial } = fakeDial(async (server, index) => {
      await server.handshake();
      await server.acceptSubscribe({ stream: 1n, start: index === 0 ? 0n : 2n });
      caps.push((await server.expect("CAP")).maxPerSec);
      if (index === 0) {
        server.sendEvents("live", 1n, [0n, 1n]);
        server.end();
      } else {
        server.sendEvents("live", 1n, [2n]);
      }
    });
    const subscriber = await Subscriber.connect(dial, "live", StartAt.earliest, {
      backoff: FAST,
      maxPerSec: 10,
    });

    const events = await take(subscriber, 3, WAIT_MS, "comments");

    assert.deepEqual(offsets(events), [0n, 1n, 2n]);
    assert.deepEqual(caps, [10, 10]);
    await subscriber.close();
  });

  test("resumes after the offsets a SKIPPED notice accounts for", async () => {
    const resumes: StartAt[] = [];
    const notices: Skipped[] = [];
    const { dial } = fakeDial(async (server, index) => {
      await server.handshake();
      const subscribe = await server.acceptSubscribe({
        stream: 1n,
        start: index === 0 ? 0n : 10n,
      });
      await server.expect("CAP");
      if (index === 0) {
        server.sendEvents("live", 1n, [0n]);
        server.send({ type: "SKIPPED", topic: "live", count: 9n, through: 10n });
        server.end();
      } else {
        resumes.push(subscribe.start);
        server.sendEvents("live", 1n, [10n]);
      }
    });
    const subscriber = await Subscriber.connect(dial, "live", StartAt.earliest, {
      backoff: FAST,
      maxPerSec: 1,
      onSkipped: (notice) => notices.push(notice),
    });

    const events = await take(subscriber, 2, WAIT_MS, "comments");

    assert.deepEqual(offsets(events), [0n, 10n]);
    assert.deepEqual(resumes, [StartAt.offset(10n)]);
    assert.deepEqual(notices, [{ type: "SKIPPED", topic: "live", count: 9n, through: 10n }]);
    assert.equal(subscriber.skipped, 9n);
    await subscriber.close();
  });

  test("sends no CAP without maxPerSec", async () => {
    const { dial, servers } = fakeDial(async (server) => {
      await server.handshake();
      await server.acceptSubscribe({ stream: 1n, start: 0n });
      server.sendEvents("live", 1n, [0n]);
    });
    const subscriber = await Subscriber.connect(dial, "live", StartAt.earliest, { backoff: FAST });

    await take(subscriber, 1, WAIT_MS, "comments");

    assert.equal(servers[0]?.sent.length, 3, "only the preamble, HELLO and SUBSCRIBE were sent");
    await subscriber.close();
  });
});
