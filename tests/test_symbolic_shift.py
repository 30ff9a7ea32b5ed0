"""Covariate shift (context x_i ~ N(0, Σ), query x_q ~ N(0, Σ_t)): exact one-layer loss vs hand and Monte-Carlo."""

from __future__ import annotations

import pytest
import sympy
import torch

from landscape.cli import main
from landscape.theory.families import Problem, get_family
from landscape.core.model import ModelSpec, init_params, predict
from landscape.symbolic import family_loss, one_layer_loss, stationary_points
from landscape.symbolic.one_layer import linear_heads
from landscape.core.tasks import LinearRegression, embed, random_covariance, sqrtm_psd

F64 = torch.float64


def _mc_shifted(params, spec, d, n, sigma, sigma_t, noise, g, samples, batch=50_000):
    """Plain Monte-Carlo with hand-built prompts: sources from Σ, the query from Σ_t, w ~ N(0, I)."""
    hs, ht = sqrtm_psd(sigma, 0.5), sqrtm_psd(sigma_t, 0.5)
    errs = []
    for _ in range(samples // batch):
        X = hs @ torch.randn(batch, d, n, generator=g, dtype=F64)
        xq = ht @ torch.randn(batch, d, 1, generator=g, dtype=F64)
        Xf = torch.cat([X, xq], dim=2)
        w = torch.randn(batch, d, generator=g, dtype=F64)
        y = (w.unsqueeze(1) @ Xf).squeeze(1) + noise * torch.randn(batch, n + 1, generator=g, dtype=F64)
        with torch.no_grad():
            errs.append((predict(params, spec, embed(Xf, y)) - y[:, -1]) ** 2)
    e = torch.cat(errs)
    return float(e.mean()), float(e.std() / e.numel() ** 0.5)


def test_pgd_full_under_covariate_shift_by_hand():
    """Σ = I, w ~ N(0, I), query covariance Σ_t: error (AᵀSw - w)ᵀx_q, so with E[SHS] = (n+1)/n H +
    tr(H)/n I (H symmetric) f = (n+d+1)/n tr(AΣ_tAᵀ) - 2tr(AΣ_t) + tr Σ_t; the gradient
    (n+d+1)/n (AΣ_t + Σ_tA) - 2Σ_t vanishes only at A* = n/(n+d+1) I: the optimum does not move, the
    loss there is tr(Σ_t)(d+1)/(n+d+1)."""
    d, n = 2, 4
    sig_t = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    fam = get_family("pgd-full", Problem(d=d, layers=1, n=n, attention="linear"))
    fl = family_loss(fam, LinearRegression(d, n), query_sigma=sig_t)
    A = sympy.Matrix(d, d, lambda i, j: sympy.Symbol(f"A{min(i, j)}{max(i, j)}", real=True))
    St = sympy.Matrix([[2, sympy.Rational(1, 2)], [sympy.Rational(1, 2), 1]])
    hand = sympy.Rational(n + d + 1, n) * (A * St * A.T).trace() - 2 * (A * St).trace() + St.trace()
    assert sympy.expand(fl.expr - hand).free_symbols == set() and abs(float(sympy.expand(fl.expr - hand))) < 1e-12
    (pt,) = stationary_points(fl)
    assert pt.values["A00"] == pytest.approx(n / (n + d + 1), rel=1e-12)
    assert pt.values["A01"] == pytest.approx(0.0, abs=1e-12)
    assert pt.loss == pytest.approx(3.0 * (d + 1) / (n + d + 1), rel=1e-12)


@pytest.mark.parametrize("heads, noise", [(1, 0.0), (2, 0.5)])
def test_one_layer_shift_matches_monte_carlo(heads, noise):
    """Random full P, Q, random Σ and a different random Σ_t (noise 0 and 0.5): exact vs plain Monte-Carlo
    within 3 SE, and the unshifted formula is many SE away."""
    d, n = 3, 4
    g = torch.Generator().manual_seed(300 + heads)
    sigma = random_covariance(d, g, spectrum=[1.0, 0.6, 0.3])
    sigma_t = random_covariance(d, g, spectrum=[2.0, 1.0, 0.2])
    spec = ModelSpec.linear(d, 1, heads)
    params = init_params(spec, g, std=0.4, dtype=F64)
    hs = linear_heads(spec, params)
    eye = torch.eye(d, dtype=F64)
    exact = float(one_layer_loss(hs, sigma, eye, n, 1, 1, noise**2, sigma_t))
    plain = float(one_layer_loss(hs, sigma, eye, n, 1, 1, noise**2))
    mean, se = _mc_shifted(params, spec, d, n, sigma, sigma_t, noise, g, 400_000)
    assert abs(exact - mean) <= 3 * se, (exact, mean, se)
    assert abs(plain - mean) > 10 * se


def test_cli_query_sigma_and_errors(capsys):
    assert main(["solve", "pgd-full", "--d", "2", "--n", "4", "--query-sigma", "diag:2,1", "--json"]) == 0
    import json

    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (pt,) = obj["stationary_points"]
    assert pt["values"]["A00"] == pytest.approx(4 / 7, rel=1e-12) and pt["loss"] == pytest.approx(9 / 7, rel=1e-12)
    assert main(["solve", "pgd", "--layers", "2", "--d", "2", "--n", "3", "--query-sigma", "diag:2,1", "--json"]) == 2
    assert "one-layer route only" in capsys.readouterr().out
