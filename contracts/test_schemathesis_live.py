"""Schemathesis against the running service: gunicorn over real HTTP, all checks, stateful.

The configuration is ``contracts/schemathesis.toml`` (every check on, redirects
not followed). Several seeds per run: one fixed for reproducibility and two
drawn fresh, printed so a failure can be replayed.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.conftest import REPO, RunningSandbox

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SEEDS = [20261127, random.randrange(1, 2**31), random.randrange(1, 2**31)]  # noqa: S311


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_running_service_honours_its_spec(running_sandbox: RunningSandbox, seed: int) -> None:
    completed = subprocess.run(  # noqa: S603
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(REPO / "contracts" / "schemathesis.toml"),
            "run",
            f"{running_sandbox.broker}/openapi.json",
            "--header",
            f"Authorization: Bearer {running_sandbox.api_key}",
            "--seed",
            str(seed),
        ],
        env={**os.environ, "SCHEMATHESIS_HOOKS": "contracts.teams_media", "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = completed.stdout + completed.stderr
    summary = re.search(r"(\d+) generated, .*", output)
    print(f"schemathesis seed={seed}: {summary.group(0) if summary else 'no summary'}")
    assert completed.returncode == 0, output[-6000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output or f"✅  {phase}" in output, (phase, output[-3000:])
