/**
 * TLS against a real chorusd with TLS listeners on loopback ports, and certificates that the
 * `openssl` tool generates for each run. The tests cover verified sessions, every way a
 * handshake fails, the test-only skip of verification, client certificates, and `wss://` with
 * the `ws` package.
 */

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { WebSocket } from "ws";

import {
  ChorusTimeoutError,
  ChorusTlsError,
  connect,
  connectWebSocket,
  isTransient,
  StartAt,
  Subscriber,
  type Connection,
  type Event,
  type NodeOptions,
  type WebSocketConstructor,
} from "@chorus/client";

import { Broker } from "./util/broker.js";
import { hasOpenssl, Pki, type Issued } from "./util/pki.js";
import { take, withTimeout } from "./util/wait.js";

const WAIT_MS = 10_000;

const NodeWebSocket: WebSocketConstructor = WebSocket;

const text = (event: Event): string => new TextDecoder().decode(event.payload);

const skip = hasOpenssl() ? false : "the openssl command is not installed";

let topicCounter = 0;
function freshTopic(): string {
  topicCounter += 1;
  return `test/tls-${process.pid}-${topicCounter}`;
}

/** Log records of one connect, for checks on what the client logged. */
function recordingLogger() {
  const records: { level: string; message: string; fields: Record<string, unknown> }[] = [];
  const logger = {
    debug: (message: string, fields: Record<string, unknown> = {}) =>
      records.push({ level: "debug", message, fields }),
    warn: (message: string, fields: Record<string, unknown> = {}) =>
      records.push({ level: "warn", message, fields }),
  };
  return { logger, records };
}

/** Returns the error that `opening` rejects with, failing if it resolves. */
async function connectError(opening: Promise<Connection>): Promise<unknown> {
  try {
    const connection = await withTimeout(opening, WAIT_MS, "the connect to fail");
    await connection.close();
  } catch (error) {
    return error;
  }
  assert.fail("the connection opened");
}

/** Publishes one comment on `publisher` and reads it back on `subscriber`. */
async function roundTrip(subscriber: Connection, publisher: Connection): Promise<void> {
  const topic = freshTopic();
  const subscription = await subscriber.subscribe(topic, StartAt.latest);
  const ack = await withTimeout(publisher.publish(topic, "sealed"), WAIT_MS, "publish ack");

  const [event] = await take(subscription, 1, WAIT_MS, "comments");

  assert.equal(event?.offset, ack.offset);
  assert.equal(event === undefined ? undefined : text(event), "sealed");
  await subscription.unsubscribe();
}

describe("TLS against chorusd", { skip }, () => {
  let dir: string;
  let pki: Pki;
  let otherPki: Pki;
  let broker: Broker;
  let tlsPort: number;
  let verified: NodeOptions;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "chorus-js-tls-"));
    pki = new Pki(dir, "main");
    otherPki = new Pki(dir, "other");
    const server = pki.server("server");
    broker = await Broker.start({ tls: { certFile: server.cert, keyFile: server.key } });
    // start() waited for the TLS listener, so its port is known.
    tlsPort = broker.tlsPort!;
    verified = { tls: { caFile: pki.caFile } };
  });

  after(async () => {
    await broker?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  test("publish and subscribe over TLS", async () => {
    const subscriber = await connect("127.0.0.1", tlsPort, verified);
    const publisher = await connect("127.0.0.1", tlsPort, verified);

    await roundTrip(subscriber, publisher);

    await subscriber.close();
    await publisher.close();
  });

  test("TLS and plaintext clients share topics", async () => {
    const secure = await connect("127.0.0.1", tlsPort, verified);
    const plain = await connect(broker.host, broker.port);

    await roundTrip(plain, secure);

    await secure.close();
    await plain.close();
  });

  test("handshake selects the chorus ALPN protocol", async () => {
    const { logger, records } = recordingLogger();

    const connection = await connect("127.0.0.1", tlsPort, { ...verified, logger });
    await connection.close();

    const handshake = records.find((record) => record.message === "TLS handshake done");
    assert.equal(handshake?.fields["alpn"], "chorus/1");
  });

  test("host name is checked against the certificate", async () => {
    const connection = await connect("localhost", tlsPort, verified);

    assert.equal(connection.welcome.version, 1);
    await connection.close();
  });

  test("CA certificates can be given as PEM text", async () => {
    const ca = readFileSync(pki.caFile, "utf8");

    const connection = await connect("127.0.0.1", tlsPort, { tls: { ca } });

    assert.equal(connection.welcome.version, 1);
    await connection.close();
  });

  test("Subscriber dials TLS connections", async () => {
    const topic = freshTopic();
    const publisher = await connect("127.0.0.1", tlsPort, verified);
    await publisher.publish(topic, "first");
    const subscriber = await Subscriber.connect(
      () => connect("127.0.0.1", tlsPort, verified),
      topic,
      StartAt.earliest,
    );

    const [event] = await take(subscriber, 1, WAIT_MS, "comments");

    assert.equal(event === undefined ? undefined : text(event), "first");
    await subscriber.close();
    await publisher.close();
  });

  test("wrong CA fails with a certificate error", async () => {
    const error = await connectError(
      connect("127.0.0.1", tlsPort, { tls: { caFile: otherPki.caFile } }),
    );

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "certificate");
    assert.equal(error.tlsCode, "UNABLE_TO_VERIFY_LEAF_SIGNATURE");
    assert.match(error.message, /TLS certificate was rejected/);
    assert.match(error.message, /tls\.caFile/);
    assert.equal(isTransient(error), false);
  });

  test("default CA store rejects the test CA", async () => {
    const error = await connectError(connect("127.0.0.1", tlsPort, { tls: {} }));

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "certificate");
  });

  test("server name the certificate lacks fails", async () => {
    const tls = { caFile: pki.caFile, serverName: "elsewhere.example" };

    const error = await connectError(connect("127.0.0.1", tlsPort, { tls }));

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "certificate");
    assert.equal(error.tlsCode, "ERR_TLS_CERT_ALTNAME_INVALID");
    assert.match(error.message, /tls\.serverName/);
  });

  test("insecureSkipVerifyForTesting connects and warns", async () => {
    const { logger, records } = recordingLogger();
    const options = { tls: { insecureSkipVerifyForTesting: true }, logger };

    const unverified = await connect("127.0.0.1", tlsPort, options);
    const publisher = await connect("127.0.0.1", tlsPort, verified);
    await roundTrip(unverified, publisher);

    const warnings = records.filter((record) => record.level === "warn");
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!.message, /verification is off/);
    await unverified.close();
    await publisher.close();
  });

  test("plaintext client on the TLS port fails with tlsRequired", async () => {
    const error = await connectError(connect("127.0.0.1", tlsPort));

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "tlsRequired");
    assert.match(error.message, /server speaks TLS on this port/);
    assert.equal(isTransient(error), false);
  });

  test("TLS client on the plaintext port fails with tlsNotOffered", async () => {
    const error = await connectError(connect(broker.host, broker.port, verified));

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "tlsNotOffered");
    assert.match(error.message, /does not speak TLS on this port/);
  });

  test("missing CA file fails before connecting", async () => {
    const caFile = join(dir, "missing-ca.pem");

    const error = await connectError(connect("127.0.0.1", tlsPort, { tls: { caFile } }));

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "setup");
    assert.match(error.message, /cannot read the TLS CA certificates/);
    assert.match(error.message, /missing-ca\.pem/);
  });

  test("CA file without PEM fails before connecting", async () => {
    const caFile = join(dir, "not-pem.txt");
    writeFileSync(caFile, "no certificates here\n");

    const error = await connectError(connect("127.0.0.1", tlsPort, { tls: { caFile } }));

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "setup");
    assert.match(error.message, /no PEM block found/);
  });

  test("client certificate without key fails before connecting", async () => {
    const client = pki.client("lonely");
    const tls = { caFile: pki.caFile, certFile: client.cert };

    const error = await connectError(connect("127.0.0.1", tlsPort, { tls }));

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "setup");
    assert.match(error.message, /certFile and tls\.keyFile must be set together/);
  });

  test("wss publish and subscribe with the CA", async () => {
    const options = { WebSocket: NodeWebSocket, tls: { caFile: pki.caFile } };
    // start() waited for the WebSocket TLS listener, so its URL is known.
    const subscriber = await connectWebSocket(broker.wssUrl!, options);
    const publisher = await connectWebSocket(broker.wssUrl!, options);

    await roundTrip(subscriber, publisher);

    await subscriber.close();
    await publisher.close();
  });

  test("wss with the wrong CA fails with a certificate error", async () => {
    const options = { WebSocket: NodeWebSocket, tls: { caFile: otherPki.caFile } };

    const error = await connectError(connectWebSocket(broker.wssUrl!, options));

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "certificate");
  });

  test("wss with insecureSkipVerifyForTesting connects", async () => {
    const options = { WebSocket: NodeWebSocket, tls: { insecureSkipVerifyForTesting: true } };

    const connection = await connectWebSocket(broker.wssUrl!, options);

    assert.equal(connection.welcome.version, 1);
    await connection.close();
  });

  test("TLS options with a ws:// URL fail clearly", async () => {
    const url = broker.wssUrl!.replace("wss://", "ws://");
    const options = { WebSocket: NodeWebSocket, tls: verified.tls! };

    const error = await connectError(connectWebSocket(url, options));

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "setup");
    assert.match(error.message, /needs a wss:\/\/ URL/);
  });

  test("wss TLS options without a WebSocket class fail clearly", async () => {
    const error = await connectError(connectWebSocket(broker.wssUrl!, { tls: verified.tls! }));

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "setup");
    assert.match(error.message, /needs a WebSocket class/);
  });
});

describe("TLS with client certificates against chorusd", { skip }, () => {
  let dir: string;
  let pki: Pki;
  let client: Issued;
  let broker: Broker;
  let tlsPort: number;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "chorus-js-mtls-"));
    pki = new Pki(dir, "main");
    client = pki.client("client");
    const server = pki.server("server");
    broker = await Broker.start({
      tls: { certFile: server.cert, keyFile: server.key, clientCaFile: pki.caFile },
    });
    tlsPort = broker.tlsPort!;
  });

  after(async () => {
    await broker?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  test("client with a certificate from the client CA publishes", async () => {
    const tls = { caFile: pki.caFile, certFile: client.cert, keyFile: client.key };

    const connection = await connect("127.0.0.1", tlsPort, { tls });
    const ack = await withTimeout(connection.publish(freshTopic(), "hi"), WAIT_MS, "publish ack");

    assert.equal(ack.offset, 0n);
    await connection.close();
  });

  test("client without a certificate fails with clientCertificate", async () => {
    const error = await connectError(
      connect("127.0.0.1", tlsPort, { tls: { caFile: pki.caFile } }),
    );

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "clientCertificate");
    assert.match(error.message, /rejected the client's TLS certificate/);
  });

  test("client certificate of another CA fails with clientCertificate", async () => {
    const stranger = new Pki(dir, "stranger").client("stranger");
    const tls = { caFile: pki.caFile, certFile: stranger.cert, keyFile: stranger.key };

    const error = await connectError(connect("127.0.0.1", tlsPort, { tls }));

    assert.ok(error instanceof ChorusTlsError, String(error));
    assert.equal(error.failure, "clientCertificate");
  });
});

test("silent server times out the TLS handshake", async () => {
  const sockets: Socket[] = [];
  const server = createServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address !== "string");

  const options = { connectTimeoutMs: 300, tls: { insecureSkipVerifyForTesting: true } };
  const error = await connectError(connect("127.0.0.1", address.port, options));

  assert.ok(error instanceof ChorusTimeoutError, String(error));
  for (const socket of sockets) {
    socket.destroy();
  }
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
