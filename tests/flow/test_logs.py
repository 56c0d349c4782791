"""Structured logs: one JSON line per request, a request id through each flow, no secret ever.

Every logger is captured at DEBUG (the broker's, the emulator's, MSAL's,
httpx's, SQLAlchemy's) while the flows of the suite run; then every secret the
flows handed out is searched for in all of that output.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update

from broker import observability, providers
from broker.db import providers as providers_table
from broker.webhook_queue import enqueue_new_events
from broker.webhook_secrets import ensure_webhook_secret
from broker.webhook_sender import deliver_due
from tests.fake_network import FakeNetwork
from tests.flow.conftest import CONTOSO_ADMIN, World, returned


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """All log records of every logger at DEBUG, as the JSON lines production writes."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    observability.configure_logging("DEBUG", stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            if handler not in saved[1]:
                root.removeHandler(handler)
        root.setLevel(saved[0])


def access_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line.get("logger") == observability.ACCESS_LOGGER]


def test_every_log_line_is_json(world: World, log_output: io.StringIO) -> None:
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    lines = log_output.getvalue().splitlines()
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict)


def test_launch_callback_and_redeem_share_a_request_chain(
    world: World, log_output: io.StringIO
) -> None:
    """The launch's X-Request-ID is returned, stored with the flow, and named by the callback."""
    link = world.link("REGISTRATION")
    launched = world.broker.get(
        urlsplit(link["url"]).path,
        headers={"X-Request-ID": "launch-0001"},
        follow_redirects=False,
    )
    assert launched.headers["x-request-id"] == "launch-0001"
    answer = world.callback(world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN))
    code = returned(answer)["resultCode"]
    assert world.redeem(code).status_code == 200
    by_operation = {line["operationId"]: line for line in access_lines(log_output)}
    launch = by_operation["launchAction"]
    callback = by_operation["completeCallback"]
    redeem = by_operation["redeemResult"]
    item_id = link["actionItemId"]
    assert launch["requestId"] == "launch-0001"
    assert callback["launchRequestId"] == "launch-0001"
    assert callback["requestId"] == answer.headers["x-request-id"] != "launch-0001"
    for line in (launch, callback, redeem):
        print(json.dumps(line))
        assert line["actionItemId"] == item_id
        assert line["providerId"] == world.provider_id
        assert isinstance(line["durationMs"], float)
    assert (launch["status"], callback["status"], redeem["status"]) == (302, 303, 200)
    create = by_operation["getActionItemUrl"]
    assert (create["status"], create["actionItemId"]) == (201, item_id)


@pytest.mark.parametrize(
    "offered",
    [
        "x" * 65,
        "short",
        "two words here",
        'inject"\n{"level":"ERROR"}',
        "Bearer ctt_secret_key_material",
        "../../etc/passwd",
    ],
)
def test_forged_request_id_is_replaced_not_logged(
    world: World, log_output: io.StringIO, offered: str
) -> None:
    """A client sends an X-Request-ID shaped to forge a log line or smuggle a blob: replaced."""
    answer = world.broker.get("/health", headers={"X-Request-ID": offered})
    fresh = answer.headers["x-request-id"]
    assert fresh != offered and observability.REQUEST_ID_SHAPE.fullmatch(fresh)
    assert offered not in log_output.getvalue()
    assert access_lines(log_output)[-1]["requestId"] == fresh


def test_refused_requests_are_logged_too(world: World, log_output: io.StringIO) -> None:
    answer = world.broker.get("/actions/", headers={"X-Request-ID": "refused-0001"})
    assert answer.headers["x-request-id"] == "refused-0001"
    line = access_lines(log_output)[-1]
    assert (line["requestId"], line["status"]) == ("refused-0001", answer.status_code)


def test_no_secret_of_any_flow_reaches_the_logs(world: World, log_output: io.StringIO) -> None:
    """An attacker with read access to the logs finds nothing to replay or impersonate with.

    Sign-in, consent, form_post, redeem and signed webhook delivery all run with
    DEBUG on every logger; each link handle, state, code, result code, token, API
    key, webhook secret and cookie they handed out is then searched for.
    """
    secrets: set[str] = {world.api_key}
    with world.runtime.engine.begin() as connection:
        connection.execute(update(providers_table).values(share_refresh_token=True))
    providers.set_webhook_url(
        world.runtime, world.provider_id, "https://hooks.portal.example/in", include_tokens=True
    )
    secrets.add(ensure_webhook_secret(world.runtime, world.provider_id) or "")

    def run(action_type: str, **extra: Any) -> Any:
        link = world.link(action_type, **extra)
        secrets.add(urlsplit(link["url"]).path.rsplit("/", 1)[1])
        launched = world.click(link["url"])
        secrets.update(launched.cookies.values())
        location = launched.headers["location"]
        secrets.update(parse_qs(urlsplit(location).query)["state"])
        params = world.at_microsoft(location, CONTOSO_ADMIN)
        secrets.update(params[k] for k in ("state", "code") if k in params)
        return world.callback(params)

    query = returned(run("REGISTRATION", reregister=True))
    secrets.add(query["resultCode"])
    redeemed = world.redeem(query["resultCode"]).json()["authenticationResult"]
    secrets.update(redeemed[k] for k in ("accessToken", "idToken", "refreshToken"))
    returned(run("GET_PRESENCE_CONSENT"))
    posted = run("LOGIN_ENTERPRISE_ADMIN", resultDelivery="form_post")
    assert posted.status_code == 200
    secrets.add(posted.text.split('name="result" value="', 1)[1].split('"', 1)[0])
    network = FakeNetwork()
    enqueue_new_events(world.runtime)
    assert deliver_due(world.runtime, network.sender()).delivered >= 3
    for request in network.requests:
        secrets.add(request.headers["webhook-signature"])
        data = json.loads(request.body)["data"]
        for name, value in data.get("authenticationResult", {}).items():
            if name in ("accessToken", "idToken", "refreshToken"):
                secrets.add(value)
    secrets.discard("")
    assert len(secrets) >= 15
    output = log_output.getvalue()
    assert len(access_lines(log_output)) >= 10
    leaked = sorted(secret[:12] + "..." for secret in secrets if secret in output)
    assert leaked == []


def test_server_access_logs_are_off_so_no_query_string_is_printed() -> None:
    """Uvicorn's access line prints the query: the callback's carries the state and code."""
    from handlers.worker import server_options

    assert server_options({})["access_log"] is False
    observability.configure_logging("DEBUG", io.StringIO())
    for name in ("uvicorn.access", "gunicorn.access"):
        assert logging.getLogger(name).disabled
