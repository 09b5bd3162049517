"""Atomic-effect mode in real worker processes: killed at the DONE mark, counted exactly once.

Workers run ``tests.integration.atomic_probe_app`` on the session's broker with a
``redis://`` idempotency store on a private ``redis-server``; the handler counts each event
through ``RedisEffects``. A worker dies at a named crash point (``before_done``: handler
returned, writes staged, nothing applied; ``after_done``: writes and DONE applied, offset not
committed), a second one finishes the stream. Ground truth: the producer's acknowledged ids
and what Redis holds, never eventkit's logs (RELIABILITY.md I1, I2).
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import TYPE_CHECKING, cast

import pytest
import redis

from eventkit._crashpoints import CRASH_EXIT_CODE
from eventkit.worker.runner import ExitCode
from tests.brokers import committed_offsets, create_topic, topic_ends
from tests.integration.atomic_probe_app import COUNT_KEY, IDS_KEY
from tests.integration.harness import (
    PacedProducer,
    ProbeLog,
    ProbeSetup,
    WorkerProcess,
    Workers,
    wait_for,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from eventkit.embedded_redis import EmbeddedRedis

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

PARTITIONS = 3
EVENTS = 300
#: events per second: production spans 10 s, well past a worker's join on a busy machine
RATE = 30


@pytest.fixture
def keyspace(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A plain client on the test's Redis: where the test reads what was applied."""
    client = redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=5.0)
    yield client
    client.close()


@pytest.fixture
async def setup(kafka_bootstrap: str, tmp_path: Path, redis_server: EmbeddedRedis) -> ProbeSetup:
    """A fresh topic and group, a probe log, and workers pointed at the test's Redis."""
    suffix = uuid.uuid4().hex[:8]
    probe = ProbeSetup(
        bootstrap=kafka_bootstrap,
        topic=f"atomic-{suffix}",
        group=f"atomic-group-{suffix}",
        log=tmp_path / "probe.log",
        extra_env={"EVENTKIT_IDEMPOTENCY_STORE": redis_server.url},
    )
    await create_topic(kafka_bootstrap, probe.topic, PARTITIONS)
    await create_topic(kafka_bootstrap, f"{probe.topic}.dlq", PARTITIONS)
    return probe


@pytest.fixture
def spawn(setup: ProbeSetup, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start atomic probe workers; every one still alive is killed at teardown."""
    workers = Workers(setup, tmp_path, app="tests.integration.atomic_probe_app:app")
    yield workers.start
    workers.close()


def applied(keyspace: redis.Redis) -> tuple[int, set[str]]:
    """The counter and the set of counted ids, as Redis holds them."""
    count = cast("bytes | None", keyspace.get(COUNT_KEY))
    ids = cast("set[bytes]", keyspace.smembers(IDS_KEY))
    return int(count or 0), {member.decode() for member in ids}


async def crash_and_finish(
    setup: ProbeSetup,
    spawn: Callable[..., WorkerProcess],
    keyspace: redis.Redis,
    crash_point: str,
) -> tuple[list[str], int, set[str]]:
    """Run a worker that dies at ``crash_point`` mid-stream, then one that finishes; return
    the acked ids, the counter and the runs of the first worker at its crash."""
    log = ProbeLog(setup.log)
    first = spawn(EVENTKIT_CRASH_POINT=crash_point)
    async with PacedProducer(setup.bootstrap, setup.topic) as producer:
        producing = asyncio.create_task(producer.publish(EVENTS, rate=RATE))
        assert await first.exit_code() == CRASH_EXIT_CODE, first.output()
        assert not producing.done(), "the crash must land mid-stream"
        ran_before_crash = log.done_by(first.pid)
        count_at_crash, _ = applied(keyspace)

        second = spawn()
        await producing
        acked = list(producer.acked)
    await wait_for(lambda: applied(keyspace)[1] >= set(acked), "every acked event counted")
    await wait_for_committed_to_end(setup)
    second.send(signal.SIGTERM)
    assert await second.exit_code() == ExitCode.CLEAN, second.output()
    return acked, count_at_crash, ran_before_crash


async def wait_for_committed_to_end(setup: ProbeSetup) -> None:
    """Quiescence: the group committed every partition to its end (I5)."""
    for _ in range(300):
        ends = await topic_ends(setup.bootstrap, setup.topic)
        if await committed_offsets(setup.bootstrap, setup.group, setup.topic) == ends:
            return
        await asyncio.sleep(0.2)  # polling the broker for the group's commits
    raise AssertionError("the group never committed to the end")


async def test_a_crash_before_done_applies_the_staged_writes_once_after_redelivery(
    setup: ProbeSetup, spawn: Callable[..., WorkerProcess], keyspace: redis.Redis
) -> None:
    """Killed after the handler returned and before DONE: nothing of that run was applied;
    the redelivery runs it again and the counter ends at exactly the distinct events."""
    acked, count_at_crash, ran_before_crash = await crash_and_finish(
        setup, spawn, keyspace, "before_done"
    )
    assert ran_before_crash, "a handler had returned when the worker died"
    assert count_at_crash == 0, "staged writes are not applied before DONE"

    count, ids = applied(keyspace)
    runs = ProbeLog(setup.log).done()
    assert ids == set(acked), "no event lost, none phantom"
    assert count == len(set(acked)), "each event counted exactly once"
    assert ran_before_crash <= {event for event, n in runs.items() if n >= 2}, (
        "the crashed run was redelivered and ran again"
    )


async def test_a_crash_after_done_redelivers_duplicates_that_count_nothing_more(
    setup: ProbeSetup, spawn: Callable[..., WorkerProcess], keyspace: redis.Redis
) -> None:
    """Killed after DONE and its writes and before the commit: the redelivered record is a
    duplicate, and the counter ends at exactly the distinct events."""
    acked, count_at_crash, ran_before_crash = await crash_and_finish(
        setup, spawn, keyspace, "after_done"
    )
    assert count_at_crash == 1, "the writes and DONE of one record were applied at the crash"
    assert len(ran_before_crash) == 1

    count, ids = applied(keyspace)
    runs = ProbeLog(setup.log).done()
    assert ids == set(acked), "no event lost, none phantom"
    assert count == len(set(acked)), "each event counted exactly once"
    assert runs[next(iter(ran_before_crash))] == 1, "a done record never runs again"
