"""The numbers beside each figure: ``NAME.json`` next to ``NAME.png`` holds what was drawn.

Every figure ``landscape plot`` writes (:func:`landscape.views.plots.plot_store`) gets a data
file. Its curves are checked against two references: the Line2D data of the figure object (the
entry with ``"id"`` equal to a line's gid holds exactly that line's x and y) and the values in the
run store (per-seed loss curves are the logged metric, the distance medians ``np.median`` over
the logged seeds, the band edges ``np.quantile(·, [0.25, 0.75])``). The study figures written
through :class:`analysis._study.Findings` carry the data their array function recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import landscape.views.plots as plots
from landscape.experiment.store import RunStore
from landscape.views.kinds import PLOT_KINDS


def _data(png: Path) -> dict:
    path = png.with_suffix(".json")
    assert path.is_file(), f"no data file beside {png}"
    return json.loads(path.read_text(encoding="utf-8"))


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _lines_match(fig: Figure, curves: list[dict]) -> int:
    """Every line of ``fig`` with a gid has an entry with that id holding exactly its data; returns the count."""
    by_id = {c["id"]: c for c in curves}
    n = 0
    for ax in fig.axes:
        for ln in ax.get_lines():
            gid = ln.get_gid()
            if gid is None or gid not in by_id and not gid.startswith(("median", "seed:")):
                continue
            entry = by_id[gid]
            np.testing.assert_array_equal(_floats(entry["x"]), np.asarray(ln.get_xdata(), dtype=np.float64))
            np.testing.assert_array_equal(_floats(entry["y"]), np.asarray(ln.get_ydata(), dtype=np.float64))
            n += 1
    return n


def _log_run(store: RunStore, name: str, g: torch.Generator, seeds=(2, 4, 9), steps: int = 7) -> dict[str, np.ndarray]:
    run = store.create_run({"name": name}, name=name)
    logged: dict[str, list[np.ndarray]] = {}
    for step in range(steps):
        m = {"loss": torch.exp(-0.3 * step + 0.2 * torch.randn(len(seeds), generator=g, dtype=torch.float64)),
             "dist.layer0": torch.rand(len(seeds), generator=g, dtype=torch.float64) * 0.8**step + 1e-3,
             "dist.layer1": torch.rand(len(seeds), generator=g, dtype=torch.float64) * 0.7**step + 1e-3}
        store.log_metrics(run, 5 * step, m, seeds=list(seeds))
        for k, v in m.items():
            logged.setdefault(k, []).append(v.numpy().copy())
    store.log_result(run, "bayes_loss", 0.0625)
    return {k: np.stack(v) for k, v in logged.items()}


def test_loss_json_holds_the_plotted_lines_and_the_stored_metric(tmp_path: Path) -> None:
    seeds = (2, 4, 9)
    with RunStore(tmp_path / "store") as s:
        logged = _log_run(s, "r", torch.Generator().manual_seed(5), seeds=seeds)
        saved = plots.plot_loss(s, "r")
    data = _data(saved.png)
    assert data["runs"] == ["r"] and data["metric"] == "loss" and data["xlabel"] == "step"
    assert _lines_match(saved.figure, data["curves"]) == len(seeds) + 1
    by_id = {c["id"]: c for c in data["curves"]}
    steps = 5 * np.arange(7)
    for j, sd in enumerate(seeds):
        np.testing.assert_array_equal(by_id[f"seed:{sd}"]["x"], steps)
        np.testing.assert_array_equal(by_id[f"seed:{sd}"]["y"], logged["loss"][:, j])  # the logged float64 values
    np.testing.assert_allclose(by_id["median"]["y"], np.median(logged["loss"], axis=1), rtol=1e-15, atol=0)
    assert data["reference"] == [{"id": "bayes", "label": "Bayes-optimal loss", "value": 0.0625}]


def test_distance_json_holds_the_medians_and_bands_of_the_stored_metric(tmp_path: Path) -> None:
    with RunStore(tmp_path / "store") as s:
        logged = _log_run(s, "r", torch.Generator().manual_seed(6))
        saved = plots.plot_distance(s, "r")
    data = _data(saved.png)
    assert data["metrics"] == ["dist.layer0", "dist.layer1"]
    assert _lines_match(saved.figure, data["curves"]) == 2
    for c in data["curves"]:
        vals = logged[c["key"]]
        assert c["id"] == f"median:{c['key']}" and c["seeds"] == 3
        np.testing.assert_array_equal(c["x"], 5 * np.arange(7))
        np.testing.assert_allclose(c["y"], np.median(vals, axis=1), rtol=1e-15, atol=0)
        q25, q75 = np.quantile(vals, [0.25, 0.75], axis=1)
        np.testing.assert_allclose(c["q25"], q25, rtol=1e-15, atol=0)
        np.testing.assert_allclose(c["q75"], q75, rtol=1e-15, atol=0)


def test_no_data_argument_writes_no_data_file(tmp_path: Path) -> None:
    fig = plots.loss_curves_figure([0, 1], [[1.0], [0.5]])
    saved = plots.save_figure(fig, tmp_path, "f")
    assert not (tmp_path / "f.json").exists() and saved.png.is_file()
    assert plots.figure_data(Figure()) is None


TINY = dict(d=2, n=4, attention="kernel", seeds=3, steps=8, batch=16, eval_batch=32, log_every=4,
            lr=0.02, dtype="float64", device="cpu", distance_every=0, checkpoint_every=0)


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory: pytest.TempPathFactory):
    """Runs that support every kind: two activations × two data kernels, two depths, two context lengths."""
    from landscape.experiment.train import TrainConfig, train

    root = tmp_path_factory.mktemp("kinds") / "store"
    configs = [TrainConfig(task=t, activations=(a,), layers=1, **TINY)
               for t in ("gp:exp", "gp:linear") for a in ("exp", "linear")]
    configs.append(TrainConfig(task="gp:exp", activations=("exp",), layers=2, **TINY))
    configs.append(TrainConfig(task="gp:exp", activations=("exp",), layers=1, **{**TINY, "n": 6}))
    with RunStore(root) as s:
        for c in configs:
            train(c, s, progress=False)
        names = [r.name for r in s.list_runs()]
        report = plots.plot_store(s, [*PLOT_KINDS])
    return root, names, report


def test_every_kind_plot_store_writes_has_its_data_beside_it(every_kind) -> None:
    root, names, report = every_kind
    assert report.skipped == ()
    made = {f.name.split("-seed")[0] for f in report.figures}
    assert made == {"distance", "loss", "heatmap", "spectrum", "loss-vs-layers", "loss-vs-n", "grid",
                    "seed-distances", "distance-vs-layers", "distance-vs-n"}
    for f in report.figures:
        data = _data(f.png)
        assert data["runs"] == list(f.runs)
        if "curves" in data:
            assert _lines_match(f.figure, data["curves"]) >= 1
    with RunStore(root, read_only=True) as s:  # the data files are not written into the store
        assert all(s.artifacts(r) == [] for r in names)


def test_heatmap_grid_seed_and_spectrum_data_are_what_was_drawn(every_kind) -> None:
    _, _, report = every_kind
    for f in report.figures:
        data = _data(f.png)
        if f.name.startswith("heatmap"):
            images = {im.get_gid(): np.asarray(im.get_array()) for ax in f.figure.axes for im in ax.get_images()}
            assert len(images) == 2 * len(data["matrices"]) >= 2
            for m in data["matrices"]:
                for col in data["columns"]:
                    np.testing.assert_array_equal(np.array(m[col]), images[f"{col}:{m['name']}"])
        elif f.name == "grid":
            cells = np.asarray(f.figure.axes[0].collections[0].get_array(), dtype=np.float64)
            np.testing.assert_array_equal(_floats(np.ravel(data["values"])), cells.ravel())
            assert len(data["rows"]) * len(data["columns"]) == cells.size == 4
        elif f.name == "seed-distances":
            for g in data["groups"]:
                (sc,) = [c for ax in f.figure.axes for c in ax.collections if c.get_gid() == g["id"]]
                finite = _floats(g["values"])
                finite = finite[np.isfinite(finite)]
                np.testing.assert_array_equal(sc.get_offsets()[:, 1], finite)
                np.testing.assert_allclose([g["q25"], g["median"], g["q75"]],
                                           np.quantile(finite, [0.25, 0.5, 0.75]), rtol=1e-12)
        elif f.name.startswith("spectrum"):
            (rug,) = [ln for ax in f.figure.axes for ln in ax.get_lines() if ln.get_gid() == "eigenvalues"]
            np.testing.assert_array_equal(data["eigenvalues"], rug.get_xdata())
            assert sum(data["histogram"]["counts"]) == len(data["eigenvalues"]) == data["parameters"]


def test_study_figures_carry_the_data_of_their_array_function(tmp_path: Path) -> None:
    from analysis._study import Findings

    found = Findings(tmp_path)
    steps = np.arange(5.0)
    vals = np.array([[1.0, 2.0], [0.5, 0.9], [0.4, 0.2], [0.1, 0.3], [0.05, 0.02]])
    found.figure(plots.distance_figure({"a": (steps, vals)}), "dist")
    found.figure(Figure(), "plain")
    found.figure(Figure(), "given", data={"x": [1, 2]})
    data = json.loads((tmp_path / "dist.json").read_text())
    np.testing.assert_allclose(data["curves"][0]["y"], np.median(vals, axis=1), rtol=1e-15)
    assert not (tmp_path / "plain.json").exists()
    assert json.loads((tmp_path / "given.json").read_text()) == {"x": [1, 2]}
    assert [p.name for p in found.figures] == [f"{stem}.{fmt}" for stem in ("dist", "plain", "given")
                                               for fmt in ("png", "svg")]
