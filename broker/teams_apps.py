"""Teams app packages: a provider's apps for the enterprise's Teams app catalog.

:func:`upload_package` stores a package that :func:`broker.teams_packages.check_package`
accepted, with its manifest id, version and SHA-256 digest. A new version keeps the old ones;
the *current* package of an app is its highest version. A manifest id belongs to the provider
that first uploaded it: another provider's package with the same id would replace the first
provider's app in a shared tenant's catalog (Graph finds apps by ``externalId``, the manifest id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError

from broker import errors
from broker.db import enterprise_teams_apps, teams_app_packages
from broker.events import record_audit
from broker.ids import decode_cursor, encode_cursor, looks_like_id, new_id
from broker.runtime import Runtime
from broker.teams_packages import check_package, version_key


@dataclass(frozen=True)
class TeamsAppPackage:
    """A stored package as its provider sees it (without the zip bytes)."""

    package_id: str
    manifest_id: str
    version: str
    name: str
    manifest_version: str
    sha256: str
    size_bytes: int
    current: bool
    created_at: datetime


@dataclass(frozen=True)
class EnterpriseTeamsApp:
    """What the last deployment left of one app in an enterprise's Teams catalog."""

    manifest_id: str
    package_id: str | None
    status: str
    version: str | None
    catalog_app_id: str | None
    error_code: str | None
    action_item_id: str | None
    updated_at: datetime


@dataclass(frozen=True)
class PackagePage:
    """One page of packages and the cursor of the next."""

    items: tuple[TeamsAppPackage, ...]
    next_cursor: str | None


# -- storage ----------------------------------------------------------------------


def upload_package(runtime: Runtime, provider_id: str, content: bytes) -> TeamsAppPackage:
    """Check and store a package; refuses a repeated version or another provider's app id."""
    checked = check_package(content, runtime.settings.teams_app_package_max_bytes)
    now = runtime.now()
    package_id = new_id(runtime, "tap", now)
    try:
        with runtime.engine.begin() as connection:
            owner = connection.execute(
                select(teams_app_packages.c.provider_id).where(
                    teams_app_packages.c.manifest_id == checked.manifest_id,
                    teams_app_packages.c.provider_id != provider_id,
                )
            ).first()
            if owner is not None:
                raise errors.TeamsAppIdTaken(
                    "another provider's package already uses this manifest id"
                )
            connection.execute(
                insert(teams_app_packages).values(
                    id=package_id,
                    provider_id=provider_id,
                    manifest_id=checked.manifest_id,
                    version=checked.version,
                    name=checked.name,
                    manifest_version=checked.manifest_version,
                    sha256=checked.sha256,
                    size_bytes=checked.size_bytes,
                    content=content,
                    created_at=now,
                )
            )
            record_audit(
                connection,
                runtime,
                provider_id,
                "provider",
                "teamsAppPackage.uploaded",
                details={
                    "packageId": package_id,
                    "manifestId": checked.manifest_id,
                    "version": checked.version,
                },
            )
    except IntegrityError:
        raise errors.TeamsAppPackageDuplicate(
            f"version {checked.version} of app {checked.manifest_id} is already uploaded"
        ) from None
    return get_package(runtime, provider_id, package_id)


def get_package(runtime: Runtime, provider_id: str, package_id: str) -> TeamsAppPackage:
    """One of the provider's packages; another provider's id is not found."""
    with runtime.engine.connect() as connection:
        packages = _provider_packages(connection, provider_id)
    for package in packages:
        if package.package_id == package_id:
            return package
    raise errors.TeamsAppPackageNotFound("no such Teams app package")


def list_packages(
    runtime: Runtime, provider_id: str, *, limit: int = 20, cursor: str | None = None
) -> PackagePage:
    """The provider's packages, oldest first, every version."""
    after = decode_cursor(cursor, "tap") if cursor else None
    with runtime.engine.connect() as connection:
        packages = [
            p
            for p in _provider_packages(connection, provider_id)
            if after is None or p.package_id > after
        ]
    page = packages[:limit]
    more = len(packages) > limit
    return PackagePage(tuple(page), encode_cursor(page[-1].package_id) if more and page else None)


def delete_package(runtime: Runtime, provider_id: str, package_id: str) -> None:
    """Forget one package version; the catalog of tenants is not touched."""
    if not looks_like_id(package_id, "tap"):
        raise errors.TeamsAppPackageNotFound("no such Teams app package")
    with runtime.engine.begin() as connection:
        removed = connection.execute(
            delete(teams_app_packages).where(
                teams_app_packages.c.id == package_id,
                teams_app_packages.c.provider_id == provider_id,
            )
        )
        if removed.rowcount != 1:
            raise errors.TeamsAppPackageNotFound("no such Teams app package")
        record_audit(
            connection,
            runtime,
            provider_id,
            "provider",
            "teamsAppPackage.deleted",
            details={"packageId": package_id},
        )


def select_packages(
    connection: Connection, provider_id: str, package_ids: list[str] | None
) -> tuple[str, ...]:
    """The packages a deployment takes: those named (each the provider's), or all current ones."""
    packages = _provider_packages(connection, provider_id)
    if package_ids is None:
        chosen = tuple(p.package_id for p in packages if p.current)
        if not chosen:
            raise errors.TeamsAppPackageNotFound("the provider has no Teams app package to deploy")
        return chosen
    known = {p.package_id: p for p in packages}
    manifests: set[str] = set()
    for package_id in package_ids:
        package = known.get(package_id)
        if package is None:
            raise errors.TeamsAppPackageNotFound(f"no such Teams app package: {package_id[:40]}")
        if package.manifest_id in manifests:
            raise errors.InvalidRequest(
                "teamsAppPackageIds names two versions of one app", field="teamsAppPackageIds"
            )
        manifests.add(package.manifest_id)
    if not package_ids:
        raise errors.InvalidRequest(
            "teamsAppPackageIds must not be empty", field="teamsAppPackageIds"
        )
    return tuple(dict.fromkeys(package_ids))


@dataclass(frozen=True)
class PackageContent:
    """A package to deploy: its facts and zip bytes."""

    package_id: str
    manifest_id: str
    version: str
    content: bytes


def load_contents(
    runtime: Runtime, provider_id: str, package_ids: tuple[str, ...]
) -> dict[str, PackageContent | None]:
    """The zip bytes of each package id (None for a package deleted since)."""
    with runtime.engine.connect() as connection:
        rows = connection.execute(
            select(
                teams_app_packages.c.id,
                teams_app_packages.c.manifest_id,
                teams_app_packages.c.version,
                teams_app_packages.c.content,
            ).where(
                teams_app_packages.c.provider_id == provider_id,
                teams_app_packages.c.id.in_(package_ids),
            )
        ).all()
    found = {
        row.id: PackageContent(row.id, row.manifest_id, row.version, bytes(row.content))
        for row in rows
    }
    return {package_id: found.get(package_id) for package_id in package_ids}


def _provider_packages(connection: Connection, provider_id: str) -> list[TeamsAppPackage]:
    rows = connection.execute(
        select(
            teams_app_packages.c.id,
            teams_app_packages.c.manifest_id,
            teams_app_packages.c.version,
            teams_app_packages.c.name,
            teams_app_packages.c.manifest_version,
            teams_app_packages.c.sha256,
            teams_app_packages.c.size_bytes,
            teams_app_packages.c.created_at,
        )
        .where(teams_app_packages.c.provider_id == provider_id)
        .order_by(teams_app_packages.c.id)
    ).all()
    # The current package of an app: its highest version (ties: the later upload).
    newest: dict[str, tuple[tuple[Any, ...], str]] = {}
    for row in rows:
        key = (version_key(row.version), row.id)
        if row.manifest_id not in newest or key > newest[row.manifest_id]:
            newest[row.manifest_id] = key
    return [
        TeamsAppPackage(
            package_id=row.id,
            manifest_id=row.manifest_id,
            version=row.version,
            name=row.name,
            manifest_version=row.manifest_version,
            sha256=row.sha256,
            size_bytes=row.size_bytes,
            current=newest[row.manifest_id][1] == row.id,
            created_at=row.created_at,
        )
        for row in rows
    ]


# Built once and run with a parameter: every read of an enterprise runs it.
_ENTERPRISE_APPS = (
    select(enterprise_teams_apps)
    .where(enterprise_teams_apps.c.enterprise_id == bindparam("t_enterprise_id"))
    .order_by(enterprise_teams_apps.c.manifest_id)
)


def enterprise_teams_apps_state(
    connection: Connection, enterprise_id: str
) -> tuple[EnterpriseTeamsApp, ...]:
    """The ``teamsApps`` section of an enterprise, one entry per manifest id."""
    rows = connection.execute(_ENTERPRISE_APPS, {"t_enterprise_id": enterprise_id}).mappings()
    return tuple(
        EnterpriseTeamsApp(
            manifest_id=row["manifest_id"],
            package_id=row["package_id"],
            status=row["status"],
            version=row["version"],
            catalog_app_id=row["catalog_app_id"],
            error_code=row["error_code"],
            action_item_id=row["action_item_id"],
            updated_at=row["updated_at"],
        )
        for row in rows
    )
