/**
 * Runs the real chorusd binary on loopback for integration tests: an ephemeral port, a temporary
 * data directory, and a stop by process id.
 */

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** How long a broker may take to start listening. */
const START_TIMEOUT_MS = 20_000;

/** How long a broker may take to exit after SIGTERM before it is killed. */
const STOP_TIMEOUT_MS = 20_000;

/** The repository root: tests run from `clients/js/dist/test/util/`. */
const REPO_ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "../../../../..");

/** Brokers still running, killed when the test process exits. */
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) {
    if (child.pid !== undefined) {
      process.kill(child.pid, "SIGKILL");
    }
  }
});

/**
 * Returns the path of chorusd: `$CHORUSD` when set, otherwise the debug build of this
 * repository. Throws with the command that builds it when it is missing.
 */
export function chorusdPath(): string {
  const fromEnv = process.env["CHORUSD"];
  if (fromEnv !== undefined && fromEnv !== "") {
    return fromEnv;
  }
  const targetDir = process.env["CARGO_TARGET_DIR"] ?? join(REPO_ROOT, "target");
  const path = join(targetDir, "debug", "chorusd");
  if (!existsSync(path)) {
    throw new Error(
      `chorusd not found at ${path}; build it with \`cargo build -p chorus-broker\` ` +
        "in the repository root, or set CHORUSD to its path",
    );
  }
  return path;
}

let helpText: string | undefined;

/** Returns whether this chorusd build accepts the command-line flag `flag`. */
export function hasFlag(flag: string): boolean {
  helpText ??= execFileSync(chorusdPath(), ["--help"], { encoding: "utf8", timeout: 10_000 });
  return helpText.includes(flag);
}

/** Returns whether this chorusd build has a WebSocket listener (`--ws-listen`). */
export function hasWebSocketListener(): boolean {
  return hasFlag("--ws-listen");
}

export interface BrokerOptions {
  /** Data directory; default: a new temporary directory, removed by {@link Broker.cleanup}. */
  dataDir?: string;
  /** TCP listen address; default `127.0.0.1:0`. */
  listen?: string;
  /** WebSocket listen address, passed as `--ws-listen`; default: no WebSocket listener. */
  wsListen?: string;
  /**
   * TLS listeners on ephemeral loopback ports, one for chorus and one for WebSocket, with
   * these PEM files; default: none.
   */
  tls?: BrokerTlsOptions;
}

/** PEM files of the broker's TLS listeners. */
export interface BrokerTlsOptions {
  readonly certFile: string;
  readonly keyFile: string;
  /** CAs that sign client certificates; when set, every TLS client must present one. */
  readonly clientCaFile?: string;
}

/** A chorusd process listening on loopback. */
export class Broker {
  readonly host = "127.0.0.1";
  readonly port: number;
  /** `ws://` URL of the WebSocket listener, when one was asked for. */
  readonly wsUrl: string | undefined;
  /** Port of the chorus TLS listener, when `tls` was given. */
  tlsPort: number | undefined;
  /** `wss://` URL of the WebSocket TLS listener, when `tls` was given. */
  wssUrl: string | undefined;
  readonly dataDir: string;
  readonly #child: ChildProcess;
  readonly #log: string[];
  readonly #ownsDataDir: boolean;
  readonly #options: BrokerOptions & { dataDir: string };

  private constructor(
    child: ChildProcess,
    log: string[],
    port: number,
    wsUrl: string | undefined,
    options: BrokerOptions & { dataDir: string },
    ownsDataDir: boolean,
  ) {
    this.#child = child;
    this.#log = log;
    this.port = port;
    this.wsUrl = wsUrl;
    this.tlsPort = undefined;
    this.wssUrl = undefined;
    this.dataDir = options.dataDir;
    this.#options = options;
    this.#ownsDataDir = ownsDataDir;
  }

  /** Starts chorusd and waits until it logs the addresses it listens on. */
  static async start(options: BrokerOptions = {}): Promise<Broker> {
    const ownsDataDir = options.dataDir === undefined;
    const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "chorus-js-"));
    return Broker.#launch({ ...options, dataDir }, ownsDataDir);
  }

  static async #launch(
    options: BrokerOptions & { dataDir: string },
    ownsDataDir: boolean,
  ): Promise<Broker> {
    const dataDir = options.dataDir;
    const args = [
      "--data-dir",
      join(dataDir, "data"),
      "--listen",
      options.listen ?? "127.0.0.1:0",
      "--workers",
      "2",
      "--log",
      "info",
    ];
    if (options.wsListen !== undefined) {
      args.push("--ws-listen", options.wsListen);
    }
    if (options.tls !== undefined) {
      const configFile = join(dataDir, "chorusd-tls.toml");
      writeFileSync(configFile, tlsConfig(options.tls));
      args.push("--config", configFile);
    }
    // The admin endpoint has a fixed default port, which brokers of parallel tests would share.
    if (hasFlag("--admin-listen")) {
      args.push("--admin-listen", "127.0.0.1:0");
    }
    const child = spawn(chorusdPath(), args, { stdio: ["ignore", "ignore", "pipe"] });
    running.add(child);
    child.once("exit", () => running.delete(child));

    const log: string[] = [];
    let partial = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (text: string) => {
      const lines = (partial + text).split("\n");
      partial = lines.pop() ?? "";
      log.push(...lines);
    });

    // "admin listening addr=" names the admin endpoint, not the client listener.
    const addr = await waitForLog(child, log, /(?<!admin )listening addr=(\S+)/);
    const wsAddr =
      options.wsListen === undefined
        ? undefined
        : await waitForLog(child, log, /listening for WebSocket addr=(\S+)/);
    const port = Number(addr.slice(addr.lastIndexOf(":") + 1));
    const wsUrl = wsAddr === undefined ? undefined : `ws://${wsAddr}`;
    const broker = new Broker(child, log, port, wsUrl, options, ownsDataDir);
    if (options.tls !== undefined) {
      const tlsAddr = await waitForLog(child, log, /listening with TLS addr=(\S+)/);
      broker.tlsPort = Number(tlsAddr.slice(tlsAddr.lastIndexOf(":") + 1));
      const wssAddr = await waitForLog(child, log, /listening for WebSocket with TLS addr=(\S+)/);
      broker.wssUrl = `wss://localhost:${wssAddr.slice(wssAddr.lastIndexOf(":") + 1)}`;
    }
    return broker;
  }

  /** Process id of the broker. */
  get pid(): number {
    // spawn() sets the pid once the process started, and start() waited for its log.
    return this.#child.pid!;
  }

  /** Log lines written so far, for failure messages. */
  get log(): readonly string[] {
    return this.#log;
  }

  /**
   * Stops this broker and starts a new one on the same port, data directory and WebSocket
   * address. The new broker takes over removing the data directory. TLS listeners get new
   * ports.
   */
  async restart(): Promise<Broker> {
    await this.stop();
    const wsListen = this.wsUrl === undefined ? undefined : this.wsUrl.slice("ws://".length);
    const options = {
      ...this.#options,
      dataDir: this.dataDir,
      listen: `${this.host}:${this.port}`,
      ...(wsListen === undefined ? {} : { wsListen }),
    };
    return Broker.#launch(options, this.#ownsDataDir);
  }

  /** Stops the broker with SIGTERM by its process id, and with SIGKILL if it does not exit. */
  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) {
      return;
    }
    const exited = new Promise<void>((resolve) => this.#child.once("exit", () => resolve()));
    process.kill(this.pid, "SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS);
    });
    const tooLate = await Promise.race([exited.then(() => false), late]);
    clearTimeout(timer);
    if (tooLate) {
      process.kill(this.pid, "SIGKILL");
      await exited;
    }
  }

  /** Stops the broker and removes the data directory if this broker created it. */
  async cleanup(): Promise<void> {
    await this.stop();
    if (this.#ownsDataDir) {
      rmSync(this.dataDir, { recursive: true, force: true });
    }
  }
}

/** Returns the configuration file text of TLS listeners on ephemeral loopback ports. */
function tlsConfig(tls: BrokerTlsOptions): string {
  const lines = [
    "[tls]",
    'listen = ["127.0.0.1:0"]',
    'ws_listen = ["127.0.0.1:0"]',
    `cert_file = ${JSON.stringify(tls.certFile)}`,
    `key_file = ${JSON.stringify(tls.keyFile)}`,
  ];
  if (tls.clientCaFile !== undefined) {
    lines.push(`client_ca_file = ${JSON.stringify(tls.clientCaFile)}`);
  }
  return `${lines.join("\n")}\n`;
}

/** Waits until a log line matches `pattern` and returns its first group. */
async function waitForLog(child: ChildProcess, log: string[], pattern: RegExp): Promise<string> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    for (const line of log) {
      const match = pattern.exec(line);
      if (match?.[1] !== undefined) {
        return match[1];
      }
    }
    if (child.exitCode !== null) {
      throw new Error(
        `chorusd exited with ${child.exitCode} before listening; log:\n${log.join("\n")}`,
      );
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `chorusd did not log ${pattern} within ${START_TIMEOUT_MS} ms; log:\n${log.join("\n")}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
