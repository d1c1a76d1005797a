"""The SDK's read side: run details, metrics and values from the query API."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from runstream.errors import RunstreamError
from runstream.events.codec import from_wire_float
from runstream.sdk.config import ClientConfig

TERMINAL = ("completed", "failed", "canceled")


class ReadError(RunstreamError):
    """The query API or gateway could not answer."""

    retriable = True


class Reader:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        self._http = httpx.Client(base_url=config.api, headers=headers, timeout=30.0)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ReadError(f"query API at {self.config.api} unreachable: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ReadError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def wait_projected(self, positions: dict[int, int], timeout: float = 30.0) -> bool:
        """Wait until the projections hold every event up to ``positions`` (partition -> offset)."""
        if not positions:
            return True
        spec = ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))
        data = self._get("/api/v1/projection/wait", {"positions": spec, "timeout": timeout})
        return bool(data and data.get("ready"))

    def details(self, run_id: str, workspace: str) -> dict[str, Any] | None:
        data: dict[str, Any] | None = self._get(f"/api/v1/runs/{quote(run_id)}", {"workspace": workspace})
        return data

    def metrics(self, run_id: str, workspace: str, name: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        data = self._get(f"/api/v1/runs/{quote(run_id)}/metrics", {"workspace": workspace}) or {}
        for metric, points in (data.get("metrics") or {}).items():
            out[metric] = [from_wire_float(p["value"]) for p in points]
        values = self._get(f"/api/v1/runs/{quote(run_id)}/values", {"workspace": workspace}) or {}
        for kind in ("lists", "tables", "rows"):
            for key, value in (values.get(kind) or {}).items():
                out[key] = _decode_values(value)
        if name is not None:
            return {name: out[name]} if name in out else {}
        return out

    def close(self) -> None:
        self._http.close()


def _decode_values(value: Any) -> Any:
    if isinstance(value, list):
        return [from_wire_float(v) if isinstance(v, int | float | str) else v for v in value]
    if isinstance(value, dict):
        return {k: _decode_values(v) for k, v in value.items()}
    return value
