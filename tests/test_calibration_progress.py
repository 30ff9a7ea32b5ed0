"""``python -m landscape.numeric.calibration``: progress through ``landscape._progress``.

By default one ``[calibration] <case>: ...`` line per case on stderr; ``--quiet`` and the global
switch :func:`landscape._progress.quieted` (what ``landscape --quiet`` holds) print nothing there,
and stdout (the table) is the same either way.
"""

from __future__ import annotations

import pytest

from landscape._progress import quieted
from landscape.numeric.calibration import main

ARGS = ["--quick", "--seeds", "1", "--cases", "exact-pgd-L1"]


def test_calibration_progress_goes_through_the_progress_switch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(ARGS) == 0
    loud = capsys.readouterr()
    lines = loud.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[calibration] exact-pgd-L1: "), loud.err
    assert "exact-pgd-L1" in loud.out
    assert main([*ARGS, "--quiet"]) == 0
    flag = capsys.readouterr()
    assert flag.err == "" and flag.out.splitlines()[:2] == loud.out.splitlines()[:2]
    with quieted():
        assert main(ARGS) == 0
    held = capsys.readouterr()
    assert held.err == "" and "exact-pgd-L1" in held.out
