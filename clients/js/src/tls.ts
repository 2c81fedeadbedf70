/**
 * TLS settings of the Node transports, and their translation into `node:tls` options. Node only:
 * browsers run TLS for `wss://` URLs themselves.
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { checkServerIdentity, type ConnectionOptions, type PeerCertificate } from "node:tls";

import { ChorusTlsError } from "./errors.js";
import type { Logger } from "./options.js";

/** ALPN protocol id of chorus protocol version 1 over TLS, which chorusd selects. */
export const ALPN_PROTOCOL = "chorus/1";

/**
 * TLS settings of a connection. The client offers the TLS versions Node enables by default
 * (1.2 and 1.3 in Node 20) and, over TCP, the ALPN protocol `chorus/1`. Files are read at each
 * connect, so renewed certificates take effect on the next connection.
 */
export interface TlsOptions {
  /**
   * PEM file with the CA certificates that may sign the server's certificate. Without it, and
   * without `ca`, the client trusts Node's default CA store: the Mozilla CA certificates built
   * into Node, plus any in the file that the `NODE_EXTRA_CA_CERTS` environment variable names
   * (or OpenSSL's store when Node runs with `--use-openssl-ca`).
   */
  caFile?: string;
  /** PEM text of CA certificates, trusted together with those of `caFile`. */
  ca?: string;
  /**
   * PEM files with the client's certificate chain (leaf first) and its private key, for servers
   * that require client certificates (mutual TLS). Set both or neither.
   */
  certFile?: string;
  keyFile?: string;
  /**
   * Name checked against the server's certificate, and sent as SNI unless it is an IP address.
   * Default: the host connected to.
   */
  serverName?: string;
  /**
   * Accepts any server certificate, so the connection is encrypted but the server is not
   * authenticated and anyone on the path can read and change the traffic. For tests against
   * throwaway certificates only. Every connect logs a warning to the `logger` option, and the
   * first one in a process also emits a Node process warning.
   */
  insecureSkipVerifyForTesting?: boolean;
}

/**
 * Builds the `node:tls` options of one connect to `host`: reads the files, and sets the name
 * check, SNI and `alpn` when given. Throws {@link ChorusTlsError} with failure `setup` when a
 * file cannot be read, naming `peer` in the message.
 */
export async function tlsConnectOptions(
  tls: TlsOptions,
  host: string,
  peer: string,
  alpn: string | undefined,
  logger: Logger | undefined,
): Promise<ConnectionOptions> {
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new ChorusTlsError(
      peer,
      "setup",
      "tls.certFile and tls.keyFile must be set together, for a client certificate",
    );
  }
  const name = tls.serverName ?? host;
  const options: ConnectionOptions = {};
  const cas = [
    ...(tls.caFile === undefined ? [] : [await readPem(tls.caFile, "CA certificates", peer)]),
    ...(tls.ca === undefined ? [] : [tls.ca]),
  ];
  if (cas.length > 0) {
    options.ca = cas;
  }
  if (tls.certFile !== undefined && tls.keyFile !== undefined) {
    options.cert = await readPem(tls.certFile, "client certificate chain", peer);
    options.key = await readPem(tls.keyFile, "client private key", peer);
  }
  // Node warns (DEP0123) when SNI is an IP address, which RFC 6066 does not allow.
  if (isIP(name) === 0) {
    options.servername = name;
  }
  if (alpn !== undefined) {
    options.ALPNProtocols = [alpn];
  }
  if (tls.insecureSkipVerifyForTesting === true) {
    warnInsecure(peer, logger);
    options.rejectUnauthorized = false;
    options.checkServerIdentity = () => undefined;
  } else {
    options.rejectUnauthorized = true;
    options.checkServerIdentity = (_host: string, cert: PeerCertificate) =>
      checkServerIdentity(name, cert);
  }
  return options;
}

const INSECURE_WARNING =
  "TLS certificate verification is off (insecureSkipVerifyForTesting): the connection is " +
  "encrypted, but the server is not authenticated";

let insecureWarningEmitted = false;

/**
 * Warns about a connect without certificate verification: to `logger` on every connect, and
 * once per process as a Node process warning, which Node prints to stderr.
 */
function warnInsecure(peer: string, logger: Logger | undefined): void {
  logger?.warn(INSECURE_WARNING, { peer });
  if (!insecureWarningEmitted) {
    insecureWarningEmitted = true;
    process.emitWarning(INSECURE_WARNING, { code: "CHORUS_INSECURE_TLS" });
  }
}

async function readPem(path: string, contents: string, peer: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ChorusTlsError(
      peer,
      "setup",
      `cannot read the TLS ${contents}: ${reason}`,
      undefined,
      error,
    );
  }
  if (!text.includes("-----BEGIN ")) {
    throw new ChorusTlsError(
      peer,
      "setup",
      `no PEM block found in the TLS ${contents} file ${path}`,
    );
  }
  return text;
}

/**
 * Error codes of certificate checks: OpenSSL's X.509 verification results as Node reports them,
 * listed under "X509 certificate error codes" in the `node:tls` documentation.
 */
const CERTIFICATE_CODES: ReadonlySet<string> = new Set([
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_CRL",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECRYPT_CRL_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "CERT_SIGNATURE_FAILURE",
  "CRL_SIGNATURE_FAILURE",
  "CERT_NOT_YET_VALID",
  "CERT_HAS_EXPIRED",
  "CRL_NOT_YET_VALID",
  "CRL_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD",
  "ERROR_IN_CERT_NOT_AFTER_FIELD",
  "ERROR_IN_CRL_LAST_UPDATE_FIELD",
  "ERROR_IN_CRL_NEXT_UPDATE_FIELD",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "CERT_CHAIN_TOO_LONG",
  "CERT_REVOKED",
  "INVALID_CA",
  "PATH_LENGTH_EXCEEDED",
  "INVALID_PURPOSE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
]);

/**
 * Error codes of a certificate that does not name the server connected to: OpenSSL's, and that
 * of Node's own check.
 */
const NAME_CODES: ReadonlySet<string> = new Set([
  "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/**
 * OpenSSL errors of a client that received the server's alert about its certificate. In TLS
 * 1.3 the server checks the client's certificate after the client has finished its handshake,
 * so these arrive on the first read.
 */
const CLIENT_CERTIFICATE_CODES: ReadonlySet<string> = new Set([
  "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED",
  "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA",
  "ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE",
  "ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN",
  "ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
  "ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED",
  "ERR_SSL_SSLV3_ALERT_CERTIFICATE_REVOKED",
]);

/**
 * OpenSSL errors of a client whose first TLS record from the server is not TLS, as when a
 * plaintext chorus server replies to the ClientHello with its preamble `CHORUS`.
 */
const NOT_TLS_CODES: ReadonlySet<string> = new Set([
  "ERR_SSL_WRONG_VERSION_NUMBER",
  "ERR_SSL_PACKET_LENGTH_TOO_LONG",
  "ERR_SSL_RECORD_LENGTH_MISMATCH",
  "ERR_SSL_UNKNOWN_PROTOCOL",
]);

/**
 * Returns the {@link ChorusTlsError} for an error of a TLS handshake with `peer`, or `undefined`
 * for an error that is not about TLS, such as a refused or reset connection.
 */
export function tlsHandshakeError(error: Error, peer: string): ChorusTlsError | undefined {
  const code = (error as { code?: unknown }).code;
  if (typeof code !== "string") {
    return undefined;
  }
  if (NAME_CODES.has(code)) {
    const detail =
      `the server's TLS certificate does not name the server: ${error.message} (${code}); ` +
      "connect to a name the certificate lists, or set tls.serverName to one";
    return new ChorusTlsError(peer, "certificate", detail, code, error);
  }
  if (CERTIFICATE_CODES.has(code)) {
    const detail =
      `the server's TLS certificate was rejected: ${error.message} (${code}); trust the CA ` +
      "that signed it with tls.caFile or tls.ca";
    return new ChorusTlsError(peer, "certificate", detail, code, error);
  }
  if (CLIENT_CERTIFICATE_CODES.has(code)) {
    const detail =
      `the server rejected the client's TLS certificate: ${reasonOf(error)} (${code}); ` +
      "set tls.certFile and tls.keyFile to a certificate that the server's client CA signed";
    return new ChorusTlsError(peer, "clientCertificate", detail, code, error);
  }
  if (NOT_TLS_CODES.has(code)) {
    const detail =
      `the server does not speak TLS on this port (${code}); connect without the tls option ` +
      "or to its TLS port";
    return new ChorusTlsError(peer, "tlsNotOffered", detail, code, error);
  }
  if (code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_")) {
    const detail = `the TLS handshake failed: ${reasonOf(error)} (${code})`;
    return new ChorusTlsError(peer, "handshake", detail, code, error);
  }
  return undefined;
}

/** Returns OpenSSL's short reason, such as `tlsv1 alert unknown ca`, or the error's message. */
function reasonOf(error: Error): string {
  const reason = (error as { reason?: unknown }).reason;
  return typeof reason === "string" && reason !== "" ? reason : error.message;
}

/**
 * Returns whether `byte` starts a TLS record that a TLS server sends first: an alert (0x15),
 * or a handshake record (0x16) from a server that expects a ClientHello.
 */
export function isTlsRecordStart(byte: number): boolean {
  return byte === 0x15 || byte === 0x16;
}
