r"""Loss landscape slices around a point: lines and planes.

* :func:`line_slice` — :math:`\alpha \mapsto f(\theta_0 + \alpha\,\delta)` between two parameter points
  (:math:`\delta = \theta_1 - \theta_0`) or along a direction (e.g. a Hessian eigenvector);
* :func:`plane_slice` — :math:`(\alpha, \beta) \mapsto f(\theta_0 + \alpha\,\delta_1 + \beta\,\delta_2)`;
* directions: :func:`hessian_directions` (Hessian eigenvectors by Lanczos) and
  :func:`random_directions` (Gaussian directions, filter-normalised as in Li, Xu, Taylor, Studer,
  Goldstein 2018, "Visualizing the loss landscape of neural nets": each row of each weight matrix
  rescaled to the norm of the same row of :math:`\theta_0`);
* :func:`family_plane_slice` — the loss over two of a family's own coordinates,
  :math:`(\alpha, \beta) \mapsto f(\theta(s_0 + \alpha e_i + \beta e_j))` (the family need not be affine);
* :func:`plane_coordinates` — where a parameter point falls in a plane (least squares) and how far off it it lies;
Their figures are drawn by :func:`landscape.views.pictures.plot_slice`.

The grid is evaluated with ``torch.func.vmap`` over grid points (in chunks), piece by piece of the
oracle, so memory is bounded by ``grid_chunk × chunk_size`` prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

from landscape._checks import check_choice, check_int
from landscape.core.model import ModelSpec, num_params, param_shapes
from landscape.numeric.derivatives import _check_flat, hessian_eigenpairs
from landscape.numeric.oracles import LossOracle, MonteCarloLoss, as_oracle

__all__ = [
    "LineSlice",
    "PlaneSlice",
    "evaluate_losses",
    "line_slice",
    "plane_slice",
    "hessian_directions",
    "random_directions",
    "family_plane_slice",
    "plane_coordinates",
]


@dataclass(frozen=True)
class LineSlice:
    """Loss along a line :math:`\\theta_0 + \\alpha\\delta`.

    Attributes:
        alphas: ``(m,)`` grid.
        losses: ``(m,)`` loss values.
        origin: :math:`\\theta_0`.
        direction: :math:`\\delta`.
        label: what the direction is (for plots).
    """

    alphas: torch.Tensor
    losses: torch.Tensor
    origin: torch.Tensor
    direction: torch.Tensor
    label: str = "direction"


@dataclass(frozen=True)
class PlaneSlice:
    """Loss on a plane :math:`\\theta_0 + \\alpha\\delta_1 + \\beta\\delta_2`.

    Attributes:
        alphas: ``(a,)`` grid along :math:`\\delta_1`.
        betas: ``(b,)`` grid along :math:`\\delta_2`.
        losses: ``(a, b)`` loss values (``losses[i, j]`` at ``alphas[i], betas[j]``).
        origin: :math:`\\theta_0`.
        directions: ``(2, P)``.
        labels: names of the two directions.
    """

    alphas: torch.Tensor
    betas: torch.Tensor
    losses: torch.Tensor
    origin: torch.Tensor
    directions: torch.Tensor
    labels: tuple[str, str] = ("direction 1", "direction 2")


def _default_grid_chunk(oracle: LossOracle) -> int:
    if isinstance(oracle, MonteCarloLoss):
        return max(1, (1 << 18) // max(1, min(oracle.chunk_size, oracle.samples)))
    return 256


def evaluate_losses(
    oracle: LossOracle | Callable, flats: torch.Tensor, *, grid_chunk: int | None = None,
    spec: ModelSpec | None = None,
) -> torch.Tensor:
    """Loss at many parameter points ``(M, P)`` → ``(M,)``, vmapped over points in chunks.

    Falls back to a Python loop if the oracle cannot be vmapped (a user callable using ``.item()``).

    Raises:
        ValueError: wrong shape.
    """
    oracle = as_oracle(oracle, spec)
    P = num_params(oracle.spec)
    if flats.ndim != 2 or flats.shape[1] != P:
        raise ValueError(f"points must have shape (M, {P}), got {tuple(flats.shape)}")
    chunk = grid_chunk or _default_grid_chunk(oracle)
    check_int("grid_chunk", chunk, minimum=1)
    out = torch.zeros(flats.shape[0], dtype=flats.dtype, device=flats.device)
    with torch.no_grad():
        for w, f in oracle.pieces():
            parts = []
            for i in range(0, flats.shape[0], chunk):
                block = flats[i:i + chunk]
                try:
                    parts.append(torch.func.vmap(f)(block))
                except (RuntimeError, TypeError, ValueError):
                    parts.append(torch.stack([f(x) for x in block]))
            out = out + w * torch.cat(parts)
    return out


def _grid(values: torch.Tensor | Sequence[float] | None, default: tuple[float, float, int], dtype: torch.dtype,
          device: torch.device) -> torch.Tensor:
    if values is None:
        lo, hi, num = default
        return torch.linspace(lo, hi, num, dtype=dtype, device=device)
    g = torch.as_tensor(values, dtype=dtype, device=device).reshape(-1)
    if g.numel() < 2 or not bool(torch.isfinite(g).all()):
        raise ValueError("a slice grid needs at least two finite values")
    return g


def line_slice(
    oracle: LossOracle | Callable,
    origin: torch.Tensor,
    *,
    end: torch.Tensor | None = None,
    direction: torch.Tensor | None = None,
    alphas: torch.Tensor | Sequence[float] | None = None,
    label: str | None = None,
    grid_chunk: int | None = None,
    spec: ModelSpec | None = None,
) -> LineSlice:
    r"""Loss along a line: :math:`f(\theta_0 + \alpha\delta)`.

    Args:
        oracle: loss oracle (or callable with ``spec``).
        origin: :math:`\theta_0`, ``(P,)``.
        end: a second point; then :math:`\delta = \theta_1 - \theta_0` and the default grid is
            ``linspace(-0.25, 1.25, 61)`` (so :math:`\alpha = 0, 1` are the two points).
        direction: :math:`\delta` directly (default grid ``linspace(-1, 1, 61)``).
        alphas: the grid.
        label: name of the direction.
        grid_chunk: grid points per vmapped call.
        spec: only for plain callables.

    Returns:
        :class:`LineSlice`.

    Raises:
        ValueError: neither or both of ``end``/``direction``, or wrong shapes.
    """
    oracle = as_oracle(oracle, spec)
    origin = _check_flat(oracle, origin).detach()
    if (end is None) == (direction is None):
        raise ValueError("give exactly one of end= (a second parameter point) or direction=")
    if end is not None:
        delta = _check_flat(oracle, end).detach() - origin
        grid = _grid(alphas, (-0.25, 1.25, 61), origin.dtype, origin.device)
        name = label or "θ0 → θ1"
    else:
        delta = _check_flat(oracle, direction).detach().to(origin.dtype)
        grid = _grid(alphas, (-1.0, 1.0, 61), origin.dtype, origin.device)
        name = label or "direction"
    pts = origin + grid[:, None] * delta
    return LineSlice(grid, evaluate_losses(oracle, pts, grid_chunk=grid_chunk), origin, delta, name)


def plane_slice(
    oracle: LossOracle | Callable,
    origin: torch.Tensor,
    direction1: torch.Tensor,
    direction2: torch.Tensor,
    *,
    alphas: torch.Tensor | Sequence[float] | None = None,
    betas: torch.Tensor | Sequence[float] | None = None,
    labels: tuple[str, str] = ("direction 1", "direction 2"),
    grid_chunk: int | None = None,
    spec: ModelSpec | None = None,
) -> PlaneSlice:
    r"""Loss on a plane: :math:`f(\theta_0 + \alpha\delta_1 + \beta\delta_2)` on a grid (default 31×31 on ``[-1, 1]²``).

    Raises:
        ValueError: wrong shapes.
    """
    oracle = as_oracle(oracle, spec)
    origin = _check_flat(oracle, origin).detach()
    d1 = _check_flat(oracle, direction1).detach().to(origin.dtype)
    d2 = _check_flat(oracle, direction2).detach().to(origin.dtype)
    a = _grid(alphas, (-1.0, 1.0, 31), origin.dtype, origin.device)
    b = _grid(betas, (-1.0, 1.0, 31), origin.dtype, origin.device)
    pts = origin + a[:, None, None] * d1 + b[None, :, None] * d2
    losses = evaluate_losses(oracle, pts.reshape(-1, origin.numel()), grid_chunk=grid_chunk)
    return PlaneSlice(a, b, losses.reshape(a.numel(), b.numel()), origin, torch.stack([d1, d2]), labels)


def hessian_directions(
    oracle: LossOracle | Callable,
    flat: torch.Tensor,
    k: int = 2,
    *,
    which: Literal["LA", "SA", "LM"] = "LA",
    generator: torch.Generator | None = None,
    method: Literal["lanczos", "eigsh", "dense"] = "lanczos",
    spec: ModelSpec | None = None,
) -> torch.Tensor:
    """Unit Hessian eigenvectors as slice directions, ``(k, P)`` (top ones by default)."""
    res = hessian_eigenpairs(oracle, flat, k, which=which, method=method, generator=generator, spec=spec)
    return res.eigenvectors.T.contiguous()


def random_directions(
    spec: ModelSpec,
    origin: torch.Tensor,
    generator: torch.Generator,
    k: int = 2,
    *,
    normalisation: Literal["filter", "matrix", "none"] = "filter",
) -> torch.Tensor:
    r"""Gaussian directions ``(k, P)``, normalised to the scale of :math:`\theta_0`.

    Args:
        spec: architecture.
        origin: :math:`\theta_0`.
        generator: randomness.
        k: how many directions.
        normalisation: ``"filter"`` — every row of every matrix rescaled to the norm of that row of
            :math:`\theta_0` (Li et al. 2018; rows that are zero in :math:`\theta_0` stay zero);
            ``"matrix"`` — every matrix rescaled to the Frobenius norm of that matrix of :math:`\theta_0`;
            ``"none"`` — unit-norm directions.

    Returns:
        The directions.

    Raises:
        ValueError: unknown normalisation or wrong shape.
    """
    check_choice("normalisation", normalisation, ("filter", "matrix", "none"))
    check_int("k", k, minimum=1)
    P = num_params(spec)
    if origin.shape != (P,):
        raise ValueError(f"origin must have shape ({P},), got {tuple(origin.shape)}")
    D = torch.randn(k, P, generator=generator, dtype=origin.dtype, device=generator.device).to(origin.device)
    if normalisation == "none":
        return D / D.norm(dim=1, keepdim=True)
    out, i = [], 0
    for _, (a, b) in param_shapes(spec).items():
        th = origin[i:i + a * b].reshape(a, b)
        d = D[:, i:i + a * b].reshape(k, a, b)
        if normalisation == "filter":
            scale = th.norm(dim=1, keepdim=True) / d.norm(dim=2, keepdim=True).clamp_min(1e-300)
        else:
            scale = th.norm() / d.flatten(1).norm(dim=1).clamp_min(1e-300)[:, None, None]
        out.append((d * scale).reshape(k, a * b))
        i += a * b
    return torch.cat(out, dim=1)


def family_plane_slice(
    oracle: LossOracle | Callable,
    family: object,
    values: torch.Tensor,
    symbols: tuple[int, int] | tuple[int] = (0, 1),
    *,
    alphas: torch.Tensor | Sequence[float] | None = None,
    betas: torch.Tensor | Sequence[float] | None = None,
    grid_chunk: int | None = None,
) -> LineSlice | PlaneSlice:
    r"""The loss over a family's own coordinates around :math:`s_0`: :math:`f(\theta(s_0 + \alpha e_i + \beta e_j))`.

    Every grid point is mapped through the family (``family.flat``), so the slice follows the
    family even where it is not affine in its symbols. With one symbol index this is a line.

    Args:
        oracle: loss oracle over the family's architecture.
        family: a :class:`~landscape.theory.families.Family`.
        values: :math:`s_0`, ``(family.dim,)``.
        symbols: indices ``(i, j)`` (or ``(i,)``) into ``family.names``.
        alphas, betas: offsets of symbol ``i`` / ``j`` (default ``linspace(-1, 1, 31)``).
        grid_chunk: grid points per vmapped call.

    Returns:
        :class:`PlaneSlice` (``directions`` = the tangent vectors :math:`\partial\theta/\partial s_i`,
        ``labels`` = the symbol names), or :class:`LineSlice` for one symbol; ``origin`` = :math:`\theta(s_0)`.

    Raises:
        ValueError: bad symbol indices or values.
    """
    oracle = as_oracle(oracle)
    s0 = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    k = int(getattr(family, "dim"))
    if s0.shape != (k,):
        raise ValueError(f"values must have shape ({k},) for family {getattr(family, 'name', '?')}, got {tuple(s0.shape)}")
    if not 1 <= len(symbols) <= 2 or len(set(symbols)) != len(symbols) or any(not 0 <= i < k for i in symbols):
        raise ValueError(f"symbols must be one or two distinct indices in [0, {k}), got {symbols}")
    names = getattr(family, "names")
    origin = family.flat(s0)  # type: ignore[attr-defined]
    T = family.tangent_basis(s0)  # type: ignore[attr-defined]
    a = _grid(alphas, (-1.0, 1.0, 31), s0.dtype, s0.device)
    if len(symbols) == 1:
        (i,) = symbols
        S = s0.repeat(a.numel(), 1)
        S[:, i] = S[:, i] + a
        pts = torch.stack([family.flat(x) for x in S])  # type: ignore[attr-defined]
        return LineSlice(a, evaluate_losses(oracle, pts, grid_chunk=grid_chunk), origin, T[:, i], names[i])
    i, j = symbols
    b = _grid(betas, (-1.0, 1.0, 31), s0.dtype, s0.device)
    S = s0.repeat(a.numel() * b.numel(), 1).reshape(a.numel(), b.numel(), k).clone()
    S[:, :, i] = S[:, :, i] + a[:, None]
    S[:, :, j] = S[:, :, j] + b[None, :]
    pts = torch.stack([family.flat(x) for x in S.reshape(-1, k)])  # type: ignore[attr-defined]
    losses = evaluate_losses(oracle, pts, grid_chunk=grid_chunk).reshape(a.numel(), b.numel())
    return PlaneSlice(a, b, losses, origin, torch.stack([T[:, i], T[:, j]]), (names[i], names[j]))


def plane_coordinates(sl: PlaneSlice | LineSlice, point: torch.Tensor) -> tuple[tuple[float, ...], float]:
    r"""Coordinates of a parameter point in a slice's plane (or line), by least squares, and its distance off it.

    Solves :math:`\min_c \lVert\theta_0 + D^\top c - \theta\rVert` for the ``(2, P)`` (or ``(P,)``)
    directions ``D``.

    Returns:
        ``((α, β) or (α,), ‖θ_0 + Dᵀc − θ‖)``.

    Raises:
        ValueError: shape mismatch.
    """
    D = sl.directions if isinstance(sl, PlaneSlice) else sl.direction[None]
    if point.shape != sl.origin.shape:
        raise ValueError(f"point must have shape {tuple(sl.origin.shape)}, got {tuple(point.shape)}")
    r = (point.to(sl.origin.dtype) - sl.origin)
    c = torch.linalg.lstsq(D.T, r[:, None]).solution[:, 0]
    return tuple(float(x) for x in c), float((D.T @ c - r).norm())
