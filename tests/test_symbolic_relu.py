"""Exact one-layer ReLU attention loss on isotropic Gaussian covariates, against Monte-Carlo and by hand."""

from __future__ import annotations

import math

import pytest
import sympy
import torch

from landscape.theory.families import Problem, family_from_function, get_family
from landscape.core.model import predict
from landscape.symbolic import family_loss
from landscape.core.tasks import LinearRegression

F64 = torch.float64


def _mc_loss(params, spec, data, g, samples, batch=50_000):
    errs = []
    for _ in range(samples // batch):
        b = data.sample(batch, g)
        with torch.no_grad():
            errs.append((predict(params, spec, b.Z.to(F64)) - b.target.to(F64)) ** 2)
    e = torch.cat(errs)
    return float(e.mean()), float(e.std() / e.numel() ** 0.5)


def test_fgd_relu_one_layer_by_hand():
    """fgd, ReLU, one layer, Σ = I, w ~ N(0, I): TF = -(γ/n)Σ_i y_i relu(±s_i) with γ = r b c. By hand
    (condition on x_q; E[α² 1(α>0)] = 1/2, E[α⁴ 1(α>0)] = 3/2): E pred² = γ²[(n-1)d/(4n) + d(d+2)/(2n)],
    -2E[pred y_q] = γd, E y_q² = d, so f = d + dγ + γ² d(n+2d+3)/(4n), minimised at γ = -2n/(n+2d+3)
    with f* = d - dn/(n+2d+3)."""
    d, n = 3, 5
    fam = get_family("fgd", Problem(d=d, layers=1, n=n, attention="kernel", activations=("relu",)))
    fl = family_loss(fam, LinearRegression(d, n))
    assert fl.method == "relu-one-layer" and fl.exact
    r, b, c = (sympy.Symbol(x, real=True) for x in ("r0", "b0", "c0"))
    g = r * b * c
    hand = d + d * g + g**2 * sympy.Rational(d * (n + 2 * d + 3), 4 * n)
    assert sympy.expand(fl.expr - hand) == 0
    gamma_star = -sympy.Rational(2 * n, n + 2 * d + 3)
    assert sympy.expand(hand.subs(r, gamma_star / (b * c))) == d - sympy.Rational(d * n, n + 2 * d + 3)


def test_relu_one_layer_matches_monte_carlo_with_value_covariate_part_and_noise():
    """A user family with value label row (v, v, r) (so |v_x|² enters), keys/queries B = bI, C = cI, and
    label noise std 0.5: the exact loss vs plain Monte-Carlo within 3 SE at two points, and the κ²|v_x|²
    term matters (dropping it is many SE off)."""
    d, n = 2, 4

    def fam_fn(problem):
        D = problem.d + 1
        v, r, b, c = (sympy.Symbol(x, real=True) for x in ("v", "r", "b", "c"))
        V = sympy.zeros(D, D)
        V[D - 1, 0] = v
        V[D - 1, 1] = v
        V[D - 1, D - 1] = r
        B = sympy.zeros(D, D)
        B[:d, :d] = b * sympy.eye(d)
        C = sympy.zeros(D, D)
        C[:d, :d] = c * sympy.eye(d)
        return {"layer0.head0.V": V, "layer0.head0.B": B, "layer0.head0.C": C}

    fam = family_from_function(fam_fn, Problem(d=d, layers=1, n=n, attention="kernel", activations=("relu",)))
    data = LinearRegression(d, n, noise=0.5)
    fl = family_loss(fam, data)
    assert fl.method == "relu-one-layer"
    g = torch.Generator().manual_seed(11)
    for vals in ({"v": 0.6, "r": -0.5, "b": 1.1, "c": 0.7}, {"v": -0.3, "r": 0.4, "b": -0.8, "c": 0.9}):
        exact = fl.value(vals)
        mean, se = _mc_loss(fam.params(vals), fam.spec, data, g, 400_000)
        assert abs(exact - mean) <= 3 * se, (vals, exact, mean, se)
        K = (n + 2 * d + 3) / (4 * n)
        vx_term = K * (vals["b"] * vals["c"]) ** 2 * 2 * vals["v"] ** 2
        assert vx_term > 10 * se


def test_relu_route_refuses_anisotropic_sigma():
    """Σ ≠ I: the isotropic route does not apply and says why (the general relu-anisotropic route applies)."""
    fam = get_family("fgd", Problem(d=2, layers=1, n=3, attention="kernel", activations=("relu",)))
    data = LinearRegression(2, 3, sigma=torch.diag(torch.tensor([1.0, 2.0], dtype=F64)))
    with pytest.raises(ValueError, match="Σ is not the identity"):
        family_loss(fam, data, method="relu-one-layer")
    fl = family_loss(fam, data, samples=64)  # the general ReLU route takes over, exactly
    assert fl.exact and fl.method == "relu-anisotropic"
    assert math.isfinite(family_loss(fam, LinearRegression(2, 3)).value({"r0": 1.0, "b0": 1.0, "c0": 1.0}))


def test_fgd_relu_one_layer_critical_sets_exhaustive():
    """The exact ReLU optimum, listed once with its symmetries declared. f = d + dγ + dKγ², γ = rbc:
    ∂_r f = f'(γ) bc, ∂_b f = f'(γ) rc, ∂_c f = f'(γ) rb, f'(0) = d ≠ 0. So the critical sets are
    (i) γ = γ* = -1/(2K) = -2n/(n+2d+3): a 2-dimensional set (the two overlapping scalings r → tr,
    c → c/t and b → tb, c → c/t; 4 sign components), a minimum, loss d - dn/(n+2d+3); (ii) two of
    r, b, c zero, the third t ≠ 0: the three punctured axes (dimension 1), Hessian ±d t in the (b, c)
    block: saddles of index 1, loss d; (iii) the origin: Hessian 0 (degenerate), loss d."""
    d, n = 3, 5
    fam = get_family("fgd", Problem(d=d, layers=1, n=n, attention="kernel", activations=("relu",)))
    from landscape.symbolic import stationary_points

    pts = stationary_points(family_loss(fam, LinearRegression(d, n)))
    assert pts.method == "exhaustive" and pts.exhaustive and pts.certified
    assert [(p.kind, p.dimension, p.morse_index) for p in pts] == [("min", 2, 0), ("saddle", 1, 1),
                                                                   ("degenerate", 0, 0)] or \
        [(p.kind, p.dimension, p.morse_index) for p in pts] == [("min", 2, 0), ("degenerate", 0, 0),
                                                                ("saddle", 1, 1)]
    m = pts[0]
    assert sympy.nsimplify(m.loss_exact) == d - sympy.Rational(d * n, n + 2 * d + 3)
    gamma = sympy.sympify(m.exact["r0"]) * sympy.sympify(m.exact["b0"]) * sympy.sympify(m.exact["c0"])
    assert sympy.simplify(gamma + sympy.Rational(2 * n, n + 2 * d + 3)) == 0
    assert m.orbit == 4 and m.symmetry_dims == 2
    saddle = next(p for p in pts if p.kind == "saddle")
    assert sympy.nsimplify(saddle.loss_exact) == d and saddle.orbit == 6  # 3 axes × 2 signs
    t = max(abs(v) for v in saddle.values.values())
    assert sorted(saddle.eigenvalues) == pytest.approx([-d * t, d * t], rel=1e-12)
