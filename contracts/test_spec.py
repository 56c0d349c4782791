"""The spec, the code and the README agree."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from connexion.spec import Specification
from openapi_spec_validator import validate

from broker import errors
from broker.catalog import load_catalog
from broker.settings import DOCUMENTED, PREFIX
from contracts.conftest import REPO, ContractApp, read_spec
from handlers.app import SPEC_PATH, SnakeCaseResolver, load_spec

SPEC: dict[str, Any] = read_spec()
METHODS = ("get", "post", "put", "patch", "delete")
OPERATIONS = [
    (path, method, operation)
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
    if method in METHODS
]


def test_spec_is_valid_openapi_3_0() -> None:
    assert SPEC["openapi"] == "3.0.3"
    validate(SPEC)


@pytest.mark.parametrize(
    ("path", "method", "operation"), OPERATIONS, ids=[o[2]["operationId"] for o in OPERATIONS]
)
def test_every_operation_is_documented_and_has_a_handler(
    path: str, method: str, operation: dict[str, Any]
) -> None:
    assert re.fullmatch(r"[a-z][A-Za-z]+", operation["operationId"])
    assert operation.get("summary") and operation.get("description")
    module_name, _, function = (
        SnakeCaseResolver()
        .resolve_operation_id(
            type(
                "Op",
                (),
                {
                    "operation_id": operation["operationId"],
                    "router_controller": operation["x-openapi-router-controller"],
                },
            )()
        )
        .rpartition(".")
    )
    module = __import__(module_name, fromlist=[function])
    assert callable(getattr(module, function))
    statuses = set(operation["responses"])
    assert any(s.startswith(("2", "3")) for s in statuses)
    browser = "Admin flow" in operation.get("tags", [])
    assert "500" in statuses or path == "/health"
    if operation.get("security", SPEC["security"]):
        assert "401" in statuses
    for status, response in operation["responses"].items():
        if status.startswith(("4", "5")):
            target = response
            if "$ref" in response:
                target = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
            expected = ["text/html"] if browser else ["application/problem+json"]
            assert list(target["content"]) == expected, (path, status)


def test_every_route_the_app_serves_is_in_the_spec(contract_app: ContractApp) -> None:
    """Probe paths next to the documented ones: anything undocumented must be a 404."""
    client = contract_app.app.test_client()
    documented = {(p, m) for p, m, _ in OPERATIONS}
    for path, _method, _ in OPERATIONS:
        concrete = re.sub(r"\{enterpriseId\}", contract_app.enterprise_id, path)
        concrete = re.sub(r"\{actionItemId\}", "act_01JCX3Q2B6V7W8X9Y0Z1A2B3C4", concrete)
        for other in METHODS:
            if (path, other) in documented:
                continue
            response = client.request(other.upper(), concrete, headers=contract_app.headers)
            assert response.status_code == 405, (other, path)
    for ghost in ("/admin", "/enterprises/x/y/z", "/actions", "/v2/enterprises", "/enterprise"):
        assert client.get(ghost, headers=contract_app.headers).status_code == 404


def test_the_app_is_built_from_the_spec_file_as_written(contract_app: ContractApp) -> None:
    """The app is built from a parse of openapi.yaml kept for the process: Connexion must
    make of it what it makes of the file itself, and no caller may change what the next
    caller gets."""
    assert load_spec() == SPEC
    # Connexion resolves a relative $ref against the file's folder, which a dict has not:
    # the spec must keep every reference inside itself.
    refs = re.findall(r"\$ref['\"]?:\s*['\"]?([^'\"\s,}]+)", json.dumps(SPEC))
    assert refs and all(ref.startswith("#/") for ref in refs), sorted(set(refs))[:5]
    mine = load_spec()
    mine["paths"].clear()
    mine["info"]["title"] = "changed"
    assert load_spec() == SPEC
    from_file = Specification.load(str(SPEC_PATH))
    from_dict = Specification.load(load_spec())
    assert from_dict.raw == from_file.raw
    assert from_dict.operation_cls is from_file.operation_cls
    served = contract_app.app.test_client().get("/openapi.json").json()
    assert served["paths"].keys() == SPEC["paths"].keys()
    assert served["info"] == SPEC["info"]


def test_every_error_code_the_code_can_raise_is_in_the_spec() -> None:
    in_code = {cls.code for cls in errors.all_error_classes()}
    in_spec = set(SPEC["components"]["schemas"]["ErrorCode"]["enum"])
    assert in_code == in_spec
    table = SPEC["components"]["schemas"]["ErrorCode"]["description"]
    for code in in_spec:
        assert f"| {code} |" in table


def test_every_error_code_has_the_status_the_spec_says() -> None:
    table = SPEC["components"]["schemas"]["ErrorCode"]["description"]
    documented = dict(re.findall(r"^\| ([A-Z_]+) \| (\d{3}) \|", table, re.M))
    for cls in errors.all_error_classes():
        assert int(documented[cls.code]) == cls.status, cls.code


def test_catalog_and_spec_enums_agree() -> None:
    catalog = load_catalog()
    schemas = SPEC["components"]["schemas"]
    assert schemas["ActionType"]["enum"] == list(catalog.action_types)
    assert schemas["ConsentType"]["enum"] == list(catalog.consent_types)
    assert schemas["ConsentTypeOrNull"]["enum"] == [*catalog.consent_types, None]


def test_every_example_validates_against_its_schema() -> None:
    """Examples are part of the contract: generated docs must not lie."""
    from openapi_schema_validator import OAS30Validator

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].rsplit("/", 1)[1]
                section = node["$ref"].split("/")[2]
                return resolve(SPEC["components"][section][name])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    checked = 0
    for _name, schema in SPEC["components"]["schemas"].items():
        if "example" in schema:
            OAS30Validator(resolve(schema)).validate(schema["example"])
            checked += 1
    for item in SPEC["paths"].values():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                schema = resolve(body["schema"])
                for example in [
                    body.get("example"),
                    *[e["value"] for e in body.get("examples", {}).values()],
                ]:
                    if example is not None:
                        OAS30Validator(schema).validate(example)
                        checked += 1
    for response in SPEC["components"]["responses"].values():
        for media in response["content"].values():
            schema = resolve(media["schema"])
            examples = [
                media.get("example"),
                *[e["value"] for e in media.get("examples", {}).values()],
            ]
            for example in examples:
                if example is not None:
                    OAS30Validator(schema).validate(example)
                    checked += 1
    assert checked > 20


def test_readme_documents_every_setting_and_error_code() -> None:
    readme = (REPO / "README.md").read_text()
    for name, (default, _meaning) in DOCUMENTED.items():
        assert f"| `{PREFIX}{name}` |" in readme, name
        assert f"`{default}`" in readme, (name, default)
    for code in SPEC["components"]["schemas"]["ErrorCode"]["enum"]:
        assert f"`{code}`" in readme, code
