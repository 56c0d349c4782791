"""Clients generated from openapi.yaml drive a real REGISTRATION through ``python -m sandbox``.

* Python: ``openapi-python-client`` generates a package into a temporary folder (``--meta
  none``; warnings fail the test), which then makes every provider call.
* TypeScript: ``openapi-typescript`` generates ``schema.d.ts`` into a temporary folder,
  ``tsc`` (strict) compiles the committed ``contracts/ts/flow.ts`` against it, and ``node`` runs
  it with ``openapi-fetch`` making the provider calls, in two invocations.

Between the provider's calls the admin's part runs here, over HTTP through the Microsoft
emulator (redirects followed by hand): the link, the emulator's pages, the broker's
``/oauth/callback``, whose 303 to the portal's callback is read, not followed, for its
``resultCode``. Printed flow logs carry operations, statuses and key fields, never the API key,
the link, a result code or a token.

Needs ``openapi-python-client`` in the venv and ``npm ci --prefix contracts`` (both in .ci/run).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from contracts.conftest import CONTRACTS, NODE_ENV, REPO, RunningSandbox, node_tool
from emulator import complete_browser_flow

PACKAGE = "ctt_contract_client"
GENERATE_TIMEOUT = 120
WARNING = re.compile(r"warn|⚠|deprecat|error", re.I)


# -- the admin's part, shared by both clients ---------------------------------------------------


@dataclass(frozen=True)
class Callback:
    """What the portal's callback would receive (read from the broker's 303)."""

    params: dict[str, str]
    hops: list[int]

    @property
    def result_code(self) -> str:
        return self.params["resultCode"]

    def describe(self) -> str:
        shown = {k: v for k, v in self.params.items() if k != "resultCode"}
        shown["resultCode"] = self.params["resultCode"][:7] + "..."
        return f"hops {' -> '.join(map(str, self.hops))}; callback {shown}"


def admin_registers(sandbox: RunningSandbox, url: str, username: str) -> Callback:
    """The admin clicks the link, signs in and accepts at the emulator, comes back to the broker."""
    with httpx.Client(timeout=20, follow_redirects=False) as browser:
        hops: list[int] = []
        browser.event_hooks = {"response": [lambda r: hops.append(r.status_code)]}
        launched = browser.get(url)
        assert launched.status_code == 302, launched.text
        at_microsoft = launched.headers["location"]
        assert at_microsoft.startswith(f"{sandbox.emulator}/")
        result = complete_browser_flow(browser, at_microsoft, username=username)
        assert result.redirect_uri == f"{sandbox.broker}/oauth/callback"
        back = browser.get(result.redirect_uri, params=result.params)
        assert back.status_code == 303, back.text
    location = urlsplit(back.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == sandbox.callback_url
    params = dict(parse_qsl(location.query))
    assert params["resultCode"].startswith("ctt_rc_")
    return Callback(params, hops)


# -- Python: openapi-python-client ------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedPython:
    package: ModuleType
    output: str

    def module(self, name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture(scope="module")
def python_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeneratedPython]:
    cli = Path(sys.executable).with_name("openapi-python-client")
    if not cli.exists():
        pytest.fail(
            f"{cli} is missing: pip install 'openapi-python-client==0.29.1' (dev extra)",
            pytrace=False,
        )
    root = tmp_path_factory.mktemp("python-client")
    # Its post hooks run `ruff check --fix` and `ruff format`: the venv's ruff must be on PATH.
    path = os.pathsep.join([str(cli.parent), os.environ.get("PATH", "")])
    completed = subprocess.run(  # noqa: S603 - the pinned generator, fixed arguments
        [
            str(cli),
            "generate",
            "--path",
            str(REPO / "openapi.yaml"),
            "--meta",
            "none",
            "--config",
            str(write_generator_config(root)),
            "--output-path",
            str(root / PACKAGE),
        ],
        cwd=root,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    sys.path.insert(0, str(root))
    try:
        yield GeneratedPython(importlib.import_module(PACKAGE), output)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def write_generator_config(root: Path) -> Path:
    """The generator treats a Teams app package (``application/zip``) as a binary body."""
    config = root / "generator.json"
    config.write_text(
        json.dumps({"content_type_overrides": {"application/zip": "application/octet-stream"}})
    )
    return config


def test_python_client_generates_without_warnings(python_client: GeneratedPython) -> None:
    assert not WARNING.search(python_client.output), python_client.output
    assert python_client.package.__file__ is not None
    root = Path(python_client.package.__file__).parent
    for operation in ("create_enterprise", "get_action_item_url", "redeem_result", "list_events"):
        assert list(root.glob(f"api/*/{operation}.py")), operation


@pytest.mark.slow
def test_python_client_drives_a_registration(
    python_client: GeneratedPython, running_sandbox: RunningSandbox
) -> None:
    client_module = python_client.module("client")
    models = python_client.module("models")
    create_enterprise = python_client.module("api.enterprises.create_enterprise")
    get_enterprise = python_client.module("api.enterprises.get_enterprise")
    get_action_item_url = python_client.module("api.action_items.get_action_item_url")
    redeem_result = python_client.module("api.results.redeem_result")
    list_events = python_client.module("api.events.list_events")

    log: list[str] = []

    def record(operation: str, http_status: int, /, **fields: Any) -> None:
        log.append(f"py  {operation:<18} {http_status} {json.dumps(fields)}")

    api = client_module.AuthenticatedClient(
        base_url=running_sandbox.broker, token=running_sandbox.api_key, timeout=httpx.Timeout(20)
    )
    with api:
        created = create_enterprise.sync_detailed(
            client=api,
            body=models.EnterpriseCreate(name="Contoso (Python contract)", external_id="py-1042"),
        )
        assert created.status_code == 201, created.content
        enterprise = created.parsed
        assert isinstance(enterprise, models.Enterprise)
        assert enterprise.registration.status == models.RegistrationStatus.NOTREGISTERED
        record(
            "createEnterprise",
            created.status_code,
            enterpriseId=enterprise.enterprise_id,
            registration=str(enterprise.registration.status),
        )

        state = f"py-{uuid.uuid4().hex[:12]}"
        asked = get_action_item_url.sync_detailed(
            client=api,
            body=models.ActionItemRequest(
                action_type=models.ActionType.REGISTRATION,
                enterprise_id=enterprise.enterprise_id,
                callback_url=running_sandbox.callback_url,
                state=state,
            ),
        )
        assert asked.status_code == 201, asked.content
        item = asked.parsed
        assert isinstance(item, models.ActionItemCreated)
        record(
            "getActionItemUrl",
            asked.status_code,
            actionItemId=item.action_item_id,
            status=str(item.status),
            expiresAt=item.expires_at.isoformat(),
        )

        callback = admin_registers(running_sandbox, item.url, "admin@contoso.onmicrosoft.com")
        log.append(f"    admin (browser)    {callback.describe()}")
        assert callback.params["status"] == "completed"
        assert callback.params["actionType"] == "REGISTRATION"
        assert callback.params["actionItemId"] == item.action_item_id
        assert callback.params["state"] == state

        redeemed = redeem_result.sync_detailed(
            client=api, body=models.RedeemRequest(result_code=callback.result_code)
        )
        assert redeemed.status_code == 200, redeemed.content
        result = redeemed.parsed
        assert isinstance(result, models.Result)
        assert result.status == models.ResultStatus.COMPLETED
        assert result.action_item_id == item.action_item_id
        assert isinstance(result.authentication_result, models.AuthenticationResult)
        account = result.authentication_result.account
        assert account.username == "admin@contoso.onmicrosoft.com"
        record(
            "redeemResult",
            redeemed.status_code,
            status=str(result.status),
            tenantId=result.tenant_id,
            username=account.username,
        )

        again = redeem_result.sync_detailed(
            client=api, body=models.RedeemRequest(result_code=callback.result_code)
        )
        assert again.status_code == 404
        assert isinstance(again.parsed, models.Problem)
        assert again.parsed.code == models.ErrorCode.RESULT_CODE_INVALID
        record("redeemResult again", again.status_code, code=str(again.parsed.code))

        got = get_enterprise.sync_detailed(enterprise.enterprise_id, client=api)
        assert got.status_code == 200, got.content
        registered = got.parsed
        assert isinstance(registered, models.Enterprise)
        assert registered.registration.status == models.RegistrationStatus.REGISTERED
        assert registered.registration.tenant_id == result.tenant_id
        record(
            "getEnterprise",
            got.status_code,
            registration=str(registered.registration.status),
            tenantId=registered.registration.tenant_id,
        )

        listed = list_events.sync_detailed(
            client=api, enterprise_id=enterprise.enterprise_id, limit=100
        )
        assert listed.status_code == 200, listed.content
        page = listed.parsed
        assert isinstance(page, models.EventPage)
        types = [
            str(event.type_)
            for event in page.items
            if event.data.action_item_id == item.action_item_id
        ]
        assert {"actionItem.completed", "enterprise.registered"} <= set(types), types
        record("listEvents", listed.status_code, types=types, nextCursor=page.next_cursor)

    print("\n" + "\n".join(log))
    assert running_sandbox.api_key not in "\n".join(log)


@pytest.mark.slow
def test_python_client_uploads_a_teams_app_and_drives_a_deployment(
    python_client: GeneratedPython, running_sandbox: RunningSandbox
) -> None:
    from sandbox.teams_demo import build_package, demo_manifest

    client_module = python_client.module("client")
    models = python_client.module("models")
    types = python_client.module("types")
    create_enterprise = python_client.module("api.enterprises.create_enterprise")
    list_enterprises = python_client.module("api.enterprises.list_enterprises")
    get_enterprise = python_client.module("api.enterprises.get_enterprise")
    upload = python_client.module("api.teams_apps.upload_teams_app_package")
    get_action_item_url = python_client.module("api.action_items.get_action_item_url")
    redeem_result = python_client.module("api.results.redeem_result")
    log: list[str] = []
    api = client_module.AuthenticatedClient(
        base_url=running_sandbox.broker, token=running_sandbox.api_key, timeout=httpx.Timeout(20)
    )

    def signed_in(action_type: Any, enterprise_id: str, **extra: Any) -> Callback:
        asked = get_action_item_url.sync_detailed(
            client=api,
            body=models.ActionItemRequest(
                action_type=action_type,
                enterprise_id=enterprise_id,
                callback_url=running_sandbox.callback_url,
                **extra,
            ),
        )
        assert asked.status_code == 201, asked.content
        return admin_registers(running_sandbox, asked.parsed.url, "admin@contoso.onmicrosoft.com")

    with api:
        # The Contoso enterprise of the registration flow, registered here if it ran alone.
        page = list_enterprises.sync_detailed(client=api, external_id="py-1042").parsed
        if page.items:
            enterprise_id = page.items[0].enterprise_id
        else:
            enterprise_id = create_enterprise.sync_detailed(
                client=api,
                body=models.EnterpriseCreate(
                    name="Contoso (Python contract)", external_id="py-1042"
                ),
            ).parsed.enterprise_id
        got = get_enterprise.sync_detailed(enterprise_id, client=api).parsed
        if got.registration.status != models.RegistrationStatus.REGISTERED:
            signed_in(models.ActionType.REGISTRATION, enterprise_id)

        content = build_package(demo_manifest("1.0.0", app_id=str(uuid.uuid4())))
        uploaded = upload.sync_detailed(
            client=api, body=types.File(payload=content, file_name="app.zip")
        )
        assert uploaded.status_code == 201, uploaded.content
        package = uploaded.parsed
        assert isinstance(package, models.TeamsAppPackage) and package.current
        log.append(f"py  uploadTeamsAppPackage {uploaded.status_code} version={package.version}")

        refused = upload.sync_detailed(client=api, body=types.File(payload=b"not a zip"))
        assert refused.status_code == 400
        assert [d.code for d in refused.parsed.defects] == [
            models.TeamsAppPackageDefectCode.NOT_A_ZIP
        ]

        callback = signed_in(
            models.ActionType.DEPLOY_TEAMS_APPS,
            enterprise_id,
            teams_app_package_ids=[package.package_id],
        )
        log.append(f"    admin (browser)    {callback.describe()}")
        assert callback.params["status"] == "completed", callback.params
        redeemed = redeem_result.sync_detailed(
            client=api, body=models.RedeemRequest(result_code=callback.result_code)
        )
        result = redeemed.parsed
        assert isinstance(result, models.Result), redeemed.content
        [app] = result.teams_apps.apps
        assert app.status == models.TeamsAppDeploymentStatus.PUBLISHED
        assert app.manifest_id == package.manifest_id and app.catalog_app_id
        log.append(f"py  redeemResult      {redeemed.status_code} app={app.status} {app.version}")
        state = get_enterprise.sync_detailed(enterprise_id, client=api).parsed
        assert package.manifest_id in [a.manifest_id for a in state.teams_apps]
    print("\n" + "\n".join(log))


# -- TypeScript: openapi-typescript + openapi-fetch, compiled by tsc --------------------------


@dataclass(frozen=True)
class CompiledFlow:
    script: Path
    output: str


@pytest.fixture(scope="module")
def typescript_flow(tmp_path_factory: pytest.TempPathFactory) -> CompiledFlow:
    generator, tsc = node_tool("openapi-typescript"), node_tool("tsc")
    build = tmp_path_factory.mktemp("typescript-client")
    (build / "node_modules").symlink_to(CONTRACTS / "node_modules", target_is_directory=True)
    (build / "package.json").write_text('{"type": "module"}\n', "utf-8")
    for name in ("flow.ts", "tsconfig.json"):
        shutil.copyfile(CONTRACTS / "ts" / name, build / name)
    env = {**os.environ, **NODE_ENV}
    # Run where no redocly.yaml is: openapi-typescript would take its `apis` over the argument.
    # Defaulted request fields stay optional (its default makes every defaulted field required).
    generated = subprocess.run(  # noqa: S603 - the pinned generator, fixed arguments
        [
            str(generator),
            str(REPO / "openapi.yaml"),
            "--output",
            "schema.d.ts",
            "--default-non-nullable",
            "false",
        ],
        cwd=build,
        env=env,
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT,
        check=False,
    )
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0, output
    # `tsc --strict` with noEmitOnError: any type error fails and leaves no flow.js behind.
    compiled = subprocess.run(  # noqa: S603 - the pinned compiler, fixed arguments
        [str(tsc), "--project", "tsconfig.json", "--strict", "--pretty", "false"],
        cwd=build,
        env=env,
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT,
        check=False,
    )
    output += compiled.stdout + compiled.stderr
    assert compiled.returncode == 0, output
    return CompiledFlow(build / "out" / "flow.js", output)


def test_typescript_client_generates_and_compiles_without_warnings(
    typescript_flow: CompiledFlow,
) -> None:
    assert not WARNING.search(typescript_flow.output), typescript_flow.output
    assert typescript_flow.script.exists()


def run_flow(
    flow: CompiledFlow, args: list[str], secrets: dict[str, str]
) -> tuple[dict[str, Any], str]:
    node = shutil.which("node")
    assert node is not None, "node is not on PATH"
    completed = subprocess.run(  # noqa: S603 - our compiled script, arguments without secrets
        [node, str(flow.script), *args],
        env={**os.environ, **NODE_ENV, **secrets},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    output: dict[str, Any] = json.loads(completed.stdout)
    return output, completed.stderr


@pytest.mark.slow
def test_typescript_client_drives_a_registration(
    typescript_flow: CompiledFlow, running_sandbox: RunningSandbox
) -> None:
    # Another tenant than the Python flow: a tenant registers one enterprise per provider.
    secrets = {"CTT_CONTRACT_API_KEY": running_sandbox.api_key}
    state = f"ts-{uuid.uuid4().hex[:12]}"
    started, started_log = run_flow(
        typescript_flow,
        ["start", running_sandbox.broker, "ts-2077", running_sandbox.callback_url, state],
        secrets,
    )
    callback = admin_registers(running_sandbox, started["url"], "admin@fabrikam.onmicrosoft.com")
    assert callback.params["status"] == "completed"
    assert callback.params["actionItemId"] == started["actionItemId"]
    assert callback.params["state"] == state
    finished, finished_log = run_flow(
        typescript_flow,
        ["finish", running_sandbox.broker, started["enterpriseId"], started["actionItemId"]],
        {**secrets, "CTT_CONTRACT_RESULT_CODE": callback.result_code},
    )
    assert finished["redeemed"]["status"] == "completed"
    assert finished["redeemed"]["username"] == "admin@fabrikam.onmicrosoft.com"
    assert finished["again"] == "RESULT_CODE_INVALID"
    assert finished["enterprise"] == {
        "registration": "registered",
        "tenantId": finished["redeemed"]["tenantId"],
    }
    assert {"actionItem.completed", "enterprise.registered"} <= set(finished["events"])
    log = f"{started_log}    admin (browser)    {callback.describe()}\n{finished_log}"
    print("\n" + log)
    for secret in (running_sandbox.api_key, callback.result_code, started["url"]):
        assert secret not in log


@pytest.mark.slow
def test_typescript_client_uploads_a_teams_app_and_drives_a_deployment(
    typescript_flow: CompiledFlow,
    running_sandbox: RunningSandbox,
    tmp_path: Path,
) -> None:
    from sandbox.teams_demo import build_package, demo_manifest

    secrets = {"CTT_CONTRACT_API_KEY": running_sandbox.api_key}
    enterprise_id = registered_enterprise(
        running_sandbox, "ts-2077", "admin@fabrikam.onmicrosoft.com"
    )
    package = tmp_path / "app.zip"
    package.write_bytes(build_package(demo_manifest("2.0.0", app_id=str(uuid.uuid4()))))
    started, started_log = run_flow(
        typescript_flow,
        [
            "deploy-start",
            running_sandbox.broker,
            enterprise_id,
            running_sandbox.callback_url,
            str(package),
        ],
        secrets,
    )
    callback = admin_registers(running_sandbox, started["url"], "admin@fabrikam.onmicrosoft.com")
    assert callback.params["status"] == "completed", callback.params
    assert callback.params["actionType"] == "DEPLOY_TEAMS_APPS"
    finished, finished_log = run_flow(
        typescript_flow,
        ["deploy-finish", running_sandbox.broker, enterprise_id],
        {**secrets, "CTT_CONTRACT_RESULT_CODE": callback.result_code},
    )
    [app] = finished["apps"]
    assert (app["status"], app["version"], app["manifestId"]) == (
        "published",
        "2.0.0",
        started["manifestId"],
    )
    assert {"manifestId": started["manifestId"], "status": "published", "version": "2.0.0"} in (
        finished["enterpriseTeamsApps"]
    )
    log = f"{started_log}    admin (browser)    {callback.describe()}\n{finished_log}"
    print("\n" + log)
    for secret in (running_sandbox.api_key, callback.result_code, started["url"]):
        assert secret not in log


def registered_enterprise(sandbox: RunningSandbox, external_id: str, admin: str) -> str:
    """The enterprise ``external_id``, created and registered by ``admin`` if it is not yet."""
    headers = {"Authorization": f"Bearer {sandbox.api_key}"}
    with httpx.Client(base_url=sandbox.broker, headers=headers, timeout=20) as api:
        page = api.get("/enterprises", params={"externalId": external_id}).json()
        if page["items"]:
            enterprise = page["items"][0]
        else:
            enterprise = api.post(
                "/enterprises", json={"name": external_id, "externalId": external_id}
            ).json()
        if enterprise["registration"]["status"] != "registered":
            link = api.post(
                "/enterprise/getActionItemUrl",
                json={
                    "actionType": "REGISTRATION",
                    "enterpriseId": enterprise["enterpriseId"],
                    "callbackUrl": sandbox.callback_url,
                },
            ).json()
            assert admin_registers(sandbox, link["url"], admin).params["status"] == "completed"
    return str(enterprise["enterpriseId"])
