"""The README's walkthrough, run as written against a launched sandbox.

The shell blocks are taken from README.md (marked ``<!-- walkthrough:... -->``) and run in bash
with curl; only the addresses and the key the reader would copy from ``make run`` are replaced
(the test's sandbox listens on free ports). The admin's click in between is done by a browser-like
client through the emulator, as the README tells the reader to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx
import pytest

from emulator import complete_browser_flow
from sandbox.launch import LaunchedSandbox, launched_sandbox

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FABRIKAM_ADMIN = "admin@fabrikam.onmicrosoft.com"


def readme_block(name: str) -> str:
    """The shell code block right after ``<!-- walkthrough:{name} -->`` in README.md."""
    readme = (REPO / "README.md").read_text("utf-8")
    found = re.search(rf"<!-- walkthrough:{name} -->\n```sh\n(.*?)```", readme, re.S)
    assert found is not None, f"README.md has no walkthrough:{name} block"
    return found.group(1)


def as_the_reader(block: str, sandbox: LaunchedSandbox) -> str:
    """The block with the addresses and key the reader copies from ``make run``'s banner."""
    return (
        block.replace("ctt_sk_...", sandbox.api_key)
        .replace("http://127.0.0.1:8080", sandbox.broker)
        .replace("http://127.0.0.1:8090", sandbox.portal)
    )


def bash(script: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(  # noqa: S603
        ["/bin/bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def json_documents(text: str) -> list[Any]:
    """Every JSON value curl printed, back to back (curl adds no newline)."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    text = text.strip()
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        if text[position] not in "{[":
            break
        value, position = decoder.raw_decode(text, position)
        documents.append(value)
    return documents


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedSandbox]:
    with launched_sandbox(tmp_path_factory.mktemp("walkthrough")) as started:
        yield started


def click_as_admin(url: str, sandbox: LaunchedSandbox) -> httpx.Response:
    """The admin opens the link, signs in at the emulator, and lands on the callback."""
    with httpx.Client(timeout=20, follow_redirects=False) as browser:
        response = browser.get(url)
        while response.is_redirect:
            target = urljoin(str(response.request.url), response.headers["location"])
            if target.startswith(sandbox.emulator):
                break
            response = browser.get(target)
        result = complete_browser_flow(browser, target, username=FABRIKAM_ADMIN)
        response = browser.get(result.redirect_uri, params=result.params)
        while response.is_redirect:
            response = browser.get(urljoin(str(response.request.url), response.headers["location"]))
        return response


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough uses curl")
def test_readme_walkthrough_runs_as_written(sandbox: LaunchedSandbox, tmp_path: Path) -> None:
    links = bash(as_the_reader(readme_block("links"), sandbox), tmp_path)
    enterprise, link, item = json_documents(links)
    assert enterprise["registration"]["status"] == "notRegistered", enterprise
    assert link["url"].startswith(sandbox.broker), link
    assert item["actionItemId"] == link["actionItemId"]
    assert links.strip().splitlines()[-1].endswith(link["url"])

    landed = click_as_admin(link["url"], sandbox)
    assert landed.status_code == 200, landed.text
    assert urlsplit(str(landed.url)).path == "/walkthrough"
    arrived = dict(parse_qsl(urlsplit(str(landed.url)).query))
    assert arrived["status"] == "completed" and arrived["state"] == "order-77"
    assert f"resultCode={arrived['resultCode']}" in landed.text  # the receiver shows it

    redeem = readme_block("redeem").replace("ctt_rc_...", arrived["resultCode"])
    variables = f"ENT={enterprise['enterpriseId']}\n"
    answers = json_documents(
        bash(
            as_the_reader(readme_block("links"), sandbox).split("\n# 1.")[0]
            + "\n"
            + variables
            + redeem,
            tmp_path,
        )
    )
    result, registered = answers
    assert result["status"] == "completed", result
    assert result["state"] == "order-77"
    assert result["callbackUrl"] == f"{sandbox.portal}/walkthrough?customer=2001"
    assert registered["registration"]["status"] == "registered", registered


def test_readme_console_commands_find_the_data_from_another_folder(
    sandbox: LaunchedSandbox, tmp_path: Path
) -> None:
    """Run from an empty folder, the CLI reads the sandbox's database, not a new ./var."""
    venv_bin = Path(sys.executable).parent
    script = readme_block("console").replace(".venv/bin/", f"{venv_bin}/")
    output = bash(script, tmp_path, {"CTT_DATA_DIR": str(sandbox.data_dir)})
    assert not (tmp_path / "var").exists()
    listing = json_documents(output)[0]
    (provider,) = listing
    assert f"{sandbox.portal}/walkthrough" in provider["callbackUrls"]
    # sandbox-provider shows the callbacks as they are now, including added ones.
    assert f"{sandbox.portal}/walkthrough" in output.split("callback URLs", 1)[1].splitlines()[0]
