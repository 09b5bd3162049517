"""The probe worker with idempotency on, for tests of the idempotency store option.

Same events and the same ``PROBE_LOG`` lines as ``probe_app`` (so ``ProbeLog`` reads them),
but its handler is idempotent, so ``eventkit worker`` needs ``--idempotency-store``. An event
whose id starts with ``crash`` logs its start and ends the process at once, every time: a
handler that crashes its worker, as a poison event that kills the process does.
"""

from __future__ import annotations

import json
import os

from eventkit import EventApp, EventContext, RetryPolicy
from eventkit.worker import WorkerConfig
from tests.integration.probe_app import PROBE_EVENT, Probe

app = EventApp(
    service="idempotent-probe",
    group_id=os.environ.get("PROBE_GROUP", "idempotent-probe-group"),
    idempotency=True,
    lease_seconds=float(os.environ.get("PROBE_LEASE", "10")),
    retry=RetryPolicy(max_attempts=int(os.environ.get("PROBE_MAX_ATTEMPTS", "5"))),
    worker=WorkerConfig(commit_interval=0.2, drain_timeout=10.0, revoke_drain_timeout=5.0),
)

#: The exit status of a worker that a ``crash`` event ended.
CRASH_EXIT_CODE = 70

_log_fd = os.open(os.environ.get("PROBE_LOG", os.devnull), os.O_WRONLY | os.O_APPEND | os.O_CREAT)


@app.handler(PROBE_EVENT, topic=os.environ.get("PROBE_TOPIC", "probe-events"))
async def probe(event: Probe, ctx: EventContext) -> None:
    """Log one ``done`` line per handled event (duplicates are never handled)."""
    if event.id.startswith("crash"):
        _log("start", event, ctx)
        os._exit(CRASH_EXIT_CODE)  # no cleanup, no release: as a crash
    _log("done", event, ctx)


def _log(phase: str, event: Probe, ctx: EventContext) -> None:
    line = {
        "phase": phase,
        "id": event.id,
        "seq": event.seq,
        "key": (ctx.key or b"").decode(),
        "partition": ctx.partition,
        "offset": ctx.offset,
        "pid": os.getpid(),
    }
    # one write of a short line to an O_APPEND file is atomic across processes
    os.write(_log_fd, (json.dumps(line) + "\n").encode())
