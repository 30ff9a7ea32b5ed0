"""Figure options of the commands (``hessian --plot``, ``probe --plot``, ``slice --out``, ``verify --plot``):
one rule (:func:`landscape.views.save.figure_path`), checked before any work.

A bad figure path — another suffix, a folder given as the file, a folder that does not exist or is
a file — is one line on stderr with exit 2, names the option, and is refused before the command's
work starts: the work is replaced by a spy that records being reached, and a good path in the same
command line is shown to reach it (so the spy is on the path of the work).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from landscape.cli import main
from landscape.views.save import figure_path

# command -> (argv before the figure path, the figure option)
COMMANDS = {
    "hessian": (["hessian", "--family", "pgd", "--d", "2", "--n", "8"], "--plot"),
    "slice": (["slice", "--family", "pgd", "--d", "2", "--n", "8", "--plane", "random"], "--out"),
    "probe": (["probe", "--construction", "pgd"], "--plot"),
    "verify": (["verify", "fgd", "--activation", "exp", "--d", "2", "--n", "4", "--layers", "1", "--sigma",
                "random:0", "--samples", "2048"], "--plot"),
}

BAD = {  # figure path (relative to tmp_path) -> words of the message
    "suffix": ("fig.pdf", "must name a .png or .svg file"),
    "folder": ("fig.png", "is a folder; name a file"),
    "missing folder": ("nowhere/fig.png", "does not exist"),
    "file as folder": ("notes.txt/fig.png", "is not a folder"),
}


class _Reached(Exception):
    pass


@pytest.fixture()
def work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the first expensive step of each command by a spy; the list records which ran."""
    import landscape.cli._args as cli_args
    import landscape.cli.hessian as hessian
    import landscape.cli.probe as probe_cmd
    import landscape.cli.verify as verify
    import landscape.numeric as numeric
    import landscape.numeric.probe as numeric_probe

    reached: list[str] = []

    def spy(name: str):
        def f(*a, **k):
            reached.append(name)
            raise _Reached(name)
        return f

    monkeypatch.setattr(hessian, "resolve_point", spy("hessian"))
    monkeypatch.setattr(cli_args, "resolve_point", spy("slice"))
    monkeypatch.setattr(probe_cmd, "_construction", spy("probe"))
    monkeypatch.setattr(numeric_probe, "probe", spy("probe"))
    monkeypatch.setattr(verify, "build_problem", spy("verify"))
    monkeypatch.setattr(numeric, "certify_stationary", spy("verify"))
    return reached


def _layout(tmp_path: Path) -> None:
    (tmp_path / "fig.png").mkdir()
    (tmp_path / "notes.txt").write_text("a file\n")


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_figure_path_is_refused_before_any_work(command: str, case: str, tmp_path: Path, work: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _layout(tmp_path)
    before = _tree(tmp_path)
    argv, option = COMMANDS[command]
    name, words = BAD[case]
    assert main([*argv, option, str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"landscape {command}: error: {option}") and words in err, err
    assert work == [] and _tree(tmp_path) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_good_figure_path_reaches_the_work(command: str, tmp_path: Path, work: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    argv, option = COMMANDS[command]
    assert main([*argv, option, str(tmp_path / "fig.svg")]) == 1  # the spy's exception: an internal error
    assert work == [command], work
    assert "_Reached" in capsys.readouterr().err


def test_figure_path_rule(tmp_path: Path) -> None:
    _layout(tmp_path)
    assert figure_path(tmp_path / "a.PNG") == tmp_path / "a.PNG"
    assert figure_path("a.svg") == Path("a.svg")  # the current folder
    for name, (_, words) in BAD.items():
        with pytest.raises(ValueError, match=words):
            figure_path(tmp_path / BAD[name][0], "--plot")
    with pytest.raises(ValueError, match=r"^--out '.*nowhere/fig.png': the folder '.*nowhere' does not exist"):
        figure_path(str(tmp_path / "nowhere/fig.png"), "--out")
