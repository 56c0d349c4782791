"""``ctt-broker microsoft check`` against the emulator, with one app configured wrong."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from io import StringIO
from pathlib import Path

from broker import cli
from broker.catalog import load_catalog
from broker.credentials import sandbox_app_credentials
from emulator import Emulator, create_emulator_app
from emulator.seed import CONTOSO_TENANT_ID
from sandbox.__main__ import ThreadServer
from sandbox.emulator_setup import emulator_config_for
from sandbox.launch import free_port


def test_check_reports_each_app_and_the_fix_for_the_wrong_one(tmp_path: Path) -> None:
    port = free_port()
    emulator_url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CTT_")},
        "CTT_MODE": "sandbox",
        "CTT_DATABASE_URL": f"sqlite:///{tmp_path / 'broker.sqlite3'}",
        "CTT_DATA_DIR": str(tmp_path / "data"),
        "CTT_LOGIN_TRANSPORT_URL": emulator_url,
    }
    catalog = load_catalog()
    config = emulator_config_for(
        catalog,
        "http://127.0.0.1:8080/oauth/callback",
        issuer_base_url="https://login.emulator.test",
    )
    config = replace(
        config, apps=tuple(replace(app, home_tenant_id=CONTOSO_TENANT_ID) for app in config.apps)
    )
    apps = {
        name: {
            "clientId": credential.client_id,
            "clientSecret": credential.client_secret,
            "homeTenantId": CONTOSO_TENANT_ID,
        }
        for name, credential in sandbox_app_credentials(catalog).items()
    }
    wrong = sorted(apps)[0]
    apps[wrong]["clientSecret"] = "the-secret-id-pasted-instead-of-its-value"
    (tmp_path / "apps.json").write_text(json.dumps(apps))
    env["CTT_APP_CREDENTIALS"] = f"@{tmp_path / 'apps.json'}"
    server = ThreadServer("emulator", create_emulator_app(Emulator(config)), port)
    server.start()
    try:
        out, err = StringIO(), StringIO()
        code = cli.main(["microsoft", "check"], env=env, out=out, err=err)
    finally:
        server.stop()
    report = out.getvalue()
    print(report)
    assert code == cli.EXIT_REFUSED, err.getvalue()
    lines = report.splitlines()
    failed = [line for line in lines if line.startswith("FAILED")]
    assert len(failed) == 1 and f"FAILED {wrong} " in failed[0] and "AADSTS7000215" in failed[0]
    assert any(line.strip().startswith("fix: Invalid client secret") for line in lines)
    assert sum(line.startswith("ok ") for line in lines) == len(apps) - 1
    assert "the-secret-id-pasted" not in report
    assert lines[-1] == f"{len(apps) - 1} of {len(apps)} apps ok"


def self_signed(folder: Path, name: str) -> tuple[Path, Path, str]:
    """An RSA key and a self-signed certificate, as `New-SelfSignedCertificate` would make."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = folder / f"{name}.key", folder / f"{name}.crt"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    cert_file.write_bytes(pem)
    return key_file, cert_file, pem.decode()


def test_certificate_credentials_are_checked_against_the_registered_certificate(
    tmp_path: Path,
) -> None:
    """One app signs its client assertion with the registered certificate's key (by file or by
    thumbprint); another with a key whose certificate was never uploaded: AADSTS700027."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CTT_")},
        "CTT_MODE": "sandbox",
        "CTT_DATABASE_URL": f"sqlite:///{tmp_path / 'broker.sqlite3'}",
        "CTT_DATA_DIR": str(tmp_path / "data"),
        "CTT_LOGIN_TRANSPORT_URL": f"http://127.0.0.1:{port}",
    }
    catalog = load_catalog()
    credentials = sandbox_app_credentials(catalog)
    by_file, by_thumbprint, unregistered = sorted(credentials)[:3]
    key, cert, registered_pem = self_signed(tmp_path, "registered")
    other_key, other_cert, _ = self_signed(tmp_path, "never-uploaded")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    thumbprint = x509.load_pem_x509_certificate(registered_pem.encode()).fingerprint(
        hashes.SHA1()  # noqa: S303 - the thumbprint the portal shows
    )
    config = emulator_config_for(
        catalog,
        "http://127.0.0.1:8080/oauth/callback",
        issuer_base_url="https://login.emulator.test",
    )
    config = replace(
        config,
        apps=tuple(
            replace(app, home_tenant_id=CONTOSO_TENANT_ID, certificates=(registered_pem,))
            for app in config.apps
        ),
    )
    apps: dict[str, dict[str, str]] = {
        name: {
            "clientId": credential.client_id,
            "clientSecret": credential.client_secret,
            "homeTenantId": CONTOSO_TENANT_ID,
        }
        for name, credential in credentials.items()
    }
    for name, extra in (
        (by_file, {"certificateKeyFile": str(key), "certificateFile": str(cert)}),
        (
            by_thumbprint,
            {"certificateKeyFile": str(key), "certificateThumbprint": thumbprint.hex()},
        ),
        (unregistered, {"certificateKeyFile": str(other_key), "certificateFile": str(other_cert)}),
    ):
        del apps[name]["clientSecret"]
        apps[name].update(extra)
    (tmp_path / "apps.json").write_text(json.dumps(apps))
    env["CTT_APP_CREDENTIALS"] = f"@{tmp_path / 'apps.json'}"
    server = ThreadServer("emulator", create_emulator_app(Emulator(config)), port)
    server.start()
    try:
        out = StringIO()
        code = cli.main(["microsoft", "check"], env=env, out=out, err=StringIO())
    finally:
        server.stop()
    lines = out.getvalue().splitlines()
    print("\n".join(lines))
    assert code == cli.EXIT_REFUSED
    assert any(line.startswith(f"ok     {by_file} ") for line in lines), lines
    assert any(line.startswith(f"ok     {by_thumbprint} ") for line in lines), lines
    failed = [line for line in lines if line.startswith("FAILED")]
    assert len(failed) == 1 and f" {unregistered} " in failed[0] and "AADSTS700027" in failed[0]
