"""The action catalog: what each action type is, read from ``action_catalog.yaml``.

Behaviour that differs per action type is driven by this table, never by a
chain of ``if action_type == ...`` branches.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml

from broker.errors import UnknownActionType

Kind = Literal["signin", "consent"]


@dataclass(frozen=True)
class ActionSpec:
    """One row of the catalog."""

    action_type: str
    kind: Kind
    consent_type: str | None
    mandatory: bool
    app: str
    description: str
    scopes: tuple[str, ...]
    deploys_teams_apps: bool = False
    """The sign-in publishes the provider's Teams app packages (see ``teams_deploy``)."""

    @property
    def needs_registered_enterprise(self) -> bool:
        """Everything but REGISTRATION needs the enterprise bound to its tenant."""
        return self.action_type != "REGISTRATION"


@dataclass(frozen=True)
class Catalog:
    """All action types, in catalog order."""

    actions: tuple[ActionSpec, ...]

    def get(self, action_type: str) -> ActionSpec:
        """Return the row for ``action_type`` or raise :class:`UnknownActionType`."""
        for spec in self.actions:
            if spec.action_type == action_type:
                return spec
        raise UnknownActionType(f"{action_type!r} is not a known action type")

    @property
    def action_types(self) -> tuple[str, ...]:
        """Every action type name."""
        return tuple(spec.action_type for spec in self.actions)

    @property
    def consent_types(self) -> tuple[str, ...]:
        """Every consent type, in catalog order."""
        return tuple(spec.consent_type for spec in self.actions if spec.consent_type)


def parse_catalog(document: Any) -> Catalog:
    """Validate a parsed catalog document; raise ``ValueError`` naming each problem."""
    problems: list[str] = []
    rows = document.get("actions") if isinstance(document, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError("catalog: 'actions' must be a non-empty list")
    actions: list[ActionSpec] = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        where = f"actions[{index}]"
        if not isinstance(row, dict):
            problems.append(f"{where}: not a mapping")
            continue
        name = row.get("actionType")
        kind = row.get("kind")
        consent_type = row.get("consentType")
        scopes = row.get("scopes")
        if not isinstance(name, str) or not name.isupper():
            problems.append(f"{where}: actionType must be an UPPER_CASE string")
            continue
        if name in seen:
            problems.append(f"{where}: duplicate actionType {name}")
        seen.add(name)
        if kind not in ("signin", "consent"):
            problems.append(f"{name}: kind must be signin or consent")
        if (kind == "consent") != isinstance(consent_type, str):
            problems.append(f"{name}: consent actions need a consentType, sign-ins none")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            problems.append(f"{name}: scopes must be a list of strings")
            scopes = []
        if row.get("deploysTeamsApps", False) not in (True, False) or (
            row.get("deploysTeamsApps") and kind != "signin"
        ):
            problems.append(f"{name}: deploysTeamsApps is a bool, and only for sign-ins")
        if not isinstance(row.get("app"), str) or not isinstance(row.get("mandatory"), bool):
            problems.append(f"{name}: app (string) and mandatory (bool) are required")
        actions.append(
            ActionSpec(
                action_type=name,
                kind="consent" if kind == "consent" else "signin",
                consent_type=consent_type if isinstance(consent_type, str) else None,
                mandatory=bool(row.get("mandatory")),
                app=str(row.get("app")),
                description=str(row.get("description", "")),
                scopes=tuple(scopes),
                deploys_teams_apps=row.get("deploysTeamsApps") is True,
            )
        )
    if "REGISTRATION" not in seen:
        problems.append("catalog: REGISTRATION is required")
    if problems:
        raise ValueError("; ".join(problems))
    return Catalog(tuple(actions))


@cache
def load_catalog() -> Catalog:
    """The catalog shipped with the package (parsed once per process)."""
    text = resources.files("broker").joinpath("action_catalog.yaml").read_text("utf-8")
    return parse_catalog(yaml.safe_load(text))
