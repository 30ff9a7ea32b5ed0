"""Tests of the figures (landscape/views/plots.py).

Every figure is built from data written to a real run store (or given as arrays) and checked
against that data: the median line's y-data equals ``np.median`` over seeds of what was logged,
the inter-quartile band spans ``np.quantile(·, [0.25, 0.75])``, heatmap images hold the matrices
and share one colour range, and the written files are a valid PNG (signature, IHDR size) and a
parseable SVG. Plotting never writes to the store, even one open for writing.
"""

from __future__ import annotations

import math
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

import landscape.views.plots as plots
from landscape.experiment.store import RunStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> tuple[int, int]:
    """Assert ``path`` is a PNG; return its (width, height) from the IHDR chunk."""
    data = path.read_bytes()
    assert len(data) > 100
    assert data[:8] == PNG_SIGNATURE
    length, ctype = struct.unpack(">I4s", data[8:16])
    assert ctype == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert width > 0 and height > 0
    return width, height


def _check_svg(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert path.stat().st_size > 100
    return root


def _line(fig: Figure, gid: str):
    found = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == gid]
    assert len(found) == 1, [ln.get_gid() for ax in fig.axes for ln in ax.get_lines()]
    return found[0]


@pytest.fixture
def store(tmp_path: Path):
    with RunStore(tmp_path / "store") as s:
        yield s


def _log_random_run(store: RunStore, name: str, g: torch.Generator, *, steps: int = 12,
                    seeds: tuple[int, ...] = (3, 5, 7, 11), layers: int = 2) -> dict[str, np.ndarray]:
    """Log decaying positive per-seed metrics; return what was logged, ``key -> (steps, seeds)``."""
    run = store.create_run({"name": name, "layers": layers}, name=name)
    S = len(seeds)
    logged: dict[str, list[np.ndarray]] = {}
    for step in range(steps):
        metrics = {"loss": torch.exp(-0.2 * step + 0.3 * torch.randn(S, generator=g, dtype=torch.float64))}
        for l in range(layers):
            metrics[f"dist.layer{l}"] = torch.rand(S, generator=g, dtype=torch.float64) * 0.9**step + 1e-3
        metrics["grad_norm"] = torch.rand(S, generator=g, dtype=torch.float64)
        store.log_metrics(run, step * 10, metrics, seeds=list(seeds))
        for k, v in metrics.items():
            logged.setdefault(k, []).append(v.numpy().copy())
    store.log_result(run, "bayes_loss", 0.125)
    return {k: np.stack(v) for k, v in logged.items()}


def test_distance_plot_median_and_band_equal_stored_metric(store: RunStore) -> None:
    g = torch.Generator().manual_seed(0)
    logged = _log_random_run(store, "r1", g)
    assert plots.distance_keys(store, "r1") == ["dist.layer0", "dist.layer1"]
    saved = plots.plot_distance(store, "r1")
    assert saved.png == store.root / "figures" / "r1" / "distance.png"
    _check_png(saved.png)
    _check_svg(saved.svg)
    assert saved.runs == ("r1",) and store.artifacts("r1") == []  # figures are not written into the store
    ax = saved.figure.axes[0]
    assert ax.get_yscale() == "log"
    steps = np.arange(12) * 10
    for l in range(2):
        vals = logged[f"dist.layer{l}"]
        line = _line(saved.figure, f"median:dist.layer{l}")
        np.testing.assert_array_equal(line.get_xdata(), steps)
        np.testing.assert_allclose(line.get_ydata(), np.median(vals, axis=1), rtol=1e-15, atol=0)
    # The bands: the polygon of layer l runs along Q25 and back along Q75.
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    for l, band in enumerate(bands):
        verts = band.get_paths()[0].vertices
        q25, q75 = np.quantile(logged[f"dist.layer{l}"], [0.25, 0.75], axis=1)
        for x, lo, hi in zip(steps, q25, q75):
            ys = verts[np.isclose(verts[:, 0], x), 1]
            assert np.isclose(ys.min(), lo, rtol=1e-12) and np.isclose(ys.max(), hi, rtol=1e-12)


def test_distance_plot_ignores_nan_seeds_and_empty_steps(store: RunStore) -> None:
    run = store.create_run({"x": 1}, name="nan")
    vals = np.array([[1.0, 2.0, 4.0], [np.nan, 0.5, 0.25], [np.nan, np.nan, np.nan], [0.1, 0.3, 0.2]])
    for step, row in enumerate(vals):
        store.log_metrics(run, step, {"distance": row}, seeds=[0, 1, 2])
    saved = plots.plot_distance(store, run)
    line = _line(saved.figure, "median:distance")
    np.testing.assert_array_equal(line.get_xdata(), [0, 1, 3])
    np.testing.assert_array_equal(line.get_ydata(), [2.0, 0.375, 0.2])


def test_loss_plot_seed_lines_median_and_bayes(store: RunStore) -> None:
    g = torch.Generator().manual_seed(1)
    seeds = (3, 5, 7, 11)
    logged = _log_random_run(store, "r2", g, seeds=seeds)
    saved = plots.plot_loss(store, "r2")
    assert saved.png.name == "loss.png"
    _check_png(saved.png)
    _check_svg(saved.svg)
    for j, s in enumerate(seeds):
        np.testing.assert_array_equal(_line(saved.figure, f"seed:{s}").get_ydata(), logged["loss"][:, j])
    np.testing.assert_allclose(_line(saved.figure, "median").get_ydata(), np.median(logged["loss"], axis=1),
                               rtol=1e-15, atol=0)
    assert list(_line(saved.figure, "bayes").get_ydata()) == [0.125, 0.125]


def test_negative_values_switch_off_log_axis() -> None:
    fig = plots.distance_figure({"x": (np.arange(3), np.array([[1.0, -1.0], [0.5, 0.2], [0.1, 0.3]]))})
    assert fig.axes[0].get_yscale() == "linear"
    fig = plots.distance_figure({"x": (np.arange(3), np.array([[1.0, 1.0], [0.5, 0.2], [0.1, 0.3]]))})
    assert fig.axes[0].get_yscale() == "log"


def test_plot_distance_without_distance_metric_names_logged_keys(store: RunStore) -> None:
    run = store.create_run({"x": 2}, name="nod")
    store.log_metrics(run, 0, {"loss": np.array([1.0, 2.0])})
    with pytest.raises(ValueError, match=r"no distance metric.*\['loss'\]"):
        plots.plot_distance(store, run)


def test_seed_quantiles_match_numpy_reference() -> None:
    g = np.random.default_rng(5)
    v = g.normal(size=(7, 9))
    v[2, [1, 4]] = np.nan
    v[5] = np.nan
    rows, q25, med, q75 = plots.seed_quantiles(v)
    np.testing.assert_array_equal(rows, [0, 1, 2, 3, 4, 6])
    for i, r in enumerate(rows):
        x = v[r][~np.isnan(v[r])]
        np.testing.assert_allclose([q25[i], med[i], q75[i]], np.quantile(x, [0.25, 0.5, 0.75]), rtol=1e-14)
    assert med[2] == np.median(np.delete(v[2], [1, 4]))


def test_matrix_heatmaps_share_colour_scale_and_hold_matrices(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(2)
    learned = {f"layer{l}.head0.Q": torch.randn(3, 3, generator=g, dtype=torch.float64).numpy() for l in range(2)}
    construction = {k: np.diag([-0.5, -0.5, 0.0]) * (i + 1) for i, k in enumerate(learned)}
    fig = plots.matrix_heatmaps_figure(learned, construction)
    m = max(np.abs(a).max() for a in [*learned.values(), *construction.values()])
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 4
    for im in images:
        assert im.get_clim() == (-m, m)
        col, name = im.get_gid().split(":", 1)
        ref = learned[name] if col == "learned" else construction[name]
        np.testing.assert_array_equal(im.get_array(), ref)
    saved = plots.save_figure(fig, tmp_path, "heat")
    _check_png(saved.png)
    _check_svg(saved.svg)
    with pytest.raises(ValueError, match="different matrices"):
        plots.matrix_heatmaps_figure(learned, {"other": np.eye(3)})


def test_loss_vs_figure_median_per_x_and_bayes_line() -> None:
    x = np.array([3, 1, 2])
    vals = np.array([[0.3, 0.5, 0.4], [1.0, 0.8, 0.9], [0.6, 0.7, 0.65]])
    fig = plots.loss_vs_figure({"exp": (x, vals)}, bayes=(np.array([1, 2, 3]), np.array([0.5, 0.4, 0.2])),
                               xlabel="layers")
    line = _line(fig, "median:exp")
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(line.get_ydata(), np.median(vals[[1, 2, 0]], axis=1))
    np.testing.assert_array_equal(_line(fig, "bayes").get_ydata(), [0.5, 0.4, 0.2])


def test_comparison_grid_cells_equal_values(tmp_path: Path) -> None:
    vals = np.array([[1.02, 1.8, np.nan], [2.5, 1.1, 3.0]])
    fig = plots.comparison_grid_figure(vals, ["linear", "exp"], ["linear", "exp", "relu"])
    cells = fig.axes[0].collections[0].get_array()
    np.testing.assert_array_equal(np.ma.filled(cells, np.nan).ravel(), vals.ravel())
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == sorted(["1.02", "1.8", "2.5", "1.1", "3"])
    saved = plots.save_figure(fig, tmp_path, "grid")
    _check_png(saved.png)
    _check_svg(saved.svg)
    with pytest.raises(ValueError, match="row labels"):
        plots.comparison_grid_figure(vals, ["a"], ["x", "y", "z"])


def test_save_figure_is_reproducible_bytes(tmp_path: Path) -> None:
    fig = plots.distance_figure({"d": (np.arange(4), np.array([[1.0, 2.0], [0.5, 0.6], [0.2, 0.3], [0.1, 0.1]]))})
    a = plots.save_figure(fig, tmp_path / "a", "f")
    b = plots.save_figure(fig, tmp_path / "b", "f")
    assert a.png.read_bytes() == b.png.read_bytes()
    assert a.svg.read_bytes() == b.svg.read_bytes()


# ----------------------------------------------------------------------------------------------
# Figures of real (tiny) training runs
# ----------------------------------------------------------------------------------------------

TINY = dict(d=2, n=4, attention="kernel", seeds=3, steps=12, batch=16, eval_batch=64, log_every=4,
            lr=0.02, dtype="float64", device="cpu", distance_every=0, checkpoint_every=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A store with kernel-attention runs: activations x data kernels at L=1, and L=2 for both
    activations on exp data (one of them measured against the fgd family)."""
    from landscape.experiment.train import TrainConfig, train

    root = tmp_path_factory.mktemp("trained") / "store"
    configs = []
    for task in ("gp:exp", "gp:linear"):
        for act in ("exp", "linear"):
            configs.append(TrainConfig(task=task, activations=(act,), layers=1, **TINY))
    configs.append(TrainConfig(task="gp:exp", activations=("exp",), layers=2, family="fgd", **TINY))
    configs.append(TrainConfig(task="gp:exp", activations=("linear",), layers=2, **TINY))
    names = []
    with RunStore(root) as s:
        for c in configs:
            names.append(train(c, s, progress=False).run_name)
    return root, names, configs


def test_bayes_estimate_gp_equals_posterior_mean_squared_error(trained) -> None:
    from landscape.experiment.train import make_task

    _, _, configs = trained
    cfg = configs[0]
    value, se = plots.bayes_loss_estimate(cfg, prompts=4096, seed=3)
    # Second route: squared error of the GP posterior mean on fresh prompts.
    task = make_task(cfg)
    batch = task.sample(4096, torch.Generator().manual_seed(11))
    err = (task.bayes_prediction(batch) - batch.target) ** 2
    ref, ref_se = float(err.mean()), float(err.std() / 4096**0.5)
    assert abs(value - ref) < 4 * (se**2 + ref_se**2) ** 0.5
    assert 0 < value < 1


def test_bayes_estimate_linear_regression_closed_forms() -> None:
    from landscape.experiment.train import TrainConfig

    # Noiseless, n < d, w ~ N(0, I), x ~ N(0, I): E x_q^T (I - P_X) x_q = d - n exactly.
    cfg = TrainConfig(task="linear", d=6, n=2, device="cpu")
    value, se = plots.bayes_loss_estimate(cfg, prompts=4096)
    assert abs(value - 4.0) < 4 * se
    # Noiseless with n >= d the task vector is determined: Bayes risk 0.
    assert plots.bayes_loss_estimate(TrainConfig(task="linear", d=2, n=4, device="cpu")) == (0.0, 0.0)
    # Noisy: the posterior mean (ridge) has squared error equal to the posterior variance.
    cfg = TrainConfig(task="linear", d=3, n=4, noise=0.5, device="cpu", dtype="float64")
    value, se = plots.bayes_loss_estimate(cfg, prompts=4096, seed=1)
    from landscape.experiment.train import make_task

    batch = make_task(cfg).sample(4096, torch.Generator().manual_seed(2))
    X, y = batch.X[..., :4], batch.y[..., :4]
    A = torch.eye(3, dtype=torch.float64) * 0.25 + X @ X.transpose(-1, -2)
    w_hat = torch.linalg.solve(A, (X @ y.unsqueeze(-1))).squeeze(-1)
    err = ((batch.X[..., 4] * w_hat).sum(-1) - batch.target) ** 2
    assert abs(value - float(err.mean())) < 4 * (se**2 + float(err.var()) / 4096) ** 0.5


@pytest.fixture(scope="module")
def report(trained):
    """Every kind of figure for the two L = 2 runs (one with a family, one without)."""
    root, names, _ = trained
    with RunStore(root) as s:
        return plots.plot_store(s, ["all"], runs=[names[4], names[5]])


def test_plot_store_all_kinds_from_real_runs(trained, report) -> None:
    root, names, _ = trained
    made = {(f.name, f.runs[0] if len(f.runs) == 1 else "*") for f in report.figures}
    for n in names[4:]:
        assert {("distance", n), ("loss", n), ("heatmap-seed0", n)} <= made
    assert {f.name for f in report.figures if len(f.runs) > 1} == {"grid", "seed-distances"}
    # one depth and one context length among these runs: those plots are skipped with the reason
    assert sorted(k for k, _, _ in report.skipped) == ["context", "depth", "distance-context", "distance-depth"]
    assert all("single value of" in why for _, _, why in report.skipped)
    with RunStore(root) as s:
        for f in report.figures:
            _check_png(f.png)
            _check_svg(f.svg)
            assert f.png.parent == (s.root / "figures" / (f.runs[0] if len(f.runs) == 1 else ""))
            for rn in f.runs:
                assert s.artifacts(rn) == []
        # the distance panel of the family run: median of the stored family distance
        dist = next(f for f in report.figures if f.name == "distance" and f.runs == (names[4],))
        fam = s.metrics(names[4], "family_distance")["family_distance"]
        np.testing.assert_array_equal(_line(dist.figure, "median:family_distance").get_ydata(),
                                      np.median(fam.values, axis=1))


def test_loss_vs_depth_points_are_stored_final_losses(trained) -> None:
    root, names, configs = trained
    with RunStore(root) as s:
        saved = plots.plot_loss_vs(s, [names[0], names[4]], x="layers")  # exp data, exp attention, L = 1, 2
        line = _line(saved.figure, "median:exp")
        ref = [np.median(s.results(n)["final_loss"]) for n in (names[0], names[4])]
        np.testing.assert_array_equal(line.get_xdata(), [1.0, 2.0])
        np.testing.assert_allclose(line.get_ydata(), ref, rtol=1e-15)
        assert "bayes_loss" not in s.results(names[0])  # estimated in memory, not recorded
        bayes = plots.bayes_loss_estimate(configs[0])[0]
        np.testing.assert_allclose(_line(saved.figure, "bayes").get_ydata(), [bayes, bayes], rtol=1e-15)
        with pytest.raises(ValueError, match="single value of 'n'"):
            plots.plot_loss_vs(s, names, x="n")


def test_grid_cells_are_final_loss_over_bayes(trained) -> None:
    root, names, configs = trained
    with RunStore(root) as s:
        saved = plots.plot_grid(s, names[:4])
        cells = np.ma.filled(saved.figure.axes[0].collections[0].get_array(), np.nan).reshape(2, 2)
        for n, c in zip(names[:4], configs[:4]):
            i = ["exp", "linear"].index(c.activations[0])
            j = ["exp", "linear"].index(c.task.split(":")[1])
            ref = np.median(s.results(n)["final_loss"]) / plots.bayes_loss_estimate(c)[0]
            assert cells[i, j] == pytest.approx(ref, rel=1e-14)


def test_heatmap_with_family_shows_projection_at_stored_distance(trained, report) -> None:
    root, names, configs = trained
    saved = next(f for f in report.figures if f.name == "heatmap-seed0" and f.runs == (names[4],))
    with RunStore(root) as s:
        final = s.load_final(names[4])["params"]
        stored = s.results(names[4])["family_distance"][0]
    imgs = {im.get_gid(): np.asarray(im.get_array()) for ax in saved.figure.axes for im in ax.get_images()}
    keys = sorted(final)
    assert sorted(g.split(":", 1)[1] for g in imgs if g.startswith("learned:")) == keys
    for k in keys:
        np.testing.assert_array_equal(imgs[f"learned:{k}"], final[k][0].numpy())
    diff = sum(((imgs[f"learned:{k}"] - imgs[f"construction:{k}"]) ** 2).sum() for k in keys)
    norm = sum((final[k][0].numpy() ** 2).sum() for k in keys)
    assert math.sqrt(diff / norm) == pytest.approx(stored, rel=1e-6)


def test_heatmap_without_family_is_nearest_identity_multiple(trained) -> None:
    root, names, _ = trained
    with RunStore(root) as s:
        saved = plots.plot_heatmaps(s, names[5], seed=2)
        dist = s.metrics(names[5], "dist_identity_whitened.layer1.head0")["dist_identity_whitened.layer1.head0"]
        imgs = {im.get_gid(): np.asarray(im.get_array()) for ax in saved.figure.axes for im in ax.get_images()}
        M, A = imgs["learned:layer1.head0 M"], imgs["construction:layer1.head0 M"]
        assert A[0, 1] == 0 and A[0, 0] == A[1, 1] == pytest.approx(np.trace(M) / 2, rel=1e-14)
        assert np.linalg.norm(M - A) / np.linalg.norm(M) == pytest.approx(dist.values[-1, 2], rel=1e-12)


def test_bayes_estimate_standard_error_matches_the_spread_of_independent_estimates() -> None:
    """The linear-regression route's SE is sd/√prompts: compare with the spread over R seeds.

    For a correct SE the ratio is 1 up to ~1/√(2R) = 9 %; sd/prompts would give √prompts = 16.
    """
    from landscape.experiment.train import TrainConfig

    cfg = TrainConfig(task="linear", d=3, n=4, noise=0.5, device="cpu", dtype="float64")
    R, prompts = 60, 256
    est = [plots.bayes_loss_estimate(cfg, prompts=prompts, seed=100 + r) for r in range(R)]
    values = np.array([v for v, _ in est])
    ses = np.array([s for _, s in est])
    ratio = float(values.std(ddof=1) / ses.mean())
    assert 0.7 < ratio < 1.4, f"replicate spread / reported SE = {ratio:.3f}"


def _rows(root: Path, table: str) -> list[tuple]:
    import sqlite3

    con = sqlite3.connect(f"file:{root / 'store.sqlite'}?mode=ro", uri=True)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
    finally:
        con.close()


def test_plotting_from_a_writable_store_writes_nothing_to_it(trained, tmp_path: Path) -> None:
    """Every kind of figure, drawn from a store open for writing, leaves its results and artifacts
    rows as they were; the Bayes line is the in-memory estimate. A ``bayes_loss`` recorded the old
    way (a dict with ``value``, as earlier versions of the plots wrote it) is read and drawn."""
    root, names, configs = trained
    results, artifacts = _rows(root, "results"), _rows(root, "artifacts")
    assert "bayes_loss" not in {row[1] for row in results}
    with RunStore(root) as s:
        rep = plots.plot_store(s, ["all"], runs=names, out=tmp_path / "f")
        loss = plots.plot_loss(s, names[0], out=tmp_path / "g")
    assert len(rep.figures) >= 3 * len(names)
    assert _rows(root, "results") == results and _rows(root, "artifacts") == artifacts
    est = plots.bayes_loss_estimate(configs[0])[0]
    assert list(_line(loss.figure, "bayes").get_ydata()) == [est, est]

    # a store holding a result recorded by an earlier version: the recorded number is drawn
    old = tmp_path / "old"
    with RunStore(old) as s:
        run = s.create_run({"name": "old"}, name="old")
        s.log_metrics(run, 0, {"loss": np.array([1.0, 2.0])}, seeds=[0, 1])
        s.log_metrics(run, 5, {"loss": np.array([0.5, 0.25])}, seeds=[0, 1])
        s.log_result(run, "bayes_loss", {"value": 0.2, "standard_error": 0.01, "prompts": 8192,
                                         "method": "monte-carlo"})
    before = _rows(old, "results")
    with RunStore(old, read_only=True) as s:
        saved = plots.plot_loss(s, "old", out=tmp_path / "h")
    assert list(_line(saved.figure, "bayes").get_ydata()) == [0.2, 0.2]
    assert _rows(old, "results") == before


def test_record_bayes_loss_writes_the_estimate_once(trained, tmp_path: Path) -> None:
    """The explicit writer records the same number the figures estimate, and keeps an existing one."""
    import shutil

    from landscape.experiment.bayes import record_bayes_loss

    root, names, configs = trained
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    with RunStore(copy) as s:
        v = record_bayes_loss(s, names[0])
        assert v == plots.bayes_loss_estimate(configs[0])[0]
        rec = s.results(names[0])["bayes_loss"]
        assert rec["value"] == v and rec["prompts"] == 8192 and rec["standard_error"] > 0
        s.log_result(names[1], "bayes_loss", 0.5)
        assert record_bayes_loss(s, names[1]) == 0.5 and s.results(names[1])["bayes_loss"] == 0.5
    with RunStore(copy, read_only=True) as s, pytest.raises(ValueError, match="read-only"):
        record_bayes_loss(s, names[2])


# ----------------------------------------------------------------------------------------------
# Figures ready to publish: the last step, titles inside the figure, words instead of keys
# ----------------------------------------------------------------------------------------------


def _renderer(fig: Figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _titles_inside(fig: Figure) -> None:
    """Every title (figure and axes) lies inside the figure's pixels."""
    r = _renderer(fig)
    W, H = fig.bbox.width, fig.bbox.height
    texts = [t for t in [fig._suptitle, *(ax.title for ax in fig.axes)] if t is not None and t.get_text()]
    assert texts
    for t in texts:
        bb = t.get_window_extent(r)
        assert bb.x0 >= -0.5 and bb.x1 <= W + 0.5 and bb.y0 >= -0.5 and bb.y1 <= H + 0.5, (t.get_text(), bb, W, H)


def test_loss_plot_reaches_the_last_step_with_the_held_out_loss(trained) -> None:
    """The training-batch loss is logged before each update, so it ends one log step before T; the
    loss plot shows the held-out loss, logged at every log step and at T (regression: it used to end
    at T - log_every)."""
    root, names, configs = trained
    with RunStore(root, read_only=True) as s:
        saved = plots.plot_loss(s, names[0])
        ev = s.metrics(names[0], "eval_loss")["eval_loss"]
        tr = s.metrics(names[0], "loss")["loss"]
    x = _line(saved.figure, "median").get_xdata()
    np.testing.assert_array_equal(x, ev.steps)
    assert x[-1] == configs[0].steps == 12 and tr.steps[-1] == 8  # log_every = 4
    np.testing.assert_array_equal(_line(saved.figure, "median").get_ydata(), np.median(ev.values, axis=1))
    ax = saved.figure.axes[0]
    assert ax.get_ylabel() == "held-out loss"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("Bayes-optimal loss (GP posterior mean) = ") for t in legend)
    title = saved.figure._suptitle.get_text().replace("\n", " ")
    assert names[0] not in title and "GP labels, exp kernel, d=2, n=4" in title
    assert "kernel attention (exp), L=1" in title and "3 seeds" in title


def test_titles_fit_inside_every_figure(trained, report) -> None:
    long = ("Distance to the construction, median over seeds: GP labels, exp kernel, d=2, n=4 · kernel "
            "attention (exp + ReLU, 2 heads), L=3 · family fgd_rotations · 16 seeds")
    figs = [plots.distance_figure({"a": (np.arange(3), np.ones((3, 2)))}, title=long),
            plots.loss_curves_figure(np.arange(3), np.ones((3, 2)), title=long),
            plots.loss_vs_figure({"a": (np.arange(3), np.ones((3, 2)))}, title=long),
            plots.comparison_grid_figure(np.ones((1, 1)), ["a"], ["b"], title=long)]
    for fig in figs + [f.figure for f in report.figures]:
        _titles_inside(fig)


def test_distance_legends_are_words_and_name_the_band(trained, report) -> None:
    root, names, _ = trained
    dist = next(f for f in report.figures if f.name == "distance" and f.runs == (names[5],))
    texts = {t.get_text() for ax in dist.figure.axes for t in ax.get_legend().get_texts()}
    assert {"layer 0, head 0", "layer 1, head 0", "shaded: interquartile range over 3 seeds"} <= texts
    assert not any("." in t and "_" in t for t in texts)  # no raw metric keys
    assert {ax.get_title() for ax in dist.figure.axes} >= {"Dist(M, I)", "Dist(Σ^½ M Σ^½, I) (whitened)"}


def test_a_single_cell_grid_is_not_made_by_default(trained, tmp_path: Path) -> None:
    root, names, _ = trained
    with RunStore(root, read_only=True) as s:
        rep = plots.plot_store(s, ["all"], runs=[names[0]], out=tmp_path)
        assert "grid" not in {f.name for f in rep.figures}
        assert any(k == "grid" and "1 x 1" in why for k, _, why in rep.skipped)
        rep = plots.plot_store(s, ["grid"], runs=[names[0]], out=tmp_path)
        assert [f.name for f in rep.figures] == ["grid"]


# ----------------------------------------------------------------------------------------------
# The evidence figures: certificate, seed distributions, distance vs size, Hessian spectrum
# ----------------------------------------------------------------------------------------------


def _certificate(name: str, verdict: str, T, normal, floor, lower, upper, tol):
    from landscape.numeric.certificate import SampleSizeResult, StationarityCertificate
    from landscape.numeric.stats import NormBounds, NormEstimate

    looks = tuple(
        SampleSizeResult(samples=t, fit_samples=t, point={"a0": 0.5}, loss=1.0, loss_se=0.01,
                         tangent=NormEstimate(0.01), normal=NormEstimate(v, 0.1 * v, f),
                         effective_normal=NormEstimate(v), standardized_normal=NormEstimate(v),
                         statistic=0.0, p_value=0.5, dof=10.0, alpha=1e-3 / 3,
                         bounds=NormBounds(0.0, 0.0, lo, up, 1e-3 / 3, 32, 1.0, 1.0, 3.0))
        for t, v, f, lo, up in zip(T, normal, floor, lower, upper))
    return StationarityCertificate(verdict=verdict, family=name, method="monte_carlo", point={"a0": 0.5}, loss=1.0,
                                   loss_se=0.01, grad_norm_tangent=NormEstimate(0.01),
                                   grad_norm_normal=NormEstimate(normal[-1]), alpha=1e-3, tol=tol,
                                   per_sample_size=looks)


def test_certificate_figure_draws_the_looks_of_the_result_object() -> None:
    from landscape.views.evidence import certificate_figure

    T = [500, 2000, 8000]
    fam = _certificate("pgd", "stationary", T, [0.4, 0.21, 0.1], [0.41, 0.2, 0.1], [0.0, 0.0, 0.0],
                       [0.6, 0.3, 0.12], 0.15)
    ctl = _certificate("pgd-identity", "not_stationary", T, [2.0, 1.9, 1.85], [0.5, 0.25, 0.12], [1.2, 1.6, 1.7],
                       [2.8, 2.2, 2.0], 0.15)
    fig = certificate_figure(fam, ctl)
    for cert, normal, floor, upper in ((fam, [0.4, 0.21, 0.1], [0.41, 0.2, 0.1], [0.6, 0.3, 0.12]),
                                       (ctl, [2.0, 1.9, 1.85], [0.5, 0.25, 0.12], [2.8, 2.2, 2.0])):
        name = f"{cert.family} ({'STATIONARY' if cert.verdict == 'stationary' else 'NOT STATIONARY'})"
        for kind, ref in (("normal", normal), ("floor", floor), ("upper", upper)):
            line = _line(fig, f"{kind}:{name}")
            np.testing.assert_array_equal(line.get_xdata(), T)
            np.testing.assert_array_equal(line.get_ydata(), ref)
    np.testing.assert_array_equal(_line(fig, "tol").get_ydata(), [0.15, 0.15])
    band = next(c for c in fig.axes[0].collections if c.get_gid() == "interval:pgd-identity (NOT STATIONARY)")
    verts = band.get_paths()[0].vertices
    for t, lo, hi in zip(T, [1.2, 1.6, 1.7], [2.8, 2.2, 2.0]):
        ys = verts[np.isclose(verts[:, 0], t), 1]
        assert np.isclose(ys.min(), lo) and np.isclose(ys.max(), hi)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Monte-Carlo prompts per sample T" and ax.get_ylabel() == "normal-gradient norm"
    assert ax.get_legend() is not None and ax.get_xscale() == ax.get_yscale() == "log"
    _titles_inside(fig)
    exact = dataclass_replace(fam, per_sample_size=())
    with pytest.raises(ValueError, match="no Monte-Carlo looks"):
        certificate_figure(exact)


def dataclass_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_seed_distances_are_the_stored_final_distances(trained) -> None:
    root, names, _ = trained
    with RunStore(root, read_only=True) as s:
        saved = plots.plot_seed_distances(s, [names[0], names[1], names[4]], measure="identity")
        res = {n: s.results(n)["identity_distance_whitened"] for n in (names[0], names[1], names[4])}
        fam = plots.plot_seed_distances(s, [names[4]], measure="family")
        with pytest.raises(ValueError, match="no final family distance"):
            plots.plot_seed_distances(s, [names[0]], measure="family")
    ax = saved.figure.axes[0]
    scatters = {c.get_gid(): c for c in ax.collections if (c.get_gid() or "").startswith("seeds:")}
    assert len(scatters) == 3
    for gid, sc in scatters.items():
        ys = sc.get_offsets()[:, 1]
        assert any(np.array_equal(ys, [seed[-1][0] for seed in v]) for v in res.values()), gid
    assert ax.get_ylabel() == "Dist(Σ^½ M Σ^½, I) (whitened), last layer" and ax.get_legend() is not None
    ys = next(c for c in fam.figure.axes[0].collections if c.get_gid()).get_offsets()[:, 1]
    with RunStore(root, read_only=True) as s:
        np.testing.assert_array_equal(ys, s.results(names[4])["family_distance"])
    _titles_inside(saved.figure)


def test_distance_vs_depth_medians_are_the_stored_final_distances(trained) -> None:
    root, names, configs = trained
    with RunStore(root, read_only=True) as s:
        saved = plots.plot_distance_vs(s, [names[0], names[4], names[1], names[5]], x="layers")
        ref = {n: np.array([seed[-1][0] for seed in s.results(n)["identity_distance_whitened"]])
               for n in (names[0], names[4], names[1], names[5])}
    for act, (a, b) in (("exp", (names[0], names[4])), ("linear", (names[1], names[5]))):
        line = _line(saved.figure, f"median:{act}")
        np.testing.assert_array_equal(line.get_xdata(), [1.0, 2.0])
        np.testing.assert_allclose(line.get_ydata(), [np.median(ref[a]), np.median(ref[b])], rtol=1e-15)
    ax = saved.figure.axes[0]
    assert ax.get_xlabel() == "layers L" and ax.get_ylabel().startswith("final Dist(")
    assert "shaded: interquartile range over 3 seeds" in {t.get_text() for t in ax.get_legend().get_texts()}
    _titles_inside(saved.figure)


def test_spectrum_plot_holds_the_hessian_eigenvalues(trained) -> None:
    """The rug's x-data are the eigenvalues of the loss Hessian at the trained weights; reference:
    a Hessian by central differences of the gradient (step 1e-5) of the same Monte-Carlo loss."""
    from landscape.numeric.derivatives import gradient
    from landscape.numeric.points import landscape_oracle, load_trained

    root, names, _ = trained
    with RunStore(root, read_only=True) as s:
        saved = plots.plot_spectrum(s, names[1], seed=1, samples=512)
    tr = load_trained(root, names[1])
    oracle, _ = landscape_oracle(tr.config.problem(tr.sigma), tr.task, tr.spec, samples=512,
                                 generator=torch.Generator().manual_seed(0))
    flat, h = tr.final[1], 1e-5
    P = flat.numel()
    cols = []
    for i in range(P):
        e = torch.zeros(P, dtype=flat.dtype)
        e[i] = h
        cols.append((gradient(oracle, flat + e) - gradient(oracle, flat - e)) / (2 * h))
    Hfd = torch.stack(cols, 1)
    ref = np.linalg.eigvalsh(0.5 * (Hfd + Hfd.T).numpy())
    ev = np.sort(_line(saved.figure, "eigenvalues").get_xdata())
    np.testing.assert_allclose(ev, ref, atol=1e-6 * max(1.0, np.abs(ref).max()))
    ax = saved.figure.axes[0]
    assert ax.get_xlabel() == "Hessian eigenvalue λ" and ax.get_ylabel() == "number of eigenvalues"
    assert ax.get_legend() is not None
    _titles_inside(saved.figure)


def test_spectrum_figure_draws_the_slq_density_of_a_known_matrix() -> None:
    """SLQ branch: the density line is the SpectralDensity's own smoothed density on the drawn grid;
    its integral is 1 and its mean is tr(H)/P = 3.5 (eigenvalues 1..6 of a diagonal matrix; with
    Rademacher probes vᵀHv/vᵀv is exactly the mean eigenvalue, so the SLQ mean is exact)."""
    from landscape.numeric.spectrum import spectral_density
    from landscape.views.evidence import spectrum_figure

    H = torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64))
    sd = spectral_density(H, torch.Generator().manual_seed(0), probes=4, steps=6)
    fig = spectrum_figure(None, sd)
    line = _line(fig, "density")
    x, y = line.get_xdata(), line.get_ydata()
    bw = 0.01 * float(sd.nodes.max() - sd.nodes.min())
    np.testing.assert_allclose(y, sd.density(torch.tensor(x), bw).numpy(), rtol=1e-12)
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=1e-3)
    assert np.trapezoid(x * y, x) == pytest.approx(3.5, abs=1e-2)
    assert fig.axes[0].get_xlabel() == "Hessian eigenvalue λ" and fig.axes[0].get_legend() is not None
    with pytest.raises(ValueError, match="needs eigenvalues"):
        spectrum_figure()
