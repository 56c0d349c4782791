"""`make bench` runs: the benchmark's smoke mode, as a subprocess. No timing is asserted.

Benchmarks are not tests: this only checks that both servers (the product and the bare
reference) start, answer wrk's requests with 201s, and that the table names both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
SMOKE_TIMEOUT_SECONDS = 300


def _wrk_or_skip() -> None:
    """wrk is installed by `make test-setup`: fail in CI without it, skip elsewhere."""
    if shutil.which("wrk") is not None:
        return
    reason = "wrk is not installed (make test-setup installs it as root; apt-get install wrk)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.mark.slow
def test_bench_smoke_runs_both_servers_and_prints_the_table(tmp_path: Path) -> None:
    _wrk_or_skip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTT_")}
    env["PYTHONPATH"] = str(CHECKOUT)
    done = subprocess.run(  # noqa: S603
        [sys.executable, str(CHECKOUT / "bench" / "run.py"), "--smoke"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_SECONDS,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("1 ")]
    assert any("reference" in line for line in table), output[-4000:]
    assert any("ctt-broker" in line for line in table), output[-4000:]
    assert "ratio product/reference" in done.stdout, output[-4000:]
