"""The Redis idempotency store as users configure it: ``store="redis://..."`` and the CLI.

Real ``redis-server`` processes (``EmbeddedRedis``; a wrapper script adds server options
such as ``--maxmemory-policy``), the real Kafka broker where a worker runs, and real worker
processes started through ``eventkit worker``. No mocks stand in for Redis.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio

from eventkit import EventApp, EventPublisher, Outcome
from eventkit.embedded_broker import free_port
from eventkit.embedded_redis import EmbeddedRedis, find_redis_server
from eventkit.errors import ConfigurationError
from eventkit.keys import idempotency_key, namespace_for
from eventkit.transports import memory_broker
from eventkit.transports.kafka_publisher import KafkaPublisher
from eventkit.worker.runner import ExitCode
from tests.brokers import client_settings, create_topic, kafka_url
from tests.integration.harness import ProbeLog, ProbeSetup, Workers, wait_for
from tests.integration.probe_app import PROBE_EVENT, Probe
from tests.outcomes import Outcomes

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


pytestmark = [pytest.mark.integration]

WAIT = 30.0
IDEMPOTENT_APP = "tests.integration.idempotent_probe_app:app"
MAX_CLUSTER_PORT = 65535 - 10_000


def redis_with(scratch: Path, *options: str, port: int | None = None) -> EmbeddedRedis:
    """An ``EmbeddedRedis`` whose server also gets ``options`` (they override its defaults)."""
    scratch.mkdir(parents=True, exist_ok=True)
    wrapper = scratch / "redis-server-wrapper"
    extra = " ".join(shlex.quote(option) for option in options)
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(find_redis_server())} "$@" {extra}\n')
    wrapper.chmod(0o755)
    return EmbeddedRedis(binary=str(wrapper), scratch=scratch / "data", port=port)


def cluster_port() -> int:
    """A free port a Cluster node can use: its bus listens 10,000 above, so at most 55,535."""
    while (port := free_port()) > MAX_CLUSTER_PORT:
        pass
    return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A ``noeviction`` Redis shared by this module's tests (each uses its own namespace)."""
    with EmbeddedRedis(scratch=tmp_path_factory.mktemp("redis")) as running:
        yield running


async def client_names(server: EmbeddedRedis) -> list[str]:
    """The names of the clients connected to ``server`` right now (this one excluded)."""
    observer = redis.asyncio.Redis(host=server.host, port=server.port, decode_responses=True)
    try:
        own = await observer.client_id()
        return [c["name"] for c in await observer.client_list() if int(c["id"]) != own]
    finally:
        await observer.aclose()


def idempotent_app(topic: str = "numbers") -> tuple[EventApp, list[int]]:
    app = EventApp("redis-startup", group_id=f"g-{uuid.uuid4().hex[:8]}")
    handled: list[int] = []

    @app.handler("N", topic=topic)
    async def handle(event: dict[str, Any]) -> None:
        handled.append(event["n"])

    return app, handled


def memory_url() -> str:
    """A fresh in-memory broker with the app's topics, as a transport URL."""
    name = f"redis-startup-{uuid.uuid4().hex}"
    broker = memory_broker(name)
    broker.create_topic("numbers", 1)
    broker.create_topic("numbers.dlq", 1)
    return f"memory://{name}"


# --- app.start(store="redis://...") -----------------------------------------------------------


async def test_an_unreachable_redis_fails_start_naming_its_address_and_leaves_nothing_running(
    kafka_bootstrap: str,
) -> None:
    """Nothing listens on the port: ``ConfigurationError`` naming host:port and the cause;
    the app is not running and no task is left behind."""
    app, _ = idempotent_app()
    port = free_port()
    with pytest.raises(ConfigurationError) as raised:
        await app.start(kafka_url(kafka_bootstrap), store=f"redis://127.0.0.1:{port}/0")
    message = str(raised.value)
    assert f"cannot connect to Redis at 127.0.0.1:{port}" in message
    assert "Connect call failed" in message, "the cause is given"
    assert not app.running
    assert app.redis is None
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_server_with_an_evicting_policy_is_refused_naming_the_policy(
    tmp_path: Path,
) -> None:
    """``--maxmemory-policy allkeys-lru``: start fails naming the policy and
    ``allow_eviction``, and the connection it opened is closed."""
    app, _ = idempotent_app()
    with redis_with(tmp_path, "--maxmemory-policy", "allkeys-lru") as lru:
        with pytest.raises(ConfigurationError) as raised:
            await app.start(memory_url(), store=f"{lru.url}?client_name=refused")
        assert "'allkeys-lru'" in str(raised.value)
        assert "allow_eviction" in str(raised.value)
        assert not app.running
        assert "refused" not in await client_names(lru)


async def test_allow_eviction_starts_on_an_evicting_server_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``?allow_eviction=true`` starts anyway and logs a WARNING naming the policy; the
    start-up log gives the lease, the done-TTL and the measured bytes per key."""
    app, _ = idempotent_app()
    with (
        redis_with(tmp_path, "--maxmemory-policy", "allkeys-lru") as lru,
        caplog.at_level(logging.INFO, logger="eventkit.idempotency"),
    ):
        await app.start(memory_url(), store=f"{lru.url}?allow_eviction=true")
        try:
            assert app.running
        finally:
            assert await app.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'allkeys-lru'" in warnings[0]
    assert "allow_eviction=true" in warnings[0]
    infos = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert "idempotency lease: 30 s" in infos
    assert "done-TTL of N: 604800 s" in infos
    assert "bytes per key (measured with MEMORY USAGE)" in infos


async def test_a_redis_cluster_node_is_refused(tmp_path: Path) -> None:
    """A server started with ``--cluster-enabled yes`` is refused: Cluster is not supported."""
    app, _ = idempotent_app()
    options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
    with (
        redis_with(tmp_path, *options, port=cluster_port()) as node,
        pytest.raises(ConfigurationError, match="Redis Cluster"),
    ):
        await app.start(memory_url(), store=node.url)
    assert not app.running


async def test_the_key_bytes_measured_at_start_up_match_a_real_done_key(
    server: EmbeddedRedis,
) -> None:
    """The probe key is measured as a real DONE key is, and deleted afterwards."""
    app, _ = idempotent_app()
    log = Outcomes(1)
    await app.start(memory_url(), store=server.url, observers=[log])
    try:
        connection = app.redis
        assert connection is not None
        namespace = namespace_for(app.service, app.group_id)
        measured = await connection.key_bytes(namespace)
        envelope = await app.publisher.publish("numbers", "N", {"n": 1})
        await asyncio.wait_for(log.complete.wait(), WAIT)
        observer = redis.asyncio.Redis(host=server.host, port=server.port)
        try:
            real = await observer.memory_usage(
                idempotency_key(namespace, "N", envelope.event_id), samples=0
            )
            assert len(await observer.keys(f"{namespace}:*")) == 1, "the probe key is gone"
        finally:
            await observer.aclose()
    finally:
        assert await app.stop()
    assert measured is not None
    assert real is not None
    assert abs(measured - real) <= 16, "same fields, same key length: about the same size"


async def test_a_kafka_app_with_a_redis_url_skips_the_second_delivery_and_closes_on_stop(
    kafka_bootstrap: str, server: EmbeddedRedis
) -> None:
    """End to end on Kafka: the same envelope twice is HANDLED then DUPLICATE, the DONE key
    is in Redis, and ``stop()`` closes the app's connections (gone from ``CLIENT LIST``)."""
    topic = f"redis-e2e-{uuid.uuid4().hex[:8]}"
    app, handled = idempotent_app(topic)
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    log = Outcomes(2)
    url = kafka_url(kafka_bootstrap, create_topics="true", topic_partitions=1)
    await app.start(url, store=f"{server.url}?client_name={name}", observers=[log])
    try:
        assert app.redis is not None
        assert await app.redis.memory_used() > 0
        envelope = await app.publisher.publish(topic, "N", {"n": 7}, key="k")
        # a redelivery: the same envelope, so the same event_id
        await app.publisher.publish(topic, "N", envelope, key="k")
        await asyncio.wait_for(log.complete.wait(), WAIT)
        assert name in await client_names(server)
    finally:
        assert await app.stop()
    assert [result.outcome for result in log.results] == [Outcome.HANDLED, Outcome.DUPLICATE]
    assert handled == [7]
    observer = redis.asyncio.Redis(host=server.host, port=server.port, decode_responses=True)
    try:
        key = idempotency_key(namespace_for(app.service, app.group_id), "N", envelope.event_id)
        assert await observer.hget(key, "out") == "handled"
    finally:
        await observer.aclose()
    assert name not in await client_names(server)
    assert app.redis is None


# --- eventkit worker --idempotency-store ------------------------------------------------------


@pytest.fixture
def setup(kafka_bootstrap: str, tmp_path: Path) -> ProbeSetup:
    suffix = uuid.uuid4().hex[:8]
    return ProbeSetup(
        bootstrap=kafka_bootstrap,
        topic=f"redis-probe-{suffix}",
        group=f"redis-probe-group-{suffix}",
        log=tmp_path / "probe.log",
    )


@pytest.fixture
def spawn(setup: ProbeSetup, tmp_path: Path) -> Iterator[Any]:
    """Start idempotent probe workers; every one still alive is killed at teardown."""
    workers = Workers(setup, tmp_path, app=IDEMPOTENT_APP)
    yield workers.start
    workers.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_worker_process_with_a_redis_store_handles_each_event_once_and_exits_0(
    setup: ProbeSetup, spawn: Any, server: EmbeddedRedis
) -> None:
    """``--idempotency-store redis://...``: every event is handled once though each was
    delivered twice, the start-up log sizes the store, and SIGTERM exits 0."""
    await create_topic(setup.bootstrap, setup.topic, 2)
    await create_topic(setup.bootstrap, f"{setup.topic}.dlq", 2)
    worker = spawn("--idempotency-store", server.url)
    log = ProbeLog(setup.log)
    transport = KafkaPublisher(client_settings(setup.bootstrap))
    await transport.start()
    try:
        publisher = EventPublisher(transport, source_service="probe-producer")
        ids = [f"r{n}" for n in range(10)]
        for n, event_id in enumerate(ids):
            envelope = await publisher.publish(
                setup.topic, PROBE_EVENT, Probe(id=event_id, seq=n), key=f"k{n % 3}"
            )
            await publisher.publish(setup.topic, PROBE_EVENT, envelope, key=f"k{n % 3}")
    finally:
        await transport.stop()
    await wait_for(lambda: set(ids) <= set(log.done()), "every event handled", WAIT)
    assert worker.process.poll() is None, worker.output()
    worker.process.send_signal(signal.SIGTERM)
    assert await worker.exit_code() == ExitCode.CLEAN, worker.output()
    assert log.done() == dict.fromkeys(ids, 1), "each event handled once, duplicates skipped"
    output = worker.output()
    assert "idempotency lease: 10 s" in output
    assert "bytes per key (measured with MEMORY USAGE)" in output


async def test_a_worker_with_idempotent_handlers_and_no_store_exits_2_naming_the_option(
    setup: ProbeSetup, spawn: Any
) -> None:
    """``--idempotency-store none`` (the default) for an idempotent app: exit 2, and the
    message names the option and its variable."""
    worker = spawn("--idempotency-store", "none")
    assert await worker.exit_code() == ExitCode.CONFIGURATION, worker.output()
    output = worker.output()
    assert "--idempotency-store (EVENTKIT_IDEMPOTENCY_STORE) is none" in output
    assert "idempotent_probe_app.probe" in output, "the message names the idempotent handler"


async def test_a_worker_with_an_unreachable_redis_exits_2_naming_the_address(
    setup: ProbeSetup, spawn: Any
) -> None:
    """``EVENTKIT_IDEMPOTENCY_STORE`` pointing at a closed port: exit 2 naming the address."""
    port = free_port()
    worker = spawn(EVENTKIT_IDEMPOTENCY_STORE=f"redis://127.0.0.1:{port}/0")
    assert await worker.exit_code() == ExitCode.CONFIGURATION, worker.output()
    assert f"cannot connect to Redis at 127.0.0.1:{port}" in worker.output()
