"""Stationary points of family losses: exact solutions, numerical roots, classification."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch
from scipy import optimize

from landscape.tolerances import RTOL
from landscape.theory.families import Problem, get_family
from landscape.symbolic import classify, family_loss, stationary_points
from landscape.symbolic.codegen import to_numpy
from landscape.core.tasks import LinearRegression, random_covariance

F64 = torch.float64


@pytest.mark.parametrize("d, n", [(5, 20), (2, 3), (7, 4)])
def test_one_layer_optimum_is_exact_rational(d, n):
    """Ahn et al. Thm 1, Σ = I: the only stationary point of d - 2ad + a²d(n+d+1)/n is a* = n/(n+d+1)."""
    fl = family_loss(get_family("pgd", Problem(d=d, layers=1, n=n, attention="linear")))
    pts = stationary_points(fl)
    assert len(pts) == 1
    p = pts[0]
    assert sympy.sympify(p.exact["a0"]) == sympy.Rational(n, n + d + 1)
    assert p.kind == "min"
    # loss at the optimum: d - d n/(n+d+1) = d(d+1)/(n+d+1)
    assert abs(p.loss - d * (d + 1) / (n + d + 1)) <= RTOL[F64] * p.loss
    assert p.eigenvalues == pytest.approx([2 * d * (n + d + 1) / n], rel=RTOL[F64])


def test_theorem1_anisotropic_optimum():
    """pgd-full, random Σ, w ~ N(0, I), d = 3, n = 5: A* = ((n+1)/n Σ + tr(Σ)/n I)^{-1}, a strict minimum."""
    d, n = 3, 5
    sigma = random_covariance(d, torch.Generator().manual_seed(7))
    fam = get_family("pgd-full", Problem(d=d, layers=1, n=n, sigma=sigma, attention="linear"))
    fl = family_loss(fam)
    pts = stationary_points(fl)
    assert len(pts) == 1 and pts[0].kind == "min"
    A = np.zeros((d, d))
    for i in range(d):
        for j in range(i, d):
            A[i, j] = A[j, i] = pts[0].values[f"A{i}{j}"]
    S = sigma.numpy()
    expected = np.linalg.inv((n + 1) / n * S + np.trace(S) / n * np.eye(d))
    assert np.abs(A - expected).max() <= 1e-10 * np.abs(expected).max()
    assert pts[0].exact  # solved by the exact linear route


def test_two_layer_pgd_exhaustive_and_numerical_routes_agree():
    """pgd, L = 2: the exhaustive enumeration lists two critical points modulo the layer swap — the
    minimum (orbit of 2: the same point with the layers swapped) and a saddle on the diagonal; many-start
    Newton finds the same three points but says it is not exhaustive; every gradient vanishes there."""
    fl = family_loss(get_family("pgd", Problem(d=5, layers=2, n=20, attention="linear")))
    ex = stationary_points(fl)
    nu = stationary_points(fl, exact=False, starts=12, seed=1)
    assert ex.exhaustive and ex.certified and ex.method == "exhaustive"
    assert not nu.exhaustive and nu.method == "multistart" and not any(p.certified for p in nu)
    assert all(p.exact for p in ex) and not any(p.exact for p in nu)
    key = lambda v: (round(v["a0"], 7), round(v["a1"], 7))  # noqa: E731
    expanded = [key(p.values) for p in ex] + [key(m) for p in ex for m in p.members]
    assert sorted(expanded) == sorted(key(p.values) for p in nu)
    assert [(p.kind, p.orbit, p.morse_index) for p in ex] == [("min", 2, 0), ("saddle", 1, 1)]
    m, s = ex
    assert m.values["a0"] == pytest.approx(m.members[0]["a1"], rel=1e-12)
    assert s.values["a0"] == pytest.approx(s.values["a1"], rel=1e-12)
    assert ex.counts == {"all": (5, 5, 3)}  # 5 complex solutions, 3 real (Hermite signature)
    grad = to_numpy(fl.gradient(), fl.symbols)
    for v in [p.values for p in ex] + [mm for p in ex for mm in p.members]:
        assert np.abs(grad(np.array([v["a0"], v["a1"]]))).max() <= 1e-10
    # the global minimum agrees with an independent local optimiser
    f = to_numpy(fl.expr, fl.symbols)
    best = optimize.minimize(f, x0=np.array([0.3, 1.0]), method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000})
    assert best.fun == pytest.approx(m.loss, rel=1e-9)


def test_relaxed_family_flat_symbols_are_reported():
    """pgd-relaxed, L = 1: b0 does not enter the loss (the covariate update is never read)."""
    d, n = 3, 5
    fl = family_loss(get_family("pgd-relaxed", Problem(d=d, layers=1, n=n, attention="linear")))
    pts = stationary_points(fl)
    assert len(pts) == 1
    assert pts[0].free == ("b0",) and pts[0].kind == "min"
    assert sympy.sympify(pts[0].exact["a0"]) == sympy.Rational(n, n + d + 1)


def test_classify_rules():
    assert classify([1.0, 2.0]) == "min"
    assert classify([-1.0, -3.0]) == "max"
    assert classify([-1.0, 2.0]) == "saddle"
    assert classify([0.0, 2.0]) == "degenerate"
    assert classify([-1.0, 0.0, 1.0]) == "saddle"
    assert classify([1e-12, 5.0]) == "degenerate"


@pytest.mark.slow
def test_kernel_family_minimum_modulo_symmetries():
    """fgd with the linear kernel, L = 1: the prediction depends on γ = r·b·c only; the solver's minimum
    has γ equal to the exact minimiser of the (quadratic in γ) sample loss, and the two weight symmetries
    (B/C and V/C scaling) are quotiented out, leaving a strict minimum."""
    d, n = 2, 3
    fam = get_family("fgd", Problem(d=d, layers=1, n=n, attention="kernel", activations=("linear",)))
    fl = family_loss(fam, samples=256, seed=4)
    pts = stationary_points(fl, starts=2, seed=0)
    assert pts.method == "multistart" and not pts.exhaustive and "Monte-Carlo" in pts.note
    with pytest.raises(ValueError, match="Monte-Carlo"):
        stationary_points(fl, method="exhaustive")
    mins = [p for p in pts if p.kind == "min"]
    assert mins, [p.as_dict() for p in pts]
    p = mins[0]
    assert p.symmetry_dims == 2
    gamma = p.values["r0"] * p.values["b0"] * p.values["c0"]
    co = fl.coefficients({"b0": 1.0, "c0": 1.0, "r0": 1.0})
    m = dict(zip((s.name for s in co.names), co.mean.tolist()))
    gamma_star = m["m__r0__q"] / m["m__r0__r0"]  # minimiser of γ² m__r0__r0 - 2γ m__r0__q + ...
    assert gamma == pytest.approx(gamma_star, rel=1e-6)
    assert p.loss_se > 0


def test_stationary_points_rejects_bad_input():
    fl = family_loss(get_family("pgd", Problem(d=2, layers=1, n=3, attention="linear")))
    with pytest.raises(TypeError, match="FamilyLoss"):
        stationary_points("pgd")
    with pytest.raises(ValueError, match="starts"):
        stationary_points(fl, starts=0)
    with pytest.raises(ValueError, match="scale"):
        stationary_points(fl, scale=-1.0)
    with pytest.raises(ValueError, match="exact"):
        stationary_points(fl, exact="maybe")
    with pytest.raises(ValueError, match="method"):
        stationary_points(fl, method="homotopy")
    fl4 = family_loss(get_family("pgd", Problem(d=2, layers=4, n=3, attention="linear")))
    with pytest.raises(ValueError, match="no exact solver.*Bézout"):
        stationary_points(fl4, exact=True)
    with pytest.raises(ValueError, match="exhaustive enumeration is not possible.*Bézout bound 2401"):
        stationary_points(fl4, method="exhaustive")


def test_tied_looped_family_is_solved_exhaustively():
    """A tied (looped) family, one preconditioner a shared by all L = 3 layers (Gatmiry et al. 2024):
    its loss is the untied pgd loss on the diagonal a0 = a1 = a2 = a (checked by substitution); its
    stationary points are the exact real roots of a univariate derivative, listed exhaustively; the
    tied optimum is never below the untied optimal 3-step loss (exact rational)."""
    from landscape.theory.families import family_from_function
    from landscape.symbolic.solve import optimal_gd

    d, n, L = 2, 5, 3

    def tied(problem):
        D = problem.d + 1
        a = sympy.Symbol("a", real=True)
        out = {}
        for l in range(problem.layers):
            P = sympy.zeros(D, D)
            P[D - 1, D - 1] = 1
            Q = sympy.zeros(D, D)
            Q[:D - 1, :D - 1] = -a * sympy.eye(problem.d)
            out[f"layer{l}.head0.P"], out[f"layer{l}.head0.Q"] = P, Q
        return out

    prob = Problem(d=d, layers=L, n=n, attention="linear")
    data = LinearRegression(d, n, task_cov="inverse")
    tl = family_loss(family_from_function(tied, prob), data)
    ul = family_loss(get_family("pgd", prob), data)
    a = sympy.Symbol("a", real=True)
    assert sympy.expand(tl.expr - ul.expr.subs({s: a for s in ul.symbols})) == 0
    pts = stationary_points(tl)
    assert pts.exhaustive and pts.method == "exhaustive"
    roots = sympy.Poly(sympy.diff(tl.expr, a), a).real_roots()
    assert sorted(p.values["a"] for p in pts) == pytest.approx(sorted(float(r) for r in roots), rel=1e-12)
    assert optimal_gd(tl) is None  # not one step size per layer
    best_untied = float(sympy.Rational(optimal_gd(ul)["loss_exact"]))
    assert min(p.loss for p in pts) > best_untied * (1 + 1e-9)  # distinct steps do strictly better
