"""The network as the webhook sender sees it, faked at the socket: no DNS, no receiver process.

:class:`FakeNetwork` hands the sender a resolver and a ``connect`` function.
Every connection answers one HTTP/1.1 response (a status, optionally trickled
byte by byte) and keeps the raw request it was sent, parsed for the test.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpcore

from broker.webhook_sender import WebhookSender


@dataclass(frozen=True)
class SentRequest:
    """One request as it crossed the fake wire."""

    address: str
    request_line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeNetwork:
    """Resolves every name to ``addresses`` and answers every connection with ``status``."""

    status: int = 204
    addresses: Sequence[str] = ("52.96.0.1",)
    trickle_seconds: float = 0.0
    sleep: Callable[[float], None] = time.sleep
    requests: list[SentRequest] = field(default_factory=list)
    connected: list[str] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def resolve(self, host: str) -> list[str]:
        self.lookups.append(host)
        return list(self.addresses)

    def connect(self, address: str, port: int, timeout: float) -> httpcore.NetworkStream:
        self.connected.append(address)
        return _FakeStream(self, address)

    def sender(self, **options: object) -> WebhookSender:
        """A sender wired to this network."""
        return WebhookSender(resolve=self.resolve, connect=self.connect, **options)  # type: ignore[arg-type]


class _FakeStream(httpcore.NetworkStream):
    def __init__(self, network: FakeNetwork, address: str) -> None:
        self._network = network
        self._address = address
        self._sent = bytearray()
        self._answer: bytes | None = None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._sent += buffer

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._answer is None:
            self._record()
            self._answer = f"HTTP/1.1 {self._network.status} Answer\r\n".encode()
            self._answer += b"content-length: 2\r\n\r\nok"
        if not self._answer:
            return b""
        if self._network.trickle_seconds:
            if timeout is not None and timeout < self._network.trickle_seconds:
                self._network.sleep(timeout)
                raise httpcore.ReadTimeout("fake: the next byte comes too late")
            self._network.sleep(self._network.trickle_seconds)
            chunk, self._answer = self._answer[:1], self._answer[1:]
            return chunk
        chunk, self._answer = self._answer[:max_bytes], self._answer[max_bytes:]
        return chunk

    def close(self) -> None:
        pass

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self._network.server_names.append(server_hostname)
        return self

    def _record(self) -> None:
        head, _, body = bytes(self._sent).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self._network.requests.append(SentRequest(self._address, lines[0], headers, body))
