"""The exception tree of eventkit.

Every failure the dispatcher reacts to is one of these classes; the class decides what happens
to the record, never a boolean flag::

    EventkitError
    ├── ConfigurationError            bad registration or setting: fails at start-up
    │   └── DuplicateHandlerError     the same (topic, event_type) registered twice
    ├── PoisonRecordError             fatal input: dead-lettered at once, never retried
    │   ├── OversizedRecordError      record or headers over the configured bounds
    │   ├── UndecodableRecordError    not JSON, bad UTF-8, too deep
    │   ├── InvalidEnvelopeError      decodes, but the envelope is missing or has wrong fields
    │   ├── InvalidPayloadError       the payload does not match the handler's payload type
    │   └── UnroutableEventError      no handler, when unknown types are set to dead-letter
    ├── NonRetryableError             raised by a handler: dead-lettered without more attempts
    │   └── AttemptsExhaustedError    every attempt was spent, some by deliveries that died
    ├── RetryableError                raised by a handler: retried (any other exception is too)
    ├── HandlerCancelledError         a handler raised CancelledError without being cancelled
    ├── InfrastructureError           Redis, broker or DLQ producer trouble: the record is
    │   │                             deferred and retried with back-off, never counted
    │   ├── StoreUnavailableError     the idempotency store cannot be reached
    │   ├── PublishError              a publish (events or dead letters) was not acknowledged
    │   ├── ConsumerStartError        the consumer could not reach the broker or join its group
    │   ├── CommitFailedError         the broker refused an offset commit (not a record attempt)
    │   └── LeaseLostError            the idempotency lease is gone: claim again, later
    └── PublisherNotStartedError      publishing before start or after stop
"""

from __future__ import annotations


class EventkitError(Exception):
    """Base class of every error eventkit raises."""


class ConfigurationError(EventkitError):
    """A registration or setting is invalid; raised at import or start-up, never per record."""


class DuplicateHandlerError(ConfigurationError):
    """The same ``(topic, event_type)`` pair was registered twice."""


class PoisonRecordError(EventkitError):
    """A record that can never succeed; it goes to the dead-letter topic at once.

    ``reason`` is a short, bounded enum-like string used in metrics and DLQ headers.
    """

    reason = "poison"


class OversizedRecordError(PoisonRecordError):
    """The record value or its headers exceed the configured bounds."""

    reason = "oversized"


class UndecodableRecordError(PoisonRecordError):
    """The record value is not a decodable document (bad JSON, bad UTF-8, nested too deep)."""

    reason = "undecodable"


class InvalidEnvelopeError(PoisonRecordError):
    """The envelope decodes but misses required fields or has fields of the wrong type."""

    reason = "invalid_envelope"


class InvalidPayloadError(PoisonRecordError):
    """The envelope's ``data`` does not match the payload type the handler declares."""

    reason = "invalid_payload"


class UnroutableEventError(PoisonRecordError):
    """No handler is registered for the event type and unknown types are dead-lettered."""

    reason = "unroutable"


class NonRetryableError(EventkitError):
    """Raised by a handler to send the record to the dead-letter topic without retrying."""


class AttemptsExhaustedError(NonRetryableError):
    """The store counted ``max_attempts`` handler starts already, some by deliveries that never
    finished (a worker that crashed in the handler): dead-lettered without running again."""

    reason = "attempts_exhausted"


class HandlerCancelledError(EventkitError):
    """A handler raised ``CancelledError`` while its task was not being cancelled; it is
    treated as a failed attempt instead of silently ending the partition's lane."""


class RetryableError(EventkitError):
    """Raised by a handler to ask for another attempt (any unclassified exception retries too)."""


class InfrastructureError(EventkitError):
    """A dependency failed; the record is deferred and retried without spending attempts."""


class StoreUnavailableError(InfrastructureError):
    """The idempotency store could not be reached or did not answer in time."""


class PublishError(InfrastructureError):
    """A publish was not acknowledged by the broker."""


class ConsumerStartError(InfrastructureError):
    """The consumer could not connect to the broker or join its group."""


class CommitFailedError(InfrastructureError):
    """The broker refused an offset commit, for example after the group moved on."""


class LeaseLostError(InfrastructureError):
    """The idempotency lease was lost while the handler ran; its result is not marked done."""


class PublisherNotStartedError(EventkitError):
    """A publish was attempted before the publisher started or after it stopped."""
