"""Fail when a pytest JUnit XML report shows a skipped or xfailed test, or no test at all.

Usage: ``python scripts/check_no_skips.py .test-results.xml``

Exit status: 0 when at least one test ran and none was skipped or xfailed; 1 when some were (they
are listed on stderr) or when no test ran; 2 when the report cannot be read.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class NotRun:
    """A test case that the report marks as skipped (pytest reports xfail as a skip too)."""

    test_id: str
    kind: str
    message: str


def _test_id(case: ET.Element) -> str:
    classname = case.get("classname", "")
    name = case.get("name", "?")
    return f"{classname}::{name}" if classname else name


def _not_run(case: ET.Element) -> NotRun | None:
    skipped = case.find("skipped")
    if skipped is None:
        return None
    kind = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
    message = (skipped.get("message") or skipped.text or "").strip()
    return NotRun(_test_id(case), kind, message)


def check(report: Path) -> tuple[int, list[NotRun]]:
    """Return the number of test cases in ``report`` and those that were skipped or xfailed.

    Raises ``OSError`` if the file cannot be read and ``ET.ParseError`` if it is not XML.
    """
    root = ET.parse(report).getroot()
    cases = list(root.iter("testcase"))
    not_run = [entry for entry in map(_not_run, cases) if entry is not None]
    return len(cases), not_run


def main(argv: list[str]) -> int:
    """Check the report named in ``argv`` and return the exit status."""
    if len(argv) != 1:
        print("usage: check_no_skips.py REPORT.xml", file=sys.stderr)
        return 2
    report = Path(argv[0])
    try:
        total, not_run = check(report)
    except (OSError, ET.ParseError) as exc:
        print(f"error: cannot read test report {report}: {exc}", file=sys.stderr)
        return 2

    if total == 0:
        print(f"error: no test ran (report {report} has no test cases)", file=sys.stderr)
        return 1
    if not_run:
        print(
            f"error: {len(not_run)} of {total} tests did not run; every test must run:",
            file=sys.stderr,
        )
        for entry in not_run:
            reason = f": {entry.message}" if entry.message else ""
            print(f"  {entry.kind}: {entry.test_id}{reason}", file=sys.stderr)
        return 1
    print(f"check_no_skips: all {total} tests ran")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
