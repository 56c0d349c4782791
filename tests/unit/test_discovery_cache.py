"""MSAL's tenant discovery is fetched once per tenant and hour, never an error or a token."""

from __future__ import annotations

import httpx

from broker.microsoft import DiscoveryCache

LOGIN = "https://login.example.com"
CONTOSO = f"{LOGIN}/contoso-tid/v2.0/.well-known/openid-configuration"
FABRIKAM = f"{LOGIN}/fabrikam-tid/v2.0/.well-known/openid-configuration"


class Counting:
    """An httpx transport answering every path with a status of our choosing, counting calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.status = 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        return httpx.Response(self.status, json={"path": request.url.path})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(answers: Counting, clock: Clock, **kwargs: int) -> DiscoveryCache:
    return DiscoveryCache(
        httpx.Client(transport=httpx.MockTransport(answers)), monotonic=clock, **kwargs
    )


def test_a_discovery_document_is_fetched_once_per_tenant_until_it_is_an_hour_old() -> None:
    answers, clock = Counting(), Clock()
    http = cache(answers, clock)
    first = http.get(CONTOSO, timeout=5)
    assert http.get(CONTOSO, timeout=5).json() == first.json()
    http.get(FABRIKAM, timeout=5)
    assert len(answers.calls) == 2
    clock.now += 3599
    http.get(CONTOSO, timeout=5)
    assert len(answers.calls) == 2
    clock.now += 2
    http.get(CONTOSO, timeout=5)
    assert len(answers.calls) == 3


def test_an_unknown_tenant_or_an_outage_is_asked_again_every_time() -> None:
    answers, clock = Counting(), Clock()
    http = cache(answers, clock)
    for status in (400, 503):
        answers.status = status
        assert http.get(CONTOSO, timeout=5).status_code == status
        assert http.get(CONTOSO, timeout=5).status_code == status
    assert len(answers.calls) == 4
    answers.status = 200
    assert http.get(CONTOSO, timeout=5).status_code == 200


def test_tokens_keys_and_other_requests_are_never_cached() -> None:
    answers, clock = Counting(), Clock()
    http = cache(answers, clock)
    for _ in range(2):
        http.post(f"{LOGIN}/contoso-tid/oauth2/v2.0/token", data={"grant_type": "x"})
        http.get(f"{LOGIN}/contoso-tid/discovery/v2.0/keys")
        http.get(CONTOSO, params={"api-version": "1.1"})
    assert len(answers.calls) == 6


def test_the_cache_holds_a_bounded_number_of_tenants() -> None:
    answers, clock = Counting(), Clock()
    http = cache(answers, clock, max_entries=2)
    tenants = [f"{LOGIN}/t{i}/v2.0/.well-known/openid-configuration" for i in range(3)]
    for url in tenants:
        http.get(url)
    http.get(tenants[0])  # the oldest made room for the third
    http.get(tenants[2])
    assert len(answers.calls) == 4
