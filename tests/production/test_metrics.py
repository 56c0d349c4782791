"""Prometheus metrics of a real ``ctt-broker serve`` with two workers, after a sandbox flow.

The metrics are served on ``CTT_METRICS_BIND`` by gunicorn's master, summing
what both workers counted; the public port never serves them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker import cli
from broker.catalog import load_catalog
from broker.settings import load_settings
from emulator import Emulator, complete_browser_flow, create_emulator_app
from sandbox.__main__ import ThreadServer
from sandbox.emulator_setup import emulator_config_for
from sandbox.launch import free_port
from tests.faults.servers import Child, spawn, wait_healthy

pytestmark = pytest.mark.slow

CLI = shutil.which("ctt-broker", path=str(Path(sys.executable).parent)) or "ctt-broker"
CONTOSO_ADMIN = "admin@contoso.onmicrosoft.com"
CALLBACK = "http://127.0.0.1:9/callback"


@dataclass
class Served:
    base: str
    metrics: str
    env: dict[str, str]
    server: Child


def run_cli(env: dict[str, str], *argv: str) -> str:
    out, err = StringIO(), StringIO()
    assert cli.main(list(argv), env=env, out=out, err=err) == 0, err.getvalue()
    return out.getvalue()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port, metrics_port, emulator_port = free_port(), free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CTT_", "PROMETHEUS_"))},
        "CTT_MODE": "sandbox",
        "CTT_DATABASE_URL": f"sqlite:///{tmp_path / 'broker.sqlite3'}",
        "CTT_DATA_DIR": str(tmp_path / "data"),
        "CTT_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CTT_LOGIN_BROWSER_URL": emulator_url,
        "CTT_LOGIN_TRANSPORT_URL": emulator_url,
        "CTT_METRICS_BIND": f"127.0.0.1:{metrics_port}",
        "CTT_CONSENT_CONFIRM_ATTEMPTS": "1",
        "CTT_CONSENT_CONFIRM_INTERVAL_SECONDS": "0",
    }
    settings = load_settings(env)
    emulator = Emulator(
        emulator_config_for(
            load_catalog(),
            settings.redirect_uri,
            issuer_base_url=settings.login_host,
            browser_base_url=emulator_url,
        )
    )
    emulator_server = ThreadServer("emulator", create_emulator_app(emulator), emulator_port)
    emulator_server.start()
    run_cli(env, "db", "upgrade")
    # A leftover file of a dead process from an earlier run must not be summed in.
    stale = tmp_path / "data" / "metrics"
    stale.mkdir(parents=True)
    (stale / "counter_999999.db").write_bytes(b"stale")
    (tmp_path / "logs").mkdir()
    argv = [CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    server = spawn("serve", argv, env, tmp_path / "logs")
    try:
        wait_healthy(server, f"http://127.0.0.1:{port}")
        yield Served(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", env, server)
    finally:
        server.stop()
        emulator_server.stop()


def round_trip(served: Served, api_key: str, enterprise_id: str, action_type: str) -> str:
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        link = httpx.post(
            f"{served.base}/enterprise/getActionItemUrl",
            json={
                "actionType": action_type,
                "enterpriseId": enterprise_id,
                "callbackUrl": CALLBACK,
            },
            headers=headers,
        )
        assert link.status_code == 201, link.text
        launched = browser.get(link.json()["url"])
        assert launched.status_code == 302, launched.text
        result = complete_browser_flow(
            browser, launched.headers["location"], username=CONTOSO_ADMIN
        )
        answer = browser.get(f"{result.redirect_uri}?{urlencode(result.params)}")
        assert answer.status_code == 303, answer.text
        return dict(parse_qsl(urlsplit(answer.headers["location"]).query))["status"]


def test_a_scrape_after_a_flow_has_every_family_with_its_labels(served: Served) -> None:
    created = json.loads(
        run_cli(
            served.env,
            "provider",
            "create",
            "Acme",
            "--callback",
            CALLBACK,
            "--development",
            "--webhook-url",
            "http://127.0.0.1:9/hooks",
            "--json",
        )
    )
    headers = {"Authorization": f"Bearer {created['apiKey']}"}
    enterprise = httpx.post(
        f"{served.base}/enterprises", json={"name": "Contoso", "externalId": "c1"}, headers=headers
    ).json()["enterpriseId"]
    assert round_trip(served, created["apiKey"], enterprise, "REGISTRATION") == "completed"
    assert round_trip(served, created["apiKey"], enterprise, "GET_PRESENCE_CONSENT") == "completed"
    for _ in range(6):  # spread over both workers
        assert httpx.get(f"{served.base}/health/live").status_code == 200
    run_cli(served.env, "worker", "--once")  # one webhook attempt each, refused by port 9

    assert httpx.get(f"{served.base}/metrics").status_code == 404
    text = httpx.get(f"{served.metrics}/metrics").text
    print(text)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("ctt_http_requests_total", operation_id="getHealthLive", status="200") == 6
    assert value("ctt_http_requests_total", operation_id="launchAction", status="302") == 2
    assert value("ctt_http_requests_total", operation_id="completeCallback", status="303") == 2
    assert value("ctt_http_request_duration_seconds_count", operation_id="completeCallback") == 2
    assert value("ctt_flows_started_total", action_type="REGISTRATION") == 1
    assert value("ctt_flows_completed_total", action_type="REGISTRATION") == 1
    assert value("ctt_flows_completed_total", action_type="GET_PRESENCE_CONSENT") == 1
    assert value("ctt_microsoft_calls_total", endpoint="token", outcome="ok") >= 2
    assert value("ctt_microsoft_call_duration_seconds_count", endpoint="token") >= 2
    assert value("ctt_microsoft_calls_total", endpoint="jwks", outcome="ok") >= 1
    assert value("ctt_webhook_backlog") >= 1
    assert value("ctt_webhook_oldest_undelivered_age_seconds") > 0
    attempts = {
        outcome: value("ctt_webhook_attempts_last_hour", outcome=outcome)
        for outcome in ("delivered", "rejected", "timeout", "network_error", "refused")
    }
    assert sum(attempts.values()) >= 1 and attempts["delivered"] == 0
    assert ("ctt_pending_consents", ()) in samples
    assert ("ctt_db_pool_connections_in_use", ()) in samples
    assert all("999999" not in name for name, _ in samples)
