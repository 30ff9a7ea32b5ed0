"""The ``>>>`` examples in the docstrings of ``landscape`` run and print what they say.

Every library module whose source holds a ``>>>`` example is collected (so a new example is run
without being registered here) and run with :mod:`doctest`; a module whose examples need a GPU
says so with ``cuda`` in an example and is skipped on a machine without one. The modules known to
carry examples are listed, so that examples lost from a docstring are noticed too.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "landscape"

KNOWN = {"landscape._checks", "landscape.core.model", "landscape.numeric.llc", "landscape.views.save",
         "landscape.cli._args"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_with_examples() -> list[str]:
    """Dotted names of the library modules whose source has a ``>>>`` line."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        if any(line.lstrip().startswith(">>>") for line in path.read_text(encoding="utf-8").splitlines()):
            out.append(_module_name(path))
    return out


MODULES = modules_with_examples()


def test_the_known_examples_are_found() -> None:
    assert KNOWN <= set(MODULES), f"examples missing from {sorted(KNOWN - set(MODULES))}"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name} has '>>>' lines but doctest finds no examples in its docstrings"
    if any("cuda" in ex.source for t in tests for ex in t.examples) and not torch.cuda.is_available():
        pytest.skip(f"{name}: its examples need a GPU")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (output above)"
