"""The tied (looped) family pgd-tied (Gatmiry et al. 2024): exact loss by two routes, and its complete,
certified list of critical points."""

from __future__ import annotations

import pytest
import sympy
import torch

from landscape.core.tasks import LinearRegression
from landscape.symbolic import family_loss, stationary_points
from landscape.symbolic.routes import ROUTES
from landscape.symbolic.solve import optimal_gd
from landscape.theory.families import Problem, get_family

F64 = torch.float64


def _tied(d, n, L, sigma=None):
    fam = get_family("pgd-tied", Problem(d=d, layers=L, n=n, sigma=sigma, attention="linear"))
    return fam, LinearRegression(d, n, sigma=sigma, task_cov="inverse")


def test_tied_family_shares_one_symbol_and_wishart_equals_wick():
    """One symbol a in every layer; the Wishart route (whitening + E tr S^k) and the Wick route (Isserlis
    pairings of the sample covariances, a different algorithm) give the same loss for L = 2."""
    fam, data = _tied(2, 4, 2)
    assert fam.names == ("a",)
    assert fam.blocks["layer0.head0.Q"] == fam.blocks["layer1.head0.Q"]
    w = family_loss(fam, data)
    assert w.method == "wishart" and w.exact
    k = ROUTES["wick"].build(fam, data)
    for a in (-0.7, 0.1, 0.35, 1.2):
        assert k.value({"a": a}) == pytest.approx(w.value({"a": a}), rel=1e-11)


def test_tied_loss_is_whitening_invariant():
    """For w* ~ N(0, Σ^{-1}) the family A = aΣ^{-1} whitens to aI: the loss does not depend on Σ."""
    sig = torch.tensor([[1.0, 0.4, 0.0], [0.4, 0.8, 0.1], [0.0, 0.1, 0.5]], dtype=F64)
    iso = family_loss(*_tied(3, 6, 2))
    aniso = family_loss(*_tied(3, 6, 2, sig))
    for a in (0.2, 0.5, 0.9):
        assert aniso.value({"a": a}) == pytest.approx(iso.value({"a": a}), rel=1e-9)


@pytest.mark.parametrize("L", [1, 2, 3])
def test_tied_family_has_exactly_one_critical_point_a_minimum(L):
    """f(a) = E tr(I - aS)^{2L} has f''(a) = 2L(2L-1) E tr(S²(I - aS)^{2L-2}) > 0: strictly convex, so the
    complete list is one point, a minimum. The exhaustive (certified) enumeration must find exactly that;
    its loss is >= the untied L-step optimum (pgd, optimal_gd) with equality only at L = 1, and the
    tied step is a real root of f'(a) inside the certificate box."""
    d, n = 3, 10
    fam, data = _tied(d, n, L)
    fl = family_loss(fam, data)
    pts = stationary_points(fl)
    assert pts.exhaustive and pts.certified and pts.method in ("exhaustive", "linear", "univariate")
    assert len(pts) == 1 and pts[0].kind == "min"
    a = sympy.Symbol("a", real=True)
    fprime = sympy.Poly(sympy.diff(fl.expr, a), a)
    roots = fprime.real_roots()
    assert len(roots) == 1  # the convexity argument, checked on the polynomial itself
    assert float(roots[0]) == pytest.approx(pts[0].values["a"], rel=1e-12)
    untied = optimal_gd(family_loss(get_family("pgd", Problem(d=d, layers=L, n=n, attention="linear"))))
    assert (optimal_gd(fl) is None) == (L > 1)  # for L > 1 the untied optimum is not this family's
    tied = sympy.Rational(pts[0].loss_exact) if pts[0].loss_exact and "CRootOf" not in pts[0].loss_exact else None
    if L == 1:
        assert pts[0].loss == pytest.approx(untied["loss"], rel=1e-12)
        assert tied == sympy.Rational(untied["loss_exact"])
    else:
        assert pts[0].loss > untied["loss"] * (1 + 1e-6)


def test_tied_minimum_is_the_untied_families_layer_symmetric_saddle():
    """On the diagonal a_0 = a_1 the untied loss's gradient is (g, g) by the layer swap, and the tied
    derivative is 2g: the tied minimum is a critical point of pgd too. With the tied loss convex and the
    untied minimum off the diagonal (distinct steps), it is pgd's index-1 saddle (d = 3, n = 10, L = 2)."""
    d, n = 3, 10
    tied = stationary_points(family_loss(*_tied(d, n, 2)))
    untied = stationary_points(family_loss(get_family("pgd", Problem(d=d, layers=2, n=n, attention="linear"))))
    assert untied.exhaustive and [p.kind for p in untied] == ["min", "saddle"]
    saddle = untied[1]
    assert saddle.values["a0"] == pytest.approx(saddle.values["a1"], rel=1e-12)
    assert saddle.values["a0"] == pytest.approx(tied[0].values["a"], rel=1e-12)
    assert saddle.loss == pytest.approx(tied[0].loss, rel=1e-12) and tied[0].loss > untied[0].loss
