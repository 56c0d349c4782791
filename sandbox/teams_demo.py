"""The sandbox provider's demo Teams app: its manifest, icons and zip, generated.

Generated rather than committed so the icons are exactly the sizes Teams asks
for (192x192 colour, 32x32 outline) and a version bump is one argument. The
tests build their good and hostile packages from the same pieces.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

DEMO_APP_ID = "5a1e6c8d-3b2f-4e7a-9c0d-1e2f3a4b5c6d"
DEMO_BOT_ID = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"
MANIFEST_VERSION = "1.17"
SCHEMA = "https://developer.microsoft.com/json-schemas/teams/v1.17/MicrosoftTeams.schema.json"


def png(width: int, height: int, rgba: tuple[int, int, int, int] = (98, 100, 167, 255)) -> bytes:
    """A solid-colour RGBA PNG of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgba) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def demo_manifest(
    version: str = "1.0.0", app_id: str = DEMO_APP_ID, name: str = "Acme Phone"
) -> dict[str, Any]:
    """A minimal publishable manifest (a bot), in the 1.17 schema."""
    return {
        "$schema": SCHEMA,
        "manifestVersion": MANIFEST_VERSION,
        "version": version,
        "id": app_id,
        "developer": {
            "name": "Acme Telecom",
            "websiteUrl": "https://www.example.com",
            "privacyUrl": "https://www.example.com/privacy",
            "termsOfUseUrl": "https://www.example.com/terms",
        },
        "name": {"short": name, "full": f"{name} for Microsoft Teams"},
        "description": {
            "short": "Call and text from Teams with your Acme number.",
            "full": "Acme Phone brings your Acme Telecom number, calls and SMS into Teams.",
        },
        "icons": {"color": "color.png", "outline": "outline.png"},
        "accentColor": "#6264A7",
        "bots": [{"botId": DEMO_BOT_ID, "scopes": ["personal"]}],
        "validDomains": ["phone.example.com", "*.acme.example.com"],
    }


def build_package(
    manifest: Mapping[str, Any] | bytes | None = None,
    *,
    files: Mapping[str, bytes] | None = None,
    color: bytes | None = None,
    outline: bytes | None = None,
) -> bytes:
    """A zip with ``manifest.json`` and the two icons; ``files`` adds or replaces entries."""
    if manifest is None:
        manifest = demo_manifest()
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest, indent=2).encode()
    entries: dict[str, bytes] = {
        "manifest.json": raw,
        "color.png": png(192, 192) if color is None else color,
        "outline.png": png(32, 32, (255, 255, 255, 255)) if outline is None else outline,
    }
    entries.update(files or {})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def demo_package(version: str = "1.0.0") -> bytes:
    """The sandbox provider's demo app package at ``version``."""
    return build_package(demo_manifest(version))
