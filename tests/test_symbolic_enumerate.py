"""Exhaustive, certified enumeration of critical points against critical sets derived by hand."""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest
import sympy
import torch

from landscape.theory.families import Problem, family_from_function
from landscape.symbolic import family_loss, stationary_points
from landscape.symbolic.enumerate import EnumerationLimit, enumerate_critical_points, polynomial_symmetries
from landscape.core.tasks import LinearRegression

F64 = torch.float64


def _inside(box: tuple[str, str], value: sympy.Expr) -> bool:
    """Exact check lo <= value <= hi (rational endpoints, value an algebraic number)."""
    lo, hi = (sympy.Rational(x) for x in box)
    return bool(sympy.Le(lo, value)) and bool(sympy.Le(value, hi))


def three_heads(problem):
    """three rank-one key/query heads: Q_h = -k_h q_h e_h e_hᵀ, P_h = diag(0, 1)"""
    D = problem.d + 1
    out = {}
    for h in range(3):
        k, q = sympy.Symbol(f"k{h}", real=True), sympy.Symbol(f"q{h}", real=True)
        P = sympy.zeros(D, D)
        P[D - 1, D - 1] = 1
        Q = sympy.zeros(D, D)
        Q[h, h] = -k * q
        out[f"layer0.head{h}.P"] = P
        out[f"layer0.head{h}.Q"] = Q
    return out


LAMBDA = (1, 2, 3)
N = 4


@pytest.fixture(scope="module")
def three_head_loss():
    sig = torch.diag(torch.tensor(LAMBDA, dtype=F64))
    prob = Problem(d=3, layers=1, n=N, attention="linear", heads=3, sigma=sig)
    fam = family_from_function(three_heads, prob)
    return family_loss(fam, LinearRegression(3, N, sigma=sig))


def _hand_derived_sets():
    r"""By hand. One layer, Σ = diag(λ), w ~ N(0, I), heads summing to A = diag(γ_h), γ_h = k_h q_h:
    Ahn et al. Thm 1's loss f = (n+1)/n tr(ΣAΣAΣ) + trΣ/n tr(AΣAΣ) - 2tr(Σ²A) + trΣ separates into
    Σ_h g_h(γ_h), g_h(γ) = c_h γ² - 2β_h γ + λ_h with c_h = ((n+1)λ_h³ + trΣ λ_h²)/n, β_h = λ_h².
    ∂f/∂k_h = g_h'(γ_h) q_h, ∂f/∂q_h = g_h'(γ_h) k_h: zero iff γ_h = γ*_h = β_h/c_h ("on") or
    k_h = q_h = 0 ("off", g_h'(0) = -2β_h ≠ 0). So the critical sets are the 2³ products: for
    S = on-heads, dimension |S| (the hyperbolas k_h q_h = γ*_h, 2^|S| components related by the
    flips (k_h, q_h) → (-k_h, -q_h)), loss trΣ - Σ_{h∈S} β_h²/c_h, and transverse Hessian:
    on-head 2c_h(k_h² + q_h²) = 4β_h at the balanced point k_h = q_h = √γ*_h; off-head the block
    [[0, -2β_h], [-2β_h, 0]] with eigenvalues ±2β_h. Morse index 3 - |S|."""
    tr = sum(LAMBDA)
    c = [sympy.Rational((N + 1) * l**3 + tr * l**2, N) for l in LAMBDA]
    beta = [sympy.Integer(l**2) for l in LAMBDA]
    out = {}
    for S in itertools.product((0, 1), repeat=3):
        loss = tr - sum(beta[h] ** 2 / c[h] for h in range(3) if S[h])
        ev = sorted([float(4 * beta[h]) if S[h] else float(s * 2 * beta[h]) for h in range(3)
                     for s in ((1,) if S[h] else (-1, 1))])
        point = {f"{v}{h}": (sympy.sqrt(beta[h] / c[h]) if S[h] else sympy.Integer(0)) for h in range(3) for v in "kq"}
        out[S] = {"loss": loss, "dim": sum(S), "index": 3 - sum(S), "ev": ev, "point": point}
    return out


def test_three_head_family_all_eight_critical_sets(three_head_loss):
    """The user family with three separate rank-one key/query heads: exactly the 2³ hand-derived
    critical sets, each once, with exact values, exact losses, dimensions, Morse indices, transverse
    Hessian eigenvalues, and boxes that contain the exact points."""
    pts = stationary_points(three_head_loss)
    assert pts.method == "exhaustive" and pts.exhaustive and pts.certified
    expected = _hand_derived_sets()
    assert len(pts) == len(expected) == 8
    seen = set()
    for p in pts:
        S = tuple(int(abs(p.values[f"k{h}"]) > 0) for h in range(3))
        assert S not in seen
        seen.add(S)
        e = expected[S]
        assert p.exhaustive and p.certified and p.method == "exhaustive"
        assert sympy.nsimplify(p.loss_exact) == e["loss"]
        assert p.loss == pytest.approx(float(e["loss"]), rel=1e-14)
        assert p.dimension == e["dim"] and p.morse_index == e["index"]
        assert p.kind == ("min" if e["index"] == 0 else "saddle")
        assert list(p.eigenvalues) == pytest.approx(e["ev"], rel=1e-12)
        assert p.orbit == 2 ** e["dim"]  # the sign-flip components of the hyperbolas
        for name, value in e["point"].items():
            assert sympy.simplify(sympy.sympify(p.exact[name]) - value) == 0, (name, p.exact[name], value)
            assert _inside(p.certificate["box_exact"][name], value)
    assert seen == set(expected)


@pytest.mark.slow
def test_multistart_misses_a_saddle_the_enumeration_lists(three_head_loss):
    """Seeded multi-start (24 starts) on the same family: many copies of the minimum manifold, at least
    one of the eight critical sets missing, and the result says it is not exhaustive."""
    ms = stationary_points(three_head_loss, method="multistart")
    assert ms.method == "multistart" and not ms.exhaustive and not ms.certified
    assert "NOT exhaustive" in ms.note
    found = {tuple(int(abs(p.values[f"k{h}"] * p.values[f"q{h}"]) > 1e-6) for h in range(3)) for p in ms}
    assert len(ms) > 8 and len(found) < 8


def test_univariate_casus_irreducibilis():
    """f = x⁴/4 - 3x²/2 + x: f' = x³ - 3x + 1 = 0 at x = 2cos θ with 2cos 3θ + 1 = 0, i.e.
    θ ∈ {2π/9, 4π/9, 8π/9}; f'' = 3x² - 3: minima at 2cos(2π/9), 2cos(8π/9), a maximum at 2cos(4π/9)."""
    x = sympy.Symbol("x")
    E = enumerate_critical_points(x**4 / 4 - sympy.Rational(3, 2) * x**2 + x, [x])
    assert E.exhaustive and E.counts == {"all": (3, 3, 3)}
    roots = {th: 2 * mpmath.cos(th) for th in (2 * mpmath.pi / 9, 4 * mpmath.pi / 9, 8 * mpmath.pi / 9)}
    got = sorted(E.sets, key=lambda c: c.values["x"])
    want = sorted(roots.values())
    for c, r in zip(got, want):
        lo, hi = (mpmath.mpf(sympy.Rational(v).p) / sympy.Rational(v).q for v in c.certificate["box_exact"]["x"])
        assert lo <= r <= hi and hi - lo < 1e-25
        assert "CRootOf" in c.exact["x"]
        assert float(sympy.N(sympy.sympify(c.exact["x"]), 30)) == pytest.approx(float(r), rel=1e-15)
        assert c.kind == ("max" if 0 < r < 1 else "min")
        assert c.eigenvalues[0] == pytest.approx(float(3 * r**2 - 3), rel=1e-12)


def test_sign_flip_orbit_and_saddle_at_origin():
    """f = (x² - 2)² + (y - x)²: ∂_y f = 2(y - x) gives y = x, then 4x(x² - 2) = 0: three critical points.
    (±√2, ±√2) are minima (loss 0) related by the flip (x, y) → (-x, -y): one listing, orbit 2. The
    origin: Hessian [[-6, -2], [-2, 2]], determinant -16 < 0, a saddle of index 1, loss 4."""
    x, y = sympy.symbols("x y")
    E = enumerate_critical_points((x**2 - 2) ** 2 + (y - x) ** 2, [x, y])
    assert E.exhaustive and E.symmetries.flips == ((1, 1),) and E.symmetries.scalings == ()
    assert len(E.sets) == 2
    m, s = E.sets
    assert m.kind == "min" and m.orbit == 2 and sympy.sympify(m.loss_exact) == 0
    assert {sympy.sympify(m.exact["x"]), sympy.sympify(m.exact["y"])} == {sympy.sqrt(2)}
    assert _inside(m.certificate["box_exact"]["x"], sympy.sqrt(2))
    assert m.members[0] == pytest.approx({"x": -math.sqrt(2), "y": -math.sqrt(2)}, rel=1e-15)
    assert s.kind == "saddle" and s.morse_index == 1 and sympy.sympify(s.loss_exact) == 4
    assert sorted(s.eigenvalues) == pytest.approx(sorted(np.linalg.eigvalsh([[-6.0, -2.0], [-2.0, 2.0]])), rel=1e-12)


def test_flat_valley_that_is_not_a_scaling_is_reported_not_exhaustive():
    """f = (a + b - 1)²: every point of the line a + b = 1 is critical (a 1-dimensional set that no
    scaling of the monomials generates): the enumeration says it is not exhaustive, and
    stationary_points(method='exhaustive') refuses with that reason, while 'auto' falls back to
    multi-start and says so."""
    a, b = sympy.symbols("a b", real=True)
    E = enumerate_critical_points((a + b - 1) ** 2, [a, b])
    assert not E.exhaustive and "dimension 1" in E.reason

    def fam_fn(problem):
        D = problem.d + 1
        P = sympy.zeros(D, D)
        P[D - 1, D - 1] = 1
        Q = sympy.zeros(D, D)
        Q[0, 0] = -(a + b)
        return {"layer0.head0.P": P, "layer0.head0.Q": Q}

    fam = family_from_function(fam_fn, Problem(d=1, layers=1, n=3, attention="linear"))
    fl = family_loss(fam)
    with pytest.raises(ValueError, match="dimension 1"):
        stationary_points(fl, method="exhaustive")
    pts = stationary_points(fl, starts=3)
    assert pts.method == "multistart" and not pts.exhaustive and "dimension 1" in pts.note
    # on the valley a + b = n/(n+d+1) = 3/5 (Ahn et al. Thm 1, d = 1): every listed point is on it
    assert all(p.values["a"] + p.values["b"] == pytest.approx(3 / 5, rel=1e-9) for p in pts)


def test_scalings_flips_and_permutations_detected():
    """x y + (x y)² + z² u² - z u: scalings (x, y) → (tx, y/t), (z, u) → (tz, u/t); flips of (x, y) and
    (z, u); the permutations x ↔ y and z ↔ u (and their product)."""
    x, y, z, u = sympy.symbols("x y z u")
    sym = polynomial_symmetries(sympy.Poly(x * y + (x * y) ** 2 + z**2 * u**2 - z * u, x, y, z, u))
    assert set(sym.scalings) == {(1, -1, 0, 0), (0, 0, 1, -1)} and sym.disjoint
    assert set(sym.flips) == {(1, 1, 0, 0), (0, 0, 1, 1)}
    assert set(sym.permutations) == {(1, 0, 2, 3), (0, 1, 3, 2), (1, 0, 3, 2)}


def test_limits_are_enforced():
    xs = sympy.symbols("x0:9")
    with pytest.raises(EnumerationLimit, match="9 unknowns"):
        enumerate_critical_points(sum(v**2 for v in xs), xs)
    x, y = sympy.symbols("x y")
    with pytest.raises(EnumerationLimit, match="degree"):
        enumerate_critical_points(x**10 + y**2, [x, y])


def test_wall_clock_guard_stops_a_long_groebner_and_auto_falls_back():
    """pgd with 3 layers takes ~20 s to enumerate; with a 0.3 s budget the enumeration is interrupted
    inside sympy's Gröbner computation (EnumerationTimeout, well before it would finish), and
    stationary_points(method='auto') falls back to multi-start, saying it is NOT exhaustive and why;
    method='exhaustive' refuses with the same reason."""
    import time

    from landscape.symbolic.enumerate import EnumerationTimeout
    from landscape.theory.families import get_family

    fam = get_family("pgd", Problem(d=3, layers=3, n=10, attention="linear"))
    fl = family_loss(fam)
    active = [s for s in fam.symbols if s in fl.expr.free_symbols]
    t0 = time.process_time()  # CPU time: a loaded machine stretches wall time, not the work done
    with pytest.raises(EnumerationTimeout, match="time limit of 0.3 s"):
        enumerate_critical_points(fl.expr, active, time_limit=0.3)
    assert time.process_time() - t0 < 5.0  # stopped: the whole enumeration is ~20 s of CPU
    pts = stationary_points(fl, starts=4, time_limit=0.3)
    assert pts.method == "multistart" and not pts.exhaustive and "NOT exhaustive" in pts.note
    assert "time limit" in pts.note
    with pytest.raises(ValueError, match="time limit"):
        stationary_points(fl, method="exhaustive", time_limit=0.3)
    # the SIGALRM handler is restored: no stray alarm is pending afterwards
    import signal

    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
