"""Teams app package operations: upload, list, read, delete."""

from __future__ import annotations

from typing import Any

from broker import teams_apps
from handlers import views
from handlers.context import current_runtime


def upload_teams_app_package(body: bytes, user: str) -> views.Reply:
    """``uploadTeamsAppPackage``: the body is the zip itself (``application/zip``)."""
    package = teams_apps.upload_package(current_runtime(), user, bytes(body or b""))
    return views.reply(package_view(package), 201, f"/teamsApps/packages/{package.package_id}")


def list_teams_app_packages(user: str, limit: int = 20, cursor: str | None = None) -> views.Reply:
    """``listTeamsAppPackages``."""
    page = teams_apps.list_packages(current_runtime(), user, limit=limit, cursor=cursor)
    return views.reply(
        {"items": [package_view(p) for p in page.items], "nextCursor": page.next_cursor}
    )


def get_teams_app_package(package_id: str, user: str) -> views.Reply:
    """``getTeamsAppPackage``."""
    return views.reply(package_view(teams_apps.get_package(current_runtime(), user, package_id)))


def delete_teams_app_package(package_id: str, user: str) -> tuple[None, int]:
    """``deleteTeamsAppPackage``."""
    teams_apps.delete_package(current_runtime(), user, package_id)
    return None, 204


def package_view(value: teams_apps.TeamsAppPackage) -> dict[str, Any]:
    """The ``TeamsAppPackage`` schema."""
    return {
        "packageId": value.package_id,
        "manifestId": value.manifest_id,
        "version": value.version,
        "name": value.name,
        "manifestVersion": value.manifest_version,
        "sha256": value.sha256,
        "sizeBytes": value.size_bytes,
        "current": value.current,
        "createdAt": views.timestamp(value.created_at),
    }
