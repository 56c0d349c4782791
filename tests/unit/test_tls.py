"""The outbound trust store: built once per bundle, rebuilt when the bundle changes."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.tls import trusted_context


def ca_pem(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def subjects(context: ssl.SSLContext) -> set[str]:
    names: set[str] = set()
    for cert in context.get_ca_certs():
        for rdn in cert["subject"]:
            names.update(str(pair[1]) for pair in rdn)
    return names


def test_every_client_shares_one_verifying_context_per_bundle() -> None:
    public = trusted_context()
    assert trusted_context() is public
    assert public.verify_mode == ssl.CERT_REQUIRED and public.check_hostname
    assert public.cert_store_stats()["x509_ca"] > 50  # certifi's public CAs


def test_an_extra_bundle_is_trusted_besides_the_public_cas(tmp_path: Path) -> None:
    bundle = tmp_path / "extra.pem"
    bundle.write_bytes(ca_pem("Private Root One"))
    context = trusted_context(str(bundle))
    assert context is not trusted_context()
    assert "Private Root One" in subjects(context)
    assert "Private Root One" not in subjects(trusted_context())
    assert trusted_context(str(bundle)) is context


def test_a_replaced_bundle_is_read_again_not_served_from_the_cache(tmp_path: Path) -> None:
    bundle = tmp_path / "extra.pem"
    bundle.write_bytes(ca_pem("Old Root"))
    old = trusted_context(str(bundle))
    bundle.write_bytes(ca_pem("New Root, a longer name"))
    new = trusted_context(str(bundle))
    assert new is not old
    assert "New Root, a longer name" in subjects(new)
    assert "Old Root" not in subjects(new)


def test_a_missing_bundle_raises_every_time(tmp_path: Path) -> None:
    for _ in range(2):
        with pytest.raises(OSError):
            trusted_context(str(tmp_path / "absent.pem"))
