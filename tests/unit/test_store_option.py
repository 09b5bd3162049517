"""``start(store=...)`` and ``--idempotency-store``: what each value means, and every refusal.

The Redis start-up checks that need no server (version, cluster, eviction policy) are pure
functions of ``INFO`` fields and are tested here; the ones that need a server are in
``tests/integration/test_redis_startup.py``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any, cast

import pytest
from typer.testing import CliRunner

from eventkit import EventApp, Outcome
from eventkit.cli import cli, parse_store
from eventkit.errors import ConfigurationError
from eventkit.idempotency.redis_connect import (
    SCRIPTS,
    RedisConnection,
    check_eviction_policy,
    check_not_cluster,
    check_version,
)
from eventkit.idempotency.redis_settings import RedisSettings
from eventkit.transports import memory_broker
from eventkit.worker.runner import ExitCode
from tests.outcomes import Outcomes

if TYPE_CHECKING:
    from redis.asyncio import Redis

SECRET = "s3cr3t-pa55"
ADDRESS = "10.0.0.1:6379"


def idempotent_app() -> EventApp:
    app = EventApp("store-option", group_id=f"g-{uuid.uuid4().hex}")

    @app.handler("N", topic="numbers")
    async def handle(event: dict[str, Any]) -> None:
        pass

    return app


def broker_name() -> str:
    name = f"store-option-{uuid.uuid4().hex}"
    broker = memory_broker(name)
    broker.create_topic("numbers", 1)
    broker.create_topic("numbers.dlq", 1)
    return name


@pytest.mark.parametrize("store", ["memory", "Memory", " MEMORY "])
async def test_memory_chosen_by_name_is_an_in_memory_store_that_skips_duplicates(
    store: str,
) -> None:
    """``store="memory"`` (in any case, as the CLI option reads it) runs with an in-memory
    store: a redelivery is a ``DUPLICATE``."""
    app = idempotent_app()
    name = broker_name()
    log = Outcomes(2)
    await app.start(f"memory://{name}", store=store, observers=[log])
    try:
        envelope = await app.publisher.publish("numbers", "N", {"n": 1})
        await app.publisher.publish("numbers", "N", envelope)
        await asyncio.wait_for(log.complete.wait(), 5.0)
        assert app.redis is None, "no Redis connection without a Redis store"
    finally:
        assert await app.stop()
    assert [result.outcome for result in log.results] == [Outcome.HANDLED, Outcome.DUPLICATE]


@pytest.mark.parametrize("store", [None, "none", "None "])
async def test_no_store_for_idempotent_handlers_is_refused_naming_them(store: str | None) -> None:
    """``None`` and ``"none"`` are the same: a start-up error naming the idempotent handlers."""
    app = idempotent_app()
    with pytest.raises(ConfigurationError, match=r"idempotency is on for \[.*handle'\]"):
        await app.start(f"memory://{broker_name()}", store=store)
    assert not app.running


async def test_an_unknown_store_string_is_refused_showing_only_its_scheme() -> None:
    """A mistyped store URL is named by its scheme; its password never appears."""
    app = idempotent_app()
    with pytest.raises(ConfigurationError, match=r"'redis\+tls'") as raised:
        await app.start(f"memory://{broker_name()}", store=f"redis+tls://u:{SECRET}@h:1")
    assert SECRET not in str(raised.value)
    assert not app.running


async def test_a_bad_redis_url_fails_before_anything_connects() -> None:
    """An unknown URL option is a ``ConfigurationError`` naming it, raised by ``start``."""
    app = idempotent_app()
    with pytest.raises(ConfigurationError, match="bogus"):
        await app.start(f"memory://{broker_name()}", store="redis://127.0.0.1:1/0?bogus=1")
    assert not app.running


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("none", None),
        ("NONE", None),
        ("memory", "memory"),
        ("redis://h:1/2", RedisSettings(host="h", port=1, db=2)),
        ("rediss://h:1", RedisSettings(host="h", port=1, tls=True)),
    ],
)
def test_the_cli_store_option_reads_none_memory_and_redis_urls(value: str, expected: Any) -> None:
    """``--idempotency-store`` maps to what ``EventApp.start(store=...)`` takes."""
    assert parse_store(value) == expected


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("redis://h:1?nope=1", "['nope']"),
        (f"postgres://u:{SECRET}@h:1", "'postgres'"),
        ("memroy", "'memroy'"),
    ],
)
def test_a_bad_cli_store_option_is_refused_naming_the_option(value: str, named: str) -> None:
    """The error names ``--idempotency-store`` and what is wrong, never the password."""
    with pytest.raises(ConfigurationError) as raised:
        parse_store(value)
    message = str(raised.value)
    assert "--idempotency-store (EVENTKIT_IDEMPOTENCY_STORE)" in message
    assert named in message
    assert SECRET not in message


def test_the_worker_command_exits_2_on_a_bad_store_url() -> None:
    """``eventkit worker ... --idempotency-store BAD`` exits 2 and says which option is bad."""
    result = CliRunner().invoke(
        cli,
        [
            "worker",
            "tests.integration.idempotent_probe_app:app",
            "--broker",
            "memory://unused",
            "--idempotency-store",
            "redis://127.0.0.1:1?socket_timeout=x",
        ],
    )
    assert result.exit_code == ExitCode.CONFIGURATION
    assert "--idempotency-store" in result.output
    assert "socket_timeout='x'" in result.output


@pytest.mark.parametrize("version", ["7.0.15", "7.2.4", "8.0.0"])
def test_redis_7_and_later_pass_the_version_check(version: str) -> None:
    """``redis_version`` 7 or later is accepted."""
    check_version(ADDRESS, version)


@pytest.mark.parametrize("version", ["6.2.14", "5.0.7", "", "unknown"])
def test_older_or_unreadable_redis_versions_are_refused(version: str) -> None:
    """Below 7, or a version that cannot be read, is a ``ConfigurationError`` naming it."""
    with pytest.raises(ConfigurationError, match=ADDRESS):
        check_version(ADDRESS, version)


def test_a_cluster_node_is_refused() -> None:
    """``cluster_enabled:1`` is refused, saying Cluster is not supported yet."""
    check_not_cluster(ADDRESS, 0)
    with pytest.raises(ConfigurationError, match="Redis Cluster"):
        check_not_cluster(ADDRESS, 1)


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "allkeys-random"])
def test_an_evicting_policy_is_refused_naming_it_and_the_setting(policy: str) -> None:
    """Any policy but ``noeviction`` is refused, naming the policy and ``allow_eviction``."""
    with pytest.raises(ConfigurationError) as raised:
        check_eviction_policy(ADDRESS, policy, allow_eviction=False)
    assert repr(policy) in str(raised.value)
    assert "allow_eviction" in str(raised.value)


def test_an_allowed_evicting_policy_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """With ``allow_eviction`` the policy is logged as a WARNING and start-up goes on."""
    with caplog.at_level(logging.WARNING, logger="eventkit.idempotency"):
        check_eviction_policy(ADDRESS, "volatile-lru", allow_eviction=True)
        check_eviction_policy(ADDRESS, "noeviction", allow_eviction=False)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "volatile-lru" in record.getMessage()


def test_start_up_loads_every_script_the_redis_store_calls() -> None:
    """``SCRIPTS`` holds the text of each script object of ``redis_store``: none is missed."""
    from eventkit.idempotency import redis_store  # noqa: PLC0415 - only this test needs it

    called = {
        value.text for value in vars(redis_store).values() if type(value).__name__ == "_Script"
    }
    assert called
    assert called <= set(SCRIPTS)


class _CloseStalls:
    """A client stand-in whose first ``aclose`` never returns (cancelled by the test)."""

    def __init__(self) -> None:
        self.closes = 0

    async def aclose(self) -> None:
        self.closes += 1
        if self.closes == 1:
            await asyncio.Event().wait()


async def test_a_redis_close_cancelled_halfway_is_finished_by_the_next_close() -> None:
    """A cancelled ``close()`` leaves the connection open, so calling it again closes it
    (instead of returning at once and leaking the client's connections)."""
    client = _CloseStalls()
    connection = RedisConnection(cast("Redis", client), RedisSettings.from_url("redis://h:1"))
    closing = asyncio.create_task(connection.close())
    await asyncio.sleep(0)
    assert client.closes == 1, "precondition: the first close reached the client"
    closing.cancel()
    await asyncio.gather(closing, return_exceptions=True)
    await connection.close()
    assert client.closes == 2
    await connection.close()
    assert client.closes == 2, "a closed connection is not closed again"
