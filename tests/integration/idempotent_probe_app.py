"""The probe worker with idempotency on, for tests of the idempotency store option.

Same events and the same ``PROBE_LOG`` lines as ``probe_app`` (so ``ProbeLog`` reads them),
but its handler is idempotent, so ``eventkit worker`` needs ``--idempotency-store``.
"""

from __future__ import annotations

import json
import os

from eventkit import EventApp, EventContext
from eventkit.worker import WorkerConfig
from tests.integration.probe_app import PROBE_EVENT, Probe

app = EventApp(
    service="idempotent-probe",
    group_id=os.environ.get("PROBE_GROUP", "idempotent-probe-group"),
    idempotency=True,
    lease_seconds=10.0,
    worker=WorkerConfig(commit_interval=0.2, drain_timeout=10.0, revoke_drain_timeout=5.0),
)

_log_fd = os.open(os.environ.get("PROBE_LOG", os.devnull), os.O_WRONLY | os.O_APPEND | os.O_CREAT)


@app.handler(PROBE_EVENT, topic=os.environ.get("PROBE_TOPIC", "probe-events"))
async def probe(event: Probe, ctx: EventContext) -> None:
    """Log one ``done`` line per handled event (duplicates are never handled)."""
    line = {
        "phase": "done",
        "id": event.id,
        "seq": event.seq,
        "key": (ctx.key or b"").decode(),
        "partition": ctx.partition,
        "offset": ctx.offset,
        "pid": os.getpid(),
    }
    # one write of a short line to an O_APPEND file is atomic across processes
    os.write(_log_fd, (json.dumps(line) + "\n").encode())
