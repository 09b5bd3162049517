"""``DeadLetterPublisher``: a poison or exhausted record, its bytes and why, on the DLQ topic."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from eventkit.errors import AttemptsExhaustedError, PoisonRecordError

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventkit.delivery import Delivery
    from eventkit.ports import Publisher

#: Prefix of every header eventkit adds to a dead letter.
HEADER_PREFIX = "dlq_"
MAX_MESSAGE_CHARS = 1024


def default_dead_letter_topic(topic: str) -> str:
    """``<topic>.dlq``."""
    return f"{topic}.dlq"


def failure_reason(error: BaseException) -> str:
    """A bounded reason label: the poison kind, or the kind of handler failure."""
    if isinstance(error, PoisonRecordError | AttemptsExhaustedError):
        return error.reason
    return "handler_error"


def _iso(timestamp: float | None) -> bytes:
    if timestamp is None:
        return b""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().encode()


class DeadLetterPublisher:
    """Sends a record to its dead-letter topic with the original bytes and provenance headers.

    The value is the original value (or its first ``max_value_bytes`` plus a sha256 of the
    whole), the key the original key, the headers the original ones followed by ``dlq_*``
    headers: original topic, partition, offset and timestamp, consumer group, reason,
    exception class and (capped) message, attempts, first and last failure time. ``dlq_*``
    headers of an earlier dead-lettering (a replay that failed again) are replaced, not
    repeated; original headers over ``max_header_bytes`` in all are left out, their size
    recorded in ``dlq_dropped_header_bytes``, so an oversized record can still be
    dead-lettered. The call returns once the broker acknowledged; otherwise it raises
    ``PublishError`` and the record must stay unfinished.
    """

    def __init__(
        self,
        transport: Publisher,
        *,
        group_id: str,
        topic_for: Callable[[str], str] = default_dead_letter_topic,
        max_value_bytes: int = 512 * 1024,
        max_header_bytes: int = 16 * 1024,
    ) -> None:
        self._transport = transport
        self._group_id = group_id.encode()
        self._topic_for = topic_for
        self._max_value_bytes = max_value_bytes
        self._max_header_bytes = max_header_bytes

    def topic_for(self, topic: str) -> str:
        """The dead-letter topic of a source topic."""
        return self._topic_for(topic)

    async def send(self, delivery: Delivery, error: BaseException) -> None:
        """Publish the dead letter of ``delivery`` failed with ``error``."""
        record = delivery.record
        value = record.value if record.value is not None else b""
        message = str(error)[:MAX_MESSAGE_CHARS]
        kept = [
            (name, header_value)
            for name, header_value in record.headers
            if not name.startswith(HEADER_PREFIX)
        ]
        kept_bytes = sum(len(name) + len(header_value or b"") for name, header_value in kept)
        if kept_bytes > self._max_header_bytes:
            kept = [(HEADER_PREFIX + "dropped_header_bytes", str(kept_bytes).encode())]
        headers = [
            *kept,
            (HEADER_PREFIX + "original_topic", record.topic.encode()),
            (HEADER_PREFIX + "original_partition", str(record.partition).encode()),
            (HEADER_PREFIX + "original_offset", str(record.offset).encode()),
            (HEADER_PREFIX + "original_timestamp", str(record.timestamp).encode()),
            (HEADER_PREFIX + "consumer_group", self._group_id),
            (HEADER_PREFIX + "reason", failure_reason(error).encode()),
            (HEADER_PREFIX + "exception_class", _qualified_name(error).encode()),
            (HEADER_PREFIX + "exception_message", message.encode("utf-8", "replace")),
            (HEADER_PREFIX + "attempts", str(delivery.attempt).encode()),
            (HEADER_PREFIX + "first_failure", _iso(delivery.first_failure)),
            (HEADER_PREFIX + "last_failure", _iso(delivery.last_failure)),
        ]
        if len(value) > self._max_value_bytes:
            headers.append(
                (HEADER_PREFIX + "value_sha256", hashlib.sha256(value).hexdigest().encode())
            )
            headers.append((HEADER_PREFIX + "value_bytes", str(len(value)).encode()))
            value = value[: self._max_value_bytes]
        await self._transport.send(
            self._topic_for(record.topic), value, key=record.key, headers=headers
        )


def _qualified_name(error: BaseException) -> str:
    cls = type(error)
    return f"{cls.__module__}.{cls.__qualname__}"
