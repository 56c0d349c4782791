"""``ctt-broker microsoft check`` against the emulator, with one app configured wrong."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from io import StringIO
from pathlib import Path

from broker import cli
from broker.catalog import load_catalog
from broker.credentials import sandbox_app_credentials
from emulator import Emulator, create_emulator_app
from emulator.seed import CONTOSO_TENANT_ID
from sandbox.__main__ import ThreadServer
from sandbox.emulator_setup import emulator_config_for
from sandbox.launch import free_port


def test_check_reports_each_app_and_the_fix_for_the_wrong_one(tmp_path: Path) -> None:
    port = free_port()
    emulator_url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CTT_")},
        "CTT_MODE": "sandbox",
        "CTT_DATABASE_URL": f"sqlite:///{tmp_path / 'broker.sqlite3'}",
        "CTT_DATA_DIR": str(tmp_path / "data"),
        "CTT_LOGIN_TRANSPORT_URL": emulator_url,
    }
    catalog = load_catalog()
    config = emulator_config_for(
        catalog,
        "http://127.0.0.1:8080/oauth/callback",
        issuer_base_url="https://login.emulator.test",
    )
    config = replace(
        config, apps=tuple(replace(app, home_tenant_id=CONTOSO_TENANT_ID) for app in config.apps)
    )
    apps = {
        name: {
            "clientId": credential.client_id,
            "clientSecret": credential.client_secret,
            "homeTenantId": CONTOSO_TENANT_ID,
        }
        for name, credential in sandbox_app_credentials(catalog).items()
    }
    wrong = sorted(apps)[0]
    apps[wrong]["clientSecret"] = "the-secret-id-pasted-instead-of-its-value"
    (tmp_path / "apps.json").write_text(json.dumps(apps))
    env["CTT_APP_CREDENTIALS"] = f"@{tmp_path / 'apps.json'}"
    server = ThreadServer("emulator", create_emulator_app(Emulator(config)), port)
    server.start()
    try:
        out, err = StringIO(), StringIO()
        code = cli.main(["microsoft", "check"], env=env, out=out, err=err)
    finally:
        server.stop()
    report = out.getvalue()
    print(report)
    assert code == cli.EXIT_REFUSED, err.getvalue()
    lines = report.splitlines()
    failed = [line for line in lines if line.startswith("FAILED")]
    assert len(failed) == 1 and f"FAILED {wrong} " in failed[0] and "AADSTS7000215" in failed[0]
    assert any(line.strip().startswith("fix: Invalid client secret") for line in lines)
    assert sum(line.startswith("ok ") for line in lines) == len(apps) - 1
    assert "the-secret-id-pasted" not in report
    assert lines[-1] == f"{len(apps) - 1} of {len(apps)} apps ok"
