"""``KafkaPublisher``: the ``Publisher`` port on aiokafka's producer, ``acks="all"`` always."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from eventkit.errors import PublisherNotStartedError, PublishError
from eventkit.transports.kafka import options_for

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventkit.ports import Headers, OutgoingRecord
    from eventkit.transports.kafka_settings import KafkaSettings


def producer_options(settings: KafkaSettings) -> dict[str, Any]:
    """The aiokafka producer options of ``settings``, every contract-relevant one explicit."""
    return {
        **options_for(AIOKafkaProducer, settings),
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "acks": "all",
        "enable_idempotence": settings.enable_idempotence,
        "linger_ms": settings.linger_ms,
        "max_request_size": settings.max_request_size,
        "request_timeout_ms": settings.producer_request_timeout_ms,
        "key_serializer": None,
        "value_serializer": None,
    }


class KafkaPublisher:
    """Sends raw records and returns once every in-sync replica has them."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._client: AIOKafkaProducer | None = None
        self._stopped = False

    async def start(self) -> None:
        if self._client is not None:
            return
        client = AIOKafkaProducer(**producer_options(self._settings))
        try:
            await client.start()
        except BaseException as exc:
            # a failed or cancelled start still opened connections: close them
            await client.stop()
            if not isinstance(exc, KafkaError):
                raise
            raise PublishError(
                f"cannot connect a producer to {self._settings.bootstrap_servers}: {exc!r}"
            ) from exc
        self._client = client
        self._stopped = False

    async def stop(self) -> None:
        """Flush what is pending, then close; later sends raise ``PublisherNotStartedError``."""
        self._stopped = True
        client = self._client
        if client is not None:
            await client.stop()
            # forgotten only once closed: a stop cut short can be called again
            self._client = None

    def _running(self, topic: str) -> AIOKafkaProducer:
        if self._client is None:
            state = "was stopped" if self._stopped else "is not started (await start() first)"
            raise PublisherNotStartedError(f"cannot send to {topic!r}: the publisher {state}")
        return self._client

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        client = self._running(topic)
        try:
            await client.send_and_wait(topic, value, key=key, headers=list(headers))
        except KafkaError as exc:
            raise PublishError(f"send to {topic!r} was not acknowledged: {exc!r}") from exc

    async def send_many(self, records: Sequence[OutgoingRecord]) -> None:
        """Send all records pipelined; return when every one is acknowledged.

        Records of one partition are sent in the order given. If any send fails the call
        raises ``PublishError`` after all of them settled, so none is left in flight.
        """
        if not records:
            return
        client = self._running(records[0].topic)
        pending: list[asyncio.Future[Any]] = []
        try:
            for r in records:
                pending.append(
                    await client.send(r.topic, r.value, key=r.key, headers=list(r.headers))
                )
        except KafkaError as exc:
            # the ones already sent settle before the error is raised: none is left in flight
            await asyncio.gather(*pending, return_exceptions=True)
            raise PublishError(f"send of a batch was not accepted: {exc!r}") from exc
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise PublishError(
                f"{len(failures)} of {len(records)} records were not acknowledged: {failures[0]!r}"
            ) from failures[0]
