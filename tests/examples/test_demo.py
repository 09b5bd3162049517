"""The demo runs the example worker in memory and reports what the bus recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventkit import Outcome
from examples import demo
from examples.content_service.models import CONTENT_EVENTS

if TYPE_CHECKING:
    import pytest

REPORTED = (Outcome.HANDLED, Outcome.DUPLICATE, Outcome.SKIPPED, Outcome.DEAD_LETTERED)


async def test_the_demo_reaches_every_final_outcome_and_commits_to_the_end() -> None:
    """Each kind of input ends in its own outcome, nothing defers, offsets reach the end."""
    bus = await demo.run()
    assert all(bus.outcomes[outcome] > 0 for outcome in REPORTED)
    assert Outcome.DEFERRED not in bus.outcomes
    assert sum(bus.outcomes.values()) == len(bus.published(CONTENT_EVENTS))
    for tp in bus.broker.partitions_for(CONTENT_EVENTS):
        assert bus.committed(CONTENT_EVENTS, tp.partition) == bus.end_offset(*tp)


async def test_the_report_states_the_counts_the_bus_recorded() -> None:
    """The report's outcome line, dead letters and offsets come from the bus, not constants."""
    bus = await demo.run()
    report = demo.render(bus)
    for outcome in REPORTED:
        assert f"{outcome.value} {bus.outcomes[outcome]}" in report
    letters = bus.dead_letters(CONTENT_EVENTS)
    assert report.count("reason=") == len(letters)
    for letter in letters:
        reason = dict(letter.headers)["dlq_reason"].decode()
        assert f"reason={reason}" in report
    assert "reason=undecodable" in report
    assert "NonRetryableError: content 'c-404' does not exist" in report
    for tp in bus.broker.partitions_for(CONTENT_EVENTS):
        end = bus.end_offset(*tp)
        assert f"{CONTENT_EVENTS}[{tp.partition}] {end}/{end}" in report
    assert "in-memory broker" in report
    assert len(report.splitlines()) <= 40


async def test_the_report_links_each_verdict_to_the_request_that_caused_it() -> None:
    """Every CONTENT_VALIDATED line names its request's event id and correlation id."""
    bus = await demo.run()
    report = demo.render(bus)
    requests = [
        result
        for result in bus.results
        if result.outcome is Outcome.HANDLED and result.event_type == "CONTENT_VALIDATION_REQUESTED"
    ]
    assert requests
    for request in requests:
        assert f"causation {str(request.event_id)[:8]}" in report


async def test_main_prints_the_report_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m examples.demo`` runs ``main``: it prints the report and returns 0."""
    assert await demo.main() == 0
    out = capsys.readouterr().out
    assert out.startswith("eventkit demo: content-service on the in-memory broker")
    assert "Committed offset / end offset per partition:" in out
