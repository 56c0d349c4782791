"""``/openapi.json`` and ``/openapi.yaml``: the spec as written, built once per process.

Connexion answers these paths itself, and for every request it copies the whole spec,
validates it again and inlines every ``$ref``: 2.9 MB of JSON from a 110 KB document,
about 120 ms of CPU for the JSON and over 2 s for the YAML, on the event loop, for
anyone, without a key (a few requests a second would stall a worker). This middleware
answers GET and HEAD on those two paths first, with a document built on its first
request and kept: ``openapi.yaml`` as written (its references kept, which is what client
generators expect), with the ``servers`` block Connexion serves (the base path, so a
client resolves operations against the URL it fetched the document from). It serializes
with Connexion's own JSON and YAML writers. Every other request, and other methods on
these paths, go on to Connexion. The documents are always published (the app never turns
Connexion's ``serve_spec`` off); they come from the spec the app was built from, which
Connexion has validated, so rendering them cannot fail on a request's account.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from connexion.jsonifier import Jsonifier
from connexion.utils import yamldumper
from starlette.types import ASGIApp, Receive, Scope, Send

JSON_PATH = "/openapi.json"
YAML_PATH = "/openapi.yaml"
# A base path comes from the server's configuration (its root path), not from the client;
# the bound only keeps a misconfiguration from growing the cache.
MAX_BASE_PATHS = 8


def render(spec: Mapping[str, Any], path: str, base_path: str) -> tuple[bytes, bytes]:
    """The document served at ``path`` under ``base_path``, and its media type."""
    document = {**spec, "servers": [{"url": base_path.rstrip("/")}]}  # the writers only read
    if path == YAML_PATH:
        return yamldumper(document).encode("utf-8"), b"text/yaml; charset=utf-8"
    return Jsonifier().dumps(document).encode("utf-8"), b"application/json"


class SpecDocuments:
    """Serve the spec documents from a cache (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        spec: Mapping[str, Any],
        renderer: Callable[[Mapping[str, Any], str, str], tuple[bytes, bytes]] = render,
    ) -> None:
        self.app = app
        self._spec = copy.deepcopy(dict(spec))
        self._render = renderer
        self._documents: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        # Uvicorn puts the root path (``--root-path``) in front of the request's path.
        root_path: str = scope.get("root_path", "")
        path: str = scope["path"]
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        if path not in (JSON_PATH, YAML_PATH):
            await self.app(scope, receive, send)
            return
        body, media_type = self._document(path, root_path)
        headers = [(b"content-type", media_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def _document(self, path: str, base_path: str) -> tuple[bytes, bytes]:
        key = (path, base_path)
        kept = self._documents.get(key)
        if kept is None:
            kept = self._render(self._spec, path, base_path)
            if len(self._documents) >= 2 * MAX_BASE_PATHS:
                self._documents.clear()
            self._documents[key] = kept
        return kept
