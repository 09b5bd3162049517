"""Real worker processes, a paced producer and the probe log, for the integration tests.

Ground truth is the producer's acknowledgements and the topics read back by fetching;
what the workers did comes from the probe handler's log, never from eventkit's own logs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from eventkit.publisher import EventPublisher
from eventkit.transports.kafka_publisher import KafkaPublisher
from tests.brokers import client_settings, kafka_url
from tests.integration.probe_app import PROBE_EVENT, Probe

if TYPE_CHECKING:
    import signal
    from collections.abc import Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0


@dataclass(frozen=True, slots=True)
class ProbeSetup:
    """One test's topic, group, broker and probe log; the environment of its workers."""

    bootstrap: str
    topic: str
    group: str
    log: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, **changes: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("EVENTKIT_", "PROBE_", "COV_", "COVERAGE_"))
        }
        env.update(
            {
                "PROBE_TOPIC": self.topic,
                "PROBE_GROUP": self.group,
                "PROBE_LOG": str(self.log),
                "EVENTKIT_BROKER": kafka_url(self.bootstrap),
                "EVENTKIT_LOG_LEVEL": "INFO",
            }
        )
        # planted bugs reach the workers from the test run's environment
        planted = os.environ.get("EVENTKIT_PLANTED_BUGS")
        if planted:
            env["EVENTKIT_PLANTED_BUGS"] = planted
        env.update(self.extra_env)
        env.update(changes)
        return env


PROBE_APP = "tests.integration.probe_app:app"


class WorkerProcess:
    """``eventkit worker APP ARGS...`` (the probe app by default) in a child process."""

    def __init__(
        self,
        env: dict[str, str],
        output: Path,
        *,
        app: str = PROBE_APP,
        args: list[str] | None = None,
    ) -> None:
        self._output_path = output
        self._output: IO[bytes] = output.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eventkit", "worker", app, *(args or [])],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    async def exit_code(self, timeout: float = WAIT) -> int:  # noqa: ASYNC109
        """Wait for the process to exit and return its status (negative: killed by signal)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"worker {self.pid} did not exit:\n{self.output()}")
            await asyncio.sleep(0.02)  # polling a child process
        return self.process.returncode

    def output(self) -> str:
        self._output.flush()
        return self._output_path.read_text(errors="replace")[-6000:]

    def close(self) -> None:
        self.kill()
        self.process.wait()
        self._output.close()


class Workers:
    """Starts worker processes of one test (an app and its arguments, the test's environment
    with changes); ``close`` kills every one still alive."""

    def __init__(
        self,
        setup: ProbeSetup,
        directory: Path,
        *,
        app: str = PROBE_APP,
        args: list[str] | None = None,
    ) -> None:
        self._setup = setup
        self._directory = directory
        self._app = app
        self._args = args or []
        self.started: list[WorkerProcess] = []

    def start(self, *args: str, **env: str) -> WorkerProcess:
        output = self._directory / f"worker-{len(self.started)}.out"
        worker = WorkerProcess(
            self._setup.env(**env), output, app=self._app, args=[*self._args, *args]
        )
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:
            worker.close()


class ProbeLog:
    """What the probe handlers of every worker of one test logged."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        text = self.path.read_text()
        # a line being written by a live worker may be incomplete: only whole lines count
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def done(self) -> Counter[str]:
        """How often each event id was handled to the end."""
        return Counter(line["id"] for line in self.lines() if line["phase"] == "done")

    def done_by(self, pid: int) -> set[str]:
        return {
            line["id"] for line in self.lines() if line["phase"] == "done" and line["pid"] == pid
        }

    def in_flight(self, pid: int) -> set[str]:
        """Ids ``pid`` started and did not finish."""
        started: set[str] = set()
        for line in self.lines():
            if line["pid"] != pid:
                continue
            if line["phase"] == "start":
                started.add(line["id"])
            else:
                started.discard(line["id"])
        return started

    def pids(self) -> set[int]:
        return {line["pid"] for line in self.lines()}

    def order_by_key(self) -> dict[str, list[int]]:
        """Per key, the ``seq`` of each handled record in the order handlers finished."""
        order: dict[str, list[int]] = defaultdict(list)
        for line in self.lines():
            if line["phase"] == "done":
                order[line["key"]].append(line["seq"])
        return order


class PacedProducer:
    """Publishes probe events at a fixed rate and records which sends were acknowledged."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._transport = KafkaPublisher(client_settings(bootstrap))
        self._publisher = EventPublisher(self._transport, source_service="probe-producer")
        self._topic = topic
        self.acked: list[str] = []

    async def __aenter__(self) -> PacedProducer:
        await self._transport.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._transport.stop()

    async def publish(
        self,
        count: int,
        *,
        rate: float,
        prefix: str = "e",
        sleep: float | Callable[[int], float] = 0.0,
        keys: int = 12,
    ) -> None:
        """Send ``count`` events, ``rate`` per second, keys round-robin with per-key seq.

        ``sleep`` is the handling time of every event, or a function of the event's number.
        """
        started = time.monotonic()
        for n in range(count):
            key = f"k{n % keys}"
            took = sleep(n) if callable(sleep) else sleep
            event = Probe(id=f"{prefix}{n}", seq=n // keys, sleep=took)
            await self._publisher.publish(self._topic, PROBE_EVENT, event, key=key)
            self.acked.append(event.id)
            # pacing, so faults land mid-stream
            delay = started + (n + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def wait_for(
    predicate: Any,
    what: str,
    timeout: float = WAIT,  # noqa: ASYNC109 - a deadline for a condition
) -> None:
    """Poll ``predicate()`` until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling files and child processes
