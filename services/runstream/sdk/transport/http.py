"""Delivering batches to the ingest API: gzip-compressed POSTs on one kept-alive connection."""

from __future__ import annotations

import gzip
from typing import Any

import httpx

from runstream.sdk.transport.port import Delivery, Transport, TransportError

LOOPBACK = ("127.", "localhost", "[::1]")


class HttpTransport(Transport):
    """POSTs to ``/api/v1/events``; bodies are gzip-compressed unless the server is on this machine."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        host = httpx.URL(self.base_url).host
        self.compress = not host.startswith(LOOPBACK) and host != "::1"
        if self.compress:
            headers["Content-Encoding"] = "gzip"
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def deliver(self, body: bytes, events: list[dict[str, Any]]) -> Delivery:
        content = gzip.compress(body, compresslevel=1) if self.compress else body
        try:
            response = self._client.post("/api/v1/events", content=content)
        except httpx.HTTPError as exc:
            raise TransportError(f"ingest at {self.base_url} unreachable: {exc}") from exc
        if response.status_code in (200, 207, 422):
            data = response.json()
            by_index = {e["index"]: e for e in data.get("accepted", [])}
            positions = [
                (events[i]["run_id"], int(a["partition"]), int(a["offset"])) for i, a in by_index.items()
            ]
            return Delivery(positions=positions, rejected=list(data.get("rejected", [])))
        detail = response.text[:300]
        if response.status_code == 401:
            raise TransportError(f"ingest at {self.base_url} refused the token (401): {detail}")
        if response.status_code in (400, 413):
            raise TransportError(
                f"ingest at {self.base_url} refused the batch ({response.status_code}): {detail}",
                retriable=False,
                too_large=response.status_code == 413,
            )
        raise TransportError(f"ingest at {self.base_url} answered {response.status_code}: {detail}")

    def close(self) -> None:
        self._client.close()
