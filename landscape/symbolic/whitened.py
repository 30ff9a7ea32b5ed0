r"""Structured route: whitening + Wishart moments, symbolic in ``d`` and ``n``, any number of layers.

Ahn, Cheng, Daneshmand, Sra (2023, arXiv 2306.00297), Lemma 1 and Theorems 3–4. With Gaussian
covariates :math:`x = \Sigma^{1/2}\xi` the change of basis :math:`Z = T\zeta`,
:math:`T = \mathrm{diag}(\Sigma^{1/2}, 1)` maps linear-attention weights to
:math:`P' = T^{-1}PT`, :math:`Q' = T^\top Q T` acting on whitened prompts. When every head of every
layer is, in whitened coordinates,

.. math::
    P'_{lh} = \mathrm{diag}(\beta_{lh} I_d,\ \pi_{lh}), \qquad Q'_{lh} = -\mathrm{diag}(\alpha_{lh} I_d,\ 0)

(``pgd``: :math:`\beta = 0,\ \pi = 1,\ \alpha = a_l`; ``pgd-relaxed``: :math:`\beta = b_l`; ``pgd-identity``
only when :math:`\Sigma = I`), the layer acts on the whitened covariates and labels as

.. math::
    \Xi_{l+1} = (I - e_l S_l)\,\Xi_l,\qquad v_{l+1} = (I - c_l S_l)\,v_l,\qquad
    e_l = \sum_h \alpha_{lh}\beta_{lh},\quad c_l = \sum_h \alpha_{lh}\pi_{lh},

with :math:`S_l = \frac1n \Xi_l M \Xi_l^\top`, :math:`v_0 = \omega = \Sigma^{1/2}w` and labels
:math:`Y_l = v_l^\top\Xi_0 - (\omega^\top\xi_q) e_q^\top` (the query slot stays zero in the data part).
Since :math:`\Xi_l = g_l(S)\Xi_0` with :math:`g_0 = 1`, :math:`g_{l+1}(s) = g_l(s)(1 - e_l g_l(s)^2 s)`,
every :math:`S_l = g_l(S)^2 S` commutes with :math:`S = S_0`, the error is
:math:`\mathrm{TF} - y_q = -v_L^\top\xi_q`, and by rotation invariance of :math:`S`

.. math::
    f = \frac{\operatorname{tr}(\Sigma\Sigma_w)}{d}\ \mathbb E\operatorname{tr}\prod_{l<L}\big(1 - c_l\, g_l(S)^2 S\big)^2 ,

a polynomial in the family symbols whose coefficients are the Wishart moments
:math:`\mathbb E\operatorname{tr}(S^k)` — exact polynomials in ``n`` and ``d``
(:func:`landscape.symbolic.moments.expected_trace_poly`). For ``pgd`` with
:math:`w \sim N(0, \Sigma^{-1})` the prefactor is 1 and :math:`f = \mathbb E\operatorname{tr}\prod_l (I - a_l S)^2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Sequence

import sympy
import torch

from landscape.core.model import ModelSpec, param_shapes
from landscape.core.tasks import LinearRegression, sqrtm_psd
from landscape.symbolic.moments import expected_trace_poly, wishart_moment
from landscape.symbolic.one_layer import linear_heads
from landscape._checks import check_int

__all__ = ["WhitenedLayer", "whitened_structure", "wishart_loss", "wishart_noise_loss", "clean_floats", "D_SYMBOL",
           "N_SYMBOL", "NOISE_SYMBOL"]

D_SYMBOL = sympy.Symbol("d", positive=True, integer=True)
"""The symbolic covariate dimension of general (``d``-free) loss expressions."""
N_SYMBOL = sympy.Symbol("n", positive=True, integer=True)
"""The symbolic context length of general loss expressions."""
NOISE_SYMBOL = sympy.Symbol("sigma_eps2", nonnegative=True)
"""The symbolic label-noise variance :math:`s^2` of general loss expressions (noisy data only)."""


def noise_variance(std: float) -> sympy.Expr:
    """The label-noise variance as an exact rational when the std is a simple fraction (``0.5 → 1/4``)."""
    v = _simple_rational(float(std))
    return sympy.expand(v * v)

_CLEAN_RTOL = 1e-11
"""Float coefficients this close (relative) to a fraction with denominator <= 1000 are taken to be it
(round-off of Σ^{1/2}Σ^{-1}Σ^{1/2} is ~1e-15; a generic float lands that close with probability ~1e-5)."""

_STRUCTURE_RTOL = 1e-9
"""Relative size below which a whitened block entry counts as zero (Σ^{±1/2} are floats)."""


@dataclass(frozen=True)
class WhitenedLayer:
    """One layer in whitened coordinates: covariate gain ``e`` and label gain ``c`` (see module doc)."""

    e: sympy.Expr
    c: sympy.Expr


def _simple_rational(v: float) -> sympy.Number:
    fr = Fraction(v).limit_denominator(1000)
    if abs(float(fr) - v) <= _CLEAN_RTOL * max(1.0, abs(v)):
        return sympy.Rational(fr.numerator, fr.denominator)
    return sympy.Float(v)


def clean_floats(expr: sympy.Expr, symbols: Sequence[sympy.Symbol]) -> sympy.Expr:
    """Replace float coefficients of a polynomial within 1e-11 (relative) of a fraction ``p/q``, ``q <= 1000``.

    Whitened blocks are computed with floating :math:`\\Sigma^{\\pm 1/2}`; their exact values are
    rational multiples of the symbols (e.g. :math:`\\Sigma^{1/2}\\Sigma^{-1}\\Sigma^{1/2} = I`).
    """
    expr = sympy.expand(sympy.sympify(expr))
    if not expr.atoms(sympy.Float):
        return expr
    syms = [s for s in symbols if s in expr.free_symbols]
    if not syms:
        return _simple_rational(float(expr)) if expr.is_number else expr
    try:
        poly = sympy.Poly(expr, *syms)
    except sympy.PolynomialError:
        return expr
    out = sympy.Integer(0)
    for monom, c in poly.terms():
        c = _simple_rational(float(c)) if c.is_number else c
        out += c * sympy.Mul(*(s**e for s, e in zip(syms, monom)))
    return out


def _is_small(expr: sympy.Expr, symbols: Sequence[sympy.Symbol], scale: float) -> bool | None:
    """True if every coefficient of the polynomial ``expr`` is below ``scale * rtol``; None if not a polynomial."""
    expr = sympy.expand(expr)
    if expr == 0:
        return True
    syms = [s for s in symbols if s in expr.free_symbols]
    try:
        coeffs = sympy.Poly(expr, *syms).coeffs() if syms else [expr]
    except sympy.PolynomialError:
        return None
    try:
        return all(abs(float(c)) <= _STRUCTURE_RTOL * scale for c in coeffs)
    except TypeError:  # a coefficient with symbols outside ``symbols``
        return None


def _max_coeff(M: sympy.Matrix, symbols: Sequence[sympy.Symbol]) -> float:
    best = 1.0
    for e in M:
        e = sympy.expand(e)
        if e == 0:
            continue
        syms = [s for s in symbols if s in e.free_symbols]
        try:
            cs = sympy.Poly(e, *syms).coeffs() if syms else [e]
            best = max(best, *(abs(float(c)) for c in cs))
        except (sympy.PolynomialError, TypeError):
            continue
    return best


def whitened_structure(
    blocks: Mapping[str, sympy.Matrix],
    spec: ModelSpec,
    sigma: torch.Tensor | None,
    symbols: Sequence[sympy.Symbol],
) -> tuple[WhitenedLayer, ...] | None:
    r"""Detect the whitened-isotropic sparse form (module docstring) and return the layer gains.

    Args:
        blocks: the family's parameter blocks (missing names are zero).
        spec: the architecture (linear heads, or kernel heads with the linear activation).
        sigma: covariate covariance (``None`` = identity).
        symbols: the family symbols.

    Returns:
        One :class:`WhitenedLayer` per layer, or ``None`` when some head is not of that form.
    """
    d, D = spec.d, spec.token_dim
    if D != d + 1:
        return None
    full = {k: sympy.Matrix(blocks.get(k, sympy.zeros(*shape))) for k, shape in param_shapes(spec).items()}
    if sigma is None:
        T = Tinv = sympy.eye(D)
    else:
        half = sqrtm_psd(sigma.double(), 0.5)
        ihalf = sqrtm_psd(sigma.double(), -0.5)
        T, Tinv = sympy.eye(D), sympy.eye(D)
        T[:d, :d] = sympy.Matrix(half.tolist())
        Tinv[:d, :d] = sympy.Matrix(ihalf.tolist())
    out = []
    for l in range(spec.layers):
        heads = linear_heads(spec, full, l)
        if heads is None:
            return None
        e_l, c_l = sympy.Integer(0), sympy.Integer(0)
        for P, Q in heads:
            Pw = (Tinv * P * T).applyfunc(sympy.expand)
            Qw = (T.T * Q * T).applyfunc(sympy.expand)
            scale = max(_max_coeff(Pw, symbols), _max_coeff(Qw, symbols))
            beta, pi, alpha = Pw[0, 0], Pw[d, d], -Qw[0, 0]
            checks = [Pw[:d, :d] - beta * sympy.eye(d), Pw[:d, d], Pw[d, :d],
                      Qw[:d, :d] + alpha * sympy.eye(d), Qw[:d, d], Qw[d, :d], sympy.Matrix([[Qw[d, d]]])]
            for M in checks:
                for entry in M:
                    ok = _is_small(entry, symbols, scale)
                    if not ok:
                        return None
            beta, pi, alpha = (clean_floats(v, symbols) for v in (beta, pi, alpha))
            e_l += sympy.expand(alpha * beta)
            c_l += sympy.expand(alpha * pi)
        out.append(WhitenedLayer(sympy.expand(e_l), sympy.expand(c_l)))
    return tuple(out)


def _expected_trace(p: sympy.Poly, n: int | sympy.Expr, d: int | sympy.Expr) -> sympy.Expr:
    r""":math:`\mathbb E\,\mathrm{tr}\,p(S)` for a ``Poly`` in ``(s, gains...)`` (first generator ``s``),
    :math:`S` the Wishart matrix: moment by moment for numeric ``n, d`` (fast), else symbolically."""
    s, gens = p.gens[0], p.gens[1:]
    if sympy.sympify(n).is_number and sympy.sympify(d).is_number:
        acc: dict[tuple[int, ...], sympy.Expr] = {}
        for monom, c in p.terms():
            k, rest = monom[0], monom[1:]
            acc[rest] = acc.get(rest, 0) + c * wishart_moment((k,), n, d)
        return sympy.Add(*(c * sympy.Mul(*(g**e for g, e in zip(gens, m))) for m, c in acc.items() if c != 0))
    return expected_trace_poly(p.as_expr(), s, n, d)


def _gain_ring(layers: Sequence[WhitenedLayer], s: sympy.Symbol) -> tuple[tuple[sympy.Symbol, ...], sympy.Poly, sympy.Poly]:
    """The generators ``(s, gains...)`` of the layers' polynomials, and ``1`` and ``s`` as polynomials in them."""
    syms = sorted(set().union(*(sympy.sympify(x).free_symbols for lay in layers for x in (lay.e, lay.c))),
                  key=lambda t: t.name)
    gens = (s, *syms)
    return gens, sympy.Poly(1, *gens), sympy.Poly(s, *gens)


def wishart_polynomial(layers: Sequence[WhitenedLayer], s: sympy.Symbol) -> sympy.Poly:
    r""":math:`\prod_l (1 - c_l g_l(s)^2 s)^2` with :math:`g_{l+1} = g_l(1 - e_l g_l^2 s)`, :math:`g_0 = 1`.

    Returns:
        A ``sympy.Poly`` in ``s`` and the symbols of the gains (fast sparse arithmetic).
    """
    gens, one, S = _gain_ring(layers, s)
    g = one
    p = one
    for layer in layers:
        g2 = g * g
        factor = one - sympy.Poly(layer.c, *gens) * g2 * S
        p = p * factor * factor
        if sympy.sympify(layer.e) != 0:
            g = g * (one - sympy.Poly(layer.e, *gens) * g2 * S)
    return p


def wishart_loss(
    layers: Sequence[WhitenedLayer],
    n: int | sympy.Expr,
    d: int | sympy.Expr,
    trace_ratio: sympy.Expr | float = 1,
) -> sympy.Expr:
    r"""Exact loss :math:`\frac{\operatorname{tr}(\Sigma\Sigma_w)}{d}\mathbb E\operatorname{tr}\prod_l(1 - c_l g_l(S)^2S)^2`.

    Args:
        layers: whitened layer gains (:func:`whitened_structure`).
        n: context length (integer or symbol).
        d: dimension (integer or symbol).
        trace_ratio: :math:`\operatorname{tr}(\Sigma\Sigma_w)/d` (1 for :math:`w\sim N(0,\Sigma^{-1})`).

    Returns:
        The expanded loss: a polynomial in the family symbols (coefficients rational in ``n, d``).
    """
    s = sympy.Dummy("s")
    p = wishart_polynomial(layers, s)
    return sympy.expand(sympy.sympify(trace_ratio) * _expected_trace(p, n, d))


def wishart_noise_loss(layers: Sequence[WhitenedLayer], n: int | sympy.Expr, d: int | sympy.Expr,
                       noise_var: sympy.Expr) -> sympy.Expr:
    r"""What label noise :math:`\varepsilon_i \sim N(0, s^2)` (sources and query) adds to :func:`wishart_loss`.

    The noise row :math:`N_l` of the sources evolves as :math:`N_{l+1} = N_l(I - \frac{c_l}{n}\Xi_l^\top\Xi_l)`,
    so by push-through :math:`N_l\Xi_0^\top = \varepsilon^\top\Xi_0^\top\prod_{j<l}(I - c_jg_j(S)^2S)`, and with the
    query :math:`\xi_{q,l} = g_l(S)\xi_q` the noise part of the prediction is
    :math:`-\frac1n\varepsilon^\top\Xi_0^\top B(S)\xi_q`,
    :math:`B(s) = \sum_l c_l\,g_l(s)^2\prod_{j<l}(1 - c_jg_j(s)^2s)`. Terms odd in :math:`\varepsilon` vanish, so

    .. math::
        f_{\text{noisy}} - f = s^2\Big(1 + \frac1n\,\mathbb E\operatorname{tr}\big(B(S)^2S\big)\Big)

    (for ``pgd``, :math:`B(s) = (1 - \prod_l(1 - a_ls))/s`; at one layer :math:`s^2(1 + a^2d/n)`).

    Args:
        layers: whitened layer gains (:func:`whitened_structure`).
        n, d: context length and dimension (integers or symbols).
        noise_var: :math:`s^2`.

    Returns:
        The added loss, expanded.
    """
    s = sympy.Dummy("s")
    gens, one, S = _gain_ring(layers, s)
    g = one
    prod = one
    B = sympy.Poly(0, *gens)
    for layer in layers:
        g2 = g * g
        c = sympy.Poly(layer.c, *gens)
        B = B + c * g2 * prod
        prod = prod * (one - c * g2 * S)
        if sympy.sympify(layer.e) != 0:
            g = g * (one - sympy.Poly(layer.e, *gens) * g2 * S)
    et = _expected_trace(B * B * S, n, d)
    return sympy.expand(noise_var * (1 + et / n))


def trace_ratio(data: LinearRegression) -> tuple[sympy.Expr, bool]:
    r""":math:`\operatorname{tr}(\Sigma\Sigma_w)/d` and whether :math:`\Sigma^{1/2}\Sigma_w\Sigma^{1/2} = I` (then it is 1 for every ``d``)."""
    d = data.d
    sig = torch.eye(d, dtype=torch.float64) if data.sigma is None else data.sigma.double()
    tc = data.task_covariance()
    sw = torch.eye(d, dtype=torch.float64) if tc is None else tc.double()
    half = sqrtm_psd(sig, 0.5)
    omega = half @ sw @ half
    iso = bool((omega - torch.eye(d, dtype=torch.float64)).abs().max() <= 1e-9)
    if iso:
        return sympy.Integer(1), True
    return _simple_rational(float(torch.trace(omega)) / d), False


@dataclass(frozen=True)
class OptimalGD:
    r"""The optimal loss of ``L`` steps of (whitened) preconditioned GD (:func:`optimal_gd_loss`).

    Attributes:
        loss: the minimum over the step sizes, an exact rational (``None`` if not realisable).
        lower_bound: the minimum over all polynomials :math:`p` of degree ``<= L`` with :math:`p(0) = 1`
            (always exact and rational; equals ``loss`` when the optimal polynomial has ``L`` real roots).
        polynomial: that optimal :math:`p(s)` (sympy expression in ``s``).
        steps: the step sizes :math:`a_l` (the reciprocals of the roots of :math:`p`; ascending, exact
            algebraic: rationals, radicals or ``CRootOf``) when realisable; any order of the layers.
        realisable: whether the optimal polynomial factors as :math:`\prod_l(1 - a_ls)` with real :math:`a_l`.
    """

    loss: sympy.Expr | None
    lower_bound: sympy.Expr
    polynomial: sympy.Expr
    steps: tuple[sympy.Expr, ...]
    realisable: bool


def optimal_gd_loss(L: int, n: int, d: int, ratio: sympy.Expr = 1, noise_var: sympy.Expr = 0) -> OptimalGD:
    r"""Exact optimal loss of ``L``-step preconditioned GD (the ``pgd`` family minimum), any ``L``.

    On the family the loss is :math:`r\,\mathbb E\operatorname{tr}p(S)^2 + s^2\big(1 + \frac1n\mathbb E\operatorname{tr}
    (q(S)^2S)\big)` with :math:`p(s) = \prod_l(1 - a_ls) = \sum_k c_ks^k`, :math:`c_0 = 1`,
    :math:`q = (1 - p)/s` (:func:`wishart_loss`, :func:`wishart_noise_loss`; :math:`r = \operatorname{tr}(\Sigma\Sigma_w)/d`).
    It is a **quadratic form** :math:`c^\top Hc` in the coefficients, with
    :math:`H_{jk} = r\,m_{j+k} + \frac{s^2}{n}m_{j+k-1}[j,k\ge1]` (+ :math:`s^2` in :math:`H_{00}`),
    :math:`m_k = \mathbb E\operatorname{tr}S^k` exact Wishart moments. Over all :math:`c` with :math:`c_0 = 1` the minimum is
    :math:`H_{00} - h^\top H_{11}^{-1}h` — an exact rational. The minimiser is realisable by real step sizes
    iff :math:`p` has ``L`` real roots (checked exactly by Sturm sequences; for the noiseless case it is
    the kernel polynomial of the Wishart spectral measure, whose roots are real and positive), and then
    that value *is* the family minimum.

    Args:
        L: number of layers (steps), ``>= 1``.
        n, d: context length and dimension (positive integers).
        ratio: :math:`r` (1 for :math:`w^*\sim N(0,\Sigma^{-1})`).
        noise_var: label-noise variance :math:`s^2`.

    Returns:
        :class:`OptimalGD`.

    Raises:
        ValueError: ``L``, ``n`` or ``d`` not a positive integer.
    """
    for name, v in (("L", L), ("n", n), ("d", d)):
        check_int(name, v, minimum=1)
    ratio, s2 = sympy.sympify(ratio), sympy.sympify(noise_var)
    m = [sympy.Integer(d)] + [wishart_moment((k,), n, d) for k in range(1, 2 * L + 1)]
    H = sympy.zeros(L + 1, L + 1)
    for j in range(L + 1):
        for k in range(L + 1):
            H[j, k] = ratio * m[j + k] + (s2 / n * m[j + k - 1] if j >= 1 and k >= 1 else 0)
    H[0, 0] += s2
    h = H[1:, 0]
    H11 = H[1:, 1:]
    c = H11.LUsolve(-h)
    best = sympy.nsimplify(sympy.simplify(H[0, 0] + (h.T * c)[0, 0]))
    s, a = sympy.Symbol("s"), sympy.Symbol("a")
    p = sympy.Poly([*(c[i] for i in reversed(range(L))), 1], s)
    # the steps are the roots of a^L p(1/a) = a^L + c_1 a^(L-1) + ... + c_L
    rev = sympy.Poly([1, *(c[i] for i in range(L))], a)
    roots = rev.real_roots() if c[L - 1] != 0 else []
    realisable = len(roots) == L
    steps = tuple(roots) if realisable else ()
    return OptimalGD(best if realisable else None, best, p.as_expr(), steps, realisable)


def pgd_structure(layers: Sequence[WhitenedLayer]) -> tuple[sympy.Symbol, ...] | None:
    """The step-size symbols when every layer is pure preconditioned GD (``e_l = 0``, ``c_l`` a distinct symbol)."""
    out = []
    for lay in layers:
        c = sympy.sympify(lay.c)
        if sympy.sympify(lay.e) != 0 or not isinstance(c, sympy.Symbol) or c in out:
            return None
        out.append(c)
    return tuple(out)
