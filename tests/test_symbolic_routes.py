"""Each loss route of the registry on its own, against an independent reference (a formula derived in
the test, or Monte-Carlo within 3 SE), and the registry's selection and reporting."""

from __future__ import annotations

import pytest
import sympy
import torch

from landscape.core.model import predict
from landscape.core.tasks import LinearRegression
from landscape.symbolic import family_loss
from landscape.symbolic.routes import ROUTES, Route, RouteOptions, register_route, route_report
from landscape.theory.families import Problem, family_from_function, get_family

F64 = torch.float64


def _mc_loss(family, data, values, seed, samples, batch=50_000):
    """Plain Monte-Carlo of E(TF - y_q)² with the model forward (independent of every route)."""
    g = torch.Generator().manual_seed(seed)
    errs = []
    params = family.params(values)
    for _ in range(samples // batch):
        b = data.sample(batch, g)
        with torch.no_grad():
            errs.append((predict(params, family.spec, b.Z.to(F64)) - b.target.to(F64)) ** 2)
    e = torch.cat(errs)
    return float(e.mean()), float(e.std() / e.numel() ** 0.5)


def _sym(name):
    return sympy.Symbol(name, real=True)


# ---------------------------------------------------------------------- exact routes, one by one
def test_wishart_route_alone_equals_theorem_1_isotropic_formula():
    """pgd, one layer, Σ = I: f(a) = d - 2ad + a² d(n+d+1)/n (Ahn et al. Theorem 1, isotropic)."""
    d, n = 3, 7
    fam = get_family("pgd", Problem(d=d, layers=1, n=n, attention="linear"))
    fl = ROUTES["wishart"].build(fam, LinearRegression(d, n))
    a = _sym("a0")
    assert fl.method == "wishart"
    assert sympy.expand(fl.expr - (d - 2 * a * d + a**2 * sympy.Rational(d * (n + d + 1), n))) == 0


def test_one_layer_route_alone_equals_theorem_1_matrix_formula():
    """pgd-full, anisotropic diagonal Σ, w ~ N(0, I): f(A) = (n+1)/n tr(ΣAΣAᵀΣ) + tr(AΣAᵀΣ) trΣ / n
    - 2 tr(Σ²A) + tr Σ (Ahn et al. Theorem 1)."""
    d, n = 2, 5
    sig = torch.diag(torch.tensor([1.0, 0.5], dtype=F64))
    fam = get_family("pgd-full", Problem(d=d, layers=1, n=n, sigma=sig, attention="linear"))
    fl = ROUTES["one-layer"].build(fam, LinearRegression(d, n, sigma=sig))
    S = sympy.diag(1, sympy.Rational(1, 2))
    A = sympy.Matrix([[_sym("A00"), _sym("A01")], [_sym("A01"), _sym("A11")]])
    ref = (sympy.Rational(n + 1, n) * (S * A * S * A.T * S).trace() + (A * S * A.T * S).trace() * S.trace() / n
           - 2 * (S * S * A).trace() + S.trace())
    diff = sympy.expand(fl.expr - ref)
    coeffs = sympy.Poly(diff, *sorted(A.free_symbols, key=str)).coeffs() if diff != 0 else []
    assert max((abs(float(c)) for c in coeffs), default=0.0) < 1e-12
    assert fl.expr.free_symbols == A.free_symbols


def test_expansion_route_alone_equals_scalar_formula():
    """d = n = 1, one layer: f(a) = E w² E x_q² E(a x_1² - 1)² = 3a² - 2a + 1 (E x⁴ = 3)."""
    fam = get_family("pgd", Problem(d=1, layers=1, n=1, attention="linear"))
    fl = ROUTES["expansion"].build(fam, LinearRegression(1, 1))
    a = _sym("a0")
    assert sympy.expand(fl.expr - (3 * a**2 - 2 * a + 1)) == 0


def test_wick_route_alone_matches_monte_carlo_for_anisotropic_control():
    """pgd-identity, 2 layers, anisotropic Σ (whitening does not help): Wick pairings vs plain Monte-Carlo."""
    d, n = 2, 3
    sig = torch.tensor([[1.0, 0.3], [0.3, 0.6]], dtype=F64)
    fam = get_family("pgd-identity", Problem(d=d, layers=2, n=n, sigma=sig, attention="linear"))
    data = LinearRegression(d, n, sigma=sig)
    fl = ROUTES["wick"].build(fam, data)
    vals = {"a0": 0.4, "a1": 0.7}
    mean, se = _mc_loss(fam, data, vals, seed=5, samples=400_000)
    assert abs(fl.value(vals) - mean) <= 3 * se, (fl.value(vals), mean, se)


def test_relu_route_alone_equals_hand_formula():
    """fgd, ReLU: f = d + dγ + dKγ², γ = r b c, K = (n+2d+3)/(4n) (half-space moments, by hand)."""
    d, n = 2, 6
    fam = get_family("fgd", Problem(d=d, layers=1, n=n, attention="kernel", activations=("relu",)))
    fl = ROUTES["relu-one-layer"].build(fam, LinearRegression(d, n))
    g = _sym("r0") * _sym("b0") * _sym("c0")
    assert sympy.expand(fl.expr - (d + d * g + d * sympy.Rational(n + 2 * d + 3, 4 * n) * g**2)) == 0


def test_relu_anisotropic_route_reduces_to_isotropic_and_matches_monte_carlo():
    """The general ReLU route equals the isotropic one where both apply (Σ = Σ_w = I, BᵀC = κI), and for a
    full score matrix, anisotropic Σ, Σ_w = Σ^{-1}, a value covariate part and noise 0.4 it agrees with
    plain Monte-Carlo within 3 SE."""
    d, n = 2, 3
    iso = get_family("fgd-full", Problem(d=d, layers=1, n=n, attention="kernel", activations=("relu",)))
    a = ROUTES["relu-anisotropic"].build(iso, LinearRegression(d, n, noise=0.2))
    b = ROUTES["relu-one-layer"].build(iso, LinearRegression(d, n, noise=0.2))
    assert sympy.expand(a.expr - b.expr) == 0
    sig = torch.tensor([[1.0, 0.3], [0.3, 0.6]], dtype=F64)

    def fam_fn(problem):
        D = problem.d + 1
        v, r, b_, c, e = (sympy.Symbol(x, real=True) for x in ("v", "r", "b", "c", "e"))
        V = sympy.zeros(D, D)
        V[D - 1, 0], V[D - 1, 1], V[D - 1, D - 1] = v, 2 * v, r
        B = sympy.zeros(D, D)
        B[:2, :2] = sympy.Matrix([[b_, e], [0, b_]])
        C = sympy.zeros(D, D)
        C[:2, :2] = sympy.Matrix([[c, 0], [e, c]])
        return {"layer0.head0.V": V, "layer0.head0.B": B, "layer0.head0.C": C}

    fam = family_from_function(fam_fn, Problem(d=d, layers=1, n=n, sigma=sig, attention="kernel",
                                               activations=("relu",)))
    data = LinearRegression(d, n, sigma=sig, task_cov="inverse", noise=0.4)
    fl = family_loss(fam, data)
    assert fl.method == "relu-anisotropic" and dict(fl.skipped)["relu-one-layer"] == "Σ is not the identity"
    vals = {"v": 0.4, "r": -0.7, "b": 0.9, "c": 0.8, "e": 0.5}
    mean, se = _mc_loss(fam, data, vals, seed=31, samples=400_000)
    assert abs(fl.value(vals) - mean) <= 3 * se, (fl.value(vals), mean, se)


def _exp_hand(kappa, r, d, n, s2):
    """Independent scalar derivation for fgd(-full), exp kernel, Σ = Σ_w = I, M = κI, v_x = 0, v_y = r:
    E_z[|z|^2 e^{t|z|²}] = d (1-2t)^{-d/2-1}, E_z[e^{t|z|²}] = (1-2t)^{-d/2}, so
    f = (n-1)/n r²κ² d (1-2κ²)^{-d/2-1} + r²(d+s²)/n (1-4κ²)^{-d/2} + 4/n r²κ² d (1-4κ²)^{-d/2-1}
        + 2rκ d (1-κ²)^{-d/2-1} + d + s²."""
    k2 = kappa**2
    return ((n - 1) / n * r**2 * k2 * d * (1 - 2 * k2) ** (-d / 2 - 1) + r**2 * (d + s2) / n * (1 - 4 * k2) ** (-d / 2)
            + 4 / n * r**2 * k2 * d * (1 - 4 * k2) ** (-d / 2 - 1) + 2 * r * kappa * d * (1 - k2) ** (-d / 2 - 1)
            + d + s2)


@pytest.mark.parametrize("d", [2, 3])
def test_exp_route_equals_scalar_hand_formula(d):
    n, noise = 4, 0.3
    fam = get_family("fgd", Problem(d=d, layers=1, n=n, attention="kernel", activations=("exp",)))
    fl = ROUTES["exp-one-layer"].build(fam, LinearRegression(d, n, noise=noise))
    for r, b, c in ((-0.8, 0.5, 0.4), (0.6, -0.7, 0.5), (1.3, 0.3, 0.3)):
        ref = _exp_hand(b * c, r, d, n, noise**2)
        assert abs(fl.value({"r0": r, "b0": b, "c0": c}) - ref) <= 1e-12 * abs(ref)
    # the Gaussian integrals converge iff I - 4κ²I ≻ 0, i.e. |κ| < 1/2: +inf beyond
    assert fl.value({"r0": 1.0, "b0": 1.0, "c0": 0.49}) < float("inf")
    assert fl.value({"r0": 1.0, "b0": 1.0, "c0": 0.51}) == float("inf")
    assert fl.value({"r0": 1.0, "b0": -1.0, "c0": 0.51}) == float("inf")


def test_exp_route_matches_monte_carlo_anisotropic_with_value_covariate_part():
    """A user exp family with a full score matrix M = BᵀC, value label row (v, -v, r), anisotropic Σ,
    task covariance Σ^{-1}, label noise 0.4: the closed form vs plain Monte-Carlo within 3 SE at two
    points, and the v_x part matters (setting v = 0 moves the loss by many SE)."""
    d, n = 2, 3
    sig = torch.tensor([[1.0, 0.25], [0.25, 0.5]], dtype=F64)

    def fam_fn(problem):
        D = problem.d + 1
        v, r, b, c, e = (sympy.Symbol(x, real=True) for x in ("v", "r", "b", "c", "e"))
        V = sympy.zeros(D, D)
        V[D - 1, 0], V[D - 1, 1], V[D - 1, D - 1] = v, -v, r
        B = sympy.zeros(D, D)
        B[:2, :2] = sympy.Matrix([[b, e], [0, b]])
        C = sympy.zeros(D, D)
        C[:2, :2] = c * sympy.eye(2)
        return {"layer0.head0.V": V, "layer0.head0.B": B, "layer0.head0.C": C}

    fam = family_from_function(fam_fn, Problem(d=d, layers=1, n=n, sigma=sig, attention="kernel", activations=("exp",)))
    data = LinearRegression(d, n, sigma=sig, task_cov="inverse", noise=0.4)
    fl = family_loss(fam, data)
    assert fl.method == "exp-one-layer" and fl.exact
    assert [s for s, _ in fl.skipped] == ["wishart", "one-layer", "wick", "expansion", "relu-one-layer",
                                          "relu-anisotropic"]
    for i, vals in enumerate(({"v": 0.5, "r": -0.6, "b": 0.4, "c": 0.5, "e": 0.2},
                              {"v": -0.8, "r": 0.9, "b": -0.3, "c": 0.6, "e": -0.3})):
        exact = fl.value(vals)
        mean, se = _mc_loss(fam, data, vals, seed=20 + i, samples=600_000)
        assert abs(exact - mean) <= 3 * se, (vals, exact, mean, se)
        assert abs(exact - fl.value(dict(vals, v=0.0))) > 10 * se


def test_exp_gp_route_equals_isotropic_hand_formula_and_refuses_infinite_label_variance():
    """fgd, exp head, GP labels with data kernel exp(β ξᵀξ'), Gaussian inputs, Σ = I, κ = bc, v_y = r,
    τ² = jitter + noise². By hand (each term E exp(ζᵀAζ/2) = det(I - A)^{-1/2} over ξ's in R^d, so the
    d×d blocks factor as a 3×3 or 2×2 determinant to the power d):
    I3 = det(I - [[0,β,κ],[β,0,κ],[κ,κ,0]])^{-d/2}, I2 = (1 - 2β - 4κ²)^{-d/2}, I0 = (1 - 4κ²)^{-d/2},
    I1 = (1 - (β+κ)²)^{-d/2}; f = r²/n((n-1)I3 + I2 + τ²I0) + 2rI1 + (1-2β)^{-d/2} + τ²."""
    from landscape.core.tasks import KernelGP

    d, n, beta, noise = 2, 4, 0.2, 0.3
    fam = get_family("fgd", Problem(d=d, layers=1, n=n, attention="kernel", activations=("exp",)))
    data = KernelGP(d, n, kernel=f"exp:{beta}", covariates="gaussian", noise=noise)
    fl = family_loss(fam, data)
    assert fl.method == "exp-gp-one-layer" and fl.exact
    tau2 = data.jitter + noise**2
    import numpy as np

    for r, b, c in ((-0.8, 0.5, 0.4), (0.5, -0.6, 0.3)):
        k = b * c
        I3 = np.linalg.det(np.eye(3) - np.array([[0, beta, k], [beta, 0, k], [k, k, 0]])) ** (-d / 2)
        I2 = (1 - 2 * beta - 4 * k**2) ** (-d / 2)
        I0 = (1 - 4 * k**2) ** (-d / 2)
        I1 = (1 - (beta + k) ** 2) ** (-d / 2)
        ref = r**2 / n * ((n - 1) * I3 + I2 + tau2 * I0) + 2 * r * I1 + (1 - 2 * beta) ** (-d / 2) + tau2
        assert fl.value({"r0": r, "b0": b, "c0": c}) == pytest.approx(ref, rel=1e-10)
    assert fl.value({"r0": 1.0, "b0": 1.0, "c0": 0.45}) == float("inf")  # 1 - 2β - 4κ² < 0
    why = ROUTES["exp-gp-one-layer"].applies(fam, KernelGP(d, n, kernel="exp", covariates="gaussian"))
    assert "β = 1 >= 1/2" in why
    assert "not Gaussian" in ROUTES["exp-gp-one-layer"].applies(fam, KernelGP(d, n, kernel=f"exp:{beta}"))


def test_exp_gp_route_matches_monte_carlo_anisotropic_with_value_covariate_part():
    """Anisotropic Σ, full score matrix, value row (v, v, r), data kernel exp(0.15 ξᵀξ'), noise 0.2: the
    closed form vs plain Monte-Carlo (GP labels sampled by Cholesky) within 3 SE."""
    from landscape.core.tasks import KernelGP

    d, n = 2, 3
    sig = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)

    def fam_fn(problem):
        D = problem.d + 1
        v, r, b, c, e = (sympy.Symbol(x, real=True) for x in ("v", "r", "b", "c", "e"))
        V = sympy.zeros(D, D)
        V[D - 1, 0], V[D - 1, 1], V[D - 1, D - 1] = v, v, r
        B = sympy.zeros(D, D)
        B[:2, :2] = sympy.Matrix([[b, e], [0, b]])
        C = sympy.zeros(D, D)
        C[:2, :2] = c * sympy.eye(2)
        return {"layer0.head0.V": V, "layer0.head0.B": B, "layer0.head0.C": C}

    fam = family_from_function(fam_fn, Problem(d=d, layers=1, n=n, sigma=sig, attention="kernel", activations=("exp",)))
    data = KernelGP(d, n, kernel="exp:0.15", sigma=sig, covariates="gaussian", noise=0.2)
    fl = family_loss(fam, data)
    assert fl.method == "exp-gp-one-layer"
    vals = {"v": 0.6, "r": -0.7, "b": 0.4, "c": 0.5, "e": 0.2}
    mean, se = _mc_loss(fam, data, vals, seed=41, samples=400_000)
    assert abs(fl.value(vals) - mean) <= 3 * se, (fl.value(vals), mean, se)
    assert abs(fl.value(vals) - fl.value(dict(vals, v=0.0))) > 10 * se


# ---------------------------------------------------------------------- Monte-Carlo routes
def _linear_kernel_family(mix: bool):
    def fam_fn(problem):
        D = problem.d + 1
        r, b, v = (sympy.Symbol(x, real=True) for x in ("r", "b", "v"))
        V = sympy.zeros(D, D)
        V[D - 1, D - 1] = r
        if mix:
            V[0, D - 1] = v  # the value writes the label into a covariate row: not label-exact
        B = sympy.zeros(D, D)
        B[: D - 1, : D - 1] = b * sympy.eye(D - 1)
        C = sympy.zeros(D, D)
        C[: D - 1, : D - 1] = sympy.eye(D - 1)
        return {"layer0.head0.V": V, "layer0.head0.B": B, "layer0.head0.C": C}

    return fam_fn


@pytest.mark.parametrize("route,mix", [("label-exact", False), ("monte-carlo", True)])
def test_monte_carlo_routes_alone_within_3_se_of_exact_one_layer_formula(route, mix):
    """One linear-kernel head on linear data: the one-layer closed form is the reference; the label-exact
    and plain Monte-Carlo routes must agree with it within 3 SE (here the exact route is skipped on purpose)."""
    d, n = 2, 4
    fam = family_from_function(_linear_kernel_family(mix), Problem(d=d, layers=1, n=n, attention="kernel",
                                                                  activations=("linear",)))
    data = LinearRegression(d, n)
    exact = ROUTES["one-layer"].build(fam, data)
    mc = ROUTES[route].build(fam, data, RouteOptions(samples=20_000, seed=3))
    assert mc.method == route and not mc.exact
    vals = {"r": -0.7, "b": 0.8, "v": 0.0}
    vals = {k: vals[k] for k in fam.names}
    assert abs(mc.value(vals) - exact.value(vals)) <= 3 * mc.standard_error(vals)


# ---------------------------------------------------------------------- selection and reporting
def test_auto_takes_first_applicable_route_and_reports_the_others():
    fam = get_family("fgd", Problem(d=2, layers=2, n=3, attention="kernel", activations=("exp",)))
    fl = family_loss(fam, samples=64)
    assert fl.method == "label-exact"
    assert dict(fl.skipped)["exp-one-layer"].startswith("the data are not LinearRegression")
    assert dict(fl.skipped)["exp-gp-one-layer"].startswith("the covariates are not Gaussian")
    assert "no exact route" in fl.description
    rep = route_report(fam, LinearRegression(2, 3))
    assert rep["label-exact"] is True and rep["monte-carlo"] is True
    assert rep["exp-one-layer"] == "not one layer with one kernel head"
    assert list(rep) == list(ROUTES)


def test_named_route_that_does_not_apply_says_why_and_route_method_must_agree():
    fam = get_family("pgd", Problem(d=2, layers=2, n=3, attention="linear"))
    with pytest.raises(ValueError, match="the exp-one-layer route does not apply.*not one layer"):
        family_loss(fam, route="exp-one-layer")
    with pytest.raises(ValueError, match="disagree"):
        family_loss(fam, route="wishart", method="wick")
    assert family_loss(fam, route="wick").method == "wick"
    assert ROUTES["wick"].applies(fam, LinearRegression(2, 3, noise=0.1)) == "the labels are noisy"
    with pytest.raises(ValueError, match="covariate shift"):
        family_loss(fam, query_sigma=torch.eye(2, dtype=F64))


def test_register_route_refuses_taken_names_and_unknown_anchor():
    dummy = Route("wishart", "x", True, lambda f, d, o: (None, "never"), lambda f, d, o, c: None)
    with pytest.raises(ValueError, match="exists already"):
        register_route(dummy)
    with pytest.raises(ValueError, match="no route named"):
        register_route(Route("never-applies", "x", True, lambda f, d, o: (None, "never"),
                             lambda f, d, o, c: None), before="nonexistent")
    assert "never-applies" not in ROUTES


def test_exp_route_stationary_points_minimum_equals_hand_minimisation():
    """The exp route is not polynomial: stationary_points runs multi-start on the closed form (not
    exhaustive, says so) and drops candidates outside the finiteness domain. Its lowest point must equal
    the minimum of the hand formula: quadratic in r for fixed κ (min C - B²/4A), then 1-D over |κ| < 1/2."""
    import numpy as np
    from scipy import optimize

    from landscape.symbolic.solve import stationary_points

    d, n = 2, 4
    fam = get_family("fgd", Problem(d=d, layers=1, n=n, attention="kernel", activations=("exp",)))
    fl = family_loss(fam, LinearRegression(d, n))
    pts = stationary_points(fl, starts=12, scale=0.5)
    assert pts.method == "multistart" and not pts.exhaustive and "not polynomial" in pts.note
    assert all(bool(fl.in_domain_fn()(torch.tensor([p.values[k] for k in fl.names], dtype=F64))) for p in pts)

    def profile(kappa):
        c0, c1, c2 = (_exp_hand(kappa, r, d, n, 0.0) for r in (0.0, 1.0, -1.0))
        A, B = (c1 + c2) / 2 - c0, (c1 - c2) / 2
        return c0 - B**2 / (4 * A)

    best = min((optimize.minimize_scalar(profile, bounds=bounds, method="bounded", options={"xatol": 1e-12})
                for bounds in ((-0.4999, -1e-6), (1e-6, 0.4999))), key=lambda r: r.fun)
    mins = [p for p in pts if p.kind in ("min", "degenerate")]
    assert mins and abs(min(p.loss for p in mins) - best.fun) <= 1e-8 * abs(best.fun)
    # copies under the B/C scaling are the same model and are merged; what remains is two models,
    # (r, κ) and (-r, -κ): distinct (e^{κs} ≠ e^{-κs}) but of equal loss, because the query law is
    # symmetric (x_q → -x_q maps one onto the other's error with y_q → -y_q)
    best_pts = [p for p in mins if abs(p.loss - best.fun) <= 1e-8 * abs(best.fun)]
    assert len(best_pts) == 2
    (p1, p2) = best_pts
    k1, k2 = (p.values["b0"] * p.values["c0"] for p in best_pts)
    assert k1 == pytest.approx(-k2, rel=1e-6) and p1.values["r0"] == pytest.approx(-p2.values["r0"], rel=1e-6)
    assert np.isfinite(best.fun) and best.fun < d  # the head helps: below the zero predictor's loss d


def test_cli_route_choices_are_the_registry():
    from landscape.cli.solve import ROUTE_CHOICES
    from landscape.symbolic.loss import METHODS

    assert ROUTE_CHOICES == METHODS == ("auto", *ROUTES)
