#!/usr/bin/env bash
# Runs the demo page's browser test: headless Chromium from Debian's package, driven by
# playwright-core, against chorusd and chorus-bench built from this repository. Installs Chromium
# with apt-get when /usr/bin/chromium is missing (which needs root) and never downloads a browser
# build of Playwright's own.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ] && [ "$chromium" != /usr/bin/chromium ]; then
    echo "CHROMIUM names $chromium, which is not an executable file" >&2
    exit 1
fi
if [ ! -x "$chromium" ]; then
    step "installing chromium"
    if [ "$(id -u)" -ne 0 ]; then
        echo "$chromium is missing; install Debian's chromium package as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! timeout 600 apt-get install -y chromium; then
        timeout 300 apt-get update
        timeout 600 apt-get install -y chromium
    fi
fi

target="${CARGO_TARGET_DIR:-../../target}"
packages=()
if [ -z "${CHORUSD:-}" ] && [ ! -x "$target/debug/chorusd" ]; then
    packages+=(-p chorus-broker)
fi
if [ -z "${CHORUS_BENCH:-}" ] && [ ! -x "$target/debug/chorus-bench" ]; then
    packages+=(-p chorus-bench)
fi
if [ "${#packages[@]}" -gt 0 ]; then
    step "building ${packages[*]}"
    (cd ../.. && cargo build "${packages[@]}")
fi

# The client build is reused unless a source is newer, because run-tests.sh builds it just before.
if [ ! -f dist/browser.js ] || [ -n "$(find src -newer dist/browser.js -print -quit)" ]; then
    step "building the client"
    npm run build
fi

step "building the demo page and the test"
npm run build:demo
npx tsc -p test-browser/tsconfig.json

step "running the browser test"
node --test --test-timeout=180000 dist/test-browser/*.test.js
