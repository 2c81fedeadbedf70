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

step "all tests passed"
