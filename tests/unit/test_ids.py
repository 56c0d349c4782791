"""One GUID rule and one personal-account tenant, for every module that checks Microsoft ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.id_tokens import PERSONAL_ACCOUNT_TENANT_ID
from broker.ids import is_guid
from emulator.config import CONSUMERS_TENANT_ID

GUID = "4c1d2a0e-5a0b-4f6c-9d0e-1a2b3c4d5e6f"


def test_the_emulator_and_the_broker_name_the_same_personal_tenant() -> None:
    # The emulator plays Microsoft and keeps its own copy on purpose; they must agree.
    assert CONSUMERS_TENANT_ID == PERSONAL_ACCOUNT_TENANT_ID
    assert is_guid(PERSONAL_ACCOUNT_TENANT_ID)


@pytest.mark.parametrize("value", [GUID, GUID.upper()])
def test_a_guid_in_either_case_is_one(value: str) -> None:
    assert is_guid(value)


@pytest.mark.parametrize(
    "value", [GUID + "\n", " " + GUID, GUID[:-1], GUID.replace("-", ""), "{" + GUID + "}", None, 7]
)
def test_a_guid_with_anything_around_it_is_not_one(value: object) -> None:
    """A trailing newline passed the old `re.match(...$)` check and reached a URL."""
    assert not is_guid(value)


@given(st.text(max_size=40))
def test_only_the_36_character_shape_passes(text: str) -> None:
    assert is_guid(text) == (
        len(text) == 36
        and all(text[i] == "-" for i in (8, 13, 18, 23))
        and all(
            c in "0123456789abcdefABCDEF" for i, c in enumerate(text) if i not in (8, 13, 18, 23)
        )
    )
