import type { EventEntry, Skipped, Subscribed } from "./protocol.js";

/** A comment received on a subscription. */
export interface Event extends EventEntry {
  /** Topic the comment was published to. */
  readonly topic: string;
  /** Stream id of the topic at delivery; it changes when the topic is recreated. */
  readonly stream: bigint;
}

/** Bytes counted for an event besides its payload and publisher: fields and object overhead. */
const EVENT_OVERHEAD_BYTES = 64;

/** Item of a subscription's queue: a comment, or a SKIPPED notice in its stream order. */
export type QueueItem = Event | Skipped;

/** Returns the bytes an item is counted as while it waits to be read. */
export function eventSize(item: QueueItem): number {
  if (isSkipped(item)) {
    return EVENT_OVERHEAD_BYTES;
  }
  return item.payload.byteLength + item.publisher.length + EVENT_OVERHEAD_BYTES;
}

function isSkipped(item: QueueItem): item is Skipped {
  return (item as { type?: unknown }).type === "SKIPPED";
}

interface Waiter {
  resolve(result: IteratorResult<QueueItem, undefined>): void;
  reject(error: unknown): void;
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

/**
 * The events and SKIPPED notices of one subscription, waiting to be read in order. The
 * connection pushes, the application reads through {@link Subscription}; `onConsumed` reports
 * the bytes each read frees, so the connection can bound what waits in all its queues together.
 */
export class EventQueue {
  readonly #onConsumed: (bytes: number) => void;
  #events: QueueItem[] = [];
  #head = 0;
  #waiters: Waiter[] = [];
  #state: "open" | "ended" | "failed" = "open";
  #error: unknown;

  constructor(onConsumed: (bytes: number) => void) {
    this.#onConsumed = onConsumed;
  }

  /** Whether events are still accepted. */
  get isOpen(): boolean {
    return this.#state === "open";
  }

  /** Adds events or a notice and returns the bytes that now wait in the queue for them. */
  push(events: readonly QueueItem[]): number {
    if (this.#state !== "open") {
      return 0;
    }
    let waiting = 0;
    for (const event of events) {
      const waiter = this.#waiters.shift();
      if (waiter === undefined) {
        this.#events.push(event);
        waiting += eventSize(event);
      } else {
        waiter.resolve({ done: false, value: event });
      }
    }
    return waiting;
  }

  /** Ends the queue: reads return the events already queued, then done. */
  end(): void {
    this.#close("ended", undefined);
  }

  /** Fails the queue: reads return the events already queued, then reject with `error`. */
  fail(error: unknown): void {
    this.#close("failed", error);
  }

  /** Ends the queue and drops the events not yet read. */
  discard(): void {
    let freed = 0;
    for (let i = this.#head; i < this.#events.length; i++) {
      freed += eventSize(this.#events[i]!);
    }
    this.#events = [];
    this.#head = 0;
    this.#close("ended", undefined);
    if (freed > 0) {
      this.#onConsumed(freed);
    }
  }

  /** Returns the next item, waiting for one while the queue is open. */
  next(): Promise<IteratorResult<QueueItem, undefined>> {
    if (this.#head < this.#events.length) {
      return Promise.resolve({ done: false, value: this.#take() });
    }
    if (this.#state === "ended") {
      return Promise.resolve(DONE);
    }
    if (this.#state === "failed") {
      return Promise.reject(this.#error);
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  #take(): QueueItem {
    // The caller checked that #head < #events.length.
    const event = this.#events[this.#head]!;
    this.#head += 1;
    // Drop the read part of the array now and then, so reading stays O(1) per event.
    if (this.#head === this.#events.length) {
      this.#events = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#events.length) {
      this.#events = this.#events.slice(this.#head);
      this.#head = 0;
    }
    this.#onConsumed(eventSize(event));
    return event;
  }

  #close(state: "ended" | "failed", error: unknown): void {
    if (this.#state !== "open") {
      return;
    }
    this.#state = state;
    this.#error = error;
    // Waiters exist only while no event is queued, so they get the end state at once.
    for (const waiter of this.#waiters.splice(0)) {
      if (state === "failed") {
        waiter.reject(error);
      } else {
        waiter.resolve(DONE);
      }
    }
  }
}

/**
 * One subscription on a {@link Connection}: an async iterator of the topic's comments in offset
 * order, starting at the offset in {@link subscribed}.
 *
 * The iterator ends after {@link unsubscribe}, after `break` in a `for await` loop (which
 * unsubscribes), when a later subscribe to the same topic replaces it, or when the connection is
 * closed by the client. When the connection fails, or the server sends an ERROR about the topic,
 * the comments already received are returned first, then the iterator throws the error.
 *
 * It does not reconnect; {@link Subscriber} does.
 */
export class Subscription implements AsyncIterableIterator<Event, undefined> {
  /** The server's SUBSCRIBED reply: the stream id and the offsets the subscription starts at. */
  readonly subscribed: Subscribed;
  /**
   * Called with each SKIPPED notice of a capped subscription (see {@link Connection.cap}), in
   * stream order: once the comments received before the notice have been read, and before the
   * next comment is returned. Exceptions it throws are thrown from `next()`.
   */
  onSkipped: ((notice: Skipped) => void) | undefined = undefined;
  readonly #queue: EventQueue;
  readonly #unsubscribe: () => void;
  #skipped = 0n;

  /** Created by {@link Connection.subscribe}; not meant to be called directly. */
  constructor(subscribed: Subscribed, queue: EventQueue, unsubscribe: () => void) {
    this.subscribed = subscribed;
    this.#queue = queue;
    this.#unsubscribe = unsubscribe;
  }

  /** Topic of the subscription. */
  get topic(): string {
    return this.subscribed.topic;
  }

  /**
   * Comments that the server did not deliver because of the subscription's cap, summed over the
   * SKIPPED notices read so far.
   */
  get skipped(): bigint {
    return this.#skipped;
  }

  /** Returns the next comment, waiting until one arrives, and hands notices to `onSkipped`. */
  async next(): Promise<IteratorResult<Event, undefined>> {
    // Each turn takes one item off the queue, so the loop ends once the queue has no notices.
    for (;;) {
      const result = await this.#queue.next();
      if (result.done === true || !isSkipped(result.value)) {
        return result as IteratorResult<Event, undefined>;
      }
      this.#skipped += result.value.count;
      this.onSkipped?.(result.value);
    }
  }

  /** Unsubscribes; `for await` calls this when the loop is left early. */
  async return(): Promise<IteratorResult<Event, undefined>> {
    this.#unsubscribe();
    return DONE;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /**
   * Ends the subscription: sends UNSUBSCRIBE and drops the comments not yet read. Comments the
   * server sent before it read the UNSUBSCRIBE are discarded as they arrive.
   */
  async unsubscribe(): Promise<void> {
    this.#unsubscribe();
  }
}
