"""Swagger UI works on the first try: the right server, nothing unasked-for sent, the key kept."""

from __future__ import annotations

from typing import Any

import pytest

from broker.settings import load_settings
from contracts.conftest import read_spec
from handlers.app import swagger_ui_options

SPEC: dict[str, Any] = read_spec()
METHODS = ("get", "post", "put", "patch", "delete")


def resolved(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def optional_query_parameters() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for item in SPEC["paths"].values():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for parameter in map(resolved, operation.get("parameters", [])):
                if parameter["in"] == "query" and not parameter.get("required"):
                    found.append((f"{operation['operationId']}.{parameter['name']}", parameter))
    return found


def test_try_it_out_sends_no_filter_or_cursor_the_reader_did_not_type() -> None:
    """Swagger UI pre-fills a query field from its example: a filter then finds nothing.

    An example on an optional query parameter, or on the schema it points to, is sent by
    "Try it out" as if the reader typed it (`externalId=cust-1042`, a stale cursor).
    """
    prefilled = [
        name
        for name, parameter in optional_query_parameters()
        if "example" in parameter
        or "examples" in parameter
        or "example" in resolved(parameter.get("schema", {}))
    ]
    assert prefilled == []


def test_request_examples_use_a_callback_the_sandbox_provider_allows() -> None:
    from broker.cli import SANDBOX_CALLBACKS

    body = SPEC["paths"]["/enterprise/getActionItemUrl"]["post"]["requestBody"]
    for name, example in body["content"]["application/json"]["examples"].items():
        callback = example["value"]["callbackUrl"].split("?", 1)[0]
        assert callback in SANDBOX_CALLBACKS, name


@pytest.mark.parametrize("base", ["http://127.0.0.1:9123", "https://broker.example.com"])
def test_swagger_ui_targets_this_brokers_public_url_and_keeps_the_key(base: str) -> None:
    settings = load_settings({"CTT_PUBLIC_BASE_URL": base})
    config = swagger_ui_options(settings, SPEC).swagger_ui_config
    assert config["spec"]["servers"][0]["url"] == base
    assert config["persistAuthorization"] is True
    assert config["spec"]["paths"] == SPEC["paths"]
