import {
  ChorusClosedError,
  ChorusError,
  ChorusModerationError,
  ChorusProtocolError,
  ChorusPublishError,
  ChorusServerError,
  ChorusTimeoutError,
} from "./errors.js";
import { resolveOptions, type Options, type ResolvedOptions } from "./options.js";
import {
  checkTopic,
  encodeFrame,
  encodePreamble,
  ErrorCode,
  FrameDecoder,
  StartAt,
  VERSION,
  type ErrorFrame,
  type Events,
  type Frame,
  type ModAction,
  type ModerateAck,
  type PublishAck,
  type Skipped,
  type Subscribed,
  type Welcome,
} from "./protocol.js";
import { EventQueue, Subscription, type Event } from "./subscription.js";
import type { OpenTransport, Transport } from "./transport.js";

/** A publish accepted and stored by the server. */
export interface Ack {
  /** Sequence number of the publish on its connection. */
  readonly seq: bigint;
  /** Offset the server assigned to the comment. */
  readonly offset: bigint;
  /** Stream id of the topic. */
  readonly stream: bigint;
}

/** A promise with its settle functions, for replies that arrive as frames. */
interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** PUBLISH body bytes besides the topic and payload: seq, topic length and payload length. */
const PUBLISH_OVERHEAD_BYTES = 8 + 1 + 4;

/** Milliseconds a client-side close waits for the channel to close before giving up. */
const CLOSE_WAIT_MS = 2000;

const utf8Encoder = new TextEncoder();

/**
 * Connection state: waiting for the server's preamble, then for WELCOME, then ready for requests,
 * and finally closed.
 */
type Phase = "preamble" | "welcome" | "ready" | "closed";

/**
 * One connection to a chorus server, after the handshake.
 *
 * Requests may overlap: each {@link publish} waits for its own PUBLISH_ACK and each
 * {@link moderate} for its MODERATE_ACK, matched by sequence number, and each {@link subscribe}
 * for its SUBSCRIBED. PING frames from the server get their PONG at once. Open one with `connect`
 * from this package's entry point, or with {@link Connection.open} and a transport of your own.
 *
 * Received comments wait in their subscriptions until the application reads them. While more than
 * `maxBufferedBytes` wait, the connection stops reading from the channel, which also holds back
 * publish acknowledgements: an application that publishes and subscribes on one connection keeps
 * reading its subscriptions.
 */
export class Connection {
  readonly #options: ResolvedOptions;
  readonly #decoder: FrameDecoder;
  #transport: Transport | undefined;
  #phase: Phase = "preamble";
  #welcome: Welcome | undefined;
  readonly #handshake = deferred<Welcome>();
  readonly #closed = deferred<Error | undefined>();
  readonly #channelClosed = deferred<void>();
  #closedReason: Error | undefined;

  #nextSeq = 1n;
  #nextNonce = 1n;
  readonly #acks = new Map<bigint, Deferred<Ack>>();
  readonly #moderations = new Map<bigint, Deferred<void>>();
  readonly #subscribing = new Map<string, Deferred<Subscription>>();
  readonly #subscriptions = new Map<string, EventQueue>();
  readonly #pings = new Map<bigint, { readonly done: Deferred<number>; readonly sentAt: number }>();

  #bufferedBytes = 0;
  #paused = false;
  #keepAlive: ReturnType<typeof setInterval> | undefined;
  #lastSent = performance.now();
  #lastReceived = performance.now();

  private constructor(options: ResolvedOptions) {
    this.#options = options;
    this.#decoder = new FrameDecoder(options.maxFrame);
    // The handshake promise is awaited only during open(); a later rejection is expected.
    this.#handshake.promise.catch(() => undefined);
  }

  /**
   * Opens a channel with `openTransport`, exchanges preambles, sends HELLO and waits for WELCOME.
   *
   * Opening and the handshake together may take up to `connectTimeoutMs`, after which the promise
   * rejects with {@link ChorusTimeoutError}. An ERROR from the server rejects it with
   * {@link ChorusServerError}.
   */
  static async open(openTransport: OpenTransport, options?: Options): Promise<Connection> {
    const connection = new Connection(resolveOptions(options));
    await connection.#start(openTransport);
    return connection;
  }

  /** The server's WELCOME, with its limits. */
  get welcome(): Welcome {
    // open() resolves only after WELCOME set this, and the constructor is private.
    return this.#welcome!;
  }

  /** Address of the server, for messages. */
  get peer(): string {
    return this.#transport?.peer ?? "";
  }

  /** Whether the connection is closed, by either side. */
  get isClosed(): boolean {
    return this.#phase === "closed";
  }

  /**
   * Settles when the connection has closed, with the error that closed it, or `undefined` when
   * the client closed it. It never rejects.
   */
  get closed(): Promise<Error | undefined> {
    return this.#closed.promise;
  }

  /**
   * Publishes one comment and waits for the server to store it. A string payload is sent as UTF-8.
   *
   * Rejects with {@link ChorusPublishError} when the server rejects the comment, or without
   * sending it when the payload exceeds the server's announced limits; with a `RangeError` for an
   * invalid topic; and with the connection's error when the connection closes first.
   *
   * NOTE: publishes are sent at once and not limited in number, so a caller that does not await
   * them can queue any amount of data in the channel's send buffer.
   */
  async publish(topic: string, payload: Uint8Array | string): Promise<Ack> {
    checkTopic(topic);
    const bytes = typeof payload === "string" ? utf8Encoder.encode(payload) : payload;
    this.#checkOpen();
    this.#checkPayload(topic, bytes);

    const seq = this.#nextSeq++;
    const ack = deferred<Ack>();
    this.#acks.set(seq, ack);
    this.#sendFrame({ type: "PUBLISH", seq, topic, payload: bytes });
    return ack.promise;
  }

  /**
   * Subscribes to `topic` and waits for SUBSCRIBED.
   *
   * `stream` is the topic's stream id from an earlier subscription, or 0. When it is not 0 and
   * the topic has been recreated since, the server starts at the new stream's earliest offset
   * whatever `start` requests; compare `subscribed.stream` to tell. A subscribe to a topic that
   * already has a subscription replaces it. An ERROR about the topic rejects the promise with
   * {@link ChorusServerError}, such as `OFFSET_OUT_OF_RANGE` for an offset past the end.
   */
  async subscribe(
    topic: string,
    start: StartAt = StartAt.latest,
    stream: bigint = 0n,
  ): Promise<Subscription> {
    checkTopic(topic);
    this.#checkOpen();
    if (this.#subscribing.has(topic)) {
      throw new Error(`a subscribe to topic ${topic} is still waiting for its SUBSCRIBED`);
    }
    const subscribed = deferred<Subscription>();
    this.#subscribing.set(topic, subscribed);
    this.#sendFrame({ type: "SUBSCRIBE", topic, start, stream });
    return subscribed.promise;
  }

  /**
   * Ends the subscription to `topic`, if there is one, and sends UNSUBSCRIBE. The server sends no
   * reply, and comments it sent before reading the UNSUBSCRIBE are discarded.
   */
  async unsubscribe(topic: string): Promise<void> {
    checkTopic(topic);
    this.#checkOpen();
    const queue = this.#subscriptions.get(topic);
    if (queue !== undefined) {
      this.#dropSubscription(topic, queue);
    } else {
      this.#sendFrame({ type: "UNSUBSCRIBE", topic });
    }
  }

  /**
   * Requests a moderation action and waits for its MODERATE_ACK. Build `action` with the
   * {@link ModAction} constructors, such as `ModAction.deleteComment("live", 42n)`.
   *
   * Rejects with {@link ChorusModerationError}, whose `code` gives the reason, when the server
   * does not carry the action out: `FORBIDDEN` for a session that may not moderate, or
   * `COMMENT_NOT_FOUND` for an offset the topic does not keep. Rejects with a `RangeError`,
   * without sending anything, for an invalid topic or an empty user id.
   */
  async moderate(action: ModAction): Promise<void> {
    this.#checkOpen();
    const seq = this.#nextSeq++;
    // Encoding first means an invalid action leaves nothing waiting for a MODERATE_ACK.
    const bytes = encodeFrame({ type: "MODERATE", seq, action });
    const done = deferred<void>();
    this.#moderations.set(seq, done);
    this.#send(bytes);
    return done.promise;
  }

  /**
   * Sends `count` reactions of one kind, such as `heart`, to `topic`. The server sends no reply;
   * it adds the reactions up and publishes the sums to the topic `_reactions/<topic>`. Only
   * relay sessions may send a count above 1; any other session gets ERROR FORBIDDEN and the
   * server closes the connection.
   *
   * Rejects with a `RangeError` for an invalid topic, a kind that is empty or longer than 32
   * bytes of UTF-8, or a count outside 1 to 2^32 - 1.
   */
  async react(topic: string, kind: string, count = 1): Promise<void> {
    this.#checkOpen();
    this.#sendFrame({ type: "REACT", topic, kind, count });
  }

  /**
   * Caps the subscription to `topic` at `maxPerSec` comments per second; 0 removes the cap. The
   * server sends no reply and ignores a cap for a topic without a subscription. Entries with the
   * PRIORITY, TOMBSTONE or DELETED flag are always delivered. The comments left out are counted
   * in SKIPPED notices, which the subscription hands to its {@link Subscription.onSkipped}.
   */
  async cap(topic: string, maxPerSec: number): Promise<void> {
    this.#checkOpen();
    this.#sendFrame({ type: "CAP", topic, maxPerSec });
  }

  /** Sends PING and returns the milliseconds until the matching PONG arrived. */
  async ping(): Promise<number> {
    this.#checkOpen();
    const nonce = this.#nextNonce++;
    const done = deferred<number>();
    this.#pings.set(nonce, { done, sentAt: performance.now() });
    this.#sendFrame({ type: "PING", nonce });
    return done.promise;
  }

  /**
   * Closes the connection. Requests still waiting fail with {@link ChorusClosedError};
   * subscriptions return the comments already received, then end. Resolves once the channel has
   * closed, or after 2 seconds if it does not.
   */
  async close(): Promise<void> {
    this.#shutdown(undefined);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const gaveUp = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, CLOSE_WAIT_MS);
    });
    await Promise.race([this.#channelClosed.promise, gaveUp]);
    clearTimeout(timer);
  }

  // -------------------------------------------------------------------------------------------
  // Handshake

  async #start(openTransport: OpenTransport): Promise<void> {
    const timeoutMs = this.#options.connectTimeoutMs;
    const controller = new AbortController();
    const timer = setTimeout(() => {
      const reason = new ChorusTimeoutError(`no WELCOME from the server within ${timeoutMs} ms`);
      controller.abort(reason);
      this.#shutdown(reason);
    }, timeoutMs);
    try {
      const handlers = {
        data: (bytes: Uint8Array) => this.#receive(bytes),
        closed: (error?: Error) => this.#channelEnded(error),
      };
      this.#transport = await openTransport(handlers, controller.signal);
      if (this.#phase === "closed") {
        this.#transport.close();
      } else {
        this.#send(encodePreamble());
        this.#sendFrame({
          type: "HELLO",
          version: VERSION,
          maxFrame: this.#options.maxFrame,
          clientName: this.#options.clientName,
          token: this.#options.token,
        });
      }
      const welcome = await this.#handshake.promise;
      this.#options.logger?.debug("connected", {
        peer: this.peer,
        server: welcome.serverName,
        maxFrame: welcome.maxFrame,
        maxPayload: welcome.maxPayload,
      });
    } catch (error) {
      this.#shutdown(asError(error));
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  #accept(welcome: Welcome): void {
    if (welcome.version !== VERSION) {
      throw new ChorusProtocolError(
        ErrorCode.UNSUPPORTED_VERSION,
        `WELCOME names protocol version ${welcome.version}; this client speaks ${VERSION}`,
      );
    }
    this.#welcome = welcome;
    this.#phase = "ready";
    this.#startKeepAlive(welcome);
    this.#handshake.resolve(welcome);
  }

  // -------------------------------------------------------------------------------------------
  // Receiving

  #receive(bytes: Uint8Array): void {
    if (this.#phase === "closed") {
      return;
    }
    this.#lastReceived = performance.now();
    this.#decoder.push(bytes);
    try {
      if (this.#phase === "preamble") {
        if (this.#decoder.readPreamble() === undefined) {
          return;
        }
        this.#phase = "welcome";
      }
      // A frame handler may close the connection, which ends the loop.
      while (!this.isClosed) {
        const frame = this.#decoder.next();
        if (frame === undefined) {
          return;
        }
        this.#handle(frame);
      }
    } catch (error) {
      this.#failReceive(error);
    }
  }

  #handle(frame: Frame): void {
    if (this.#phase === "welcome") {
      this.#handleHandshake(frame);
      return;
    }
    switch (frame.type) {
      case "SUBSCRIBED":
        this.#onSubscribed(frame);
        return;
      case "PUBLISH_ACK":
        this.#onPublishAck(frame);
        return;
      case "MODERATE_ACK":
        this.#onModerateAck(frame);
        return;
      case "SKIPPED":
        this.#onSkipped(frame);
        return;
      case "EVENTS":
        this.#onEvents(frame);
        return;
      case "PING":
        this.#sendFrame({ type: "PONG", nonce: frame.nonce });
        return;
      case "PONG":
        this.#onPong(frame.nonce);
        return;
      case "ERROR":
        this.#onError(frame);
        return;
      default:
        throw unexpected(frame, "after the handshake");
    }
  }

  #handleHandshake(frame: Frame): void {
    switch (frame.type) {
      case "WELCOME":
        this.#accept(frame);
        return;
      case "PING":
        this.#sendFrame({ type: "PONG", nonce: frame.nonce });
        return;
      case "ERROR":
        this.#shutdown(serverError(frame));
        return;
      default:
        throw unexpected(frame, "before WELCOME");
    }
  }

  #onSubscribed(frame: Subscribed): void {
    const pending = this.#subscribing.get(frame.topic);
    if (pending === undefined) {
      // No request of ours is waiting for it, so the subscription is not wanted.
      this.#options.logger?.warn("unrequested SUBSCRIBED; unsubscribing", { topic: frame.topic });
      this.#sendFrame({ type: "UNSUBSCRIBE", topic: frame.topic });
      return;
    }
    this.#subscribing.delete(frame.topic);
    // The server has replaced any earlier subscription to the topic; its reader sees the end.
    this.#subscriptions.get(frame.topic)?.end();
    const queue = new EventQueue((bytes) => this.#consumed(bytes));
    this.#subscriptions.set(frame.topic, queue);
    pending.resolve(
      new Subscription(frame, queue, () => this.#dropSubscription(frame.topic, queue)),
    );
  }

  #onPublishAck(frame: PublishAck): void {
    const ack = this.#acks.get(frame.seq);
    if (ack === undefined) {
      this.#options.logger?.warn("PUBLISH_ACK for no waiting publish", { seq: frame.seq });
      return;
    }
    this.#acks.delete(frame.seq);
    if (frame.code === ErrorCode.OK) {
      ack.resolve({ seq: frame.seq, offset: frame.offset, stream: frame.stream });
    } else {
      ack.reject(new ChorusPublishError(frame.seq, frame.code));
    }
  }

  #onModerateAck(frame: ModerateAck): void {
    const done = this.#moderations.get(frame.seq);
    if (done === undefined) {
      this.#options.logger?.warn("MODERATE_ACK for no waiting moderation action", {
        seq: frame.seq,
      });
      return;
    }
    this.#moderations.delete(frame.seq);
    if (frame.code === ErrorCode.OK) {
      done.resolve();
    } else {
      done.reject(new ChorusModerationError(frame.seq, frame.code));
    }
  }

  #onSkipped(frame: Skipped): void {
    const queue = this.#subscriptions.get(frame.topic);
    if (queue === undefined) {
      // Sent before the server read our UNSUBSCRIBE.
      return;
    }
    this.#bufferedBytes += queue.push([frame]);
    if (this.#bufferedBytes > this.#options.maxBufferedBytes && !this.#paused) {
      this.#pauseReading();
    }
  }

  #onEvents(frame: Events): void {
    const queue = this.#subscriptions.get(frame.topic);
    if (queue === undefined) {
      // Sent before the server read our UNSUBSCRIBE.
      return;
    }
    const events: Event[] = frame.events.map((entry) => ({
      ...entry,
      topic: frame.topic,
      stream: frame.stream,
    }));
    this.#bufferedBytes += queue.push(events);
    if (this.#bufferedBytes > this.#options.maxBufferedBytes && !this.#paused) {
      this.#pauseReading();
    }
  }

  #onPong(nonce: bigint): void {
    const ping = this.#pings.get(nonce);
    if (ping !== undefined) {
      this.#pings.delete(nonce);
      ping.done.resolve(performance.now() - ping.sentAt);
    }
  }

  #onError(frame: ErrorFrame): void {
    const error = serverError(frame);
    if (frame.close) {
      this.#shutdown(error);
      return;
    }
    // An ERROR with close=0 concerns one topic: whatever this connection has for it is over.
    const pending = this.#subscribing.get(frame.topic);
    const queue = this.#subscriptions.get(frame.topic);
    if (pending === undefined && queue === undefined) {
      this.#options.logger?.warn("server error about no subscription", {
        topic: frame.topic,
        code: frame.code,
        message: frame.message,
      });
      return;
    }
    this.#subscribing.delete(frame.topic);
    pending?.reject(error);
    if (queue !== undefined) {
      this.#subscriptions.delete(frame.topic);
      queue.fail(error);
    }
  }

  /** Reports a frame that failed to decode or is not allowed, then closes. */
  #failReceive(error: unknown): void {
    const reason = asError(error);
    this.#options.logger?.warn("invalid data from the server; closing", {
      peer: this.peer,
      error: reason.message,
    });
    // A peer that sent a wrong preamble gets nothing more; after a preamble, the frame's error.
    if (error instanceof ChorusProtocolError && this.#phase !== "preamble") {
      this.#trySend({
        type: "ERROR",
        code: error.code,
        close: true,
        topic: "",
        message: truncate(error.message, 1000),
      });
    }
    this.#shutdown(reason);
  }

  #channelEnded(error: Error | undefined): void {
    this.#channelClosed.resolve();
    if (this.#phase === "closed") {
      return;
    }
    let reason: Error;
    try {
      this.#decoder.finish();
      if (error instanceof ChorusError) {
        // The transport found the failure itself, such as a text WebSocket message.
        this.#shutdown(error);
        return;
      }
      const detail = error === undefined ? "closed by the server" : `lost: ${error.message}`;
      reason = new ChorusClosedError(`the connection to ${this.peer} was ${detail}`, {
        cause: error,
      });
    } catch (truncated) {
      reason = asError(truncated);
    }
    this.#shutdown(reason);
  }

  // -------------------------------------------------------------------------------------------
  // Flow control and keep-alive

  #pauseReading(): void {
    const transport = this.#transport;
    if (transport !== undefined && transport.pause()) {
      this.#paused = true;
      this.#options.logger?.debug("paused reading", { buffered: this.#bufferedBytes });
      return;
    }
    this.#shutdown(
      new ChorusClosedError(
        `closed the connection because ${this.#bufferedBytes} bytes of comments were not read, ` +
          `more than maxBufferedBytes (${this.#options.maxBufferedBytes}), ` +
          "and the channel cannot pause",
      ),
    );
  }

  #consumed(bytes: number): void {
    this.#bufferedBytes -= bytes;
    if (this.#paused && this.#bufferedBytes <= this.#options.maxBufferedBytes / 2) {
      this.#paused = false;
      // The silence while paused was ours, not the server's.
      this.#lastReceived = performance.now();
      this.#transport?.resume();
    }
  }

  #startKeepAlive(welcome: Welcome): void {
    const serverIdle = welcome.idleTimeoutMs;
    const interval =
      this.#options.keepAliveMs ??
      (serverIdle > 0 ? Math.max(1, Math.floor(serverIdle / 3)) : 30_000);
    if (interval <= 0) {
      return;
    }
    this.#keepAlive = setInterval(() => this.#keepAliveTick(interval), interval);
    // In Node, a connection alone does not keep the process running.
    (this.#keepAlive as { unref?: () => void }).unref?.();
  }

  #keepAliveTick(interval: number): void {
    const now = performance.now();
    const silent = now - this.#lastReceived;
    if (!this.#paused && silent >= 3 * interval) {
      this.#shutdown(
        new ChorusTimeoutError(`received nothing from ${this.peer} for ${Math.round(silent)} ms`),
      );
      return;
    }
    if (now - this.#lastSent >= interval) {
      this.#sendFrame({ type: "PING", nonce: this.#nextNonce++ });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Sending and closing

  #send(bytes: Uint8Array): void {
    // #start sets the transport before anything is sent.
    this.#transport!.send(bytes);
    this.#lastSent = performance.now();
  }

  #sendFrame(frame: Frame): void {
    this.#send(encodeFrame(frame));
  }

  /** Sends a frame while failing, when the channel is still there to take it. */
  #trySend(frame: Frame): void {
    if (this.#transport === undefined) {
      return;
    }
    try {
      this.#sendFrame(frame);
    } catch {
      // The connection is closing because of an earlier error, which is the one reported.
    }
  }

  #checkOpen(): void {
    if (this.#phase === "closed") {
      throw new ChorusClosedError("the connection is closed", { cause: this.#closedReason });
    }
  }

  #checkPayload(topic: string, payload: Uint8Array): void {
    const welcome = this.welcome;
    // A limit of 0 means the server announced none.
    if (welcome.maxPayload !== 0 && payload.byteLength > welcome.maxPayload) {
      throw new ChorusPublishError(
        undefined,
        ErrorCode.PAYLOAD_TOO_LARGE,
        `payload of ${payload.byteLength} bytes exceeds the server's maximum of ` +
          `${welcome.maxPayload}; it was not sent`,
      );
    }
    const body = PUBLISH_OVERHEAD_BYTES + topic.length + payload.byteLength;
    if (welcome.maxFrame !== 0 && body > welcome.maxFrame) {
      throw new ChorusPublishError(
        undefined,
        ErrorCode.PAYLOAD_TOO_LARGE,
        `PUBLISH body of ${body} bytes exceeds the server's maximum frame of ` +
          `${welcome.maxFrame}; it was not sent`,
      );
    }
  }

  #dropSubscription(topic: string, queue: EventQueue): void {
    if (this.#subscriptions.get(topic) === queue) {
      this.#subscriptions.delete(topic);
      if (this.#phase === "ready") {
        this.#sendFrame({ type: "UNSUBSCRIBE", topic });
      }
    }
    queue.discard();
  }

  /**
   * Closes the connection once: fails what waits for an answer, ends or fails the subscriptions
   * and closes the channel. `error` is undefined when the client closes.
   */
  #shutdown(error: Error | undefined): void {
    if (this.#phase === "closed") {
      return;
    }
    this.#phase = "closed";
    this.#closedReason = error;
    clearInterval(this.#keepAlive);
    if (error !== undefined) {
      this.#options.logger?.debug("connection closed", { peer: this.peer, error: error.message });
    }

    const reason = error ?? new ChorusClosedError("the connection was closed by the client");
    this.#handshake.reject(reason);
    for (const ack of this.#acks.values()) {
      ack.reject(reason);
    }
    for (const done of this.#moderations.values()) {
      done.reject(reason);
    }
    for (const subscribed of this.#subscribing.values()) {
      subscribed.reject(reason);
    }
    for (const ping of this.#pings.values()) {
      ping.done.reject(reason);
    }
    for (const queue of this.#subscriptions.values()) {
      if (error === undefined) {
        queue.end();
      } else {
        queue.fail(error);
      }
    }
    this.#acks.clear();
    this.#moderations.clear();
    this.#subscribing.clear();
    this.#pings.clear();
    this.#subscriptions.clear();

    if (this.#transport === undefined) {
      this.#channelClosed.resolve();
    } else {
      this.#transport.close();
    }
    this.#closed.resolve(error);
  }
}

function serverError(frame: ErrorFrame): ChorusServerError {
  return new ChorusServerError(frame.code, frame.topic, frame.message, frame.close);
}

function unexpected(frame: Frame, when: string): ChorusProtocolError {
  return new ChorusProtocolError(
    ErrorCode.UNEXPECTED_FRAME,
    `the server sent ${frame.type} ${when}, which a server may not send`,
  );
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** Shortens `text` to at most `max` UTF-16 units, for messages with a length limit. */
function truncate(text: string, max: number): string {
  return text.length <= max ? text : text.slice(0, max);
}
