"""Events: schemas, validation, codecs and partitioning. Pure logic, no I/O but reading schema files."""

from runstream.events.codec import decode_event_bytes, encode_event, from_wire_float, to_wire_float
from runstream.events.partitioning import partition_for_key
from runstream.events.validation import EventValidator, new_event_id

__all__ = [
    "EventValidator",
    "decode_event_bytes",
    "encode_event",
    "from_wire_float",
    "new_event_id",
    "partition_for_key",
    "to_wire_float",
]
