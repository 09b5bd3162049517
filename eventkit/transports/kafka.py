"""``KafkaConsumer``: the ``Consumer`` port on aiokafka, the only module that consumes with it.

- Client defaults are set, not inherited (R1): see ``KafkaSettings``.
- Records come out raw: no deserializers, so a bad record is the dispatcher's business.
- Rebalance listener calls are forwarded to the worker; their errors are caught and counted
  here too, since aiokafka only logs them.
- A record is never returned for a partition before the worker heard it was assigned; if
  aiokafka fetched one in that window, the position is moved back to it (nothing is lost).
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import IllegalStateError, KafkaError

from eventkit.errors import CommitFailedError, ConfigurationError, ConsumerStartError
from eventkit.ports import TopicPartition

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

    from eventkit.ports import RebalanceListener, Record
    from eventkit.transports.kafka_settings import KafkaSettings

logger = logging.getLogger("eventkit.transports.kafka")


def options_for(client_class: type, settings: KafkaSettings) -> dict[str, Any]:
    """The ``client_options`` that ``client_class`` takes (they are shared by all clients)."""
    accepted = inspect.signature(client_class).parameters
    return {name: value for name, value in settings.client_options.items() if name in accepted}


def check_client_options(settings: KafkaSettings) -> None:
    """Refuse ``client_options`` that no aiokafka client takes, naming them."""
    known: set[str] = set()
    for client_class in (AIOKafkaConsumer, AIOKafkaProducer, AIOKafkaAdminClient):
        known.update(inspect.signature(client_class).parameters)
    unknown = sorted(set(settings.client_options) - known)
    if unknown:
        raise ConfigurationError(f"KafkaSettings.client_options: no Kafka client takes {unknown}")


def consumer_options(settings: KafkaSettings, group_id: str) -> dict[str, Any]:
    """The aiokafka consumer options of ``settings``, every contract-relevant one explicit."""
    return {
        **options_for(AIOKafkaConsumer, settings),
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "key_deserializer": None,
        "value_deserializer": None,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "rebalance_timeout_ms": settings.rebalance_timeout_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "request_timeout_ms": settings.request_timeout_ms,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "fetch_max_bytes": settings.fetch_max_bytes,
        "max_partition_fetch_bytes": settings.max_partition_fetch_bytes,
    }


class KafkaConsumer:
    """A member of one consumer group on Kafka; commits only the explicit offsets it is given."""

    def __init__(self, settings: KafkaSettings, group_id: str) -> None:
        self._settings = settings
        self._group_id = group_id
        self._client: AIOKafkaConsumer | None = None
        self._listener: _Listener | None = None
        self._pausing: set[KafkaTopicPartition] = set()

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def listener_errors(self) -> int:
        """Listener calls that raised (the worker catches its own; this counts the rest)."""
        return self._listener.errors if self._listener is not None else 0

    async def start(self, topics: Collection[str], listener: RebalanceListener) -> None:
        if self._client is not None:
            raise RuntimeError("the Kafka consumer is started already")
        client = AIOKafkaConsumer(**consumer_options(self._settings, self._group_id))
        self._listener = _Listener(listener)
        self._pausing = self._listener.pausing
        client.subscribe(topics=sorted(topics), listener=self._listener)
        try:
            await client.start()
        except BaseException as exc:
            # a failed or cancelled start still opened connections: close them
            await client.stop()
            if isinstance(exc, KafkaError):
                raise ConsumerStartError(
                    f"cannot join group {self._group_id!r} on "
                    f"{self._settings.bootstrap_servers}: {exc!r}"
                ) from exc
            raise
        self._client = client

    async def stop(self) -> None:
        client = self._client
        self._pausing = set()
        if client is not None:
            # aiokafka leaves the group here without calling the revoke listener (R3)
            await client.stop()
            # forgotten only once closed: a stop cut short can be called again
            self._client = None

    def _running(self) -> AIOKafkaConsumer:
        if self._client is None:
            raise RuntimeError("the Kafka consumer is not started")
        return self._client

    async def getmany(
        self,
        timeout: float,  # noqa: ASYNC109 - a bounded poll, passed on to the client
        max_records: int,
    ) -> Mapping[TopicPartition, Sequence[Record]]:
        client = self._running()
        held = await self._apply_pauses(client) if self._pausing else None
        # with records in hand there is nothing to wait for
        wait_ms = 0 if held else int(timeout * 1000)
        batches = await client.getmany(timeout_ms=wait_ms, max_records=max_records)
        if held:
            # what was buffered before the pause comes first: offsets stay in order
            for tp, records in batches.items():
                held[tp] = [*held.get(tp, ()), *records]
            batches = held
        if not batches:
            return {}
        listener = self._listener
        assert listener is not None
        announced = listener.announced
        result: dict[TopicPartition, Sequence[Record]] = {}
        for tp, records in batches.items():
            if not records:
                continue
            if tp not in announced:
                # fetched between assignment and the listener call: read it again later (a
                # partition revoked meanwhile is read from its committed offset by its owner)
                if tp in client.assignment():
                    client.seek(tp, records[0].offset)
                continue
            result[cast("TopicPartition", tp)] = cast("Sequence[Record]", records)
        return result

    def assignment(self) -> frozenset[TopicPartition]:
        if self._client is None:
            return frozenset()
        return frozenset(TopicPartition(tp.topic, tp.partition) for tp in self._client.assignment())

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Pause at the next ``getmany``, which first returns what was fetched for them.

        aiokafka discards records it buffered for a partition once it is paused, and fetches
        them again after the resume; taking them first saves that round trip.
        """
        self._running()
        self._pausing.update(_kafka_tp(tp) for tp in partitions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        client = self._running()
        wanted = {_kafka_tp(tp) for tp in partitions}
        self._pausing -= wanted
        owned = client.assignment()
        client.resume(*(tp for tp in wanted if tp in owned))

    async def _apply_pauses(self, client: AIOKafkaConsumer) -> dict[Any, list[Any]]:
        owned = client.assignment()
        wished = [tp for tp in self._pausing if tp in owned]
        if not wished:
            self._pausing.clear()
            return {}
        # timeout 0 returns only what is buffered: no request goes to the broker (but a
        # rebalance may complete inside this await)
        held: dict[Any, list[Any]] = await client.getmany(*wished, timeout_ms=0)
        # pause only what is still wished for, still assigned and known to the worker: a
        # revoke or a resume during the await changed the wish
        announced = self._listener.announced if self._listener is not None else set()
        owned = client.assignment()
        pausing = [tp for tp in wished if tp in self._pausing and tp in owned and tp in announced]
        # wishes made during the await are applied at the next call
        self._pausing.difference_update(wished)
        if pausing:
            client.pause(*pausing)
        return held

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._running().seek(_kafka_tp(partition), offset)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit exactly these next-offsets; any refusal is a ``CommitFailedError``."""
        client = self._running()
        try:
            await client.commit({_kafka_tp(tp): offset for tp, offset in offsets.items()})
        except (KafkaError, IllegalStateError) as exc:
            raise CommitFailedError(f"offset commit refused: {exc!r}") from exc

    async def committed(self, partition: TopicPartition) -> int | None:
        offset = await self._running().committed(_kafka_tp(partition))
        return offset if offset is not None and offset >= 0 else None

    async def highwater(self, partition: TopicPartition) -> int | None:
        """The last fetch's high-water mark (stale while the partition is paused)."""
        highwater: int | None = self._running().highwater(_kafka_tp(partition))
        return highwater


def _kafka_tp(tp: TopicPartition) -> KafkaTopicPartition:
    return KafkaTopicPartition(tp.topic, tp.partition)


class _Listener(ConsumerRebalanceListener):
    """Forwards aiokafka's listener calls with eventkit's partition type; counts errors."""

    def __init__(self, target: RebalanceListener) -> None:
        self._target = target
        self.announced: set[KafkaTopicPartition] = set()
        #: pauses wished for and not applied yet; a revoke makes them moot
        self.pausing: set[KafkaTopicPartition] = set()
        self.errors = 0

    async def on_partitions_revoked(self, revoked: Iterable[KafkaTopicPartition]) -> None:
        revoked = set(revoked)
        # from here on the worker forgets these partitions: never hand it their records
        self.announced -= revoked
        self.pausing -= revoked
        try:
            await self._target.on_partitions_revoked(_ours(revoked))
        except Exception:
            self.errors += 1
            logger.exception("the partitions-revoked listener failed")

    async def on_partitions_assigned(self, assigned: Iterable[KafkaTopicPartition]) -> None:
        assigned = set(assigned)
        try:
            await self._target.on_partitions_assigned(_ours(assigned))
        except Exception:
            self.errors += 1
            logger.exception("the partitions-assigned listener failed")
        finally:
            self.announced |= assigned


def _ours(partitions: Iterable[KafkaTopicPartition]) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(tp.topic, tp.partition) for tp in partitions)
