"""``constraints.txt``: the versions that run are pinned, allowed, and the ones installed."""

from __future__ import annotations

import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def pin_lines() -> list[tuple[str, Version]]:
    """``constraints.txt`` as (normalized name, version), in file order, comments skipped."""
    found = []
    for line in (ROOT / "constraints.txt").read_text("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"not an exact pin: {line!r}"
        found.append((canonicalize_name(name), Version(version)))
    return found


def pins() -> dict[str, Version]:
    return dict(pin_lines())


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


def installed_distributions() -> list[metadata.Distribution]:
    """What pip installed in this environment: setuptools also puts its vendored copies on
    ``sys.path`` once imported, and the checkout may hold the project's own metadata."""
    places = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    return [
        distribution
        for distribution in metadata.distributions()
        if Path(str(distribution.locate_file(""))).resolve() in places
    ]


def test_every_declared_dependency_is_pinned_within_its_declared_range() -> None:
    pinned = pins()
    problems = []
    for requirement in declared():
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name}: not pinned")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} outside {requirement.specifier}")
    assert problems == []


def test_the_environment_under_test_runs_the_pinned_versions() -> None:
    """What a fresh ``make setup`` installs, every package at its pin: a stale or
    hand-grown environment is caught here. (A pin need not be installed: a package some
    platforms alone pull in may be pinned and absent.)"""
    pinned = pins()
    stale = []
    for distribution in installed_distributions():
        name = canonicalize_name(distribution.metadata["Name"])
        if name in {"ctt-broker", "pip"}:
            continue
        installed = Version(distribution.version)
        if name not in pinned:
            stale.append(f"{name} {installed}: installed, not pinned")
        elif installed != pinned[name]:
            stale.append(f"{name}: pinned {pinned[name]}, installed {installed}")
    assert stale == [], "run `make setup` (or refresh the pins with `make constraints`)"


def test_a_pin_is_listed_once() -> None:
    names = [name for name, _ in pin_lines()]
    assert sorted({n for n in names if names.count(n) > 1}) == []
