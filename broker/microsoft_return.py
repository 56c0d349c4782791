"""Microsoft's return to ``/oauth/callback``, read field by field.

The spec lets every return through to here (only ``state`` is required): a
return whose ``state`` checks out must end in an outcome, so its other fields
are judged by the broker, not refused by the schema with the action item left
open. :func:`read_return` separates the two questions: a missing, repeated-and-
different or malformed ``state`` raises :class:`errors.StateInvalid` (nobody
can tell which flow it belongs to); anything wrong with the rest is carried as
``problem``, which the flow records as ``MICROSOFT_RESPONSE_INVALID`` once the
state is verified.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from broker import errors

MAX_FIELDS = 32
MAX_NAME = 64
MAX_STATE = 4096
MAX_UNKNOWN = 2048
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")
_TEXT = re.compile(r"^[\x09\x0a\x0d\x20-\x7e]*$")  # descriptions carry CR LF before trace ids
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# The fields Microsoft documents for these returns, with the longest value we take.
FIELDS: Mapping[str, tuple[int, re.Pattern[str]]] = {
    "code": (4096, _PRINTABLE),
    "error": (256, _PRINTABLE),
    "error_description": (2048, _TEXT),
    "error_uri": (2048, _PRINTABLE),
    "admin_consent": (256, _PRINTABLE),
    "tenant": (256, _PRINTABLE),
    "scope": (2048, _PRINTABLE),
    "session_state": (256, _PRINTABLE),
    "client_info": (2048, _PRINTABLE),
}


@dataclass(frozen=True)
class MicrosoftReturn:
    """The state, the documented fields (one value each) and what was wrong, if anything."""

    state: str
    params: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    def __repr__(self) -> str:
        return f"MicrosoftReturn(fields={sorted(self.params)!r}, problem={self.problem!r})"


def read_return(
    pairs: Iterable[tuple[str, str]], *, overflow: str | None = None
) -> MicrosoftReturn:
    """Split Microsoft's return into its state and fields; see the module docstring.

    ``overflow`` is why the return was cut down to its state before it got here.
    """
    items = list(pairs)
    states = [value for name, value in items if name == "state"]
    if not states or not states[0]:
        raise errors.StateInvalid("the response carries no state")
    if len(set(states)) > 1:
        raise errors.StateInvalid("the response carries two different states")
    state = states[0]
    if len(state) > MAX_STATE or not _PRINTABLE.match(state):
        raise errors.StateInvalid("the state is not a token this broker issued")
    params: dict[str, str] = {"state": state}
    problem = overflow or _problem(items, params)
    return MicrosoftReturn(state=state, params=params, problem=problem)


def missing_fields(params: Mapping[str, str], *, sign_in: bool) -> str | None:
    """What a return lacks for its kind of flow (``error`` always suffices)."""
    if params.get("error"):
        return None
    if sign_in and not params.get("code"):
        return "the sign-in return carries neither code nor error"
    if not sign_in and not params.get("admin_consent"):
        return "the consent return carries neither admin_consent nor error"
    return None


def _problem(items: list[tuple[str, str]], params: dict[str, str]) -> str | None:
    """Fill ``params`` with the documented fields; the first rule broken, or None."""
    if len(items) > MAX_FIELDS:
        return f"the response carries more than {MAX_FIELDS} fields"
    seen: set[str] = set()
    problem: str | None = None
    for name, value in items:
        if len(name) > MAX_NAME or not _NAME.match(name):
            problem = problem or "the response carries a malformed field name"
            continue
        if name in seen and name != "state":
            problem = problem or f"the response repeats {name}"
            continue
        seen.add(name)
        if name == "state":
            continue
        limit, allowed = FIELDS.get(name, (MAX_UNKNOWN, _PRINTABLE))
        if len(value) > limit:
            problem = problem or f"{name} is longer than {limit} characters"
        elif not allowed.match(value):
            problem = problem or f"{name} carries characters Microsoft never sends"
        elif name in FIELDS:
            params[name] = value
    if problem is None and sum(1 for name, _ in items if name == "state") > 1:
        problem = "the response repeats state"
    return problem
