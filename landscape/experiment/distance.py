r"""Distances from learned weights to the characterised constructions.

Three kinds of distance, from cheapest to most general:

* **Distance to a multiple of the identity** (Ahn, Cheng, Daneshmand, Sra 2023, Fig. 2;
  Cheng, Chen, Sra 2024):

  .. math::
      \mathrm{Dist}(M, I) = \min_{\alpha\in\mathbb R} \frac{\lVert M - \alpha I\rVert_F}{\lVert M\rVert_F},
      \qquad \alpha^* = \frac{\operatorname{tr} M}{d},

  applied per layer to :math:`A_l = -[Q_l]_{1:d,1:d}` (linear attention) or to
  :math:`M_l = [B_l]_{:,1:d}^\top [C_l]_{:,1:d}` (kernel attention), raw and *whitened*
  (:math:`\Sigma^{1/2} M_l \Sigma^{1/2}`). Ahn et al.'s Theorem 3 predicts the whitened distance
  :math:`\to 0` while the raw one stays large when :math:`\Sigma \ne I`.

* **Projection onto a family** :math:`S = \{\theta(s)\}` modulo the model's symmetries:

  .. math::
      \min_{s,\ g\in G}\ \frac{\lVert \theta - g\cdot\theta(s)\rVert_F}{\lVert\theta\rVert_F},

  with the Frobenius norm over **all** entries of all parameters. ``G`` is the product of the
  family's symmetry groups, declared once in :mod:`landscape.theory.symmetries`
  (:attr:`~landscape.theory.families.Family.symmetries`): ``P → cP, Q → Q/c`` per linear head,
  :math:`B \mapsto GB,\ C \mapsto G^{-\top}C` with :math:`G \in GL(D)` per dot-product kernel head
  (linear, ReLU, exp, softmax: :math:`(Gu)^\top G^{-\top}w = u^\top w`), common rotations
  :math:`G \in O(D)` per head whose kernel also reads norms, and the value scalings of positively
  homogeneous kernels; every component is reached (negative scales where they are symmetries,
  :math:`\det G < 0`). The scalars and the group elements are fitted jointly by nonlinear least
  squares (``scipy.optimize.least_squares``, float64, exact Jacobian) from several starts; the
  components are chosen by greedy sweeps. The relative residual is *the* distance to the
  construction — the one training logs, ``landscape verify --params/--run`` reports and
  :func:`landscape.numeric.family_point` accepts full weights by.

* **Step sizes: the fit in whitened coordinates.** When :math:`\Sigma \ne I` the projection above
  weights every raw entry alike, so for Ahn et al.'s :math:`A_l = a_l\Sigma^{-1}` the fitted
  :math:`a_l` is dominated by the small-variance directions of :math:`\Sigma` (where
  :math:`\Sigma^{-1}` is large): it is a least-squares coefficient, not the paper's step size.
  :func:`whitened_family` / :func:`project_whitened` express the weights in the tokens of
  whitened covariates :math:`x = \Sigma^{1/2}\xi` (:func:`landscape.core.model.change_of_basis` with
  :math:`T = \mathrm{diag}(\Sigma^{1/2}, 1)`; :math:`A_l \mapsto \Sigma^{1/2}A_l\Sigma^{1/2}`) and
  fit the family built for :math:`\Sigma = I` there, where every direction counts alike; for
  :math:`A_l = a_l\Sigma^{-1} + E` this recovers :math:`a_l = \operatorname{tr}(\Sigma^{1/2}A_l\Sigma^{1/2})/d`
  up to the noise. Those are the step sizes the papers state.

* **Function-space distance**: the relative RMS gap between the predictions of the learned weights
  and of a reference (the projected family point, or any construction) on held-out prompts.

Everything here accepts stacked parameters (a leading seed axis) and works on any family,
built-in or user-defined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from landscape._checks import check_int, check_tensor
from landscape.theory.families import Family
from landscape.theory.symmetries import Symmetry
from landscape.core.model import (
    ModelSpec,
    change_of_basis,
    check_params,
    flatten_params,
    param_shapes,
    predict,
    unflatten_params,
    whitening_transform,
)
from landscape.core.tasks import PromptBatch, sqrtm_psd

__all__ = [
    "dist_to_identity",
    "identity_coefficient",
    "extract_blocks",
    "attention_matrices",
    "whiten",
    "IdentityDistances",
    "identity_distances",
    "Projection",
    "StackedProjection",
    "project_onto_family",
    "project_stacked",
    "whitened_family",
    "project_whitened",
    "prediction_gap",
]


# ---------------------------------------------------------------------- distance to the identity
def identity_coefficient(M: torch.Tensor) -> torch.Tensor:
    r"""The minimiser :math:`\alpha^* = \operatorname{tr}(M)/d` of :math:`\lVert M - \alpha I\rVert_F`.

    Args:
        M: ``(..., d, d)`` square matrices.

    Returns:
        ``(...)`` the coefficients.

    Raises:
        TypeError: not a floating tensor.
        ValueError: not square.
    """
    _check_square("M", M)
    return torch.diagonal(M, dim1=-2, dim2=-1).sum(-1) / M.shape[-1]


def dist_to_identity(M: torch.Tensor) -> torch.Tensor:
    r"""Relative distance of ``M`` to the line of multiples of the identity (Ahn et al. 2023).

    .. math::
        \mathrm{Dist}(M, I) = \min_\alpha \frac{\lVert M - \alpha I\rVert_F}{\lVert M\rVert_F}
        = \frac{\lVert M - \tfrac{\operatorname{tr} M}{d} I\rVert_F}{\lVert M\rVert_F} \in [0, 1].

    The minimisation over :math:`\alpha` is a one-dimensional least-squares problem whose normal
    equation :math:`\langle M - \alpha I, I\rangle = 0` gives :math:`\alpha = \operatorname{tr}(M)/d`.
    The distance is invariant under :math:`M \mapsto cM` (``c ≠ 0``), so the scale symmetry of the
    attention weights does not affect it. ``M = 0`` gives NaN (the ratio is undefined).
    Vmappable (no ``.item()``, no data-dependent branches).

    Args:
        M: ``(..., d, d)`` square matrices.

    Returns:
        ``(...)`` distances.

    Raises:
        TypeError: not a floating tensor.
        ValueError: not square.
    """
    alpha = identity_coefficient(M)
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    resid = torch.linalg.matrix_norm(M - alpha[..., None, None] * eye)
    norm = torch.linalg.matrix_norm(M)
    return resid / norm


def _check_square(name: str, M: torch.Tensor) -> None:
    check_tensor(name, M)
    if M.ndim < 2 or M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{name} must hold square matrices (..., d, d), got shape {tuple(M.shape)}")


# ---------------------------------------------------------------------- per-layer blocks
def _lead(params: Mapping[str, torch.Tensor], spec: ModelSpec) -> tuple[int, ...]:
    """Leading (seed) axes of a parameter dict, after checking it fits ``spec``."""
    first = next(iter(params.values()))
    batch_dims = first.ndim - 2
    check_params(spec, params, batch_dims=batch_dims)
    return tuple(first.shape[:batch_dims])


def extract_blocks(
    params: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    name: str,
    rows: slice = slice(None),
    cols: slice = slice(None),
) -> torch.Tensor:
    """Stack one block of one parameter across layers and heads.

    Args:
        params: parameter dict (leading seed axes allowed).
        spec: architecture.
        name: the parameter letter, ``"P"``, ``"Q"`` (linear heads) or ``"V"``, ``"B"``, ``"C"``
            (kernel heads).
        rows, cols: the block, e.g. ``slice(0, d)`` for the covariate block.

    Returns:
        ``(..., L, H, r, c)`` blocks (``H`` heads).

    Raises:
        ValueError: if a head of ``spec`` has no parameter ``name`` (accepted letters listed).
    """
    _lead(params, spec)
    for h, head in enumerate(spec.heads):
        if name not in head.param_names:
            raise ValueError(
                f"head {h} ({head.describe()}) has no parameter {name!r}; accepted: {head.param_names}"
            )
    per_layer = []
    for l in range(spec.layers):
        per_layer.append(torch.stack([params[spec.key(l, h, name)][..., rows, cols]
                                      for h in range(len(spec.heads))], dim=-3))
    return torch.stack(per_layer, dim=-4)


def attention_matrices(params: Mapping[str, torch.Tensor], spec: ModelSpec) -> torch.Tensor:
    r"""The ``d × d`` covariate matrix of every layer and head.

    * linear head (Ahn et al. 2023): :math:`A_l = -[Q_l]_{1:d,1:d}`, the preconditioner of
      :math:`w_{l+1} = w_l - A_l^\top\nabla R(w_l)` when :math:`P_l = \mathrm{diag}(0, 1)`;
    * kernel head (Cheng et al. 2024): :math:`M_l = [B_l]_{:,1:d}^\top[C_l]_{:,1:d}`, the bilinear form
      :math:`x_i^\top M_l x_j` inside :math:`\tilde h(Bz_i, Cz_j)` restricted to covariates.

    Args:
        params: parameter dict (leading seed axes allowed).
        spec: architecture.

    Returns:
        ``(..., L, H, d, d)``.
    """
    _lead(params, spec)
    d = spec.d
    per_layer = []
    for l in range(spec.layers):
        mats = []
        for h, head in enumerate(spec.heads):
            if head.kind == "linear":
                mats.append(-params[spec.key(l, h, "Q")][..., :d, :d])
            else:
                B = params[spec.key(l, h, "B")][..., :, :d]
                C = params[spec.key(l, h, "C")][..., :, :d]
                mats.append(B.transpose(-1, -2) @ C)
        per_layer.append(torch.stack(mats, dim=-3))
    return torch.stack(per_layer, dim=-4)


def whiten(M: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r""":math:`\Sigma^{1/2} M \Sigma^{1/2}`: ``M`` expressed in whitened coordinates :math:`x = \Sigma^{1/2}\xi`.

    Args:
        M: ``(..., d, d)``.
        sigma: ``(d, d)`` covariance.

    Returns:
        ``(..., d, d)`` in ``M``'s dtype and device.

    Raises:
        ValueError: shape mismatch.
    """
    _check_square("M", M)
    _check_square("sigma", sigma)
    if sigma.shape[-1] != M.shape[-1]:
        raise ValueError(f"sigma is {tuple(sigma.shape)} but the matrices are {M.shape[-1]}x{M.shape[-1]}")
    half = sqrtm_psd(sigma.to(torch.float64)).to(dtype=M.dtype, device=M.device)
    return half @ M @ half


@dataclass(frozen=True)
class IdentityDistances:
    r"""Per-layer, per-head distances :math:`\mathrm{Dist}(M_l, I)`.

    Attributes:
        raw: ``(..., L, H)`` :math:`\mathrm{Dist}(M_l, I)`.
        whitened: ``(..., L, H)`` :math:`\mathrm{Dist}(\Sigma^{1/2}M_l\Sigma^{1/2}, I)` (equal to ``raw``
            when no :math:`\Sigma` was given).
        alpha: ``(..., L, H)`` the fitted :math:`\alpha^* = \operatorname{tr}/d` of the whitened matrices.
        matrices: ``(..., L, H, d, d)`` the matrices :math:`M_l` (see :func:`attention_matrices`).
    """

    raw: torch.Tensor
    whitened: torch.Tensor
    alpha: torch.Tensor
    matrices: torch.Tensor


def identity_distances(
    params: Mapping[str, torch.Tensor], spec: ModelSpec, sigma: torch.Tensor | None = None
) -> IdentityDistances:
    r"""Ahn et al.'s metric on every layer: raw and whitened :math:`\mathrm{Dist}(\cdot, I)`.

    Args:
        params: parameter dict (leading seed axes allowed).
        spec: architecture.
        sigma: covariance of the covariates (``None`` = identity: whitened = raw).

    Returns:
        :class:`IdentityDistances`.
    """
    M = attention_matrices(params, spec)
    W = M if sigma is None else whiten(M, sigma)
    return IdentityDistances(dist_to_identity(M), dist_to_identity(W), identity_coefficient(W), M)


# ---------------------------------------------------------------------- projection
@dataclass(frozen=True)
class Projection:
    r"""The nearest point of a family to learned weights, modulo symmetries.

    Attributes:
        family: the family's name.
        names: symbol names, in the family's order.
        values: fitted scalars, symbol name → value.
        distance: the relative residual :math:`\lVert\theta - g\cdot\theta(s)\rVert_F / \lVert\theta\rVert_F`
            — the distance to the construction.
        residual_norm: :math:`\lVert\theta - g\cdot\theta(s)\rVert_F`.
        theta_norm: :math:`\lVert\theta\rVert_F`.
        symmetry_t: one-parameter symmetry name (``scale``, ``custom``) → fitted group parameter ``t``
            (``0`` = identity).
        signs: symmetry name → ``±1`` for every symmetry with two components: the sign of the scale
            ``c = ±e^t`` of a ``scale`` symmetry, :math:`\operatorname{sign}\det G` of a ``gl`` / ``orthogonal`` one.
        point: :math:`g\cdot\theta(s)` as a parameter dict (float64), the projected weights.
        null_dim: directions of ``(s, g)`` the fit cannot resolve (Jacobian singular values below
            ``1e-7`` of the largest): e.g. ``b_l, c_l`` of ``fgd`` trade off against the
            ``B/C`` symmetry. The distance is well defined regardless; the scalars then are not unique.
        converged: whether the least-squares solver reported convergence for the chosen start.
        nfev: function evaluations over all starts.
        group: ``gl`` / ``orthogonal`` symmetry name → the fitted matrix ``G`` (float64).
        coords: symmetry name → its fitted chart coordinates (:meth:`~landscape.theory.symmetries.Symmetry.chart`;
            for ``orthogonal`` ones relative to the base the fit started from, so :attr:`group` is the element),
            for warm starts.
    """

    family: str
    names: tuple[str, ...]
    values: dict[str, float]
    distance: float
    residual_norm: float
    theta_norm: float
    symmetry_t: dict[str, float] = field(default_factory=dict)
    signs: dict[str, int] = field(default_factory=dict)
    point: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    null_dim: int = 0
    converged: bool = True
    nfev: int = 0
    group: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    coords: dict[str, tuple[float, ...]] = field(default_factory=dict, repr=False)

    def vector(self) -> torch.Tensor:
        """Fitted scalars as a float64 vector in :attr:`names` order."""
        return torch.tensor([self.values[n] for n in self.names], dtype=torch.float64)

    def scale(self, name: str) -> float:
        """The signed scale ``c = sign · e^t`` of the ``scale`` symmetry ``name``."""
        return self.signs.get(name, 1) * math.exp(self.symmetry_t[name])


@dataclass(frozen=True)
class StackedProjection:
    """Projections of a stack of seeds.

    Attributes:
        projections: one :class:`Projection` per seed.
        distance: ``(S,)`` float64 distances.
        values: ``(S, k)`` float64 fitted scalars, columns in :attr:`names` order.
        names: symbol names.
    """

    projections: tuple[Projection, ...]
    distance: torch.Tensor
    values: torch.Tensor
    names: tuple[str, ...]

    def point(self) -> dict[str, torch.Tensor]:
        """Stacked projected weights ``(S, D, D)`` per name."""
        return {k: torch.stack([p.point[k] for p in self.projections]) for k in self.projections[0].point}


class _FamilyMap:
    """The family's flat weights :math:`\theta(s)` and Jacobian, compiled once to numpy from sympy."""

    def __init__(self, family: Family) -> None:
        import sympy

        mats = family.sympy_params()
        entries: list = []
        for key in param_shapes(family.spec):
            entries.extend(list(mats[key]))  # row-major, as flatten_params
        vec = sympy.Matrix(entries)
        syms = list(family.symbols)
        self.family = family
        self.size = len(entries)
        self.dim = len(syms)
        jac = vec.jacobian(syms)
        # Affine families (every built-in): theta(s) = c + J s exactly, evaluated by one mat-vec.
        self.affine = all(not e.free_symbols for e in jac)
        if self.affine:
            self._J = np.array(jac.tolist(), dtype=np.float64).reshape(self.size, self.dim)
            self._c = np.array(vec.subs({x: 0 for x in syms}).tolist(), dtype=np.float64).reshape(-1)
            self._Jt, self._ct = torch.from_numpy(self._J), torch.from_numpy(self._c)
        else:
            self._f = sympy.lambdify(syms, vec, modules="numpy")
            self._j = sympy.lambdify(syms, jac, modules="numpy")

    def theta(self, s: np.ndarray) -> np.ndarray:
        if self.affine:
            return self._c + self._J @ s
        out = np.asarray(self._f(*s), dtype=np.float64).reshape(-1)
        return np.broadcast_to(out, (self.size,)).copy() if out.size == 1 else out

    def theta_torch(self, s: torch.Tensor) -> torch.Tensor:
        """:math:`\\theta(s)` in torch (differentiable: ``torch.func`` transforms see through it)."""
        if self.affine:
            return self._ct + self._Jt @ s
        return self.family.flat(s)

    def jacobian(self, s: np.ndarray) -> np.ndarray:
        if self.affine:
            return self._J
        return np.asarray(self._j(*s), dtype=np.float64).reshape(self.size, self.dim)


_CACHE_SIZE = 512
_MAP_CACHE: dict[int, tuple[Family, _FamilyMap]] = {}


def _family_map(family: Family) -> _FamilyMap:
    hit = _MAP_CACHE.get(id(family))
    if hit is not None and hit[0] is family:
        return hit[1]
    fmap = _FamilyMap(family)
    if len(_MAP_CACHE) >= _CACHE_SIZE:
        _MAP_CACHE.pop(next(iter(_MAP_CACHE)))
    _MAP_CACHE[id(family)] = (family, fmap)
    return fmap


class _Objective:
    r"""Residual :math:`r(s, c) = \theta - g_{\sigma,c}\cdot\theta(s)` (flat, float64) and its Jacobian.

    ``c`` are the chart coordinates of every symmetry and :math:`\sigma` their components
    (:meth:`~landscape.theory.symmetries.Symmetry.chart`). The declared kinds act linearly on each
    parameter: ``scale`` symmetries as an entrywise scale :math:`\prod_j (\sigma_j e^{t_j})^{w_{je}}`
    (:math:`w_{je}` = the power on the ``up`` entries, ``-1`` on the ``down`` ones), a ``gl`` /
    ``orthogonal`` one as :math:`B \mapsto GB`, :math:`C \mapsto G^{-\top}C`; the Jacobian is then
    closed form (:math:`dG = R\,E_{ab}`, :math:`dG^{-\top} = -G^{-\top}dG^\top G^{-\top}`; the derivative
    of :math:`\exp` from the block exponential :math:`\exp\begin{psmallmatrix}X & E\\ 0 & X\end{psmallmatrix}`).
    A ``custom`` symmetry is applied in torch and the Jacobian taken by ``torch.func.jacfwd``.
    """

    def __init__(self, target: np.ndarray, family: Family, fmap: _FamilyMap,
                 syms: Sequence[Symmetry], comps: tuple[int, ...],
                 bases: Mapping[int, np.ndarray] | None = None) -> None:
        self.target, self.family, self.fmap, self.syms, self.comps = target, family, fmap, tuple(syms), comps
        self.bases = dict(bases or {})  # orthogonal symmetry j -> base R of its chart G = R exp(X)
        self.k = fmap.dim
        self.dims = [s.dim for s in self.syms]
        self.offsets = np.concatenate([[0], np.cumsum(self.dims)]).astype(int) + self.k
        self.m = int(sum(self.dims))
        self.custom = any(s.kind == "custom" for s in self.syms)
        shapes = param_shapes(family.spec)
        self.slices, i = {}, 0
        for key, (a, b) in shapes.items():
            self.slices[key] = slice(i, i + a * b)
            i += a * b
        self.scale_idx = [j for j, s in enumerate(self.syms) if s.kind == "scale"]
        self.matrix_idx = [j for j, s in enumerate(self.syms) if s.kind in ("gl", "orthogonal")]
        self.W = np.zeros((len(self.scale_idx), fmap.size))
        neg = np.zeros(fmap.size)
        for r, j in enumerate(self.scale_idx):
            sym = self.syms[j]
            up, down = sym.keys
            self.W[r, self.slices[up]] += sym.power
            self.W[r, self.slices[down]] -= 1.0
            if comps[j] < 0:  # c < 0: (-1)^power on up (an integer when flip), (-1) on down
                neg[self.slices[up]] += round(sym.power)
                neg[self.slices[down]] += 1
        self.sign_vec = np.where(np.mod(neg, 2) == 1, -1.0, 1.0)
        self._R = {}
        self._basis = {}
        for j in self.matrix_idx:
            sym = self.syms[j]
            R = np.eye(sym.size)
            if comps[j] < 0:
                R[-1, -1] = -1.0
            self._R[j] = self.bases.get(j, R) if sym.kind == "orthogonal" else R
            if sym.kind == "orthogonal":
                self._basis[j] = sym.lie_basis().numpy()

    # ------------------------------------------------------------------ group elements
    def _coords(self, x: np.ndarray, j: int) -> np.ndarray:
        return x[self.offsets[j]:self.offsets[j + 1]]

    def _matrices(self, x: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
        """``(G, G^{-T})`` of matrix symmetry ``j``."""
        sym, R = self.syms[j], self._R[j]
        c = self._coords(x, j)
        D = sym.size
        if sym.kind == "gl":
            G = R @ (np.eye(D) + c.reshape(D, D))
            return G, np.linalg.inv(G).T
        from scipy.linalg import expm

        G = R @ expm(np.einsum("i,iab->ab", c, self._basis[j]))
        return G, G

    def _scale(self, x: np.ndarray) -> np.ndarray:
        t = np.array([x[self.offsets[j]] for j in self.scale_idx])
        return self.sign_vec * np.exp(t @ self.W) if self.scale_idx else np.ones(self.fmap.size)

    def _apply(self, vec: np.ndarray, mats: dict[int, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """The linear maps ``B -> G B``, ``C -> G^{-T} C`` applied to ``vec (P,)`` or ``(P, n)``."""
        out = vec.copy()
        for j, (G, H) in mats.items():
            kb, kc = self.syms[j].keys
            D = G.shape[0]
            for key, M in ((kb, G), (kc, H)):
                sl = self.slices[key]
                blk = vec[sl].reshape((D, D) + vec.shape[1:])
                out[sl] = np.tensordot(M, blk, axes=(1, 0)).reshape(vec[sl].shape)
        return out

    # ------------------------------------------------------------------ residual and Jacobian
    def _torch_point(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.family.spec
        d = unflatten_params(self.fmap.theta_torch(x[: self.k]), spec)
        for j, sym in enumerate(self.syms):
            c = x[self.offsets[j]:self.offsets[j + 1]]
            if j in self.bases:  # an orthogonal chart around a fitted base: G = R exp(X)
                R = torch.from_numpy(self.bases[j]).to(c)
                G = R @ torch.linalg.matrix_exp(sym._matrix(c, R))
                d = sym._apply_matrix(d, G, G)
            else:
                d = sym.chart(d, c, self.comps[j])
        return flatten_params(d, spec)

    def point(self, x: np.ndarray) -> np.ndarray:
        if self.custom:
            with torch.no_grad():
                return self._torch_point(torch.from_numpy(np.array(x, dtype=np.float64))).numpy()
        theta = self.fmap.theta(x[: self.k])
        mats = {j: self._matrices(x, j) for j in self.matrix_idx}
        return self._scale(x) * self._apply(theta, mats)

    def residual(self, x: np.ndarray) -> np.ndarray:
        return self.target - self.point(x)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        if self.custom:
            J = torch.func.jacfwd(self._torch_point)(torch.from_numpy(np.array(x, dtype=np.float64)))
            return -J.numpy()
        s = x[: self.k]
        theta = self.fmap.theta(s)
        mats = {j: self._matrices(x, j) for j in self.matrix_idx}
        sc = self._scale(x)
        moved = self._apply(theta, mats)
        cols = [sc[:, None] * self._apply(self.fmap.jacobian(s), mats)]
        out = np.zeros((self.fmap.size, self.m))
        for r, j in enumerate(self.scale_idx):
            out[:, self.offsets[j] - self.k] = self.W[r] * sc * moved
        for j in self.matrix_idx:
            sym = self.syms[j]
            kb, kc = sym.keys
            D = sym.size
            G, H = mats[j]
            Bs = theta[self.slices[kb]].reshape(D, D)
            Cs = theta[self.slices[kc]].reshape(D, D)
            R = self._R[j]
            o = self.offsets[j] - self.k
            if sym.kind == "gl":
                # d(GB)/dY_ab = R[:, a] B_s[b, :];  d(G^{-T}C)/dY_ab = -H[:, b] (R^T H C_s)[a, :]
                dB = np.einsum("ia,bj->abij", R, Bs).reshape(D * D, D * D)
                RHC = R.T @ H @ Cs
                dC = -np.einsum("ib,aj->abij", H, RHC).reshape(D * D, D * D)
                out[self.slices[kb], o:o + D * D] = (sc[self.slices[kb]][None, :] * dB).T
                out[self.slices[kc], o:o + D * D] = (sc[self.slices[kc]][None, :] * dC).T
            else:
                from scipy.linalg import expm

                X = np.einsum("i,iab->ab", self._coords(x, j), self._basis[j])
                for i, E in enumerate(self._basis[j]):
                    big = np.zeros((2 * D, 2 * D))
                    big[:D, :D] = big[D:, D:] = X
                    big[:D, D:] = E
                    dG = R @ expm(big)[:D, D:]
                    out[self.slices[kb], o + i] = sc[self.slices[kb]] * (dG @ Bs).reshape(-1)
                    out[self.slices[kc], o + i] = sc[self.slices[kc]] * (dG @ Cs).reshape(-1)
        return -np.concatenate(cols + [out], axis=1)

    # ------------------------------------------------------------------ starts
    def matrix_start(self, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], dict[int, np.ndarray]]:
        r"""Group elements of the matrix symmetries that fit the target at the scalars of ``x``:
        ``gl`` — the linear least squares :math:`\min_{G,\mu} \lVert GB_s - B\rVert^2 + \lVert C^\top G - \mu C_s^\top\rVert^2`
        (both vanish at the true ``G`` of a transformed construction, since :math:`G^\top C = C_s`; the
        free :math:`\mu` absorbs scalars of the wrong sign, which the next step in ``s`` corrects);
        ``orthogonal`` — orthogonal Procrustes of :math:`[B_s\ \pm C_s]` onto :math:`[B\ C]`, which becomes
        the base of the chart (``X = 0``; no matrix logarithm, which is ill-defined at rotations by π).
        Returns the chart coordinates (other symmetries unchanged), the components (``sign det G``) and
        the bases of the orthogonal charts."""
        x = x.copy()
        comps = list(self.comps)
        bases = dict(self.bases)
        theta = self.fmap.theta(x[: self.k])
        for j in self.matrix_idx:
            sym = self.syms[j]
            kb, kc = sym.keys
            D = sym.size
            Bs, Cs = theta[self.slices[kb]].reshape(D, D), theta[self.slices[kc]].reshape(D, D)
            Bt, Ct = self.target[self.slices[kb]].reshape(D, D), self.target[self.slices[kc]].reshape(D, D)
            if sym.kind == "gl":
                # vec(G B_s) = (I ⊗ B_s^T) vec(G), vec(C^T G) = (C^T ⊗ I) vec(G) (row-major vec)
                # and a free scale mu on C_s: the scalars' signs may not match the target's yet (C^T G = mu C_s^T)
                A = np.zeros((2 * D * D, D * D + 1))
                A[: D * D, : D * D] = np.kron(np.eye(D), Bs.T)
                A[D * D:, : D * D] = np.kron(Ct.T, np.eye(D))
                A[D * D:, -1] = -Cs.T.reshape(-1)
                b = np.concatenate([Bt.reshape(-1), np.zeros(D * D)])
                ident = np.concatenate([np.eye(D).reshape(-1), [1.0]])
                g, *_ = np.linalg.lstsq(A, b - A @ ident, rcond=None)  # minimum-norm step from (I, 1):
                G = (ident + g)[:-1].reshape(D, D)  # entries the target does not pin stay those of I
                if not np.all(np.isfinite(G)) or abs(np.linalg.det(G)) < 1e-12 * max(1.0, np.abs(G).max()) ** D:
                    continue
                sign = 1 if np.linalg.det(G) > 0 else -1
                R = np.eye(D)
                R[-1, -1] = sign
                x[self.offsets[j]:self.offsets[j + 1]] = (R @ G - np.eye(D)).reshape(-1)
            else:
                # Procrustes of [B_s, ±C_s] onto [B, C] (the scalars' relative sign may be wrong yet); keep
                # the sign whose rotated blocks, each optimally rescaled, fit the target better
                best = None
                for sgn in (1.0, -1.0):
                    U, _, Vt = np.linalg.svd(np.concatenate([Bt, Ct], 1) @ np.concatenate([Bs, sgn * Cs], 1).T)
                    Gc = U @ Vt
                    err = sum(float(np.sum(T**2)) - (float(np.sum(T * (Gc @ S))) ** 2 / max(float(np.sum((Gc @ S)**2)),
                                                                                             1e-300))
                              for T, S in ((Bt, Bs), (Ct, Cs)))
                    if best is None or err < best[0]:
                        best = (err, Gc)
                G = best[1]
                sign = 1 if np.linalg.det(G) > 0 else -1
                bases[j] = G
                x[self.offsets[j]:self.offsets[j + 1]] = 0.0
            comps[j] = sign
        return x, tuple(comps), bases


def _fit(obj: _Objective, x0: np.ndarray, budget: int = 50) -> tuple[np.ndarray, float, bool, int]:
    from scipy.optimize import least_squares

    method = "lm" if obj.fmap.size >= x0.size else "trf"
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            sol = least_squares(obj.residual, x0, jac=obj.jacobian, method=method, xtol=1e-12, ftol=1e-12,
                                gtol=1e-12, max_nfev=budget * (x0.size + 1))
        except (ValueError, torch.linalg.LinAlgError):  # a start at a singular group element
            return x0, math.inf, False, 0
    cost = float(np.linalg.norm(sol.fun)) if np.all(np.isfinite(sol.fun)) else math.inf
    return sol.x, cost, bool(sol.success), int(sol.nfev)


def _initial_scalars(obj: _Objective, t: np.ndarray) -> np.ndarray:
    """One Gauss–Newton step in ``s`` from ``s = 0`` at fixed group coordinates ``t`` (exact for affine families)."""
    x0 = np.concatenate([np.zeros(obj.k), t])
    try:
        J = obj.jacobian(x0)[:, : obj.k]
        r = obj.residual(x0)
    except torch.linalg.LinAlgError:
        return np.zeros(obj.k)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        step, *_ = np.linalg.lstsq(J, r, rcond=None)
    step = -step
    return step if np.all(np.isfinite(step)) else np.zeros(obj.k)


def _linear_cost(obj: _Objective, t: np.ndarray) -> float:
    s0 = _initial_scalars(obj, t)
    cost = float(np.linalg.norm(obj.residual(np.concatenate([s0, t]))))
    return cost if math.isfinite(cost) else math.inf


def _flip(comps: tuple[int, ...], j: int) -> tuple[int, ...]:
    return tuple(-c if i == j else c for i, c in enumerate(comps))


def _reset(obj: _Objective, t: np.ndarray, j: int) -> np.ndarray:
    """``t`` with symmetry ``j``'s coordinates set to the identity of its chart."""
    out = t.copy()
    out[obj.offsets[j] - obj.k:obj.offsets[j + 1] - obj.k] = 0.0
    return out


def _guess_components(objective: Callable[[tuple[int, ...]], _Objective], t: np.ndarray,
                      flippable: Sequence[int], m: int) -> tuple[int, ...]:
    """Initial components (signs of the scales, of det G): greedily flip each symmetry whose flip lowers
    the Gauss–Newton (for affine families: exact linear least-squares) residual at fixed ``t``."""
    comps = (1,) * m
    if not flippable:
        return comps
    cost = _linear_cost(objective(comps), t)
    for j in flippable:
        trial = _flip(comps, j)
        obj = objective(trial)
        c = _linear_cost(obj, _reset(obj, t, j))
        if c < cost:
            comps, cost = trial, c
    return comps


def _matrix_start(objective: Callable[..., _Objective], x: np.ndarray, comps: tuple[int, ...],
                  bases: dict[int, np.ndarray], rounds: int = 3
                  ) -> tuple[np.ndarray, tuple[int, ...], dict[int, np.ndarray]]:
    """Alternate the closed-form group elements of :meth:`_Objective.matrix_start` and a Gauss–Newton
    step in the scalars, keeping the best start (by residual) among the rounds and ``x`` itself."""
    obj = objective(comps, bases)
    if not obj.matrix_idx:
        return x, comps, bases
    k = obj.k
    best = (float(np.linalg.norm(obj.residual(x))), x, comps, bases)
    for _ in range(rounds):
        x, comps, bases = objective(comps, bases).matrix_start(x)
        obj = objective(comps, bases)
        x = np.concatenate([_initial_scalars(obj, x[k:]), x[k:]])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                cost = float(np.linalg.norm(obj.residual(x)))
            except np.linalg.LinAlgError:
                break
        if math.isfinite(cost) and cost < best[0]:
            best = (cost, x, comps, bases)
    return best[1], best[2], best[3]


def _start_coords(syms: Sequence[Symmetry], gen: torch.Generator) -> np.ndarray:
    """Random chart coordinates: ``t ~ N(0, 1)`` for one-parameter groups, ``N(0, 0.3²)`` entries for matrix groups."""
    parts = []
    for sym in syms:
        scale = 1.0 if sym.dim == 1 else 0.3
        parts.append(scale * torch.randn(sym.dim, generator=gen, dtype=torch.float64).numpy())
    return np.concatenate(parts) if parts else np.zeros(0)


def project_onto_family(
    params: Mapping[str, torch.Tensor],
    family: Family,
    *,
    symmetries: bool = True,
    starts: int = 2,
    generator: torch.Generator | None = None,
    init: Projection | None = None,
) -> Projection:
    r"""Fit the family's scalars (and symmetry group elements) to learned weights by least squares.

    Solves

    .. math::
        \min_{s\in\mathbb R^k,\ g\in G}
        \big\lVert \theta - g\cdot\theta(s)\big\rVert_F^2

    over all entries of all parameters, where ``G`` is the product of the family's symmetry groups
    (:attr:`~landscape.theory.families.Family.symmetries`, declared in :mod:`landscape.theory.symmetries`):
    the ``P/Q`` and value scalings with signed scale :math:`\pm e^{t}`, the
    :math:`B \mapsto GB,\ C \mapsto G^{-\top}C` group :math:`GL(D)` of dot-product kernels (chart
    :math:`G = R(I + Y)`, :math:`\det R = \pm 1`) and the common rotations :math:`O(D)` of the other
    kernels (:math:`G = R\exp(X)`). The family map is compiled from the sympy blocks (any family:
    built-in or user-defined, affine or not); the Jacobian is closed form when every symmetry is a
    scaling and exact forward-mode AD otherwise. Starts: the identity, then random group elements
    (from ``generator``), each with ``s`` from one Gauss–Newton step at ``s = 0``, plus ``init`` (a
    previous projection, e.g. of the same seed earlier in training) when given. For each start the
    component of every symmetry that has two (sign of a scale, sign of :math:`\det G`) is chosen by
    greedy sweeps (flip one, refit, keep if better); the best fit wins.

    This is *the* distance to a family: training logs it (``family_distance``), ``landscape verify
    --params / --run`` reports it, and :func:`landscape.numeric.family_point` accepts full weights
    by it.

    Args:
        params: learned weights (one model, no seed axis).
        family: the family.
        symmetries: fit modulo the family's symmetries (``False``: plain least squares in ``s``).
        starts: number of fresh starts (``>= 1``); with ``init`` only one fresh start (the identity) is
            added to the warm start.
        generator: randomness for the extra starts (default: a fixed seed, so results are
            reproducible).
        init: a previous :class:`Projection` onto the same family to warm-start from.

    Returns:
        :class:`Projection`.

    Raises:
        ValueError: ``params`` do not fit the family's model, ``starts < 1``, or ``init`` belongs
            to another family.
        TypeError: non-tensor parameters.
    """
    spec = family.spec
    check_params(spec, params)
    check_int("starts", starts, minimum=1)
    if init is not None and tuple(init.names) != family.names:
        raise ValueError(f"init is a projection onto {init.family!r} with symbols {init.names}, "
                         f"not onto {family.name!r} with {family.names}")
    target = flatten_params({k: v.detach().to(device="cpu", dtype=torch.float64) for k, v in params.items()},
                            spec).numpy()
    theta_norm = float(np.linalg.norm(target))
    syms = tuple(family.symmetries) if symmetries else ()
    fmap = _family_map(family)
    k, m = fmap.dim, len(syms)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    objectives: dict[tuple, _Objective] = {}

    def objective(comps: tuple[int, ...], bases: Mapping[int, np.ndarray] | None = None) -> _Objective:
        key = (comps, tuple((j, bases[j].tobytes()) for j in sorted(bases or {})))
        if key not in objectives:
            objectives[key] = _Objective(target, family, fmap, syms, comps, bases)
        return objectives[key]

    start_list: list[tuple[np.ndarray | None, np.ndarray, tuple[int, ...], dict[int, np.ndarray]]] = []
    if init is not None:
        init_bases = {j: init.group[s.name].numpy() for j, s in enumerate(syms)
                      if s.kind == "orthogonal" and s.name in init.group}
        t_init = [np.asarray(init.coords.get(s.name, (init.symmetry_t.get(s.name, 0.0),) if s.dim == 1
                                             else (0.0,) * s.dim), dtype=np.float64) for s in syms]
        t_init = [c if c.size == s.dim and j not in init_bases else np.zeros(s.dim)
                  for j, (c, s) in enumerate(zip(t_init, syms))]
        start_list.append((init.vector().numpy(), np.concatenate(t_init) if t_init else np.zeros(0),
                           tuple(init.signs.get(s.name, 1) for s in syms), init_bases))
    # components of the scales are chosen greedily; those of GL / O(D) by the sign of det G of the matrix start
    flippable = [j for j, s in enumerate(syms) if s.kind in ("scale", "custom") and len(s.components) > 1]
    for j in range(starts if init is None else 1):
        t0 = np.zeros(sum(s.dim for s in syms)) if j == 0 else _start_coords(syms, gen)
        start_list.append((None, t0, _guess_components(objective, t0, flippable, m), {}))

    best: tuple[float, np.ndarray, tuple[int, ...], bool, dict[int, np.ndarray]] | None = None
    nfev = 0
    for s0, t0, comps, bases in start_list:
        if s0 is None:
            s0 = _initial_scalars(objective(comps, bases), t0)
        x0, comps, bases = _matrix_start(objective, np.concatenate([s0, t0]), comps, bases)
        x, cost, ok, nf = _fit(objective(comps, bases), x0)
        nfev += nf
        for _sweep in range(2):
            changed = False
            for j in flippable:
                trial = _flip(comps, j)
                obj = objective(trial, bases)
                t_cur = _reset(obj, x[k:], j)  # a scale fitted with the wrong sign runs off to t -> -inf
                x_t, cost_t, ok_t, nf = _fit(obj, np.concatenate([_initial_scalars(obj, t_cur), t_cur]), budget=4)
                nfev += nf
                if cost_t < cost * (1 - 1e-12):
                    x_t, cost_t, ok_t, nf = _fit(obj, x_t)
                    nfev += nf
                    x, cost, ok, comps, changed = x_t, cost_t, ok_t, trial, True
            if not changed:
                break
        if best is None or cost < best[0]:
            best = (cost, x, comps, ok, bases)
    assert best is not None
    cost, x, comps, ok, bases = best
    obj = objective(comps, bases)
    J = obj.jacobian(x)
    # singular values from the small Gram matrix J^T J (x.size^2), not an SVD of the tall J
    sv = np.sqrt(np.clip(np.linalg.eigvalsh(J.T @ J), 0, None)) if J.size else np.zeros(0)
    null_dim = int(x.size - np.sum(sv > 1e-7 * sv.max())) if sv.size and sv.max() > 0 else int(x.size)
    point = unflatten_params(torch.from_numpy(obj.point(x).copy()), spec)
    dist = cost / theta_norm if theta_norm > 0 else math.nan
    coords = {s.name: tuple(float(c) for c in x[obj.offsets[j]:obj.offsets[j + 1]]) for j, s in enumerate(syms)}
    return Projection(
        family=family.name,
        names=family.names,
        values={n: float(x[i]) for i, n in enumerate(family.names)},
        distance=dist,
        residual_norm=cost,
        theta_norm=theta_norm,
        symmetry_t={s.name: coords[s.name][0] for s in syms if s.dim == 1 and s.kind in ("scale", "custom")},
        signs={s.name: int(comps[j]) for j, s in enumerate(syms) if len(s.components) > 1},
        point=point,
        null_dim=null_dim,
        converged=ok,
        nfev=nfev,
        group={s.name: torch.from_numpy(obj._matrices(x, j)[0].copy()) for j, s in enumerate(syms)
               if s.kind in ("gl", "orthogonal")},
        coords=coords,
    )


def project_stacked(
    params: Mapping[str, torch.Tensor],
    family: Family,
    *,
    symmetries: bool = True,
    starts: int = 2,
    generator: torch.Generator | None = None,
    init: StackedProjection | Sequence[Projection | None] | None = None,
) -> StackedProjection:
    """:func:`project_onto_family` for every seed of a stack (a loop: each problem is small).

    Args:
        params: stacked weights ``(S, D, D)`` per name.
        family: the family.
        symmetries, starts, generator: as :func:`project_onto_family`.
        init: previous projections of the same seeds (warm starts), or ``None``.

    Returns:
        :class:`StackedProjection`.

    Raises:
        ValueError: if ``params`` is not a stack fitting the family's model, or ``init`` has the
            wrong number of seeds.
    """
    check_params(family.spec, params, batch_dims=1)
    S = next(iter(params.values())).shape[0]
    inits: Sequence[Projection | None]
    if init is None:
        inits = [None] * S
    else:
        inits = list(init.projections) if isinstance(init, StackedProjection) else list(init)
        if len(inits) != S:
            raise ValueError(f"init holds {len(inits)} projections for {S} seeds")
    projs = tuple(
        project_onto_family({k: v[i] for k, v in params.items()}, family, symmetries=symmetries,
                            starts=starts, generator=generator, init=inits[i])
        for i in range(S)
    )
    dist = torch.tensor([p.distance for p in projs], dtype=torch.float64)
    vals = torch.stack([p.vector() for p in projs]) if projs else torch.zeros(0, family.dim)
    return StackedProjection(projs, dist, vals, family.names)


# ---------------------------------------------------------------------- whitened coordinates
def whitened_family(family: Family, name: str | None = None, *, probes: int = 2) -> Family | None:
    r"""The family in whitened coordinates — the same family built for :math:`\Sigma = I` — when it is one.

    A family :math:`\theta_\Sigma(s)` lives in whitened coordinates when expressing its weights
    in the tokens of whitened covariates gives the family built for the identity:
    :math:`\mathrm{cob}(\theta_\Sigma(s), T) = \theta_I(s)` for every :math:`s`, with
    :math:`T = \mathrm{diag}(\Sigma^{1/2}, 1)` (:func:`landscape.core.model.change_of_basis`). Ahn et
    al.'s ``pgd`` and ``pgd-relaxed`` (:math:`A_l = a_l\Sigma^{-1}`) do; a family that ignores
    :math:`\Sigma` (``pgd-identity``, :math:`A_l = a_l I`) does not, and gets ``None``. This is
    checked numerically at ``probes`` points :math:`s \sim N(0, 1)` (fixed seed) in float64.

    Args:
        family: the family, built for its problem's :math:`\Sigma`.
        name: how to build it again (a built-in name or ``file.py:NAME``; default ``family.name``).
        probes: number of random points of the check.

    Returns:
        ``family`` itself when :math:`\Sigma` is ``None``; the family built for the identity when
        the check passes; ``None`` otherwise (or when it cannot be built for the identity).
    """
    from dataclasses import replace

    from landscape.theory.families import get_family

    sigma = family.problem.sigma
    if sigma is None:
        return family
    try:
        white = get_family(name if name is not None else family.name, replace(family.problem, sigma=None))
    except (ValueError, TypeError):
        return None
    if white.names != family.names:
        return None
    T = whitening_transform(sigma.to(torch.float64))
    g = torch.Generator().manual_seed(0)
    for _ in range(probes):
        s = torch.randn(family.dim, generator=g, dtype=torch.float64)
        mapped = change_of_basis(family.params(s), family.spec, T)
        ref = white.params(s)
        for key, v in ref.items():
            scale = max(1.0, float(v.abs().max()))
            if float((mapped[key] - v).abs().max()) > 1e-9 * scale:
                return None
    return white


def project_whitened(
    params: Mapping[str, torch.Tensor],
    white: Family,
    sigma: torch.Tensor | None,
    *,
    symmetries: bool = True,
    starts: int = 1,
    generator: torch.Generator | None = None,
) -> StackedProjection:
    r"""Fit a family in whitened coordinates: the step sizes (module docstring).

    The stacked weights are expressed in whitened tokens,
    :math:`\tilde\theta = \mathrm{cob}(\theta, \mathrm{diag}(\Sigma^{1/2}, 1))` (for linear heads
    :math:`\tilde Q = T^\top Q T`, :math:`\tilde P = T^{-1} P T`), and projected onto ``white`` (the
    family built for :math:`\Sigma = I`, see :func:`whitened_family`) by :func:`project_stacked`.
    The distance reported is the relative residual *in whitened coordinates*.

    Args:
        params: stacked weights ``(S, D, D)`` per name.
        white: the family in whitened coordinates.
        sigma: :math:`\Sigma` (``None``: identity, the fit is the raw one).
        symmetries, starts, generator: as :func:`project_onto_family`.

    Returns:
        :class:`StackedProjection` whose ``values`` are the step sizes.

    Raises:
        ValueError: as :func:`project_stacked`, or ``white`` built for a :math:`\Sigma \ne I`.
    """
    if white.problem.sigma is not None:
        raise ValueError(f"white must be the family built for Sigma = I (see whitened_family); {white.name!r} "
                         "has a covariance")
    cpu = {k: v.detach().to("cpu", torch.float64) for k, v in params.items()}
    if sigma is not None:
        cpu = change_of_basis(cpu, white.spec, whitening_transform(sigma.to(torch.float64)))
    return project_stacked(cpu, white, symmetries=symmetries, starts=starts, generator=generator)


# ---------------------------------------------------------------------- function space
def _broadcast_predict(params: Mapping[str, torch.Tensor], spec: ModelSpec, Z: torch.Tensor) -> torch.Tensor:
    """Predictions of a (possibly stacked) parameter dict on prompts ``Z (E, D, N)``: ``(..., E)``."""
    lead = next(iter(params.values())).ndim - 2
    p = {k: v.reshape(v.shape[:lead] + (1,) + v.shape[lead:]) for k, v in params.items()}
    return predict(p, spec, Z, validate=False)


def prediction_gap(
    params: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor] | Projection | StackedProjection,
    spec: ModelSpec,
    prompts: PromptBatch | torch.Tensor,
) -> torch.Tensor:
    r"""Relative RMS gap between the predictions of two weight sets on held-out prompts.

    .. math::
        \mathrm{gap}(\theta, \theta_{\rm ref}) =
        \frac{\sqrt{\tfrac1E\sum_e (\mathrm{TF}_\theta(Z_e) - \mathrm{TF}_{\theta_{\rm ref}}(Z_e))^2}}
             {\sqrt{\tfrac1E\sum_e \mathrm{TF}_{\theta_{\rm ref}}(Z_e)^2}}

    Symmetries do not change predictions, so this is a distance between functions, free of the
    weight-space ambiguities.

    Args:
        params: learned weights, optionally stacked ``(S, D, D)``.
        reference: weights of the same layout (or unstacked, shared by every seed), or a
            :class:`Projection` / :class:`StackedProjection` (its projected point is used).
        spec: architecture.
        prompts: held-out prompts (a :class:`PromptBatch` or ``Z (E, D, N)``).

    Returns:
        ``(...)`` relative gaps, one per seed (a 0-d tensor for one model), in ``params``' dtype.

    Raises:
        ValueError, TypeError: shapes/dtypes that do not fit ``spec``.
    """
    if isinstance(reference, StackedProjection):
        reference = reference.point()
    elif isinstance(reference, Projection):
        reference = reference.point
    Z = prompts.Z if isinstance(prompts, PromptBatch) else prompts
    check_tensor("prompts", Z)
    if Z.ndim != 3 or Z.shape[1] != spec.token_dim:
        raise ValueError(f"prompts must have shape (E, {spec.token_dim}, N), got {tuple(Z.shape)}")
    _lead(params, spec)
    _lead(reference, spec)
    dt = next(iter(params.values())).dtype
    dev = next(iter(params.values())).device
    ref = {k: v.to(dtype=dt, device=dev) for k, v in reference.items()}
    Z = Z.to(dtype=dt, device=dev)
    f = _broadcast_predict(params, spec, Z)
    f_ref = _broadcast_predict(ref, spec, Z)
    num = ((f - f_ref) ** 2).mean(-1).sqrt()
    den = (f_ref**2).mean(-1).sqrt()
    return num / den
