"""The demo's report: what the worker did, built only from what was observed and read back."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from eventkit import Outcome
from examples.content_service.models import CONTENT_EVENTS, CONTENT_VALIDATED

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from eventkit.ports import Record
    from eventkit.testing import RecordResult

REPORTED = (Outcome.HANDLED, Outcome.DUPLICATE, Outcome.SKIPPED, Outcome.DEAD_LETTERED)


@dataclass(frozen=True, slots=True)
class DemoRun:
    """Ground truth of one run.

    ``results`` come from the dispatcher's observer; ``events`` and ``dead_letters`` are
    the source and dead-letter topics read back from the broker; ``committed`` (the group's
    committed offsets, as the broker reports them) and ``ends`` are per partition.
    """

    results: Sequence[RecordResult]
    events: Sequence[Record]
    dead_letter_topic: str
    dead_letters: Sequence[Record]
    committed: Mapping[int, int | None]
    ends: Mapping[int, int]
    indexed: Sequence[str]


def _short(text: str | None) -> str:
    return (text or "-")[:8]


def _headers(record: Record) -> dict[str, str]:
    return {name: value.decode("utf-8", "replace") for name, value in record.headers}


def _body(record: Record) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(record.value or b"")
    except msgspec.DecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _content_id(record: Record) -> str:
    data = _body(record).get("data")
    return str(data.get("content_id", "?")) if isinstance(data, dict) else "?"


def final_results(run: DemoRun) -> list[RecordResult]:
    """The first final outcome of each source record, in partition and offset order."""
    first: dict[tuple[int, int], RecordResult] = {}
    for result in run.results:
        if result.topic == CONTENT_EVENTS and result.outcome.is_final:
            first.setdefault((result.partition, result.offset), result)
    return [first[where] for where in sorted(first)]


def header(bootstrap: str) -> str:
    """The report's first line, printed as soon as the broker listens."""
    return (
        f"eventkit demo: content-service on a Tansu broker at {bootstrap}\n"
        "(the kafka:// transport, the real dispatcher and worker, an in-memory idempotency store)"
    )


def render(run: DemoRun, seconds: float) -> str:
    """The rest of the report: one screen on what happened in ``run``, which took ``seconds``."""
    records = {(r.partition, r.offset): r for r in run.events}
    results = final_results(run)
    outcomes = Counter(result.outcome for result in results)
    lines = [
        "",
        f"{len(records)} records on {CONTENT_EVENTS}, {len(results)} final: "
        + ", ".join(f"{o.value} {outcomes[o]}" for o in REPORTED),
    ]
    for title, outcome in (
        ("Handled:", Outcome.HANDLED),
        ("Duplicate deliveries (the handler did not run again):", Outcome.DUPLICATE),
    ):
        lines.append(title)
        lines.extend(
            f"  [{r.partition}]@{r.offset:<2} {r.event_type:<29} "
            f"{_content_id(records[r.partition, r.offset]):<6} event {_short(r.event_id)}"
            for r in results
            if r.outcome is outcome
        )
    skipped = Counter(r.event_type for r in results if r.outcome is Outcome.SKIPPED)
    lines.append(
        "Skipped, no handler in this service: "
        + ", ".join(f"{event_type} x{count}" for event_type, count in sorted(skipped.items()))
    )
    lines.append(f"Dead-lettered, read back from {run.dead_letter_topic}:")
    for letter in run.dead_letters:
        headers = _headers(letter)
        lines.append(
            f"  [{headers['dlq_original_partition']}]@{headers['dlq_original_offset']:<2}"
            f" {headers.get('event_type', '(no type header)'):<29}"
            f" reason={headers['dlq_reason']} attempts={headers['dlq_attempts']}"
        )
        exception = headers["dlq_exception_class"].rpartition(".")[2]
        lines.append(f"      {exception}: {headers['dlq_exception_message'][:70]}")
    lines.append(f"{CONTENT_VALIDATED} published by the worker, read back from {CONTENT_EVENTS}:")
    for record in records.values():
        headers = _headers(record)
        if headers.get("event_type") != CONTENT_VALIDATED:
            continue
        body = _body(record)
        data = body.get("data", {})
        verdict = "valid" if data.get("valid") else f"invalid ({data.get('reason')})"
        lines.append(
            f"  {data.get('content_id'):<6} {verdict:<24}"
            f" causation {_short(headers.get('causation_id'))}"
            f" correlation {body.get('correlation_id')}"
        )
    lines.append(f"Repository: indexed {', '.join(run.indexed) or 'nothing'}")
    lines.append("Committed offset / end offset per partition, read from the broker:")
    lines.append(
        "  "
        + "   ".join(
            f"{CONTENT_EVENTS}[{p}] {run.committed.get(p)}/{end}"
            for p, end in sorted(run.ends.items())
        )
    )
    lines.append(f"Stopped after draining and committing; broker stopped. {seconds:.1f} s")
    return "\n".join(lines)
