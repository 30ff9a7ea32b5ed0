r"""Generic exact route: expand the prediction in the entries of the data, then Isserlis.

For a fixed (small) numeric ``d`` and ``n`` every linear-attention model — any number of layers,
any ``P, Q`` (entries polynomial in the family symbols) — has a prediction that is a polynomial in
the entries of the prompt. Writing :math:`x_j = \Sigma^{1/2}\xi_j`, :math:`w = \Sigma_w^{1/2}\eta`,
:math:`y_j = w^\top x_j + \sigma\varepsilon_j` with independent standard Gaussian scalars
:math:`\xi_{jk}, \eta_k, \varepsilon_j` (or :math:`\xi_j` uniform on the sphere), the squared error
:math:`(\mathrm{TF}(Z_0) - y_q)^2` is a polynomial in these scalars whose expectation is taken
monomial by monomial:

* Gaussian: :math:`\mathbb E\prod_k \xi_k^{e_k} = \prod_k (e_k - 1)!!` (odd moments vanish);
* sphere :math:`S^{d-1}`: :math:`\mathbb E\prod_k \xi_k^{e_k} = \prod_k (e_k-1)!! \,/\, \prod_{i<K/2}(d+2i)`,
  :math:`K = \sum_k e_k`, for every token separately (tokens are independent).

This is exponential in ``d·n·L`` and serves as the independent check of the structured routes
(:mod:`landscape.symbolic.whitened` and :mod:`landscape.symbolic.one_layer`) at small sizes
(Ahn et al. 2023, arXiv 2306.00297, is the source of the model).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Mapping

import sympy
import torch
from sympy.polys.domains import QQ, RR
from sympy.polys.rings import ring

from landscape.core.model import ModelSpec
from landscape.core.tasks import LinearRegression, sqrtm_psd
from landscape.symbolic.one_layer import linear_heads

__all__ = ["expansion_loss", "EXPANSION_MAX_MONOMIALS"]

EXPANSION_MAX_MONOMIALS = 400_000
"""Refuse expansions whose prediction polynomial exceeds this many monomials (time and memory)."""


def _double_factorial(e: int) -> int:
    out = 1
    for j in range(e - 1, 0, -2):
        out *= j
    return out


def _rationalise(M: torch.Tensor) -> tuple[list[list[object]], bool]:
    """Entries of a float matrix as exact rationals when they are (close to) simple fractions."""
    rows, exact = [], True
    for row in M.tolist():
        out = []
        for v in row:
            fr = Fraction(v).limit_denominator(10_000)
            if abs(float(fr) - v) <= 1e-14 * max(1.0, abs(v)):
                out.append(sympy.Rational(fr.numerator, fr.denominator))
            else:
                out.append(sympy.Float(v))
                exact = False
        rows.append(out)
    return rows, exact


def _matmul(A: list[list], B: list[list], zero: object) -> list[list]:
    cols = len(B[0]) if B else 0
    out = []
    for row in A:
        nz = [(k, a) for k, a in enumerate(row) if a]
        out.append([sum((a * B[k][j] for k, a in nz), zero) for j in range(cols)])
    return out


def expansion_loss(
    blocks: Mapping[str, sympy.Matrix],
    spec: ModelSpec,
    data: LinearRegression,
    symbols: tuple[sympy.Symbol, ...] = (),
) -> sympy.Expr:
    r"""Exact loss :math:`\mathbb E(\mathrm{TF}(Z_0) - y_q)^2` by expanding in the data entries (see module doc).

    Args:
        blocks: parameter name → sympy matrix (entries polynomial in ``symbols``); missing names are zero.
        spec: architecture (linear heads, or kernel heads with the linear activation).
        data: :class:`~landscape.core.tasks.LinearRegression` prompts (Gaussian or sphere covariates, any
            :math:`\Sigma`, :math:`\Sigma_w`, label noise).
        symbols: the free symbols of the blocks.

    Returns:
        The loss, a polynomial in ``symbols`` (rational coefficients when :math:`\Sigma`, :math:`\Sigma_w`
        and the blocks are rational, floats otherwise).

    Raises:
        ValueError: non-linear kernel heads, ``d`` mismatch, non-polynomial blocks, or an expansion
            beyond :data:`EXPANSION_MAX_MONOMIALS` terms.
        TypeError: ``data`` is not :class:`~landscape.core.tasks.LinearRegression`.
    """
    if not isinstance(data, LinearRegression):
        raise TypeError(f"the expansion route needs LinearRegression prompts, got {type(data).__name__}")
    d, n, D = spec.d, data.n, spec.token_dim
    if data.d != d or D != d + 1:
        raise ValueError(f"data has d = {data.d} but the model has d = {d} (token_dim {D})")
    zeros = {k: sympy.zeros(D, D) for k in _keys(spec)}
    full = {**zeros, **{k: sympy.Matrix(v) for k, v in blocks.items()}}
    layers = []
    for l in range(spec.layers):
        heads = linear_heads(spec, full, l)
        if heads is None:
            raise ValueError("the expansion route needs polynomial attention: linear heads or the linear kernel")
        layers.append(heads)

    # numbers: Σ^{1/2}, Σ_w^{1/2}, noise
    half = torch.eye(d, dtype=torch.float64) if data.sigma is None else sqrtm_psd(data.sigma.double())
    tc = data.task_covariance()
    whalf = torch.eye(d, dtype=torch.float64) if tc is None else sqrtm_psd(tc.double())
    half_r, ex1 = _rationalise(half)
    whalf_r, ex2 = _rationalise(whalf)
    noise = sympy.nsimplify(data.noise) if data.noise else sympy.Integer(0)
    block_numbers = [a for _, hs in enumerate(layers) for P, Q in hs for M in (P, Q) for e in M
                     for a in sympy.sympify(e).atoms(sympy.Number)]
    exact = ex1 and ex2 and all(a.is_Rational for a in block_numbers) and noise.is_Rational
    dom = QQ if exact else RR

    xi_names = [f"_xi{j}_{k}" for j in range(n + 1) for k in range(d)]
    eta_names = [f"_eta{k}" for k in range(d)]
    eps_names = [f"_eps{j}" for j in range(n + 1)] if data.noise else []
    sym_names = [s.name for s in symbols]
    R, *gens = ring(xi_names + eta_names + eps_names + sym_names, dom)
    n_xi, n_eta, n_eps = len(xi_names), len(eta_names), len(eps_names)
    xi = [gens[j * d:(j + 1) * d] for j in range(n + 1)]
    eta = gens[n_xi:n_xi + n_eta]
    eps = gens[n_xi + n_eta:n_xi + n_eta + n_eps]

    def conv(e: sympy.Expr) -> object:
        e = sympy.sympify(e)
        if e == 0:
            return R.zero
        try:
            return R.from_expr(e.xreplace({s: sympy.Symbol(s.name) for s in symbols}))
        except Exception as exc:  # sympy raises several types for non-polynomial input
            raise ValueError(f"the expansion route needs blocks polynomial in the family symbols; got {e}") from exc

    x = [[sum((dom.convert(half_r[a][b]) * xi[j][b] for b in range(d)), R.zero) for a in range(d)]
         for j in range(n + 1)]
    w = [sum((dom.convert(whalf_r[a][b]) * eta[b] for b in range(d)), R.zero) for a in range(d)]
    y = [sum((w[a] * x[j][a] for a in range(d)), R.zero) for j in range(n + 1)]
    if data.noise:
        y = [y[j] + dom.convert(noise) * eps[j] for j in range(n + 1)]
    # Z as rows x columns
    Z = [[x[j][a] for j in range(n + 1)] for a in range(d)]
    Z.append([y[j] for j in range(n)] + [R.zero])
    inv_n = dom.convert(sympy.Rational(1, n))
    conv_layers = [[([[conv(e) for e in P.row(i)] for i in range(D)], [[conv(e) for e in Q.row(i)] for i in range(D)])
                    for P, Q in hs] for hs in layers]
    for l, hs in enumerate(conv_layers):
        last = l == len(conv_layers) - 1
        Zs = [row[:n] for row in Z]
        ZsT = [[Zs[a][i] for a in range(D)] for i in range(n)]
        if last:
            target = Z[D - 1][n]
            for P, Q in hs:
                qcol = _matmul(Q, [[Z[a][n]] for a in range(D)], R.zero)  # (D, 1)
                scores = _matmul(ZsT, qcol, R.zero)  # (n, 1)
                prow = _matmul([P[D - 1]], Zs, R.zero)  # (1, n)
                target = target + inv_n * sum((prow[0][i] * scores[i][0] for i in range(n)), R.zero)
            pred = -target
        else:
            upd = None
            for P, Q in hs:
                scores = _matmul(ZsT, _matmul(Q, Z, R.zero), R.zero)
                u = _matmul(_matmul(P, Zs, R.zero), scores, R.zero)
                upd = u if upd is None else [[a + b for a, b in zip(r1, r2)] for r1, r2 in zip(upd, u)]
            Z = [[Z[a][j] + inv_n * upd[a][j] for j in range(n + 1)] for a in range(D)]
            size = sum(len(e) for row in Z for e in row)
            if size > EXPANSION_MAX_MONOMIALS:
                raise ValueError(f"expansion too large ({size} monomials after layer {l}); use a smaller d, n or L")
    if len(pred) > EXPANSION_MAX_MONOMIALS // 4:
        raise ValueError(f"expansion too large ({len(pred)} monomials in the prediction); use a smaller d, n or L")
    err = pred - y[n]
    sq = err * err

    # expectation, monomial by monomial
    sphere = data.covariates == "sphere"
    acc: dict[tuple[int, ...], object] = {}
    for monom, coeff in sq.terms():
        weight = sympy.Integer(1)
        for j in range(n + 1):
            es = monom[j * d:(j + 1) * d]
            if any(e % 2 for e in es):
                weight = 0
                break
            wj = 1
            for e in es:
                wj *= _double_factorial(e)
            if sphere:
                K = sum(es)
                den = 1
                for i in range(K // 2):
                    den *= d + 2 * i
                weight *= sympy.Rational(wj, den)
            else:
                weight *= wj
        if weight == 0:
            continue
        for e in monom[n_xi:n_xi + n_eta + n_eps]:
            if e % 2:
                weight = 0
                break
            weight *= _double_factorial(e)
        if weight == 0:
            continue
        key = monom[n_xi + n_eta + n_eps:]
        acc[key] = acc.get(key, 0) + dom.convert(weight) * coeff
    out = sympy.Integer(0)
    for key, c in acc.items():
        term = dom.to_sympy(c)
        for s, e in zip(symbols, key):
            if e:
                term = term * s**e
        out += term
    return sympy.expand(out)


def _keys(spec: ModelSpec) -> list[str]:
    from landscape.core.model import param_shapes

    return list(param_shapes(spec))
