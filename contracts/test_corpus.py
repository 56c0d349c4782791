"""The hostile-input corpus: every entry refused, never a 500, never a redirect."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from broker import errors
from broker.callbacks import check_callback_url
from contracts.conftest import REPO, ContractApp

CALLBACKS = json.loads((REPO / "contracts/corpus/hostile_callback_urls.json").read_text())
HANDLES = json.loads((REPO / "contracts/corpus/hostile_link_handles.json").read_text())


def test_the_corpus_is_big_enough() -> None:
    assert len(CALLBACKS["refused"]) >= 200
    assert len({entry["url"] for entry in CALLBACKS["refused"]}) == len(CALLBACKS["refused"])


@pytest.mark.parametrize("entry", CALLBACKS["refused"], ids=lambda e: e["why"])
def test_hostile_callback_url_is_refused_by_the_policy(entry: dict[str, str]) -> None:
    with pytest.raises(errors.CallbackUrlRejected):
        check_callback_url(entry["url"], CALLBACKS["allowed"], development=False)


def test_hostile_callback_urls_get_a_coded_400_from_the_api(contract_app: ContractApp) -> None:
    client = contract_app.app.test_client()
    codes: set[str] = set()
    for entry in CALLBACKS["refused"]:
        response = client.post(
            "/enterprise/getActionItemUrl",
            json={
                "actionType": "REGISTRATION",
                "enterpriseId": contract_app.enterprise_id,
                "callbackUrl": entry["url"].replace(
                    "portal.example.com/teams/callback", "portal.example.com/teams/callback"
                ),
            },
            headers=contract_app.headers,
        )
        assert response.status_code in (400, 413), (entry, response.status_code)
        body: dict[str, Any] = response.json()
        assert body["code"].startswith(("CALLBACK_URL_", "INVALID_REQUEST")), (entry, body)
        codes.add(body["code"])
    assert len(codes) >= 10  # the refusals really are told apart


@pytest.mark.parametrize("handle", HANDLES["handles"])
def test_hostile_link_handle_gets_a_page_never_a_500_or_a_redirect(
    contract_app: ContractApp, handle: str
) -> None:
    client = contract_app.app.test_client()
    path = "/actions/" + quote(handle.encode("utf-8", "surrogatepass"), safe="")
    response = client.get(path, follow_redirects=False)
    assert response.status_code in (400, 404), (handle, response.status_code)
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
