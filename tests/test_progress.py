"""Progress on stderr (landscape/_progress.py) and the global ``--quiet``.

References: the line formats written out in the tests; stdout compared byte for byte (wall
times masked) with and without ``--quiet``.
"""

from __future__ import annotations

import re

import pytest

import landscape._progress as progress
from landscape.cli import main


def test_quieted_nests_and_silences_note_and_lines(capsys: pytest.CaptureFixture[str]) -> None:
    progress.note("one")
    with progress.quieted():
        progress.note("hidden")
        with progress.quieted(False):  # an inner "not quiet" does not undo an outer --quiet
            assert progress.quiet()
            progress.note("hidden too")
        lines = progress.ProgressLines("x", 0, 4, interval=0.0)
        lines.update(2)
    assert not progress.quiet()
    progress.note("off", progress=False)
    lines = progress.ProgressLines("work", 0, 4, interval=0.0)
    lines.update(2, ", loss 0.5")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "one" and len(err) == 2
    assert re.fullmatch(r"work: step 2/4, loss 0\.5, \d+ s, ETA \d+ s", err[1]), err[1]


def _mask(text: str) -> str:
    return re.sub(r"\d+\.\d+ s\b|\d+ s\b", "T s", re.sub(r'"(seconds|wall_time)": [0-9.e+-]+', r'"\1": T', text))


def test_train_progress_lines_and_quiet(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``landscape train`` off a terminal: a line per step (interval 0 here); ``--quiet``: none; stdout alike."""
    import landscape.experiment.train as tr

    monkeypatch.setattr(tr, "PROGRESS_LINE_SECONDS", 0.0)
    argv = ["train", "--d", "2", "--n", "3", "--seeds", "2", "--steps", "4", "--batch", "8", "--eval-batch", "8"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert sum(bool(re.match(r"train 2 seeds \[\w+\]: step \d/4, loss ", ln)) for ln in err.splitlines()) == 4
    assert main([*argv, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    out_q, err_q = capsys.readouterr()
    assert err_q == ""
    assert _mask(out_q).replace(str(tmp_path / "b"), "ROOT") == _mask(out).replace(str(tmp_path / "a"), "ROOT")


def test_verify_progress_and_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    """``landscape verify`` (Monte-Carlo) reports each look on stderr; ``--quiet`` silences it; stdout alike."""
    argv = ["verify", "pgd-identity", "--d", "2", "--n", "6", "--exact", "no", "--samples", "2048"]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert [ln.split(":")[0] for ln in err.splitlines()][:2] == ["[verify] look 1", "[verify] look 2"]
    assert main([*argv, "--quiet"]) == rc
    out_q, err_q = capsys.readouterr()
    assert err_q == "" and _mask(out_q) == _mask(out) and "verdict" in out


def test_every_command_accepts_quiet() -> None:
    import argparse

    from landscape.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        assert any("--quiet" in a.option_strings for a in p._actions), name
    assert parser.parse_args(["--quiet", "families"]).quiet_all is True
