r"""Curvature at a point: extreme eigenpairs, traces, spectral densities, block spectra, inertia.

All routines act on a symmetric operator :math:`H` (the Hessian of a loss oracle at
:math:`\theta`, or any matrix) through products :math:`v \mapsto Hv` only, so they scale to
Hessians too large to form. :func:`hessian_operator` wraps a loss oracle
(:mod:`landscape.numeric.oracles`) into such an operator, optionally restricted to a subspace
:math:`U^\top H U` (a layer, the ``P`` or ``Q`` blocks, a family's tangent or normal space, the
complement of the symmetry directions). Every result is a frozen dataclass carrying its
diagnostics:

* :func:`eigenpairs` — top / bottom ``k`` eigenpairs by Lanczos with full reorthogonalisation
  (:func:`landscape.numeric.derivatives.lanczos`), each with its *true* residual
  :math:`\lVert Hv - \lambda v\rVert` (recomputed by one product per pair) and a converged flag;
* :func:`hutchinson_trace` — :math:`\operatorname{tr} H \approx \frac1m \sum_i z_i^\top H z_i`
  with Rademacher or Gaussian probes, and the standard error :math:`s/\sqrt m` of the mean;
* :func:`hutchpp_trace` — Hutch++ (Meyer, Musco, Musco, Woodruff 2021): the trace of
  :math:`H` on a sketched dominant subspace :math:`Q` exactly plus Hutchinson on the deflated
  remainder :math:`(I - QQ^\top)H(I - QQ^\top)`; its standard error is that of the remainder
  (the first term is exact given :math:`Q`);
* :func:`spectral_density` — stochastic Lanczos quadrature (Golub & Meurant 2010; Ubaru, Chen,
  Saad 2017; Ghorbani, Krishnan, Xiao 2019): for unit probes :math:`v`, ``m`` Lanczos steps give
  Ritz values :math:`\theta_j` and weights :math:`\tau_j = (e_1^\top s_j)^2`, the Gauss quadrature
  of the spectral measure :math:`\mu_v = \sum_i (u_i^\top v)^2\delta_{\lambda_i}`; it is exact for
  polynomials of degree :math:`\le 2m-1`, and :math:`\mathbb E_v \mu_v = \frac1P\sum_i\delta_{\lambda_i}`
  for probes uniform on the sphere or normalised Rademacher vectors;
* :func:`block_spectra` — eigenvalues of diagonal blocks of a Hessian: per layer, per parameter,
  per parameter kind (``P`` vs ``Q``, ``V``/``B``/``C``), or tangent vs normal to a family;
* :func:`inertia_modulo_symmetries` — the inertia of the Hessian and of its restriction to the
  orthogonal complement of the model's continuous symmetry generators
  (:func:`landscape.numeric.derivatives.symmetry_generators`).

References: Hutchinson 1990; Meyer et al. 2021 (Hutch++); Golub & Meurant 2010, Ubaru et al.
2017 (SLQ); Yao, Gholami, Keutzer, Mahoney 2020 (PyHessian).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

from landscape._checks import check_choice, check_int
from landscape.core.model import ModelSpec, num_params, param_shapes
from landscape.numeric.derivatives import (
    Inertia,
    _check_flat,
    hessian,
    hvp,
    inertia,
    lanczos,
    orthonormal_complement,
    symmetry_generators,
)
from landscape.numeric.oracles import LossOracle, as_oracle

__all__ = [
    "SymmetricOperator",
    "matrix_operator",
    "hessian_operator",
    "Eigenpairs",
    "eigenpairs",
    "TraceEstimate",
    "hutchinson_trace",
    "hutchpp_trace",
    "SpectralDensity",
    "spectral_density",
    "BlockSpectrum",
    "parameter_groups",
    "block_spectra",
    "inertia_modulo_symmetries",
]


# ---------------------------------------------------------------------- operators
@dataclass(frozen=True, eq=False)
class SymmetricOperator:
    r"""A symmetric linear operator :math:`H \in \mathbb R^{P\times P}` given by its products.

    Attributes:
        dim: :math:`P`.
        matmat: ``(m, P) -> (m, P)``, rows :math:`(Hv_i)^\top` (vmapped where possible).
        dtype, device: of the vectors it takes.
        name: what it is (for reports).
    """

    dim: int
    matmat: Callable[[torch.Tensor], torch.Tensor]
    dtype: torch.dtype
    device: torch.device
    name: str = "operator"

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`Hv` for one ``(P,)`` vector."""
        return self.matmat(v.reshape(1, -1))[0]

    def dense(self) -> torch.Tensor:
        """The ``(P, P)`` matrix (``P`` products), symmetrised."""
        H = self.matmat(torch.eye(self.dim, dtype=self.dtype, device=self.device))
        return (H + H.T) / 2

    def restrict(self, basis: torch.Tensor, name: str | None = None) -> "SymmetricOperator":
        r""":math:`U^\top H U` for an orthonormal ``(P, r)`` basis ``U`` (orthonormalise first)."""
        if basis.ndim != 2 or basis.shape[0] != self.dim:
            raise ValueError(f"basis must be ({self.dim}, r), got {tuple(basis.shape)}")
        U = basis.to(dtype=self.dtype, device=self.device)
        parent = self.matmat
        return SymmetricOperator(U.shape[1], lambda V: parent(V @ U.T) @ U, self.dtype, self.device,
                                 name or f"{self.name} restricted to {U.shape[1]} directions")


def matrix_operator(H: torch.Tensor, name: str = "matrix") -> SymmetricOperator:
    """A dense symmetric matrix as a :class:`SymmetricOperator` (products ``V @ H``).

    Raises:
        ValueError: not square, or not symmetric to round-off.
    """
    if not isinstance(H, torch.Tensor) or H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"need a square matrix, got {getattr(H, 'shape', type(H).__name__)}")
    scale = float(H.abs().max()) if H.numel() else 0.0
    if float((H - H.T).abs().max()) > 1e3 * torch.finfo(H.dtype).eps * max(scale, 1e-300):
        raise ValueError("matrix is not symmetric")
    return SymmetricOperator(H.shape[0], lambda V: V @ H, H.dtype, H.device, name)


def hessian_operator(
    oracle: LossOracle | Callable,
    flat: torch.Tensor,
    *,
    basis: torch.Tensor | None = None,
    vector_chunk: int | None = None,
    spec: ModelSpec | None = None,
    name: str = "Hessian",
) -> SymmetricOperator:
    r"""The Hessian :math:`\nabla^2 f(\theta)` of a loss oracle as an operator (HVPs by ``jvp`` of ``grad``).

    Args:
        oracle: loss oracle (or callable ``params -> scalar`` with ``spec``).
        flat: :math:`\theta`, ``(P,)``.
        basis: optional ``(P, r)`` spanning set; the operator is then :math:`U^\top H U` with
            ``U`` an orthonormal basis of its span.
        vector_chunk: vectors per vmapped HVP call.
        spec: only for plain callables.
        name: shown in reports.

    Returns:
        :class:`SymmetricOperator` of size ``P`` (or ``r``).

    Raises:
        TypeError, ValueError: a bad oracle, point or basis.
    """
    oracle = as_oracle(oracle, spec)
    flat = _check_flat(oracle, flat).detach()
    op = SymmetricOperator(flat.shape[0], lambda V: hvp(oracle, flat, V, vector_chunk=vector_chunk),
                           flat.dtype, flat.device, name)
    if basis is not None:
        U, _ = orthonormal_complement(basis.to(flat.dtype))
        op = op.restrict(U, f"{name} on a {U.shape[1]}-dimensional subspace")
    return op


def _as_operator(op: SymmetricOperator | torch.Tensor) -> SymmetricOperator:
    if isinstance(op, SymmetricOperator):
        return op
    if isinstance(op, torch.Tensor):
        return matrix_operator(op)
    raise TypeError(f"expected a SymmetricOperator or a symmetric matrix, got {type(op).__name__}")


# ---------------------------------------------------------------------- eigenpairs
@dataclass(frozen=True)
class Eigenpairs:
    r"""Extreme eigenpairs with per-pair diagnostics.

    Attributes:
        eigenvalues: ``(k,)`` (``LA``: descending; ``SA``: ascending; ``LM``: descending magnitude).
        eigenvectors: ``(P, k)`` orthonormal columns.
        residuals: ``(k,)`` :math:`\lVert Hv_i - \lambda_i v_i\rVert`, recomputed with one product each.
        converged: ``(k,)`` bool, ``residuals <= tol``.
        tol: absolute residual tolerance (:data:`LANCZOS_RTOL` × the largest |Ritz value| by default).
        iterations: Lanczos steps (operator products, not counting the ``k`` residual checks).
        which: ``"LA"``, ``"SA"`` or ``"LM"``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    converged: torch.Tensor
    tol: float
    iterations: int
    which: str

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def summary(self) -> dict[str, object]:
        """JSON-friendly: eigenvalues, residuals, converged flags."""
        return {"which": self.which, "eigenvalues": self.eigenvalues.tolist(), "residuals": self.residuals.tolist(),
                "converged": [bool(c) for c in self.converged], "tol": self.tol, "iterations": self.iterations}


def eigenpairs(
    op: SymmetricOperator | torch.Tensor,
    k: int = 1,
    *,
    which: Literal["LA", "SA", "LM"] = "LA",
    generator: torch.Generator | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
) -> Eigenpairs:
    r"""Top (``LA``), bottom (``SA``) or largest-magnitude (``LM``) eigenpairs by Lanczos with explicit deflation.

    A single-vector Krylov space holds one copy of each distinct eigenvalue, so one Lanczos run
    cannot see multiplicities (a Hessian with ten zero eigenvalues would show one). The pairs are
    therefore found one at a time: run ``i`` is Lanczos with full reorthogonalisation
    (:func:`landscape.numeric.derivatives.lanczos`) on :math:`N_i^\top H N_i`, ``N_i`` an orthonormal
    basis of the complement of the ``i`` vectors found so far, and keeps its extreme Ritz pair
    (the extreme eigenvalue of the deflated operator is always in the Krylov space). The residuals
    reported are recomputed on ``H`` itself, :math:`\lVert H v_i - \lambda_i v_i\rVert`. Memory: the
    deflation basis is ``P × P`` for ``k > 1``.

    Args:
        op: the operator (or a symmetric matrix).
        k: number of pairs, ``1 <= k <= P``.
        which: ``"LA"``, ``"SA"`` or ``"LM"``.
        generator: start-vector randomness.
        max_iter: at most this many Lanczos steps per pair (default: the deflated size).
        tol: absolute residual tolerance (default :data:`landscape.tolerances.LANCZOS_RTOL` × the
            largest |Ritz value| of the first run).

    Returns:
        :class:`Eigenpairs` (``iterations`` = Lanczos steps of all runs).

    Raises:
        ValueError: bad ``k``/``which``.
    """
    op = _as_operator(op)
    check_choice("which", which, ("LA", "SA", "LM"))
    check_int("k", k, minimum=1)
    if k > op.dim:
        raise ValueError(f"k = {k} eigenpairs asked of an operator of size {op.dim}")
    vals: list[torch.Tensor] = []
    vecs: list[torch.Tensor] = []
    steps, tol_abs = 0, None
    for i in range(k):
        if vecs:
            _, N = orthonormal_complement(torch.stack(vecs, dim=1))
            sub = op.restrict(N)
        else:
            N, sub = None, op
        res = lanczos(sub.matvec, sub.dim, 1, which=which, generator=generator,
                      max_iter=None if max_iter is None else min(max_iter, sub.dim), tol=tol if tol is not None
                      else tol_abs, dtype=op.dtype, device=op.device)
        tol_abs = res.tol if tol_abs is None else tol_abs
        v = res.eigenvectors[:, 0]
        v = N @ v if N is not None else v
        vals.append(res.eigenvalues[0])
        vecs.append(v / v.norm())
        steps += res.iterations
    ev = torch.stack(vals)
    V = torch.stack(vecs, dim=1)
    order = {"LA": torch.argsort(ev, descending=True), "SA": torch.argsort(ev),
             "LM": torch.argsort(ev.abs(), descending=True)}[which]
    ev, V = ev[order], V[:, order]
    HV = op.matmat(V.T.contiguous()).T
    resid = (HV - V * ev).norm(dim=0)
    t = float(tol_abs if tol is None else tol)
    return Eigenpairs(ev, V, resid, resid <= t, t, steps, which)


# ---------------------------------------------------------------------- traces
@dataclass(frozen=True)
class TraceEstimate:
    r"""A stochastic trace estimate and its standard error.

    Attributes:
        value: the estimate of :math:`\operatorname{tr} H`.
        se: its standard error (sample standard deviation of the probe terms over :math:`\sqrt m`;
            for Hutch++ that of the deflated remainder).
        matvecs: operator products used.
        method: ``"hutchinson"`` or ``"hutch++"``.
        probes: Hutchinson probes in the estimate (for Hutch++: of the remainder).
        exact_part: Hutch++: :math:`\operatorname{tr}(Q^\top H Q)`; Hutchinson: 0.
    """

    value: float
    se: float
    matvecs: int
    method: str
    probes: int
    exact_part: float = 0.0

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        r"""Confidence interval :math:`\hat t \pm t_{m-1,(1+\text{level})/2}\,\mathrm{se}` (Student-t, ``m`` probes).

        Raises:
            ValueError: ``level`` not in (0, 1).
        """
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        from scipy.stats import t as student_t

        q = float(student_t.ppf((1 + level) / 2, self.probes - 1))
        return self.value - q * self.se, self.value + q * self.se

    def summary(self) -> dict[str, object]:
        lo, hi = self.interval()
        return {"method": self.method, "value": self.value, "se": self.se, "ci95": [lo, hi],
                "matvecs": self.matvecs, "probes": self.probes}


def _probes(m: int, P: int, generator: torch.Generator, distribution: str, dtype: torch.dtype,
            device: torch.device) -> torch.Tensor:
    dev = generator.device
    if distribution == "rademacher":
        z = torch.randint(0, 2, (m, P), generator=generator, device=dev).to(dtype) * 2 - 1
    else:
        z = torch.randn(m, P, generator=generator, dtype=dtype, device=dev)
    return z.to(device)


def hutchinson_trace(
    op: SymmetricOperator | torch.Tensor,
    probes: int,
    generator: torch.Generator,
    *,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
) -> TraceEstimate:
    r"""Hutchinson's estimator :math:`\hat t = \frac1m\sum_{i=1}^m z_i^\top H z_i`, :math:`\mathbb E\hat t = \operatorname{tr}H`.

    With Rademacher probes :math:`\operatorname{Var}(z^\top Hz) = 2(\lVert H\rVert_F^2 - \sum_i H_{ii}^2)`;
    the reported standard error is the sample one, :math:`s/\sqrt m`.

    Args:
        op: the operator (or a symmetric matrix).
        probes: ``m >= 2``.
        generator: the probes' randomness.
        distribution: ``"rademacher"`` or ``"gaussian"``.

    Returns:
        :class:`TraceEstimate` (``method="hutchinson"``).

    Raises:
        ValueError: ``probes < 2`` or an unknown distribution.
    """
    op = _as_operator(op)
    check_int("probes", probes, minimum=2)
    check_choice("distribution", distribution, ("rademacher", "gaussian"))
    Z = _probes(probes, op.dim, generator, distribution, op.dtype, op.device)
    terms = (Z * op.matmat(Z)).sum(dim=1)
    return TraceEstimate(float(terms.mean()), float(terms.std(unbiased=True) / math.sqrt(probes)), probes,
                         "hutchinson", probes)


def hutchpp_trace(
    op: SymmetricOperator | torch.Tensor,
    matvecs: int,
    generator: torch.Generator,
    *,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
) -> TraceEstimate:
    r"""Hutch++ (Meyer, Musco, Musco, Woodruff 2021, Algorithm 1).

    With ``s = matvecs // 3``: sketch :math:`Y = HS` for ``s`` random probes :math:`S`, take an
    orthonormal basis :math:`Q` of :math:`Y`, and estimate

    .. math::
        \operatorname{tr}H \approx \operatorname{tr}(Q^\top H Q)
            + \frac1{m'}\sum_{i=1}^{m'} g_i^\top (I - QQ^\top) H (I - QQ^\top) g_i,

    with ``m' = matvecs - 2s`` fresh probes :math:`g_i`. The first term is exact given :math:`Q`;
    the standard error is the sample one of the second. Variance :math:`O(1/m^2)` against
    Hutchinson's :math:`O(1/m)` for matrices with decaying spectra.

    Args:
        op: the operator (or a symmetric matrix).
        matvecs: total operator products, ``>= 4`` (``s >= 1`` sketch vectors and ``m' >= 2`` probes).
        generator: randomness.
        distribution: of the probes.

    Returns:
        :class:`TraceEstimate` (``method="hutch++"``).

    Raises:
        ValueError: ``matvecs < 4``.
    """
    op = _as_operator(op)
    check_int("matvecs", matvecs, minimum=4)
    check_choice("distribution", distribution, ("rademacher", "gaussian"))
    s = max(1, min(matvecs // 3, op.dim))
    m = matvecs - 2 * s
    S = _probes(s, op.dim, generator, distribution, op.dtype, op.device)
    Y = op.matmat(S)                       # rows (H s_i)^T
    Q, _ = torch.linalg.qr(Y.T)            # (P, s)
    exact = float(torch.trace(Q.T @ op.matmat(Q.T.contiguous()).T))
    G = _probes(m, op.dim, generator, distribution, op.dtype, op.device)
    G = G - (G @ Q) @ Q.T
    terms = (G * op.matmat(G)).sum(dim=1)
    return TraceEstimate(exact + float(terms.mean()), float(terms.std(unbiased=True) / math.sqrt(m)),
                         2 * s + m, "hutch++", m, exact)


# ---------------------------------------------------------------------- spectral density
@dataclass(frozen=True)
class SpectralDensity:
    r"""Stochastic Lanczos quadrature of the spectral measure :math:`\frac1P\sum_i \delta_{\lambda_i}`.

    Attributes:
        nodes: ``(probes, m)`` Ritz values :math:`\theta_{vj}`.
        weights: ``(probes, m)`` Gauss weights :math:`\tau_{vj}` (each row sums to one).
        dim: :math:`P`.
        steps: Lanczos steps ``m`` per probe.
    """

    nodes: torch.Tensor
    weights: torch.Tensor
    dim: int
    steps: int

    @property
    def probes(self) -> int:
        return int(self.nodes.shape[0])

    def expectation(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
        r""":math:`\frac1P\operatorname{tr} f(H)` estimated as the mean over probes of
        :math:`\sum_j \tau_{vj} f(\theta_{vj})`, and its standard error over probes."""
        per = (self.weights * fn(self.nodes)).sum(dim=1)
        se = float(per.std(unbiased=True) / math.sqrt(self.probes)) if self.probes > 1 else float("nan")
        return float(per.mean()), se

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        r"""Estimated spectral distribution :math:`F(x) = \frac1P\#\{i: \lambda_i \le x\}` at the points ``x``."""
        x = torch.as_tensor(x, dtype=self.nodes.dtype, device=self.nodes.device).reshape(-1)
        ind = (self.nodes[None, :, :] <= x[:, None, None]).to(self.nodes.dtype)
        return (ind * self.weights[None]).sum(dim=2).mean(dim=1)

    def density(self, grid: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
        r"""Gaussian-smoothed density :math:`\phi(x) = \frac1{n_v}\sum_{v,j}\tau_{vj}\,\mathcal N(x;\theta_{vj},\sigma^2)`.

        Args:
            grid: points ``x``.
            bandwidth: :math:`\sigma` (default: 1 % of the range of the nodes, at least ``1e-12``).

        Returns:
            ``φ`` on the grid (integrates to one).
        """
        grid = torch.as_tensor(grid, dtype=self.nodes.dtype, device=self.nodes.device).reshape(-1)
        if bandwidth is None:
            span = float(self.nodes.max() - self.nodes.min())
            bandwidth = max(0.01 * span, 1e-12)
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
        z = (grid[:, None, None] - self.nodes[None]) / bandwidth
        k = torch.exp(-0.5 * z**2) / (bandwidth * math.sqrt(2 * math.pi))
        return (k * self.weights[None]).sum(dim=2).mean(dim=1)

    def summary(self) -> dict[str, object]:
        tr, tr_se = self.expectation(lambda t: t)
        return {"probes": self.probes, "steps": self.steps, "dim": self.dim,
                "trace": tr * self.dim, "trace_se": tr_se * self.dim,
                "min_node": float(self.nodes.min()), "max_node": float(self.nodes.max())}


def spectral_density(
    op: SymmetricOperator | torch.Tensor,
    generator: torch.Generator,
    *,
    probes: int = 8,
    steps: int = 30,
) -> SpectralDensity:
    r"""Stochastic Lanczos quadrature (SLQ) of the spectrum of a symmetric operator.

    For each of ``probes`` normalised Rademacher vectors :math:`v`, ``m = steps`` Lanczos steps with
    full reorthogonalisation give :math:`T_m = S\,\mathrm{diag}(\theta)\,S^\top`; the nodes are the
    :math:`\theta_j` and the weights :math:`\tau_j = S_{1j}^2`. Per probe,
    :math:`\sum_j\tau_j\theta_j^k = v^\top H^k v` exactly for :math:`k \le 2m-1`.

    Args:
        op: the operator (or a symmetric matrix).
        generator: the probes' randomness.
        probes: number of probe vectors (``>= 1``).
        steps: Lanczos steps per probe, ``1 <= steps <= P``.

    Returns:
        :class:`SpectralDensity`.

    Raises:
        ValueError: bad counts.
    """
    op = _as_operator(op)
    check_int("probes", probes, minimum=1)
    check_int("steps", steps, minimum=1)
    if steps > op.dim:
        raise ValueError(f"steps = {steps} Lanczos steps exceed the operator size {op.dim}")
    V = _probes(probes, op.dim, generator, "rademacher", op.dtype, op.device) / math.sqrt(op.dim)
    nodes, weights = [], []
    for v in V:
        # tol=0 never stops early: all `steps` Ritz pairs, in the full space
        res = lanczos(op.matvec, op.dim, steps, which="LA", v0=v, max_iter=steps, tol=0.0,
                      generator=generator, dtype=op.dtype, device=op.device)
        nodes.append(res.eigenvalues)
        weights.append((res.eigenvectors.T @ v) ** 2)
    W = torch.stack(weights)
    return SpectralDensity(torch.stack(nodes), W / W.sum(dim=1, keepdim=True), op.dim, steps)


# ---------------------------------------------------------------------- blocks and symmetries
@dataclass(frozen=True)
class BlockSpectrum:
    r"""Spectrum of one diagonal block :math:`U^\top H U` of a Hessian.

    Attributes:
        name: the block (``"layer0"``, ``"P"``, ``"tangent"`` ...).
        size: its dimension.
        eigenvalues: ascending.
        inertia: :func:`landscape.numeric.derivatives.inertia` of the block (zero threshold relative to the
            block's own largest |eigenvalue|).
    """

    name: str
    size: int
    eigenvalues: torch.Tensor
    inertia: Inertia

    def summary(self) -> dict[str, object]:
        ev = self.eigenvalues
        return {"block": self.name, "size": self.size, "min_eig": float(ev.min()), "max_eig": float(ev.max()),
                "trace": float(ev.sum()), "n_pos": self.inertia.n_pos, "n_zero": self.inertia.n_zero,
                "n_neg": self.inertia.n_neg}


BlockBy = Literal["layer", "param", "kind", "head"]


def parameter_groups(spec: ModelSpec, by: BlockBy = "layer") -> dict[str, list[int]]:
    """Flat indices of each parameter group: per ``layer`` (``"layer0"`` …), ``head`` (``"layer0.head0"``),
    ``param`` (full name) or ``kind`` (the matrix letter: ``P``/``Q`` for linear heads, ``V``/``B``/``C``
    for kernel heads, summed over layers and heads).

    Raises:
        ValueError: unknown ``by``.
    """
    check_choice("by", by, ("layer", "param", "kind", "head"))
    groups: dict[str, list[int]] = {}
    i = 0
    for name, (a, b) in param_shapes(spec).items():
        parts = name.split(".")
        key = {"layer": parts[0], "head": ".".join(parts[:2]), "param": name, "kind": parts[-1]}[by]
        groups.setdefault(key, []).extend(range(i, i + a * b))
        i += a * b
    return groups


def _block(name: str, Hb: torch.Tensor) -> BlockSpectrum:
    ev = torch.linalg.eigvalsh((Hb + Hb.T) / 2) if Hb.numel() else Hb.new_zeros(0)
    return BlockSpectrum(name, int(Hb.shape[0]), ev, inertia(ev))


def block_spectra(
    H: torch.Tensor,
    spec: ModelSpec | None = None,
    *,
    by: BlockBy | Literal["tangent"] = "layer",
    tangent: torch.Tensor | None = None,
) -> list[BlockSpectrum]:
    r"""Eigenvalues of the diagonal blocks of a dense Hessian.

    Args:
        H: ``(P, P)`` Hessian.
        spec: architecture (for ``by`` in ``layer``/``head``/``param``/``kind``).
        by: parameter grouping (:func:`parameter_groups`) or ``"tangent"``: the blocks
            :math:`U^\top H U` and :math:`N^\top H N` on a family's tangent space ``span(tangent)``
            and its orthogonal complement (:func:`landscape.numeric.derivatives.tangent_split`).
        tangent: ``(P, r)`` tangent vectors (``by="tangent"`` only), e.g. ``family.tangent_basis(s)``.

    Returns:
        One :class:`BlockSpectrum` per block.

    Raises:
        ValueError: wrong shapes, a missing ``spec`` or ``tangent``.
    """
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be square, got {tuple(H.shape)}")
    if by == "tangent":
        if tangent is None:
            raise ValueError("by='tangent' needs the tangent vectors (tangent=family.tangent_basis(values))")
        U, N = orthonormal_complement(tangent.to(H.dtype))
        return [_block("tangent", U.T @ H @ U), _block("normal", N.T @ H @ N)]
    if spec is None:
        raise ValueError(f"by={by!r} needs the ModelSpec")
    P = num_params(spec)
    if H.shape != (P, P):
        raise ValueError(f"H must be ({P}, {P}) for {spec.describe()}, got {tuple(H.shape)}")
    out = []
    for name, idx in parameter_groups(spec, by).items():  # type: ignore[arg-type]
        ix = torch.tensor(idx, device=H.device)
        out.append(_block(name, H[ix][:, ix]))
    return out


def inertia_modulo_symmetries(
    oracle: LossOracle | Callable | torch.Tensor,
    flat: torch.Tensor,
    *,
    spec: ModelSpec | None = None,
    symmetries: Sequence[object] = (),
    rtol: float | None = None,
) -> Inertia:
    r"""Inertia of the Hessian and of its restriction to the complement of the symmetry directions.

    The generators :math:`G` of the model's continuous symmetries at :math:`\theta`
    (:func:`landscape.numeric.derivatives.symmetry_generators`, plus ``symmetries``, e.g. a family's) span
    directions along which the loss is constant; at a stationary point each carries a zero
    eigenvalue. The reduced inertia is that of :math:`N^\top H N`, ``N`` an orthonormal basis of
    :math:`\mathrm{span}(G)^\perp` (``Inertia.reduced``).

    Args:
        oracle: a loss oracle (or callable with ``spec``), or a dense ``(P, P)`` Hessian (then ``spec`` is needed).
        flat: :math:`\theta`.
        spec: architecture (for a plain callable or a dense Hessian).
        symmetries: extra :class:`~landscape.theory.symmetries.Symmetry` declarations, added to the
            model's own (:func:`~landscape.theory.symmetries.model_symmetries`; a family's
            ``symmetries`` already start with those, and a repeated generator changes nothing).
        rtol: relative zero threshold (default :data:`landscape.tolerances.ZERO_EIG`).

    Returns:
        :class:`~landscape.numeric.derivatives.Inertia` with ``n_symmetry`` and ``reduced`` set.

    Raises:
        ValueError, TypeError: bad inputs.
    """
    if isinstance(oracle, torch.Tensor):
        if spec is None:
            raise ValueError("a dense Hessian needs spec=")
        H = oracle
    else:
        orc = as_oracle(oracle, spec)
        spec = orc.spec
        H = hessian(orc, _check_flat(orc, flat).detach())
    from landscape.theory.symmetries import model_symmetries

    G = symmetry_generators(spec, flat.detach().to(H.dtype), (*model_symmetries(spec), *symmetries))
    return inertia(H, rtol=rtol, symmetries=G)

