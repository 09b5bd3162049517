"""eventkit: declarative event consumers for Python worker services.

Register async handlers by event type; eventkit decodes, routes, deduplicates, retries,
dead-letters and commits around them. Everything public is exported here.
"""

from __future__ import annotations

from eventkit.app import EventApp
from eventkit.codecs.limits import DecodeLimits
from eventkit.context import EventContext
from eventkit.delivery import Delivery
from eventkit.envelope import EventEnvelope
from eventkit.errors import (
    CommitFailedError,
    ConfigurationError,
    DuplicateHandlerError,
    EventkitError,
    InfrastructureError,
    InvalidEnvelopeError,
    InvalidPayloadError,
    LeaseLostError,
    NonRetryableError,
    OversizedRecordError,
    PoisonRecordError,
    PublisherNotStartedError,
    PublishError,
    RetryableError,
    StoreUnavailableError,
    UndecodableRecordError,
    UnroutableEventError,
)
from eventkit.idempotency.effects import RedisEffects
from eventkit.middleware.observe import RecordObserver
from eventkit.middleware.route import UnknownEventPolicy
from eventkit.middleware.timeout import HandlerTimeoutError
from eventkit.outcomes import Outcome
from eventkit.pipeline import Middleware, Next, compose
from eventkit.ports import TopicPartition
from eventkit.publisher import EventPublisher, OutgoingEvent
from eventkit.retry import RetryPolicy
from eventkit.routing import Ordering, Router
from eventkit.worker import WorkerConfig

__version__ = "0.1.0.dev0"

__all__ = [
    "CommitFailedError",
    "ConfigurationError",
    "DecodeLimits",
    "Delivery",
    "DuplicateHandlerError",
    "EventApp",
    "EventContext",
    "EventEnvelope",
    "EventPublisher",
    "EventkitError",
    "HandlerTimeoutError",
    "InfrastructureError",
    "InvalidEnvelopeError",
    "InvalidPayloadError",
    "LeaseLostError",
    "Middleware",
    "Next",
    "NonRetryableError",
    "Ordering",
    "Outcome",
    "OutgoingEvent",
    "OversizedRecordError",
    "PoisonRecordError",
    "PublishError",
    "PublisherNotStartedError",
    "RecordObserver",
    "RedisEffects",
    "RetryPolicy",
    "RetryableError",
    "Router",
    "StoreUnavailableError",
    "TopicPartition",
    "UndecodableRecordError",
    "UnknownEventPolicy",
    "UnroutableEventError",
    "WorkerConfig",
    "__version__",
    "compose",
]
