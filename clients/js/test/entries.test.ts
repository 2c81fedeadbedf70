/**
 * The package's entry points: Node resolves the package to the TCP entry, and the browser entry
 * loads nothing but this package's own modules, so it runs where `node:net` does not exist.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import * as client from "@chorus/client";
import * as protocol from "@chorus/client/protocol";

/** The build output: tests run from `dist/test/`. */
const DIST = fileURLToPath(new URL("..", import.meta.url));

/** Removes block and line comments, which hold usage examples with imports of the package. */
function withoutComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\/|^\s*\/\/.*$/gm, "");
}

/** Returns the files `entry` imports, directly or through other files, and every specifier. */
function importGraph(entry: string): { files: Set<string>; specifiers: Set<string> } {
  const files = new Set<string>();
  const specifiers = new Set<string>();
  const pending = [join(DIST, entry)];
  while (pending.length > 0) {
    const file = pending.pop()!;
    if (files.has(file)) {
      continue;
    }
    files.add(file);
    const source = withoutComments(readFileSync(file, "utf8"));
    // Static imports and re-exports; tsc writes them one per statement with double quotes.
    for (const match of source.matchAll(
      /(?:import|export)[^"']*?from\s*"([^"]+)"|import\s*\(?\s*"([^"]+)"/g,
    )) {
      const specifier = match[1] ?? match[2]!;
      specifiers.add(specifier);
      if (specifier.startsWith(".")) {
        pending.push(join(dirname(file), specifier));
      }
    }
  }
  return { files, specifiers };
}

test("Node resolves the package to the TCP entry", () => {
  assert.equal(typeof client.connect, "function");
  assert.equal(typeof client.tcpTransport, "function");
  assert.equal(typeof client.connectWebSocket, "function");
});

test("protocol subpath exports the codec", () => {
  assert.equal(typeof protocol.encodeFrame, "function");
  assert.equal(typeof protocol.FrameDecoder, "function");
  assert.equal(protocol.ErrorCode.SLOW_CONSUMER, 12);
});

test("browser entry imports only this package's modules", () => {
  const { files, specifiers } = importGraph("browser.js");

  const outside = [...specifiers].filter((s) => !s.startsWith("./"));
  assert.deepEqual(outside, []);
  assert.ok(files.size > 5, `the graph has ${files.size} files`);
  assert.equal(
    [...files].some((f) => f.endsWith("tcp.js")),
    false,
  );
});

test("browser entry code uses no Node globals", () => {
  const { files } = importGraph("browser.js");

  for (const file of files) {
    const code = withoutComments(readFileSync(file, "utf8"));
    assert.doesNotMatch(code, /\b(process|Buffer|require|setImmediate)\b/, file);
  }
});

test("browser entry exports connect for WebSocket URLs", async () => {
  const browser = (await import(new URL("../browser.js", import.meta.url).href)) as Record<
    string,
    unknown
  >;

  assert.equal(typeof browser["connect"], "function");
  assert.equal(browser["connect"], browser["connectWebSocket"]);
  assert.equal(browser["tcpTransport"], undefined);
});

test("browser entry exports moderation and entry flag helpers", async () => {
  const browser = (await import(new URL("../browser.js", import.meta.url).href)) as Record<
    string,
    unknown
  >;

  for (const name of ["ModAction", "EntryFlag", "ChorusModerationError"]) {
    assert.equal(
      typeof browser[name] === "object" || typeof browser[name] === "function",
      true,
      name,
    );
  }
  for (const name of ["isTombstone", "tombstoneTarget", "isDeleted", "isPriority"]) {
    assert.equal(typeof browser[name], "function", name);
  }
});

test("browser entry leaves out the TLS module", () => {
  const { files } = importGraph("browser.js");

  assert.equal(
    [...files].some((f) => f.endsWith("tls.js")),
    false,
  );
});

test("package.json declares no runtime dependencies", () => {
  const manifest = JSON.parse(readFileSync(join(DIST, "..", "package.json"), "utf8")) as Record<
    string,
    unknown
  >;

  assert.equal(manifest["dependencies"], undefined);
});
