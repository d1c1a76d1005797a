"""Every error Runstream raises, under one root.

RunstreamError
├── ConfigError              a setting is missing or malformed
├── EventValidationError     an event broke a schema rule (names the field and the rule)
├── AuthError                no token, or a token that is not valid here
├── EventLogError            the event log failed (retriable: a broker or disk hiccup)
│   ├── EventLogClosedError  used after close (not retriable)
│   └── AppendUnconfirmedError  eventlog/port.py: an append gave up waiting; its records may still land
├── StoreError               the projection store failed (retriable)
│
│   defined beside the code that raises them:
├── LoggingError             sdk/values.py: a bad name, value or step at a logging call
├── RunStateError            sdk/lifecycle.py: a call not allowed in the run's status
├── SnapshotTooLargeError    sdk/snapshot.py: the source folder is over the snapshot cap
├── SpoolError               sdk/spool.py: the SDK's spool could not be written (retriable)
├── TransportError           sdk/transport/port.py: a batch was not delivered (``retriable`` per case)
├── ReadError                sdk/reader.py: the query API could not answer (retriable)
├── BadParameterError        query/params.py: a query parameter broke its rule (HTTP 400)
├── NotFoundError            query/params.py: no such run, file or target (HTTP 404)
├── ReplayError              projector/replay.py: replay could not rebuild or switch
├── LiveRequestError         gateway/protocol.py: a malformed or refused websocket message
├── CursorUnavailableError   gateway/catchup.py: a cursor older than anything still held
└── LiveError                live/messages.py: the live client failed
    └── SubscriptionError    a subscription was refused

``retriable`` says whether doing the same thing again may succeed; retry and
dead-letter logic read that flag rather than matching on types.
"""

from __future__ import annotations


class RunstreamError(Exception):
    """Root of every Runstream error."""

    retriable: bool = False


class ConfigError(RunstreamError):
    """A setting is missing or malformed."""


class EventValidationError(RunstreamError):
    """An event broke a schema rule.

    ``field`` is a dotted path into the event (``payload.points[0].value``),
    ``rule`` the JSON Schema keyword or Runstream rule that failed, and
    ``value`` the value received, shortened for display.
    """

    def __init__(self, field: str, rule: str, message: str, value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule
        self.message = message
        self.value = value

    def as_dict(self) -> dict[str, object]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


class AuthError(RunstreamError):
    """No bearer token, or one that is not valid here."""


class EventLogError(RunstreamError):
    """The event log could not do what was asked."""

    retriable = True


class EventLogClosedError(EventLogError):
    """The event log was used after it was closed."""

    retriable = False


class StoreError(RunstreamError):
    """The projection store (ClickHouse) failed."""

    retriable = True
