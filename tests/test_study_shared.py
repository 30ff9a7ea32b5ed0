"""The helpers every study shares (``analysis/_study.py``): findings, report, threads, figures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis._study import (Claim, Findings, StudyContext, claims_markdown, finite_min, intra_op_threads,
                             label_seed_band, merge_probes, probe_figure, probe_medians, reproduce_command, seed_list,
                             study_threads, table_markdown, write_report)


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [1, 2], label="median")
    ax.legend()
    return fig


def test_findings_collect_in_order_and_freeze(tmp_path: Path) -> None:
    found = Findings(tmp_path / "out")
    a = found.claim(Claim("a", "x > y", True, {"x": 2.0}, "x > y"))
    found.claim(Claim("b", "x < y", False, {"x": 2.0}, "x < y"))
    found.table("t", [{"L": 1}, {"L": 2}])
    found.figure(_figure(), "fig")
    found.note("one", "two")
    r = found.result("toy")
    assert r.study == "toy" and r.claims[0] is a and [c.name for c in r.claims] == ["a", "b"]
    assert not r.all_hold
    assert r.tables == {"t": [{"L": 1}, {"L": 2}]}
    assert [f.name for f in r.figures] == ["fig.png", "fig.svg"]
    assert all(f.is_file() and f.stat().st_size > 0 for f in r.figures)
    assert r.notes == ("one", "two")


def test_report_links_figures_relative_to_a_relative_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # save_figure returns absolute paths; a report written to a relative directory must still link
    # its figures relatively, so that the report and its figures can be moved together.
    monkeypatch.chdir(tmp_path)
    out = Path("runs") / "toy"
    found = Findings(out)
    found.figure(_figure(), "fig")
    assert found.figures[0].is_absolute()
    text = write_report(found.result("toy"), out).read_text()
    assert "![fig](fig.png)" in text
    assert str(tmp_path) not in text


def test_report_and_notebook_render_claims_and_tables_the_same_way(tmp_path: Path) -> None:
    found = Findings(tmp_path)
    found.claim(Claim("a", "x > y", True, {"x": 2.0, "y": float("nan")}, "x > y"))
    found.table("rows", [{"L": 1, "loss": 0.123456}])
    r = found.result("toy")
    assert claims_markdown(r).splitlines()[2] == "| x > y | yes | x > y | x = 2, y = nan |"
    text = write_report(r, tmp_path).read_text()
    assert claims_markdown(r) in text and table_markdown(r.tables["rows"]) in text
    from analysis import _notebook

    assert _notebook.claims_markdown is claims_markdown and _notebook.table_markdown is table_markdown


def test_intra_op_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with intra_op_threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        with intra_op_threads(0):
            pass
    with pytest.raises(TypeError, match="n must be an int"):
        with intra_op_threads(2.0):
            pass
    with study_threads(StudyContext(quick=True, out=Path(os.devnull))):
        assert torch.get_num_threads() == 1
    with study_threads(StudyContext(quick=False, out=Path(os.devnull))):
        assert torch.get_num_threads() == before


def test_label_seed_band_names_the_band_in_every_legend() -> None:
    fig = _figure()
    label_seed_band(fig, 3)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["median", "shaded: interquartile range over 3 seeds"]


def test_seed_summaries() -> None:
    assert finite_min([0.5, float("nan"), 0.2]) == 0.2
    assert finite_min([float("nan"), float("inf")]) == np.inf
    assert seed_list([0.123456, 2.0]) == "0.1235, 2"


def _probe_result(algorithms, seed_values, kernel="linear"):
    from landscape.numeric.probe import ProbeResult

    rel = torch.tensor(seed_values, dtype=torch.float64)  # (S, A, L)
    fitted = {a: [[torch.tensor(float(i))] for i in range(rel.shape[0])] for a in algorithms}
    return ProbeResult(tuple(algorithms), rel.shape[2], 1 - rel, rel, fitted, 8, 8, kernel, 1 - 2 * rel, 2 * rel)


def test_merge_probes_relabels_and_concatenates_along_the_algorithm_axis(tmp_path: Path) -> None:
    a = _probe_result(("gd", "newton"), [[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]]])
    b = _probe_result(("functional_gd",), [[[0.01, 0.02]], [[0.03, 0.04]]], kernel="exp")
    m = merge_probes([(b, {"functional_gd": "FGD"}), (a, {"gd": "GD"})])
    assert m.algorithms == ("FGD", "GD") and m.layers == 2 and m.seeds == 2 and m.kernel == "exp; linear"
    torch.testing.assert_close(m.relative_error[:, 0], b.relative_error[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(m.relative_error[:, 1], a.relative_error[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(m.weight_cosine[:, 1], a.weight_cosine[:, 0], rtol=0, atol=0)
    assert m.fitted["GD"] is a.fitted["gd"]
    # the median over seeds is the mean of the two middle values (two seeds: their mean, not the smaller)
    med = probe_medians(m)
    torch.testing.assert_close(med["relative_error"], torch.tensor([[0.02, 0.03], [0.3, 0.4]], dtype=torch.float64))
    torch.testing.assert_close(med["cosine"], 1 - med["relative_error"])
    files = probe_figure(m, tmp_path, "probe", "title")
    assert [f.name for f in files] == ["probe.png", "probe.svg"] and all(f.stat().st_size > 1000 for f in files)
    with pytest.raises(ValueError, match="not 'newton'"):
        merge_probes([(b, {"newton": "N"})])
    with pytest.raises(ValueError, match="used twice"):
        merge_probes([(a, {"gd": "X", "newton": "X"})])
    with pytest.raises(ValueError, match="different seeds"):
        merge_probes([(a, {"gd": "GD"}), (_probe_result(("gd",), [[[0.1, 0.2]]]), {"gd": "GD1"})])
    with pytest.raises(ValueError, match="at least one"):
        merge_probes([])


def test_report_opens_with_the_command_and_captions_every_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny result (no training): two figures, one with a data file beside it. The report's first
    block is the command, each PNG is linked relatively and followed by a caption naming the figure,
    the same command and (only where it exists) the data file."""
    import json

    monkeypatch.chdir(tmp_path)
    out = Path("runs") / "toy"
    ctx = StudyContext(quick=True, out=out, seed=7)
    found = Findings(out)
    found.claim(Claim("a", "2 + 2 = 4", 2 + 2 == 4, {"sum": 4.0}, "sum == 4"))
    found.figure(_figure(), "with_data")
    found.figure(_figure(), "no_data")
    (out / "with_data.json").write_text(json.dumps({"x": [0, 1], "y": [1, 2]}))
    cmd = reproduce_command("toy", ctx)
    assert cmd == "landscape reproduce toy --quick --seed 7 --out runs/toy"
    lines = write_report(found.result("toy"), out, 1.5, command=cmd).read_text().splitlines()
    assert lines[:7] == ["# Study: toy", "", "Reproduce this run with:", "", "```", cmd, "```"]
    assert str(tmp_path) not in "\n".join(lines)
    for stem, data in (("with_data", True), ("no_data", False)):
        i = lines.index(f"![{stem}]({stem}.png)")
        caption = lines[i + 2]
        assert caption.startswith(f"*Figure `{stem}`* ([SVG]({stem}.svg)) — made by `{cmd}`")
        assert (f"data: [{stem}.json]({stem}.json)" in caption) is data
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.svg").is_file()
    # without a command (a report written by hand) there is no command block and no "made by"
    text = write_report(found.result("toy"), out).read_text()
    assert "Reproduce this run" not in text and "made by" not in text
    assert "*Figure `no_data`* ([SVG](no_data.svg))." in text


def test_reproduce_command_full_size_device_and_quoting() -> None:
    ctx = StudyContext(quick=False, out=Path("my runs/x"), seed=0, device="cuda:1")
    assert reproduce_command("ahn2023", ctx) == "landscape reproduce ahn2023 --seed 0 --out 'my runs/x' --device cuda:1"


def test_studies_take_their_labels_from_the_library() -> None:
    """One set of human labels: the studies keep no copy of landscape.views.labels.ACTIVATION_LABELS."""
    from analysis import _study, cheng2024
    from landscape.views import labels

    assert not hasattr(_study, "LABELS") and not hasattr(_study, "label")
    assert cheng2024.label is labels.activation_label
    assert cheng2024.label("relu") == "ReLU" and cheng2024.label("exp(x12)+lin(x34)").startswith("K° = exp")


def test_sections_report_each_section_once_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    from analysis._study import Sections

    def _first(x: int) -> int:
        return x + 1

    def _second() -> None:
        return None

    def _other() -> None:
        return None

    sec = Sections(StudyContext(quick=True, out=Path("unused"), progress=True), "toy", ("first", "second"))
    assert sec(_first, 2) == 3
    with pytest.raises(ValueError, match="section 'other' is not declared; declared: first, second"):
        sec(_other)
    with pytest.raises(ValueError, match="section 'first' already ran"):
        sec(_first, 0)
    sec(_second)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("reproduce toy: section 'first' done in ") and err[0].endswith(" s (1/2)")
    assert err[1].startswith("reproduce toy: section 'second' done in ") and err[1].endswith(" s (2/2)")
    assert set(sec.times) == {"first", "second"} and all(t >= 0 for t in sec.times.values())
    # a context that does not ask for progress prints nothing
    quiet = Sections(StudyContext(quick=True, out=Path("unused")), "toy", ("first",))
    quiet(_first, 0)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="distinct section names"):
        Sections(StudyContext(quick=True, out=Path("unused")), "toy", ("a", "a"))
