"""A handler that crashes its worker every time ends in the dead-letter topic, on real
processes, a real broker and a real Redis: attempts are counted in Redis when a handler
starts, so each worker life spends one, and the crash loop ends after ``max_attempts``."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from eventkit import EventPublisher
from eventkit.deadletters import HEADER_PREFIX
from eventkit.transports.kafka_publisher import KafkaPublisher
from eventkit.worker.runner import ExitCode
from tests.brokers import client_settings, committed_offsets, create_topic, read_topic, topic_ends
from tests.integration.harness import ProbeLog, ProbeSetup, WorkerProcess, wait_for
from tests.integration.idempotent_probe_app import CRASH_EXIT_CODE
from tests.integration.probe_app import PROBE_EVENT, Probe

if TYPE_CHECKING:
    from pathlib import Path

    from eventkit.embedded_redis import EmbeddedRedis

IDEMPOTENT_APP = "tests.integration.idempotent_probe_app:app"
MAX_ATTEMPTS = 3


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_handler_that_crashes_its_worker_every_time_is_dead_lettered_after_max_attempts(
    kafka_bootstrap: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Events ok0, crash0, ok1 on one partition; a worker is started again whenever one dies.
    crash0 starts exactly max_attempts times, one per worker life (each life asserted to end
    in the crash), then the next worker dead-letters it with its original bytes without
    running it; ok1 runs once, ok0 at most twice (the first crash may take its queued DONE
    mark with it); the group commits to the end."""
    suffix = uuid.uuid4().hex[:8]
    setup = ProbeSetup(
        bootstrap=kafka_bootstrap,
        topic=f"crash-loop-{suffix}",
        group=f"crash-loop-group-{suffix}",
        log=tmp_path / "probe.log",
    )
    await create_topic(kafka_bootstrap, setup.topic, 1)
    await create_topic(kafka_bootstrap, f"{setup.topic}.dlq", 1)
    transport = KafkaPublisher(client_settings(kafka_bootstrap))
    await transport.start()
    try:
        publisher = EventPublisher(transport, source_service="probe-producer")
        for seq, event_id in enumerate(["ok0", "crash0", "ok1"]):
            await publisher.publish(setup.topic, PROBE_EVENT, Probe(id=event_id, seq=seq), key="k")
    finally:
        await transport.stop()
    (crash_record,) = [r for r in await read_topic(kafka_bootstrap, setup.topic) if r.offset == 1]

    log = ProbeLog(setup.log)
    env = setup.env(PROBE_MAX_ATTEMPTS=str(MAX_ATTEMPTS), PROBE_LEASE="2")
    args = ["--idempotency-store", redis_server.url]
    lives: list[WorkerProcess] = []
    try:
        for life in range(MAX_ATTEMPTS):
            worker = WorkerProcess(
                env, tmp_path / f"life-{life}.out", app=IDEMPOTENT_APP, args=args
            )
            lives.append(worker)
            assert await worker.exit_code(timeout=60) == CRASH_EXIT_CODE, worker.output()
            started = [line for line in log.lines() if line["phase"] == "start"]
            assert len(started) == life + 1, "each life ended in crash0's handler"
        last = WorkerProcess(env, tmp_path / "last.out", app=IDEMPOTENT_APP, args=args)
        lives.append(last)
        await wait_for(lambda: log.done().get("ok1") == 1, "ok1 handled after crash0", 60)
        last.process.terminate()
        assert await last.exit_code() == ExitCode.CLEAN, last.output()
    finally:
        for worker in lives:
            worker.close()

    # the drain on SIGTERM commits everything finished
    ends = await topic_ends(kafka_bootstrap, setup.topic)
    assert await committed_offsets(kafka_bootstrap, setup.group, setup.topic) == ends
    starts = [line["id"] for line in log.lines() if line["phase"] == "start"]
    assert starts == ["crash0"] * MAX_ATTEMPTS, "no start after the attempts ran out"
    done = log.done()
    # ok0's DONE mark was queued when crash0 killed the first life, so it may run twice;
    # later lives write queued marks before crash0's start, which has a store call of its own
    assert done["ok0"] in (1, 2), done
    assert done == {"ok0": done["ok0"], "ok1": 1}
    (dead,) = await read_topic(kafka_bootstrap, f"{setup.topic}.dlq")
    assert dead.value == crash_record.value, "the dead letter carries the original bytes"
    headers = dict(dead.headers)
    assert headers[HEADER_PREFIX + "attempts"] == str(MAX_ATTEMPTS).encode()
