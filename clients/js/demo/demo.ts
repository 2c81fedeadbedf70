/**
 * The live demo page: the comment feed of one topic, a comment box, reaction counters and the
 * viewer count, over WebSocket with the browser entry of `@chorus/client`.
 *
 * The page reads its settings from the URL: `?topic=event/final&ws=ws://127.0.0.1:7401`.
 *
 * @module
 */

import {
  Backoff,
  ChorusPublishError,
  ChorusServerError,
  connect,
  errorCodeName,
  isTransient,
  StartAt,
  Subscriber,
  topicProblem,
  type Connection,
  type Dial,
  type Event,
} from "@chorus/client";

import { Feed } from "./feed.js";
import {
  decodeComment,
  decodeReaction,
  decodeViewers,
  encodeComment,
  encodeReaction,
  REACTIONS,
  reactionsTopic,
  viewersTopic,
} from "./payload.js";

/** Topic shown when the URL names none. */
const DEFAULT_TOPIC = "event/demo";

/** Comments before the newest one that the feed shows when the page opens. */
const HISTORY = 50n;

/** Delays between attempts to open the first connection of a subscription. */
const FIRST_CONNECT_BACKOFF = new Backoff({ initialMs: 200, maxMs: 5000 });

type LinkState = "connecting" | "live" | "reconnecting" | "failed";

interface Settings {
  readonly topic: string;
  readonly url: string;
}

/** Returns the element with `id`, which index.html defines. */
function element<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) {
    throw new Error(`index.html has no element with id ${JSON.stringify(id)}`);
  }
  return found as T;
}

function readSettings(): Settings {
  const query = new URLSearchParams(location.search);
  const topic = query.get("topic") ?? DEFAULT_TOPIC;
  const host = location.hostname === "" ? "127.0.0.1" : location.hostname;
  const url = query.get("ws") ?? `ws://${host}:7401`;
  return { topic, url };
}

/** Returns a one-line description of an error for the page. */
function describeError(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

/** Shows `message` in the error banner, or hides the banner when `message` is undefined. */
function showError(message: string | undefined, code?: string): void {
  const banner = element("error");
  banner.textContent = message ?? "";
  banner.hidden = message === undefined;
  banner.dataset["code"] = code ?? "";
}

/** Shows the state of the feed's connection in the header. */
function showLinkState(state: LinkState, detail?: string): void {
  const status = element("status");
  status.dataset["state"] = state;
  const words: Record<LinkState, string> = {
    connecting: "connecting…",
    live: "live",
    reconnecting: "connection lost, reconnecting…",
    failed: "stopped",
  };
  status.textContent = detail === undefined ? words[state] : `${words[state]} (${detail})`;
}

/**
 * Returns a dial function for a {@link Subscriber} that reports each connection's state:
 * `live` once the handshake is done and `reconnecting` once it closes or a new one fails.
 */
function reportingDial(url: string, report?: (state: LinkState, detail?: string) => void): Dial {
  let connected = false;
  return async () => {
    let connection: Connection;
    try {
      connection = await connect(url);
    } catch (error) {
      report?.(connected ? "reconnecting" : "connecting", describeError(error));
      throw error;
    }
    connected = true;
    report?.("live");
    void connection.closed.then((error) => {
      report?.("reconnecting", error === undefined ? undefined : describeError(error));
    });
    return connection;
  };
}

/**
 * Follows `topic` for as long as the page is open: opens a {@link Subscriber}, retrying the first
 * connection with backoff, and calls `onEvent` for each comment in offset order. The subscriber
 * resumes by itself after a lost connection; only a permanent error, such as an invalid token,
 * ends the loop.
 */
async function follow(
  url: string,
  topic: string,
  start: StartAt,
  onEvent: (event: Event) => void,
  report?: (state: LinkState, detail?: string) => void,
): Promise<void> {
  const dial = reportingDial(url, report);
  let subscriber: Subscriber | undefined;
  for (let attempt = 0; subscriber === undefined; attempt++) {
    try {
      subscriber = await Subscriber.connect(dial, topic, start);
    } catch (error) {
      if (!isTransient(error)) {
        report?.("failed", describeError(error));
        throw error;
      }
      await sleep(FIRST_CONNECT_BACKOFF.delay(Math.min(attempt, 10)));
    }
  }
  try {
    for await (const event of subscriber) {
      onEvent(event);
    }
  } catch (error) {
    report?.("failed", describeError(error));
    throw error;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One connection for publishing, opened on first use and opened again after it closes. */
class Publisher {
  readonly #url: string;
  #connection: Promise<Connection> | undefined;

  constructor(url: string) {
    this.#url = url;
  }

  /** Publishes `payload` on `topic` and returns the offset the broker stored it at. */
  async publish(topic: string, payload: string): Promise<bigint> {
    const connection = await this.#open();
    const ack = await connection.publish(topic, payload);
    return ack.offset;
  }

  /** Returns the largest payload the broker accepts, in bytes, or 0 when it announced no limit. */
  async maxPayload(): Promise<number> {
    const connection = await this.#open();
    return connection.welcome.maxPayload;
  }

  #open(): Promise<Connection> {
    const current = this.#connection;
    if (current !== undefined) {
      return current.then((connection) =>
        connection.isClosed ? this.#reopen() : Promise.resolve(connection),
      );
    }
    return this.#reopen();
  }

  #reopen(): Promise<Connection> {
    const opening = connect(this.#url);
    this.#connection = opening;
    // A failed connect is forgotten, so that the next publish tries again.
    opening.catch(() => {
      if (this.#connection === opening) {
        this.#connection = undefined;
      }
    });
    return opening;
  }
}

/** Shows a failed publish in the error banner, with its error code name when it was rejected. */
function showPublishError(what: string, error: unknown): void {
  if (error instanceof ChorusPublishError || error instanceof ChorusServerError) {
    const name = errorCodeName(error.code) ?? `code ${error.code}`;
    showError(`${what} was not published: ${describeError(error)}`, name);
    return;
  }
  showError(`${what} was not published: ${describeError(error)}`, "");
}

function setUpCommentBox(settings: Settings, publisher: Publisher): void {
  const form = element<HTMLFormElement>("comment-form");
  const name = element<HTMLInputElement>("author");
  const text = element<HTMLTextAreaElement>("comment");
  const sendStatus = element("send-status");
  name.value = `viewer-${Math.floor(Math.random() * 10_000)}`;

  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const comment = text.value.trim();
    if (comment === "") {
      return;
    }
    const payload = encodeComment(name.value.trim(), comment);
    sendStatus.textContent = "sending…";
    publisher.publish(settings.topic, payload).then(
      (offset) => {
        showError(undefined);
        text.value = "";
        sendStatus.textContent = `sent, offset ${offset}`;
      },
      (error: unknown) => {
        sendStatus.textContent = "";
        showPublishError("The comment", error);
      },
    );
  });
  void publisher.maxPayload().then(
    (max) => {
      element("limit").textContent = max === 0 ? "" : `at most ${max} bytes`;
    },
    () => undefined,
  );
}

function setUpReactions(settings: Settings, publisher: Publisher): void {
  const bar = element("reactions");
  const counters = new Map<string, { element: HTMLElement; count: number }>();
  for (const reaction of REACTIONS) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "reaction";
    button.dataset["reaction"] = reaction;
    button.title = `react with ${reaction}`;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = "0";
    button.append(`${reaction} `, count);
    button.addEventListener("click", () => {
      publisher
        .publish(reactionsTopic(settings.topic), encodeReaction(reaction))
        .then(() => showError(undefined))
        .catch((error: unknown) => showPublishError(`The reaction ${reaction}`, error));
    });
    bar.append(button);
    counters.set(reaction, { element: count, count: 0 });
  }

  // Counters start from the oldest reaction the broker keeps, so they show totals. Reactions the
  // page has no button for are not counted.
  const onEvent = (event: Event): void => {
    const counter = counters.get(decodeReaction(event.payload) ?? "");
    if (counter !== undefined) {
      counter.count += 1;
      counter.element.textContent = String(counter.count);
    }
  };
  follow(settings.url, reactionsTopic(settings.topic), StartAt.earliest, onEvent).catch(
    (error: unknown) => showError(`Reactions stopped: ${describeError(error)}`),
  );
}

function setUpViewers(settings: Settings): void {
  const viewers = element("viewers");
  const onEvent = (event: Event): void => {
    const count = decodeViewers(event.payload);
    if (count !== undefined) {
      viewers.textContent = `${count.toLocaleString("en")} watching`;
      viewers.dataset["state"] = "known";
    }
  };
  follow(settings.url, viewersTopic(settings.topic), StartAt.last(1n), onEvent).catch(
    (error: unknown) => showError(`Viewer count stopped: ${describeError(error)}`),
  );
}

function setUpFeed(settings: Settings): void {
  const feed = new Feed(element("feed"), element("feed-summary"));
  const onEvent = (event: Event): void => feed.add(event.offset, decodeComment(event.payload));
  showLinkState("connecting");
  follow(settings.url, settings.topic, StartAt.last(HISTORY), onEvent, showLinkState).catch(
    (error: unknown) => showError(`The feed stopped: ${describeError(error)}`),
  );
}

function main(): void {
  const settings = readSettings();
  element("topic").textContent = settings.topic;
  element("server").textContent = settings.url;
  document.title = `${settings.topic} · chorus live demo`;

  const problem = topicProblem(settings.topic);
  if (problem !== undefined) {
    showLinkState("failed");
    showError(`The topic ${JSON.stringify(settings.topic)} is invalid: it ${problem}.`);
    return;
  }

  const publisher = new Publisher(settings.url);
  setUpFeed(settings);
  setUpCommentBox(settings, publisher);
  setUpReactions(settings, publisher);
  setUpViewers(settings);
}

main();
