"""landscape.views.record.DrawnPanel: the data file of a panel is what its axes draw."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.path import Path as MplPath

from landscape.views.record import DrawnPanel
from landscape.views.save import jsonable, save_figure


def _panel(**kw) -> DrawnPanel:
    ax = Figure().add_subplot()
    return DrawnPanel(ax, **{"title": "t", "xlabel": "step", "ylabel": "loss", **kw})


def test_labels_and_scales_are_set_on_the_axes_and_recorded_in_order() -> None:
    p = _panel(title="loss along GD", xlabel="GD step", ylabel="loss", xscale="log", yscale="log")
    ax = p.ax
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale(), ax.get_yscale()) == (
        "loss along GD", "GD step", "loss", "log", "log")
    p.line("a", "curve a", [1, 2, 3], [3.0, 2.0, 1.0])
    rec = p.finish()
    assert list(rec) == ["title", "xlabel", "ylabel", "xscale", "yscale", "curves"]
    assert (rec["title"], rec["xlabel"], rec["ylabel"], rec["xscale"], rec["yscale"]) == (
        "loss along GD", "GD step", "loss", "log", "log")
    # a scale not given is neither set nor recorded; reference=True records an empty list
    q = _panel(yscale="log", reference=True)
    assert q.ax.get_xscale() == "linear"
    assert list(q.finish()) == ["title", "xlabel", "ylabel", "yscale", "curves", "reference"]
    assert q.finish()["reference"] == [] and "reference" not in _panel().finish()


def test_curve_record_is_the_line_data() -> None:
    g = torch.Generator()
    g.manual_seed(5)
    y = torch.rand(7, dtype=torch.float64, generator=g)
    p = _panel()
    x = np.arange(7)
    ln = p.line("loss", "training loss", x, y, "o-", color="C2", lw=0.7)
    p.line("hidden", "not in the legend", range(3), [0.5, 0.25, 0.125], legend=False)
    assert ln.get_gid() == "loss" and ln.get_color() == "C2" and ln.get_linewidth() == 0.7
    written = json.loads(json.dumps(jsonable(p.finish()), allow_nan=False))
    c0, c1 = written["curves"]
    assert (c0["id"], c0["label"], c1["id"], c1["label"]) == ("loss", "training loss", "hidden", "not in the legend")
    assert c0["x"] == list(range(7)) and all(isinstance(v, int) for v in c0["x"])  # integer steps stay integers
    assert c0["y"] == y.tolist() == ln.get_ydata().tolist()
    assert c0["x"] == ln.get_xdata().tolist()
    assert c1["x"] == [0, 1, 2] and c1["y"] == [0.5, 0.25, 0.125]
    # the legend shows the labelled line only; the hidden one keeps its label in the record
    assert [t.get_text() for t in p.ax.legend().get_texts()] == ["training loss"]


def test_non_finite_values_are_gaps_and_null() -> None:
    y = [1.0, math.inf, 0.5, math.nan, 0.25, -math.inf, 0.125]
    p = _panel(yscale="log")
    ln = p.line("diverged", "a run that diverged", list(range(7)), y)
    drawn = np.asarray(ln.get_ydata(), dtype=np.float64)
    bad = [1, 3, 5]
    assert np.isnan(drawn[bad]).all()
    np.testing.assert_array_equal(np.delete(drawn, bad), [1.0, 0.5, 0.25, 0.125])
    written = json.loads(json.dumps(jsonable(p.finish()), allow_nan=False))
    assert written["curves"][0]["y"] == [1.0, None, 0.5, None, 0.25, None, 0.125]
    # matplotlib draws the line in four pieces: a new segment starts after each gap
    path = ln.get_path().cleaned(remove_nans=True)
    assert int((path.codes == MplPath.MOVETO).sum()) == 4
    # the input is not modified
    assert math.isinf(y[1]) and math.isinf(y[5])


def test_reference_lines() -> None:
    p = _panel()
    r = p.reference("floor", "the floor ½(1−p)^N", 0.125, legend=False, ls=":", color="C1")
    p.reference("bayes", "Bayes loss", 0.5)
    p.reference("unknown", "not measured", math.inf)
    assert r.get_gid() == "floor" and r.get_label().startswith("_") and r.get_linestyle() == ":"
    np.testing.assert_array_equal(r.get_ydata(), [0.125, 0.125])
    assert np.isnan(np.asarray(p.ax.get_lines()[2].get_ydata(), dtype=float)).all()
    written = json.loads(json.dumps(jsonable(p.finish()), allow_nan=False))
    assert written["reference"] == [{"id": "floor", "label": "the floor ½(1−p)^N", "value": 0.125},
                                    {"id": "bayes", "label": "Bayes loss", "value": 0.5},
                                    {"id": "unknown", "label": "not measured", "value": None}]
    assert [t.get_text() for t in p.ax.legend().get_texts()] == ["Bayes loss", "not measured"]


def test_band_records_its_edges_in_the_curve() -> None:
    p = _panel()
    x, med = np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.6, 0.3])
    lo, hi = med - 0.1, med + np.array([0.2, 0.1, math.nan])
    ln = p.line("median:loss", "loss", x, med, color="C3")
    poly = p.band("median:loss", lo, hi)
    assert poly.get_gid() == "band:median:loss"
    np.testing.assert_allclose(poly.get_facecolor()[0][:3], to_rgb(ln.get_color()))
    (curve,) = p.finish()["curves"]
    np.testing.assert_array_equal(curve["q25"], lo)
    np.testing.assert_array_equal(curve["q75"], hi)
    assert json.loads(json.dumps(jsonable(curve)))["q75"] == [1.2, 0.7, None]
    # the polygon runs along the edges that are finite (the last x, with no upper edge, is left out)
    verts = np.concatenate([q.vertices for q in poly.get_paths()])
    for xi, l, h in [(0.0, lo[0], hi[0]), (1.0, lo[1], hi[1])]:
        assert any(np.allclose(v, (xi, l)) for v in verts) and any(np.allclose(v, (xi, h)) for v in verts)
    assert not any(np.isclose(v[0], 2.0) for v in verts)
    with pytest.raises(KeyError, match="no curve 'other' was drawn"):
        p.band("other", lo, hi)
    with pytest.raises(ValueError, match="band 'median:loss' has 2 and 3 edge values for 3 x values"):
        p.band("median:loss", lo[:2], hi)


def test_bad_input_is_rejected() -> None:
    p = _panel()
    with pytest.raises(ValueError, match="curve 'a' has 3 x values but 2 y values"):
        p.line("a", "a", [0, 1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="curve 'b' y must be one-dimensional, got shape"):
        p.line("b", "b", [0, 1], [[0.0, 1.0]])
    with pytest.raises(TypeError, match="curve 'c' y must be real numbers"):
        p.line("c", "c", [0, 1], ["x", "y"])
    p.line("d", "d", [0, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match="gid 'd' is already drawn"):
        p.reference("d", "d", 1.0)
    with pytest.raises(ValueError, match="gid must be a non-empty string"):
        p.line("", "e", [0], [0.0])
    assert [c["id"] for c in p.finish()["curves"]] == ["d"] and len(p.ax.get_lines()) == 1


def test_saved_figure_data_matches_the_axes(tmp_path: Path) -> None:
    fig = Figure(layout="constrained")
    p = DrawnPanel(fig.add_subplot(), title="residual", xlabel="t", ylabel="r", yscale="log")
    p.line("r", "residual", range(4), torch.tensor([1.0, 1e-2, math.nan, 1e-8], dtype=torch.float64), "o-")
    p.reference("eps", "machine epsilon", 2.0 ** -52, ls="--")
    p.ax.legend()
    save_figure(fig, tmp_path / "fig", data={"panels": [p.finish()]})
    assert (tmp_path / "fig.png").stat().st_size > 0
    written = json.loads((tmp_path / "fig.json").read_text(encoding="utf-8"))
    (panel,) = written["panels"]
    assert panel["yscale"] == fig.axes[0].get_yscale() == "log"
    lines = {ln.get_gid(): ln for ln in fig.axes[0].get_lines()}
    (c,) = panel["curves"]
    ys = [None if math.isnan(v) else v for v in lines["r"].get_ydata().tolist()]
    assert c["y"] == ys == [1.0, 1e-2, None, 1e-8] and c["x"] == lines["r"].get_xdata().tolist() == [0, 1, 2, 3]
    assert panel["reference"] == [{"id": "eps", "label": "machine epsilon", "value": 2.0 ** -52}]


def test_the_study_figure_check_catches_a_file_that_is_not_what_is_drawn() -> None:
    """tests/figure_checks.assert_data_is_drawn, used by the study tests, fails on each kind of mismatch."""
    import copy

    from figure_checks import assert_data_is_drawn

    fig = Figure()
    fig.suptitle("two panels")
    a = DrawnPanel(fig.add_subplot(1, 2, 1), title="a", xlabel="t", ylabel="y", yscale="log")
    a.line("one", "first", [0, 1, 2], [1.0, math.nan, 0.25])
    a.line("two", "second", [0, 1], [2.0, 3.0], legend=False)
    b = DrawnPanel(fig.add_subplot(1, 2, 2), title="b", xlabel="t", ylabel="z", reference=True)
    b.line("three", "third", [5, 6], [0.5, 0.5])
    b.reference("floor", "floor", 0.125, legend=False)
    good = json.loads(json.dumps(jsonable({"title": "two panels", "panels": [a.finish(), b.finish()]})))
    curves, refs = assert_data_is_drawn(fig, good)
    np.testing.assert_array_equal(curves["one"][1], [1.0, math.nan, 0.25])
    assert refs == {"floor": 0.125} and set(curves) == {"one", "two", "three"}

    def tampered(edit) -> dict:
        data = copy.deepcopy(good)
        edit(data)
        return data

    bad = [
        lambda d: d["panels"][0]["curves"][0]["y"].__setitem__(2, 0.5),  # a value
        lambda d: d["panels"][0]["curves"][0]["y"].__setitem__(1, 1.0),  # a gap written as a number
        lambda d: d["panels"][0]["curves"].pop(1),  # a line left out
        lambda d: d["panels"][0]["curves"][0].__setitem__("label", "renamed"),  # a legend label
        lambda d: d["panels"][1].__setitem__("ylabel", "w"),  # an axis label
        lambda d: d["panels"][0].__setitem__("yscale", "linear"),  # a scale
        lambda d: d["panels"][1]["reference"][0].__setitem__("value", 0.25),  # a reference line
        lambda d: d.__setitem__("title", "another"),  # the suptitle
        lambda d: d["panels"].reverse(),  # panels out of order
    ]
    for edit in bad:
        with pytest.raises(AssertionError):
            assert_data_is_drawn(fig, tampered(edit))
    # a line's label that is not in the legend may differ; a relabelled one is exempt
    assert_data_is_drawn(fig, tampered(lambda d: d["panels"][0]["curves"][1].__setitem__("label", "x")))
    assert_data_is_drawn(fig, tampered(lambda d: d["panels"][0]["curves"][0].__setitem__("label", "x")),
                         relabelled={"one"})
