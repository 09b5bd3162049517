"""The README's example is real: it is extracted, executed, and its test is run."""

from __future__ import annotations

import inspect
import re
import sys
import types
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE = re.compile(
    r"<!-- example:start -->\s*```python\n(?P<code>.*?)```\s*<!-- example:end -->", re.DOTALL
)


def readme_example() -> str:
    matches = EXAMPLE.findall(README.read_text(encoding="utf-8"))
    assert len(matches) == 1, "README.md must hold exactly one marked example"
    return str(matches[0])


async def test_the_readme_example_runs_and_its_test_handles_the_event() -> None:
    """The example executes, its test function passes, and its handler really ran."""
    module = types.ModuleType("readme_example")
    # dont_inherit: the example must not pick up this file's __future__ imports
    code = compile(readme_example(), str(README), "exec", dont_inherit=True)
    sys.modules[module.__name__] = module
    try:
        exec(code, module.__dict__)
        namespace: dict[str, Any] = module.__dict__
        tests = [
            function
            for name, function in namespace.items()
            if name.startswith("test_") and inspect.iscoroutinefunction(function)
        ]
        assert len(tests) == 1
        await tests[0]()
        assert namespace["invoiced"] == ["o-1"]
    finally:
        del sys.modules[module.__name__]
