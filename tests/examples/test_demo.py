"""``python -m examples.demo`` end to end: a real broker, the real worker, and its report.

The demo runs as ``make demo`` runs it, in a child process; its report is checked against
what the published stream must lead to, and no broker process may outlive it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, "-m", "examples.demo"]
INTERRUPTED = 130
PARTITIONS = 3
# 9 published (7 events, 1 redelivery, 1 undecodable record) + 3 CONTENT_VALIDATED by the worker
RECORDS = 12

ENTRY = re.compile(r"^  \[(\d)\]@(\d+) +(\S+) +(c-\d+) +event (\S+)$")
VERDICT = re.compile(r"^  (c-\d+) +(valid|invalid \(.*?\)) +causation (\S+) correlation (\S+)$")
OFFSETS = re.compile(r"content-events\[(\d)\] (\S+)/(\d+)")


def section(lines: list[str], title: str) -> list[str]:
    """The indented lines under the line that starts with ``title``."""
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def bootstrap_of(report: str) -> str:
    match = re.search(r"on a Tansu broker at (127\.0\.0\.1:\d+)", report)
    assert match, report
    return match.group(1)


def brokers_listening_on(bootstrap: str) -> list[str]:
    """Processes whose command line names ``bootstrap`` as their listener (a leftover broker)."""
    listing = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True
    )
    return [line for line in listing.stdout.splitlines() if f"tcp://{bootstrap} " in line + " "]


def end(process: subprocess.Popen[str]) -> None:
    """End a demo still running as Ctrl-C does, so that it stops its broker; kill it if stuck."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # its broker may outlive it now: the test has failed anyway
            process.wait()


def start_demo() -> subprocess.Popen[str]:
    return subprocess.Popen(
        DEMO, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def demo_run() -> subprocess.CompletedProcess[str]:
    """One run of the demo, shared by the tests that read its report."""
    with start_demo() as process:
        try:
            out, err = process.communicate(timeout=90)
        finally:
            end(process)
    return subprocess.CompletedProcess(DEMO, process.returncode, out, err)


def test_the_demo_exits_zero_and_leaves_no_broker_behind(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    """The run ends with status 0, a one-screen report, and its Tansu process gone."""
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr
    assert len(demo_run.stdout.splitlines()) <= 40
    assert brokers_listening_on(bootstrap_of(demo_run.stdout)) == []


def test_every_event_ends_in_the_outcome_its_kind_calls_for(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    """Requests are handled, the redelivery is a duplicate, unknown and own events skipped."""
    lines = demo_run.stdout.splitlines()
    assert (
        f"{RECORDS} records on content-events, {RECORDS} final: "
        "handled 5, duplicate 1, skipped 4, dead_lettered 2" in lines
    )
    handled = [ENTRY.match(line) for line in section(lines, "Handled:")]
    assert all(handled), lines
    assert sorted((m.group(3), m.group(4)) for m in handled if m) == [
        ("CONTENT_INDEXING_REQUESTED", "c-100"),
        ("CONTENT_INDEXING_REQUESTED", "c-800"),
        ("CONTENT_VALIDATION_REQUESTED", "c-100"),
        ("CONTENT_VALIDATION_REQUESTED", "c-500"),
        ("CONTENT_VALIDATION_REQUESTED", "c-800"),
    ]
    [duplicate] = [ENTRY.match(line) for line in section(lines, "Duplicate deliveries")]
    assert duplicate, lines
    assert (duplicate.group(3), duplicate.group(4)) == ("CONTENT_INDEXING_REQUESTED", "c-100")
    [original] = [m for m in handled if m and m.group(3, 4) == duplicate.group(3, 4)]
    # the same event, later in the same partition: a redelivery, not a second request
    assert original.group(5) == duplicate.group(5)
    assert original.group(1) == duplicate.group(1)
    assert int(original.group(2)) < int(duplicate.group(2))
    assert "Skipped, no handler in this service: CONTENT_ARCHIVED x1, CONTENT_VALIDATED x3" in lines
    assert "Repository: indexed c-100, c-800" in lines


def test_the_dead_letter_topic_holds_the_undecodable_record_and_the_missing_content(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    """Both dead letters are read back with their reason headers and the error that caused it."""
    letters = section(demo_run.stdout.splitlines(), "Dead-lettered, read back from")
    assert len(letters) == 4, letters  # a header line and an error line per dead letter
    text = "\n".join(letters)
    assert re.search(
        r"\(no type header\) +reason=undecodable attempts=0\n +UndecodableRecordError", text
    )
    assert re.search(
        r"CONTENT_VALIDATION_REQUESTED +reason=handler_error attempts=1\n"
        r" +NonRetryableError: content 'c-404' does not exist",
        text,
    )


def test_each_verdict_read_back_names_the_request_that_caused_it(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    """Every CONTENT_VALIDATED carries its request's event id and correlation id."""
    lines = demo_run.stdout.splitlines()
    requests = {
        m.group(4): m.group(5)
        for m in map(ENTRY.match, section(lines, "Handled:"))
        if m and m.group(3) == "CONTENT_VALIDATION_REQUESTED"
    }
    verdicts = {
        m.group(1): m.groups()[1:]
        for m in map(VERDICT.match, section(lines, "CONTENT_VALIDATED published by the worker"))
        if m
    }
    assert verdicts == {
        "c-100": ("valid", requests["c-100"], "corr-c-100"),
        "c-500": ("invalid (body is empty)", requests["c-500"], "corr-c-500"),
        "c-800": ("valid", requests["c-800"], "corr-c-800"),
    }


def test_the_group_committed_every_partition_to_its_end(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    """The committed offset the broker reports equals the end of each partition."""
    [line] = section(demo_run.stdout.splitlines(), "Committed offset / end offset")
    offsets = OFFSETS.findall(line)
    assert [partition for partition, _, _ in offsets] == [str(p) for p in range(PARTITIONS)]
    for _, committed, end in offsets:
        assert committed == end or (committed == "None" and end == "0"), line
    assert sum(int(end) for _, _, end in offsets) == RECORDS


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_demo_stops_the_app_and_the_broker(signum: signal.Signals) -> None:
    """Ctrl-C (or SIGTERM) while the worker starts: exit 130 and no broker process left."""
    with start_demo() as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()  # printed once the broker listens
            bootstrap = bootstrap_of(first)
            assert brokers_listening_on(bootstrap), "the demo's broker should be running now"
            process.send_signal(signum)
            out, err = process.communicate(timeout=60)
        finally:
            end(process)
    assert process.returncode == INTERRUPTED, first + out + err
    assert "interrupted: the app and the broker were stopped" in err
    assert brokers_listening_on(bootstrap) == []
