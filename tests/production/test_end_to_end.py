"""The production configuration, end to end, from the wheel an operator installs.

The wheel is built from this checkout and installed in a fresh virtual environment
outside it. ``CTT_MODE=production`` runs on PostgreSQL (a fresh schema on the
shared server), with every secret read from a file, ``db upgrade``, ``serve``
with two workers over https and ``worker``. The Microsoft emulator serves https
with a certificate of a throwaway CA that only ``CTT_CA_BUNDLE`` trusts. A
registration and a consent then go through to the end.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, text

from broker.catalog import load_catalog
from emulator import Emulator, complete_browser_flow, create_emulator_app
from sandbox.emulator_setup import emulator_config_for
from sandbox.launch import free_port
from sandbox.secret_files import write_secret_files
from tests.conftest import POSTGRES_SERVER
from tests.faults.servers import spawn, wait_until
from tests.production.pki import TestAuthority, TlsServer

CHECKOUT = Path(__file__).resolve().parents[2]
CALLBACK = "https://portal.example.com/teams/callback"
CONTOSO_ADMIN = "admin@contoso.onmicrosoft.com"
INSTALL_SECONDS = 600


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(  # noqa: S603
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=INSTALL_SECONDS
    )
    assert done.returncode == 0, f"{argv[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ctt-broker`` from the wheel, in a virtual environment outside the checkout."""
    place = tmp_path_factory.mktemp("install")
    pip = [sys.executable, "-m", "pip"]
    # The build backend the project names (setuptools>=77, a dev dependency) is already in
    # this environment: no isolated build environment is made and filled for it.
    wheel_argv = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
    run([*wheel_argv, "-w", str(place / "dist"), str(CHECKOUT)], cwd=place)
    (wheel,) = (place / "dist").glob("ctt_broker-*.whl")
    # A bare venv, filled by this pip (``--python``): no pip of its own to install first, and
    # no ahead-of-time byte-compiling of every dependency (about 15 s of CPU between them);
    # what the venv's Python imports is compiled when it first runs, as on any install.
    # The dependencies are the pinned ones the image installs (constraints.txt).
    run([sys.executable, "-m", "venv", "--without-pip", str(place / "venv")], cwd=place)
    venv_python = place / "venv" / "bin" / "python"
    install = [*pip, "--python", str(venv_python), "install", "--quiet", "--no-compile"]
    run([*install, "-c", str(CHECKOUT / "constraints.txt"), str(wheel)], cwd=place)
    where = run(
        [str(venv_python), "-c", "import broker, handlers; print(broker.__file__)"], cwd=place
    )
    assert str(place / "venv") in where and str(CHECKOUT) not in where
    return place / "venv" / "bin"


@pytest.fixture
def schema_url() -> Iterator[str]:
    """A fresh schema on the shared PostgreSQL server, dropped afterwards."""
    schema = f"ctt_prod_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_SERVER}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_production_configuration_from_the_wheel(
    installed: Path, schema_url: str, tmp_path: Path
) -> None:
    report: list[str] = []
    pki = TestAuthority(tmp_path)
    emulator_tls, broker_tls = pki.issue("emulator"), pki.issue("broker")
    emulator_port, port, metrics_port = free_port(), free_port(), free_port()
    login = f"https://127.0.0.1:{emulator_port}"
    public = f"https://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CTT_", "PROMETHEUS_"))},
        # A bundle set for requests/httpx must not replace the operator's choice.
        "REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem",
        "SSL_CERT_FILE": "/nonexistent/ca.pem",
        "CTT_MODE": "production",
        "CTT_PUBLIC_BASE_URL": public,
        "CTT_DATABASE_URL": schema_url,
        "CTT_DATA_DIR": str(tmp_path / "data"),
        "CTT_LOGIN_HOST": login,
        # Graph stays graph.microsoft.com: the token audience the emulator issues; a
        # registration and a consent make no Graph call.
        "CTT_CA_BUNDLE": str(pki.bundle),
        "CTT_WORKERS": "2",
        "CTT_METRICS_BIND": f"127.0.0.1:{metrics_port}",
        "CTT_CONSENT_CONFIRM_ATTEMPTS": "2",
        "CTT_CONSENT_CONFIRM_INTERVAL_SECONDS": "0.5",
        # The broker's own TLS: in a deployment a proxy usually ends it.
        "GUNICORN_CMD_ARGS": f"--certfile={broker_tls.certfile} --keyfile={broker_tls.keyfile}",
        **write_secret_files(tmp_path / "secrets"),
    }
    work = tmp_path / "run"
    work.mkdir()
    cli = str(installed / "ctt-broker")
    report.append(run([cli, "db", "upgrade"], cwd=work, env=env).strip())
    created = json.loads(
        run(
            [cli, "provider", "create", "Acme", "--callback", CALLBACK, "--json"], cwd=work, env=env
        )
    )
    report.append(f"provider {created['providerId']} created")

    emulator = Emulator(
        emulator_config_for(
            load_catalog(),
            f"{public}/oauth/callback",
            issuer_base_url=login,
            browser_base_url=login,
        )
    )
    trust = ssl.create_default_context(cafile=str(pki.bundle))
    (tmp_path / "logs").mkdir()
    with TlsServer(
        create_emulator_app(emulator), emulator_port, emulator_tls.certfile, emulator_tls.keyfile
    ):
        server = spawn(
            "serve", [cli, "serve", "--bind", f"127.0.0.1:{port}"], env, tmp_path / "logs"
        )
        worker = spawn("worker", [cli, "worker", "--interval", "0.5"], env, tmp_path / "logs")
        try:

            def ready() -> bool:
                try:
                    return httpx.get(f"{public}/health/ready", verify=trust).status_code == 200
                except httpx.TransportError:
                    return False

            assert wait_until(ready, 40), server.output()
            report.append(f"serve: {public}/health/ready -> 200 (2 workers, https)")
            api = httpx.Client(
                base_url=public,
                verify=trust,
                headers={"Authorization": f"Bearer {created['apiKey']}"},
                timeout=30,
            )
            enterprise = api.post("/enterprises", json={"name": "Contoso", "externalId": "c1"})
            assert enterprise.status_code == 201, enterprise.text
            enterprise_id = enterprise.json()["enterpriseId"]
            for action_type in ("REGISTRATION", "GET_PRESENCE_CONSENT"):
                link = api.post(
                    "/enterprise/getActionItemUrl",
                    json={
                        "actionType": action_type,
                        "enterpriseId": enterprise_id,
                        "callbackUrl": CALLBACK,
                    },
                )
                assert link.status_code == 201, link.text
                with httpx.Client(verify=trust, follow_redirects=False, timeout=30) as browser:
                    launched = browser.get(link.json()["url"])
                    assert launched.status_code == 302, launched.text
                    assert launched.headers["location"].startswith(login)
                    result = complete_browser_flow(
                        browser, launched.headers["location"], username=CONTOSO_ADMIN
                    )
                    assert result.redirect_uri == f"{public}/oauth/callback"
                    answer = browser.get(result.redirect_uri, params=dict(result.params))
                assert answer.status_code == 303, answer.text
                query = dict(parse_qsl(urlsplit(answer.headers["location"]).query))
                assert query["status"] == "completed", query
                redeemed = api.post("/results/redeem", json={"resultCode": query["resultCode"]})
                assert redeemed.status_code == 200, redeemed.text
                report.append(f"{action_type}: completed, result redeemed")
            state = api.get(f"/enterprises/{enterprise_id}").json()
            assert state["registration"]["status"] == "registered"
            presence = [c for c in state["consents"] if c["consentType"] == "Presence"]
            assert presence[0]["status"] == "granted", state
            report.append("enterprise: registered, Presence consent granted")
            scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            assert 'ctt_flows_completed_total{action_type="GET_PRESENCE_CONSENT"} 1.0' in scrape
            report.append("metrics: flows counted across both workers")
            api.close()
        finally:
            for child in (worker, server):
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            codes = [child.process.wait(timeout=40) for child in (worker, server)]
    assert codes == [0, 0], worker.output() + server.output()
    report.append("worker and serve stopped on SIGTERM with exit code 0")
    print("\n".join(["", "production end to end:", *(f"  {line}" for line in report)]))
