"""The outbound trust store: built once per bundle, rebuilt when the bundle changes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from broker.tls import trusted_context
from tests.certificates import issue_certificate


def new_ca() -> tuple[bytes, bytes]:
    """A fresh CA: its PEM (for a bundle file) and its DER (as the context lists it)."""
    ca_pem, _, _ = issue_certificate(["hooks.partner.example"])
    return ca_pem, ssl.PEM_cert_to_DER_cert(ca_pem.decode("ascii"))


def trusts(context: ssl.SSLContext, der: bytes) -> bool:
    return der in context.get_ca_certs(binary_form=True)


def test_every_client_shares_one_verifying_context_per_bundle() -> None:
    public = trusted_context()
    assert trusted_context() is public
    assert trusted_context("") is public
    assert public.verify_mode == ssl.CERT_REQUIRED and public.check_hostname
    assert public.cert_store_stats()["x509_ca"] > 50  # certifi's public CAs


def test_an_extra_bundle_is_trusted_besides_the_public_cas(tmp_path: Path) -> None:
    pem, der = new_ca()
    bundle = tmp_path / "extra.pem"
    bundle.write_bytes(pem)
    context = trusted_context(str(bundle))
    assert context is not trusted_context()
    assert trusts(context, der) and not trusts(trusted_context(), der)
    public_cas = trusted_context().cert_store_stats()["x509_ca"]
    assert context.cert_store_stats()["x509_ca"] == public_cas + 1
    assert trusted_context(str(bundle)) is context


def test_a_replaced_bundle_is_read_again_not_served_from_the_cache(tmp_path: Path) -> None:
    (old_pem, old_der), (new_pem, new_der) = new_ca(), new_ca()
    bundle = tmp_path / "extra.pem"
    bundle.write_bytes(old_pem)
    old = trusted_context(str(bundle))
    bundle.write_bytes(new_pem)  # maybe the same size, in the same mtime tick: ctime moves
    new = trusted_context(str(bundle))
    assert new is not old
    assert trusts(new, new_der) and not trusts(new, old_der)


def test_a_missing_bundle_raises_every_time(tmp_path: Path) -> None:
    for _ in range(2):
        with pytest.raises(OSError):
            trusted_context(str(tmp_path / "absent.pem"))
