"""``landscape reproduce STUDY``: lazy study lookup, report, claims summary, exit codes, JSON, errors."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest

import analysis
from analysis._study import Claim, StudyContext, StudyResult
from landscape.cli import main
from landscape.experiment.store import RunStore


def _sum_of_squares_study(claimed: float) -> types.ModuleType:
    """A tiny study module whose one claim compares 1² + … + 10² with ``claimed``."""

    def run(ctx: StudyContext) -> StudyResult:
        measured = float(sum(k * k for k in range(1, 11)))
        closed_form = 10 * 11 * 21 / 6  # n(n+1)(2n+1)/6
        fig = ctx.out / "tiny.png"
        fig.write_bytes(b"\x89PNG\r\n\x1a\n")  # a file registered as a figure artifact
        return StudyResult(
            "tinytest",
            (Claim("sum_of_squares", "1² + … + 10² = n(n+1)(2n+1)/6", math.isclose(measured, claimed),
                   {"measured": measured, "closed_form": closed_form, "claimed": claimed},
                   "measured == claimed"),),
            {"numbers": [{"n": 10, "sum": measured}]},
            (fig,),
            (f"seed {ctx.seed}, quick {ctx.quick}",),
        )

    mod = types.ModuleType("analysis.tinytest")
    mod.run = run  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def tiny_study(monkeypatch: pytest.MonkeyPatch):
    def install(claimed: float) -> None:
        monkeypatch.setitem(analysis.STUDIES, "tinytest", "a one-claim study used by the tests")
        monkeypatch.setitem(sys.modules, "analysis.tinytest", _sum_of_squares_study(claimed))

    return install


def test_unknown_study_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["reproduce", "no-such-study", "--quick"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown study 'no-such-study'" in err
    for name in analysis.STUDIES:
        assert name in err


def test_unknown_study_with_json_reports_an_error_object(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["reproduce", "no-such-study", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert rc == 2
    assert "unknown study" in payload["error"] and "cheng2024" in payload["error"]


def test_listed_study_without_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(analysis.STUDIES, "ghoststudy", "listed, never written")
    rc = main(["reproduce", "ghoststudy"])
    assert rc == 2
    assert "analysis/ghoststudy.py is missing" in capsys.readouterr().err


def test_negative_seed_is_rejected_before_running(tiny_study, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    tiny_study(385.0)
    rc = main(["reproduce", "tinytest", "--seed", "-1", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "--seed must be an integer >= 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_claims_that_hold_exit_zero_with_report_and_store(tiny_study, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    tiny_study(385.0)  # the true value
    out = tmp_path / "run"
    rc = main(["reproduce", "tinytest", "--quick", "--out", str(out), "--seed", "3"])
    text = capsys.readouterr().out
    assert rc == 0
    report = out / "report.md"
    assert f"report: {report}" in text
    assert "tinytest: 1/1 claims hold (quick size, seed 3)" in text
    assert "[ok] sum_of_squares" in text and "measured=385" in text
    body = report.read_text()
    assert "| 1² + … + 10² = n(n+1)(2n+1)/6 | yes |" in body
    assert "seed 3, quick True" in body
    with RunStore(out) as store:
        (run,) = store.list_runs()
        assert run.config == {"study": "tinytest", "quick": True, "seed": 3}
        res = store.results(run)
        assert res["claim.sum_of_squares"]["holds"] is True
        assert res["claim.sum_of_squares"]["measured"]["closed_form"] == 385.0
        assert {a.path.name for a in store.artifacts(run)} == {"tiny.png", "report.md"}


def test_a_failing_claim_exits_one(tiny_study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_study(386.0)  # off by one: the claim does not hold
    rc = main(["reproduce", "tinytest", "--out", str(tmp_path / "run")])
    text = capsys.readouterr().out
    assert rc == 1
    assert "tinytest: 0/1 claims hold (full size, seed 0)" in text
    assert "[FAIL] sum_of_squares" in text
    assert "| **no** |" in (tmp_path / "run" / "report.md").read_text()


def test_json_summary(tiny_study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_study(385.0)
    rc = main(["reproduce", "tinytest", "--quick", "--json", "--out", str(tmp_path / "run")])
    payload = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert payload["study"] == "tinytest" and payload["quick"] is True and payload["all_hold"] is True
    assert Path(payload["report"]) == tmp_path / "run" / "report.md"
    (claim,) = payload["claims"]
    assert claim["name"] == "sum_of_squares" and claim["holds"] is True
    assert claim["measured"] == {"measured": 385.0, "closed_form": 385.0, "claimed": 385.0}
    assert [Path(f).name for f in payload["figures"]] == ["tiny.png"]


@pytest.mark.slow
def test_real_quick_study_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The quickest real study end to end: exit code agrees with its claims, report and figures exist."""
    out = tmp_path / "huang"
    rc = main(["reproduce", "huang2023", "--quick", "--json", "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    payload = json.loads(stdout)
    # one progress line per section of huang2023.run, in order, numbered k/7
    sections = ["train", "check_w_integration", "check_balanced", "check_imbalanced", "figures", "tables", "notes"]
    done = [ln for ln in stderr.splitlines() if ln.startswith("reproduce huang2023: section ")]
    assert len(done) == len(sections)
    for k, (ln, name) in enumerate(zip(done, sections), 1):
        assert ln.startswith(f"reproduce huang2023: section {name!r} done in ") and ln.endswith(f" s ({k}/7)")
    # the report opens with the command that reproduces the run and names it under every figure
    body = (out / "report.md").read_text()
    cmd = f"landscape reproduce huang2023 --quick --seed 0 --out {out}"
    assert body.splitlines()[5] == cmd
    pngs = [Path(f) for f in payload["figures"] if f.endswith(".png")]
    assert pngs and all(f"*Figure `{p.stem}`* ([SVG]({p.stem}.svg)) — made by `{cmd}`" in body for p in pngs)
    assert payload["study"] == "huang2023"
    assert rc == (0 if payload["all_hold"] else 1)
    assert payload["claims"] and all(c["holds"] for c in payload["claims"])
    assert (out / "report.md").is_file()
    assert payload["figures"] and all(Path(f).is_file() for f in payload["figures"])
    with RunStore(out) as store:
        (run,) = [r for r in store.list_runs() if r.name.startswith("study-huang2023")]
        assert store.results(run)  # claims recorded


def test_progress_on_stderr_quiet_silences_it_and_stdout_is_unchanged(
        tiny_study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A study prints a start and an end line on stderr and, when it is silent for longer than the
    progress interval, ``running, N s`` lines (the study here sleeps 0.4 s; interval 0.05 s);
    ``--quiet`` prints nothing on stderr; stdout is byte-identical with and without it."""
    import shutil
    import time

    import landscape._progress as progress

    tiny_study(385.0)
    real = sys.modules["analysis.tinytest"].run

    def slow(ctx: StudyContext) -> StudyResult:
        time.sleep(0.4)
        return real(ctx)

    monkeypatch.setattr(sys.modules["analysis.tinytest"], "run", slow)
    monkeypatch.setattr(progress, "PROGRESS_LINE_SECONDS", 0.05)
    out_dir = tmp_path / "run"
    for extra in ([], ["--json"]):
        assert main(["reproduce", "tinytest", "--quick", "--out", str(out_dir), *extra]) == 0
        out, err = capsys.readouterr()
        lines = err.splitlines()
        desc = "reproduce tinytest (quick size, seed 0)"
        assert lines[0] == f"{desc}: started, output in {out_dir}"
        assert lines[-1].startswith(f"{desc}: done in ") and lines[-1].endswith(" s, 1/1 claims hold")
        beats = [ln for ln in lines[1:-1] if ln.startswith(f"{desc}: running, ")]
        assert beats and len(beats) == len(lines) - 2
        shutil.rmtree(out_dir)
        assert main(["reproduce", "tinytest", "--quick", "--out", str(out_dir), "--quiet", *extra]) == 0
        out_q, err_q = capsys.readouterr()
        assert err_q == "" and out_q == out and out.strip()
        shutil.rmtree(out_dir)


def test_each_section_prints_one_line_and_quiet_prints_none(
        tiny_study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A study of three sections run through ``landscape reproduce``: stderr has, between the start and
    the end lines, one ``section 'NAME' done in T s (k/3)`` line per section in order, with T at least
    the time the section slept; ``--quiet`` prints nothing on stderr and leaves stdout unchanged."""
    import re
    import shutil
    import time

    from analysis._study import Sections

    tiny_study(385.0)
    real = sys.modules["analysis.tinytest"].run
    naps = {"setup": 0.0, "measure": 0.2, "figures": 0.05}

    def _setup() -> None:
        time.sleep(naps["setup"])

    def _measure(ctx: StudyContext) -> StudyResult:
        time.sleep(naps["measure"])
        return real(ctx)

    def _figures() -> None:
        time.sleep(naps["figures"])

    def run(ctx: StudyContext) -> StudyResult:
        sec = Sections(ctx, "tinytest", tuple(naps))
        sec(_setup)
        result = sec(_measure, ctx)
        sec(_figures)
        return result

    monkeypatch.setattr(sys.modules["analysis.tinytest"], "run", run)
    out_dir = tmp_path / "run"
    assert main(["reproduce", "tinytest", "--quick", "--out", str(out_dir)]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0].endswith(f"started, output in {out_dir}") and " done in " in lines[-1]
    done = [ln for ln in lines if ln.startswith("reproduce tinytest: section ")]
    assert len(done) == 3
    for k, (ln, (name, nap)) in enumerate(zip(done, naps.items()), 1):
        m = re.fullmatch(rf"reproduce tinytest: section '{name}' done in (\d+\.\d) s \({k}/3\)", ln)
        assert m is not None, ln
        assert float(m.group(1)) >= round(nap, 1) - 0.05
    shutil.rmtree(out_dir)
    assert main(["reproduce", "tinytest", "--quick", "--out", str(out_dir), "--quiet"]) == 0
    out_q, err_q = capsys.readouterr()
    assert err_q == "" and out_q == out


def test_python_m_analysis_prints_section_progress_and_quiet_silences_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m analysis.NAME`` (:func:`analysis._study.study_main`) reports each section on stderr as
    ``landscape reproduce`` does; ``--quiet`` prints nothing there, and the report still goes to stdout."""
    from analysis._study import Sections, study_main

    real = _sum_of_squares_study(385.0).run

    def _measure(ctx: StudyContext) -> StudyResult:
        return real(ctx)

    def run(ctx: StudyContext) -> StudyResult:
        return Sections(ctx, "tinytest", ("measure",))(_measure, ctx)

    assert study_main("tinytest", run, ["--quick", "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert [ln for ln in err.splitlines() if ln.startswith("reproduce tinytest: section 'measure' done in ")]
    assert study_main("tinytest", run, ["--quick", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    out_quiet, err_quiet = capsys.readouterr()
    assert err_quiet == ""
    assert out.startswith("# Study: tinytest") and out_quiet.startswith("# Study: tinytest")  # the report, either way
