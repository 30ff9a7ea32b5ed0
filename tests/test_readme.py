"""The README's quick start is what CI runs, and its first command names a real study.

* the second fenced ``bash`` block of "Quick start" (the test command) appears verbatim in
  ``.ci/run``, so CI runs exactly what a new user is told to run;
* the first block's ``landscape reproduce STUDY ...`` parses with the real CLI parser and names a
  study of :data:`analysis.STUDIES` whose module exists;
* ``landscape reproduce --help`` works as a subprocess (the console entry point is wired).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from limits import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def quick_start_blocks(text: str) -> list[str]:
    """The fenced ``bash`` blocks of the README section titled "Quick start", in order."""
    m = re.search(r"^##\s+Quick start.*?$(.*?)(?=^##\s|\Z)", text, re.S | re.M)
    if m is None:
        raise AssertionError("README.md has no '## Quick start' section")
    return [body for lang, body in _FENCE.findall(m.group(1)) if lang == "bash"]


def _commands(block: str) -> list[str]:
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_quick_start_extraction_on_a_sample() -> None:
    sample = ("# t\n\n## Quick start\n\ntext\n\n```bash\necho one\n```\n\n```python\nx = 1\n```\n\n"
              "```bash\n# comment\necho two && echo three\n```\n\n## Next\n\n```bash\necho four\n```\n")
    blocks = quick_start_blocks(sample)
    assert [_commands(b) for b in blocks] == [["echo one"], ["echo two && echo three"]]


def test_readme_test_command_is_run_verbatim_by_ci() -> None:
    blocks = quick_start_blocks(README.read_text())
    assert len(blocks) >= 2, f"Quick start needs two bash blocks (run a study; run the tests), found {len(blocks)}"
    ci_lines = {ln.strip() for ln in CI_RUN.read_text().splitlines()}
    test_cmds = _commands(blocks[1])
    assert test_cmds, "the README's second Quick start block is empty"
    missing = [c for c in test_cmds if c not in ci_lines]
    assert not missing, f".ci/run does not run the README test command verbatim: {missing}"
    assert "pytest" in " ".join(test_cmds)


def test_ci_runs_the_test_command_in_a_fresh_virtual_environment() -> None:
    """A package left on the machine must not hide a missing install step: CI makes a new venv,
    activates it, and only then installs and tests."""
    lines = [ln.strip() for ln in CI_RUN.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    test_cmd = _commands(quick_start_blocks(README.read_text())[1])[0]
    at = {name: next((i for i, ln in enumerate(lines) if pred(ln)), None) for name, pred in (
        ("venv", lambda ln: "-m venv" in ln and "$VENV" in ln),
        ("activate", lambda ln: ln.startswith(". ") and "$VENV/bin/activate" in ln),
        ("test", lambda ln: ln == test_cmd),
    )}
    assert None not in at.values(), f".ci/run lacks a step: {at}"
    assert at["venv"] < at["activate"] < at["test"]
    assert any("mktemp -d" in ln and "VENV=" in ln for ln in lines[: at["venv"]]), "the venv must be new (mktemp -d)"


def _reproduce_argv(block: str) -> list[str]:
    for cmd in _commands(block):
        for part in re.split(r"\s*(?:&&|;|\|\|)\s*", cmd):
            argv = shlex.split(part)
            if argv[:2] == ["landscape", "reproduce"]:
                return argv[1:]
    raise AssertionError(f"the README's first Quick start block runs no 'landscape reproduce': {block!r}")


def test_readme_first_command_names_an_existing_study() -> None:
    from analysis import STUDIES
    from landscape.cli import build_parser

    argv = _reproduce_argv(quick_start_blocks(README.read_text())[0])
    args = build_parser().parse_args(argv)  # exits (fails the test) on an unknown flag
    assert args.study in STUDIES, f"README runs study {args.study!r}; known: {sorted(STUDIES)}"
    assert importlib.util.find_spec(f"analysis.{args.study}") is not None, f"analysis/{args.study}.py is missing"
    assert args.quick, "the README's first command should run the study at --quick size"


def test_reproduce_help_runs_as_a_subprocess() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "landscape.cli", "reproduce", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "STUDY" in proc.stdout


@pytest.mark.parametrize("bad", ["no-such-study"])
def test_reproduce_rejects_an_unknown_study(bad: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "landscape.cli", "reproduce", bad], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 2
    assert "unknown study" in proc.stderr and "cheng2024" in proc.stderr
