#!/usr/bin/env bash
# Runs every test of the chorus workspace: formatting, lints, unit and integration tests.
# Installs what it needs first, so it works on a fresh Debian machine with a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

step "checking formatting"
cargo fmt --all -- --check

step "running clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building"
cargo build --workspace --all-targets --locked

step "running tests"
cargo test --workspace --locked

step "running the Python client tests"
clients/python/run-tests.sh

step "running the TypeScript client tests"
clients/js/run-tests.sh

# The Debian package test builds a release .deb and needs apt-get (root) for its tools; set
# CHORUS_SKIP_DEB_TEST=1 to leave it out.
if [[ "${CHORUS_SKIP_DEB_TEST:-0}" != 1 ]]; then packaging/test-deb.sh; fi

step "all tests passed"
