"""Tokens inside event payloads: sealed at rest, opened only to deliver, then erased.

A provider that asked for tokens in its webhooks (``set-webhook
--include-tokens``) gets the MSAL result (access, ID and, if shared, refresh
token) in sign-in events. Those fields never reach the ``events.payload``
column: :func:`seal_event_tokens` moves them into ``events.sealed_tokens``,
AES-256-GCM encrypted under the active event key, bound to the event id.
:func:`open_event_body` puts them back into the body of a webhook just before
it is signed and sent; the events API reads only ``payload``. Once the event is
delivered or its retry window ends, :func:`erase_sealed_tokens` clears them.

Keys rotate like the state keys: ``CTT_EVENT_KEYS`` is
``kid:base64url-secret,...`` (the first seals, every one opens), required in
production; the sandbox generates one into its data folder.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, update

from broker.db import events
from broker.runtime import Runtime
from broker.tokens import RandomBytes, b64url

# Event data fields that carry tokens.
TOKEN_FIELDS = ("authenticationResult",)
MIN_SECRET_BYTES = 32
log = logging.getLogger("ctt_broker.event_sealing")

_FORMAT = "v1"
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NONCE_BYTES = 12


@dataclass(frozen=True)
class EventKeyring:
    """AES-GCM keys for event tokens: ``active_kid`` seals, every key opens."""

    keys: Mapping[str, bytes] = field(repr=False)
    active_kid: str

    def __post_init__(self) -> None:
        if self.active_kid not in self.keys:
            raise ValueError(f"active event key id {self.active_kid!r} is not in the keyring")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    @classmethod
    def from_setting(cls, text: str) -> EventKeyring:
        """Parse ``kid1:base64url-secret,kid2:...``; the first key is active.

        Raises ``ValueError`` naming the faulty entry by position and key id.
        """
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(text.split(","), start=1):
            kid, sep, encoded = (part.strip() for part in entry.strip().partition(":"))
            if not sep or not _KID.fullmatch(kid) or not encoded:
                raise ValueError(f"event key #{position} must be kid:base64url-secret")
            try:
                secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError):
                raise ValueError(f"event key {kid!r} is not base64url") from None
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(f"event key {kid!r} must be at least {MIN_SECRET_BYTES} bytes")
            if kid in keys:
                raise ValueError(f"event key id {kid!r} appears twice")
            keys[kid] = _derive(secret)
        if not keys:
            raise ValueError("the event keyring setting is empty")
        return cls(keys=keys, active_kid=next(iter(keys)))

    @classmethod
    def generate_setting(cls, random_bytes: RandomBytes) -> str:
        """A new one-key setting (the sandbox's default)."""
        return f"{b64url(random_bytes(6))}:{b64url(random_bytes(MIN_SECRET_BYTES))}"

    def seal(self, plaintext: bytes, bound_to: str, random_bytes: RandomBytes) -> str:
        """Encrypt ``plaintext`` for the row ``bound_to`` (its id is the associated data)."""
        nonce = random_bytes(_NONCE_BYTES)
        sealed = AESGCM(self.keys[self.active_kid]).encrypt(nonce, plaintext, bound_to.encode())
        return f"{_FORMAT}.{self.active_kid}.{b64url(nonce + sealed)}"

    def open(self, text: str, bound_to: str) -> bytes:
        """Decrypt what :meth:`seal` made for ``bound_to``; ``ValueError`` otherwise."""
        version, _, rest = text.partition(".")
        kid, _, encoded = rest.partition(".")
        if version != _FORMAT or kid not in self.keys:
            raise ValueError("sealed tokens use an unknown format or key")
        blob = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        try:
            return AESGCM(self.keys[kid]).decrypt(
                blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], bound_to.encode()
            )
        except InvalidTag:
            raise ValueError("sealed tokens do not open with this keyring") from None


def seal_event_tokens(
    runtime: Runtime, event_id: str, data: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """Split ``data`` into what may rest in clear and the sealed token fields (or None)."""
    tokens = {key: data[key] for key in TOKEN_FIELDS if key in data}
    clear = {key: value for key, value in data.items() if key not in tokens}
    if not tokens:
        return clear, None
    plaintext = json.dumps(tokens).encode("utf-8")
    return clear, event_keyring(runtime).seal(plaintext, event_id, runtime.random_bytes)


def event_document(payload: str) -> dict[str, Any]:
    """A stored event as the API and webhooks show it.

    Events are identified by ``eventId`` like every other resource's typed id;
    documents stored before that rename carry ``id``, renamed here on the way out.
    """
    document: dict[str, Any] = json.loads(payload)
    if "id" in document and "eventId" not in document:
        document = {"eventId": document.pop("id"), **document}
    return document


def open_event_body(runtime: Runtime, payload: str, sealed: str | None) -> str:
    """The webhook body: the stored document, with its sealed token fields put back."""
    document = event_document(payload)
    if sealed is None:
        return json.dumps(document)
    try:
        tokens = json.loads(event_keyring(runtime).open(sealed, document["eventId"]))
    except ValueError:
        # Its key was retired from CTT_EVENT_KEYS (or the blob is damaged): the event
        # still goes out, without the tokens, rather than blocking the provider's queue.
        log.warning("event %s: sealed tokens do not open; sent without them", document["eventId"])
        return json.dumps(document)
    document["data"] = {**document["data"], **tokens}
    return json.dumps(document)


def erase_sealed_tokens(connection: Connection, event_ids: Sequence[str]) -> None:
    """Forget the tokens of these events (delivered, given up on, or never to be sent)."""
    if event_ids:
        connection.execute(
            update(events)
            .where(events.c.id.in_(list(event_ids)), events.c.sealed_tokens.is_not(None))
            .values(sealed_tokens=None)
        )


_cache: dict[tuple[str, Path], EventKeyring] = {}
_cache_lock = threading.Lock()


def event_keyring(runtime: Runtime) -> EventKeyring:
    """The keyring from ``CTT_EVENT_KEYS``, or the sandbox's generated one."""
    settings = runtime.settings
    cache_key = (settings.event_keys, settings.data_dir)
    with _cache_lock:
        keyring = _cache.get(cache_key)
        if keyring is None:
            text = settings.event_keys or _generated_setting(settings.data_dir, runtime)
            keyring = _cache[cache_key] = EventKeyring.from_setting(text)
        return keyring


def _generated_setting(data_dir: Path, runtime: Runtime) -> str:
    if runtime.settings.mode == "production":
        raise ValueError("CTT_EVENT_KEYS is required in production mode")
    path = data_dir / "event-keys"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written aside, then linked into place: workers starting together agree.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(EventKeyring.generate_setting(runtime.random_bytes))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text("utf-8").strip()


def _derive(secret: bytes) -> bytes:
    # The setting's secret may be any length >= 32 bytes; AES-256 wants exactly 32.
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"ctt-broker event tokens"
    ).derive(secret)
