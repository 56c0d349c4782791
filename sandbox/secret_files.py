"""Throwaway secrets for running the broker in production mode without a Microsoft tenant.

The sandbox's app credentials (which only the emulator accepts) and fresh state, event
and result-signing keys, written as files the way an orchestrator mounts them. The
production end-to-end test and the benchmark start ``ctt-broker serve`` with these.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.catalog import load_catalog
from broker.credentials import sandbox_app_credentials


def write_secret_files(folder: Path) -> dict[str, str]:
    """Write every secret production mode requires into ``folder`` (0700, files 0600).

    Returns the ``CTT_*`` settings that point at them.
    """
    folder.mkdir(mode=0o700)
    apps = {
        app: {"clientId": credential.client_id, "clientSecret": credential.client_secret}
        for app, credential in sandbox_app_credentials(load_catalog()).items()
    }
    (folder / "apps.json").write_text(json.dumps(apps))

    def key() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")

    (folder / "state.keys").write_text(f"s1:{key()}\n")
    (folder / "event.keys").write_text(f"e1:{key()}\n")
    result_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (folder / "result.pem").write_bytes(result_key)
    for path in folder.iterdir():
        path.chmod(0o600)
    return {
        "CTT_APP_CREDENTIALS": f"@{folder / 'apps.json'}",
        "CTT_STATE_KEYS": f"@{folder / 'state.keys'}",
        "CTT_EVENT_KEYS": f"@{folder / 'event.keys'}",
        "CTT_RESULT_SIGNING_KEY_FILE": str(folder / "result.pem"),
    }
