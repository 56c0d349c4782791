"""Action items: the long-lived link a provider shows its admin as a button.

``create_action_item`` is what ``POST /enterprise/getActionItemUrl`` does. The
link is ``{public base URL}/actions/{handle}`` where the handle is 256 random
bits; only its SHA-256 is stored, so the link cannot be rebuilt from the
database and is returned exactly once. The action item id is a separate,
non-secret identifier the provider uses to read status or revoke.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, bindparam, select

from broker import errors, lifecycle
from broker.callbacks import check_callback_url
from broker.catalog import ActionSpec
from broker.db import action_items
from broker.enterprises import registered_tenant
from broker.ids import decode_cursor, encode_cursor, looks_like_id, new_id
from broker.providers import callback_rules
from broker.runtime import Runtime
from broker.teams_apps import select_packages
from broker.tokens import digest, random_token

ItemStatus = Literal["created", "opened", "pending", "completed", "failed", "expired", "revoked"]
ResultDelivery = Literal["redirect", "form_post"]

MIN_LIFETIME = 60
MAX_LIFETIME = 30 * 86400
DEFAULT_LIFETIME = 86400
MAX_STATE_LENGTH = 512
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


@dataclass(frozen=True)
class ActionItem:
    """An action item as its provider sees it (status already accounts for expiry)."""

    action_item_id: str
    enterprise_id: str
    action_type: str
    consent_type: str | None
    mandatory: bool
    callback_url: str
    provider_state: str | None
    result_delivery: ResultDelivery
    reregister: bool
    status: ItemStatus
    error_code: str | None
    created_at: datetime
    expires_at: datetime
    opened_at: datetime | None
    finished_at: datetime | None
    revoked_at: datetime | None
    teams_app_package_ids: tuple[str, ...] | None = None
    """DEPLOY_TEAMS_APPS: the packages chosen when the link was issued."""


@dataclass(frozen=True)
class IssuedActionItem:
    """A new action item and its link; the link exists only in this value."""

    item: ActionItem
    url: str


@dataclass(frozen=True)
class ActionItemPage:
    """One page of action items and the cursor of the next."""

    items: tuple[ActionItem, ...]
    next_cursor: str | None


def create_action_item(
    runtime: Runtime,
    provider_id: str,
    *,
    action_type: str,
    enterprise_id: str,
    callback_url: str,
    state: str | None = None,
    expires_in: int = DEFAULT_LIFETIME,
    result_delivery: ResultDelivery = "redirect",
    reregister: bool = False,
    teams_app_package_ids: list[str] | None = None,
) -> IssuedActionItem:
    """Check the request against the catalog, the enterprise and the allow-list; store it."""
    spec = runtime.catalog.get(action_type)
    if state is not None and (len(state) > MAX_STATE_LENGTH or not _PRINTABLE.match(state)):
        raise errors.InvalidProviderState(
            f"state must be at most {MAX_STATE_LENGTH} printable ASCII characters"
        )
    if not MIN_LIFETIME <= expires_in <= MAX_LIFETIME:
        raise errors.InvalidRequest(
            f"expiresInSeconds must be between {MIN_LIFETIME} and {MAX_LIFETIME}"
        )
    if result_delivery not in ("redirect", "form_post"):
        raise errors.InvalidRequest("resultDelivery must be redirect or form_post")
    now = runtime.now()
    handle = random_token(runtime.random_bytes)
    item_id = new_id(runtime, "act", now)
    # One connection and one transaction: the reads this operation needs (never the
    # enterprise's history), then the item and its audit line; the answer is built
    # from what was written, not read back.
    with runtime.engine.begin() as connection:
        tenant_id = registered_tenant(connection, provider_id, enterprise_id)
        rules = callback_rules(connection, runtime, provider_id)
        callback = check_callback_url(
            callback_url, rules.callback_urls, development=rules.development
        )
        if spec.needs_registered_enterprise and tenant_id is None:
            raise errors.EnterpriseNotRegistered(
                f"{action_type} needs a registered enterprise: complete REGISTRATION first"
            )
        if not spec.needs_registered_enterprise and tenant_id is not None and not reregister:
            raise errors.EnterpriseAlreadyRegistered(
                "the enterprise is already registered; send reregister=true to register it again"
            )
        packages = _teams_app_selection(connection, provider_id, spec, teams_app_package_ids)
        columns = {
            "id": item_id,
            "handle_hash": digest(handle),
            "provider_id": provider_id,
            "enterprise_id": enterprise_id,
            "action_type": spec.action_type,
            "consent_type": spec.consent_type,
            "callback_url": callback.url,
            "provider_state": state,
            "result_delivery": result_delivery,
            "reregister": reregister,
            "teams_app_package_ids": packages,
            "created_at": now,
            "expires_at": now + timedelta(seconds=expires_in),
            "updated_at": now,
        }
        lifecycle.record_created(
            connection,
            runtime,
            columns,
            {"actionType": spec.action_type, "expiresInSeconds": expires_in},
        )
    item = _from_row(runtime, {**columns, **_NEW_ITEM})
    return IssuedActionItem(item=item, url=f"{runtime.settings.public_base_url}/actions/{handle}")


# The columns of a new item that create_action_item does not set itself.
_NEW_ITEM: dict[str, Any] = {
    "status": "created",
    "error_code": None,
    "opened_at": None,
    "finished_at": None,
    "revoked_at": None,
}


def _teams_app_selection(
    connection: Connection, provider_id: str, spec: ActionSpec, package_ids: list[str] | None
) -> str | None:
    """DEPLOY_TEAMS_APPS: the chosen package ids as stored JSON; other actions take none."""
    if not spec.deploys_teams_apps:
        if package_ids is not None:
            raise errors.InvalidRequest(
                "teamsAppPackageIds is only for DEPLOY_TEAMS_APPS", field="teamsAppPackageIds"
            )
        return None
    return json.dumps(list(select_packages(connection, provider_id, package_ids)))


def get_action_item(runtime: Runtime, provider_id: str, action_item_id: str) -> ActionItem:
    """One of the provider's action items; another provider's id is not found."""
    with runtime.engine.connect() as connection:
        return _load(runtime, connection, provider_id, action_item_id)


def list_action_items(
    runtime: Runtime, provider_id: str, enterprise_id: str, *, limit: int, cursor: str | None = None
) -> ActionItemPage:
    """An enterprise's action items, oldest first: one read for the whole page."""
    with runtime.engine.connect() as connection:
        registered_tenant(connection, provider_id, enterprise_id)  # raises when not found
        query = select(action_items).where(
            action_items.c.provider_id == provider_id,
            action_items.c.enterprise_id == enterprise_id,
        )
        if cursor is not None:
            query = query.where(action_items.c.id > decode_cursor(cursor, "act"))
        query = query.order_by(action_items.c.id).limit(limit + 1)
        rows = connection.execute(query).mappings().all()
    return ActionItemPage(
        items=tuple(_from_row(runtime, row) for row in rows[:limit]),
        next_cursor=encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None,
    )


def revoke_action_item(runtime: Runtime, provider_id: str, action_item_id: str) -> ActionItem:
    """Revoke a link that has not been used up; revoking twice is harmless.

    An expired link can be revoked too: that also stops a round trip the admin
    started before it expired. The update is conditional, so a revoke racing the
    admin's completion either wins cleanly or reports that the item is finished.
    """
    with runtime.engine.begin() as connection:
        current = _load(runtime, connection, provider_id, action_item_id)
        if current.status == "revoked":
            return current
        if not lifecycle.record_revoked(
            connection, runtime, provider_id, current.enterprise_id, action_item_id
        ):
            latest = _load(runtime, connection, provider_id, action_item_id)
            if latest.status == "revoked":  # a concurrent revoke won: same outcome
                return latest
            raise errors.ActionItemNotRevocable(
                f"the action item is {latest.status} and can no longer be revoked"
            )
        return _load(runtime, connection, provider_id, action_item_id)


def _load(
    runtime: Runtime, connection: Connection, provider_id: str, action_item_id: str
) -> ActionItem:
    if not looks_like_id(action_item_id, "act"):
        raise errors.ActionItemNotFound(f"no action item {action_item_id!r}")
    row = (
        connection.execute(_ITEM, {"a_item_id": action_item_id, "a_provider_id": provider_id})
        .mappings()
        .first()
    )
    if row is None:
        raise errors.ActionItemNotFound(f"no action item {action_item_id!r}")
    return _from_row(runtime, row)


# Built once and run with parameters (every read of one action item).
_ITEM = select(action_items).where(
    action_items.c.id == bindparam("a_item_id"),
    action_items.c.provider_id == bindparam("a_provider_id"),
)


def _from_row(runtime: Runtime, row: Mapping[Any, Any]) -> ActionItem:
    status: ItemStatus = row["status"]
    if status in lifecycle.LIVE_ITEM_STATES and runtime.now() >= row["expires_at"]:
        status = "expired"
    spec = runtime.catalog.get(row["action_type"])
    return ActionItem(
        action_item_id=row["id"],
        enterprise_id=row["enterprise_id"],
        action_type=row["action_type"],
        consent_type=row["consent_type"],
        mandatory=spec.mandatory,
        callback_url=row["callback_url"],
        provider_state=row["provider_state"],
        result_delivery=row["result_delivery"],
        reregister=row["reregister"],
        teams_app_package_ids=tuple(json.loads(row["teams_app_package_ids"]))
        if row["teams_app_package_ids"]
        else None,
        status=status,
        error_code=row["error_code"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        opened_at=row["opened_at"],
        finished_at=row["finished_at"],
        revoked_at=row["revoked_at"],
    )
