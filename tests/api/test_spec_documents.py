"""``/openapi.json`` and ``/openapi.yaml``: the spec as written, built once, for anyone.

Both are public. Connexion used to rebuild them for every request (copy, validate, inline
every reference: 2.9 MB and about 120 ms of CPU for the JSON, over 2 s for the YAML, on
the event loop), so a few anonymous requests a second could stall a worker.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from handlers.app import load_spec
from handlers.spec_documents import JSON_PATH, YAML_PATH, SpecDocuments, render

SPEC = load_spec()


def call(
    layer: Any, method: str, path: str, root_path: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """One request through ``layer``: status, headers, body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "root_path": root_path, "headers": []}
    asyncio.run(layer(scope, receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body


async def behind(scope: Any, receive: Any, send: Any) -> None:
    """What stands behind the layer (Connexion): answers 418 to whatever reaches it."""
    await send({"type": "http.response.start", "status": 418, "headers": []})
    await send({"type": "http.response.body", "body": b"behind"})


def counting() -> tuple[list[tuple[str, str]], Any]:
    calls: list[tuple[str, str]] = []

    def renderer(spec: Mapping[str, Any], path: str, base_path: str) -> tuple[bytes, bytes]:
        calls.append((path, base_path))
        return render(spec, path, base_path)

    return calls, renderer


def test_anonymous_spec_requests_cannot_make_the_worker_rebuild_the_spec() -> None:
    calls, renderer = counting()
    layer = SpecDocuments(behind, SPEC, renderer)
    answers = {
        call(layer, method, path)[2]
        for _ in range(25)
        for method in ("GET", "HEAD")
        for path in (JSON_PATH, YAML_PATH)
    }
    assert sorted(calls) == [(JSON_PATH, ""), (YAML_PATH, "")]
    assert len(answers) == 3  # the JSON, the YAML, and HEAD's empty body


def test_the_served_spec_is_openapi_yaml_as_written_with_the_base_path_as_server() -> None:
    layer = SpecDocuments(behind, SPEC)
    status, headers, body = call(layer, "GET", JSON_PATH)
    assert status == 200 and headers["content-type"] == "application/json"
    served = json.loads(body)
    assert served == {**SPEC, "servers": [{"url": ""}]}
    # References are kept (client generators name their models after them), not inlined.
    assert re.search(rb'"\$ref": "#/components/schemas/', body)
    assert int(headers["content-length"]) == len(body) < 4 * len(json.dumps(SPEC))
    status, headers, text = call(layer, "GET", YAML_PATH)
    assert status == 200 and headers["content-type"] == "text/yaml; charset=utf-8"
    assert yaml.safe_load(text) == served


def test_head_gets_the_headers_of_get_and_no_body() -> None:
    layer = SpecDocuments(behind, SPEC)
    for path in (JSON_PATH, YAML_PATH):
        _, got, body = call(layer, "GET", path)
        status, headed, empty = call(layer, "HEAD", path)
        assert status == 200 and headed == got and empty == b"" and body


def test_each_root_path_gets_its_own_server_url() -> None:
    calls, renderer = counting()
    layer = SpecDocuments(behind, SPEC, renderer)
    # Uvicorn sends the root path in front of the path, and in ``root_path``.
    for root in ("", "/broker", "/other/prefix"):
        status, _, body = call(layer, "GET", root + JSON_PATH, root)
        assert status == 200 and json.loads(body)["servers"] == [{"url": root}]
        assert call(layer, "GET", root + YAML_PATH, root)[0] == 200
    assert len(calls) == 6


def test_other_methods_and_paths_go_on_to_connexion() -> None:
    layer = SpecDocuments(behind, SPEC)
    for method, path in (
        ("POST", JSON_PATH),
        ("DELETE", YAML_PATH),
        ("GET", "/openapi.json/"),
        ("GET", "/OPENAPI.JSON"),
        ("GET", "/ui/"),
    ):
        assert call(layer, method, path)[0] == 418, (method, path)


def test_the_served_spec_passes_through_our_middleware(client: Any) -> None:
    for path in (JSON_PATH, YAML_PATH):
        answer = client.get(path)
        assert answer.status_code == 200
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-request-id"]
    # The app serves it from this layer: Connexion's own answer inlines every reference.
    assert '"$ref"' in client.get(JSON_PATH).text
    assert client.post(JSON_PATH).status_code == 405
