"""Giannou et al. (2024) study: helpers against closed forms, and the quick study's claims."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from analysis import giannou2024 as gi
from figure_checks import assert_data_is_drawn, quick_study_fixture
from landscape.tolerances import ALGORITHM_RTOL, CONSTRUCTION_RTOL
from landscape.core.model import ModelSpec, init_params, predict
from landscape.experiment.store import RunStore
from landscape.core.tasks import LinearRegression


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_residual_ratios_of_a_squaring_sequence_are_two() -> None:
    r0 = torch.tensor([0.9, 0.5], dtype=torch.float64)
    r = r0[:, None] ** (2.0 ** torch.arange(5, dtype=torch.float64))
    torch.testing.assert_close(gi.residual_ratios(r), torch.full((2, 4), 2.0, dtype=torch.float64),
                               rtol=ALGORITHM_RTOL, atol=0.0)
    # a linearly convergent sequence (r_t = r0 * q^t) is not squaring
    lin = 0.5 * 0.9 ** torch.arange(5, dtype=torch.float64)
    assert float((gi.residual_ratios(lin) - 2).abs().min()) > 0.5


def test_optimal_newton_alpha_minimises_the_initial_residual() -> None:
    X = LinearRegression(4, 9).sample(3, _gen(1)).X[..., :-1]
    G = X @ X.transpose(-1, -2)
    a_star = gi.optimal_newton_alpha(X)
    eye = torch.eye(4, dtype=torch.float64)

    def res(a: torch.Tensor) -> torch.Tensor:
        return torch.linalg.matrix_norm(eye - a[:, None, None] * G @ G, ord=2)

    best = res(a_star)
    for f in torch.linspace(0.5, 1.5, 41, dtype=torch.float64):
        assert torch.all(best <= res(f * a_star) + 1e-14)
    # closed form of the optimum: (kappa^2 - 1) / (kappa^2 + 1), kappa = lambda_max / lambda_min
    ev = torch.linalg.eigvalsh(G)
    k2 = (ev[:, -1] / ev[:, 0]) ** 2
    torch.testing.assert_close(best, (k2 - 1) / (k2 + 1), rtol=1e-10, atol=0.0)


def test_fit_gd_steps_one_step_matches_closed_form() -> None:
    # L = 1: prediction eta * a with a = x_q^T X y / n; the best eta on the batch is E[a y_q] / E[a^2]
    batch = LinearRegression(5, 12).sample(4000, _gen(2))
    X, y, xq = batch.X[..., :-1], batch.y[..., :-1], batch.X[..., -1]
    a = (xq * (X @ y.unsqueeze(-1)).squeeze(-1)).sum(-1) / 12
    eta_star = float((a * batch.target).mean() / (a * a).mean())
    eta = gi.fit_gd_steps(batch, 1)
    assert float(eta[0]) == pytest.approx(eta_star, rel=1e-8)


def test_fit_gd_steps_uses_distinct_steps() -> None:
    # the tuned 2-step schedule beats the best constant schedule (steps must break the symmetry)
    batch = LinearRegression(5, 20).sample(4000, _gen(3))
    eta = gi.fit_gd_steps(batch, 2)
    tuned = float(((gi.gd_prediction(batch, eta) - batch.target) ** 2).mean())
    const = min(float(((gi.gd_prediction(batch, torch.full((2,), float(e), dtype=torch.float64)) - batch.target) ** 2)
                      .mean()) for e in torch.linspace(0.2, 1.4, 61))
    assert abs(float(eta[1] - eta[0])) > 0.1
    assert tuned < 0.95 * const


def test_layer_predictions_end_in_the_model_prediction() -> None:
    # the study reads the layers out through the library's probe (landscape.numeric.probe.layer_predictions)
    assert gi.layer_predictions is __import__("landscape.numeric.probe", fromlist=["x"]).layer_predictions
    spec = ModelSpec.linear(3, 2)
    params = init_params(spec, _gen(4), std=0.3, dtype=torch.float64)
    Z = LinearRegression(3, 6).sample(5, _gen(5)).Z
    per_layer = gi.layer_predictions(params, spec, Z).T
    assert per_layer.shape == (3, 5)
    torch.testing.assert_close(per_layer[-1], predict(params, spec, Z), rtol=ALGORITHM_RTOL, atol=0.0)
    torch.testing.assert_close(per_layer[0], -Z[..., -1, -1], rtol=0.0, atol=0.0)


def test_bad_input_is_rejected() -> None:
    batch = LinearRegression(2, 4).sample(3, _gen(0))
    with pytest.raises(ValueError, match="L must be"):
        gi.fit_gd_steps(batch, 0)


def test_settings_hold_one_learning_rate_and_precision_per_depth() -> None:
    # the quick sizes keep the one rate of every depth (their results are those of the single-rate study)
    assert gi.QUICK.lr == (0.03,) * len(gi.QUICK.depths) and set(gi.QUICK.dtype) == {"float32"}
    # the full sizes: 0.03 / float32 up to L = 4, then the measured rule (Settings docstring)
    assert [gi.FULL.training(L) for L in gi.FULL.depths] == [
        (0.03, "float32"), (0.03, "float32"), (0.03, "float32"), (0.03, "float32"), (0.015, "float64"), (0.01, "float64")]
    kw = {f: getattr(gi.QUICK, f) for f in gi.QUICK.__dataclass_fields__}
    with pytest.raises(ValueError, match="Settings.lr must hold one entry per depth"):
        gi.Settings(**{**kw, "lr": (0.03,) * 3})
    with pytest.raises(ValueError, match="Settings.dtype entries must be"):
        gi.Settings(**{**kw, "dtype": ("float32",) * 3 + ("float16",)})
    with pytest.raises(ValueError, match="Settings.lr must be positive"):
        gi.Settings(**{**kw, "lr": (0.03, 0.03, 0.0, 0.03)})
    with pytest.raises(ValueError, match="depth 7 is not one of"):
        gi.FULL.training(7)


def _nullable(values: list) -> list[float]:
    """JSON list (``null`` for a non-finite value) as floats, ``null`` as nan."""
    return [math.nan if v is None else float(v) for v in values]


def _same(recorded: list, expected: list[float]) -> None:
    """The recorded JSON numbers equal ``expected`` exactly; a non-finite expected value was written as ``null``."""
    assert len(recorded) == len(expected)
    for got, want in zip(recorded, expected):
        if math.isfinite(want):
            assert got == want
        else:
            assert got is None


def test_comparison_figure_data_is_what_is_drawn(tmp_path: Path) -> None:
    # synthetic inputs with a non-finite entry (a depth whose seeds all diverged)
    res = torch.rand(3, 7, dtype=torch.float64, generator=_gen(6)) + 1e-3
    ls_err = torch.logspace(0, -15, 9, dtype=torch.float64)
    rows = [{"L": L, "trained_best": 0.2 / L if L != 2 else math.inf, "gd_opt_steps": 0.3 / L, "newton": 0.9 / L,
             "newton_best_alpha": 0.8 / L} for L in (1, 2, 3)]
    layer_rows = [{"layer": l, "trained_L3_readout": 0.5 / l} for l in (1, 2, 3)]
    fig, data = gi.comparison_figure(res, ls_err, rows, layer_rows)
    found = gi.Findings(tmp_path)
    found.figure(fig, "fig", data=data)
    written = json.loads((tmp_path / "fig.json").read_text())
    assert written["title"] == gi.COMPARISON_TITLE
    assert len(written["panels"]) == 3
    # the residual lines share one legend entry, named on the first
    assert_data_is_drawn(fig, written, relabelled={"residual_0"})
    for ax, panel in zip(fig.axes, written["panels"]):
        assert panel["yscale"] == ax.get_yscale() == "log"
        legend = {t.get_text() for t in ax.get_legend().get_texts()}
        for c in panel["curves"]:
            assert c["label"]
            if not c["id"].startswith("residual_") or c["id"] == "residual_exact_squaring":
                assert c["label"] in legend
    assert "construction, one line per matrix A" in {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    # and the drawn numbers are the inputs
    p1, p2, p3 = written["panels"]
    curves = {c["id"]: c for p in (p1, p2, p3) for c in p["curves"]}
    for b in range(3):
        _same(curves[f"residual_{b}"]["y"], res[b].tolist())
    _same(curves["residual_exact_squaring"]["y"], [float(res[0, 0]) ** (2 ** t) for t in range(7)])
    _same(curves["ls_rel_error"]["y"], ls_err.tolist())
    assert curves["ls_rel_error"]["x"] == list(range(9))
    for key in ("trained_best", "gd_opt_steps", "newton", "newton_best_alpha"):
        assert curves[key]["x"] == [1, 2, 3]
        _same(curves[key]["y"], [r[key] for r in rows])
    assert curves["trained_best"]["y"][1] is None
    _same(curves["trained_L3_readout"]["y"], [0.5, 0.25, 0.5 / 3])


quick_study = quick_study_fixture("giannou2024", gi.run, fixture="quick_study")
"""The quick study, run once for the tests below; every figure it saves is kept (stem → Figure) to read its artists."""


@pytest.mark.slow
def test_quick_study_claims(quick_study: tuple[Any, Path, Path, dict[str, Any]]) -> None:
    result, report, tmp_path, _ = quick_study
    claims = {c.name: c for c in result.claims}
    assert set(claims) == {"ns_construction_exact", "ns_residual_squares", "ls_newton_converges",
                           "trained_loss_decreases_with_depth", "trained_at_least_gd", "trained_beats_newton_early"}

    assert claims["ns_construction_exact"].holds
    assert claims["ns_construction_exact"].measured["max_rel_error"] < CONSTRUCTION_RTOL

    sq = claims["ns_residual_squares"]
    assert sq.holds and sq.measured["max_abs_ratio_minus_2"] < 1e-6 and sq.measured["ratios_checked"] >= 40

    ls = claims["ls_newton_converges"]
    assert ls.holds and ls.measured["rel_error_T20"] < 1e-10 and ls.measured["rel_error_T1"] > 0.1

    dec = claims["trained_loss_decreases_with_depth"]
    assert dec.holds
    assert dec.measured["L4"] < dec.measured["L3"] < dec.measured["L2"] < dec.measured["L1"]
    # one layer: the population optimum is MSE/d = (d+1)/(n+d+1) = 6/26 (Ahn et al. 2023, Thm 1, Σ = I);
    # the test-set estimate (8192 prompts) and the training error stay within 10% of it
    assert abs(dec.measured["L1"] - 6 / 26) < 0.1 * 6 / 26

    gd = claims["trained_at_least_gd"]
    assert gd.holds and all(v <= 1.05 for v in gd.measured.values())

    nt = claims["trained_beats_newton_early"]
    assert nt.holds and nt.measured["trained/newton[L1]"] < 1

    assert report.is_file()
    with RunStore(tmp_path) as store:
        (run,) = store.list_runs()
        figs = {a.path.name for a in store.artifacts(run, "figure")}
        assert figs == {"giannou2024.png", "giannou2024.svg"}
        assert "table.by depth (test MSE / d)" in store.results(run)
    # the training line names the rate and precision of every depth
    assert any(n.startswith("Training:") and "L=1: 0.03 float32" in n and "L=4: 0.03 float32" in n
               for n in result.notes)


@pytest.mark.slow
def test_quick_study_figure_data(quick_study: tuple[Any, Path, Path, dict[str, Any]]) -> None:
    # the figure's data file holds what its axes draw, and the numbers the study recorded in its tables and claims
    result, report, out, figures = quick_study
    data = json.loads((out / "giannou2024.json").read_text())
    assert list(figures) == ["giannou2024"]
    assert_data_is_drawn(figures["giannou2024"], data, relabelled={"residual_0"})
    assert "data: [giannou2024.json](giannou2024.json)" in report.read_text()
    assert data["title"] == gi.COMPARISON_TITLE
    p1, p2, p3 = data["panels"]
    for p in (p1, p2, p3):
        assert p["title"] and p["xlabel"] and p["ylabel"] and p["yscale"] == "log"
    curves = {c["id"]: c for p in (p1, p2, p3) for c in p["curves"]}
    claims = {c.name: c for c in result.claims}

    # panel 1: the construction's residuals; prompt 0 is the residual table, its squaring r0^(2^t)
    ns_rows = result.tables["Newton–Schulz residuals (prompt 0)"]
    T = gi.QUICK.ns_steps
    assert curves["residual_0"]["x"] == list(range(T + 1))
    _same(curves["residual_0"]["y"], [r["residual"] for r in ns_rows])
    assert sum(c["id"].startswith("residual_") and c["id"][9:].isdigit() for c in p1["curves"]) == gi.QUICK.ns_prompts
    r0 = ns_rows[0]["residual"]
    assert r0 == claims["ns_residual_squares"].measured["r0"]
    exact = _nullable(curves["residual_exact_squaring"]["y"])
    assert exact[0] == r0
    torch.testing.assert_close(torch.tensor(exact[1:8]), torch.tensor([r0 ** (2 ** t) for t in range(1, 8)]),
                               rtol=1e-12, atol=0.0)
    # log r_{t+1} / log r_t of the plotted residuals is the table's ratio
    y0 = curves["residual_0"]["y"]
    for t in range(1, T + 1):
        assert math.log(y0[t]) / math.log(y0[t - 1]) == pytest.approx(ns_rows[t]["log ratio"], rel=1e-12)

    # panel 2: least squares via Newton–Schulz, the claim's errors at the T it reports
    ls = curves["ls_rel_error"]
    assert ls["x"] == list(range(gi.QUICK.ls_steps + 1))
    for key, v in claims["ls_newton_converges"].measured.items():
        assert ls["y"][int(key.removeprefix("rel_error_T"))] == v

    # panel 3: the by-depth table (the claims' numbers) and the per-layer read-out
    rows = result.tables["by depth (test MSE / d)"]
    assert [r["L"] for r in rows] == list(gi.QUICK.depths)
    assert [(r["lr"], r["dtype"]) for r in rows] == [gi.QUICK.training(L) for L in gi.QUICK.depths]
    for key in ("trained_best", "gd_opt_steps", "newton", "newton_best_alpha"):
        assert curves[key]["x"] == list(gi.QUICK.depths)
        _same(curves[key]["y"], [r[key] for r in rows])
    dec = claims["trained_loss_decreases_with_depth"].measured
    assert curves["trained_best"]["y"] == [dec[f"L{L}"] for L in gi.QUICK.depths]
    Lmax = max(gi.QUICK.depths)
    layer_rows = result.tables[f"per-layer read-out of the trained L={Lmax} model"]
    _same(curves[f"trained_L{Lmax}_readout"]["y"], [r[f"trained_L{Lmax}_readout"] for r in layer_rows])

