"""Limits before parsing, and rate limits: no anonymous client can stall the broker.

The guard in front of Connexion refuses heads over their route's limits with a
stable code (problem+json on the API, a readable page on the admin's paths);
every request within the limits costs a bounded amount of server CPU.
"""

from __future__ import annotations

import gc
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest

from broker.ratelimits import RateLimits, client_ip, parse_networks
from broker.runtime import Runtime
from handlers.app import load_spec
from handlers.middleware import CALLBACK_LIMITS, DEFAULT_LIMITS, RequestGuard, RouteLimits
from tests.conftest import ProviderAccount, with_runtime_settings
from tests.shared_app import serving_app

PROBLEM = "application/problem+json"
CPU_BOUND_SECONDS = 0.050
REDIS_URL = "redis://127.0.0.1:6379/15"
GHOST = "01JCX3Q2B6V7W8X9Y0Z1A2B3C4"
PATH_VALUES = {
    "enterpriseId": f"ent_{GHOST}",
    "actionItemId": f"act_{GHOST}",
    "eventId": f"evt_{GHOST}",
    "handle": "A" * 43,
}


def rates(**changes: str) -> dict[str, str]:
    return {"admin": "1000/minute", "link": "1000/minute", "auth_failure": "1000/minute"} | {
        "api": "1000/minute",
        **changes,
    }


def limited_client(runtime: Runtime, limits: RateLimits | None = None, **settings: Any) -> Any:
    runtime = with_runtime_settings(runtime, **settings)
    app = serving_app(runtime, rate_limits=limits)
    return app.test_client(raise_server_exceptions=False)


def spec_operations() -> list[tuple[str, str]]:
    spec = load_spec()
    operations = []
    for template, item in spec["paths"].items():
        path = template
        for name, value in PATH_VALUES.items():
            path = path.replace("{" + name + "}", value)
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                operations.append((method.upper(), path))
    return operations


def fullest_query(limits: RouteLimits) -> str:
    """As many parameters as allowed, as long as allowed, each name distinct."""
    count = limits.max_parameters
    value_length = limits.max_query_bytes // count - len("p00=&")
    query = "&".join(f"p{i:02d}=" + "v" * value_length for i in range(count))
    assert len(query) <= limits.max_query_bytes
    return query


def fullest_headers(limits: RouteLimits, base: dict[str, str]) -> dict[str, str]:
    """As many header fields as allowed (beside the client's own), as long as allowed."""
    room = limits.max_header_fields - len(base) - 6  # host, accept, user-agent... added by httpx
    value_length = (limits.max_header_bytes - 2048) // room - len("x-pad-00")
    return {**base, **{f"x-pad-{i:02d}": "h" * value_length for i in range(room)}}


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if not number:
            return text


def cpu_seconds(call: Any, tries: int = 3) -> tuple[float, Any]:
    """The least process CPU time of ``tries`` calls, with the garbage collector paused.

    Process CPU time counts every thread, so a collection or another test's
    leftover thread can land in one try; the cheapest try is the request's cost.
    Paused is enough: no collection starts in any thread meanwhile (a full
    ``gc.collect()`` first would cost more than the request, in a worker that
    holds every module the suite imports).
    """
    best, result = float("inf"), None
    gc.disable()
    try:
        for _ in range(tries):
            start = time.process_time()
            result = call()
            best = min(best, time.process_time() - start)
    finally:
        gc.enable()
    return best, result


def test_twelve_thousand_query_parameters_are_refused_before_parsing(client: Any) -> None:
    """Attacker sends GET /health? with 12,793 distinct parameters (4.2 s of CPU before)."""
    query = "&".join(_base36(i) for i in range(12793))  # about 50 KB, as in the report
    client.get("/health")
    spent, response = cpu_seconds(lambda: client.get(f"/health?{query}"))
    assert response.status_code == 414
    assert response.json()["code"] == "URI_TOO_LONG"
    assert spent < CPU_BOUND_SECONDS
    short_names = "&".join(f"{i % 10}" for i in range(1000))
    many = client.get(f"/health?{short_names}")
    assert many.status_code == 400
    assert many.json()["code"] == "TOO_MANY_PARAMETERS"


def test_every_request_within_the_limits_costs_at_most_50ms_of_cpu(
    client: Any, provider: ProviderAccount
) -> None:
    """For every route: the most parameters, the longest query and headers allowed, cheap."""
    worst = 0.0
    for method, path in spec_operations():
        limits = CALLBACK_LIMITS if path == "/oauth/callback" else DEFAULT_LIMITS
        url = f"{path}?{fullest_query(limits)}"
        headers = fullest_headers(limits, provider.headers)
        client.request(method, url, headers=headers)  # warm Connexion's caches
        spent, response = cpu_seconds(lambda: client.request(method, url, headers=headers))  # noqa: B023
        assert response.status_code < 500, (method, path, response.text)
        assert response.status_code not in (414, 431), (method, path)
        worst = max(worst, spent)
    assert worst < CPU_BOUND_SECONDS


def test_form_post_with_thousands_of_fields_is_cut_before_parsing(client: Any) -> None:
    """Attacker posts 5,000 form fields to the form_post return (quadratic to validate).

    Only the state goes on (none here, so the page says so); the CPU stays bounded.
    """
    body = "&".join(f"f{i}=x" for i in range(5000))
    spent, response = cpu_seconds(
        lambda: client.post(
            "/oauth/callback",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "RETURN_PAGE_OPENED_DIRECTLY" in response.text
    assert spent < CPU_BOUND_SECONDS


@pytest.mark.parametrize(
    ("path", "html"),
    [("/enterprises", False), ("/health", False), ("/actions/" + "A" * 43, True)],
)
def test_query_longer_than_its_route_allows_is_414(client: Any, path: str, html: bool) -> None:
    """A long query on a route that never needs one is refused before parsing."""
    response = client.get(f"{path}?x={'a' * 3000}")
    assert response.status_code == 414
    if html:
        assert response.headers["content-type"].startswith("text/html")
        assert "URI_TOO_LONG" in response.text
    else:
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "URI_TOO_LONG"


def test_microsoft_return_keeps_its_large_limits(client: Any) -> None:
    """Microsoft's callback may carry a long state, code and error description."""
    query = (
        f"state={'s' * 2500}&code={'c' * 4000}&session_state={uuid.uuid4()}"
        f"&error_description={quote('AADSTS50105: ' + 'd' * 3000)}&client_info={'i' * 400}"
    )
    response = client.get(f"/oauth/callback?{query}")
    assert response.status_code not in (414, 431)
    assert response.headers["content-type"].startswith("text/html")


def test_too_many_or_too_long_header_fields_are_431(client: Any) -> None:
    """A client stuffing header fields gets 431 with a code, not a parser hang."""
    many = {f"x-h{i}": "1" for i in range(60)}
    assert client.get("/health", headers=many).json()["code"] == "HEADERS_TOO_LARGE"
    long = client.get("/health", headers={"x-long": "a" * 9000})
    assert long.status_code == 431
    assert long.headers["content-type"] == PROBLEM
    page = client.get("/actions/" + "A" * 43, headers={"x-long": "a" * 9000})
    assert page.status_code == 431
    assert page.headers["content-type"].startswith("text/html")


def test_api_bulkhead_full_answers_503_at_once() -> None:
    """Over the concurrency budget the broker answers 503 with Retry-After, never queues.

    The admin pages have a budget of their own, so they are still served.
    """
    release = anyio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/enterprises":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = RequestGuard(
        slow_app,
        rate_limits=fresh_limits("memory://"),
        trusted_proxies=(),
        max_concurrent_requests=1,
        microsoft_limiter=anyio.CapacityLimiter(1),
    )

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as http:
            answers: list[httpx.Response] = []
            async with anyio.create_task_group() as tasks:

                async def first() -> None:
                    answers.append(await http.get("/enterprises"))

                tasks.start_soon(first)
                await anyio.sleep(0.05)
                answers.append(await http.get("/enterprises"))
                answers.append(await http.get("/actions/" + "A" * 43))
                release.set()
            return answers

    # On a thread of its own: the test process may have an event loop running on this one
    # (Playwright's sync API keeps one for the browser tests' session).
    with ThreadPoolExecutor(1) as thread:
        busy, admin, held = thread.submit(anyio.run, scenario).result()
    assert busy.status_code == 503
    assert busy.json()["code"] == "SERVICE_UNAVAILABLE"
    assert busy.headers["retry-after"] == "1"
    assert admin.status_code == 200
    assert held.status_code == 200


# -- rate limits ---------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else REDIS_URL


def fresh_limits(storage: str, **changes: str) -> RateLimits:
    # A random prefix per test: runs on one Redis never share counters.
    return RateLimits(storage, rates(**changes), f"ctt-test-{uuid.uuid4().hex}")


def test_random_link_handles_from_one_ip_get_429(runtime: Runtime, storage: str) -> None:
    """Attacker walks 500 random link handles: after the admin budget, 429 pages."""
    client = limited_client(runtime, fresh_limits(storage, admin="20/minute"))
    statuses = [client.get(f"/actions/{uuid.uuid4().hex}{i:011d}").status_code for i in range(30)]
    assert statuses[:20] == [404] * 20
    assert set(statuses[20:]) == {429}
    refused = client.get("/actions/" + "B" * 43)
    assert refused.headers["content-type"].startswith("text/html")
    assert "Wait a minute" in refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-frame-options"] == "DENY"


def test_wrong_api_keys_from_one_ip_get_429(runtime: Runtime, storage: str) -> None:
    """Attacker tries 500 wrong keys: after the failure budget, 429 without a lookup."""
    client = limited_client(runtime, fresh_limits(storage, auth_failure="10/minute"))
    codes = [
        client.get("/enterprises", headers={"Authorization": f"Bearer ctt_sk_{'A' * 42}{i % 10}"})
        for i in range(15)
    ]
    assert [r.status_code for r in codes[:10]] == [401] * 10
    assert {r.status_code for r in codes[10:]} == {429}
    problem = codes[-1]
    assert problem.headers["content-type"] == PROBLEM
    assert problem.json()["code"] == "RATE_LIMITED"
    assert int(problem.headers["retry-after"]) >= 1


def test_one_api_key_over_its_budget_gets_429(
    runtime: Runtime, provider: ProviderAccount, storage: str
) -> None:
    """A provider's runaway script is slowed down; its key still works after the window."""
    client = limited_client(runtime, fresh_limits(storage, api="5/minute"))
    statuses = [client.get("/enterprises", headers=provider.headers).status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2


def test_two_instances_share_counters_in_redis(runtime: Runtime) -> None:
    """Behind a load balancer, an attacker alternating instances meets one budget."""
    prefix = f"ctt-test-{uuid.uuid4().hex}"
    first = limited_client(runtime, RateLimits(REDIS_URL, rates(admin="6/minute"), prefix))
    second = limited_client(runtime, RateLimits(REDIS_URL, rates(admin="6/minute"), prefix))
    statuses = [
        (first if i % 2 else second).get("/actions/" + "C" * 43).status_code for i in range(8)
    ]
    assert statuses == [404] * 6 + [429] * 2


def test_forwarded_for_from_an_untrusted_peer_is_ignored(runtime: Runtime) -> None:
    """Attacker rotates X-Forwarded-For to get a fresh budget per request: still one IP."""
    client = limited_client(runtime, fresh_limits("memory://", admin="3/minute"))
    statuses = [
        client.get("/actions/" + "D" * 43, headers={"X-Forwarded-For": f"203.0.113.{i}"})
        for i in range(5)
    ]
    assert [r.status_code for r in statuses] == [404, 404, 404, 429, 429]


@pytest.mark.parametrize("bucket", ["admin", "auth_failure"])
def test_rotating_ipv6_addresses_within_one_64_does_not_escape_the_per_ip_limit(
    storage: str, bucket: str
) -> None:
    """Attacker holding a /64 uses a new address per request: one budget for all of them."""
    limits = fresh_limits(storage, admin="3/minute", auth_failure="3/minute")
    verdicts = [limits.hit(bucket, f"2001:db8:7:9::{n:x}").allowed for n in range(1, 6)]
    assert verdicts == [True, True, True, False, False]
    # The next /64 is another subscriber, and IPv4 addresses stay one each.
    assert limits.hit(bucket, "2001:db8:7:a::1").allowed
    assert limits.hit(bucket, "192.0.2.7").allowed


def test_client_ip_comes_from_forwarded_for_only_behind_a_trusted_proxy() -> None:
    proxies = parse_networks("10.0.0.0/8, 192.0.2.1")
    assert client_ip("198.51.100.7", ["203.0.113.9"], proxies) == "198.51.100.7"
    assert client_ip("10.1.2.3", ["203.0.113.9"], proxies) == "203.0.113.9"
    # The client wrote the left-most hops: the proxy's own append is what counts.
    assert client_ip("10.1.2.3", ["1.1.1.1, 203.0.113.9"], proxies) == "203.0.113.9"
    assert client_ip("10.1.2.3", ["203.0.113.9, 192.0.2.1"], proxies) == "203.0.113.9"
    assert client_ip("10.1.2.3", ["not-an-ip"], proxies) == "10.1.2.3"
    assert client_ip("10.1.2.3", [], proxies) == "10.1.2.3"


def test_redis_down_does_not_take_the_broker_down(runtime: Runtime) -> None:
    """Rate limiting fails open when its storage is away: availability first."""
    limits = RateLimits("redis://127.0.0.1:1/0", rates(admin="1/minute"), "ctt-test")
    client = limited_client(runtime, limits)
    assert [client.get("/actions/" + "E" * 43).status_code for _ in range(3)] == [404] * 3


def test_pages_answered_before_routing_speak_the_admins_language(runtime: Runtime) -> None:
    """A German admin who hits a limit reads why in German, not an English page."""
    client = limited_client(runtime, fresh_limits("memory://", admin="1/minute"))
    german = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
    client.get("/actions/" + "F" * 43, headers=german)
    limited = client.get("/actions/" + "F" * 43, headers=german)
    assert limited.status_code == 429
    assert '<html lang="de"' in limited.text
    assert "There were too many attempts" not in limited.text
    too_long = client.get(f"/actions/{'G' * 43}?x={'a' * 3000}", headers=german)
    assert too_long.status_code == 414
    assert '<html lang="de"' in too_long.text
