"""Schemathesis, in process: every operation, generated valid and invalid input.

The full contract stage (real server, stateful links, several seeds) runs from
``.ci/run``; this in-process pass keeps the same checks one ``pytest`` away.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from contracts.conftest import ContractApp, build_contract_app

schema = schemathesis.openapi.from_asgi("/openapi.json", build_contract_app().app)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_every_operation_honours_the_spec(case: Any, contract_app: ContractApp) -> None:
    case.call_and_validate(headers=contract_app.headers)
