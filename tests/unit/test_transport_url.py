"""Transport URLs: ``memory://`` names a shared in-process broker, ``kafka://`` a Kafka cluster."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest

from eventkit import ConfigurationError, EventApp, EventPublisher
from eventkit.idempotency import InMemoryIdempotencyStore
from eventkit.transports import connect, memory_broker
from eventkit.transports.kafka import KafkaConsumer, consumer_options
from eventkit.transports.kafka_admin import KafkaTopicAdmin
from eventkit.transports.kafka_publisher import KafkaPublisher, producer_options
from eventkit.transports.kafka_settings import KafkaSettings


async def test_an_app_started_on_memory_url_handles_what_a_publisher_sends_there() -> None:
    """A worker and a publisher connected to the same memory:// name share one broker."""
    name = f"shared-{uuid.uuid4().hex}"
    app = EventApp("embedded")
    handled: list[int] = []
    done = asyncio.Event()

    @app.handler("N", topic="numbers")
    async def handle(event: dict[str, Any]) -> None:
        handled.append(event["n"])
        done.set()

    memory_broker(name).create_topic("numbers", 1)
    transport = connect(f"memory://{name}", group_id=app.group_id)
    await app.start(
        consumer=transport.consumer,
        publisher=transport.publisher,
        store=InMemoryIdempotencyStore(),
    )
    sender = connect(f"memory://{name}", group_id="another-service").publisher
    await sender.start()
    try:
        await EventPublisher(sender, source_service="another").publish("numbers", "N", {"n": 7})
        await asyncio.wait_for(done.wait(), 5.0)
        assert handled == [7]
    finally:
        await sender.stop()
        await app.stop()


@pytest.mark.parametrize("url", ["memory://name/path", "redis://x", "kafka:///nohost"])
def test_an_unsupported_transport_url_fails_naming_it(url: str) -> None:
    """Anything but memory://NAME or kafka://HOSTS is a configuration error naming the URL."""
    with pytest.raises(ConfigurationError, match=re.escape(repr(url))):
        connect(url, group_id="g")


def test_a_kafka_url_gives_a_kafka_consumer_publisher_and_topic_check() -> None:
    """kafka://HOSTS?options builds the aiokafka adapters from the URL's settings."""
    transport = connect(
        "kafka://k1:9092,k2:9092?create_topics=true&linger_ms=0&enable_idempotence=off",
        group_id="billing-consumer",
    )

    assert isinstance(transport.consumer, KafkaConsumer)
    assert transport.consumer.group_id == "billing-consumer"
    assert isinstance(transport.publisher, KafkaPublisher)
    assert isinstance(transport.admin, KafkaTopicAdmin)


def test_kafka_url_options_set_settings_fields_with_their_types() -> None:
    """Query options become typed KafkaSettings fields; keyword overrides win."""
    settings = KafkaSettings.from_url(
        "kafka://k1:9092,k2:9092?create_topics=yes&session_timeout_ms=6000&client_id=billing",
        linger_ms=0,
    )

    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.create_topics is True
    assert settings.session_timeout_ms == 6000
    assert settings.client_id == "billing"
    assert settings.linger_ms == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kafka://k:9092?unknown_knob=1", "unknown Kafka option 'unknown_knob'"),
        ("kafka://k:9092?session_timeout_ms=soon", "session_timeout_ms='soon'.*not an integer"),
        ("kafka://k:9092?create_topics=perhaps", "create_topics='perhaps'.*not a boolean"),
        ("kafka://k:9092?client_options=x", "unknown Kafka option 'client_options'"),
        ("kafka://k:9092?session_timeout_ms=0", "session_timeout_ms must be at least 1"),
        ("kafka://k:9092?heartbeat_interval_ms=20000", "heartbeat_interval_ms must be below"),
        ("kafka://k:9092/path", "hosts and options only"),
    ],
)
def test_a_bad_kafka_setting_fails_naming_it(url: str, message: str) -> None:
    """A bad option in a kafka:// URL is a ConfigurationError that names the option."""
    with pytest.raises(ConfigurationError, match=message):
        KafkaSettings.from_url(url)


def test_client_options_may_not_override_what_the_contract_fixes() -> None:
    """Auto-commit, reset policy, (de)serializers, acks and idempotence are not pass-through."""
    with pytest.raises(ConfigurationError, match="enable_auto_commit"):
        KafkaSettings(client_options={"enable_auto_commit": True, "security_protocol": "SSL"})


def test_the_client_options_eventkit_relies_on_are_explicit() -> None:
    """R1: no auto-commit, earliest reset, raw bytes, acks=all, whatever aiokafka defaults to."""
    settings = KafkaSettings(bootstrap_servers="k:9092", client_options={"client_rack": "r1"})

    consumer = consumer_options(settings, "g")
    producer = producer_options(settings)

    assert consumer["enable_auto_commit"] is False
    assert consumer["auto_offset_reset"] == "earliest"
    assert consumer["key_deserializer"] is None
    assert consumer["value_deserializer"] is None
    assert consumer["group_id"] == "g"
    assert consumer["client_rack"] == "r1"
    for timeout in ("session_timeout_ms", "rebalance_timeout_ms", "request_timeout_ms"):
        assert consumer[timeout] == getattr(settings, timeout)
    assert producer["acks"] == "all"
    assert producer["enable_idempotence"] is True
    assert producer["value_serializer"] is None


async def test_starting_with_a_missing_topic_fails_naming_it() -> None:
    """app.start checks source and dead-letter topics first: a missing one is named."""
    name = f"strict-{uuid.uuid4().hex}"
    broker = memory_broker(name)
    broker.auto_create_topics = False
    broker.create_topic("numbers", 1)
    app = EventApp("strict", idempotency=False)

    @app.handler("N", topic="numbers")
    async def handle(event: dict[str, Any]) -> None: ...

    with pytest.raises(ConfigurationError, match=r"\['numbers.dlq'\]"):
        await app.start(f"memory://{name}", store=None)
    assert not app.running


def test_client_options_reach_only_the_clients_that_take_them() -> None:
    """A consumer-only option (isolation_level) goes to the consumer, not the producer."""
    settings = KafkaSettings(client_options={"isolation_level": "read_committed"})

    assert consumer_options(settings, "g")["isolation_level"] == "read_committed"
    assert "isolation_level" not in producer_options(settings)


def test_a_client_option_no_kafka_client_takes_is_refused_naming_it() -> None:
    """An unknown client option fails at connect time, not as a TypeError at start."""
    with pytest.raises(ConfigurationError, match="no_such_option"):
        connect("kafka://k:9092", group_id="g", client_options={"no_such_option": 1})


def test_an_unknown_keyword_setting_is_refused_naming_it() -> None:
    """A keyword override that is no KafkaSettings field is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="linger"):
        KafkaSettings.from_url("kafka://k:9092", linger=5)
