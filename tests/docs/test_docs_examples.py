"""Every complete example in the docs runs: blocks marked ``# test: run`` are executed."""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKER = "# test: run"
FENCE = re.compile(r"^```python[^\n]*\n(?P<code>.*?)^```", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Example:
    """One marked code block: where it is and its source."""

    path: Path
    line: int
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def marked_examples(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    examples = []
    for match in FENCE.finditer(text):
        code = match.group("code")
        if code.splitlines()[0].strip() == MARKER:
            line = text.count("\n", 0, match.start("code")) + 1
            examples.append(Example(path, line, code))
    return examples


EXAMPLES = [example for path in documents() for example in marked_examples(path)]


def run_example(example: Example) -> None:
    # a real, fresh module: dataclasses and pydantic look their module up in sys.modules
    module = types.ModuleType(f"docs_example_{example.path.stem.replace('-', '_')}_{example.line}")
    # dont_inherit: the example must not pick up this file's __future__ imports
    code = compile(example.code, example.name, "exec", dont_inherit=True)
    sys.modules[module.__name__] = module
    try:
        exec(code, module.__dict__)
        main = module.__dict__.get("main")
        if main is not None:
            assert inspect.iscoroutinefunction(main), f"{example.name}: main must be async"
            asyncio.run(main())
    finally:
        del sys.modules[module.__name__]


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_a_marked_docs_example_runs(example: Example) -> None:
    """The block executes in a fresh namespace and its ``async def main()``, if any, passes."""
    run_example(example)


@pytest.mark.parametrize(
    "page", ["handlers.md", "failures.md", "testing.md", "wire-format.md", "index.md"]
)
def test_each_guide_has_examples_that_are_run(page: str) -> None:
    """The guides keep their complete examples marked, so the marker cannot silently vanish."""
    assert marked_examples(ROOT / "docs" / page), f"docs/{page} has no '{MARKER}' example"


def test_the_finder_sees_only_blocks_marked_on_their_first_line(tmp_path: Path) -> None:
    """An unmarked block, or a marker below the first line, is not collected."""
    page = tmp_path / "page.md"
    page.write_text(
        "```python\n# test: run\nx = 1\n```\n\n```python\ny = 2\n# test: run\n```\n"
        "```sh\n# test: run\n```\n",
        encoding="utf-8",
    )
    [example] = marked_examples(page)
    assert example.code == "# test: run\nx = 1\n"
    assert example.line == 2
