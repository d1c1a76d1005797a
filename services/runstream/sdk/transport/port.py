"""The transport port: deliver one spooled batch, say what was stored and what was refused."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from runstream.errors import RunstreamError


class TransportError(RunstreamError):
    """The batch was not delivered. ``retriable``: sending it again later may succeed;
    ``too_large``: the server takes no batch this big (smaller ones may pass)."""

    def __init__(self, message: str, *, retriable: bool = True, too_large: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.too_large = too_large


@dataclass
class Delivery:
    """What happened to a delivered batch."""

    positions: list[tuple[str, int, int]] = field(default_factory=list)
    """(run_id, partition, offset) of every stored event."""
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """Events the server refused, with field, rule and message (never resent)."""


class Transport(abc.ABC):
    @abc.abstractmethod
    def deliver(self, body: bytes, events: list[dict[str, Any]]) -> Delivery:
        """Deliver the events (``body`` is their JSON array); raises TransportError."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


from runstream.sdk.transport.http import HttpTransport  # noqa: E402 - after the port it implements


def open_transport(uri: str, token: str | None, *, topic_prefix: str = "runstream") -> Transport:
    if uri.startswith(("http://", "https://")):
        return HttpTransport(uri, token)
    if uri.startswith("kafka://"):
        from runstream.sdk.transport.kafka import KafkaTransport

        return KafkaTransport(uri.removeprefix("kafka://"), topic=f"{topic_prefix}.events")
    raise ValueError(f"RUNSTREAM_URI must start with http://, https:// or kafka://; got {uri!r}")
