"""Worker processes on the real broker: kills, signals, group members coming and going.

Every test follows RELIABILITY.md "Tests that can fail": producers are paced so faults land
mid-stream, the precondition is asserted at each fault, and the verdict comes from the
producer's acknowledgements, the topic read back and the probe handler's log.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import TYPE_CHECKING

import pytest

from eventkit._crashpoints import CRASH_EXIT_CODE
from eventkit.worker.runner import ExitCode
from tests.brokers import committed_offsets, create_topic, topic_ends
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

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

PARTITIONS = 3


@pytest.fixture
async def setup(kafka_bootstrap: str, tmp_path: Path) -> ProbeSetup:
    """A fresh topic and group on the real broker, and a probe log."""
    suffix = uuid.uuid4().hex[:8]
    probe = ProbeSetup(
        bootstrap=kafka_bootstrap,
        topic=f"probe-{suffix}",
        group=f"probe-group-{suffix}",
        log=tmp_path / "probe.log",
    )
    await create_topic(kafka_bootstrap, probe.topic, PARTITIONS)
    await create_topic(kafka_bootstrap, f"{probe.topic}.dlq", PARTITIONS)
    return probe


@pytest.fixture
def spawn(setup: ProbeSetup, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start probe workers; every one still alive is killed at teardown."""
    workers = Workers(setup, tmp_path)
    yield workers.start
    workers.close()


async def assert_committed_at_end(setup: ProbeSetup) -> None:
    """The group's committed offset of every partition equals the partition's end (I5)."""
    ends = await topic_ends(setup.bootstrap, setup.topic)
    committed = await committed_offsets(setup.bootstrap, setup.group, setup.topic)
    assert committed == ends


async def test_a_worker_killed_mid_stream_loses_nothing_after_a_restart(
    setup: ProbeSetup, spawn: Callable[..., WorkerProcess]
) -> None:
    """SIGKILL with records in flight and lag: a restarted worker handles every acked event.

    A small lane buffer makes backpressure pause and resume partitions all along the way.
    """
    log = ProbeLog(setup.log)
    first = spawn(PROBE_MAX_BUFFERED="8")
    async with PacedProducer(setup.bootstrap, setup.topic) as producer:
        # three lanes at 30 ms a record handle 100/s: a backlog of fetched records builds up
        producing = asyncio.create_task(producer.publish(600, rate=150, sleep=0.03))
        await wait_for(lambda: len(log.done()) >= 100, "the first worker to handle 100 events")

        assert not producing.done(), "the kill must land mid-stream"
        assert len(producer.acked) > len(log.done()) + 20, "lag > 0 at the kill"
        assert log.in_flight(first.pid), "records in flight at the kill"
        first.kill()
        assert await first.exit_code() == -signal.SIGKILL
        handled_by_first = log.done_by(first.pid)

        second = spawn(PROBE_MAX_BUFFERED="8")
        await producing
    await wait_for(lambda: set(producer.acked) <= set(log.done()), "every acked event handled")
    second.send(signal.SIGTERM)
    assert await second.exit_code() == ExitCode.CLEAN

    done = log.done()
    assert set(done) == set(producer.acked), "nothing lost, nothing phantom"
    assert handled_by_first, "the first worker handled records before the kill"
    await assert_committed_at_end(setup)


async def test_sigterm_under_load_drains_and_commits_so_a_restart_redelivers_nothing(
    setup: ProbeSetup, spawn: Callable[..., WorkerProcess]
) -> None:
    """SIGTERM mid-stream finishes in-flight records and commits them: no event runs twice."""
    log = ProbeLog(setup.log)
    first = spawn()
    async with PacedProducer(setup.bootstrap, setup.topic) as producer:
        producing = asyncio.create_task(producer.publish(400, rate=100, sleep=0.05))
        await wait_for(lambda: len(log.done()) >= 60, "the first worker to handle 60 events")

        assert log.in_flight(first.pid), "records in flight at SIGTERM"
        assert not producing.done(), "SIGTERM must land mid-stream"
        first.send(signal.SIGTERM)
        assert await first.exit_code() == ExitCode.CLEAN, first.output()
        assert not log.in_flight(first.pid), "the drain finished what had started"

        second = spawn()
        await producing
    await wait_for(lambda: set(producer.acked) <= set(log.done()), "every acked event handled")
    second.send(signal.SIGTERM)
    assert await second.exit_code() == ExitCode.CLEAN

    done = log.done()
    assert set(done) == set(producer.acked)
    twice = sorted(event for event, count in done.items() if count > 1)
    assert twice == [], "a restart after a clean stop redelivers nothing already handled"
    await assert_committed_at_end(setup)


async def test_two_workers_share_partitions_and_the_survivor_takes_over(
    setup: ProbeSetup, spawn: Callable[..., WorkerProcess]
) -> None:
    """Two members split the partitions; when one stops mid-stream the other finishes all.

    Small lane buffers keep partitions pausing and resuming across the rebalances.
    """
    log = ProbeLog(setup.log)
    first, second = spawn(PROBE_MAX_BUFFERED="8"), spawn(PROBE_MAX_BUFFERED="8")
    async with PacedProducer(setup.bootstrap, setup.topic) as producer:
        producing = asyncio.create_task(producer.publish(900, rate=150, sleep=0.004))
        await wait_for(
            lambda: {first.pid, second.pid} <= log.pids(), "both workers to handle records"
        )

        assert not producing.done(), "the member must leave mid-stream"
        second.send(signal.SIGTERM)
        assert await second.exit_code() == ExitCode.CLEAN, second.output()
        await producing
    await wait_for(lambda: set(producer.acked) <= set(log.done()), "every acked event handled")
    later = len(log.done_by(first.pid))
    first.send(signal.SIGTERM)
    assert await first.exit_code() == ExitCode.CLEAN

    done = log.done()
    assert set(done) == set(producer.acked)
    assert later > len(producer.acked) // 2, "the survivor took over the leaver's partitions"
    twice = sorted(event for event, count in done.items() if count > 1)
    assert twice == [], "revoke drains and commits before the partitions move"
    await assert_committed_at_end(setup)


async def test_an_idle_worker_stops_at_once_on_sigterm(
    setup: ProbeSetup, spawn: Callable[..., WorkerProcess]
) -> None:
    """A worker with nothing to do exits 0 promptly after SIGTERM."""
    log = ProbeLog(setup.log)
    worker = spawn()
    async with PacedProducer(setup.bootstrap, setup.topic) as producer:
        await producer.publish(3, rate=100)
    await wait_for(lambda: len(log.done()) == 3, "the worker to join and handle 3 events")

    loop = asyncio.get_running_loop()
    sent = loop.time()
    worker.send(signal.SIGTERM)
    code = await worker.exit_code()

    assert code == ExitCode.CLEAN
    assert loop.time() - sent < 5.0, "an idle worker does not wait for anything"


async def test_a_second_signal_exits_at_once_without_committing(
    setup: ProbeSetup, spawn: Callable[..., WorkerProcess]
) -> None:
    """SIGTERM starts a drain of slow records; a second SIGTERM aborts it: exit 4, no commit.

    Periodic commits are off, so only the drain would commit the fast records that finished.
    """
    log = ProbeLog(setup.log)
    worker = spawn(PROBE_DRAIN_TIMEOUT="60", PROBE_COMMIT_INTERVAL="3600")
    async with PacedProducer(setup.bootstrap, setup.topic) as producer:
        await producer.publish(12, rate=100, prefix="fast")
        await producer.publish(6, rate=100, prefix="slow", sleep=30.0)
    await wait_for(
        lambda: len(log.done()) == 12 and bool(log.in_flight(worker.pid)),
        "the fast records finished and a slow one in flight",
    )

    worker.send(signal.SIGTERM)
    await asyncio.sleep(0.5)  # the first signal's drain is under way
    worker.send(signal.SIGTERM)
    code = await worker.exit_code(timeout=10)

    assert code == ExitCode.ABORTED, worker.output()
    assert set(log.done()) == {f"fast{n}" for n in range(12)}, "no slow record finished"
    committed = await committed_offsets(setup.bootstrap, setup.group, setup.topic)
    assert set(committed.values()) == {None}, "an abort commits nothing, not even finished work"


async def test_a_crash_after_records_finished_and_before_their_commit_redelivers_them(
    setup: ProbeSetup, spawn: Callable[..., WorkerProcess]
) -> None:
    """Crash point before_commit: what the dead worker finished is handled again, none lost."""
    log = ProbeLog(setup.log)
    first = spawn(EVENTKIT_CRASH_POINT="before_commit")
    async with PacedProducer(setup.bootstrap, setup.topic) as producer:
        await producer.publish(120, rate=200, sleep=0.002)
        assert await first.exit_code() == CRASH_EXIT_CODE, first.output()
        finished_uncommitted = log.done_by(first.pid)
        assert finished_uncommitted, "records had finished when the worker died"

        second = spawn()
        await wait_for(
            lambda: set(producer.acked) <= log.done_by(second.pid),
            "the second worker to handle every acked event",
        )
    second.send(signal.SIGTERM)
    assert await second.exit_code() == ExitCode.CLEAN

    assert finished_uncommitted <= log.done_by(second.pid), "uncommitted work is redelivered"
    assert set(log.done()) == set(producer.acked)
    await assert_committed_at_end(setup)


async def test_a_crash_during_the_revoke_drain_loses_nothing(
    setup: ProbeSetup, spawn: Callable[..., WorkerProcess]
) -> None:
    """Crash point revoke_drain with records in flight: the next owner handles them all."""
    log = ProbeLog(setup.log)
    first = spawn(EVENTKIT_CRASH_POINT="revoke_drain")
    async with PacedProducer(setup.bootstrap, setup.topic) as producer:
        producing = asyncio.create_task(producer.publish(90, rate=30, sleep=0.3))
        await wait_for(lambda: len(log.done()) >= 6, "the first worker to handle records")

        second = spawn()  # its join makes the first worker revoke and drain
        assert await first.exit_code() == CRASH_EXIT_CODE, first.output()
        cut_off = log.in_flight(first.pid)
        assert cut_off, "records were in flight when the drain was cut"
        await producing
        await wait_for(lambda: set(producer.acked) <= set(log.done()), "every acked event")
    second.send(signal.SIGTERM)
    assert await second.exit_code() == ExitCode.CLEAN

    assert cut_off <= log.done_by(second.pid)
    assert set(log.done()) == set(producer.acked)
    await assert_committed_at_end(setup)


async def test_key_ordered_workers_keep_each_keys_order(
    setup: ProbeSetup, spawn: Callable[..., WorkerProcess]
) -> None:
    """With ordering="key", records of one key finish in the order they were produced."""
    log = ProbeLog(setup.log)
    worker = spawn(PROBE_ORDERING="key")
    async with PacedProducer(setup.bootstrap, setup.topic) as producer:
        # a key's even records are slow and its odd ones fast: unordered, odd ones overtake
        await producer.publish(
            240, rate=400, sleep=lambda n: 0.03 if (n // 16) % 2 == 0 else 0.001, keys=16
        )
        await wait_for(lambda: set(producer.acked) <= set(log.done()), "every acked event")
    worker.send(signal.SIGTERM)
    assert await worker.exit_code() == ExitCode.CLEAN

    order = log.order_by_key()
    assert len(order) == 16
    for key, seqs in order.items():
        assert seqs == sorted(seqs), f"key {key} out of order: {seqs}"
    await assert_committed_at_end(setup)
