"""Tests for the exact Gaussian/Wishart moment calculus (landscape.symbolic.moments)."""

from __future__ import annotations

import math

import pytest
import sympy
import torch

from landscape.tolerances import MC_NUM_SE, RTOL
from landscape.symbolic.moments import (
    expected_trace_poly,
    expected_trace_poly_matrix,
    expected_trace_product,
    gaussian_expectation,
    preconditioned_gd_loss,
    wishart_moment,
    wishart_moment_coefficients,
    wishart_moment_wick,
)

n, d, a, b, s = sympy.symbols("n d a b s")
F64 = torch.float64


def _partitions(total: int, largest: int | None = None):
    """All partitions of ``total`` as non-increasing tuples."""
    largest = total if largest is None else largest
    if total == 0:
        yield ()
        return
    for k in range(min(total, largest), 0, -1):
        for rest in _partitions(total - k, k):
            yield (k,) + rest


def _same(x: sympy.Expr, y: sympy.Expr) -> bool:
    return sympy.simplify(sympy.expand(x - y)) == 0


def _assert_within_se(samples: torch.Tensor, exact: float) -> None:
    mean = samples.mean().item()
    se = samples.std().item() / math.sqrt(samples.numel())
    assert abs(mean - exact) <= MC_NUM_SE * se, (mean, exact, se, (mean - exact) / se)


# ------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize(
    "powers, closed_form",
    [
        ((1,), n * d),
        ((2,), n * d * (n + d + 1)),
        ((1, 1), n * d * (n * d + 2)),
        ((3,), n * d * (n**2 + d**2 + 3 * n * d + 3 * n + 3 * d + 4)),
        ((0,), d),
        ((0, 0, 1), d**3 * n),
        ((), sympy.Integer(1)),
    ],
)
def test_real_wishart_closed_forms(powers, closed_form):
    # E tr W = nd; E tr W^2 = sum_i E W_ii^2 + sum_{i!=j} E W_ij^2 = d(n^2+2n) + d(d-1)n.
    assert _same(wishart_moment(powers, n, d, normalized=False), closed_form)
    total = sum(powers)
    assert _same(wishart_moment(powers, n, d), closed_form / n**total)


def test_not_the_complex_wishart_values():
    # The complex-Gaussian permutation sum gives nd(n+d) and nd(nd+1); real data differ.
    assert not _same(wishart_moment((2,), n, d, normalized=False), n * d * (n + d))
    assert not _same(wishart_moment((1, 1), n, d, normalized=False), n * d * (n * d + 1))


@pytest.mark.parametrize("k", range(1, 9))
def test_d1_is_chi_square_moment(k):
    # d = 1: W = chi^2_n, E W^k = n (n+2) ... (n+2k-2).
    expected = sympy.Mul(*(n + 2 * j for j in range(k)))
    assert _same(wishart_moment((k,), n, 1, normalized=False), expected)


@pytest.mark.parametrize("powers", [(8,), (5, 3), (2, 2, 2, 2), (4, 2, 1, 1), (1,) * 8])
def test_n1_rank_one_moments(powers):
    # n = 1: W = g g^T, tr W^k = |g|^{2k}, so E prod tr W^{k_j} = E |g|^{2K} = d(d+2)...(d+2K-2).
    total = sum(powers)
    expected = sympy.Mul(*(d + 2 * j for j in range(total)))
    assert _same(wishart_moment(powers, 1, d, normalized=False), expected)


@pytest.mark.parametrize("powers", [(3,), (2, 1), (4, 2), (3, 3, 2)])
def test_symmetric_in_n_and_d(powers):
    # tr (G G^T)^k = tr (G^T G)^k for k >= 1.
    m = wishart_moment(powers, n, d, normalized=False)
    assert _same(m, m.subs({n: d, d: n}, simultaneous=True))


def test_numeric_sizes_equal_substituted_symbolic():
    sym = wishart_moment((3, 2, 1), n, d)
    num = wishart_moment((3, 2, 1), 4, 3)
    assert isinstance(num, sympy.Rational)
    assert num == sym.subs({n: 4, d: 3})


def test_coefficients_match_expression():
    coeffs = wishart_moment_coefficients((2, 1))
    expr = sympy.Add(*(c * n**i * d**j for (i, j), c in coeffs.items()))
    assert _same(expr, wishart_moment((1, 2), n, d, normalized=False))
    assert all(isinstance(c, int) and c > 0 for c in coeffs.values())


# ---------------------------------------------------------------- independent routes


@pytest.mark.parametrize("powers", [p for K in range(1, 6) for p in _partitions(K)])
def test_stein_recursion_equals_wick_pairings(powers):
    assert _same(
        wishart_moment(powers, n, d, normalized=False),
        wishart_moment_wick(powers, n, d, normalized=False),
    )


@pytest.mark.parametrize("powers", [(6,), (3, 2, 1), (2, 0), (1, 0, 0)])
def test_stein_recursion_equals_wick_pairings_more(powers):
    assert _same(wishart_moment(powers, n, d), wishart_moment_wick(powers, n, d))


def _explicit_traces(rows: int, cols: int):
    """Symbolic Gaussian matrix G (rows x cols) and the traces tr(W^k) of W = G G^T as Polys."""
    entries = sympy.symbols(f"g0:{rows * cols}")
    gens = [sympy.Poly(e, *entries) for e in entries]
    g = [[gens[i * cols + j] for j in range(cols)] for i in range(rows)]
    zero = sympy.Poly(0, *entries)
    w = [[sum((g[i][t] * g[k][t] for t in range(cols)), zero) for k in range(rows)] for i in range(rows)]
    traces = {}
    power = w
    for k in range(1, 5):
        traces[k] = sum((power[i][i] for i in range(rows)), zero)
        power = [
            [sum((power[i][t] * w[t][k2] for t in range(rows)), zero) for k2 in range(rows)]
            for i in range(rows)
        ]
    return entries, traces


@pytest.mark.parametrize("rows, cols", [(2, 3), (3, 2)])
def test_recursion_equals_isserlis_on_explicit_entries(rows, cols):
    entries, traces = _explicit_traces(rows, cols)
    for powers in [(1,), (2,), (1, 1), (3,), (2, 1), (4,), (2, 2), (3, 1)]:
        product = traces[powers[0]]
        for k in powers[1:]:
            product = product * traces[k]
        exact = gaussian_expectation(product, entries)
        assert exact == wishart_moment(powers, cols, rows, normalized=False), powers


# ----------------------------------------------------------------- Gaussian polynomials


def test_gaussian_expectation_isserlis():
    x, y, z = sympy.symbols("x y z")
    assert gaussian_expectation(x**4, [x]) == 3
    assert gaussian_expectation(x**8 * y**2, [x, y]) == 105
    assert gaussian_expectation(x**3 * y**2 + x * y, [x, y]) == 0
    # (x + y)/sqrt(2) ~ N(0,1): E (x + y)^{2k} = 2^k (2k-1)!!
    for k in range(1, 5):
        assert gaussian_expectation((x + y) ** (2 * k), [x, y]) == 2**k * sympy.factorial2(2 * k - 1)
    # symbols outside `variables` are constants
    assert _same(gaussian_expectation((a * x + b * z + 1) ** 2, [x, z]), a**2 + b**2 + 1)
    assert gaussian_expectation(sympy.Poly(x**2 * z**2, x, z), [x, z]) == 1


def test_gaussian_expectation_bilinear_form_identity():
    # E_{q, w} (q^T T w)^2 = tr(T T^T) for a fixed T, q and w independent N(0, I_2).
    q = sympy.symbols("q0:2")
    w = sympy.symbols("w0:2")
    t = sympy.Matrix([[1, 2], [-3, sympy.Rational(1, 2)]])
    form = (sympy.Matrix([q]) * t * sympy.Matrix(w))[0, 0]
    assert gaussian_expectation(form**2, q + w) == (t * t.T).trace()


# --------------------------------------------------------------------------- Monte Carlo


@pytest.fixture(scope="module")
def wishart_samples():
    gen = torch.Generator().manual_seed(20230601)
    dim, samples = 3, 4
    g = torch.randn(200_000, dim, samples, generator=gen, dtype=F64)
    return dim, samples, g @ g.transpose(-1, -2) / samples


@pytest.mark.parametrize("powers", [(1,), (2,), (1, 1), (3,), (2, 1), (4,)])
def test_monte_carlo_moments(wishart_samples, powers):
    dim, samples, big_s = wishart_samples
    values = torch.ones(big_s.shape[0], dtype=F64)
    for k in powers:
        values = values * torch.linalg.matrix_power(big_s, k).diagonal(dim1=-2, dim2=-1).sum(-1)
    exact = float(wishart_moment(powers, samples, dim))
    _assert_within_se(values, exact)


def test_monte_carlo_trace_product(wishart_samples):
    dim, samples, big_s = wishart_samples
    p, q = (1 - s / 2) ** 2, s**2 - 3 * s + 2
    exact = float(expected_trace_product([p, q], s, samples, dim))
    eye = torch.eye(dim, dtype=F64)
    tr_p = ((eye - big_s / 2) @ (eye - big_s / 2)).diagonal(dim1=-2, dim2=-1).sum(-1)
    tr_q = (big_s @ big_s - 3 * big_s + 2 * eye).diagonal(dim1=-2, dim2=-1).sum(-1)
    _assert_within_se(tr_p * tr_q, exact)


def test_monte_carlo_trace_with_matrix(wishart_samples):
    dim, samples, big_s = wishart_samples
    m = torch.tensor([[2.0, 1.0, 0.0], [-1.0, 0.5, 3.0], [0.0, 0.0, 1.5]], dtype=F64)
    p = s**2 - s
    exact = float(expected_trace_poly_matrix(p, s, samples, dim, sympy.Matrix(m.tolist())))
    values = ((big_s @ big_s - big_s) @ m).diagonal(dim1=-2, dim2=-1).sum(-1)
    _assert_within_se(values, exact)


# ---------------------------------------------------------------- polynomials in S


def test_expected_trace_poly_linearity():
    p = 3 + a * s - b * s**3
    expected = 3 * d + a * wishart_moment((1,), n, d) - b * wishart_moment((3,), n, d)
    assert _same(expected_trace_poly(p, s, n, d), expected)
    assert _same(expected_trace_product([p], s, n, d), expected_trace_poly(p, s, n, d))


def test_expected_trace_product_multilinearity():
    p, q = 1 - a * s, s**2 + 2
    expected = (
        wishart_moment((0, 2), n, d)
        + 2 * wishart_moment((0, 0), n, d)
        - a * wishart_moment((1, 2), n, d)
        - 2 * a * wishart_moment((1, 0), n, d)
    )
    assert _same(expected_trace_product([p, q], s, n, d), expected)


def test_trace_with_matrix_explicit_entries():
    # d = 2, n = 2: E tr(S^2 M) from explicit Gaussian entries equals tr(M) E tr(S^2) / d.
    g = sympy.Matrix(2, 2, sympy.symbols("h0:4"))
    m = sympy.Matrix([[1, 2], [3, 5]])
    big_s = g * g.T / 2
    exact = gaussian_expectation(sympy.expand((big_s * big_s * m).trace()), list(g))
    assert exact == expected_trace_poly_matrix(s**2, s, 2, 2, m)
    assert exact == expected_trace_poly_matrix(s**2, s, 2, 2, m.trace())
    symbolic = expected_trace_poly_matrix(s**2, s, n, d, sympy.Symbol("t"))
    assert _same(symbolic, sympy.Symbol("t") * (n + d + 1) / n)


# -------------------------------------------------- Ahn et al. preconditioned-GD losses


def test_one_layer_loss_and_minimiser():
    loss = preconditioned_gd_loss([a], n, d)
    assert _same(loss, d - 2 * a * d + a**2 * d * (n + d + 1) / n)
    (a_star,) = sympy.solve(sympy.diff(loss, a), a)
    assert _same(a_star, n / (n + d + 1))
    assert _same(loss, expected_trace_poly((1 - a * s) ** 2, s, n, d))


def _gd_squared_errors(
    step_sizes: list[float], dim: int, samples: int, sigma: torch.Tensor, batch: int, gen: torch.Generator
) -> torch.Tensor:
    """Squared query errors of preconditioned GD (A_l = a_l Sigma^{-1}) on x ~ N(0, Sigma),
    w* ~ N(0, Sigma^{-1}), y = w*^T x, by explicit gradient steps (no Wishart algebra)."""
    evals, evecs = torch.linalg.eigh(sigma)
    root = evecs @ torch.diag(evals.sqrt()) @ evecs.T
    inv_root = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    sigma_inv = inv_root @ inv_root
    x = torch.randn(batch, samples, dim, generator=gen, dtype=F64) @ root
    x_q = torch.randn(batch, dim, generator=gen, dtype=F64) @ root
    w_star = torch.randn(batch, dim, generator=gen, dtype=F64) @ inv_root
    y = (x @ w_star.unsqueeze(-1)).squeeze(-1)
    w = torch.zeros(batch, dim, dtype=F64)
    for step in step_sizes:
        residual = (x @ w.unsqueeze(-1)).squeeze(-1) - y
        grad = (x.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1) / samples
        w = w - step * grad @ sigma_inv.T
    return ((x_q * w).sum(-1) - (x_q * w_star).sum(-1)) ** 2


@pytest.mark.parametrize("anisotropic", [False, True])
def test_two_layer_loss_monte_carlo(anisotropic):
    dim, samples, steps = 3, 4, [0.3, 0.5]
    sigma = torch.eye(dim, dtype=F64)
    if anisotropic:
        sigma = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.25]], dtype=F64)
    gen = torch.Generator().manual_seed(7 + int(anisotropic))
    errors = _gd_squared_errors(steps, dim, samples, sigma, 200_000, gen)
    a0, a1 = sympy.symbols("a0 a1")
    loss = preconditioned_gd_loss([a0, a1], n, d)
    exact = float(loss.subs({a0: steps[0], a1: steps[1], n: samples, d: dim}))
    _assert_within_se(errors, exact)
    numeric = preconditioned_gd_loss([sympy.Rational(3, 10), sympy.Rational(1, 2)], samples, dim)
    assert abs(float(numeric) - exact) <= RTOL[F64] * abs(exact)


def test_two_layer_loss_structure():
    loss = preconditioned_gd_loss([a, b], n, d)
    # symmetric in the step sizes (the factors commute) and equal to d at a = b = 0
    assert _same(loss, loss.subs({a: b, b: a}, simultaneous=True))
    assert loss.subs({a: 0, b: 0}) == d
    # a zero second step leaves the one-layer loss
    assert _same(loss.subs(b, 0), preconditioned_gd_loss([a], n, d))


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("powers", [(-1,), (2, -3), (2.5,), (1.0,), ("2",), (True,)])
def test_bad_powers_raise_value_error(powers):
    with pytest.raises(ValueError, match="non-negative integers"):
        wishart_moment(powers, n, d)
    with pytest.raises(ValueError, match="non-negative integers"):
        wishart_moment_wick(powers, n, d)


def test_bad_arguments():
    with pytest.raises(TypeError, match="sequence"):
        wishart_moment(3, n, d)  # type: ignore[arg-type]
    for bad in (0, -2, sympy.Rational(1, 2)):
        with pytest.raises(ValueError, match="positive integer"):
            wishart_moment((1,), bad, d)
    with pytest.raises(TypeError, match="positive integer or a sympy expression"):
        wishart_moment((1,), n, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exceeds"):
        wishart_moment_wick((8,), n, d)
    with pytest.raises(ValueError, match="polynomial"):
        expected_trace_poly(sympy.sqrt(s), s, n, d)
    with pytest.raises(ValueError, match="polynomial"):
        expected_trace_poly(sympy.exp(s), s, n, d)
    with pytest.raises(TypeError, match="Symbol"):
        expected_trace_poly(s**2, 2, n, d)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        expected_trace_product([], s, n, d)
    with pytest.raises(ValueError, match="size"):
        expected_trace_poly_matrix(s, s, n, 3, sympy.eye(2))
    with pytest.raises(ValueError, match="square"):
        expected_trace_poly_matrix(s, s, n, d, sympy.ones(2, 3))
    with pytest.raises(ValueError, match="at least one"):
        preconditioned_gd_loss([], n, d)
    x = sympy.Symbol("x")
    with pytest.raises(ValueError, match="polynomial"):
        gaussian_expectation(sympy.exp(x), [x])
    with pytest.raises(ValueError, match="distinct"):
        gaussian_expectation(x**2, [x, x])
    with pytest.raises(ValueError, match="at least one"):
        gaussian_expectation(x**2, [])
