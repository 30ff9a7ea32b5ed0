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
* :func:`norm_bounds` — lower and upper confidence bounds on :math:`\lVert\mu\rVert` from ``R``
  independent replicate means :math:`e_1, \dots, e_R` of a vector with mean :math:`\mu`, and
  :func:`samples_to_decide`, the sample size at which the bounds would likely decide against a
  tolerance.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["quadratic_form_sf", "NormEstimate", "norm_estimate", "log_log_slope", "NormBounds", "norm_bounds",
           "samples_to_decide", "variance_ratio"]


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


@dataclass(frozen=True)
class NormBounds:
    r"""Confidence bounds on :math:`\lVert\mu\rVert` from independent replicate means (:func:`norm_bounds`).

    Attributes:
        estimate_sq: :math:`U`, the unbiased estimate of :math:`\lVert\mu\rVert^2` (may be negative).
        estimate_sq_se: jackknife standard error of :math:`U` over the replicates.
        lower: lower bound on :math:`\lVert\mu\rVert` (each side at level ``alpha``).
        upper: upper bound on :math:`\lVert\mu\rVert`.
        alpha: one-sided level of each bound.
        replicates: ``R``.
        lam_max: largest eigenvalue of the estimated covariance :math:`\hat C` of :math:`\bar e`.
        tr_c2: :math:`\mathrm{tr}\,\hat C^2`.
        quantile: the Student-t quantile :math:`t_{R-1}(1-\alpha)` used.
    """

    estimate_sq: float
    estimate_sq_se: float
    lower: float
    upper: float
    alpha: float
    replicates: int
    lam_max: float
    tr_c2: float
    quantile: float

    def to_dict(self) -> dict[str, float]:
        return {"estimate_sq": self.estimate_sq, "estimate_sq_se": self.estimate_sq_se, "lower": self.lower,
                "upper": self.upper, "alpha": self.alpha, "replicates": self.replicates,
                "lam_max": self.lam_max, "tr_c2": self.tr_c2, "quantile": self.quantile}


def _score_upper(U: float, lam: float, w: float, t: float) -> float:
    """Largest :math:`x \\ge 0` with :math:`x - U \\le t\\sqrt{4x\\lambda + 2w}` (the larger root of the squared equation)."""
    b = 2 * U + 4 * t * t * lam
    c = U * U - 2 * t * t * w
    disc = max(b * b - 4 * c, 0.0)
    return max((b + math.sqrt(disc)) / 2, 0.0)


def norm_bounds(replicates: torch.Tensor, alpha: float, cov: torch.Tensor | None = None) -> NormBounds:
    r"""Lower and upper :math:`(1-\alpha)` confidence bounds on :math:`\lVert\mu\rVert` from replicate means.

    ``replicates`` holds :math:`R` independent estimates :math:`e_r` of :math:`\mu \in \mathbb R^q`
    (e.g. the normal score of :math:`R` disjoint batches of prompts). With :math:`\bar e` their mean
    and :math:`\hat C = \frac{1}{R(R-1)}\sum_r (e_r-\bar e)(e_r-\bar e)^\top` the estimated covariance
    of :math:`\bar e`,

    .. math::
        U = \frac{1}{R(R-1)}\sum_{r\ne s} e_r^\top e_s = \lVert\bar e\rVert^2 - \mathrm{tr}\,\hat C

    is unbiased for :math:`\lVert\mu\rVert^2` (the cross terms of independent replicates). With
    :math:`t = t_{R-1}(1-\alpha)`:

    * **upper bound** (score type): the largest :math:`\rho` with
      :math:`\rho^2 - U \le t\sqrt{4\rho^2\hat\lambda_{\max} + 2\,\mathrm{tr}\,\hat C^2}` — the
      variance of :math:`U` under :math:`\lVert\mu\rVert = \rho` in the worst direction of
      :math:`\mu` (:math:`\mathrm{Var}\,U \approx 4\mu^\top C\mu + 2\,\mathrm{tr}\,C^2`), evaluated at the
      hypothesised :math:`\rho`, not at the estimate: a Wald interval
      :math:`U + t\,\widehat{\mathrm{se}}` fails here because a small :math:`\bar e` also shrinks its own
      standard error (measured: non-coverage 3.5% at nominal 1% for ``q = 2``, ``R = 64``).
    * **lower bound**: :math:`\sqrt{\max(U - t\,\widehat{\mathrm{se}}_{\mathrm{jack}}, 0)}` with the
      jackknife standard error of :math:`U` over replicates, which is conservative when
      :math:`\mu = 0` (the jackknife over-estimates the variance of a degenerate U-statistic).

    Why replicates: the per-prompt gradients of these models are heavy-tailed; means over batches of
    :math:`T/R` prompts are close to Gaussian, and their spread estimates the variance of
    :math:`\bar e` without a fourth-moment estimate of the per-prompt law. Measured non-coverage of
    the upper bound (2000 draws each, nominal 1%, ``R = 32`` batches of 50 draws, ``q`` in
    {1, 2, 20, 140}, Gaussian, Student-t(3) and product-of-Gaussians coordinates, :math:`\lVert\mu\rVert`
    from 0.5 to 10 noise floors): see :mod:`landscape.numeric.calibration` and ``docs/calibration.md``
    for the figures on the certificate's own cases.

    Args:
        replicates: ``(R, q)`` tensor, ``R >= 3``.
        alpha: one-sided level of each bound, in (0, 1).
        cov: optional ``(q, q)`` estimate of the covariance of :math:`\bar e` from the individual
            draws behind the replicates (e.g. per-prompt covariance over the total count); when given,
            :math:`\hat\lambda_{\max}` and :math:`\mathrm{tr}\,\hat C^2` are taken from it — with
            :math:`R < q` replicates the replicate covariance has rank :math:`R-1` and its largest
            eigenvalue is inflated (by about :math:`(1+\sqrt{q/R})^2` for isotropic noise), which
            costs power without buying validity.

    Returns:
        :class:`NormBounds`.

    Raises:
        ValueError: fewer than 3 replicates, non-finite values, or a bad ``alpha``.
    """
    from scipy.stats import t as student_t

    if replicates.ndim != 2 or replicates.shape[0] < 3:
        raise ValueError(f"norm_bounds needs an (R, q) tensor with R >= 3 replicates, got {tuple(replicates.shape)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    E = replicates.detach().double().cpu()
    if not bool(torch.isfinite(E).all()):
        raise ValueError("replicate means contain NaN or infinite values")
    R = E.shape[0]
    G = E @ E.T
    S, tr = float(G.sum()), float(torch.diagonal(G).sum())
    U = (S - tr) / (R * (R - 1))
    rows = G.sum(1)
    diag = torch.diagonal(G)
    U_loo = (S - 2 * rows + diag - (tr - diag)) / ((R - 1) * (R - 2))
    se = math.sqrt(float((R - 1) / R * ((U_loo - U_loo.mean()) ** 2).sum()))
    if cov is not None:
        Cq = cov.detach().double().cpu()
        if Cq.shape != (E.shape[1], E.shape[1]):
            raise ValueError(f"cov must be ({E.shape[1]}, {E.shape[1]}), got {tuple(Cq.shape)}")
        lam = torch.linalg.eigvalsh((Cq + Cq.T) / 2).clamp_min(0)
    else:
        D = E - E.mean(0)
        small = D @ D.T / ((R - 1) * R)  # same nonzero eigenvalues as C-hat = D^T D / (R(R-1))
        lam = torch.linalg.eigvalsh((small + small.T) / 2).clamp_min(0)
    lam_max, w = float(lam.max()), float((lam**2).sum())
    t = float(student_t.ppf(1 - alpha, R - 1))
    upper = math.sqrt(_score_upper(U, lam_max, w, t))
    lower = math.sqrt(max(U - t * se, 0.0))
    return NormBounds(U, se, lower, upper, alpha, R, lam_max, w, t)


def samples_to_decide(bounds: NormBounds, samples: int, tol: float, *, power_quantile: float = 1.6448536269514722,
                      max_factor: float = 1e6) -> int | None:
    r"""The sample size at which the upper bound would likely fall below ``tol`` (or ``None``: not expected to).

    Extrapolates from the replicates at ``samples`` prompts: :math:`\hat C \propto 1/T`, so at
    :math:`T' = cT` the bound solves :math:`\rho^2 - U \le t'\sqrt{4\rho^2\hat\lambda/c + 2w/c^2}` with
    :math:`U` replaced by :math:`\max(U, 0)` and the quantile raised to :math:`t' = t +`
    ``power_quantile`` (about 95% power by default). Returns the smallest power of two
    times ``samples`` that decides, or ``None`` if :math:`U` itself is at least :math:`\mathrm{tol}^2`
    (the estimate says the norm exceeds ``tol``: more samples should reject, not accept).

    Args:
        bounds: :func:`norm_bounds` at ``samples`` prompts.
        samples: the prompts behind ``bounds``.
        tol: the tolerance on :math:`\lVert\mu\rVert`.
        power_quantile: normal quantile of the targeted power.
        max_factor: give up beyond ``max_factor · samples``.
    """
    U = max(bounds.estimate_sq, 0.0)
    if U >= tol * tol:
        return None
    c = 1.0
    while c <= max_factor:
        lam, w = bounds.lam_max / c, bounds.tr_c2 / (c * c)
        if _score_upper(U, lam, w, bounds.quantile + power_quantile) <= tol * tol:
            return int(math.ceil(c * samples))
        c *= 2
    return None


def variance_ratio(replicates: torch.Tensor, cov: torch.Tensor) -> float:
    r"""How much larger the covariance of a mean of replicates is than an i.i.d. prediction ``cov``.

    ``replicates`` are :math:`M` independent batch means :math:`e_r` whose mean :math:`\bar e` has
    covariance :math:`C`, estimated without bias by :math:`\hat C = \frac{1}{M(M-1)}\sum_r(e_r-\bar e)(e_r-\bar e)^\top`;
    ``cov`` is the covariance :math:`C_0` that i.i.d. prompts would give (per-prompt covariance over the
    count). For quasi-random or paired prompts :math:`C = \kappa C_0` only approximately, so the ratio
    is taken in the two places that matter to :func:`norm_bounds` and kept at the larger one,

    .. math::
        \hat\kappa = \max\Big(\frac{\mathrm{tr}\,\hat C}{\mathrm{tr}\,C_0},\;
        \frac{v^\top\hat C v}{v^\top C_0 v}\Big),\qquad v \text{ the top eigenvector of } C_0 ,

    and :math:`\hat\kappa C_0` is used as the covariance of :math:`\bar e`: it keeps the shape of the
    well-estimated per-prompt covariance (a replicate covariance from :math:`M < q` batches has rank
    :math:`M - 1` and an inflated top eigenvalue) and takes the scale from the independent replicates.

    Args:
        replicates: ``(M, q)``, ``M >= 3``.
        cov: ``(q, q)`` positive semi-definite, not zero.

    Returns:
        :math:`\hat\kappa > 0` (about 1 for i.i.d. prompts; below 1 when the sampler reduces variance).

    Raises:
        ValueError: bad shapes, fewer than 3 replicates, or a zero ``cov``.
    """
    E = replicates.detach().double().cpu()
    C0 = cov.detach().double().cpu()
    if E.ndim != 2 or E.shape[0] < 3 or C0.shape != (E.shape[1], E.shape[1]):
        raise ValueError(f"variance_ratio needs (M >= 3, q) replicates and a (q, q) covariance, got "
                         f"{tuple(E.shape)} and {tuple(C0.shape)}")
    M = E.shape[0]
    D = E - E.mean(0)
    tr0 = float(torch.diagonal(C0).sum())
    if not tr0 > 0:
        raise ValueError("variance_ratio: the i.i.d. covariance is zero")
    tr = float((D * D).sum()) / (M * (M - 1))
    lam, V = torch.linalg.eigh((C0 + C0.T) / 2)
    v = V[:, -1]
    top = float(((D @ v) ** 2).sum()) / (M * (M - 1)) / max(float(lam[-1]), 1e-300)
    return max(tr / tr0, top)
