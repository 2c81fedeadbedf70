/**
 * Processes the browser test starts besides chorusd: the demo's static file server and a
 * `chorus-bench replay` run. Each is bounded in time and stopped by its process id.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root: this file runs from `clients/js/dist/test-browser/`. */
export const REPO_ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "../../../..");

/** The package root, `clients/js`. */
const PACKAGE_ROOT = join(REPO_ROOT, "clients", "js");

/** How long the demo server may take to print its address. */
const DEMO_START_TIMEOUT_MS = 10_000;

/** How long a replay may run before it is killed. */
const REPLAY_TIMEOUT_MS = 60_000;

/** How long a process may take to exit after SIGTERM before it is killed. */
const STOP_TIMEOUT_MS = 5_000;

/** Processes still running, killed when the test process exits. */
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) {
    if (child.pid !== undefined && child.exitCode === null) {
      process.kill(child.pid, "SIGKILL");
    }
  }
});

function track(child: ChildProcess): void {
  running.add(child);
  child.once("exit", () => running.delete(child));
}

/** Returns the path of chorus-bench: `$CHORUS_BENCH` or the debug build of this repository. */
export function chorusBenchPath(): string {
  const fromEnv = process.env["CHORUS_BENCH"];
  if (fromEnv !== undefined && fromEnv !== "") {
    return fromEnv;
  }
  const targetDir = process.env["CARGO_TARGET_DIR"] ?? join(REPO_ROOT, "target");
  const path = join(targetDir, "debug", "chorus-bench");
  if (!existsSync(path)) {
    throw new Error(
      `chorus-bench not found at ${path}; build it with \`cargo build -p chorus-bench\` ` +
        "in the repository root, or set CHORUS_BENCH to its path",
    );
  }
  return path;
}

/**
 * Returns the recorded YouTube chat beside the repository (`$CHORUS_CHATLOG` when set), or
 * `undefined` when it is absent. Its terms allow no redistribution, so the repository does not
 * contain it.
 */
export function chatLogPath(): string | undefined {
  const fromEnv = process.env["CHORUS_CHATLOG"];
  const path =
    fromEnv !== undefined && fromEnv !== ""
      ? fromEnv
      : join(REPO_ROOT, "..", "shared", "data", "chatlogs", "youtube-live-hk-stream.csv");
  return existsSync(path) ? path : undefined;
}

/** Sends SIGTERM to `child` by its process id, and SIGKILL if it has not exited in time. */
export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) {
    return;
  }
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  process.kill(child.pid, "SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS);
  });
  const tooLate = await Promise.race([exited.then(() => false), late]);
  clearTimeout(timer);
  if (tooLate) {
    process.kill(child.pid, "SIGKILL");
    await exited;
  }
}

/** Collects the text a process writes to a stream. */
function collect(stream: NodeJS.ReadableStream | null): { text: string } {
  const output = { text: "" };
  stream?.setEncoding("utf8");
  stream?.on("data", (chunk: string) => {
    output.text += chunk;
  });
  return output;
}

/** The demo's static file server, `demo/serve.mjs`, on an ephemeral loopback port. */
export class DemoServer {
  /** URL of the page, with the topic and the WebSocket URL in its query. */
  readonly url: string;
  readonly #child: ChildProcess;

  private constructor(child: ChildProcess, url: string) {
    this.#child = child;
    this.url = url;
  }

  /** Starts the server and waits until it prints the page's URL. */
  static async start(wsUrl: string, topic: string): Promise<DemoServer> {
    const script = join(PACKAGE_ROOT, "demo", "serve.mjs");
    const args = [script, "--port", "0", "--ws", wsUrl, "--topic", topic];
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    track(child);
    const stdout = collect(child.stdout);
    const stderr = collect(child.stderr);

    const deadline = Date.now() + DEMO_START_TIMEOUT_MS;
    for (;;) {
      const match = /demo listening url=(\S+)/.exec(stdout.text);
      if (match?.[1] !== undefined) {
        return new DemoServer(child, match[1]);
      }
      if (child.exitCode !== null || Date.now() >= deadline) {
        await stopProcess(child);
        throw new Error(
          `the demo server did not print its URL within ${DEMO_START_TIMEOUT_MS} ms ` +
            `(exit code ${child.exitCode}); output:\n${stdout.text}${stderr.text}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async stop(): Promise<void> {
    await stopProcess(this.#child);
  }
}

/** The fields of chorus-bench's JSON summary that the test reads. */
export interface ReplaySummary {
  readonly comments: number;
  readonly acked: number;
  readonly rejected: number;
  readonly passed: boolean;
}

/** A finished replay: its summary and the source of its comments. */
export interface Replay {
  readonly summary: ReplaySummary;
  readonly source: string;
}

/**
 * Runs `chorus-bench replay` against the broker's TCP port, publishing at most `limit` comments
 * of the recorded chat to `topic` at full speed, or synthetic ones when the recording is absent.
 */
export async function runReplay(server: string, topic: string, limit: number): Promise<Replay> {
  const log = chatLogPath();
  const source =
    log === undefined ? ["--synthetic", "--duration", "3", "--rate", "100"] : ["--log", log];
  if (log === undefined) {
    console.log("the recorded chat log was not found; replaying a synthetic chat instead");
  }
  const args = ["replay", "--server", server, "--topic", topic, "--subscribers", "1"];
  args.push("--limit", String(limit), "--speed", "max", "--json", ...source);

  const child = spawn(chorusBenchPath(), args, { stdio: ["ignore", "pipe", "pipe"] });
  track(child);
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  const code = await waitForExit(child, REPLAY_TIMEOUT_MS);
  if (code !== 0) {
    throw new Error(`chorus-bench replay exited with ${code}; output:\n${stderr.text}`);
  }
  const summary = JSON.parse(stdout.text) as ReplaySummary;
  return { summary, source: log ?? "synthetic" };
}

/** Returns the exit code of `child`, stopping it when it runs longer than `ms`. */
async function waitForExit(child: ChildProcess, ms: number): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => {
    if (child.exitCode !== null) {
      resolve(child.exitCode);
    }
    child.once("exit", (code) => resolve(code));
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => {
    timer = setTimeout(() => resolve("late"), ms);
  });
  const result = await Promise.race([exited, late]);
  clearTimeout(timer);
  if (result === "late") {
    await stopProcess(child);
    throw new Error(`${child.spawnfile} did not exit within ${ms} ms and was stopped`);
  }
  return result;
}
