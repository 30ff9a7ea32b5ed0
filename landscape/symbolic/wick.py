r"""Exact route for sparse linear attention with an arbitrary (non-whitenable) covariance: Wick pairings.

Ahn, Cheng, Daneshmand, Sra (2023, arXiv 2306.00297), Lemma 1. When every head reads covariates only
and writes the label row only — :math:`P_{lh} = \mathrm{diag}(0_{d\times d}, \pi_{lh})`,
:math:`Q_{lh} = -\mathrm{diag}(A_{lh}, 0)` — the covariates never change and, with
:math:`\hat S = \frac1n\sum_{i\le n} x_i x_i^\top` and :math:`A_l = \sum_h \pi_{lh}A_{lh}`, the label row is
:math:`Y_l = v_l^\top X` (query slot aside) with :math:`v_{l+1}^\top = v_l^\top(I - \hat S A_l)`, :math:`v_0 = w`.
The error is :math:`-v_L^\top x_q`, so for :math:`x\sim N(0,\Sigma)`, :math:`w\sim N(0,\Sigma_w)`

.. math::
    f = \mathbb E\operatorname{tr}\big(\Sigma_w R\,\Sigma R^\top\big),\qquad R = \prod_{l=0}^{L-1}(I - \hat S A_l)
      = \sum_{T} (-1)^{|T|}\,\hat S A_{t_1}\hat S A_{t_2}\cdots\hat S A_{t_k},

a sum of traces of words :math:`\operatorname{tr}(M_0\hat S M_1\hat S\cdots M_{K-1}\hat S)` with fixed matrices
:math:`M_j` (products of :math:`\Sigma, \Sigma_w, A_l, A_l^\top`). By Isserlis' theorem over the ``2K``
covariate vectors of such a word,

.. math::
    \mathbb E\operatorname{tr}(M_0\hat S\cdots M_{K-1}\hat S) = \sum_{\text{pairings }\pi} n^{c(\pi) - K}\,
    \prod_{\text{cycles}}\operatorname{tr}(M_{j_1}^{\pm}\Sigma M_{j_2}^{\pm}\Sigma\cdots),

where ``π`` pairs the two vector slots of every :math:`\hat S` (paired slots carry the same sample and
contribute :math:`\Sigma`), :math:`c(\pi)` is the number of distinct samples it forces (connected
components of the :math:`\hat S` positions), and the contraction closes into cycles that traverse each
:math:`M_j` forwards or backwards (:math:`M_j^\top`). This is exact in :math:`\Sigma` (numeric), symbolic
in ``n``, for any ``A_l`` polynomial in the family symbols (e.g. the control family
:math:`A_l = a_l I` for anisotropic :math:`\Sigma`, where whitening does not make the family isotropic).
The number of pairings is :math:`(2K-1)!!` with :math:`K \le 2L`, so ``L <= 3``.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
import sympy
import torch

from landscape.core.model import ModelSpec, param_shapes
from landscape.core.tasks import LinearRegression
from landscape.symbolic.moments import _count_classes, _perfect_matchings
from landscape.symbolic.one_layer import linear_heads

__all__ = ["sparse_label_structure", "wick_loss", "expected_trace_word", "WICK_MAX_LAYERS"]

WICK_MAX_LAYERS = 3
"""Largest depth for the pairing sum (words of up to 2L = 6 sample covariances, 10395 pairings)."""

Component = tuple[sympy.Expr, np.ndarray]


def sparse_label_structure(
    blocks: Mapping[str, sympy.Matrix], spec: ModelSpec, symbols: Sequence[sympy.Symbol]
) -> list[list[Component]] | None:
    r"""Per layer, :math:`A_l = \sum_h \pi_{lh}A_{lh}` as a sum of ``(monomial in the symbols, numeric matrix)``.

    Returns ``None`` unless every head has :math:`P = \mathrm{diag}(0, \pi)` and
    :math:`Q = -\mathrm{diag}(A, 0)` exactly (zero blocks are checked symbolically) and the entries of
    :math:`A_l` are polynomials in the symbols.
    """
    d, D = spec.d, spec.token_dim
    if D != d + 1:
        return None
    full = {k: sympy.Matrix(blocks.get(k, sympy.zeros(*shape))) for k, shape in param_shapes(spec).items()}
    out: list[list[Component]] = []
    for l in range(spec.layers):
        heads = linear_heads(spec, full, l)
        if heads is None:
            return None
        A = sympy.zeros(d, d)
        for P, Q in heads:
            if any(sympy.sympify(e) != 0 for e in list(P[:d, :]) + list(P[d, :d])):
                return None
            if any(sympy.sympify(e) != 0 for e in list(Q[d, :]) + list(Q[:, d])):
                return None
            A += -P[d, d] * Q[:d, :d]
        comps: dict[tuple[int, ...], np.ndarray] = {}
        syms = list(symbols)
        for i in range(d):
            for j in range(d):
                e = sympy.expand(A[i, j])
                if e == 0:
                    continue
                try:
                    poly = sympy.Poly(e, *syms) if syms else None
                except sympy.PolynomialError:
                    return None
                terms = poly.terms() if poly is not None else [((), e)]
                for monom, c in terms:
                    if not sympy.sympify(c).is_number:
                        return None
                    M = comps.setdefault(tuple(monom), np.zeros((d, d)))
                    M[i, j] += float(c)
        out.append([(sympy.Mul(*(s**k for s, k in zip(syms, m))), M) for m, M in comps.items()])
    return out


# ---------------------------------------------------------------------- pairings
@lru_cache(maxsize=None)
def _pairing_structure(K: int) -> tuple[tuple[int, tuple[tuple[tuple[int, bool], ...], ...]], ...]:
    """For every pairing of the ``2K`` slots: (number of forced samples, cycles as ((factor, transposed), ...))."""
    pos = [(s // 2 + (s % 2)) % K for s in range(2 * K)]  # position of each slot
    out = []
    for m in _perfect_matchings(tuple(range(2 * K))):
        partner = [0] * (2 * K)
        for a, b in m:
            partner[a], partner[b] = b, a
        comps = _count_classes(K, [(pos[a], pos[b]) for a, b in m])
        # cycles: alternate M-edges (slot 2j <-> 2j+1) and Σ-edges (pairs)
        seen = [False] * K
        cycles = []
        for start in range(K):
            if seen[start]:
                continue
            cyc = []
            slot = 2 * start  # enter factor `start` at its left slot
            while not seen[slot // 2]:
                j = slot // 2
                seen[j] = True
                cyc.append((j, slot % 2 == 1))
                exit_slot = slot + 1 if slot % 2 == 0 else slot - 1
                slot = partner[exit_slot]
            cycles.append(tuple(cyc))
        out.append((comps, tuple(cycles)))
    return tuple(out)


def expected_trace_word(mats: Sequence[np.ndarray], sigma: np.ndarray) -> dict[int, float]:
    r""":math:`\mathbb E\operatorname{tr}(M_0\hat S M_1\hat S\cdots M_{K-1}\hat S)` as ``{c: coefficient}``: the
    expectation is :math:`\sum_c \mathrm{coef}_c\, n^{c-K}` (module docstring), :math:`x\sim N(0,\Sigma)`.

    Slots: factor ``j`` is :math:`x^{(j)\top} M_j x^{(j+1)}` (positions cyclic mod ``K``); its left slot is
    ``2j`` (position ``j``), its right slot ``2j+1`` (position ``j+1``). A cycle entering factor ``j`` at
    its right slot traverses :math:`M_j^\top`.
    """
    K = len(mats)
    if K == 0:
        raise ValueError("a word needs at least one sample covariance")
    fwd = [M @ sigma for M in mats]
    bwd = [M.T @ sigma for M in mats]
    out: dict[int, float] = {}
    for comps, cycles in _pairing_structure(K):
        value = 1.0
        for cyc in cycles:
            j, t = cyc[0]
            prod = bwd[j] if t else fwd[j]
            for j, t in cyc[1:]:
                prod = prod @ (bwd[j] if t else fwd[j])
            value *= float(np.trace(prod))
        out[comps] = out.get(comps, 0.0) + value
    return out


def _word(tokens: list[object], d: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Merge a cyclic token list (matrices and ``"S"``) into ``[M_0, ..., M_{K-1}]`` (each followed by S)."""
    if not any(isinstance(t, str) for t in tokens):
        P = np.eye(d)
        for t in tokens:
            P = P @ t  # type: ignore[operator]
        return [], P
    k = max(i for i, t in enumerate(tokens) if isinstance(t, str))
    rot = tokens[k + 1:] + tokens[:k + 1]  # ends with S
    mats, cur = [], np.eye(d)
    for t in rot:
        if isinstance(t, str):
            mats.append(cur)
            cur = np.eye(d)
        else:
            cur = cur @ t
    return mats, None


def wick_loss(
    layers: Sequence[Sequence[Component]],
    sigma: np.ndarray,
    sigma_w: np.ndarray,
    n: int | sympy.Expr,
) -> sympy.Expr:
    r"""Exact :math:`\mathbb E\operatorname{tr}(\Sigma_w R\Sigma R^\top)`, :math:`R = \prod_l(I - \hat S A_l)` (module docstring).

    Args:
        layers: :func:`sparse_label_structure` output.
        sigma: :math:`\Sigma` ``(d, d)``.
        sigma_w: :math:`\Sigma_w` ``(d, d)``.
        n: context length (integer or sympy symbol).

    Returns:
        The loss, polynomial in the family symbols (coefficients polynomial in ``1/n``).

    Raises:
        ValueError: more than :data:`WICK_MAX_LAYERS` layers.
    """
    L = len(layers)
    if L > WICK_MAX_LAYERS:
        raise ValueError(f"the Wick route sums (2K-1)!! pairings with K up to 2L; L = {L} > {WICK_MAX_LAYERS}")
    d = sigma.shape[0]
    cache: dict[tuple, dict[int, float]] = {}
    acc: dict[sympy.Expr, dict[int, float]] = {}
    subsets = [T for r in range(L + 1) for T in itertools.combinations(range(L), r)]
    for T in subsets:
        for U in subsets:
            sign = (-1) ** (len(T) + len(U))
            for cT in itertools.product(*[range(len(layers[t])) for t in T]):
                for cU in itertools.product(*[range(len(layers[u])) for u in U]):
                    mono = sympy.Mul(*(layers[t][c][0] for t, c in zip(T, cT)),
                                     *(layers[u][c][0] for u, c in zip(U, cU)))
                    key = (T, cT, U, cU)
                    rkey = (U, cU, T, cT)  # the transposed word has the same trace
                    if rkey in cache:
                        coeffs = cache[rkey]
                    else:
                        tokens: list[object] = [sigma_w]
                        for t, c in zip(T, cT):
                            tokens += ["S", layers[t][c][1]]
                        tokens.append(sigma)
                        for u, c in reversed(list(zip(U, cU))):
                            tokens += [layers[u][c][1].T, "S"]
                        mats, closed = _word(tokens, d)
                        if closed is not None:
                            coeffs = {0: float(np.trace(closed))}
                        else:
                            raw = expected_trace_word(mats, sigma)
                            K = len(mats)
                            coeffs = {c - K: v for c, v in raw.items()}
                        cache[key] = coeffs
                    slot = acc.setdefault(mono, {})
                    for p, v in coeffs.items():
                        slot[p] = slot.get(p, 0.0) + sign * v
    nn = sympy.sympify(n)
    out = sympy.Integer(0)
    for mono, coeffs in acc.items():
        c = sympy.Add(*(sympy.Float(v) * nn**p for p, v in coeffs.items() if v != 0))
        out += mono * c
    return sympy.expand(out)


def wick_matrices(data: LinearRegression) -> tuple[np.ndarray, np.ndarray]:
    """:math:`\\Sigma` and :math:`\\Sigma_w` of LinearRegression prompts as float64 arrays."""
    d = data.d
    sig = np.eye(d) if data.sigma is None else data.sigma.double().numpy()
    tc = data.task_covariance()
    sw = np.eye(d) if tc is None else torch.as_tensor(tc).double().numpy()
    return sig, sw
