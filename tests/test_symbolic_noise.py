"""Exact losses with label noise: one-layer closed form and Wishart route, against hand derivations and Monte-Carlo."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch

from landscape.theory.families import Problem, get_family
from landscape.core.model import ModelSpec, init_params, predict
from landscape.symbolic import family_loss, one_layer_loss, stationary_points
from landscape.symbolic.one_layer import linear_heads
from landscape.core.tasks import LinearRegression, random_covariance

F64 = torch.float64
MC_SE = 3.0


def _mc_loss(params, spec, data, g, samples, batch=50_000):
    """Plain Monte-Carlo E(TF - y_q)² with its standard error (noisy prompts drawn by data.sample)."""
    errs = []
    left = samples
    while left > 0:
        b = data.sample(min(batch, left), g)
        with torch.no_grad():
            pred = predict(params, spec, b.Z.to(F64))
        errs.append((pred - b.target.to(F64)) ** 2)
        left -= batch
    e = torch.cat(errs)
    return float(e.mean()), float(e.std() / e.numel() ** 0.5)


@pytest.mark.parametrize("d, n, std", [(2, 3, 0.5), (3, 5, 1.5)])
def test_pgd_full_noisy_loss_by_hand(d, n, std):
    """Σ = I, w ~ N(0, I), Q = -diag(A, 0): by hand, the noise adds s²(1 + ‖A‖²_F/n) (the estimate
    A(1/n)Σ ε_i x_i has variance s²/n · E‖Ax‖²), so f = (n+d+1)/n ‖A‖² - 2 tr A + d + s²(1 + ‖A‖²/n),
    minimised at A* = n/(n+d+1+s²) I with f* = d + s² - d n/(n+d+1+s²)."""
    fam = get_family("pgd-full", Problem(d=d, layers=1, n=n, attention="linear"))
    fl = family_loss(fam, LinearRegression(d, n, noise=std))
    assert fl.method == "one-layer" and fl.exact
    s2 = sympy.Rational(std).limit_denominator(100) ** 2
    A = sympy.Matrix(d, d, lambda i, j: sympy.Symbol(f"A{min(i, j)}{max(i, j)}", real=True))
    fro = sum(A[i, j] ** 2 for i in range(d) for j in range(d))
    hand = sympy.Rational(n + d + 1, n) * fro - 2 * A.trace() + d + s2 * (1 + fro / n)
    assert sympy.expand(fl.expr - hand) == 0
    (pt,) = stationary_points(fl)
    a_star = sympy.Rational(n) / (n + d + 1 + s2)
    assert all(sympy.sympify(pt.exact[f"A{i}{i}"]) == a_star for i in range(d))
    assert sympy.sympify(pt.loss_exact) == d + s2 - d * n / (n + d + 1 + s2)


@pytest.mark.parametrize("heads, covariates", [(1, "gaussian"), (2, "sphere")])
def test_one_layer_noise_terms_match_monte_carlo(heads, covariates):
    """Random full P, Q (every entry, so the s⁴ term ρᵀΣρ and the cross term are exercised), random Σ,
    noise std 0.7: the closed form vs plain Monte-Carlo within 3 SE, and the noise terms really matter
    (the noiseless value is many SE away)."""
    d, n = 3, 4
    g = torch.Generator().manual_seed(100 + heads)
    sigma = random_covariance(d, g, spectrum=[1.0, 0.6, 0.3])
    spec = ModelSpec.linear(d, 1, heads)
    data = LinearRegression(d, n, sigma=sigma, covariates=covariates, noise=0.7)
    params = init_params(spec, g, std=0.4, dtype=F64)
    hs = linear_heads(spec, params)
    c2, c4 = (1.0, 1.0) if covariates == "gaussian" else (1 / d, 1 / (d * (d + 2)))
    eye = torch.eye(d, dtype=F64)
    exact = float(one_layer_loss(hs, sigma, eye, n, c2, c4, 0.49))
    clean = float(one_layer_loss(hs, sigma, eye, n, c2, c4))
    mean, se = _mc_loss(params, spec, data, g, 400_000)
    assert abs(exact - mean) <= MC_SE * se, (exact, mean, se)
    assert abs(clean - mean) > 10 * se


def test_wishart_noise_matches_one_layer_route_and_hand_formula():
    """pgd: the Wishart route's noise term s²(1 + E tr(B(S)²S)/n) against (i) the one-layer closed form
    at L = 1 (an independent derivation) and (ii) at L = 2, Σ = I, by hand: B(s) = a0 + a1 - a0 a1 s,
    E tr S = d, E tr S² = d(n+d+1)/n, E tr S³ = d(n² + d² + 3nd + 3n + 3d + 4)/n² (W ~ W_d(n, I))."""
    d, n, std = 3, 6, 0.5
    s2 = sympy.Rational(1, 4)
    fam1 = get_family("pgd", Problem(d=d, layers=1, n=n, attention="linear"))
    data = LinearRegression(d, n, noise=std, task_cov="inverse")
    w = family_loss(fam1, data, method="wishart")
    o = family_loss(fam1, data, method="one-layer")
    assert sympy.expand(w.expr - o.expr) == 0
    fam2 = get_family("pgd", Problem(d=d, layers=2, n=n, attention="linear"))
    noisy = family_loss(fam2, data, method="wishart").expr
    clean = family_loss(fam2, LinearRegression(d, n, task_cov="inverse"), method="wishart").expr
    a0, a1 = sympy.symbols("a0 a1", real=True)
    m1, m2 = d, sympy.Rational(d * (n + d + 1), n)
    m3 = sympy.Rational(d * (n**2 + d**2 + 3 * n * d + 3 * n + 3 * d + 4), n**2)
    etr = (a0 + a1) ** 2 * m1 - 2 * (a0 + a1) * a0 * a1 * m2 + a0**2 * a1**2 * m3
    assert sympy.expand(noisy - clean - s2 * (1 + etr / n)) == 0
    # the general expression, symbolic in n, d and the noise variance, specialises to the same
    gen = family_loss(fam2, data, method="wishart").general
    nn, dd, ss = (next(s for s in gen.free_symbols if s.name == k) for k in ("n", "d", "sigma_eps2"))
    assert sympy.expand(gen.subs({nn: n, dd: d, ss: s2}) - noisy) == 0


def test_wishart_noise_relaxed_family_matches_monte_carlo():
    """pgd-relaxed (covariate update b_l ≠ 0), L = 2, random Σ, noise std 0.6: the exact noisy loss at a
    family point vs plain Monte-Carlo within 3 SE."""
    d, n = 2, 5
    g = torch.Generator().manual_seed(7)
    sigma = random_covariance(d, g, spectrum=[1.0, 0.4])
    fam = get_family("pgd-relaxed", Problem(d=d, layers=2, n=n, sigma=sigma, attention="linear"))
    data = LinearRegression(d, n, sigma=sigma, task_cov="inverse", noise=0.6)
    fl = family_loss(fam, data)
    assert fl.method == "wishart"
    v = {"a0": 0.5, "a1": 0.4, "b0": -0.3, "b1": 0.2}
    exact = fl.value(v)
    mean, se = _mc_loss(fam.params(v), fam.spec, data, g, 400_000)
    assert abs(exact - mean) <= MC_SE * se, (exact, mean, se)
    clean = family_loss(fam, LinearRegression(d, n, sigma=sigma, task_cov="inverse")).value(v)
    assert exact - clean > 10 * se


# ---------------------------------------------------------------------- optimal L-step preconditioned GD
def test_optimal_gd_loss_one_layer_by_hand():
    """L = 1: p(s) = 1 - a s, f(a) = r(d - 2ad + a² d(n+d+1)/n) + s²(1 + a²d/n); by hand the minimum
    is r d + s² - r² d n/(r(n+d+1) + s²) at a* = r n/(r(n+d+1) + s²) (noiseless, r = 1: d(d+1)/(n+d+1))."""
    from landscape.symbolic.whitened import optimal_gd_loss

    for d, n, r, s2 in [(3, 10, 1, 0), (5, 20, 1, 0), (2, 3, sympy.Rational(3, 2), sympy.Rational(1, 4))]:
        r, s2 = sympy.sympify(r), sympy.sympify(s2)
        opt = optimal_gd_loss(1, n, d, r, s2)
        assert opt.realisable
        assert opt.loss == r * d + s2 - r**2 * d * n / (r * (n + d + 1) + s2)
        assert opt.steps == (r * n / (r * (n + d + 1) + s2),)


@pytest.mark.parametrize("L, noise", [(2, 0.0), (3, 0.0), (2, 0.5)])
def test_optimal_gd_loss_equals_exhaustive_family_minimum(L, noise):
    """The Hankel quadratic minimisation over p(s) = Π(1 - a_l s) equals the global minimum found by the
    exhaustive enumeration of the pgd family loss (an independent computation), exactly."""
    from landscape.symbolic.solve import optimal_gd

    d, n = 3, 10
    fl = family_loss(get_family("pgd", Problem(d=d, layers=L, n=n, attention="linear")),
                     LinearRegression(d, n, noise=noise, task_cov="inverse"))
    pts = stationary_points(fl)
    assert pts.exhaustive
    opt = optimal_gd(fl)
    assert opt["realisable"] and sympy.Rational(opt["loss_exact"]) == sympy.nsimplify(pts[0].loss_exact)
    assert sorted(opt["step_values"]) == pytest.approx(sorted(pts[0].values.values()), rel=1e-12)


def test_optimal_gd_loss_four_layers_against_numerical_minimum():
    """L = 4 (beyond the exhaustive limits): the exact rational optimum equals the loss at the exact
    steps, and no seeded local minimisation of the family loss goes below it."""
    from scipy import optimize

    from landscape.symbolic.codegen import to_numpy
    from landscape.symbolic.solve import optimal_gd

    d, n = 2, 6
    fl = family_loss(get_family("pgd", Problem(d=d, layers=4, n=n, attention="linear")))
    opt = optimal_gd(fl)
    assert opt["realisable"]
    assert fl.value(opt["step_values"]) == pytest.approx(float(sympy.Rational(opt["loss_exact"])), rel=1e-12)
    f = to_numpy(fl.expr, fl.symbols)
    rng = np.random.default_rng(0)
    for _ in range(4):
        m = optimize.minimize(f, rng.uniform(0.1, 1.5, 4), method="BFGS", options={"gtol": 1e-12})
        assert m.fun >= opt["loss"] * (1 - 1e-10)
