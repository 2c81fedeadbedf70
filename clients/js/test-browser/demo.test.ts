/**
 * The demo page in headless Chromium against a real chorusd: two pages on one topic receive a
 * replayed chat, each other's comments and reactions, the viewer count, a clear error for an
 * oversized comment, and resume after the broker restarts.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import type { Browser } from "playwright-core";

import { connect, StartAt, type Connection, type Event } from "@chorus/client";

import { Broker } from "../test/util/broker.js";
import { take } from "../test/util/wait.js";
import {
  launchChromium,
  openDemoPage,
  readError,
  readFeed,
  readLinkState,
  readReactionCount,
  readViewers,
  screenshotOnFailure,
  waitForValue,
  type DemoPage,
  type FeedView,
} from "./pages.js";
import { DemoServer, runReplay } from "./processes.js";

const TOPIC = "event/browser-test";

/** Comments the replay publishes. */
const REPLAY_LIMIT = 300;

/** How long a Node subscription may take to return a comment. */
const READ_TIMEOUT_MS = 10_000;

let broker: Broker | undefined;
let demo: DemoServer | undefined;
let browser: Browser | undefined;
let pageA: DemoPage;
let pageB: DemoPage;
/** Feed entries both pages should show; each step that publishes a comment adds one. */
let feedEntries = 0;

/** Returns the running broker, which `before` started. */
function runningBroker(): Broker {
  assert.ok(broker !== undefined, "the broker did not start");
  return broker;
}

/** Opens a TCP connection to the broker, runs `body` with it and closes it. */
async function withConnection<T>(body: (connection: Connection) => Promise<T>): Promise<T> {
  const current = runningBroker();
  const connection = await connect(current.host, current.port);
  try {
    return await body(connection);
  } finally {
    await connection.close();
  }
}

/** Returns the newest comment on `topic`, read with a subscription that starts one before it. */
function newestComment(topic: string): Promise<Event> {
  return withConnection(async (connection) => {
    const subscription = await connection.subscribe(topic, StartAt.last(1n));
    const [event] = await take(subscription, 1, READ_TIMEOUT_MS, "the newest comment");
    await subscription.unsubscribe();
    assert.ok(event !== undefined);
    return event;
  });
}

function decodeJson(event: Event): { a: string; t: string } {
  return JSON.parse(new TextDecoder().decode(event.payload)) as { a: string; t: string };
}

/** Waits until both pages show `expected` in their feeds. */
async function waitForFeeds(expected: FeedView): Promise<void> {
  await Promise.all(
    [pageA, pageB].map((page) => waitForValue(page, "the feed", readFeed, expected)),
  );
}

function step(name: string, body: () => Promise<void>): void {
  test(name, () => screenshotOnFailure(name, [pageA, pageB].filter(Boolean), body));
}

describe("demo page in Chromium", { timeout: 150_000 }, () => {
  before(async () => {
    broker = await Broker.start({ wsListen: "127.0.0.1:0" });
    assert.ok(broker.wsUrl !== undefined, "chorusd did not report a WebSocket address");
    demo = await DemoServer.start(broker.wsUrl, TOPIC);
    browser = await launchChromium();
    pageA = await openDemoPage(browser, "A", demo.url);
    pageB = await openDemoPage(browser, "B", demo.url);
  });

  after(async () => {
    await browser?.close();
    await demo?.stop();
    await broker?.cleanup();
  });

  step("both pages show the replayed chat", async () => {
    const current = runningBroker();
    const replay = await runReplay(`${current.host}:${current.port}`, TOPIC, REPLAY_LIMIT);
    console.log(`replayed ${replay.summary.acked} comments from ${replay.source}`);
    assert.equal(replay.summary.passed, true, "chorus-bench reported failed checks");
    assert.equal(replay.summary.acked, replay.summary.comments);

    // The topic is new, so its offsets count the replayed comments from 0.
    const newest = await newestComment(TOPIC);
    assert.equal(newest.offset + 1n, BigInt(replay.summary.acked));
    const { a, t } = decodeJson(newest);
    feedEntries = replay.summary.acked;
    await waitForFeeds({ entries: feedEntries, newest: { author: a, text: t } });
  });

  step("a comment sent in page A appears in page B", async () => {
    const text = `hello from page A, ${Date.now()}`;
    await pageA.page.fill("#author", "alice");
    await pageA.page.fill("#comment", text);
    await pageA.page.press("#comment", "Enter");

    feedEntries += 1;
    await waitForFeeds({ entries: feedEntries, newest: { author: "alice", text } });
    assert.equal(await pageA.page.inputValue("#comment"), "");
  });

  step("a reaction clicked in page B counts in page A", async () => {
    await pageB.page.click('#reactions .reaction[data-reaction="👏"]');
    await waitForValue(pageA, "the 👏 counter", (page) => readReactionCount(page, "👏"), "1");
    await waitForValue(pageB, "the 👏 counter", (page) => readReactionCount(page, "👏"), "1");
    assert.equal(await readReactionCount(pageA.page, "🎉"), "0");
  });

  step("an oversized comment shows PAYLOAD_TOO_LARGE", async () => {
    const maxPayload = await withConnection(async (connection) => connection.welcome.maxPayload);
    assert.notEqual(maxPayload, 0, "chorusd announced no payload limit");
    await pageA.page.fill("#comment", "x".repeat(maxPayload + 1));
    await pageA.page.click("#send");

    const expected = { shown: true, code: "PAYLOAD_TOO_LARGE" };
    const banner = async (): Promise<{ shown: boolean; code: string }> => {
      const { shown, code } = await readError(pageA.page);
      return { shown, code };
    };
    await waitForValue(pageA, "the error banner", banner, expected);
    assert.match((await readError(pageA.page)).text, /PAYLOAD_TOO_LARGE/);
    assert.equal((await pageA.page.inputValue("#comment")).length, maxPayload + 1);
    await pageA.page.fill("#comment", "");
  });

  step("the viewer count comes from the viewers topic", async () => {
    assert.match(await readViewers(pageB.page), /not available from this broker yet/);
    await withConnection((connection) =>
      connection.publish(`${TOPIC}/viewers`, JSON.stringify({ viewers: 1234 })),
    );
    await waitForValue(pageB, "the viewer count", readViewers, "1,234 watching");
  });

  step("the feed resumes after the broker restarts", async () => {
    broker = await runningBroker().restart();
    const text = `after the restart, ${Date.now()}`;
    await withConnection((connection) =>
      connection.publish(TOPIC, JSON.stringify({ a: "bob", t: text })),
    );

    feedEntries += 1;
    await waitForFeeds({ entries: feedEntries, newest: { author: "bob", text } });
    await waitForValue(pageA, "the feed's connection state", readLinkState, "live");
    await waitForValue(pageB, "the feed's connection state", readLinkState, "live");
  });
});
