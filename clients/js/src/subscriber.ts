import type { Connection } from "./connection.js";
import { isTransient } from "./errors.js";
import { Backoff, type BackoffOptions, type Logger } from "./options.js";
import { checkTopic, StartAt, type Skipped, type Subscribed } from "./protocol.js";
import type { Event, Subscription } from "./subscription.js";
import type { Dial } from "./transport.js";

/** A change of a topic's stream id: the topic was deleted and created again. */
export interface StreamChange {
  readonly topic: string;
  /** Stream id the subscriber held. */
  readonly previous: bigint;
  /** Stream id the topic has now. */
  readonly current: bigint;
  /** Offset in the new stream at which delivery continues. */
  readonly start: bigint;
}

/** Settings of a {@link Subscriber}. Connection settings go to the `dial` function. */
export interface SubscriberOptions {
  /** Delays between reconnect attempts; default: 100 ms doubling up to 5 s, forever. */
  backoff?: Backoff | BackoffOptions;
  /**
   * Stream id that the first subscribe sends, from an earlier run that saved its position with
   * the offset it continues from. Default 0, for none.
   */
  stream?: bigint;
  /** Called when the topic was recreated, before the first comment of the new stream. */
  onStreamChange?: (change: StreamChange) => void;
  /**
   * Maximum comments per second the server delivers, sent as CAP after every subscribe, so the
   * cap survives reconnects. Default: no cap.
   */
  maxPerSec?: number;
  /**
   * Called with each SKIPPED notice of the capped subscription, in stream order between the
   * comments around it.
   */
  onSkipped?: (notice: Skipped) => void;
  /** Receives records of lost connections and reconnects. */
  logger?: Logger;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

/**
 * A subscription to one topic that reconnects and resumes after a lost connection: an async
 * iterator that returns each comment once, in offset order.
 *
 * The subscriber tracks the offset of the next comment it expects. After a lost connection, or a
 * server error that {@link isTransient} calls transient, it dials a new connection after a
 * {@link Backoff} delay and subscribes from that offset with the stream id it holds. It drops
 * comments below that offset, so the caller sees no comment twice and, unless the server no
 * longer keeps them, misses none.
 *
 * Permanent errors, and transient ones once `backoff.maxAttempts` reconnects failed, are thrown
 * from `next()`, which ends a `for await` loop; calling `next()` again starts reconnecting anew.
 */
export class Subscriber implements AsyncIterableIterator<Event, undefined> {
  /** Topic of the subscription. */
  readonly topic: string;
  readonly #dial: Dial;
  readonly #backoff: Backoff;
  readonly #options: SubscriberOptions;
  #connection: Connection | undefined;
  #subscription: Subscription | undefined;
  #subscribed: Subscribed;
  #nextOffset: bigint;
  #stream: bigint;
  #reconnects = 0;
  #skipped = 0n;
  #closed = false;
  #lastError: unknown;
  /** Settles after the previous `next()` call, so that calls run one at a time. */
  #previous: Promise<unknown> = Promise.resolve();
  /** Ends a backoff delay early when the subscriber is closed. */
  #wake: (() => void) | undefined;

  private constructor(
    dial: Dial,
    connection: Connection,
    subscription: Subscription,
    options: SubscriberOptions,
  ) {
    this.topic = subscription.topic;
    this.#dial = dial;
    this.#backoff =
      options.backoff instanceof Backoff ? options.backoff : new Backoff(options.backoff);
    this.#options = options;
    this.#connection = connection;
    this.#subscription = subscription;
    this.#subscribed = subscription.subscribed;
    this.#nextOffset = subscription.subscribed.start;
    this.#stream = subscription.subscribed.stream;
    this.#watchSkipped(subscription);
  }

  /**
   * Dials a connection with `dial`, subscribes to `topic` from `start` and waits for SUBSCRIBED.
   *
   * This first connection is tried once: its errors are thrown as they are, without retries.
   * `dial` is called again for every reconnect, for example
   * `() => connect("127.0.0.1", 7400, options)`.
   */
  static async connect(
    dial: Dial,
    topic: string,
    start: StartAt = StartAt.latest,
    options: SubscriberOptions = {},
  ): Promise<Subscriber> {
    checkTopic(topic);
    const connection = await dial();
    try {
      const subscription = await connection.subscribe(topic, start, options.stream ?? 0n);
      await sendCapIfSet(connection, topic, options);
      return new Subscriber(dial, connection, subscription, options);
    } catch (error) {
      await connection.close();
      throw error;
    }
  }

  /** Offset of the next comment the subscriber will return. */
  get nextOffset(): bigint {
    return this.#nextOffset;
  }

  /** Stream id of the topic as the subscriber last saw it; 0 while the topic does not exist. */
  get stream(): bigint {
    return this.#stream;
  }

  /** The SUBSCRIBED reply of the latest subscription. */
  get subscribed(): Subscribed {
    return this.#subscribed;
  }

  /**
   * Comments that the server did not deliver because of `maxPerSec`, summed over the SKIPPED
   * notices read so far on every connection.
   */
  get skipped(): bigint {
    return this.#skipped;
  }

  /** How many times the subscriber reconnected and subscribed again. */
  get reconnects(): number {
    return this.#reconnects;
  }

  /** Returns the next comment, reconnecting as needed; done once the subscriber is closed. */
  next(): Promise<IteratorResult<Event, undefined>> {
    const result = this.#previous.then(() => this.#next());
    this.#previous = result.catch(() => undefined);
    return result;
  }

  /** Closes the subscriber; `for await` calls this when the loop is left early. */
  async return(): Promise<IteratorResult<Event, undefined>> {
    await this.close();
    return DONE;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Closes the connection and stops reconnecting; a waiting `next()` returns done. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#wake?.();
    const connection = this.#connection;
    this.#dropConnection();
    await connection?.close();
  }

  async #next(): Promise<IteratorResult<Event, undefined>> {
    for (;;) {
      if (this.#closed) {
        return DONE;
      }
      const subscription = this.#subscription;
      if (subscription === undefined) {
        await this.#reconnect();
        continue;
      }
      let result: IteratorResult<Event, undefined>;
      try {
        result = await subscription.next();
      } catch (error) {
        this.#connectionLost(error);
        if (!isTransient(error) && !this.#closed) {
          throw error;
        }
        continue;
      }
      if (result.done) {
        // The connection ended the subscription without an error; treat it as lost.
        this.#connectionLost(undefined);
        continue;
      }
      const event = this.#accept(result.value);
      if (event !== undefined) {
        return { done: false, value: event };
      }
    }
  }

  /** Returns `event` if it is the next comment, or `undefined` if it was already returned. */
  #accept(event: Event): Event | undefined {
    if (event.stream !== this.#stream) {
      // The topic was created or recreated during the subscription: its offsets start again.
      this.#streamChanged(event.stream, event.offset);
    }
    if (event.offset < this.#nextOffset) {
      return undefined;
    }
    if (event.offset > this.#nextOffset) {
      this.#options.logger?.debug("comments are missing before this offset", {
        topic: this.topic,
        expected: this.#nextOffset,
        offset: event.offset,
      });
    }
    this.#nextOffset = event.offset + 1n;
    return event;
  }

  #connectionLost(error: unknown): void {
    if (this.#closed) {
      return;
    }
    this.#lastError = error;
    this.#options.logger?.debug("connection lost", {
      topic: this.topic,
      error: error instanceof Error ? error.message : String(error),
    });
    const connection = this.#connection;
    this.#dropConnection();
    void connection?.close();
  }

  /**
   * Dials and subscribes again, with backoff, until it succeeds, a permanent error occurs or the
   * attempts run out; then throws the last error.
   */
  async #reconnect(): Promise<void> {
    let last = this.#lastError;
    for (let attempt = 0; this.#backoff.allows(attempt); attempt++) {
      await this.#sleep(this.#backoff.delay(attempt));
      if (this.#closed) {
        return;
      }
      try {
        await this.#resubscribe();
        return;
      } catch (error) {
        if (!isTransient(error)) {
          throw error;
        }
        last = error;
        this.#options.logger?.debug("reconnect failed", {
          topic: this.topic,
          attempt,
          error: error instanceof Error ? error.message : String(error),
        });
      }
    }
    throw last;
  }

  async #resubscribe(): Promise<void> {
    const connection = await this.#dial();
    let subscription: Subscription;
    try {
      subscription = await connection.subscribe(
        this.topic,
        StartAt.offset(this.#nextOffset),
        this.#stream,
      );
      await sendCapIfSet(connection, this.topic, this.#options);
    } catch (error) {
      await connection.close();
      throw error;
    }
    if (this.#closed) {
      await connection.close();
      return;
    }

    const subscribed = subscription.subscribed;
    this.#reconnects += 1;
    if (subscribed.stream !== this.#stream) {
      this.#streamChanged(subscribed.stream, subscribed.start);
    } else if (subscribed.start > this.#nextOffset) {
      this.#options.logger?.debug("comments before the resume point are no longer kept", {
        topic: this.topic,
        expected: this.#nextOffset,
        start: subscribed.start,
      });
    }
    // The server starts at the offset asked for, or later when older comments are gone.
    this.#nextOffset = subscribed.start;
    this.#subscribed = subscribed;
    this.#connection = connection;
    this.#subscription = subscription;
    this.#watchSkipped(subscription);
    this.#options.logger?.debug("resubscribed", {
      topic: this.topic,
      stream: subscribed.stream,
      start: subscribed.start,
      reconnects: this.#reconnects,
    });
  }

  #watchSkipped(subscription: Subscription): void {
    subscription.onSkipped = (notice) => {
      this.#skipped += notice.count;
      // Every comment below `through` was delivered before the notice or skipped, so a resume
      // continues after them rather than asking for the skipped ones again.
      if (notice.through > this.#nextOffset) {
        this.#nextOffset = notice.through;
      }
      this.#options.onSkipped?.(notice);
    };
  }

  #streamChanged(current: bigint, start: bigint): void {
    const previous = this.#stream;
    this.#stream = current;
    this.#nextOffset = start;
    // Stream 0 means the topic did not exist yet, so its creation is no change to report.
    if (previous !== 0n) {
      this.#options.logger?.debug("stream changed", { topic: this.topic, previous, current });
      this.#options.onStreamChange?.({ topic: this.topic, previous, current, start });
    }
  }

  #dropConnection(): void {
    this.#connection = undefined;
    this.#subscription = undefined;
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined = undefined;
      const finish = (): void => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
      this.#wake = finish;
      timer = setTimeout(finish, ms);
    });
  }
}

/** Sends CAP for the subscription when the subscriber's options set `maxPerSec`. */
async function sendCapIfSet(
  connection: Connection,
  topic: string,
  options: SubscriberOptions,
): Promise<void> {
  if (options.maxPerSec !== undefined && options.maxPerSec > 0) {
    await connection.cap(topic, options.maxPerSec);
  }
}
