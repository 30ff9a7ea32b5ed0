r"""Small statistical helpers for Monte-Carlo gradient estimates.

* :func:`quadratic_form_sf` — the upper tail of :math:`Q = \sum_j \lambda_j \chi^2_{1,j}`, the law of
  :math:`\lVert \bar e\rVert^2` for a Gaussian vector :math:`\bar e \sim N(0, C)` with eigenvalues
  :math:`\lambda_j` of ``C``: Imhof's (1961) inversion formula, with the Welch–Satterthwaite scaled
  :math:`\chi^2` (Box 1954) as fallback.
* :class:`NormEstimate` — a vector norm estimated from a noisy mean: the plain norm with a delta-method
  standard error, the noise floor :math:`\sqrt{\mathrm{tr}\,C}` and the bias-corrected squared norm
  :math:`\lVert\bar v\rVert^2 - \mathrm{tr}\,C` (unbiased for :math:`\lVert v\rVert^2`).
* :func:`log_log_slope` — weighted least-squares slope of :math:`\log\lVert\bar v_T\rVert` on
  :math:`\log T` (−1/2 for a pure Monte-Carlo error, 0 for a non-zero limit).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["quadratic_form_sf", "NormEstimate", "norm_estimate", "log_log_slope"]


def _satterthwaite_sf(x: float, lam: torch.Tensor) -> float:
    from scipy.stats import chi2

    s1 = float(lam.sum())
    s2 = float((lam**2).sum())
    scale = s2 / s1
    dof = s1**2 / s2
    return float(chi2.sf(x / scale, dof))


def quadratic_form_sf(x: float, eigenvalues: torch.Tensor, *, method: str = "imhof") -> float:
    r""":math:`P(Q > x)` for :math:`Q = \sum_j \lambda_j Z_j^2`, :math:`Z_j` i.i.d. standard normal, :math:`\lambda_j \ge 0`.

    Imhof (1961):

    .. math::
        P(Q > x) = \frac12 + \frac1\pi\int_0^\infty \frac{\sin\vartheta(u)}{u\,\rho(u)}\,du,\quad
        \vartheta(u) = \tfrac12\sum_j \arctan(\lambda_j u) - \tfrac12 x u,\quad
        \rho(u) = \prod_j (1 + \lambda_j^2u^2)^{1/4}.

    Falls back to the Welch–Satterthwaite approximation :math:`Q \approx a\chi^2_\nu`,
    :math:`a = \sum\lambda^2/\sum\lambda`, :math:`\nu = (\sum\lambda)^2/\sum\lambda^2`, when the
    quadrature does not reach an absolute error of 1e-7 (and always for ``method="satterthwaite"``).

    Args:
        x: observed value of :math:`Q`.
        eigenvalues: the weights :math:`\lambda_j` (negative round-off is clipped to zero).
        method: ``"imhof"`` or ``"satterthwaite"``.

    Returns:
        The tail probability in ``[0, 1]``.

    Raises:
        ValueError: unknown method or no positive weight.
    """
    if method not in ("imhof", "satterthwaite"):
        raise ValueError(f"method must be 'imhof' or 'satterthwaite', got {method!r}")
    lam = eigenvalues.detach().double().cpu().clamp_min(0)
    lam = lam[lam > 0]
    if lam.numel() == 0:
        raise ValueError("quadratic form has no positive weight")
    if x <= 0:
        return 1.0
    if method == "satterthwaite":
        return _satterthwaite_sf(x, lam)
    import numpy as np
    from scipy.integrate import quad

    top = float(lam.max())
    lj = (lam / top).numpy()
    xs = x / top

    def integrand(u: float) -> float:
        if u == 0.0:
            return 0.5 * (float(lj.sum()) - xs)
        theta = 0.5 * float(np.arctan(lj * u).sum()) - 0.5 * xs * u
        logrho = 0.25 * float(np.log1p((lj * u) ** 2).sum())
        return math.sin(theta) / (u * math.exp(logrho))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = 20.0
        v1, e1 = quad(integrand, 0.0, split, limit=4000, epsabs=1e-12, epsrel=1e-10)
        v2, e2 = quad(integrand, split, math.inf, limit=2000, epsabs=1e-12, epsrel=1e-10)
    val, err = v1 + v2, e1 + e2
    p = 0.5 + val / math.pi
    if not math.isfinite(p) or err > 1e-7 or p < -1e-7 or p > 1 + 1e-7:
        return _satterthwaite_sf(x, lam)
    return min(max(p, 0.0), 1.0)


@dataclass(frozen=True)
class NormEstimate:
    r"""The norm :math:`\lVert v\rVert` of a vector estimated by a noisy mean :math:`\bar v \sim (v, C)`.

    Attributes:
        value: :math:`\lVert\bar v\rVert`.
        se: delta-method standard error :math:`\sqrt{\bar v^\top C\bar v}/\lVert\bar v\rVert` (0 for exact values).
        noise_floor: :math:`\sqrt{\mathrm{tr}\,C}`, the expected size of :math:`\lVert\bar v\rVert` when :math:`v = 0`.
        debiased_sq: :math:`\lVert\bar v\rVert^2 - \mathrm{tr}\,C`, unbiased for :math:`\lVert v\rVert^2`.
        debiased_sq_se: its standard error, :math:`\sqrt{4(\bar v^\top C\bar v - \mathrm{tr}\,C^2) + 2\,\mathrm{tr}\,C^2}`
            (Gaussian approximation, the first term clipped at zero).
    """

    value: float
    se: float = 0.0
    noise_floor: float = 0.0
    debiased_sq: float = float("nan")
    debiased_sq_se: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "se": self.se, "noise_floor": self.noise_floor,
                "debiased_sq": self.debiased_sq, "debiased_sq_se": self.debiased_sq_se}


def norm_estimate(v: torch.Tensor, cov: torch.Tensor | None = None) -> NormEstimate:
    """:class:`NormEstimate` of ``v`` with covariance ``cov`` of the estimate (``None``: exact)."""
    val = float(v.norm())
    if cov is None:
        return NormEstimate(val, 0.0, 0.0, val**2, 0.0)
    vCv = float(v @ cov @ v)
    trC = float(torch.diagonal(cov).sum())
    trC2 = float((cov * cov).sum())
    se = math.sqrt(max(vCv, 0.0)) / val if val > 0 else math.sqrt(max(trC, 0.0))
    var_sq = 4 * max(vCv - trC2, 0.0) + 2 * trC2
    return NormEstimate(val, se, math.sqrt(max(trC, 0.0)), val**2 - trC, math.sqrt(var_sq))


def log_log_slope(sizes: Sequence[int], norms: Sequence[NormEstimate]) -> tuple[float, float]:
    r"""Weighted least-squares slope of :math:`\log\lVert\bar v_T\rVert` against :math:`\log T`, with its standard error.

    The variance of :math:`\log\lVert\bar v\rVert` is taken as
    :math:`\mathrm{Var}(\lVert\bar v\rVert^2) / (4\lVert\bar v\rVert^4)` (delta method, using
    ``debiased_sq_se`` as the standard deviation of the squared norm).

    Returns:
        ``(slope, se)``; ``(nan, nan)`` with fewer than two sizes.
    """
    if len(sizes) < 2:
        return float("nan"), float("nan")
    xs = [math.log(t) for t in sizes]
    ys, ws = [], []
    for n in norms:
        v2 = max(n.value**2, 1e-300)
        var = (n.debiased_sq_se**2) / (4 * v2 * v2)
        ys.append(math.log(max(n.value, 1e-300)))
        ws.append(1.0 / max(var, 1e-12))
    W = sum(ws)
    xb = sum(w * x for w, x in zip(ws, xs)) / W
    yb = sum(w * y for w, y in zip(ws, ys)) / W
    sxx = sum(w * (x - xb) ** 2 for w, x in zip(ws, xs))
    sxy = sum(w * (x - xb) * (y - yb) for w, x, y in zip(ws, xs, ys))
    return sxy / sxx, math.sqrt(1.0 / sxx)
