"""Start and stop real chorusd processes on loopback for the integration tests."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import List, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]

# How long a broker may take to start listening, and to exit after SIGTERM.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0

# How long `cargo build -p chorus-broker` may take when the binary is missing.
BUILD_TIMEOUT = 900.0

# The client listener's log line; the admin endpoint logs "admin listening addr=..." too.
_LISTENING = re.compile(r"(?<!admin )listening addr=(\S+):(\d+)")

# The log line of a TLS listener for protocol clients, from a [tls] listen address.
_TLS_LISTENING = re.compile(r"listening with TLS addr=(\S+):(\d+)")


def find_chorusd() -> Path:
    """Return the chorusd binary: $CHORUSD, else target/debug/chorusd, built if missing.

    Skips the calling test, saying why, when there is no binary and cargo cannot build one.
    """
    configured = os.environ.get("CHORUSD")
    if configured:
        path = Path(configured)
        if not path.is_file():
            pytest.fail(f"CHORUSD is set to {configured}, which is not a file")
        return path

    path = REPO_ROOT / "target" / "debug" / "chorusd"
    if path.is_file():
        return path
    if shutil.which("cargo") is None:
        pytest.skip(
            f"chorusd not found at {path} and cargo is not installed: build it with "
            "`cargo build -p chorus-broker` or set CHORUSD to a chorusd binary"
        )
    build = subprocess.run(
        ["cargo", "build", "-p", "chorus-broker"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    if build.returncode != 0 or not path.is_file():
        pytest.skip(
            f"chorusd not found at {path} and `cargo build -p chorus-broker` failed:\n"
            + build.stderr[-2000:]
        )
    return path


@functools.lru_cache(maxsize=None)
def _has_admin_endpoint(binary: Path) -> bool:
    """Whether this chorusd build takes --admin-listen (builds before the admin endpoint do not)."""
    result = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30)
    return "--admin-listen" in result.stdout


class Chorusd:
    """One chorusd process on 127.0.0.1 with its own data directory, restartable."""

    host = "127.0.0.1"

    def __init__(self, binary: Path, data_dir: Path, config: Optional[Path] = None) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.config = config
        self.port = 0
        self.log: List[str] = []
        self._process: Optional[subprocess.Popen[str]] = None
        self._log_lock = threading.Lock()
        self._listening = threading.Event()
        self._tls_listening = threading.Event()

    def start(self, port: int = 0) -> None:
        """Start the broker on ``port`` (0 for any free one) and wait until it listens."""
        assert self._process is None, "broker is already running"
        command = [
            str(self.binary),
            "--listen",
            f"{self.host}:{port}",
            "--data-dir",
            str(self.data_dir),
            "--workers",
            "2",
        ]
        if self.config is not None:
            command += ["--config", str(self.config)]
        if _has_admin_endpoint(self.binary):
            # Its default port is fixed, which would keep brokers from running side by side.
            command += ["--admin-listen", f"{self.host}:0"]
        self._listening.clear()
        self._tls_listening.clear()
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._drain, args=(self._process,), daemon=True).start()

        if not self._listening.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"chorusd did not listen within {START_TIMEOUT} s:\n{self.tail()}")
        with self._log_lock:
            found = [m for m in map(_LISTENING.search, self.log) if m is not None]
        self.port = int(found[0].group(2))

    def tls_port(self) -> int:
        """Return the port of the first TLS listener, waiting until the broker logs it.

        The TLS listeners are bound right after the plain one, so the wait is short. It fails
        after START_TIMEOUT when the configuration has no ``[tls] listen`` address.
        """
        if not self._tls_listening.wait(START_TIMEOUT):
            raise RuntimeError(
                f"chorusd logged no TLS listener in {START_TIMEOUT} s:\n{self.tail()}"
            )
        with self._log_lock:
            found = [m for m in map(_TLS_LISTENING.search, self.log) if m is not None]
        return int(found[0].group(2))

    def stop(self) -> None:
        """Send SIGTERM to the broker's PID and wait for it to exit; SIGKILL if it does not."""
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        """Stop the broker and start it again on the same port with the same data."""
        port = self.port
        self.stop()
        self.start(port)

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def tail(self, lines: int = 40) -> str:
        """Return the last log lines, for failure messages."""
        with self._log_lock:
            return "\n".join(self.log[-lines:])

    def _drain(self, process: subprocess.Popen[str]) -> None:
        # Reading stderr for the whole life of the process keeps its pipe from filling up.
        assert process.stderr is not None
        for line in process.stderr:
            with self._log_lock:
                self.log.append(line.rstrip("\n"))
            if _LISTENING.search(line):
                self._listening.set()
            if _TLS_LISTENING.search(line):
                self._tls_listening.set()
