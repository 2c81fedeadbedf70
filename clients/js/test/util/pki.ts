/**
 * A throwaway certificate authority for TLS tests, generated at run time with the `openssl`
 * command-line tool: P-256 keys, and certificates valid for one day.
 */

import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

/** Paths of an issued certificate and its private key, both PEM. */
export interface Issued {
  readonly cert: string;
  readonly key: string;
}

/** Maximum milliseconds one `openssl` run may take. */
const OPENSSL_TIMEOUT_MS = 20_000;

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, {
    cwd,
    stdio: ["ignore", "ignore", "pipe"],
    timeout: OPENSSL_TIMEOUT_MS,
  });
}

/** Returns whether the `openssl` command runs, so tests can skip with a reason when it does not. */
export function hasOpenssl(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore", timeout: OPENSSL_TIMEOUT_MS });
    return true;
  } catch {
    return false;
  }
}

/** A CA that issues server and client certificates into a directory. */
export class Pki {
  /** PEM file of the CA certificate, for the client's `caFile`. */
  readonly caFile: string;
  readonly #caKey: string;
  readonly #dir: string;
  #serial = 1;

  /** Creates a CA named `name`, writing `<name>-ca.pem` and `<name>-ca.key` into `dir`. */
  constructor(dir: string, name: string) {
    this.#dir = dir;
    this.caFile = join(dir, `${name}-ca.pem`);
    this.#caKey = join(dir, `${name}-ca.key`);
    openssl(
      [
        "req",
        "-x509",
        ...keyArgs(this.#caKey),
        "-out",
        this.caFile,
        "-days",
        "1",
        "-subj",
        `/CN=${name} test CA`,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
      ],
      dir,
    );
  }

  /** Issues a server certificate for localhost and 127.0.0.1. */
  server(fileStem: string): Issued {
    return this.#issue(fileStem, [
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "extendedKeyUsage=serverAuth",
    ]);
  }

  /** Issues a client certificate, for servers that require one. */
  client(fileStem: string): Issued {
    return this.#issue(fileStem, ["extendedKeyUsage=clientAuth"]);
  }

  #issue(fileStem: string, extensions: string[]): Issued {
    const issued = {
      cert: join(this.#dir, `${fileStem}.pem`),
      key: join(this.#dir, `${fileStem}.key`),
    };
    const request = join(this.#dir, `${fileStem}.csr`);
    const extensionFile = join(this.#dir, `${fileStem}.ext`);
    writeFileSync(
      extensionFile,
      ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", ...extensions]
        .map((line) => `${line}\n`)
        .join(""),
    );
    openssl(
      ["req", "-new", ...keyArgs(issued.key), "-out", request, "-subj", `/CN=${fileStem}`],
      this.#dir,
    );
    openssl(
      [
        "x509",
        "-req",
        "-in",
        request,
        "-CA",
        this.caFile,
        "-CAkey",
        this.#caKey,
        "-set_serial",
        String(this.#serial++),
        "-days",
        "1",
        "-extfile",
        extensionFile,
        "-out",
        issued.cert,
      ],
      this.#dir,
    );
    return issued;
  }
}

/** Arguments of `openssl req` that generate a new unencrypted P-256 key into `keyFile`. */
function keyArgs(keyFile: string): string[] {
  return [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    keyFile,
  ];
}
