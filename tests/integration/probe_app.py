"""The probe worker the integration tests run as real processes (``eventkit worker``).

Its handler logs a ``start`` and a ``done`` line per record to ``PROBE_LOG`` (one atomic
append each, shared by every worker process of a test), so the test can tell what each
process started, finished and redelivered. The event's ``sleep`` sets how long it takes.
Settings come from the environment so that each test shapes its workers.
"""

from __future__ import annotations

import asyncio
import json
import os

import msgspec

from eventkit import EventApp, EventContext
from eventkit.worker import WorkerConfig

PROBE_EVENT = "PROBE"


class Probe(msgspec.Struct, frozen=True):
    """A test event: its identity, its key's sequence number and how long to handle it."""

    id: str
    seq: int = 0
    sleep: float = 0.0


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


app = EventApp(
    service="probe",
    group_id=os.environ.get("PROBE_GROUP", "probe-group"),
    idempotency=False,
    worker=WorkerConfig(
        commit_interval=_env_float("PROBE_COMMIT_INTERVAL", 0.2),
        max_buffered=int(os.environ.get("PROBE_MAX_BUFFERED", "2000")),
        drain_timeout=_env_float("PROBE_DRAIN_TIMEOUT", 10.0),
        revoke_drain_timeout=_env_float("PROBE_REVOKE_DRAIN_TIMEOUT", 5.0),
    ),
)

_log_fd = os.open(os.environ.get("PROBE_LOG", os.devnull), os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def _log(phase: str, probe: Probe, ctx: EventContext) -> None:
    line = {
        "phase": phase,
        "id": probe.id,
        "seq": probe.seq,
        "key": (ctx.key or b"").decode(),
        "partition": ctx.partition,
        "offset": ctx.offset,
        "pid": os.getpid(),
    }
    # one write of a short line to an O_APPEND file is atomic across processes
    os.write(_log_fd, (json.dumps(line) + "\n").encode())


@app.handler(
    PROBE_EVENT,
    topic=os.environ.get("PROBE_TOPIC", "probe-events"),
    ordering=os.environ.get("PROBE_ORDERING") or None,
)
async def probe(event: Probe, ctx: EventContext) -> None:
    """Log the start, take ``event.sleep`` seconds, log the end."""
    _log("start", event, ctx)
    if event.sleep:
        await asyncio.sleep(event.sleep)
    _log("done", event, ctx)
