"""How the SDK delivers batches of events: to the ingest API over HTTP, or straight to Kafka."""

from runstream.sdk.transport.port import Delivery, Transport, TransportError, open_transport

__all__ = ["Delivery", "Transport", "TransportError", "open_transport"]
