#!/usr/bin/env bash
# Runs the Python client's tests: lints with ruff, type checks with mypy, then pytest.
#
# Creates a virtual environment in clients/python/.venv, installs the package there in editable
# mode with its test extras, and builds chorusd with cargo (unless CHORUSD names a binary) so the
# integration tests run against the current broker. Works on a fresh Debian machine with
# python3: when `python3 -m venv` fails for lack of ensurepip, it installs python3-venv with
# apt-get. Arguments are passed to pytest, for example `./run-tests.sh -k resume -x`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

step() { printf '\n==> %s\n' "$*"; }

make_venv() {
    "$python" -m venv "$venv"
}

if [ ! -x "$venv/bin/python" ]; then
    step "creating a virtual environment in $venv"
    if ! make_venv; then
        rm -rf "$venv"
        if command -v apt-get >/dev/null 2>&1; then
            step "python3 -m venv failed; installing python3-venv with apt-get"
            sudo_cmd=""
            if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
            $sudo_cmd apt-get update
            $sudo_cmd apt-get install -y python3-venv
            make_venv
        else
            echo "error: '$python -m venv' failed and apt-get is not available to install python3-venv" >&2
            exit 1
        fi
    fi
fi

step "installing chorus-client with its test extras"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e "${here}[test]"

if [ -z "${CHORUSD:-}" ]; then
    if command -v cargo >/dev/null 2>&1; then
        step "building chorusd"
        if ! (cd "$root" && cargo build -p chorus-broker); then
            echo "warning: cargo build -p chorus-broker failed; the integration tests use an" \
                "existing target/debug/chorusd, or skip when there is none" >&2
        fi
    else
        echo "cargo not found: the integration tests use target/debug/chorusd if it exists, and skip otherwise"
    fi
fi

step "checking lints and formatting with ruff"
(cd "$here" && "$venv/bin/python" -m ruff check src tests && "$venv/bin/python" -m ruff format --check src tests)

step "type checking with mypy --strict"
(cd "$here" && "$venv/bin/python" -m mypy src tests)

step "running pytest"
cd "$here"
exec "$venv/bin/python" -m pytest "$@"
