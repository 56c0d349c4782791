"""The spec's links let the stateful fuzzer reach every operation with live resources.

Schemathesis' stateful phase only reaches an operation that needs an existing resource
(a path id) by following a link from an answer that created or listed one. These checks
keep the links whole: each points at a real operation, each expression names a field the
answer's schema has, and every operation is either a start (no id needed), the target of a
link, or one of the few the fuzzer cannot drive, each with the reason.
"""

from __future__ import annotations

from typing import Any

from contracts.conftest import read_spec

SPEC: dict[str, Any] = read_spec()
METHODS = ("get", "post", "put", "patch", "delete")

# Reached by the flow tests (tests/flow, contracts/test_generated_clients.py), not by links.
NOT_LINKABLE = {
    "launchAction": "its handle exists only inside the one-time `url`, never as a field",
    "completeCallback": "needs a state the broker signed and Microsoft's answer",
    "resumeFormPost": "needs a state the broker signed and Microsoft's answer",
    "redeemResult": "its resultCode reaches only the provider's callback, after Microsoft",
}


def resolved(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def operations() -> dict[str, dict[str, Any]]:
    return {
        operation["operationId"]: operation
        for item in SPEC["paths"].values()
        for method, operation in item.items()
        if method in METHODS
    }


def links() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(source operation, link name, link, the answer's schema)."""
    found = []
    for source, operation in operations().items():
        for response in operation["responses"].values():
            response = resolved(response)
            schema = resolved(
                response.get("content", {}).get("application/json", {}).get("schema", {})
            )
            for name, link in response.get("links", {}).items():
                found.append((source, name, link, schema))
    return found


def field_exists(schema: dict[str, Any], pointer: str) -> bool:
    node: Any = schema
    for part in pointer.strip("/").split("/"):
        node = resolved(node)
        if part.isdigit() and node.get("type") == "array":
            node = node["items"]
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        else:
            return False
    return True


def expressions(value: Any) -> list[str]:
    if isinstance(value, str) and value.startswith("$response.body#"):
        return [value.removeprefix("$response.body#")]
    if isinstance(value, dict):
        return [e for v in value.values() for e in expressions(v)]
    return []


def test_every_link_targets_an_operation_and_reads_a_field_the_answer_has() -> None:
    known = operations()
    assert links()
    for source, name, link, schema in links():
        assert link["operationId"] in known, (source, name)
        for pointer in expressions(link.get("parameters", {})) + expressions(
            link.get("requestBody", {})
        ):
            assert field_exists(schema, pointer), (source, name, pointer)


def test_linked_request_bodies_use_a_callback_the_sandbox_provider_allows() -> None:
    from broker.cli import SANDBOX_CALLBACKS

    for source, name, link, _schema in links():
        callback = (link.get("requestBody") or {}).get("callbackUrl")
        if callback is not None:
            assert callback.split("?", 1)[0] in SANDBOX_CALLBACKS, (source, name)


def test_every_operation_needing_a_live_resource_is_reachable_by_a_link() -> None:
    targets = {link["operationId"] for _source, _name, link, _schema in links()}
    unreachable = []
    for operation_id, operation in operations().items():
        needs_id = any(
            resolved(p)["in"] == "path" and resolved(p).get("required")
            for p in operation.get("parameters", [])
        )
        if needs_id and operation_id not in targets and operation_id not in NOT_LINKABLE:
            unreachable.append(operation_id)
    assert unreachable == []
    assert set(NOT_LINKABLE) <= set(operations())
