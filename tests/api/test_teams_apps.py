"""Teams app packages over HTTP: upload, list, read, delete, and every refusal.

Each refusal test names the attack or mistake it stops; the package is built
from the sandbox's demo app with one thing changed.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import errors
from broker.teams_packages import check_package, png_dimensions, version_key
from sandbox.teams_demo import DEMO_APP_ID, build_package, demo_manifest, demo_package, png
from tests.conftest import ProviderAccount

ZIP = {"Content-Type": "application/zip"}


def upload(client: Any, provider: ProviderAccount, content: bytes) -> Any:
    return client.post("/teamsApps/packages", content=content, headers={**provider.headers, **ZIP})


def defect_codes(response: Any) -> list[str]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "TEAMS_APP_PACKAGE_INVALID"
    assert response.headers["content-type"].startswith("application/problem+json")
    return [d["code"] for d in body["defects"]]


def raw_zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            archive.writestr(info, data)
    return buffer.getvalue()


def good_entries(manifest: dict[str, Any] | None = None) -> list[tuple[str, bytes]]:
    return [
        ("manifest.json", json.dumps(manifest or demo_manifest()).encode()),
        ("color.png", png(192, 192)),
        ("outline.png", png(32, 32)),
    ]


# -- the happy path -----------------------------------------------------------------


def test_upload_stores_manifest_id_version_and_digest(
    client: Any, provider: ProviderAccount
) -> None:
    content = demo_package("1.0.0")
    response = upload(client, provider, content)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["manifestId"] == DEMO_APP_ID
    assert body["version"] == "1.0.0" and body["current"] is True
    assert body["name"] == "Acme Phone" and body["manifestVersion"] == "1.17"
    import hashlib

    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["sizeBytes"] == len(content)
    assert response.headers["location"] == f"/teamsApps/packages/{body['packageId']}"
    read = client.get(response.headers["location"], headers=provider.headers)
    assert read.status_code == 200 and read.json() == body


def test_a_new_version_keeps_the_old_one_listed_and_becomes_current(
    client: Any, provider: ProviderAccount
) -> None:
    first = upload(client, provider, demo_package("1.0.0")).json()
    second = upload(client, provider, demo_package("1.10.0")).json()
    third = upload(client, provider, demo_package("1.9.0")).json()
    listed = client.get("/teamsApps/packages", headers=provider.headers).json()
    assert [p["packageId"] for p in listed["items"]] == [
        first["packageId"],
        second["packageId"],
        third["packageId"],
    ]
    # Semver precedence, not upload order or string order: 1.10.0 > 1.9.0.
    assert [p["current"] for p in listed["items"]] == [False, True, False]
    assert listed["nextCursor"] is None


def test_listing_pages_with_a_cursor(client: Any, provider: ProviderAccount) -> None:
    for minor in range(3):
        assert upload(client, provider, demo_package(f"1.{minor}.0")).status_code == 201
    page = client.get("/teamsApps/packages?limit=2", headers=provider.headers).json()
    assert len(page["items"]) == 2 and page["nextCursor"]
    rest = client.get(
        f"/teamsApps/packages?limit=2&cursor={page['nextCursor']}", headers=provider.headers
    ).json()
    assert [p["version"] for p in rest["items"]] == ["1.2.0"] and rest["nextCursor"] is None


def test_delete_forgets_one_version(client: Any, provider: ProviderAccount) -> None:
    first = upload(client, provider, demo_package("1.0.0")).json()
    upload(client, provider, demo_package("1.1.0"))
    path = f"/teamsApps/packages/{first['packageId']}"
    assert client.delete(path, headers=provider.headers).status_code == 204
    assert client.get(path, headers=provider.headers).json()["code"] == (
        "TEAMS_APP_PACKAGE_NOT_FOUND"
    )
    assert client.delete(path, headers=provider.headers).status_code == 404
    listed = client.get("/teamsApps/packages", headers=provider.headers).json()["items"]
    assert [p["version"] for p in listed] == ["1.1.0"]


# -- conflicts and isolation --------------------------------------------------------


def test_the_same_version_uploaded_twice_is_refused_with_its_code(
    client: Any, provider: ProviderAccount
) -> None:
    """A provider re-uploading 1.0.0 with other content must not silently fork one version."""
    assert upload(client, provider, demo_package("1.0.0")).status_code == 201
    changed = build_package(demo_manifest("1.0.0", name="Acme Phone 2"))
    response = upload(client, provider, changed)
    assert response.status_code == 409
    assert response.json()["code"] == "TEAMS_APP_PACKAGE_DUPLICATE"


def test_another_providers_manifest_id_is_refused(
    client: Any, provider: ProviderAccount, other_provider: ProviderAccount
) -> None:
    """Globex uploads Acme's app id at a higher version to replace Acme's app in shared tenants."""
    assert upload(client, provider, demo_package("1.0.0")).status_code == 201
    response = upload(client, other_provider, demo_package("9.0.0"))
    assert response.status_code == 409
    assert response.json()["code"] == "TEAMS_APP_ID_TAKEN"


def test_another_providers_package_is_not_found(
    client: Any, provider: ProviderAccount, other_provider: ProviderAccount
) -> None:
    """Globex guesses Acme's package id: reading or deleting it answers as if it did not exist."""
    package = upload(client, provider, demo_package()).json()
    path = f"/teamsApps/packages/{package['packageId']}"
    assert client.get(path, headers=other_provider.headers).json()["code"] == (
        "TEAMS_APP_PACKAGE_NOT_FOUND"
    )
    assert client.delete(path, headers=other_provider.headers).status_code == 404
    assert client.get("/teamsApps/packages", headers=other_provider.headers).json()["items"] == []
    assert client.get(path, headers=provider.headers).status_code == 200


def test_a_package_sent_as_json_is_refused_with_415(client: Any, provider: ProviderAccount) -> None:
    response = client.post(
        "/teamsApps/packages",
        content=b"{}",
        headers={**provider.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 415
    assert response.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_packages_need_an_api_key(client: Any) -> None:
    response = client.post("/teamsApps/packages", content=demo_package(), headers=ZIP)
    assert response.status_code == 401


# -- zip safety ---------------------------------------------------------------------


def test_a_non_zip_is_refused(client: Any, provider: ProviderAccount) -> None:
    """A provider uploads a PDF by mistake, or random bytes: no 500, a coded defect."""
    assert defect_codes(upload(client, provider, b"%PDF-1.7 not a zip")) == ["NOT_A_ZIP"]


def test_an_oversized_package_is_refused_before_it_is_read(
    client: Any, provider: ProviderAccount
) -> None:
    """A 2 MiB upload is cut off at the edge with its own code, not parsed."""
    response = upload(client, provider, b"PK" + b"\0" * (2 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["code"] == "TEAMS_APP_PACKAGE_TOO_LARGE"


def test_an_oversized_package_is_refused_by_the_domain_check_too() -> None:
    with pytest.raises(errors.TeamsAppPackageTooLarge):
        check_package(b"x" * 5000, 4096)


def test_a_zip_bomb_by_ratio_is_refused(client: Any, provider: ProviderAccount) -> None:
    """900 KiB of zeros compress to about 1 KiB: a small upload that would expand a thousandfold."""
    entries = [*good_entries(), ("padding.bin", b"\x00" * (900 * 1024))]
    assert "ZIP_BOMB" in defect_codes(upload(client, provider, raw_zip(entries)))


def test_a_zip_bomb_by_declared_total_size_is_refused(
    client: Any, provider: ProviderAccount
) -> None:
    """Many stored entries whose sizes add up past the package limit."""
    chunk = bytes(range(256)) * 4 * 1000  # ~1 MB, incompressible enough for ZIP_STORED
    entries = good_entries() + [(f"f{i}.bin", chunk[: 1000 * 1000]) for i in range(5)]
    content = raw_zip(entries, zipfile.ZIP_STORED)
    codes = check_package_codes(content)
    assert "ZIP_BOMB" in codes


def test_a_zip_that_lies_about_its_uncompressed_size_is_refused() -> None:
    """Both headers say 10 bytes; the entry inflates to far more. Reading stops at the
    declared size and the entry fails its checksum: refused, never inflated."""
    content = bytearray(raw_zip([*good_entries(), ("liar.txt", b"A" * 5000)]))
    name = b"liar.txt"
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := content.find(signature, start)) != -1:
            name_offset = start + (30 if signature == b"PK\x03\x04" else 46)
            if content[name_offset : name_offset + len(name)] == name:
                content[start + offset : start + offset + 4] = struct.pack("<I", 10)
            start += 4
    assert check_package_codes(bytes(content)) == ["NOT_A_ZIP"]


@pytest.mark.parametrize(
    "name",
    ["../evil.png", "/etc/passwd", "icons/../../x.png", "C:/Windows/x.png", "a\\..\\b.png", "./x"],
)
def test_path_traversal_inside_the_zip_is_refused(
    client: Any, provider: ProviderAccount, name: str
) -> None:
    """A crafted entry name tries to escape wherever the package might be unpacked."""
    entries = [*good_entries(), (name, b"x")]
    assert "UNSAFE_PATH" in defect_codes(upload(client, provider, raw_zip(entries)))


def test_duplicate_entries_inside_the_zip_are_refused(
    client: Any, provider: ProviderAccount
) -> None:
    """Two manifest.json entries: we would check one and Microsoft might read the other."""
    other = json.dumps(demo_manifest("2.0.0")).encode()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        content = raw_zip([*good_entries(), ("MANIFEST.json", other), ("manifest.json", other)])
    assert "DUPLICATE_ENTRY" in defect_codes(upload(client, provider, content))


def test_too_many_entries_are_refused() -> None:
    entries = good_entries() + [(f"f{i}.txt", b"x") for i in range(40)]
    assert check_package_codes(raw_zip(entries)) == ["TOO_MANY_ENTRIES"]


# -- the manifest -------------------------------------------------------------------


def test_a_manifest_that_is_not_utf8_is_refused(client: Any, provider: ProviderAccount) -> None:
    text = json.dumps(demo_manifest()).replace("Acme Phone", "Acmé Phone")
    content = build_package(text.encode("latin-1"))
    assert defect_codes(upload(client, provider, content)) == ["MANIFEST_NOT_UTF8"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'{"id": NaN}', b"\xef\xbb\xbf"])
def test_a_manifest_that_is_not_a_json_object_is_refused(
    client: Any, provider: ProviderAccount, raw: bytes
) -> None:
    assert defect_codes(upload(client, provider, build_package(raw))) == ["MANIFEST_NOT_JSON"]


def test_a_deeply_nested_manifest_is_refused_not_a_crash() -> None:
    """Nesting past Python's recursion limit must be a coded defect, not a 500."""
    deep = b"[" * 50000 + b"]" * 50000
    entries = [("manifest.json", deep), ("color.png", png(192, 192)), ("outline.png", png(32, 32))]
    assert check_package_codes(raw_zip(entries, zipfile.ZIP_STORED)) == ["MANIFEST_NOT_JSON"]


def test_a_package_without_a_manifest_is_refused() -> None:
    content = raw_zip([("color.png", png(192, 192))])
    assert check_package_codes(content) == ["MANIFEST_MISSING"]


def test_every_manifest_defect_is_named_at_once(client: Any, provider: ProviderAccount) -> None:
    manifest = demo_manifest()
    manifest.update(
        {
            "manifestVersion": "1.18",
            "id": "not-a-guid",
            "version": "v1.0",
            "name": {"short": "x" * 31, "full": "y" * 101},
            "description": {"short": "s" * 81, "full": "f" * 4001},
            "validDomains": ["https://phone.example.com", "ok.example.com", "bad domain"],
            "bots": [{"botId": "28:not-a-guid"}],
        }
    )
    response = upload(client, provider, build_package(manifest))
    codes = defect_codes(response)
    assert codes == [
        "MANIFEST_VERSION_UNSUPPORTED",
        "ID_NOT_GUID",
        "VERSION_NOT_SEMVER",
        "NAME_SHORT_INVALID",
        "NAME_FULL_INVALID",
        "DESCRIPTION_SHORT_INVALID",
        "DESCRIPTION_FULL_INVALID",
        "VALID_DOMAIN_INVALID",
        "VALID_DOMAIN_INVALID",
        "BOT_ID_INVALID",
    ]
    fields = [d.get("field") for d in response.json()["defects"]]
    assert "validDomains[0]" in fields and "validDomains[2]" in fields


def test_the_limits_are_microsofts_exactly() -> None:
    """30, 100, 80 and 4000 characters pass; one more fails."""
    manifest = demo_manifest()
    manifest["name"] = {"short": "x" * 30, "full": "y" * 100}
    manifest["description"] = {"short": "s" * 80, "full": "f" * 4000}
    assert check_package(build_package(manifest), 1 << 20).name == "x" * 30


def test_a_schema_url_of_another_version_is_refused() -> None:
    manifest = demo_manifest()
    manifest["$schema"] = manifest["$schema"].replace("v1.17", "v1.16")
    assert check_package_codes(build_package(manifest)) == ["SCHEMA_MISMATCH"]


@pytest.mark.parametrize(
    ("color", "outline", "expected"),
    [
        (png(128, 128), None, ["ICON_WRONG_SIZE"]),
        (None, png(192, 192), ["ICON_WRONG_SIZE"]),
        (b"GIF89a not a png", None, ["ICON_NOT_PNG"]),
        (png(192, 192), png(32, 33), ["ICON_WRONG_SIZE"]),
    ],
)
def test_icons_must_be_pngs_of_the_sizes_teams_asks_for(
    color: bytes | None, outline: bytes | None, expected: list[str]
) -> None:
    assert check_package_codes(build_package(color=color, outline=outline)) == expected


def test_an_icon_missing_from_the_package_is_refused() -> None:
    manifest = demo_manifest()
    manifest["icons"] = {"color": "color.png", "outline": "missing.png"}
    assert check_package_codes(build_package(manifest)) == ["ICON_MISSING"]


@given(st.integers(1, 4096), st.integers(1, 4096))
@settings(max_examples=50, deadline=None)
def test_png_dimensions_reads_any_size_from_the_header(width: int, height: int) -> None:
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    body = b"IHDR" + header
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))
    assert png_dimensions(data) == (width, height)


@given(st.binary(max_size=64))
def test_png_dimensions_never_fails_on_junk(data: bytes) -> None:
    result = png_dimensions(data)
    assert result is None or data.startswith(b"\x89PNG")


@given(st.binary(max_size=2048))
@settings(max_examples=200, deadline=None)
def test_any_bytes_give_a_coded_refusal_never_a_crash(data: bytes) -> None:
    with pytest.raises(errors.TeamsAppPackageInvalid) as refused:
        check_package(data, 1 << 20)
    assert refused.value.extra["defects"]


def test_semver_precedence() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-rc.1",
        "1.0.0",
        "1.2.0",
        "1.10.0",
    ]
    assert sorted(reversed(ordered), key=version_key) == ordered


def check_package_codes(content: bytes) -> list[str]:
    with pytest.raises(errors.TeamsAppPackageInvalid) as refused:
        check_package(content, 10 * 1024 * 1024)
    return [d["code"] for d in refused.value.extra["defects"]]
