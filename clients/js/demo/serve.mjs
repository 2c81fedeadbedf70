#!/usr/bin/env node
/**
 * A static file server for the demo page, with Node's `http` module and no dependency.
 *
 *   node demo/serve.mjs --port 8080 --ws ws://127.0.0.1:7401 --topic event/demo
 *
 * It serves index.html and style.css from demo/, the compiled page from dist/demo/ and the
 * client's browser build from dist/ under client/. A request for the page without `topic` or
 * `ws` in its query is redirected to one that adds them from --topic and --ws. The server
 * listens on loopback only and prints `demo listening url=...` once it accepts requests.
 */

import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const demoDir = dirname(fileURLToPath(import.meta.url));
const packageRoot = join(demoDir, "..");

/** Folders that URL prefixes map to. Only files directly inside them are served. */
const ROOTS = [
  { prefix: "/client/", dir: join(packageRoot, "dist") },
  { prefix: "/", dir: join(packageRoot, "dist", "demo") },
  { prefix: "/", dir: demoDir },
];

const CONTENT_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json; charset=utf-8",
};

const USAGE = `usage: node demo/serve.mjs [--port N] [--host ADDR] [--ws URL] [--topic TOPIC]

  --port N         TCP port to listen on; 0 picks a free one (default 8080)
  --host ADDR      loopback address to listen on (default 127.0.0.1)
  --ws URL         WebSocket URL of chorusd that the page connects to (default ws://127.0.0.1:7401)
  --topic TOPIC    topic the page shows when its URL names none (default event/demo)`;

function parseOptions() {
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: "8080" },
      host: { type: "string", default: "127.0.0.1" },
      ws: { type: "string", default: "ws://127.0.0.1:7401" },
      topic: { type: "string", default: "event/demo" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid --port ${JSON.stringify(values.port)}: expected 0 to 65535`);
  }
  if (!isLoopback(values.host)) {
    throw new Error(`invalid --host ${values.host}: the demo server listens on loopback only`);
  }
  if (!/^wss?:\/\//.test(values.ws)) {
    throw new Error(`invalid --ws ${JSON.stringify(values.ws)}: expected a ws:// or wss:// URL`);
  }
  return { port, host: values.host, ws: values.ws, topic: values.topic };
}

function isLoopback(host) {
  return host === "::1" || host === "localhost" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Returns the path of the file that `pathname` names, or undefined when none may be served. */
async function resolveFile(pathname) {
  for (const { prefix, dir } of ROOTS) {
    if (!pathname.startsWith(prefix)) {
      continue;
    }
    const name = pathname.slice(prefix.length);
    // One plain file name: no folders, no "..", nothing hidden, and a known type.
    if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(name) || !(extname(name) in CONTENT_TYPES)) {
      continue;
    }
    const path = join(dir, name);
    const info = await stat(path).catch(() => undefined);
    if (info?.isFile()) {
      return path;
    }
  }
  return undefined;
}

function reply(response, status, text) {
  response.writeHead(status, { "content-type": "text/plain; charset=utf-8" });
  response.end(`${text}\n`);
}

async function handle(request, response, options) {
  if (request.method !== "GET" && request.method !== "HEAD") {
    reply(response, 405, "only GET and HEAD are allowed");
    return;
  }
  const url = new URL(request.url ?? "/", "http://localhost");
  let pathname;
  try {
    pathname = decodeURIComponent(url.pathname);
  } catch {
    reply(response, 400, "invalid percent-encoding in the path");
    return;
  }
  if (pathname === "/" || pathname === "/index.html") {
    if (!url.searchParams.has("topic") || !url.searchParams.has("ws")) {
      if (!url.searchParams.has("topic")) url.searchParams.set("topic", options.topic);
      if (!url.searchParams.has("ws")) url.searchParams.set("ws", options.ws);
      response.writeHead(302, { location: `/?${url.searchParams}` });
      response.end();
      return;
    }
    pathname = "/index.html";
  }
  const path = await resolveFile(pathname);
  if (path === undefined) {
    reply(response, 404, `not found: ${pathname}`);
    return;
  }
  response.writeHead(200, {
    "content-type": CONTENT_TYPES[extname(path)],
    "cache-control": "no-store",
  });
  if (request.method === "HEAD") {
    response.end();
    return;
  }
  createReadStream(path).pipe(response);
}

function main() {
  let options;
  try {
    options = parseOptions();
  } catch (error) {
    console.error(`${error.message}\n\n${USAGE}`);
    process.exit(2);
  }
  const server = createServer((request, response) => {
    handle(request, response, options).catch((error) => {
      console.error(`request failed url=${request.url} error=${error.message}`);
      if (!response.headersSent) reply(response, 500, "internal error");
      else response.destroy();
    });
  });
  server.on("error", (error) => {
    console.error(`demo server failed: ${error.message}`);
    process.exit(1);
  });
  server.listen(options.port, options.host, () => {
    const { address, port } = server.address();
    const host = address.includes(":") ? `[${address}]` : address;
    const query = new URLSearchParams({ topic: options.topic, ws: options.ws });
    console.log(`demo listening url=http://${host}:${port}/?${query}`);
  });
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => {
      server.close();
      server.closeAllConnections();
      process.exit(0);
    });
  }
}

main();
