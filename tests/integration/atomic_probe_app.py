"""The probe worker in atomic-effect mode, for the crash-point tests of staged Redis writes.

Its handler counts each event through ``RedisEffects`` (``INCRBY`` of a counter and ``SADD``
of the event id) and logs one ``done`` line per run to ``PROBE_LOG`` when it returns, before
the writes are applied: the log says how often handlers ran, Redis what was applied. The
worker is started with ``--idempotency-store redis://...`` (``EVENTKIT_IDEMPOTENCY_STORE``).
"""

from __future__ import annotations

import json
import os

from eventkit import EventApp, EventContext
from eventkit.idempotency.effects import RedisEffects  # noqa: TC001 - read by get_type_hints
from eventkit.worker import WorkerConfig
from tests.integration.probe_app import PROBE_EVENT, Probe

#: The Redis keys the handler writes through its staged effects.
COUNT_KEY = "atomic-probe:count"
IDS_KEY = "atomic-probe:ids"

app = EventApp(
    service="atomic-probe",
    group_id=os.environ.get("PROBE_GROUP", "atomic-probe-group"),
    # short, so a redelivery waits out a crashed worker's lease quickly
    lease_seconds=float(os.environ.get("PROBE_LEASE", "3.0")),
    worker=WorkerConfig(commit_interval=0.2, drain_timeout=10.0, revoke_drain_timeout=5.0),
)

_log_fd = os.open(os.environ.get("PROBE_LOG", os.devnull), os.O_WRONLY | os.O_APPEND | os.O_CREAT)


@app.handler(PROBE_EVENT, topic=os.environ.get("PROBE_TOPIC", "probe-events"), atomic_effects=True)
async def count(event: Probe, effects: RedisEffects, ctx: EventContext) -> None:
    """Stage the count and the id, then log the run."""
    effects.incrby(COUNT_KEY)
    effects.sadd(IDS_KEY, event.id)
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
