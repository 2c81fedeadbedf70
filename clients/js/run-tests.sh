#!/usr/bin/env bash
# Installs, builds and tests the TypeScript client. Needs Node 20 or newer with npm, and a Rust
# toolchain for chorusd, which the integration tests start on loopback ports. The TLS tests
# generate their certificates with the openssl command and are skipped without it. The demo
# page's browser test also needs Debian's chromium package, which it installs with apt-get as
# root.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

step "installing npm packages"
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
else
    npm install --no-audit --no-fund
fi

if [ -z "${CHORUSD:-}" ]; then
    step "building chorusd"
    (cd ../.. && cargo build -p chorus-broker)
fi

step "checking formatting"
npm run format:check

step "building the client"
npm run build

step "running the client tests"
npm test

step "running the demo page's browser test"
npm run test:browser
