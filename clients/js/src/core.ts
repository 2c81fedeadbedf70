/**
 * What the Node and browser entry points share: the connection, subscriptions, the resuming
 * subscriber, errors and the protocol types an application uses. Each entry point adds the
 * transports its platform has.
 *
 * @module
 */

export { Connection, type Ack } from "./connection.js";
export {
  ChorusClosedError,
  ChorusConnectError,
  ChorusError,
  ChorusModerationError,
  ChorusProtocolError,
  ChorusPublishError,
  ChorusServerError,
  ChorusTimeoutError,
  ChorusTlsError,
  isTransient,
  type TlsFailure,
} from "./errors.js";
export {
  Backoff,
  CLIENT_VERSION,
  type BackoffOptions,
  type Logger,
  type Options,
} from "./options.js";
export {
  DEFAULT_MAX_FRAME,
  describeCode,
  EntryFlag,
  ErrorCode,
  errorCodeName,
  isDeleted,
  isPriority,
  isTombstone,
  isValidTopic,
  ModAction,
  StartAt,
  tombstoneTarget,
  topicProblem,
  VERSION,
  type ErrorCodeName,
  type EventEntry,
  type Skipped,
  type Subscribed,
  type Welcome,
} from "./protocol.js";
export { Subscriber, type StreamChange, type SubscriberOptions } from "./subscriber.js";
export { Subscription, type Event } from "./subscription.js";
export type { Dial, OpenTransport, Transport, TransportHandlers } from "./transport.js";
export {
  SUBPROTOCOL,
  webSocketTransport,
  type WebSocketConstructor,
  type WebSocketLike,
  type WebSocketOptions,
} from "./websocket.js";
