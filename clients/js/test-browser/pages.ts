/**
 * Debian's Chromium driven by playwright-core, and the parts of the demo page the test reads.
 * Playwright's own browser builds are never downloaded: the test uses `/usr/bin/chromium`.
 */

import { isDeepStrictEqual } from "node:util";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { chromium, type Browser, type Page } from "playwright-core";

/** Chromium from Debian's `chromium` package, unless `CHROMIUM` names another binary. */
export const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";

/** How long a page may take to load and go live. */
export const PAGE_TIMEOUT_MS = 20_000;

/** Interval between two reads of a page while waiting for a value. */
const POLL_MS = 100;

/**
 * Flags that keep Chromium from reaching the network on its own and from needing a GPU or a
 * sandbox, which containers lack. Playwright gives each launch a fresh temporary profile.
 */
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Starts headless Chromium. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: PAGE_TIMEOUT_MS,
  });
}

/** A demo page in its own browser context, with the errors its scripts reported. */
export interface DemoPage {
  readonly name: string;
  readonly page: Page;
  /** Uncaught exceptions and console errors of the page, for failure messages. */
  readonly errors: string[];
}

/** Opens the demo at `url` in a new browser context and waits until its feed is live. */
export async function openDemoPage(browser: Browser, name: string, url: string): Promise<DemoPage> {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(`uncaught: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") {
      errors.push(`console: ${message.text()}`);
    }
  });
  await page.goto(url, { timeout: PAGE_TIMEOUT_MS });
  const demo = { name, page, errors };
  await waitForValue(demo, "the feed's connection state", readLinkState, "live");
  return demo;
}

/** Contents of a page's feed. */
export interface FeedView {
  /** Entries in the DOM. */
  readonly entries: number;
  /** Author and text of the newest entry, at the top. */
  readonly newest: { readonly author: string; readonly text: string } | undefined;
}

export function readFeed(page: Page): Promise<FeedView> {
  return page.evaluate(() => {
    const entries = document.querySelectorAll("#feed > li");
    const first = entries[0];
    const newest =
      first === undefined
        ? undefined
        : {
            author: first.querySelector(".author")?.textContent ?? "",
            text: first.querySelector(".text")?.textContent ?? "",
          };
    return { entries: entries.length, newest };
  });
}

export function readLinkState(page: Page): Promise<string | undefined> {
  return page.evaluate(() => document.getElementById("status")?.dataset["state"]);
}

/** Returns the counter shown on the button of `reaction`. */
export function readReactionCount(page: Page, reaction: string): Promise<string | undefined> {
  return page.evaluate(
    (wanted) =>
      Array.from(document.querySelectorAll<HTMLElement>("#reactions .reaction"))
        .find((button) => button.dataset["reaction"] === wanted)
        ?.querySelector(".count")?.textContent ?? undefined,
    reaction,
  );
}

/** Returns the error banner's code and whether it is shown. */
export function readError(page: Page): Promise<{ shown: boolean; code: string; text: string }> {
  return page.evaluate(() => {
    const banner = document.getElementById("error");
    return {
      shown: banner !== null && !banner.hidden,
      code: banner?.dataset["code"] ?? "",
      text: banner?.textContent ?? "",
    };
  });
}

export function readViewers(page: Page): Promise<string> {
  return page.evaluate(() => document.getElementById("viewers")?.textContent ?? "");
}

/**
 * Reads `probe` from the page every 100 ms until it equals `expected`, and fails after
 * `timeoutMs` naming the last value read.
 */
export async function waitForValue<T>(
  demo: DemoPage,
  what: string,
  probe: (page: Page) => Promise<T>,
  expected: T,
  timeoutMs = PAGE_TIMEOUT_MS,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await probe(demo.page);
    if (isDeepStrictEqual(last, expected)) {
      return;
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `page ${demo.name}: ${what} is ${JSON.stringify(last)} after ${timeoutMs} ms, ` +
          `expected ${JSON.stringify(expected)}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

let screenshotDir: string | undefined;

/**
 * Runs `body` and, when it fails, saves a screenshot of every page's viewport into a temporary
 * folder. The paths and the pages' script errors are printed and added to the error message.
 */
export async function screenshotOnFailure(
  step: string,
  pages: readonly DemoPage[],
  body: () => Promise<void>,
): Promise<void> {
  try {
    await body();
  } catch (error) {
    screenshotDir ??= mkdtempSync(join(tmpdir(), "chorus-browser-test-"));
    const slug = step.replace(/[^A-Za-z0-9]+/g, "-").toLowerCase();
    const notes: string[] = [];
    for (const demo of pages) {
      const path = join(screenshotDir, `${slug}-${demo.name}.png`);
      try {
        await demo.page.screenshot({ path, timeout: 15_000 });
        notes.push(`screenshot of page ${demo.name}: ${path}`);
      } catch (shotError) {
        notes.push(`no screenshot of page ${demo.name}: ${String(shotError)}`);
      }
      // Each error is reported once, with the first step that fails after it.
      for (const line of demo.errors.splice(0)) {
        notes.push(`page ${demo.name} ${line}`);
      }
    }
    console.log(notes.join("\n"));
    if (error instanceof Error) {
      error.message += `\n${notes.join("\n")}`;
    }
    throw error;
  }
}
