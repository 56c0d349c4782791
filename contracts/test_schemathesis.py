"""Schemathesis, in process: every operation, generated valid and invalid input.

The full contract stage (real server, stateful links, several seeds) runs from
``.ci/run``; this in-process pass keeps the same checks one ``pytest`` away.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from contracts import teams_media
from contracts.conftest import build_contract_app

del teams_media  # imported for its registration of the application/zip strategy

schema = schemathesis.openapi.from_asgi("/openapi.json", build_contract_app().app)


@schema.auth()
class ProviderApiKey:
    """Supplies the provider key through Schemathesis, so negative cases can drop it."""

    def get(self, case: Any, context: Any) -> str:
        return build_contract_app().api_key

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("CTT_CONTRACT_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_every_operation_honours_the_spec(case: Any) -> None:
    excluded = []
    if case.operation.path.startswith("/oauth/"):
        # Any string is a schema-valid `state`, but only one the broker signed is
        # accepted: a forged state is refused with 400 STATE_INVALID by design.
        excluded.append(positive_data_acceptance)
    if case.operation.path == "/teamsApps/packages" and case.operation.method.upper() == "POST":
        # Any bytes are a schema-valid binary body; only a valid, new package is stored.
        excluded.append(positive_data_acceptance)
    response = case.call()
    if response.status_code in (413, 414, 431):
        # A body over CTT_MAX_BODY_BYTES, or a head over its route's limits, is refused
        # before validation: that is a rejection too.
        excluded.append(negative_data_rejection)
    case.validate_response(response, excluded_checks=excluded)
