"""Schemathesis hook: how to generate an ``application/zip`` body (a Teams app package).

Schemathesis cannot serialise a binary schema for an unknown media type by itself. Half the
bodies are publishable packages (the sandbox's demo app at a random version and id), half are
arbitrary bytes, so both the stored and every refused path are exercised. Loaded by
``test_schemathesis.py`` in process and through ``SCHEMATHESIS_HOOKS`` by the live run.
"""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

from sandbox.teams_demo import build_package, demo_manifest


def _package(version: tuple[int, int, int], app_id: object) -> bytes:
    return build_package(demo_manifest(".".join(map(str, version)), app_id=str(app_id)))


PACKAGES = st.builds(
    _package,
    st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20)),
    st.uuids(),
)
schemathesis.openapi.media_type("application/zip", st.one_of(PACKAGES, st.binary(max_size=4096)))
