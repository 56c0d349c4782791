"""Fault injection state for the token endpoint."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class TokenFault:
    """What the next token request should suffer."""

    delay_seconds: float
    fail_status: int | None


@dataclass
class Faults:
    """Mutable fault settings; the Emulator guards them with its lock."""

    failures_remaining: int = 0
    failure_status: int = 503
    delay_seconds: float = 0.0
    id_token_overrides: deque[dict[str, object | None]] = field(default_factory=deque)

    def take_token_fault(self) -> TokenFault:
        """Consume one pending failure, if any, and report the configured delay."""
        status: int | None = None
        if self.failures_remaining > 0:
            self.failures_remaining -= 1
            status = self.failure_status
        return TokenFault(delay_seconds=self.delay_seconds, fail_status=status)

    def take_id_token_override(self) -> Mapping[str, object | None]:
        """The claim overrides for the next ID token (empty when none are queued)."""
        return self.id_token_overrides.popleft() if self.id_token_overrides else {}
