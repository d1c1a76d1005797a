"""The live gateway: a websocket that pushes every change the moment it reaches the log.

``PROTOCOL.md`` beside this file is the protocol's reference. ``protocol`` (the
wire contract) imports nothing heavy, so clients use it without the server's
dependencies; the server classes are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runstream.gateway.hub import LiveHub
    from runstream.gateway.websocket import GatewayService

__all__ = ["GatewayService", "LiveHub"]


def __getattr__(name: str) -> Any:
    if name == "LiveHub":
        from runstream.gateway.hub import LiveHub

        return LiveHub
    if name == "GatewayService":
        from runstream.gateway.websocket import GatewayService

        return GatewayService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
