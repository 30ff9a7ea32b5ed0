r"""Label-exact Monte-Carlo route for families without a closed form (kernel attention).

Cheng, Chen, Sra (2024, arXiv 2312.06528). When the keys/queries read covariates only
(:math:`B_{:,d+1} = C_{:,d+1} = 0`) and the value matrix keeps covariates and labels apart
(:math:`V = \mathrm{diag}(A, r)` — sparse ``fgd`` *and* full-value ``fgd-full``), the covariates
evolve independently of the labels, :math:`X_{l+1} = X_l + \frac1n A_l X_l M \tilde h(B_lX_l, C_lX_l)`,
and the label row evolves linearly,

.. math::
    Y_{l+1} = Y_l\Big(I + \sum_h \frac{r_{lh}}{n} M \tilde h_{lh}(B_{lh}X_l, C_{lh}X_l)\Big),

so the prediction is linear in the context labels, :math:`\mathrm{TF} = k(X)^\top y_{1:n}`, with
:math:`k_i(X) = \mathrm{TF}` of the prompt whose labels are the unit vector :math:`e_i` (the same holds
for linear attention with :math:`Q` reading covariates only and :math:`P = \mathrm{diag}(B, \pi)`).
Given the covariates the labels are jointly Gaussian, :math:`y \mid X \sim N(0, K)` (GP data:
:math:`K = K(\Xi)` plus jitter/noise; linear data: :math:`K = X^\top\Sigma_w X + \sigma^2 I`), hence
the expectation over labels is closed-form:

.. math::
    \mathbb E\big[(\mathrm{TF} - y_q)^2 \mid X\big] = k^\top K_{nn} k - 2 k^\top k_q + K_{qq} =: \ell(X).

What is left is an expectation over covariates, estimated by the sample mean of :math:`\ell(X_t)`
over ``T`` seeded draws, with standard error :math:`\mathrm{sd}(\ell)/\sqrt T` — a differentiable torch
function of every family scalar (common random numbers across evaluation points).

**Named coefficients.** Each label gain :math:`r_{lh}` (a symbol that appears only in the label
corner :math:`V_{lh}[d+1,d+1]`) enters multi-affinely, one head per layer at most, so
:math:`k = \sum_A r^A k_A` over *assignments* ``A`` (a set of (layer, head) pairs, distinct layers) and

.. math::
    f = \sum_{A,B} r^A r^B\, m_{A,B} - 2\sum_A r^A\, m_{A,q} + m_{q,q},\qquad
    m_{A,B} = \mathbb E[k_A^\top K_{nn} k_B],\ m_{A,q} = \mathbb E[k_A^\top k_q],\ m_{q,q} = \mathbb E K_{qq},

a polynomial in the gains whose coefficients depend on the remaining scalars (keys, queries, value
blocks). The coefficients are estimated with their joint covariance (per-sample covariance / T), so
the standard error of :math:`f` at any gain vector is :math:`\sqrt{\psi^\top \mathrm{Cov}\,\psi}` with
:math:`\psi` the monomial weights. The :math:`k_A` come from evaluations at gains in {0, 1} by Möbius
inversion over subsets.

If the prediction is not linear in the labels (keys reading labels, or the value mixing labels into
covariates), the route falls back to plain Monte-Carlo over covariates *and* labels (``label_exact``
is then False).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import sympy
import torch

from landscape.theory.families import Family
from landscape.core.model import ModelSpec, forward, predict
from landscape.core.tasks import KernelGP, LinearRegression, PromptBatch, Task
from landscape._checks import check_int

__all__ = ["LabelExactEstimator", "CoefficientEstimate", "labels_enter_linearly", "label_gains"]


def labels_enter_linearly(blocks: Mapping[str, sympy.Matrix], spec: ModelSpec) -> tuple[bool, str]:
    r"""Whether the prediction is linear in the context labels for every value of the symbols.

    Sufficient structural condition (checked on the sympy blocks): value/``P`` matrices have zero
    off-diagonal blocks (:math:`V_{1:d,d+1} = 0`, :math:`V_{d+1,1:d} = 0`) and keys/queries read no
    label (kernel: :math:`B_{:,d+1} = C_{:,d+1} = 0`; linear: :math:`Q_{d+1,:} = Q_{:,d+1} = 0`).

    Returns:
        ``(True, "")`` or ``(False, reason)``.
    """
    D = spec.token_dim
    d = D - 1
    zero = sympy.zeros(D, D)
    for l in range(spec.layers):
        for h, head in enumerate(spec.heads):
            k = lambda name: spec.key(l, h, name)  # noqa: E731
            value = blocks.get(k("P" if head.kind == "linear" else "V"), zero)
            if any(e != 0 for e in value[:d, d]) or any(e != 0 for e in value[d, :d]):
                return False, f"layer {l} head {h}: the value matrix mixes labels and covariates"
            if head.kind == "linear":
                Q = blocks.get(k("Q"), zero)
                if any(e != 0 for e in Q[d, :]) or any(e != 0 for e in Q[:, d]):
                    return False, f"layer {l} head {h}: the attention scores read the labels (Q has a label row/column)"
            else:
                for name in ("B", "C"):
                    M = blocks.get(k(name), zero)
                    if any(e != 0 for e in M[:, d]):
                        return False, f"layer {l} head {h}: {name} reads the labels"
    return True, ""


def label_gains(family: Family) -> dict[tuple[int, int], tuple[sympy.Symbol, sympy.Expr]] | None:
    """``(layer, head) -> (gain symbol, coefficient)`` for label corners of the form ``c·r``.

    Returns ``None`` if some corner depends on symbols in another way, or a gain symbol appears
    elsewhere in the family (then no polynomial decomposition is offered).
    """
    spec = family.spec
    D = spec.token_dim
    out: dict[tuple[int, int], tuple[sympy.Symbol, sympy.Expr]] = {}
    used: set[sympy.Symbol] = set()
    for l in range(spec.layers):
        for h, head in enumerate(spec.heads):
            key = spec.key(l, h, "P" if head.kind == "linear" else "V")
            M = family.blocks.get(key)
            if M is None:
                continue
            corner = sympy.sympify(M[D - 1, D - 1])
            syms = corner.free_symbols
            if not syms:
                continue
            if len(syms) != 1:
                return None
            (s,) = syms
            coeff = sympy.simplify(corner / s)
            if coeff.free_symbols or coeff == 0 or s in used:
                return None
            used.add(s)
            out[(l, h)] = (s, coeff)
    for key, M in family.blocks.items():
        for i, e in enumerate(M):
            if (i != D * D - 1 or not (key.endswith(".V") or key.endswith(".P"))) and (sympy.sympify(e).free_symbols & used):
                return None
    return out


@dataclass(frozen=True)
class CoefficientEstimate:
    r"""Monte-Carlo estimates of the named coefficients of the gain polynomial at fixed other scalars.

    Attributes:
        names: coefficient symbols ``m__A__B`` (:math:`\mathbb E[k_A^\top K_{nn}k_B]`), ``m__A__q``
            (:math:`\mathbb E[k_A^\top k_q]`), ``m__q__q`` (:math:`\mathbb E K_{qq}`); ``A`` is the product of
            gains written ``r0_r1`` (``1`` for the empty product).
        mean: ``(C,)`` estimates.
        cov: ``(C, C)`` covariance of the estimates (per-sample covariance / T).
        samples: T.
        at: the values of the non-gain scalars they were estimated at.
    """

    names: tuple[sympy.Symbol, ...]
    mean: torch.Tensor
    cov: torch.Tensor
    samples: int
    at: dict[str, float]

    def standard_errors(self) -> torch.Tensor:
        return self.cov.diagonal().clamp_min(0).sqrt()

    def as_dict(self) -> dict[str, tuple[float, float]]:
        se = self.standard_errors()
        return {s.name: (float(m), float(e)) for s, m, e in zip(self.names, self.mean, se)}


def _assignment_label(A: tuple[tuple[int, int], ...], gains: Mapping[tuple[int, int], tuple[sympy.Symbol, sympy.Expr]]) -> str:
    return "_".join(gains[p][0].name for p in A) if A else "1"


@dataclass(frozen=True)
class LabelExactEstimator:
    r"""Label-exact Monte-Carlo estimator of a family's loss (see module docstring).

    Attributes:
        family: the family.
        data: the prompt distribution (:class:`~landscape.core.tasks.KernelGP` or
            :class:`~landscape.core.tasks.LinearRegression` for the label-exact form; any sampler otherwise).
        samples: number T of covariate draws.
        seed: seed of the ``torch.Generator`` that drew them.
        label_exact: whether the label expectation is closed-form (else plain Monte-Carlo).
        reason: why not, when it is not.
        chunk: prompts per forward pass (memory bound).
    """

    family: Family
    data: Task
    samples: int = 8192
    seed: int = 0
    chunk: int = 4096
    label_exact: bool = field(init=False, default=True)
    reason: str = field(init=False, default="")
    _batch: PromptBatch = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]
    _K: torch.Tensor | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        check_int("samples", self.samples, minimum=2)
        if not hasattr(self.data, "sample"):
            raise TypeError(f"data must be a prompt sampler with .sample(batch, generator), got {type(self.data).__name__}")
        d = getattr(self.data, "d", None)
        if d != self.family.problem.d:
            raise ValueError(f"data has d = {d} but the family {self.family.name!r} has d = {self.family.problem.d}")
        ok, reason = labels_enter_linearly(self.family.blocks, self.family.spec)
        if ok and not isinstance(self.data, (KernelGP, LinearRegression)):
            ok, reason = False, f"labels of {type(self.data).__name__} are not Gaussian given the covariates"
        object.__setattr__(self, "label_exact", ok)
        object.__setattr__(self, "reason", reason)
        g = torch.Generator().manual_seed(self.seed)
        batch = self.data.sample(self.samples, g)
        object.__setattr__(self, "_batch", batch)
        if ok:
            object.__setattr__(self, "_K", self._label_covariance(batch))

    # ------------------------------------------------------------------ data
    def _label_covariance(self, batch: PromptBatch) -> torch.Tensor:
        if isinstance(self.data, KernelGP):
            return batch.latent["K"]
        data: LinearRegression = self.data  # type: ignore[assignment]
        X = batch.X
        tc = data.task_covariance()
        Sw = torch.eye(data.d, dtype=X.dtype) if tc is None else tc.to(X.dtype)
        K = X.transpose(-1, -2) @ Sw @ X
        if data.noise:
            K = K + data.noise**2 * torch.eye(K.shape[-1], dtype=K.dtype)
        return K

    @property
    def n(self) -> int:
        return self._batch.n

    # ------------------------------------------------------------------ per-sample losses
    def _coefficients_k(self, params: Mapping[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
        r"""``k(X)`` with :math:`\mathrm{TF} = k^\top y_{1:n}`, shape ``(T, n)``.

        The covariate states :math:`X_l` do not depend on the labels, so one forward pass with zero
        labels gives them; then :math:`Y_L = Y_0 A_0 \cdots A_{L-1}` with
        :math:`A_l = I + \sum_h \frac{v_{lh}}{n} M\,\mathrm{scores}_{lh}(X_l)` (:math:`v_{lh}` the label corner of the
        value matrix), and :math:`k = -(A_0\cdots A_{L-1} e_q)_{1:n}`.
        """
        spec = self.family.spec
        T, d, N = X.shape
        n = N - 1
        Z0 = torch.cat([X, torch.zeros(T, 1, N, dtype=X.dtype, device=X.device)], dim=1)
        states = forward(params, spec, Z0, return_states=True, validate=False)
        u = torch.zeros(T, N, dtype=X.dtype, device=X.device)
        u = u + torch.nn.functional.one_hot(torch.tensor(n), N).to(X.dtype)
        D = spec.token_dim
        for l in reversed(range(spec.layers)):
            Z = states[l]
            Zs = Z[..., :n]
            upd = torch.zeros(T, n, dtype=X.dtype, device=X.device)
            for h, head in enumerate(spec.heads):
                key = lambda name: spec.key(l, h, name)  # noqa: E731
                if head.kind == "linear":
                    corner = params[key("P")][D - 1, D - 1]
                    scores = Zs.transpose(-1, -2) @ (params[key("Q")] @ Z)
                else:
                    corner = params[key("V")][D - 1, D - 1]
                    scores = head.kernel.gram(params[key("B")] @ Zs, params[key("C")] @ Z)
                upd = upd + corner * (scores @ u.unsqueeze(-1)).squeeze(-1)
            u = u + torch.cat([upd / n, torch.zeros(T, 1, dtype=X.dtype, device=X.device)], dim=-1)
        return -u[..., :n]

    def per_sample(self, values: Mapping[str, float] | torch.Tensor | Sequence[float]) -> torch.Tensor:
        r"""Per-draw losses :math:`\ell(X_t)` (label-exact) or :math:`(\mathrm{TF} - y_q)^2` (plain), ``(T,)``.

        Differentiable in ``values`` (a vector in the family's symbol order, or a dict).
        """
        params = self.family.params(values)
        ref = next(iter(params.values()))
        out = []
        batch = self._batch
        for start in range(0, self.samples, self.chunk):
            sl = slice(start, start + self.chunk)
            X = batch.X[sl].to(ref.dtype)
            if self.label_exact:
                K = self._K[sl].to(ref.dtype)
                k = self._coefficients_k(params, X)
                Knn, kq, Kqq = K[:, :-1, :-1], K[:, :-1, -1], K[:, -1, -1]
                quad = (k.unsqueeze(-2) @ Knn @ k.unsqueeze(-1)).squeeze(-1).squeeze(-1)
                out.append(quad - 2 * (k * kq).sum(-1) + Kqq)
            else:
                pred = predict(params, self.family.spec, batch.Z[sl].to(ref.dtype), validate=False)
                out.append((pred - batch.target[sl].to(ref.dtype)) ** 2)
        return torch.cat(out)

    def loss(self, values: Mapping[str, float] | torch.Tensor | Sequence[float]) -> torch.Tensor:
        """Sample mean of :meth:`per_sample` (a 0-dim tensor, differentiable)."""
        return self.per_sample(values).mean()

    def standard_error(self, values: Mapping[str, float] | torch.Tensor | Sequence[float]) -> float:
        """Standard error of :meth:`loss` at ``values``: ``sd / sqrt(T)``."""
        with torch.no_grad():
            ps = self.per_sample(values)
        return float(ps.std() / math.sqrt(self.samples))

    # ------------------------------------------------------------------ named coefficients
    def gains(self) -> dict[tuple[int, int], tuple[sympy.Symbol, sympy.Expr]] | None:
        """Label gains of the family (see :func:`label_gains`), ``None`` if not label-exact."""
        return label_gains(self.family) if self.label_exact else None

    def _assignments(self) -> list[tuple[tuple[int, int], ...]]:
        gains = self.gains() or {}
        by_layer: dict[int, list[tuple[int, int]]] = {}
        for (l, h) in gains:
            by_layer.setdefault(l, []).append((l, h))
        layers = sorted(by_layer)
        out = []
        for choice in itertools.product(*[[None] + by_layer[l] for l in layers]):
            out.append(tuple(p for p in choice if p is not None))
        return out

    def structure(self) -> tuple[sympy.Expr, list[sympy.Symbol]]:
        r"""The loss as a polynomial in the label gains with named coefficient symbols.

        Returns:
            ``(expr, coefficient symbols)``; with no gains, ``expr = m__q__q - 2 m__1__q + m__1__1``.

        Raises:
            ValueError: if the route is not label-exact or the gains are not separable.
        """
        gains = self.gains()
        if gains is None:
            raise ValueError(f"no gain decomposition for family {self.family.name!r}: "
                             + (self.reason or "label corners are not of the form c·r with r used nowhere else"))
        As = self._assignments()
        mono = {A: sympy.Mul(*(gains[p][1] * gains[p][0] for p in A)) for A in As}
        names: list[sympy.Symbol] = []
        expr = sympy.Integer(0)
        for i, A in enumerate(As):
            for B in As[i:]:
                s = sympy.Symbol(f"m__{_assignment_label(A, gains)}__{_assignment_label(B, gains)}")
                names.append(s)
                expr += (1 if A == B else 2) * mono[A] * mono[B] * s
        for A in As:
            s = sympy.Symbol(f"m__{_assignment_label(A, gains)}__q")
            names.append(s)
            expr += -2 * mono[A] * s
        s = sympy.Symbol("m__q__q")
        names.append(s)
        expr += s
        return expr, names

    def coefficients(self, values: Mapping[str, float] | torch.Tensor | Sequence[float]) -> CoefficientEstimate:
        """Estimate the named coefficients at the non-gain scalars of ``values`` (gains ignored).

        Returns:
            :class:`CoefficientEstimate` in the order of :meth:`structure`'s symbols.
        """
        gains = self.gains()
        expr, names = self.structure()
        v = self.family._vector(values, torch.float64, None).detach().clone()
        index = {s: i for i, s in enumerate(self.family.symbols)}
        As = self._assignments()
        point_k = {}
        with torch.no_grad():
            for A in As:
                w = v.clone()
                for (s, _) in gains.values():
                    w[index[s]] = 0.0
                for p in A:
                    w[index[gains[p][0]]] = 1.0
                params = self.family.params(w)
                ks = [self._coefficients_k(params, self._batch.X[st:st + self.chunk].to(torch.float64))
                      for st in range(0, self.samples, self.chunk)]
                point_k[A] = torch.cat(ks)
        # Möbius inversion: k_A = Σ_{B ⊆ A} (-1)^{|A|-|B|} k(point_B); point values include coefficients c
        kA = {}
        for A in As:
            acc = torch.zeros_like(point_k[As[0]])
            for r in range(len(A) + 1):
                for B in itertools.combinations(A, r):
                    acc = acc + (-1) ** (len(A) - r) * point_k[tuple(B)]
            # the point evaluation used gain = 1, so it carries the coefficient c; divide it out
            c = math.prod(float(gains[p][1]) for p in A) if A else 1.0
            kA[A] = acc / c
        K = self._K.to(torch.float64)
        Knn, kq, Kqq = K[:, :-1, :-1], K[:, :-1, -1], K[:, -1, -1]
        cols = []
        for i, A in enumerate(As):
            for B in As[i:]:
                cols.append((kA[A].unsqueeze(-2) @ Knn @ kA[B].unsqueeze(-1)).squeeze(-1).squeeze(-1))
        for A in As:
            cols.append((kA[A] * kq).sum(-1))
        cols.append(Kqq)
        phi = torch.stack(cols, dim=-1)
        mean = phi.mean(0)
        cov = torch.cov(phi.T).reshape(len(cols), len(cols)) / self.samples
        at = {s.name: float(v[index[s]]) for s in self.family.symbols if s not in {g[0] for g in gains.values()}}
        return CoefficientEstimate(tuple(names), mean, cov, self.samples, at)
