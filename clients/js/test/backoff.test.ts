/** The reconnect schedule: exponential ceilings with full jitter. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "@chorus/client";

const backoff = new Backoff({ initialMs: 100, maxMs: 5000, maxAttempts: 3 });

test("ceiling doubles per attempt", () => {
  assert.equal(backoff.ceiling(0), 100);
  assert.equal(backoff.ceiling(1), 200);
  assert.equal(backoff.ceiling(3), 800);
});

test("ceiling stops at max", () => {
  assert.equal(backoff.ceiling(6), 5000);
  assert.equal(backoff.ceiling(2000), 5000);
});

test("delay spans zero to the ceiling", () => {
  assert.equal(
    backoff.delay(2, () => 0),
    0,
  );
  assert.equal(
    backoff.delay(2, () => 0.5),
    200,
  );
  assert.ok(backoff.delay(2, () => 0.999_999) < backoff.ceiling(2));
});

test("delay stays within the ceiling", () => {
  for (let attempt = 0; attempt < 20; attempt++) {
    const delay = backoff.delay(attempt);
    assert.ok(delay >= 0, `attempt ${attempt}: ${delay}`);
    assert.ok(delay <= backoff.ceiling(attempt), `attempt ${attempt}: ${delay}`);
  }
});

test("max attempts limits retries", () => {
  assert.equal(backoff.allows(2), true);
  assert.equal(backoff.allows(3), false);
});

test("no max attempts retries forever", () => {
  assert.equal(new Backoff().allows(Number.MAX_SAFE_INTEGER), true);
});

test("defaults are 100 ms doubling to 5 s", () => {
  const defaults = new Backoff();
  assert.equal(defaults.initialMs, 100);
  assert.equal(defaults.maxMs, 5000);
  assert.equal(defaults.maxAttempts, undefined);
});
