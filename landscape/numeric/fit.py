r"""Fitting a family's scalars to a loss, and locating a given point in a family.

:func:`fit_family` minimises :math:`s \mapsto f(\theta(s))` (multi-start L-BFGS on a subsample, then
damped Newton on the full loss, float64); :func:`family_point` turns symbol values or full weights into
family scalars (full weights are projected onto the family and rejected if they are not in it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from landscape._checks import check_int
from landscape.tolerances import CONSTRUCTION_RTOL, RANK_RTOL, STATIONARITY_ATOL
from landscape.theory.families import Family
from landscape.core.model import num_params, param_shapes, unflatten_params
from landscape.numeric.oracles import LossOracle, MonteCarloLoss, as_flat, as_oracle

__all__ = ["FamilyFit", "fit_family", "family_point"]

DIVERGED_NORM = 1e6
"""Family scalars beyond this magnitude count as running away (infimum possibly not attained)."""


# ---------------------------------------------------------------------- fitting the family scalars
@dataclass(frozen=True)
class FamilyFit:
    r"""Minimiser of the loss over the family scalars, :math:`\hat s = \arg\min_s f(\theta(s))`.

    Attributes:
        values: :math:`\hat s` in ``family.names`` order.
        point: symbol name → value.
        loss: :math:`f(\theta(\hat s))`.
        grad_norm: :math:`\lVert\partial_s f\rVert` at :math:`\hat s`.
        converged: gradient below ``STATIONARITY_ATOL · max(1, |f|)`` and scalars finite.
        iterations: optimiser iterations (L-BFGS + Newton).
        message: what happened (e.g. scalars running away: the infimum may not be attained).
    """

    values: torch.Tensor
    point: dict[str, float]
    loss: float
    grad_norm: float
    converged: bool
    iterations: int
    message: str


def _family_loss_pieces(family: Family, oracle: LossOracle) -> list[tuple[float, Callable[[torch.Tensor], torch.Tensor]]]:
    return [(w, (lambda s, f=f: f(family.flat(s)))) for w, f in oracle.pieces()]


def _value_and_grad(pieces, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and gradient over the family scalars (reverse-mode autograd, summed over pieces)."""
    val = torch.zeros((), dtype=s.dtype, device=s.device)
    g = torch.zeros_like(s)
    for w, F in pieces:
        x = s.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            vc = F(x)
            (gc,) = torch.autograd.grad(vc, x)
        val = val + w * vc.detach()
        g = g + w * gc
    return val, g


def _lbfgs(pieces, s0: torch.Tensor, max_iter: int, gtol: float = 1e-14) -> tuple[torch.Tensor, int]:
    from scipy.optimize import minimize

    dt, dev = s0.dtype, s0.device

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        s = torch.as_tensor(x, dtype=dt, device=dev)
        v, g = _value_and_grad(pieces, s)
        if not bool(torch.isfinite(v)):
            return 1e300, np.zeros_like(x)
        return float(v), g.detach().cpu().numpy().astype(np.float64)

    res = minimize(fun, s0.detach().cpu().numpy().astype(np.float64), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": gtol, "ftol": 1e-16 if gtol < 1e-10 else 1e-12,
                            "maxcor": 20})
    return torch.as_tensor(res.x, dtype=dt, device=dev), int(res.nit)


def _hessian(pieces, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of the family Hessian at ``s``: eigenvalues, vectors, kept directions."""
    H = torch.zeros(s.numel(), s.numel(), dtype=s.dtype, device=s.device)
    for w, F in pieces:
        H = H + w * torch.func.hessian(F)(s)
    ev, V = torch.linalg.eigh((H + H.T) / 2)
    keep = ev.abs() > RANK_RTOL[torch.float64] * ev.abs().max()
    return ev, V, keep


def _newton(pieces, s: torch.Tensor, steps: int, tol: float, reuse: bool = True) -> tuple[torch.Tensor, int]:
    r"""Damped Newton polishing; singular directions (in-family symmetries) are left alone.

    The step is :math:`-\sum_{|\lambda_k| > \epsilon} v_k v_k^\top g / |\lambda_k|` from the
    eigen-decomposition of the Hessian :math:`H`, with a backtracking line search. With ``reuse``
    the decomposition is kept for the next step (a chord / simplified Newton step, taken whole and
    only if it halves the gradient norm) as long as the last step cut the gradient norm at least
    tenfold, and recomputed otherwise: near a
    non-degenerate minimum the chord steps converge linearly with a rate of order
    :math:`\lVert H(s)^{-1}(H(s) - H(s_0))\rVert`, so the few extra gradient evaluations replace
    Hessians of the full Monte-Carlo loss (each one a vmapped ``torch.func.hessian`` over every
    prompt). ``steps`` bounds the Hessian evaluations; at most ``4·steps`` steps are taken.

    Returns:
        The polished scalars and the number of steps taken.
    """
    val, g = _value_and_grad(pieces, s)
    it, hessians = 0, 0
    dec = None
    fresh = False
    for it in range(1, 4 * steps + 1 if reuse else steps + 1):
        if float(g.norm()) <= tol:
            return s, it - 1
        if dec is None:
            if hessians >= steps:
                break
            dec, fresh = _hessian(pieces, s), True
            hessians += 1
        ev, V, keep = dec
        step = -(V[:, keep] @ ((V[:, keep].T @ g) / ev[keep].abs()))
        if not fresh:
            # a chord step (stale Hessian) is taken whole and only if it halves the gradient norm
            s_new = s + step
            v_new, g_new = _value_and_grad(pieces, s_new)
            if not (bool(torch.isfinite(v_new)) and float(g_new.norm()) <= 0.5 * float(g.norm())):
                dec = None  # recompute the Hessian here and step again
                continue
        else:
            t, accepted = 1.0, False
            for _ in range(30):
                s_new = s + t * step
                v_new, g_new = _value_and_grad(pieces, s_new)
                if bool(torch.isfinite(v_new)) and (float(v_new) <= float(val) + 1e-13 * max(1.0, abs(float(val)))
                                                    or float(g_new.norm()) < float(g.norm())):
                    accepted = True
                    break
                t /= 2
            if not accepted:
                break
        if not (reuse and float(g_new.norm()) <= 0.1 * float(g.norm())):
            dec = None
        s, val, g, fresh = s_new, v_new, g_new, False
    return s, it


def _start_points(family: Family, init: Any, generator: torch.Generator | None, n_starts: int,
                  dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    if init is not None:
        if isinstance(init, Mapping):
            v = family.params(dict(init), dtype=dtype, device=device)  # validates names
            del v
            return [torch.tensor([float(init[n]) for n in family.names], dtype=dtype, device=device)]
        v = torch.as_tensor(init, dtype=dtype, device=device).reshape(-1)
        if v.numel() != family.dim:
            raise ValueError(f"init needs {family.dim} values {list(family.names)}, got {v.numel()}")
        return [v]
    k = family.dim
    starts = [torch.full((k,), 0.5, dtype=dtype, device=device), torch.full((k,), -0.5, dtype=dtype, device=device)]
    if generator is not None:
        for _ in range(n_starts):
            r = torch.randn(k, generator=generator, dtype=dtype, device=generator.device)
            starts.append(0.5 * r.to(device))
    return starts


def fit_family(
    family: Family,
    loss: LossOracle | Any,
    *,
    init: Mapping[str, float] | Sequence[float] | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    n_starts: int = 3,
    max_iter: int = 500,
    subsample: int = 512,
    newton_steps: int = 10,
    scalar_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> FamilyFit:
    r"""Minimise the loss over the family scalars: :math:`\hat s = \arg\min_s f(\theta(s))` (float64).

    Multi-start L-BFGS (scipy) — from :math:`\pm 0.5\cdot\mathbf 1` and ``n_starts`` random
    :math:`N(0, 0.25)` points — on a subsample of a Monte-Carlo loss, then damped Newton steps on the
    full loss from the best start (or from ``init``), with an L-BFGS fallback when Newton stalls; the
    family gradient ends at round-off where the minimum is attained.

    Args:
        family: the family.
        loss: an oracle (Monte-Carlo under common random numbers, or exact) or a callable
            ``params -> scalar``.
        init: starting scalars (dict or vector); skips the multi-start.
        generator: randomness of the random starts (none drawn if ``None``).
        n_starts: random starts in addition to :math:`\pm 0.5`.
        max_iter: L-BFGS iterations per run.
        subsample: prompts used for the multi-start stage.
        newton_steps: Hessian evaluations of the Newton polish (the Hessian is reused while it
            keeps cutting the gradient norm tenfold per step).
        scalar_loss: the loss as a function of the family scalars directly, ``v (k,) -> scalar``
            (e.g. the symbolic layer's exact family loss ``FamilyLoss.torch_fn()``); replaces ``loss``
            (pass ``loss=None``).

    Returns:
        :class:`FamilyFit` (``converged=False`` with a message if the scalars run away — the
        infimum over the family may not be attained).

    Raises:
        ValueError: bad ``init``.
    """
    if scalar_loss is not None:
        if not callable(scalar_loss):
            raise TypeError(f"scalar_loss must be callable values -> scalar, got {type(scalar_loss).__name__}")
        oracle = None
    else:
        oracle = as_oracle(loss, family.spec)
        if oracle.spec != family.spec:
            raise ValueError(f"loss is for {oracle.spec.describe()} but the family is for {family.spec.describe()}")
    check_int("n_starts", n_starts, minimum=0)
    check_int("max_iter", max_iter, minimum=1)
    dt = getattr(oracle, "dtype", torch.float64)
    dev = getattr(oracle, "device", torch.device("cpu"))
    starts = _start_points(family, init, generator, n_starts, dt, dev)
    full = [(1.0, scalar_loss)] if oracle is None else _family_loss_pieces(family, oracle)
    small = full
    if isinstance(oracle, MonteCarloLoss) and oracle.samples > subsample and len(starts) > 1:
        small = _family_loss_pieces(family, oracle.subsample(subsample))
    iters, best, best_val = 0, None, math.inf
    if len(starts) == 1:
        best = starts[0]
    else:
        for s0 in starts:
            s, it = _lbfgs(small, s0, max_iter, gtol=1e-7)
            iters += it
            v, _ = _value_and_grad(small, s)
            if math.isfinite(float(v)) and float(v) < best_val:
                best, best_val = s, float(v)
    if best is None:
        raise ValueError(f"family {family.name!r}: the loss is not finite at any start point")
    val, g = _value_and_grad(full, best)
    tol = STATIONARITY_ATOL[torch.float64] * max(1.0, abs(float(val))) * 1e-4
    s, it = _newton(full, best, newton_steps, tol)
    iters += it
    val, g = _value_and_grad(full, s)
    if float(g.norm()) > tol * 1e4 or not bool(torch.isfinite(val)):
        # Newton from a poor start: fall back to L-BFGS on the full loss, then polish again
        s, it = _lbfgs(full, best, max_iter)
        iters += it
        s, it = _newton(full, s, newton_steps, tol)
        iters += it
    val, g = _value_and_grad(full, s)
    gnorm = float(g.norm())
    finite = bool(torch.isfinite(s).all()) and math.isfinite(float(val))
    big = float(s.abs().max()) if finite else math.inf
    conv_tol = STATIONARITY_ATOL[torch.float64] * max(1.0, abs(float(val)))
    if not finite or big > DIVERGED_NORM:
        msg = (f"family scalars run away (max |s| = {big:.3g}): the infimum over the family may not be attained")
        converged = False
    elif gnorm > conv_tol:
        msg = f"fit stopped with |grad_s f| = {gnorm:.3g} > {conv_tol:.1g}"
        converged = False
    else:
        msg = "converged"
        converged = True
    point = {n: float(v) for n, v in zip(family.names, s.tolist())}
    return FamilyFit(s.detach(), point, float(val), gnorm, converged, iters, msg)


def family_point(family: Family, point: Any, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""Family scalars :math:`s` for ``point``: symbol values (dict/vector) or full weights lying in the family.

    Full weights (a parameter dict or flat vector) are projected onto the family modulo its
    symmetries (:func:`landscape.experiment.distance.project_onto_family`, the one projection); if
    :math:`\min_{s,g}\lVert g\cdot\theta(s) - \theta\rVert > 10^2\,\mathrm{CONSTRUCTION\_RTOL}\cdot\max(1,\lVert\theta\rVert)`
    the point is not in the family. The scalars returned give :math:`\theta(s)`, the given weights up
    to a symmetry (the same model: loss and stationarity are unchanged).

    Raises:
        ValueError: unknown/missing symbols, NaN values, or weights outside the family.
        TypeError: unsupported type.
    """
    keys = set(family.names)
    if isinstance(point, Mapping) and set(point) <= keys:
        vals = [point.get(n) for n in family.names]
        if any(v is None for v in vals):
            missing = [n for n in family.names if n not in point]
            raise ValueError(f"point needs values for {list(family.names)}; missing {missing}")
        s = torch.tensor([float(v) for v in vals], dtype=dtype)
    elif isinstance(point, Mapping) or (isinstance(point, torch.Tensor) and point.ndim == 1
                                        and point.numel() == num_params(family.spec) != family.dim):
        if isinstance(point, Mapping):
            shapes = param_shapes(family.spec)
            unknown = sorted(set(point) - set(shapes))
            if unknown:
                raise ValueError(f"point has keys {unknown[:5]} that are neither symbols {list(family.names)} "
                                 f"nor parameter names of {family.spec.describe()}")
            point = {k: torch.as_tensor(v, dtype=dtype) for k, v in point.items()}
        theta = as_flat(point, family.spec).to(dtype)
        return _project(family, theta)
    else:
        s = torch.as_tensor(point, dtype=dtype).reshape(-1)
        if s.numel() != family.dim:
            raise ValueError(f"point needs {family.dim} values {list(family.names)}, got {s.numel()}")
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"point has NaN or infinite values: {dict(zip(family.names, s.tolist()))}")
    return s


def _project(family: Family, theta: torch.Tensor) -> torch.Tensor:
    """Scalars of the family point nearest to full weights ``theta``, modulo the model's symmetries.

    The projection is :func:`landscape.experiment.distance.project_onto_family` — the one definition
    of "distance to a family" (training logs it, ``landscape verify`` reports it). The weights are
    accepted when the residual is at most ``1e2 · CONSTRUCTION_RTOL · max(1, ‖θ‖)``; the scalars
    returned give :math:`\theta(s)`, which equals ``theta`` up to a symmetry (the same model).

    Raises:
        ValueError: the weights are not in the family (the message gives the distance).
    """
    from landscape.experiment.distance import project_onto_family  # the projection lives with the distances

    spec = family.spec
    params = unflatten_params(theta.detach().to(torch.float64), spec)
    proj = project_onto_family(params, family)
    scale = max(1.0, float(theta.norm()))
    if proj.residual_norm > CONSTRUCTION_RTOL * scale * 1e2:
        raise ValueError(f"the given weights are not in family {family.name!r}: relative distance {proj.distance:.3g} "
                         f"to the family modulo its symmetries (residual {proj.residual_norm:.3g}); to certify the "
                         "nearest family point of trained weights, project them first "
                         "(landscape.experiment.distance.project_onto_family) and pass its values")
    return proj.vector().to(theta.dtype)
