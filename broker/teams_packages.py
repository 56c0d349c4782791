"""Teams app package checks: is an uploaded zip safe to open and publishable by Graph?

:func:`check_package` opens the zip defensively (sizes, ratios and names first, contents
second) and checks the manifest rules that matter when Microsoft Graph publishes the app;
every defect is reported at once. Pure functions: no storage, no network.

Facts from Microsoft's documentation (the Teams app manifest schema at
https://developer.microsoft.com/json-schemas/teams/v1.x/MicrosoftTeams.schema.json
and its reference pages under learn.microsoft.com/microsoft-365/extensibility/schema):

* ``manifestVersion`` is the schema version; 1.0 to 1.17 and 1.19 onwards are
  published (1.18 "is not available").
* ``id`` is a GUID; ``version`` follows semver (http://semver.org), at most 256 chars.
* ``name.short`` at most 30 characters (required), ``name.full`` at most 100.
* ``description.short`` at most 80 characters, ``description.full`` at most 4000.
* ``icons.color`` is a full colour 192x192 PNG, ``icons.outline`` a transparent
  32x32 PNG; both are relative paths to files inside the package.
* ``validDomains`` lists host names, optionally with a ``*.`` wildcard, without
  the ``https:`` scheme; ``bots[].botId`` is the bot's Microsoft app id (a GUID).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

from broker import errors
from broker.ids import is_guid

# Our own safety limits for opening a zip (Microsoft publishes no package limits we rely on).
MAX_ENTRIES = 32
MAX_UNCOMPRESSED_BYTES = 4 * 1024 * 1024
MAX_ENTRY_BYTES = 1024 * 1024
MAX_COMPRESSION_RATIO = 100
MAX_DEFECTS = 50

# Microsoft's manifest limits (see the module docstring for the source).
NAME_SHORT_MAX = 30
NAME_FULL_MAX = 100
DESCRIPTION_SHORT_MAX = 80
DESCRIPTION_FULL_MAX = 4000
VERSION_MAX = 256
COLOR_ICON_SIZE = (192, 192)
OUTLINE_ICON_SIZE = (32, 32)
SUPPORTED_MANIFEST_VERSIONS = tuple(f"1.{minor}" for minor in range(0, 29) if minor != 18)
SCHEMA_URL = (
    "https://developer.microsoft.com/json-schemas/teams/v{version}/MicrosoftTeams.schema.json"
)

# The regular expression semver.org publishes for a valid version (no "v", no leading zeros).
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*(:\d{{1,5}})?(/[A-Za-z0-9._~/%-]*)?$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._ -]+(/[A-Za-z0-9._ -]+)*$")


@dataclass(frozen=True)
class Defect:
    """One reason a package cannot be published."""

    code: str
    detail: str
    field: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The ``TeamsAppPackageDefect`` schema."""
        shaped = {"code": self.code, "detail": self.detail}
        if self.field:
            shaped["field"] = self.field
        return shaped


@dataclass(frozen=True)
class CheckedPackage:
    """What a valid package says about itself."""

    manifest_id: str
    version: str
    name: str
    manifest_version: str
    sha256: str
    size_bytes: int


def check_package(content: bytes, max_bytes: int) -> CheckedPackage:
    """Validate an uploaded package; raise ``TeamsAppPackage*`` naming every defect."""
    if len(content) > max_bytes:
        raise errors.TeamsAppPackageTooLarge(f"the package exceeds {max_bytes} bytes")
    defects: list[Defect] = []
    files = _open_zip(content, defects)
    manifest: dict[str, Any] | None = None
    if files is not None:
        manifest = _read_manifest(files, defects)
    if manifest is not None and files is not None:
        _check_manifest(manifest, files, defects)
    if defects or manifest is None:
        shown = defects[:MAX_DEFECTS]
        raise errors.TeamsAppPackageInvalid(
            "the Teams app package is not valid: " + "; ".join(d.detail for d in shown),
            defects=[d.as_dict() for d in shown],
        )
    name = manifest["name"]["short"]
    return CheckedPackage(
        manifest_id=str(manifest["id"]).lower(),
        version=str(manifest["version"]),
        name=str(name),
        manifest_version=str(manifest["manifestVersion"]),
        sha256=hashlib.sha256(content).hexdigest(),
        size_bytes=len(content),
    )


def _open_zip(content: bytes, defects: list[Defect]) -> dict[str, bytes] | None:
    """The package's files by name, read within the limits; None when unsafe to go on."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
        entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError):
        defects.append(Defect("NOT_A_ZIP", "the package is not a zip file"))
        return None
    if len(entries) > MAX_ENTRIES:
        defects.append(
            Defect("TOO_MANY_ENTRIES", f"the package has more than {MAX_ENTRIES} entries")
        )
        return None
    declared = 0
    seen: set[str] = set()
    unsafe = False
    for entry in entries:
        name = entry.filename
        if entry.is_dir():
            continue
        if not _safe_entry_name(name):
            defects.append(
                Defect("UNSAFE_PATH", f"entry {name[:80]!r} is not a plain relative path")
            )
            unsafe = True
        folded = name.lower()
        if folded in seen:
            defects.append(Defect("DUPLICATE_ENTRY", f"entry {name[:80]!r} appears twice"))
            unsafe = True
        seen.add(folded)
        if entry.flag_bits & 0x1:
            defects.append(Defect("ENCRYPTED_ENTRY", f"entry {name[:80]!r} is encrypted"))
            unsafe = True
        declared += entry.file_size
        if entry.file_size > MAX_ENTRY_BYTES or (
            entry.file_size > 1024
            and entry.file_size > MAX_COMPRESSION_RATIO * max(entry.compress_size, 1)
        ):
            defects.append(
                Defect("ZIP_BOMB", f"entry {name[:80]!r} expands beyond the allowed size or ratio")
            )
            unsafe = True
    if declared > MAX_UNCOMPRESSED_BYTES:
        defects.append(
            Defect("ZIP_BOMB", f"the package expands to more than {MAX_UNCOMPRESSED_BYTES} bytes")
        )
        unsafe = True
    if unsafe:
        return None
    files: dict[str, bytes] = {}
    total = 0
    for entry in entries:
        if entry.is_dir():
            continue
        try:
            with archive.open(entry) as stream:
                # Never trust the declared size: read at most one byte past the limit.
                data = stream.read(MAX_ENTRY_BYTES + 1)
        except (
            zipfile.BadZipFile,
            NotImplementedError,
            RuntimeError,
            ValueError,
            EOFError,
            OSError,
        ):
            # Corrupt, or inflating past its declared size (the reader stops there and
            # the checksum fails): either way nothing beyond the limit was expanded.
            defects.append(
                Defect("NOT_A_ZIP", f"entry {entry.filename[:80]!r} is corrupt or not as declared")
            )
            return None
        total += len(data)
        if (
            len(data) > MAX_ENTRY_BYTES
            or len(data) != entry.file_size
            or total > MAX_UNCOMPRESSED_BYTES
        ):
            defects.append(
                Defect(
                    "ZIP_BOMB", f"entry {entry.filename[:80]!r} expands beyond its declared size"
                )
            )
            return None
        files[entry.filename] = data
    return files


def _safe_entry_name(name: str) -> bool:
    """A relative path of plain segments: no ``..``, no absolute path, no drive, no backslash."""
    if not name or len(name) > 255 or not _SAFE_NAME.match(name):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def _read_manifest(files: dict[str, bytes], defects: list[Defect]) -> dict[str, Any] | None:
    raw = files.get("manifest.json")
    if raw is None:
        defects.append(
            Defect("MANIFEST_MISSING", "manifest.json is not at the root of the package")
        )
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        defects.append(Defect("MANIFEST_NOT_UTF8", "manifest.json is not UTF-8 text"))
        return None
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        defects.append(Defect("MANIFEST_NOT_JSON", "manifest.json is not valid JSON"))
        return None
    if not isinstance(document, dict):
        defects.append(Defect("MANIFEST_NOT_JSON", "manifest.json is not a JSON object"))
        return None
    return document


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_manifest(
    manifest: dict[str, Any], files: dict[str, bytes], defects: list[Defect]
) -> None:
    manifest_version = manifest.get("manifestVersion")
    if manifest_version not in SUPPORTED_MANIFEST_VERSIONS:
        defects.append(
            Defect(
                "MANIFEST_VERSION_UNSUPPORTED",
                "manifestVersion must be one of the published versions 1.0 to 1.28 (not 1.18)",
                "manifestVersion",
            )
        )
    schema = manifest.get("$schema")
    expected_schema = SCHEMA_URL.format(version=manifest_version)
    if (
        schema is not None
        and manifest_version in SUPPORTED_MANIFEST_VERSIONS
        and schema != expected_schema
    ):
        defects.append(
            Defect("SCHEMA_MISMATCH", "$schema is not the schema of manifestVersion", "$schema")
        )
    app_id = manifest.get("id")
    if not is_guid(app_id):
        defects.append(Defect("ID_NOT_GUID", "id must be a GUID", "id"))
    version = manifest.get("version")
    if not isinstance(version, str) or len(version) > VERSION_MAX or not _SEMVER.match(version):
        defects.append(Defect("VERSION_NOT_SEMVER", "version must be a semver version", "version"))
    _check_text(manifest, "name", "short", NAME_SHORT_MAX, True, defects)
    _check_text(manifest, "name", "full", NAME_FULL_MAX, False, defects)
    _check_text(manifest, "description", "short", DESCRIPTION_SHORT_MAX, True, defects)
    _check_text(manifest, "description", "full", DESCRIPTION_FULL_MAX, True, defects)
    icons = manifest.get("icons")
    icons = icons if isinstance(icons, dict) else {}
    _check_icon(icons.get("color"), "icons.color", COLOR_ICON_SIZE, files, defects)
    _check_icon(icons.get("outline"), "icons.outline", OUTLINE_ICON_SIZE, files, defects)
    domains = manifest.get("validDomains", [])
    if not isinstance(domains, list):
        defects.append(
            Defect("VALID_DOMAIN_INVALID", "validDomains must be a list", "validDomains")
        )
        domains = []
    for index, domain in enumerate(domains):
        if not isinstance(domain, str) or len(domain) > 2048 or not _DOMAIN.match(domain):
            defects.append(
                Defect(
                    "VALID_DOMAIN_INVALID",
                    f"validDomains[{index}] must be a host name (optionally *.), without a scheme",
                    f"validDomains[{index}]",
                )
            )
    bots = manifest.get("bots", [])
    if not isinstance(bots, list):
        defects.append(Defect("BOT_ID_INVALID", "bots must be a list", "bots"))
        bots = []
    for index, bot in enumerate(bots):
        bot_id = bot.get("botId") if isinstance(bot, dict) else None
        if not is_guid(bot_id):
            defects.append(
                Defect(
                    "BOT_ID_INVALID",
                    f"bots[{index}].botId must be a Microsoft app id (GUID)",
                    f"bots[{index}].botId",
                )
            )


def _check_text(
    manifest: dict[str, Any],
    section: str,
    key: str,
    limit: int,
    required: bool,
    defects: list[Defect],
) -> None:
    container = manifest.get(section)
    value = container.get(key) if isinstance(container, dict) else None
    field = f"{section}.{key}"
    code = f"{section.upper()}_{key.upper()}_INVALID"
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip():
        defects.append(Defect(code, f"{field} is required", field))
    elif len(value) > limit:
        defects.append(Defect(code, f"{field} is longer than {limit} characters", field))


def _check_icon(
    path: Any,
    field: str,
    size: tuple[int, int],
    files: dict[str, bytes],
    defects: list[Defect],
) -> None:
    if not isinstance(path, str) or path not in files:
        defects.append(Defect("ICON_MISSING", f"{field} must name a file in the package", field))
        return
    dimensions = png_dimensions(files[path])
    if dimensions is None:
        defects.append(Defect("ICON_NOT_PNG", f"{field} is not a PNG image", field))
    elif dimensions != size:
        defects.append(
            Defect(
                "ICON_WRONG_SIZE",
                f"{field} is {dimensions[0]}x{dimensions[1]}, Teams needs {size[0]}x{size[1]}",
                field,
            )
        )


def png_dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk, or None when it is not a PNG."""
    # Signature (8), then the first chunk: length (4) "IHDR" (4) width (4) height (4).
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    (length,) = struct.unpack(">I", data[8:12])
    if length != 13:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def version_key(version: str) -> tuple[Any, ...]:
    """Semver precedence as a sort key (pre-releases sort before their release)."""
    match = _SEMVER.match(version)
    if match is None:
        return (0, 0, 0, 0, ())
    major, minor, patch, pre = int(match[1]), int(match[2]), int(match[3]), match[4]
    if pre is None:
        return (major, minor, patch, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, parts)
