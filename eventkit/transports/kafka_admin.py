"""``KafkaTopicAdmin``: the start-up check that every topic a worker needs exists (R1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from eventkit.errors import ConfigurationError
from eventkit.transports.kafka import options_for

if TYPE_CHECKING:
    from collections.abc import Collection

    from eventkit.transports.kafka_settings import KafkaSettings

_TOPIC_ALREADY_EXISTS = 36


class KafkaTopicAdmin:
    """Checks topics against the broker's metadata, and creates missing ones when allowed."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings

    async def ensure_topics(self, topics: Collection[str]) -> None:
        """Return when all ``topics`` exist; raise ``ConfigurationError`` naming the missing.

        With ``KafkaSettings.create_topics`` the missing ones are created first.
        """
        settings = self._settings
        client = AIOKafkaAdminClient(
            **options_for(AIOKafkaAdminClient, settings),
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{settings.client_id}-admin",
            request_timeout_ms=settings.request_timeout_ms,
        )
        try:
            await client.start()
            existing = set(await client.list_topics())
            missing = sorted(set(topics) - existing)
            if not missing:
                return
            if not settings.create_topics:
                raise ConfigurationError(
                    f"topics {missing} do not exist on {settings.bootstrap_servers}: create "
                    "them, or allow eventkit to (KafkaSettings.create_topics, "
                    "?create_topics=true in a kafka:// URL)"
                )
            await _create(client, missing, settings)
        except KafkaError as exc:
            raise ConfigurationError(
                f"cannot check topics on {settings.bootstrap_servers}: {exc!r}"
            ) from exc
        finally:
            await client.close()


async def _create(client: AIOKafkaAdminClient, names: list[str], settings: KafkaSettings) -> None:
    response = await client.create_topics(
        [NewTopic(name, settings.topic_partitions, settings.topic_replication) for name in names]
    )
    # aiokafka builds its response classes at run time: the field is there, the type is not
    errors: list[tuple[str, int, str | None]] = cast("Any", response).topic_errors
    failed = [
        f"{topic}: {message or code}"
        for topic, code, message in errors
        if code not in (0, _TOPIC_ALREADY_EXISTS)
    ]
    if failed:
        raise ConfigurationError(f"could not create topics: {'; '.join(failed)}")
