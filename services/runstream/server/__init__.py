"""Composing the services into one ASGI application."""

from runstream.server.app import Runtime, Service, create_app

__all__ = ["Runtime", "Service", "create_app"]
