"""The reference: ``POST /enterprise/getActionItemUrl`` written by hand with bare Starlette.

It does all the work the product's endpoint does, and nothing less, on the product's own
tables (``broker.db``) and engine settings (``broker.db.make_engine``, SQLite in WAL mode):

1. the bearer API key's SHA-256 finds the provider (``api_keys`` joined to ``providers``,
   neither expired nor revoked);
2. the body is validated with ``jsonschema`` against ``ActionItemRequest`` from
   ``openapi.yaml`` (its ``$ref``s resolved once, at start);
3. the callback URL is parsed and checked against the provider's ``provider_callbacks``
   (scheme, host, port and path equal; https, or http on loopback for development
   providers; no userinfo, fragment, backslash, encoded separator or reserved parameter);
4. the enterprise is looked up, scoped to the provider, and the catalog's registration rule
   is applied (``broker/action_catalog.yaml`` read as data);
5. the action item and an ``audit_log`` row are inserted in one transaction;
6. the answer is 201 JSON with the same fields as the product, and a ``Location``.

The database work runs in Starlette's thread pool (``run_in_threadpool``), one hop and one
connection per request, as a plain Starlette app would do it. Nothing of the product's
request path (Connexion, handlers, ``broker`` domain functions) is used.

    python -m bench.reference --port 8301 --database-url sqlite:///... \
        --public-base-url https://broker.example.test
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import re
import secrets
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import yaml
from rfc3986_validator import validate_rfc3986
from sqlalchemy import Engine, insert, or_, select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: import this tree's broker
    sys.path.insert(0, str(ROOT))

from broker.db import (  # noqa: E402
    action_items,
    api_keys,
    audit_log,
    enterprises,
    make_engine,
    provider_callbacks,
    providers,
)

SPEC = ROOT / "openapi.yaml"
CATALOG = ROOT / "broker" / "action_catalog.yaml"
DEFAULT_LIFETIME = 86400
DEFAULT_PORTS = {"http": 80, "https": 443}
# The names the broker adds when it sends the admin back (compared case-insensitively).
RESERVED = frozenset(
    {"status", "actiontype", "actionitemid", "state", "errorcode", "resultcode", "error"}
)
_KEY = re.compile(r"^ctt_sk_[A-Za-z0-9_-]{43}$")
_ESCAPE = re.compile(r"%(?:0[0-9a-f]|1[0-9a-f]|7f|2[ef]|5c|40|3a|3f|23|25|[89a-f][0-9a-f])", re.I)
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_last_id = [0]


def new_id(prefix: str, when: datetime) -> str:
    """A sortable id like the product's: 48 bits of milliseconds, 80 random bits, base32."""
    millis = int(when.timestamp() * 1000) & ((1 << 48) - 1)
    number = (millis << 80) | secrets.randbits(80)
    with _id_lock:
        if number <= _last_id[0] and (_last_id[0] >> 80) == millis:
            number = _last_id[0] + 1
        _last_id[0] = number
    chars = []
    for _ in range(26):
        number, digit = divmod(number, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def request_schema(spec_path: Path = SPEC) -> dict[str, Any]:
    """``ActionItemRequest`` with every local ``$ref`` inlined."""
    spec = yaml.safe_load(spec_path.read_text("utf-8"))

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/"):
                target: Any = spec
                for part in ref[2:].split("/"):
                    target = target[part]
                return resolve(target)
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    schema: dict[str, Any] = resolve(spec["components"]["schemas"]["ActionItemRequest"])
    return schema


def load_catalog_rows(path: Path = CATALOG) -> dict[str, dict[str, Any]]:
    """The action catalog as data: action type -> its row."""
    rows = yaml.safe_load(path.read_text("utf-8"))["actions"]
    return {row["actionType"]: row for row in rows}


class Refused(Exception):
    """A request the reference refuses: an HTTP status and a code, as problem+json."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parts(raw: str, development: bool) -> tuple[tuple[str, str, int, str], str]:
    """(scheme, host, port, path) and the query of a callback URL; Refused if unsafe."""
    if len(raw) > 2048 or "\\" in raw or "#" in raw:
        raise Refused(400, "CALLBACK_URL_MALFORMED", "callback URL refused")
    if any(ord(ch) <= 0x20 or ord(ch) >= 0x7F for ch in raw):
        raise Refused(400, "CALLBACK_URL_FORBIDDEN_CHARACTERS", "callback URL refused")
    try:
        parts = urlsplit(raw)
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise Refused(400, "CALLBACK_URL_MALFORMED", "callback URL does not parse") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not raw[len(scheme) + 1 :].startswith("//") or not host:
        raise Refused(400, "CALLBACK_URL_MALFORMED", "callback URL is not absolute http(s)")
    if "@" in parts.netloc or "%" in parts.netloc or _ESCAPE.search(parts.path):
        raise Refused(400, "CALLBACK_URL_ENCODING_TRICK", "callback URL refused")
    if not validate_rfc3986(raw, rule="URI"):
        raise Refused(400, "CALLBACK_URL_MALFORMED", "callback URL is not RFC 3986")
    path = parts.path or "/"
    if "//" in path or any(segment in (".", "..") for segment in path.split("/")):
        raise Refused(400, "CALLBACK_URL_MALFORMED", "callback URL path has dot segments")
    if scheme == "http" and not (development and _loopback(host)):
        raise Refused(400, "CALLBACK_URL_INSECURE_HTTP", "callback URL must use https")
    names = {name.casefold() for name, _ in parse_qsl(parts.query.replace(";", "&"), True)}
    if names & RESERVED:
        raise Refused(400, "CALLBACK_URL_RESERVED_PARAMETER", "callback URL query reserved")
    return (scheme, host.lower(), port or DEFAULT_PORTS[scheme], path), parts.query


def checked_callback(raw: str, allowed: list[str], development: bool) -> str:
    """The normalised callback URL when it matches a registered one; Refused otherwise."""
    (scheme, host, port, path), query = _parts(raw, development)
    registered = {_parts(url, development)[0] for url in allowed}
    if (scheme, host, port, path) not in registered:
        raise Refused(400, "CALLBACK_URL_NOT_ALLOWED", "callback URL is not registered")
    shown_host = f"[{host}]" if ":" in host else host
    shown_port = "" if DEFAULT_PORTS[scheme] == port else f":{port}"
    return f"{scheme}://{shown_host}{shown_port}{path}{'?' + query if query else ''}"


class Reference:
    """The endpoint's work, with its engine, schema and catalog loaded once."""

    def __init__(self, engine: Engine, public_base_url: str) -> None:
        self.engine = engine
        self.public_base_url = public_base_url.rstrip("/")
        schema = request_schema()
        self.validator = jsonschema.Draft4Validator(schema)
        self.catalog = load_catalog_rows()

    def create(self, api_key: str, raw_body: bytes) -> dict[str, Any]:
        """Authenticate, validate, check, insert; the ``ActionItemCreated`` document."""
        now = datetime.now(UTC)
        if not _KEY.match(api_key):
            raise Refused(401, "UNAUTHENTICATED", "API key is missing or malformed")
        key_hash = hashlib.sha256(api_key.encode("utf-8")).hexdigest()
        with self.engine.begin() as connection:
            provider = connection.execute(
                select(providers.c.id, providers.c.development)
                .select_from(api_keys.join(providers, api_keys.c.provider_id == providers.c.id))
                .where(
                    api_keys.c.key_hash == key_hash,
                    api_keys.c.revoked_at.is_(None),
                    or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
                )
            ).first()
            if provider is None:
                raise Refused(401, "UNAUTHENTICATED", "API key is unknown, expired or revoked")
            provider_id, development = provider
            try:
                body = json.loads(raw_body)
            except ValueError:
                raise Refused(400, "INVALID_REQUEST", "the body is not JSON") from None
            error = next(iter(self.validator.iter_errors(body)), None)
            if error is not None:
                raise Refused(400, "INVALID_REQUEST", error.message)
            spec = self.catalog.get(body["actionType"])
            if spec is None:
                raise Refused(400, "UNKNOWN_ACTION_TYPE", "unknown action type")
            if body.get("teamsAppPackageIds") is not None or spec["actionType"] == (
                "DEPLOY_TEAMS_APPS"
            ):
                raise Refused(400, "INVALID_REQUEST", "Teams app deployment is not benchmarked")
            allowed = list(
                connection.execute(
                    select(provider_callbacks.c.url).where(
                        provider_callbacks.c.provider_id == provider_id
                    )
                ).scalars()
            )
            callback = checked_callback(body["callbackUrl"], allowed, development)
            enterprise = connection.execute(
                select(enterprises.c.id, enterprises.c.tenant_id).where(
                    enterprises.c.id == body["enterpriseId"],
                    enterprises.c.provider_id == provider_id,
                )
            ).first()
            if enterprise is None:
                raise Refused(404, "ENTERPRISE_NOT_FOUND", "no such enterprise")
            registered = enterprise.tenant_id is not None
            reregister = bool(body.get("reregister", False))
            if spec["actionType"] != "REGISTRATION" and not registered:
                raise Refused(409, "ENTERPRISE_NOT_REGISTERED", "complete REGISTRATION first")
            if spec["actionType"] == "REGISTRATION" and registered and not reregister:
                raise Refused(409, "ENTERPRISE_ALREADY_REGISTERED", "already registered")

            lifetime = int(body.get("expiresInSeconds", DEFAULT_LIFETIME))
            handle = secrets.token_urlsafe(32)
            item_id = new_id("act", now)
            expires_at = now + timedelta(seconds=lifetime)
            connection.execute(
                insert(action_items).values(
                    id=item_id,
                    handle_hash=hashlib.sha256(handle.encode("utf-8")).hexdigest(),
                    provider_id=provider_id,
                    enterprise_id=enterprise.id,
                    action_type=spec["actionType"],
                    consent_type=spec["consentType"],
                    callback_url=callback,
                    provider_state=body.get("state"),
                    result_delivery=body.get("resultDelivery", "redirect"),
                    reregister=reregister,
                    teams_app_package_ids=None,
                    status="created",
                    created_at=now,
                    expires_at=expires_at,
                    updated_at=now,
                )
            )
            connection.execute(
                insert(audit_log).values(
                    id=new_id("aud", now),
                    provider_id=provider_id,
                    actor="provider",
                    action="actionItem.created",
                    enterprise_id=enterprise.id,
                    action_item_id=item_id,
                    details=json.dumps(
                        {"actionType": spec["actionType"], "expiresInSeconds": lifetime}
                    ),
                    created_at=now,
                )
            )
        return {
            "actionItemId": item_id,
            "url": f"{self.public_base_url}/actions/{handle}",
            "actionType": spec["actionType"],
            "consentType": spec["consentType"],
            "mandatory": bool(spec["mandatory"]),
            "enterpriseId": enterprise.id,
            "status": "created",
            "expiresAt": expires_at.isoformat().replace("+00:00", "Z"),
        }


def create_app(database_url: str, public_base_url: str) -> Starlette:
    """The Starlette app: one route, plus ``/health`` for the runner's readiness check."""
    reference = Reference(make_engine(database_url), public_base_url)

    async def get_action_item_url(request: Request) -> Response:
        scheme, _, api_key = request.headers.get("authorization", "").partition(" ")
        body = await request.body()
        try:
            document = await run_in_threadpool(
                reference.create, api_key if scheme.lower() == "bearer" else "", body
            )
        except Refused as refused:
            problem = {"status": refused.status, "code": refused.code, "detail": refused.detail}
            return JSONResponse(problem, refused.status, media_type="application/problem+json")
        return JSONResponse(
            document, 201, headers={"Location": f"/actionItems/{document['actionItemId']}"}
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/enterprise/getActionItemUrl", get_action_item_url, methods=["POST"]),
            Route("/health", health),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Serve the reference with uvicorn, one worker, on loopback."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--public-base-url", default="https://broker.example.test")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.database_url, args.public_base_url),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
