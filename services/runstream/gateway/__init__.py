"""The live gateway: a websocket that pushes a run's events the moment they reach the log."""

from runstream.gateway.hub import LiveHub
from runstream.gateway.websocket import GatewayService

__all__ = ["GatewayService", "LiveHub"]
