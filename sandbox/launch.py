"""Start ``python -m sandbox`` as a child process on free loopback ports (for tests).

The sandbox, contract and browser tests all drive the same real stack; this is
the one place that knows how to start it and wait until it answers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LaunchedSandbox:
    """Broker, Microsoft emulator and demo portal, with where their output goes."""

    broker: str
    emulator: str
    portal: str
    data_dir: Path
    log: Path

    @property
    def api_key(self) -> str:
        """The sandbox provider's API key (from its record in the data folder)."""
        record = json.loads((self.data_dir / "sandbox-provider.json").read_text("utf-8"))
        return str(record["apiKey"])


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def launched_sandbox(data_dir: Path, startup_seconds: float = 30) -> Iterator[LaunchedSandbox]:
    """Run the sandbox until the block ends; fail with its output if it does not start."""
    broker_port, emulator_port, portal_port = free_port(), free_port(), free_port()
    broker = f"http://127.0.0.1:{broker_port}"
    emulator = f"http://127.0.0.1:{emulator_port}"
    portal = f"http://127.0.0.1:{portal_port}"
    env = {
        # Test-only CTT_ variables (CTT_TEST_...) would be refused as unknown settings.
        **{k: v for k, v in os.environ.items() if not k.startswith("CTT_")},
        "CTT_BIND": f"127.0.0.1:{broker_port}",
        "CTT_PUBLIC_BASE_URL": broker,
        "CTT_LOGIN_BROWSER_URL": emulator,
        "CTT_LOGIN_TRANSPORT_URL": emulator,
        "SANDBOX_EMULATOR_PORT": str(emulator_port),
        "SANDBOX_PORTAL_PORT": str(portal_port),
        "CTT_DATA_DIR": str(data_dir),
        "CTT_WORKERS": "1",
        # Test runs click far faster than an admin: lift the limits, keep the feature on.
        "CTT_RATE_LIMIT_ADMIN": "100000/minute",
        "CTT_RATE_LIMIT_LINK": "100000/minute",
        "CTT_RATE_LIMIT_AUTH_FAILURES": "100000/minute",
        "CTT_RATE_LIMIT_API": "100000/minute",
    }
    log = data_dir / "sandbox.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + startup_seconds
        with httpx.Client(timeout=1) as probe:  # one client: each new one loads the CAs
            while True:
                try:
                    if probe.get(f"{portal}/static/portal.css").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "the sandbox did not start:\n" + log.read_text("utf-8", "replace")
                    )
                time.sleep(0.2)
        yield LaunchedSandbox(broker, emulator, portal, data_dir, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=startup_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
