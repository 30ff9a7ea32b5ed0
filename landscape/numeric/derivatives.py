r"""Gradients, Hessians, Hessian-vector products, Lanczos eigenpairs and Hessian inertia.

Everything works on a loss *oracle* (:mod:`landscape.numeric.oracles`) over the flat parameter
vector :math:`\theta\in\mathbb R^P`, piece by piece (:math:`f = \sum_c w_c f_c`), so the peak memory
is that of one piece:

* gradient :math:`\nabla f = \sum_c w_c \nabla f_c` (``torch.func.grad``);
* Hessian-vector product :math:`Hv = \frac{d}{dt}\nabla f(\theta + tv)|_{t=0}` (forward-over-reverse,
  ``jvp`` of ``grad``), ``vmap``-ed over a chunk of vectors;
* dense Hessian: vmapped HVPs over chunks of the standard basis (``method="hvp"``, memory
  ``vector_chunk × chunk_size``), or ``jacfwd(jacrev(f_c))`` per piece (``method="jacfwd"``);
* top/bottom eigenpairs by Lanczos with full reorthogonalisation (or ARPACK ``eigsh`` on a
  ``LinearOperator``) when the dense Hessian is too large;
* inertia (numbers of positive / zero / negative eigenvalues, zero meaning
  :math:`|\lambda| \le \varepsilon\max|\lambda|` with :math:`\varepsilon` =
  :data:`landscape.tolerances.ZERO_EIG`) and the classification minimum / saddle / degenerate,
  modulo the continuous symmetries of the model (:func:`symmetry_generators`);
* Hessian blocks per layer or parameter and the Hessian restricted to a family's tangent space and
  its normal complement (:func:`tangent_split`).

References: Pearlmutter 1994 (exact HVPs); Paige 1972 / Golub & Van Loan §10.1 (Lanczos with full
reorthogonalisation); Lehoucq, Sorensen & Yang 1998 (ARPACK).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch

from landscape._checks import check_choice, check_int
from landscape.tolerances import FD_STEP, LANCZOS_RTOL, RANK_RTOL, ZERO_EIG, per_dtype
from landscape.core.model import ModelSpec, num_params, param_shapes
from landscape.numeric.oracles import LossOracle, MonteCarloLoss, as_oracle
from landscape.theory.symmetries import symmetry_generators

__all__ = [
    "gradient",
    "hvp",
    "hessian",
    "finite_difference_gradient",
    "finite_difference_hessian",
    "EigenResult",
    "lanczos",
    "hessian_eigenpairs",
    "Inertia",
    "inertia",
    "hessian_blocks",
    "orthonormal_complement",
    "TangentSplit",
    "tangent_split",
    "symmetry_generators",
]

_VECTOR_BUDGET = 1 << 13
"""Default bound on (vectors × prompts) handled at once by vmapped HVPs: about 16 vectors of 512
prompts (roughly 120 MiB for the two-layer kernel model of the benchmark); raise ``vector_chunk``
on a GPU, where wider batches pay off."""


def _check_flat(oracle: LossOracle, flat: torch.Tensor) -> torch.Tensor:
    if not isinstance(flat, torch.Tensor):
        raise TypeError(f"flat parameters must be a torch.Tensor, got {type(flat).__name__}")
    P = num_params(oracle.spec)
    if flat.shape != (P,):
        raise ValueError(f"flat parameters must have shape ({P},) for {oracle.spec.describe()}, got {tuple(flat.shape)}")
    if not flat.is_floating_point():
        raise TypeError(f"flat parameters must be floating point, got {flat.dtype}")
    return flat


def _default_vector_chunk(oracle: LossOracle, P: int) -> int:
    if isinstance(oracle, MonteCarloLoss):
        return max(1, min(P, _VECTOR_BUDGET // max(1, min(oracle.chunk_size, oracle.samples))))
    return P


# ---------------------------------------------------------------------- first and second derivatives
def gradient(oracle: LossOracle | Callable, flat: torch.Tensor, *, spec: ModelSpec | None = None) -> torch.Tensor:
    r"""Gradient :math:`\nabla f(\theta) = \sum_c w_c\nabla f_c(\theta)` over every entry of every matrix.

    Args:
        oracle: a loss oracle (or a callable ``params -> scalar`` together with ``spec``).
        flat: :math:`\theta`, shape ``(P,)``.
        spec: only for plain callables.

    Returns:
        ``(P,)`` gradient (same dtype/device as ``flat``).

    Raises:
        TypeError, ValueError: wrong oracle or shape.
    """
    oracle = as_oracle(oracle, spec)
    flat = _check_flat(oracle, flat)
    total = torch.zeros_like(flat)
    for w, f in oracle.pieces():
        total = total + w * torch.func.grad(f)(flat)
    return total


def hvp(
    oracle: LossOracle | Callable,
    flat: torch.Tensor,
    vectors: torch.Tensor,
    *,
    vector_chunk: int | None = None,
    spec: ModelSpec | None = None,
) -> torch.Tensor:
    r"""Hessian-vector products :math:`H v` by forward-over-reverse differentiation (``jvp`` of ``grad``).

    .. math:: Hv = \sum_c w_c\, \partial_t \nabla f_c(\theta + t v)\big|_{t=0}

    Args:
        oracle: loss oracle (or callable with ``spec``).
        flat: :math:`\theta`, ``(P,)``.
        vectors: ``(P,)`` or ``(m, P)``; the products are vmapped over ``m`` in chunks.
        vector_chunk: vectors per vmapped call (default: bounded so vectors × prompts stays small).
        spec: only for plain callables.

    Returns:
        Same shape as ``vectors``.

    Raises:
        ValueError: shape mismatch.
    """
    oracle = as_oracle(oracle, spec)
    flat = _check_flat(oracle, flat)
    P = flat.shape[0]
    single = vectors.ndim == 1
    V = vectors.unsqueeze(0) if single else vectors
    if V.ndim != 2 or V.shape[1] != P:
        raise ValueError(f"vectors must have shape ({P},) or (m, {P}), got {tuple(vectors.shape)}")
    V = V.to(dtype=flat.dtype, device=flat.device)
    chunk = vector_chunk or _default_vector_chunk(oracle, P)
    check_int("vector_chunk", chunk, minimum=1)
    out = torch.zeros_like(V)
    for w, f in oracle.pieces():
        g = torch.func.grad(f)

        def one(v: torch.Tensor, g=g) -> torch.Tensor:
            return torch.func.jvp(g, (flat,), (v,))[1]

        parts = [torch.func.vmap(one)(V[i:i + chunk]) for i in range(0, V.shape[0], chunk)]
        out = out + w * torch.cat(parts)
    return out[0] if single else out


def hessian(
    oracle: LossOracle | Callable,
    flat: torch.Tensor,
    *,
    method: Literal["hvp", "jacfwd"] = "hvp",
    vector_chunk: int | None = None,
    spec: ModelSpec | None = None,
) -> torch.Tensor:
    r"""Dense Hessian :math:`\nabla^2 f(\theta)`, ``(P, P)``, symmetrised.

    Args:
        oracle: loss oracle (or callable with ``spec``).
        flat: :math:`\theta`.
        method: ``"hvp"`` — vmapped HVPs against chunks of the standard basis (peak memory bounded
            by ``vector_chunk`` × prompts per piece); ``"jacfwd"`` — ``jacfwd(jacrev(f_c))`` per piece.
        vector_chunk: basis vectors per vmapped call (``"hvp"`` only).
        spec: only for plain callables.

    Returns:
        The symmetric Hessian.

    Raises:
        ValueError: unknown method.
    """
    check_choice("method", method, ("hvp", "jacfwd"))
    oracle = as_oracle(oracle, spec)
    flat = _check_flat(oracle, flat)
    P = flat.shape[0]
    if method == "hvp":
        E = torch.eye(P, dtype=flat.dtype, device=flat.device)
        H = hvp(oracle, flat, E, vector_chunk=vector_chunk)
    else:
        H = torch.zeros(P, P, dtype=flat.dtype, device=flat.device)
        for w, f in oracle.pieces():
            H = H + w * torch.func.jacfwd(torch.func.jacrev(f))(flat)
    return (H + H.T) / 2


def finite_difference_gradient(
    oracle: LossOracle | Callable, flat: torch.Tensor, *, step: float | None = None, spec: ModelSpec | None = None,
) -> torch.Tensor:
    r"""Central differences of the loss, :math:`(f(\theta + h e_j) - f(\theta - h e_j)) / 2h` (error :math:`O(h^2)`).

    A reference route independent of automatic differentiation (``2P`` loss evaluations).
    """
    oracle = as_oracle(oracle, spec)
    flat = _check_flat(oracle, flat)
    h = per_dtype(FD_STEP, flat.dtype) if step is None else step
    out = torch.empty_like(flat)
    with torch.no_grad():
        for j in range(flat.shape[0]):
            e = torch.zeros_like(flat)
            e[j] = h
            out[j] = (oracle(flat + e) - oracle(flat - e)) / (2 * h)
    return out


def finite_difference_hessian(
    oracle: LossOracle | Callable, flat: torch.Tensor, *, step: float | None = None, spec: ModelSpec | None = None,
) -> torch.Tensor:
    r"""Central differences of the reverse-mode gradient, column by column, symmetrised.

    :math:`H_{:,j} \approx (\nabla f(\theta + h e_j) - \nabla f(\theta - h e_j)) / 2h` — no
    forward-mode differentiation, so it is an independent check of :func:`hessian` and :func:`hvp`.
    """
    oracle = as_oracle(oracle, spec)
    flat = _check_flat(oracle, flat)
    h = per_dtype(FD_STEP, flat.dtype) if step is None else step
    P = flat.shape[0]
    cols = []
    for j in range(P):
        e = torch.zeros_like(flat)
        e[j] = h
        cols.append((gradient(oracle, flat + e) - gradient(oracle, flat - e)) / (2 * h))
    H = torch.stack(cols, dim=1)
    return (H + H.T) / 2


# ---------------------------------------------------------------------- eigenpairs
@dataclass(frozen=True)
class EigenResult:
    """Selected eigenpairs of a symmetric operator.

    Attributes:
        eigenvalues: ``(k,)``, sorted in the order asked for (``LA``: descending, ``SA``: ascending,
            ``LM``: descending magnitude).
        eigenvectors: ``(P, k)`` orthonormal columns.
        residuals: ``(k,)`` :math:`\\lVert Av - \\lambda v\\rVert` (estimated for Lanczos, exact otherwise).
        converged: all residuals below ``tol`` (or the Krylov space exhausted).
        iterations: Lanczos steps / operator applications.
        method: ``"lanczos"``, ``"eigsh"`` or ``"dense"``.
        tol: the residual tolerance used (absolute).
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    converged: bool
    iterations: int
    method: str
    tol: float


def _select(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    if which == "LA":
        return torch.argsort(theta, descending=True)[:k]
    if which == "SA":
        return torch.argsort(theta)[:k]
    return torch.argsort(theta.abs(), descending=True)[:k]


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    k: int = 1,
    *,
    which: Literal["LA", "SA", "LM"] = "LA",
    generator: torch.Generator | None = None,
    v0: torch.Tensor | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> EigenResult:
    r"""Extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalisation.

    Builds the Krylov basis :math:`Q_j` and tridiagonal :math:`T_j = Q_j^\top A Q_j` (every new vector
    is orthogonalised twice against all previous ones — "twice is enough", Parlett), and stops when
    the wanted Ritz pairs :math:`(\theta_i, Q_j s_i)` have residual
    :math:`\lVert A Q_j s_i - \theta_i Q_j s_i\rVert = \beta_j |s_{j,i}| \le \mathrm{tol}`.
    On breakdown (:math:`\beta_j \approx 0`, an invariant subspace) it restarts with a fresh random
    vector orthogonal to the basis, so the full space is reachable.

    Limitation: as any single-vector Krylov method, a *repeated* eigenvalue shows up once until the
    breakdown restarts reach its other copies; ask for ``k`` larger than the multiplicity you
    expect, or use the dense route for small ``P``.

    Args:
        matvec: :math:`v \mapsto Av` on ``(dim,)`` vectors.
        dim: operator size ``P``.
        k: number of eigenpairs, ``1 <= k <= dim``.
        which: ``"LA"`` largest algebraic (top), ``"SA"`` smallest algebraic (bottom), ``"LM"``
            largest magnitude.
        generator: randomness of the start vector (ignored when ``v0`` is given).
        v0: start vector.
        max_iter: at most this many Lanczos steps (default ``dim``).
        tol: absolute residual tolerance (default :data:`LANCZOS_RTOL` × the largest |Ritz value|).
        dtype, device: of the Krylov basis.

    Returns:
        :class:`EigenResult` (``method="lanczos"``).

    Raises:
        ValueError: bad ``k``, ``which`` or ``dim``.
    """
    check_int("dim", dim, minimum=1)
    check_int("k", k, minimum=1)
    if k > dim:
        raise ValueError(f"k = {k} eigenpairs asked of an operator of size {dim}")
    check_choice("which", which, ("LA", "SA", "LM"))
    m_max = dim if max_iter is None else min(check_int("max_iter", max_iter, minimum=1), dim)
    rtol = LANCZOS_RTOL.get(dtype, 1e-10)

    def fresh(basis: list[torch.Tensor]) -> torch.Tensor:
        q = torch.randn(dim, generator=generator, dtype=dtype, device=generator.device if generator else device)
        q = q.to(device) if device is not None else q
        if basis:
            Qm = torch.stack(basis)
            for _ in range(2):
                q = q - Qm.T @ (Qm @ q)
        return q / q.norm()

    if v0 is not None:
        if v0.shape != (dim,):
            raise ValueError(f"v0 must have shape ({dim},), got {tuple(v0.shape)}")
        q = v0.to(dtype=dtype, device=device if device is not None else v0.device)
        q = q / q.norm()
    else:
        q = fresh([])
    basis = [q]
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    scale = torch.zeros((), dtype=dtype, device=q.device)
    converged = False
    theta = S = resid = None
    beta = torch.zeros((), dtype=dtype, device=q.device)
    for j in range(m_max):
        w = matvec(basis[j]).to(dtype)
        alpha = torch.dot(w, basis[j])
        w = w - alpha * basis[j] - (betas[-1] * basis[j - 1] if j > 0 else 0)
        Qm = torch.stack(basis)
        for _ in range(2):
            w = w - Qm.T @ (Qm @ w)
        alphas.append(alpha)
        beta = w.norm()
        a = torch.stack(alphas)
        Tm = torch.diag(a)
        if j > 0:
            b = torch.stack(betas)
            Tm = Tm + torch.diag(b, 1) + torch.diag(b, -1)
        theta, S = torch.linalg.eigh(Tm)
        scale = torch.maximum(scale, theta.abs().max())
        resid = beta * S[-1].abs()
        tol_abs = float(rtol * scale) if tol is None else float(tol)
        if j + 1 >= k:
            idx = _select(theta, k, which)
            if j + 1 == dim or bool((resid[idx] <= max(tol_abs, torch.finfo(dtype).tiny)).all()):
                converged = True
                break
        if j + 1 == m_max:
            break
        if float(beta) <= 64 * torch.finfo(dtype).eps * max(float(scale), float(alpha.abs()), 1e-300):
            betas.append(torch.zeros((), dtype=dtype, device=q.device))
            basis.append(fresh(basis))
        else:
            betas.append(beta)
            basis.append(w / beta)
    idx = _select(theta, k, which)
    Qm = torch.stack(basis[: len(alphas)], dim=1)
    vecs = Qm @ S[:, idx]
    tol_abs = float(rtol * scale) if tol is None else float(tol)
    return EigenResult(theta[idx], vecs, resid[idx], converged, len(alphas), "lanczos", tol_abs)


def hessian_eigenpairs(
    oracle: LossOracle | Callable,
    flat: torch.Tensor,
    k: int = 1,
    *,
    which: Literal["LA", "SA", "LM"] = "LA",
    method: Literal["lanczos", "eigsh", "dense"] = "lanczos",
    generator: torch.Generator | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    hvp_mode: Literal["jvp", "double_backward"] = "jvp",
    spec: ModelSpec | None = None,
) -> EigenResult:
    r"""Top/bottom ``k`` eigenpairs of :math:`\nabla^2 f(\theta)` without (or with) the dense Hessian.

    Args:
        oracle: loss oracle (or callable with ``spec``).
        flat: :math:`\theta`.
        k: how many eigenpairs.
        which: ``"LA"`` (top), ``"SA"`` (bottom) or ``"LM"`` (largest magnitude).
        method: ``"lanczos"`` (:func:`lanczos` on :func:`hvp`), ``"eigsh"`` (ARPACK on a scipy
            ``LinearOperator`` of :func:`hvp`, needs ``k < P``) or ``"dense"`` (``eigh`` of :func:`hessian`).
        generator: start-vector randomness (Lanczos / eigsh).
        max_iter, tol: passed to the iterative method.
        hvp_mode: ``"jvp"`` — forward-over-reverse per product, memory of one piece; or
            ``"double_backward"`` — build every piece's gradient graph once (``create_graph=True``) and
            differentiate :math:`g^\top v` for each product: faster per product, but the graphs of all
            pieces stay in memory.
        spec: only for plain callables.

    Returns:
        :class:`EigenResult`.

    Raises:
        ValueError: bad ``k``/``which``/``method``/``hvp_mode``.
    """
    check_choice("method", method, ("lanczos", "eigsh", "dense"))
    check_choice("hvp_mode", hvp_mode, ("jvp", "double_backward"))
    check_choice("which", which, ("LA", "SA", "LM"))
    oracle = as_oracle(oracle, spec)
    flat = _check_flat(oracle, flat).detach()
    P = flat.shape[0]
    check_int("k", k, minimum=1)
    if k > P:
        raise ValueError(f"k = {k} eigenpairs asked of a {P}×{P} Hessian")

    if hvp_mode == "jvp":
        def mv(v: torch.Tensor) -> torch.Tensor:
            return hvp(oracle, flat, v)
    else:
        graphs = []
        for w, f in oracle.pieces():
            x = flat.clone().requires_grad_(True)
            with torch.enable_grad():
                (gx,) = torch.autograd.grad(f(x), x, create_graph=True)
            graphs.append((w, x, gx))

        def mv(v: torch.Tensor) -> torch.Tensor:
            out = torch.zeros_like(flat)
            for w, x, gx in graphs:
                (hv,) = torch.autograd.grad(gx, x, grad_outputs=v.to(flat.dtype), retain_graph=True)
                out = out + w * hv
            return out.detach()

    if method == "lanczos":
        return lanczos(mv, P, k, which=which, generator=generator, max_iter=max_iter, tol=tol,
                       dtype=flat.dtype, device=flat.device)
    if method == "dense":
        H = hessian(oracle, flat)
        ev, U = torch.linalg.eigh(H)
        idx = _select(ev, k, which)
        vecs = U[:, idx]
        res = (H @ vecs - vecs * ev[idx]).norm(dim=0)
        return EigenResult(ev[idx], vecs, res, True, P, "dense", 0.0)
    if k >= P:
        raise ValueError(f"method 'eigsh' needs k < P = {P}; use method='dense'")
    from scipy.sparse.linalg import LinearOperator, eigsh

    count = [0]

    def np_mv(x: np.ndarray) -> np.ndarray:
        count[0] += 1
        v = torch.as_tensor(np.asarray(x).reshape(-1), dtype=flat.dtype, device=flat.device)
        return mv(v).detach().cpu().numpy()

    op = LinearOperator((P, P), matvec=np_mv, dtype=np.float64)
    v0 = None
    if generator is not None:
        v0 = torch.randn(P, generator=generator, dtype=torch.float64, device=generator.device).cpu().numpy()
    vals, vecs = eigsh(op, k=k, which=which, v0=v0, maxiter=max_iter, tol=0.0 if tol is None else tol)
    ev = torch.as_tensor(vals, dtype=flat.dtype, device=flat.device)
    U = torch.as_tensor(vecs, dtype=flat.dtype, device=flat.device)
    idx = _select(ev, k, which)
    ev, U = ev[idx], U[:, idx]
    res = torch.stack([(mv(U[:, i]) - ev[i] * U[:, i]).norm() for i in range(k)])
    return EigenResult(ev, U, res, True, count[0], "eigsh", float(tol or 0.0))


# ---------------------------------------------------------------------- inertia
@dataclass(frozen=True)
class Inertia:
    r"""Inertia of a symmetric matrix: counts of positive, zero and negative eigenvalues.

    An eigenvalue counts as zero if :math:`|\lambda| \le \mathrm{tol}`, with
    ``tol = rtol · max|λ|`` (``rtol`` = :data:`landscape.tolerances.ZERO_EIG` by default).

    Attributes:
        n_pos, n_zero, n_neg: the counts.
        min_eig, max_eig: extreme eigenvalues.
        tol: the absolute zero threshold used.
        rtol: the relative threshold it came from.
        n_symmetry: dimension of the span of the model's continuous symmetries at the point (each
            gives a zero eigenvalue at a stationary point; see :func:`symmetry_generators`).
        reduced: inertia of the Hessian restricted to the orthogonal complement of the symmetry
            directions (``None`` if no symmetries were given).
        eigenvalues: all eigenvalues, ascending.
    """

    n_pos: int
    n_zero: int
    n_neg: int
    min_eig: float
    max_eig: float
    tol: float
    rtol: float
    n_symmetry: int = 0
    reduced: "Inertia | None" = None
    eigenvalues: torch.Tensor | None = None

    @property
    def classification(self) -> str:
        """``"saddle"`` (a negative eigenvalue), ``"minimum"`` (positive definite, modulo symmetries) or ``"degenerate"``.

        With symmetry directions given, the verdict is read from the reduced Hessian: positive
        definite there means a strict local minimum modulo the symmetry orbit.
        """
        ref = self.reduced if self.reduced is not None else self
        if ref.n_neg > 0:
            return "saddle"
        return "minimum" if ref.n_zero == 0 else "degenerate"

    def summary(self) -> dict[str, float | int | str]:
        """JSON-friendly summary."""
        out: dict[str, float | int | str] = {
            "n_pos": self.n_pos, "n_neg": self.n_neg, "n_zero": self.n_zero, "min_eig": self.min_eig,
            "max_eig": self.max_eig, "zero_tol": self.tol, "n_symmetry": self.n_symmetry,
            "classification": self.classification,
        }
        if self.reduced is not None:
            out.update({"reduced_n_pos": self.reduced.n_pos, "reduced_n_neg": self.reduced.n_neg,
                        "reduced_n_zero": self.reduced.n_zero})
        return out


def orthonormal_complement(
    basis: torch.Tensor, *, rtol: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Orthonormal bases of :math:`\mathrm{span}(B)` and of its orthogonal complement (by SVD).

    Args:
        basis: ``(P, k)`` spanning vectors (need not be independent).
        rtol: singular values below ``rtol · σ_max`` count as zero (default :data:`RANK_RTOL`).

    Returns:
        ``(U, N)`` with ``U`` ``(P, r)``, ``N`` ``(P, P - r)``, ``[U N]`` orthogonal.
    """
    if basis.ndim != 2:
        raise ValueError(f"basis must be (P, k), got {tuple(basis.shape)}")
    P = basis.shape[0]
    if basis.shape[1] == 0:
        return basis[:, :0], torch.eye(P, dtype=basis.dtype, device=basis.device)
    rt = RANK_RTOL.get(basis.dtype, 1e-10) if rtol is None else rtol
    U, s, _ = torch.linalg.svd(basis, full_matrices=True)
    smax = s.max() if s.numel() else torch.zeros(())
    r = int((s > rt * smax).sum()) if float(smax) > 0 else 0
    return U[:, :r], U[:, r:]


def inertia(
    matrix_or_eigs: torch.Tensor,
    *,
    rtol: float | None = None,
    symmetries: torch.Tensor | None = None,
) -> Inertia:
    r"""Inertia of a symmetric matrix (or of given eigenvalues), optionally modulo symmetry directions.

    Args:
        matrix_or_eigs: ``(P, P)`` symmetric matrix or ``(P,)`` eigenvalues.
        rtol: relative zero threshold (default :data:`ZERO_EIG` for the dtype).
        symmetries: ``(P, m)`` symmetry generators (matrix input only); the reduced inertia is that
            of :math:`N^\top H N` with ``N`` an orthonormal basis of their orthogonal complement.

    Returns:
        :class:`Inertia`.

    Raises:
        ValueError: wrong shapes or non-finite entries.
    """
    x = matrix_or_eigs
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(x).__name__}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("matrix has NaN or infinite entries")
    rt = ZERO_EIG.get(x.dtype, 1e-8) if rtol is None else rtol
    if x.ndim == 2:
        if x.shape[0] != x.shape[1]:
            raise ValueError(f"need a square matrix, got {tuple(x.shape)}")
        H = (x + x.T) / 2
        ev = torch.linalg.eigvalsh(H)
    elif x.ndim == 1:
        if symmetries is not None:
            raise ValueError("symmetry reduction needs the matrix, not its eigenvalues")
        H, ev = None, torch.sort(x).values
    else:
        raise ValueError(f"need a (P, P) matrix or (P,) eigenvalues, got shape {tuple(x.shape)}")
    big = float(ev.abs().max()) if ev.numel() else 0.0
    tol = rt * big
    n_pos = int((ev > tol).sum())
    n_neg = int((ev < -tol).sum())
    n_zero = int(ev.numel()) - n_pos - n_neg
    reduced, n_sym = None, 0
    if symmetries is not None and H is not None:
        Us, N = orthonormal_complement(symmetries)
        n_sym = Us.shape[1]
        evr = torch.linalg.eigvalsh(N.T @ H @ N) if N.shape[1] else ev[:0]
        tr = tol
        reduced = Inertia(int((evr > tr).sum()), int(((evr.abs()) <= tr).sum()), int((evr < -tr).sum()),
                          float(evr.min()) if evr.numel() else float("nan"),
                          float(evr.max()) if evr.numel() else float("nan"), tr, rt, 0, None, evr)
    return Inertia(n_pos, n_zero, n_neg, float(ev.min()), float(ev.max()), tol, rt, n_sym, reduced, ev)


# ---------------------------------------------------------------------- blocks and tangent spaces
def hessian_blocks(
    H: torch.Tensor, spec: ModelSpec, *, by: Literal["layer", "param"] = "layer"
) -> dict[tuple[str, str], torch.Tensor]:
    """Split a ``(P, P)`` Hessian into blocks, per layer (``"layer0"``...) or per parameter name.

    Returns:
        ``{(row group, column group): block}`` for every ordered pair of groups.

    Raises:
        ValueError: wrong Hessian size or ``by``.
    """
    check_choice("by", by, ("layer", "param"))
    P = num_params(spec)
    if H.shape != (P, P):
        raise ValueError(f"Hessian must be ({P}, {P}) for {spec.describe()}, got {tuple(H.shape)}")
    groups: dict[str, list[int]] = {}
    i = 0
    for name, (a, b) in param_shapes(spec).items():
        g = name.split(".", 1)[0] if by == "layer" else name
        groups.setdefault(g, []).extend(range(i, i + a * b))
        i += a * b
    idx = {g: torch.tensor(v, device=H.device) for g, v in groups.items()}
    return {(g1, g2): H[i1][:, i2] for g1, i1 in idx.items() for g2, i2 in idx.items()}


@dataclass(frozen=True)
class TangentSplit:
    r"""A Hessian restricted to a family's tangent space and to its normal complement.

    With ``U`` (``P × r``) an orthonormal basis of the tangent space and ``N`` (``P × (P−r)``) of
    its orthogonal complement: :math:`H_{TT} = U^\top H U`, :math:`H_{NN} = N^\top H N`,
    :math:`H_{TN} = U^\top H N`.
    """

    tangent_basis: torch.Tensor
    normal_basis: torch.Tensor
    H_tangent: torch.Tensor
    H_normal: torch.Tensor
    H_cross: torch.Tensor

    @property
    def tangent_inertia(self) -> Inertia:
        return inertia(self.H_tangent)

    @property
    def normal_inertia(self) -> Inertia:
        return inertia(self.H_normal)


def tangent_split(H: torch.Tensor, basis: torch.Tensor, *, rtol: float | None = None) -> TangentSplit:
    """Restrict ``H`` to ``span(basis)`` (e.g. ``Family.tangent_basis``, orthonormalised here) and its complement.

    Raises:
        ValueError: shape mismatch.
    """
    if H.ndim != 2 or H.shape[0] != H.shape[1] or basis.ndim != 2 or basis.shape[0] != H.shape[0]:
        raise ValueError(f"need H (P, P) and basis (P, k); got {tuple(H.shape)} and {tuple(basis.shape)}")
    U, N = orthonormal_complement(basis.to(H.dtype), rtol=rtol)
    return TangentSplit(U, N, U.T @ H @ U, N.T @ H @ N, U.T @ H @ N)


