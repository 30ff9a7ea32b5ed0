"""Giannou et al. (2024) study: helpers against closed forms, and the quick study's claims."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from analysis import giannou2024 as gi
from analysis._study import StudyContext, execute
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


@pytest.mark.slow
def test_quick_study_claims(tmp_path: Path) -> None:
    result, report = execute("giannou2024", gi.run, StudyContext(quick=True, out=tmp_path))
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
