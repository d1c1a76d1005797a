"""The projector service: from the events topic to ClickHouse tables."""

from runstream.projector.projector import Projector, ProjectorState

__all__ = ["Projector", "ProjectorState"]
