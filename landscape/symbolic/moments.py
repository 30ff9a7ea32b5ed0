r"""Exact Gaussian and Wishart moments as polynomials in symbolic ``n`` and ``d``.

The exact in-context losses of Ahn, Cheng, Daneshmand, Sra (2023, arXiv 2306.00297) on their
stationary families reduce, after whitening (:math:`x = \Sigma^{1/2}\xi`,
:math:`w^* = \Sigma^{-1/2}\omega`), to expectations of traces of polynomials in the sample
second-moment matrix

.. math::
    S = \frac1n \sum_{i=1}^{n} \xi_i \xi_i^\top = \frac1n W, \qquad
    W = G G^\top \sim \mathrm{Wishart}_d(n, I_d),\quad G \in \mathbb R^{d\times n},\
    G_{ij} \overset{iid}{\sim} \mathcal N(0,1),

together with the query :math:`\xi_q` and task vector :math:`\omega`, both
:math:`\mathcal N(0, I_d)` and independent of :math:`S`. This module computes those expectations
*exactly* — never by sampling — as sympy expressions in ``n`` and ``d`` (Symbols or positive
integers).

Joint trace moments of the real Wishart matrix
-----------------------------------------------
For a multiset of powers :math:`k_1,\dots,k_m \ge 0` with :math:`K = \sum_j k_j`,
:math:`\mathbb E \prod_j \operatorname{tr}(W^{k_j})` is a polynomial in ``n`` and ``d`` with
non-negative integer coefficients, and :math:`\mathbb E \prod_j \operatorname{tr}(S^{k_j})` is that
polynomial divided by :math:`n^K`. Two independent routes compute it:

* **Stein recursion** (:func:`wishart_moment`, fast). Gaussian integration by parts,
  :math:`\mathbb E[G_{ab} F(G)] = \mathbb E[\partial F/\partial G_{ab}]`, applied to
  :math:`\operatorname{tr}(W^k) = \sum_{ab} G_{ab} (W^{k-1}G)_{ab}` with :math:`P` a product of
  further traces gives

  .. math::
      \mathbb E[\operatorname{tr}(W^k) P] = \mathbb E\Big[(n+k-1)\operatorname{tr}(W^{k-1}) P
      + \sum_{p=0}^{k-2} \operatorname{tr}(W^{p})\operatorname{tr}(W^{k-1-p}) P
      + \sum_{\operatorname{tr}(W^m) \in P} 2m \operatorname{tr}(W^{k+m-1})
        \tfrac{P}{\operatorname{tr}(W^m)}\Big],

  with :math:`\operatorname{tr}(W^0) = d`. Every term has total power :math:`K-1`, so memoising on
  the sorted multiset of powers gives all moments up to order ``K`` in a number of steps bounded by
  ``K`` times the number of integer partitions of numbers :math:`\le K`.

* **Wick pairings** (:func:`wishart_moment_wick`, slow, a check). Write the traces as one
  permutation :math:`\gamma \in S_K` whose cycles are the traces; position ``a`` contributes the
  two factors :math:`G_{i_a j_a}` and :math:`G_{i_{\gamma(a)} j_a}`. Isserlis' theorem sums over
  the :math:`(2K-1)!!` perfect matchings of these :math:`2K` factors; a matching forces the paired
  row indices equal and the paired column indices equal, so it contributes
  :math:`d^{\#\text{row classes}} n^{\#\text{column classes}}`.

  For a *real* Gaussian ``G`` the matchings include pairs of two "left" or two "right" factors,
  which is why the real moments are **not** the complex-Wishart permutation sum
  :math:`\sum_{\sigma\in S_K} d^{c(\gamma\sigma^{-1})} n^{c(\sigma)}`. For example
  :math:`\mathbb E\operatorname{tr}(W^2) = nd(n+d+1)` (real) against :math:`nd(n+d)` (complex), and
  :math:`\mathbb E\operatorname{tr}(W)^2 = nd(nd+2)` against :math:`nd(nd+1)`. The one-layer loss
  :math:`d - 2ad + a^2 d(n+d+1)/n` of Ahn et al. (Theorem 1) needs the real value.

Gaussian polynomials
--------------------
:func:`gaussian_expectation` takes the expectation of any sympy polynomial in i.i.d. standard
Gaussian scalars monomial by monomial (Isserlis: :math:`\mathbb E x^{2k} = (2k-1)!!`, odd
moments vanish), which serves fixed numeric ``d, n`` and checks the Wishart routes on explicit
matrix entries.

Losses on Ahn et al.'s families
-------------------------------
With :math:`w_0 = 0` and :math:`w_{l+1} = w_l - a_l\nabla R(w_l)`,
:math:`R(w) = \frac1{2n}\sum_i (w^\top\xi_i - y_i)^2`, :math:`y_i = \omega^\top\xi_i`, one has
:math:`w_L = (I - \prod_l (I - a_l S))\omega` and the query error
:math:`\xi_q^\top w_L - \omega^\top \xi_q = -\xi_q^\top \prod_l (I - a_l S)\,\omega`. Averaging over
the independent :math:`\xi_q, \omega` first,
:math:`\mathbb E_{\xi_q,\omega}(\xi_q^\top T \omega)^2 = \operatorname{tr}(T T^\top)`, and all
factors are commuting polynomials in :math:`S`, so the loss is
:math:`\mathbb E\operatorname{tr}\prod_l (I - a_l S)^2` (:func:`preconditioned_gd_loss`), an instance
of :func:`expected_trace_poly`.
"""

from __future__ import annotations

import itertools
import numbers
from functools import lru_cache
from typing import Sequence, Union

import sympy

__all__ = [
    "wishart_moment",
    "wishart_moment_coefficients",
    "wishart_moment_wick",
    "gaussian_expectation",
    "expected_trace_poly",
    "expected_trace_product",
    "expected_trace_poly_matrix",
    "preconditioned_gd_loss",
]

SizeLike = Union[int, sympy.Expr]
"""A dimension: a positive Python/sympy integer or a sympy expression (usually a Symbol)."""

_WICK_MAX_TOTAL_POWER = 7
"""Largest total power accepted by :func:`wishart_moment_wick` ((2K-1)!! matchings)."""

_Coeffs = dict[tuple[int, int], int]


# ----------------------------------------------------------------------------- validation


def _check_powers(powers: Sequence[int]) -> tuple[int, ...]:
    """Validate a multiset of trace powers and return it sorted in decreasing order.

    Raises:
        TypeError: if ``powers`` is not a sequence (a single int, a string, a set, ...).
        ValueError: if an entry is not a non-negative integer.
    """
    if isinstance(powers, (str, bytes)) or not isinstance(powers, Sequence):
        raise TypeError(
            "powers must be a sequence of non-negative integers such as (2, 1, 1); "
            f"got {type(powers).__name__}"
        )
    out = []
    for k in powers:
        if isinstance(k, bool) or not isinstance(k, (numbers.Integral, sympy.Integer)):
            raise ValueError(
                f"powers must be non-negative integers; got {k!r} ({type(k).__name__}) in {powers!r}"
            )
        k = int(k)
        if k < 0:
            raise ValueError(f"powers must be non-negative integers; got {k} in {powers!r}")
        out.append(k)
    return tuple(sorted(out, reverse=True))


def _check_size(value: SizeLike, name: str) -> sympy.Expr:
    """Validate a dimension ``n`` or ``d`` and return it as a sympy object.

    Raises:
        TypeError: if ``value`` is neither an integer nor a sympy expression.
        ValueError: if ``value`` is a non-positive integer or a non-integer number.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive integer or a sympy expression; got a bool")
    if isinstance(value, numbers.Integral):
        value = sympy.Integer(int(value))
    if not isinstance(value, sympy.Expr):
        raise TypeError(
            f"{name} must be a positive integer or a sympy expression; got {type(value).__name__}"
        )
    if value.is_number:
        if not value.is_Integer or value <= 0:
            raise ValueError(f"{name} must be a positive integer when numeric; got {value}")
    return value


def _check_symbol(s: sympy.Symbol) -> sympy.Symbol:
    """Raise TypeError unless ``s`` is a sympy Symbol (the matrix variable of a polynomial)."""
    if not isinstance(s, sympy.Symbol):
        raise TypeError(f"the polynomial variable must be a sympy Symbol; got {type(s).__name__}")
    return s


def _univariate_coeffs(p: sympy.Expr, s: sympy.Symbol) -> dict[int, sympy.Expr]:
    """Coefficients ``{k: c_k}`` of ``p = sum_k c_k s^k`` (coefficients may hold other symbols).

    Raises:
        ValueError: if ``p`` is not a polynomial in ``s``.
    """
    p = sympy.sympify(p)
    try:
        poly = sympy.Poly(p, s)
    except sympy.PolynomialError as exc:
        raise ValueError(f"expected a polynomial in {s}; got {p} ({exc})") from None
    if any(s in c.free_symbols for c in poly.coeffs()):  # e.g. sqrt(s) parsed as a generator
        raise ValueError(f"expected a polynomial in {s}; got {p}")
    return {int(m[0]): c for m, c in poly.terms()}


# ------------------------------------------------------------------ Stein recursion (fast)


def _add_into(acc: _Coeffs, poly: _Coeffs, factor: int, n_shift: int = 0, d_shift: int = 0) -> None:
    """``acc += factor * n^n_shift * d^d_shift * poly`` on coefficient dicts."""
    for (i, j), c in poly.items():
        key = (i + n_shift, j + d_shift)
        acc[key] = acc.get(key, 0) + factor * c


def _moment_of(powers: Sequence[int]) -> tuple[_Coeffs, int]:
    """Coefficients of the moment of the positive powers, and the number of zero powers.

    A zero power is :math:`\\operatorname{tr}(W^0) = d`, returned separately as a power of ``d``.
    """
    zeros = sum(1 for k in powers if k == 0)
    positive = tuple(sorted((k for k in powers if k > 0), reverse=True))
    return _raw_moment(positive), zeros


@lru_cache(maxsize=None)
def _raw_moment(powers: tuple[int, ...]) -> _Coeffs:
    """:math:`\\mathbb E\\prod_j \\operatorname{tr}(W^{k_j})` for sorted positive powers, as
    ``{(i, j): c}`` meaning :math:`\\sum c\\, n^i d^j` (Stein recursion, see module docstring)."""
    if not powers:
        return {(0, 0): 1}
    k, rest = powers[0], powers[1:]
    acc: _Coeffs = {}
    # (n + k - 1) tr(W^{k-1}) P
    poly, zeros = _moment_of(rest + (k - 1,))
    _add_into(acc, poly, 1, n_shift=1, d_shift=zeros)
    if k > 1:
        _add_into(acc, poly, k - 1, d_shift=zeros)
    # sum_{p=0}^{k-2} tr(W^p) tr(W^{k-1-p}) P
    for p in range(k - 1):
        poly, zeros = _moment_of(rest + (p, k - 1 - p))
        _add_into(acc, poly, 1, d_shift=zeros)
    # sum over the other factors tr(W^m) of P: 2m tr(W^{k+m-1}) P / tr(W^m)
    for idx, m in enumerate(rest):
        poly, zeros = _moment_of(rest[:idx] + rest[idx + 1 :] + (k + m - 1,))
        _add_into(acc, poly, 2 * m, d_shift=zeros)
    return {key: c for key, c in acc.items() if c != 0}


def wishart_moment_coefficients(powers: Sequence[int]) -> dict[tuple[int, int], int]:
    r"""Integer coefficients of the unnormalised real-Wishart trace moment.

    .. math::
        \mathbb E \prod_j \operatorname{tr}(W^{k_j}) = \sum_{(i,j)} c_{ij}\, n^i d^j,
        \qquad W \sim \mathrm{Wishart}_d(n, I_d).

    Args:
        powers: the multiset :math:`(k_1,\dots,k_m)` of non-negative integer powers; order does not
            matter and ``0`` stands for :math:`\operatorname{tr}(I_d) = d`.

    Returns:
        A new dict ``{(i, j): c_ij}`` (exponent of ``n``, exponent of ``d``) with non-zero integer
        coefficients.

    Raises:
        TypeError: if ``powers`` is not a sequence.
        ValueError: if a power is negative or not an integer.
    """
    powers = _check_powers(powers)
    poly, zeros = _moment_of(powers)
    out: _Coeffs = {}
    _add_into(out, poly, 1, d_shift=zeros)
    return out


@lru_cache(maxsize=4096)
def _moment_expr(powers: tuple[int, ...], n: sympy.Expr, d: sympy.Expr, normalized: bool) -> sympy.Expr:
    coeffs = wishart_moment_coefficients(powers)
    numerator = sympy.Add(*(c * n**i * d**j for (i, j), c in coeffs.items()))
    total = sum(powers)
    if normalized and total > 0:
        return sympy.factor(numerator / n**total)
    return sympy.factor(numerator)


def wishart_moment(
    powers: Sequence[int], n: SizeLike, d: SizeLike, *, normalized: bool = True
) -> sympy.Expr:
    r"""Exact joint trace moment of a real Wishart matrix (Stein recursion).

    .. math::
        \mathbb E \prod_{j=1}^{m} \operatorname{tr}(S^{k_j}),\qquad
        S = \tfrac1n \sum_{i=1}^n \xi_i\xi_i^\top = \tfrac1n W,\quad
        \xi_i \overset{iid}{\sim}\mathcal N(0, I_d),

    the moments behind the exact losses of Ahn et al. (2023, arXiv 2306.00297, §2 whitening). For
    example :math:`\mathbb E\operatorname{tr} S = d`, :math:`\mathbb E\operatorname{tr} S^2 = d(n+d+1)/n`,
    :math:`\mathbb E\operatorname{tr}(W^3) = nd(n^2+3nd+d^2+3n+3d+4)`. The recursion is derived in
    the module docstring; results are memoised on the sorted powers, so order ``K = 8`` costs a few
    milliseconds after the first call.

    Args:
        powers: multiset :math:`(k_1,\dots,k_m)` of non-negative integer powers; ``0`` stands for
            :math:`\operatorname{tr}(I_d) = d`; the empty sequence gives ``1``.
        n: number of samples — a sympy expression (usually a Symbol) or a positive integer.
        d: dimension — a sympy expression or a positive integer.
        normalized: if True (default) the moment of :math:`S = W/n`, i.e. the Wishart moment
            divided by :math:`n^{K}`, :math:`K=\sum_j k_j`; if False the moment of :math:`W`.

    Returns:
        A factored sympy expression (a rational number when ``n`` and ``d`` are integers).

    Raises:
        TypeError: if ``powers`` is not a sequence, or ``n``/``d`` are not integers or sympy
            expressions.
        ValueError: if a power is negative or not an integer, or ``n``/``d`` is a non-positive
            number.
    """
    powers = _check_powers(powers)
    n = _check_size(n, "n")
    d = _check_size(d, "d")
    return _moment_expr(powers, n, d, bool(normalized))


# -------------------------------------------------------------- Wick pairings (independent)


def _perfect_matchings(items: tuple[int, ...]):
    """Yield every perfect matching of ``items`` (even length) as a list of pairs."""
    if not items:
        yield []
        return
    first = items[0]
    for idx in range(1, len(items)):
        partner = items[idx]
        remaining = items[1:idx] + items[idx + 1 :]
        for rest in _perfect_matchings(remaining):
            yield [(first, partner)] + rest


def _count_classes(size: int, pairs: list[tuple[int, int]]) -> int:
    """Number of connected components of ``range(size)`` under the union of ``pairs``."""
    parent = list(range(size))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    classes = size
    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
            classes -= 1
    return classes


def wishart_moment_wick(
    powers: Sequence[int], n: SizeLike, d: SizeLike, *, normalized: bool = True
) -> sympy.Expr:
    r"""The same moment as :func:`wishart_moment`, by summing Isserlis pairings (slow check).

    With :math:`\gamma\in S_K` the permutation whose cycles are the traces, position ``a``
    contributes the entries :math:`G_{i_a j_a}` ("left" factor) and :math:`G_{i_{\gamma(a)} j_a}`
    ("right" factor). Each of the :math:`(2K-1)!!` perfect matchings of the :math:`2K` factors
    identifies the row indices and the column indices of every pair, and contributes
    :math:`d^{\#\text{row classes}}\, n^{\#\text{column classes}}` (Isserlis / Wick's theorem for
    real Gaussians; left–left and right–right pairs included). Independent of the Stein recursion,
    it exists to test it.

    Args:
        powers: multiset of non-negative integer powers, total :math:`K \le 7`.
        n: number of samples (sympy expression or positive integer).
        d: dimension (sympy expression or positive integer).
        normalized: moment of :math:`S = W/n` (True) or of :math:`W` (False).

    Returns:
        A factored sympy expression.

    Raises:
        TypeError: as :func:`wishart_moment`.
        ValueError: as :func:`wishart_moment`, or if the total power exceeds 7 (the matching sum
            would have more than 135135 terms).
    """
    powers = _check_powers(powers)
    n = _check_size(n, "n")
    d = _check_size(d, "d")
    total = sum(powers)
    if total > _WICK_MAX_TOTAL_POWER:
        raise ValueError(
            f"wishart_moment_wick sums (2K-1)!! matchings; total power K={total} exceeds the "
            f"accepted maximum {_WICK_MAX_TOTAL_POWER}. Use wishart_moment for larger K."
        )
    zeros = sum(1 for k in powers if k == 0)
    # gamma: cycles of consecutive positions, one cycle per positive power
    gamma = [0] * total
    start = 0
    for k in powers:
        for a in range(k):
            gamma[start + a] = start + (a + 1) % k
        start += k
    # factor 2a = left (row i_a, column j_a); factor 2a+1 = right (row i_gamma(a), column j_a)
    row = [a if side == 0 else gamma[a] for a in range(total) for side in (0, 1)]
    col = [a for a in range(total) for _ in (0, 1)]
    counts: dict[tuple[int, int], int] = {}
    for matching in _perfect_matchings(tuple(range(2 * total))):
        key = (
            _count_classes(total, [(col[x], col[y]) for x, y in matching]),
            _count_classes(total, [(row[x], row[y]) for x, y in matching]),
        )
        counts[key] = counts.get(key, 0) + 1
    numerator = d**zeros * sympy.Add(*(c * n**i * d**j for (i, j), c in counts.items()))
    if normalized and total > 0:
        return sympy.factor(numerator / n**total)
    return sympy.factor(numerator)


# ------------------------------------------------------------------- Gaussian polynomials


@lru_cache(maxsize=None)
def _gaussian_even_moment(e: int) -> int:
    """:math:`\\mathbb E x^e` for :math:`x\\sim\\mathcal N(0,1)`: ``(e-1)!!`` for even ``e``, else 0."""
    if e % 2:
        return 0
    out = 1
    for j in range(e - 1, 0, -2):
        out *= j
    return out


def gaussian_expectation(
    poly: sympy.Expr | sympy.Poly, variables: Sequence[sympy.Symbol]
) -> sympy.Expr:
    r"""Exact expectation of a polynomial in i.i.d. standard Gaussian scalars (Isserlis).

    .. math::
        \mathbb E \prod_i x_i^{e_i} = \prod_i \mathbb E x_i^{e_i},\qquad
        \mathbb E x^{2k} = (2k-1)!!,\quad \mathbb E x^{2k+1} = 0,

    applied monomial by monomial through ``sympy.Poly``. Symbols not listed in ``variables`` are
    constants (they stay in the coefficients).

    Args:
        poly: a sympy expression (or ``Poly``) that is a polynomial in ``variables``.
        variables: the independent :math:`\mathcal N(0,1)` scalars; distinct sympy Symbols.

    Returns:
        The expectation, a sympy expression in the remaining symbols (expanded).

    Raises:
        TypeError: if a variable is not a sympy Symbol.
        ValueError: if ``variables`` is empty or repeats a symbol, or ``poly`` is not a polynomial
            in them.
    """
    variables = tuple(variables)
    if not variables:
        raise ValueError("variables must name at least one Gaussian symbol")
    for v in variables:
        _check_symbol(v)
    if len(set(variables)) != len(variables):
        raise ValueError(f"variables must be distinct; got {variables}")
    expr = poly.as_expr() if isinstance(poly, sympy.Poly) else sympy.sympify(poly)
    try:
        p = sympy.Poly(expr, *variables)
    except sympy.PolynomialError as exc:
        raise ValueError(f"expected a polynomial in {variables}; got {expr} ({exc})") from None
    var_set = set(variables)
    terms = []
    for monom, coeff in p.terms():
        if coeff.free_symbols & var_set:
            raise ValueError(f"expected a polynomial in {variables}; got {expr}")
        weight = 1
        for e in monom:
            weight *= _gaussian_even_moment(int(e))
            if weight == 0:
                break
        if weight:
            terms.append(weight * coeff)
    return sympy.expand(sympy.Add(*terms))


# ------------------------------------------------------------------ traces of polynomials


def expected_trace_poly(p: sympy.Expr, s: sympy.Symbol, n: SizeLike, d: SizeLike) -> sympy.Expr:
    r"""Exact :math:`\mathbb E\operatorname{tr} p(S)` for a polynomial ``p`` and :math:`S = W/n`.

    .. math::
        p(s) = \sum_k c_k s^k \ \Longrightarrow\ \mathbb E\operatorname{tr} p(S)
        = c_0 d + \sum_{k\ge1} c_k\, \mathbb E\operatorname{tr}(S^k),

    the form of the whitened L-layer loss of Ahn et al. (2023) on their families (see
    :func:`preconditioned_gd_loss`).

    Args:
        p: sympy expression, polynomial in ``s``; coefficients may contain other symbols
            (step sizes ``a_l``, ``n``, ``d``, ...).
        s: the sympy Symbol standing for the matrix ``S``.
        n: number of samples (sympy expression or positive integer).
        d: dimension (sympy expression or positive integer).

    Returns:
        The expectation, expanded (a polynomial in the coefficient symbols whose coefficients are
        rational functions of ``n`` and ``d``).

    Raises:
        TypeError: if ``s`` is not a Symbol, or ``n``/``d`` have the wrong type.
        ValueError: if ``p`` is not a polynomial in ``s`` or ``n``/``d`` are non-positive numbers.
    """
    _check_symbol(s)
    n = _check_size(n, "n")
    d = _check_size(d, "d")
    coeffs = _univariate_coeffs(p, s)
    return sympy.expand(sympy.Add(*(c * wishart_moment((k,), n, d) for k, c in coeffs.items())))


def expected_trace_product(
    polys: Sequence[sympy.Expr], s: sympy.Symbol, n: SizeLike, d: SizeLike
) -> sympy.Expr:
    r"""Exact :math:`\mathbb E\prod_j \operatorname{tr} p_j(S)` for polynomials :math:`p_j`.

    By multilinearity,
    :math:`\mathbb E\prod_j \operatorname{tr} p_j(S) = \sum_{k_1,\dots,k_m}
    \prod_j c^{(j)}_{k_j}\ \mathbb E\prod_j \operatorname{tr}(S^{k_j})` with
    :math:`\operatorname{tr}(S^0) = d` (joint moments from :func:`wishart_moment`). Needed for
    second moments of traces, e.g. the variance of an empirical loss.

    Args:
        polys: the polynomials :math:`p_1,\dots,p_m` in ``s`` (a non-empty sequence).
        s: the sympy Symbol standing for ``S``.
        n: number of samples (sympy expression or positive integer).
        d: dimension (sympy expression or positive integer).

    Returns:
        The expectation, expanded.

    Raises:
        TypeError: if ``polys`` is not a sequence, ``s`` is not a Symbol, or ``n``/``d`` have the
            wrong type.
        ValueError: if ``polys`` is empty, an entry is not a polynomial in ``s``, or ``n``/``d`` are
            non-positive numbers.
    """
    if isinstance(polys, (str, bytes)) or not isinstance(polys, Sequence):
        raise TypeError(f"polys must be a sequence of sympy polynomials; got {type(polys).__name__}")
    if not polys:
        raise ValueError("polys must contain at least one polynomial")
    _check_symbol(s)
    n = _check_size(n, "n")
    d = _check_size(d, "d")
    coeff_lists = [list(_univariate_coeffs(p, s).items()) for p in polys]
    terms = []
    for combo in itertools.product(*coeff_lists):
        powers = tuple(k for k, _ in combo)
        coeff = sympy.Mul(*(c for _, c in combo))
        terms.append(coeff * wishart_moment(powers, n, d))
    return sympy.expand(sympy.Add(*terms))


def expected_trace_poly_matrix(
    p: sympy.Expr,
    s: sympy.Symbol,
    n: SizeLike,
    d: SizeLike,
    m: sympy.Expr | sympy.MatrixBase | int,
) -> sympy.Expr:
    r"""Exact :math:`\mathbb E\operatorname{tr}(p(S) M)` for a fixed matrix ``M``.

    The law of :math:`S` is invariant under :math:`S\mapsto OSO^\top` for every orthogonal ``O``,
    so :math:`\mathbb E\,p(S)` commutes with every orthogonal matrix and is therefore a multiple
    :math:`c I_d` of the identity; taking traces, :math:`c = \mathbb E\operatorname{tr} p(S)/d`.
    Hence

    .. math::
        \mathbb E\operatorname{tr}(p(S) M) = \operatorname{tr}(M)\,
        \frac{\mathbb E\operatorname{tr} p(S)}{d},

    which is what remains of an anisotropic problem after whitening when a fixed matrix (a task
    covariance, or a preconditioner off the family) sits *once* inside the trace (Ahn et al. 2023).
    It does not cover several fixed matrices interleaved with powers of ``S``.

    Args:
        p: polynomial in ``s`` (coefficients may hold other symbols).
        s: the sympy Symbol standing for ``S``.
        n: number of samples (sympy expression or positive integer).
        d: dimension (sympy expression or positive integer).
        m: either a square sympy Matrix ``M`` (then ``d`` must be the integer ``M.rows`` or a
            symbol) or directly the value of :math:`\operatorname{tr}(M)` (a sympy expression or
            number), which allows symbolic ``d``.

    Returns:
        The expectation, expanded.

    Raises:
        TypeError: as :func:`expected_trace_poly`, or if ``m`` is neither a matrix nor a scalar.
        ValueError: as :func:`expected_trace_poly`, or if ``M`` is not square or its size differs
            from a numeric ``d``.
    """
    _check_symbol(s)
    n = _check_size(n, "n")
    d = _check_size(d, "d")
    if isinstance(m, sympy.MatrixBase):
        if m.rows != m.cols:
            raise ValueError(f"M must be square; got shape {m.shape}")
        if d.is_number and m.rows != int(d):
            raise ValueError(f"M has size {m.rows} but d = {d}")
        trace_m = m.trace()
    elif isinstance(m, (numbers.Number, sympy.Expr)) and not isinstance(m, bool):
        trace_m = sympy.sympify(m)
    else:
        raise TypeError(
            f"m must be a square sympy Matrix or the scalar tr(M); got {type(m).__name__}"
        )
    return sympy.expand(trace_m * expected_trace_poly(p, s, n, d) / d)


def preconditioned_gd_loss(
    step_sizes: Sequence[sympy.Expr | float | int], n: SizeLike, d: SizeLike
) -> sympy.Expr:
    r"""Exact in-context loss of ``L`` steps of whitened preconditioned GD (Ahn et al. 2023).

    On the family :math:`A_l = a_l\Sigma^{-1}` with :math:`w^*\sim\mathcal N(0,\Sigma^{-1})`
    (Theorem 3; Theorem 1 when ``L = 1`` and :math:`\Sigma = I`), the transformer prediction is
    :math:`x_q^\top w_L` with :math:`w_0 = 0`, :math:`w_{l+1} = w_l - A_l\nabla R(w_l)`. After
    whitening the query error is :math:`-\xi_q^\top\prod_l(I - a_l S)\,\omega` and

    .. math::
        f(a_0,\dots,a_{L-1}) = \mathbb E\operatorname{tr}\prod_{l}(I - a_l S)^2 ,

    e.g. :math:`f(a) = d - 2ad + a^2 d(n+d+1)/n` for one layer, minimised at
    :math:`a^* = n/(n+d+1)`.

    Args:
        step_sizes: :math:`(a_0,\dots,a_{L-1})`, sympy expressions or numbers, ``L >= 1``.
        n: number of context examples (sympy expression or positive integer).
        d: dimension (sympy expression or positive integer).

    Returns:
        The loss, expanded: a polynomial in the step sizes with coefficients rational in ``n, d``.

    Raises:
        TypeError: if ``step_sizes`` is not a sequence or ``n``/``d`` have the wrong type.
        ValueError: if ``step_sizes`` is empty or ``n``/``d`` are non-positive numbers.
    """
    if isinstance(step_sizes, (str, bytes)) or not isinstance(step_sizes, Sequence):
        raise TypeError(
            f"step_sizes must be a sequence of sympy expressions or numbers; "
            f"got {type(step_sizes).__name__}"
        )
    if len(step_sizes) == 0:
        raise ValueError("step_sizes must hold at least one step size (L >= 1 layers)")
    s = sympy.Dummy("s")
    p = sympy.Mul(*((1 - sympy.sympify(a) * s) ** 2 for a in step_sizes))
    return expected_trace_poly(sympy.expand(p), s, n, d)
