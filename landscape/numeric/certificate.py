r"""Stationarity certificates: does a parameter family hold stationary points of the in-context loss?

The claims (Ahn et al. 2023, Theorems 3–4; Cheng, Chen, Sra 2024) have the form
:math:`\inf_{\theta\in S}\lVert\nabla f(\theta)\rVert = 0`. The natural witness is the minimiser of
:math:`f` over the family scalars, :math:`\theta^* = \theta(s^*)` (:func:`landscape.numeric.fit_family`):
there the gradient's component *tangent* to :math:`S` vanishes by construction, and the claim is
that the *normal* component vanishes too.

**Which gradient.** By default the gradient over **all** entries of every matrix — a stronger
question than the papers ask; ``mask="blocks"`` is the papers' statement. A ``mask``
restricts it to a subset of entries (the other entries stay at the family's values): ``"blocks"`` —
the :math:`d\times d`, label-column, label-row and corner blocks in which the family has a free
symbol, i.e. the sparse parameterisation the papers' theorems are stated in (Ahn et al.'s Theorem 3
differentiates w.r.t. the blocks :math:`A_l` only); ``"paper"``, ``"sparse"``, ``"full"`` (alias ``"all"``) —
the names of :data:`landscape.core.masks.MASKS`; or a dict of boolean masks (``True`` = free; names left out are fixed). With an orthonormal
basis ``U`` of the tangent space :math:`\mathrm{span}\,\partial\theta/\partial s` (inside the free
entries) and ``N`` of its complement among the free entries, the certificate reports
:math:`\lVert U^\top\nabla f\rVert` and :math:`\lVert N^\top\nabla f\rVert`.

**Exact loss.** :math:`s^*` is found by L-BFGS then Newton steps in float64; the verdict compares
:math:`\lVert N^\top\nabla f(\theta^*)\rVert` with ``STATIONARITY_ATOL · max(1, |f|)``.

**Monte-Carlo loss** (statistical verdict). For each sample size :math:`T_1 < \dots < T_K`:

1. draw three independent samples (common random numbers inside each; one explicit generator for
   everything): a *fitting* sample ``A`` (``fit_ratio · T`` prompts), a *direction* sample ``C``
   and an *evaluation* sample ``B`` (``T`` prompts each);
2. fit :math:`\hat s` on ``A``;
3. the *effective* (Neyman-orthogonalised) normal score of a sample is

   .. math::
       \bar e = N^\top M\bar g,\qquad M = I - H_A J\,(J^\top H_A J)^{+}J^\top ,

   with :math:`\bar g` its mean per-prompt gradient at :math:`\hat\theta = \theta(\hat s)`,
   :math:`J = \partial\theta/\partial s` (without the directions of in-family symmetries, along
   which every per-prompt loss is constant) and :math:`H_A` the Hessian of the loss on ``A``.
   Why: :math:`\hat s` misses the population optimum by :math:`\Delta s = O(T^{-1/2})`, so the true
   normal gradient at :math:`\hat\theta` is :math:`N^\top HJ\Delta s \ne 0` even when the claim holds;
   ``M`` removes this first-order effect of the fitting error (:math:`MHJ = 0`), so
   :math:`E[\bar e\mid A] = O(1/T)` under the claim, while :math:`\bar e \to N^\top\nabla f` when it
   fails. ``M`` depends on ``A`` only, so :math:`\bar e_B` is linear in the independent
   :math:`\bar g_B`, with covariance :math:`C = N^\top M\hat\Sigma_B M^\top N / T`
   (:math:`\hat\Sigma_B` the per-prompt gradient covariance on ``B``).
4. **Directional test** (default, ``test="directional"``). The direction
   :math:`u_p = (N\bar e_C)_p / \hat v^C_p` — the effective normal score of ``C`` divided entrywise by
   its per-prompt variances — depends on ``A`` and ``C`` only; the one-dimensional statistic
   :math:`t = u^\top\bar e_B / \sqrt{u^\top C u}` is :math:`N(0,1)` under the claim (a scalar CLT,
   robust to the heavy tails of per-prompt gradients, which make tests that invert — or merely use —
   the whole estimated covariance anti-conservative), and large when ``C`` and ``B`` agree on a
   non-zero normal gradient; p-value :math:`1-\Phi(t)`. Keeping ``C`` apart from ``A`` matters:
   a direction read off the fitting sample shares that sample's noise with ``M`` and the fit, which
   biases :math:`t` upwards by :math:`O(\kappa/\sqrt T)` for heavy-tailed gradients (seen for
   three-layer linear attention). Two omnibus tests are reported too: ``"standardized"``
   (:math:`\sum_p \bar e_p^2/C_{pp}`) and ``"norm"`` (:math:`\lVert\bar e\rVert^2`), each against its
   Gaussian null law :math:`\sum_j\lambda_j\chi^2_1` (Imhof 1961).
5. **Confidence bounds.** The direction and evaluation samples are each split into ``R`` replicate
   batches (``replicates``, default 32) of :math:`T/R` consecutive prompts; the effective normal score
   of each batch, :math:`e_r = R_M\bar g_r`, gives :math:`2R` independent replicates of
   :math:`\bar e`, and :func:`landscape.numeric.stats.norm_bounds` turns them into a lower and an
   upper confidence bound on :math:`\lVert N^\top\nabla f\rVert` (the bias-corrected
   :math:`U = \lVert\bar e\rVert^2 - \mathrm{tr}\,\hat C` from the replicates' cross products; a
   score-type upper bound with :math:`\mathrm{Var}\,U \approx 4\rho^2\lambda_{\max} + 2\,\mathrm{tr}\,C^2`
   at the hypothesised norm :math:`\rho`, :math:`\lambda_{\max}` and :math:`\mathrm{tr}\,C^2` from the
   per-prompt covariance of the :math:`2T` prompts, and a jackknife lower bound; Student-t quantiles with
   :math:`2R-1` degrees of freedom). Means over batches are close to Gaussian even when single
   prompts are heavy-tailed. Measured coverage: ``tests/test_numeric_certificate_stats.py`` (simulated
   Gaussian, t(3) and product-of-Gaussians replicates, ``q`` = 2 and 30: non-coverage of each side
   within binomial slack of the nominal 2%) and ``docs/calibration.md`` (the certificate's own cases:
   the upper bound of ``pgd-all-L2`` against its norm 1.808 measured on :math:`10^6` prompts).

**Verdict** (:func:`decide`), at level ``alpha`` and tolerance ``tol``. Look ``k`` (sample size
:math:`T_k`) spends :math:`\alpha_k`: :math:`\alpha/K` for the ``K`` given sizes (Bonferroni), or
:math:`\alpha 2^{-k}` in the sequential design (``budget=``: sizes ``T_1, 4T_1, 16T_1, ...`` until
decisive or out of budget; alpha spending, so the error control holds over every look taken,
whatever the stopping rule):

* ``not_stationary`` if some look rejects, :math:`p_k < \alpha_k` (combined p-value
  :math:`\min_k p_k\alpha/\alpha_k`, :func:`combined_p_value`);
* else ``stationary`` — *within tol* — if some look's upper bound (at level :math:`\alpha_k`) is at
  most ``tol``: :math:`\lVert N^\top\nabla f\rVert \le \mathrm{tol}` at confidence :math:`1-\alpha`;
* else ``inconclusive``, with the sample size that would likely decide (extrapolated from the
  measured variance, :func:`landscape.numeric.stats.samples_to_decide`).

So a false ``not_stationary`` (true normal gradient 0) and a false ``stationary`` (true normal
gradient above ``tol``) each have probability at most :math:`\alpha` (union bound over looks).
Not rejecting is never reported as accepting. The default ``tol`` is ``TOL_REL`` (2%) times the
gradient norm at the family's zero point :math:`\theta(0)` over the free entries (estimated on a
sample of its own and reported with its standard error). The log–log slope of the standardized
normal score against ``T`` (:math:`-1/2` for pure noise) is kept as a diagnostic; it no longer
decides. When an exact loss *on the family* is known (``family_loss="auto"``:
the symbolic layer's Wishart or one-layer routes, e.g. ``pgd`` on Gaussian data), the scalars are
fitted on it once: there is no fitting error, no sample ``A`` and ``M = I``, which also protects the
test from heavy-tailed fitting samples. For a *given* point (no fitting), ``M = I`` too. The
direction and evaluation samples are drawn chunk by chunk and discarded
(:func:`landscape.numeric.oracles.streamed_gradient_moments`): memory does not grow with ``T``.

Caveats (measured): per-prompt gradients are heavy-tailed (products of many Gaussian factors for
deep linear attention), so the Gaussian approximations need hundreds to thousands of prompts per
size. With three-layer linear attention on Gaussian covariates and a Monte-Carlo fitting sample of
a few hundred prompts, a single extreme prompt in ``A`` moved the fit far enough for false
rejections; the exact family loss removes this, and larger ``T`` (the CLI default is
1000/4000/16000) reduces it.

**Samplers** (``sampler=``): i.i.d. prompts (``"mc"``, the default), one scrambled Sobol set per
replicate batch (``"qmc"``) or label-sign antithetic pairs (``"antithetic"``),
:func:`landscape.numeric.oracles.prompt_chunks`. With the last two the prompts inside a batch are
dependent: every covariance of the means is the per-prompt one over ``T`` rescaled by the ratio
:math:`\hat\kappa` the independent replicate batches measure (:func:`landscape.numeric.stats.variance_ratio`),
and the directional statistic is the replicate Student :math:`t` (``R - 1`` degrees of freedom).
Measured on the certificate's cases (``benchmarks/bench_variance.py``): neither reduces the variance
of the normal score (QMC within ~10% of plain Monte Carlo, antithetic pairs double it), hence the default.

**Small samples.** A ``not_stationary`` verdict whose rejecting look has fewer than
:data:`DIRECTIONAL_MIN_T` prompts per sample carries a ``caveat``: at ``T = 400`` the directional test
rejected the stationary ``pgd-blocks-L2`` in 8 of 60 seeds at nominal 0.05 (heavy-tailed per-prompt
gradients; the exact family fit rules out a fitting bias).

A Hessian inertia summary (dense Hessian on the free entries, modulo the model's continuous
symmetries that stay inside them) is attached: the exact Hessian, or the sample Hessian on (a
subsample of) the last fitting sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from landscape._checks import check_int, check_real
from landscape.tolerances import RANK_RTOL, STATIONARITY_ATOL
from landscape.theory.families import Family
from landscape.core.masks import canonical_mask, make_mask
from landscape.core.model import flatten_params, num_params, param_shapes
from landscape.core.tasks import Task
from landscape.numeric.derivatives import (
    Inertia,
    gradient,
    hessian,
    hvp,
    inertia,
    orthonormal_complement,
    symmetry_generators,
)
from landscape.numeric.fit import FamilyFit, family_point, fit_family
from landscape.numeric.oracles import (
    ExactLoss,
    LossOracle,
    MonteCarloLoss,
    as_oracle,
    check_sampler,
    streamed_gradient_moments,
)
from landscape.numeric.stats import (
    NormBounds,
    NormEstimate,
    log_log_slope,
    norm_bounds,
    norm_estimate,
    quadratic_form_sf,
    samples_to_decide,
    variance_ratio,
)

__all__ = [
    "SampleSizeResult",
    "StationarityCertificate",
    "certify_stationary",
    "decide",
    "combined_p_value",
    "free_entries",
    "VERDICTS",
    "TESTS",
]

VERDICTS = ("stationary", "not_stationary", "inconclusive")
TESTS = ("directional", "standardized", "norm")

STANDARDIZE_FLOOR = 1e-6
TOL_REL = 0.02
"""Default Monte-Carlo tolerance: ``TOL_REL`` times the gradient norm (over the free entries) at the
family's zero point :math:`\theta(0)` — "the normal gradient is below 2% of the gradient of the
do-nothing model". Near-misses smaller than that (e.g. the Theorem 3 family under the wrong task prior,
about 1–2% on the blocks at two layers) need an explicit, smaller ``tol`` and larger samples."""
REPLICATES = 32
"""Replicate batches per direction / evaluation sample (the confidence bounds use both: ``2R``)."""
GROWTH = 4
SAMPLER = "mc"
"""Default prompt sampler of the Monte-Carlo certificate (:data:`landscape.numeric.oracles.SAMPLERS`):
plain Monte Carlo, because neither scrambled Sobol points nor antithetic pairs reduce the variance of
the normal score on the certificate's cases (``benchmarks/bench_variance.py``, docs/benchmarks.md)."""
DIRECTIONAL_MIN_T = 1000
"""Below this many prompts per sample a ``not_stationary`` verdict of the directional test carries a
caveat (``StationarityCertificate.caveat``): with heavy-tailed per-prompt gradients its Gaussian
approximation over-rejects there — measured false-reject rate 8/60 = 0.13 for ``pgd-blocks-L2`` and
5/60 = 0.08 for ``fgd-blocks-L1`` at ``T = 400``, nominal 0.05 (docs/calibration.md)."""
"""Sequential design: each look has ``GROWTH`` times the prompts of the previous one."""


# ---------------------------------------------------------------------- masks
def free_entries(family: Family, mask: str | Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Boolean vector ``(P,)`` (flat order) of the entries the gradient is taken over.

    Args:
        family: the family.
        mask: ``None`` (every entry), a mask name of :data:`landscape.core.masks.MASKS` — ``"full"``
            (alias ``"all"``, every entry), ``"blocks"`` (the structural blocks — top-left ``d×d``,
            label column, label row, corner — holding a free symbol of the family), ``"paper"``,
            ``"sparse"`` — or a dict name → bool tensor of the parameter's shape (names left out are
            fixed).

    Returns:
        The flat boolean mask.

    Raises:
        ValueError: unknown preset, wrong names/shapes, or a family that moves entries outside the mask.
    """
    spec = family.spec
    shapes = param_shapes(spec)
    if mask is None:
        return torch.ones(num_params(spec), dtype=torch.bool)
    if isinstance(mask, str):
        try:
            name = canonical_mask(mask)
        except ValueError as exc:
            raise ValueError(f"{exc}, or a dict of boolean masks") from None
        m = make_mask(spec, name, family.problem.d, family_blocks=family.blocks)
    elif isinstance(mask, Mapping):
        unknown = sorted(set(mask) - set(shapes))
        if unknown:
            raise ValueError(f"mask names {unknown[:5]} are not parameters of {spec.describe()}")
        m = {}
        for name, shape in shapes.items():
            v = mask.get(name)
            if v is None:
                m[name] = torch.zeros(shape, dtype=torch.bool)
                continue
            v = torch.as_tensor(v)
            if tuple(v.shape) != shape:
                raise ValueError(f"mask[{name!r}] has shape {tuple(v.shape)}, expected {shape}")
            m[name] = v.to(torch.bool)
    else:
        raise TypeError(f"mask must be a preset name or a dict of boolean tensors, got {type(mask).__name__}")
    flat = flatten_params({k: v.to(torch.float64) for k, v in m.items()}, spec) > 0.5
    if not bool(flat.any()):
        raise ValueError("the mask leaves no free entry")
    return flat


def _check_inside(family: Family, J: torch.Tensor, free: torch.Tensor) -> None:
    outside = J[~free]
    if outside.numel() and float(outside.abs().max()) > RANK_RTOL[torch.float64] * max(1.0, float(J.abs().max())):
        raise ValueError(f"family {family.name!r} moves entries outside the mask; use a mask whose free "
                         "entries contain every entry the family's symbols change (e.g. 'blocks' or 'all')")


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class SampleSizeResult:
    """The Monte-Carlo evidence at one sample size ``T``.

    Attributes:
        samples: evaluation prompts ``T``.
        fit_samples: fitting prompts.
        point: fitted scalars at this ``T``.
        loss, loss_se: Monte-Carlo loss on the evaluation sample and its standard error.
        tangent: :math:`\\lVert U^\\top\\bar g\\rVert`.
        normal: :math:`\\lVert N^\\top\\bar g\\rVert` (plain orthogonal projection).
        effective_normal: :math:`\\lVert\\bar e\\rVert`, the orthogonalised normal score.
        standardized_normal: :math:`\\lVert\\bar e\\rVert` in per-prompt standard deviations
            (entrywise); its log–log slope against ``T`` is the shrinkage check.
        statistic, p_value: of the test used for the verdict.
        dof: effective (Welch–Satterthwaite) degrees of freedom of the omnibus null law.
        tests: ``{name: (statistic, p_value)}`` for every test in :data:`TESTS`.
        alpha: the level spent on this look (:math:`\\alpha_k`).
        bounds: lower/upper confidence bounds on :math:`\\lVert N^\\top\\nabla f\\rVert` at level
            :math:`\alpha_k` each, from the replicate batches of this look's direction and evaluation
            samples (:func:`landscape.numeric.stats.norm_bounds`).
        seconds: wall time of this look.
        variance_ratio: :math:`\\hat\\kappa`, the variance of the mean relative to i.i.d. prompts that the
            replicate batches measured (1 for ``sampler="mc"``; :func:`variance_ratio`); every covariance
            of this look's means is the per-prompt one over ``T`` times :math:`\\hat\\kappa`.
    """

    samples: int
    fit_samples: int
    point: dict[str, float]
    loss: float
    loss_se: float
    tangent: NormEstimate
    normal: NormEstimate
    effective_normal: NormEstimate
    standardized_normal: NormEstimate
    statistic: float
    p_value: float
    dof: float
    tests: dict[str, tuple[float, float]] = field(default_factory=dict)
    alpha: float = float("nan")
    bounds: NormBounds | None = None
    seconds: float = 0.0
    variance_ratio: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "fit_samples": self.fit_samples, "point": self.point, "loss": self.loss,
                "alpha": self.alpha, "bounds": None if self.bounds is None else self.bounds.to_dict(),
                "seconds": self.seconds, "variance_ratio": self.variance_ratio,
                "loss_se": self.loss_se, "grad_norm_tangent": self.tangent.to_dict(),
                "grad_norm_normal": self.normal.to_dict(), "effective_normal": self.effective_normal.to_dict(),
                "standardized_normal": self.standardized_normal.to_dict(),
                "statistic": self.statistic, "p_value": self.p_value, "dof": self.dof,
                "tests": {k: {"statistic": v[0], "p_value": v[1]} for k, v in self.tests.items()}}


@dataclass(frozen=True)
class StationarityCertificate:
    """Verdict on whether a family holds a stationary point of the loss, with the evidence.

    Attributes:
        verdict: ``"stationary"``, ``"not_stationary"`` or ``"inconclusive"``.
        family: family name.
        method: ``"exact"`` or ``"monte_carlo"``.
        point: the tested point (symbol → value; the largest ``T``'s fit for Monte-Carlo).
        loss, loss_se: loss at the point (SE 0 for exact).
        grad_norm_tangent, grad_norm_normal: gradient components (largest ``T`` for Monte-Carlo).
        mask: which entries the gradient is over (``"all"``, ``"blocks"``, ``"paper"``, ``"custom"``).
        free: number of free entries; normal_dim: dimension of the normal space.
        test: the test behind the verdict.
        p_value: Bonferroni-combined p-value (Monte-Carlo; ``nan`` for exact).
        alpha: test level.
        tolerance: zero threshold of the exact verdict (``nan`` for Monte-Carlo).
        tol: Monte-Carlo: the tolerance on :math:`\\lVert N^\\top\\nabla f\\rVert` a ``stationary`` verdict
            certifies (``nan`` for exact).
        tol_source: how ``tol`` was set (given, or ``TOL_REL`` times the gradient norm at the family's
            zero point, with that norm's standard error).
        normal_lower, normal_upper: the confidence bounds on :math:`\\lVert N^\\top\\nabla f\\rVert` of the
            deciding look (the last look when none decides).
        samples_to_decide: inconclusive Monte-Carlo verdicts — the evaluation sample size that would
            likely decide, extrapolated from the measured variance (``None`` when not estimable).
        design: ``"fixed"`` (the given sample sizes, Bonferroni :math:`\\alpha_k = \\alpha/K`) or
            ``"sequential"`` (geometric sizes until decisive or out of budget,
            :math:`\alpha_k = \alpha 2^{-k}`).
        stop: why the sequential design stopped.
        sampler: how the Monte-Carlo prompts were drawn (:data:`landscape.numeric.oracles.SAMPLERS`).
        caveat: a regime in which the verdict's error rate is known to exceed its level (empty if none):
            a directional rejection at fewer than :data:`DIRECTIONAL_MIN_T` prompts per sample.
        slope, slope_se: log–log slope of the standardized normal norm against ``T`` (Monte-Carlo).
        per_sample_size: evidence per ``T``.
        hessian: Hessian inertia at the point (``None`` if skipped).
        fit: the family fit (``None`` for a given point).
        fit_source: what the scalars were fitted on (exact loss, exact family loss, Monte-Carlo samples).
        reason: one sentence explaining the verdict.
        problem: description of the setting.
    """

    verdict: str
    family: str
    method: str
    point: dict[str, float]
    loss: float
    loss_se: float
    grad_norm_tangent: NormEstimate
    grad_norm_normal: NormEstimate
    mask: str = "all"
    free: int = 0
    normal_dim: int = 0
    test: str = ""
    p_value: float = float("nan")
    alpha: float = float("nan")
    tolerance: float = float("nan")
    slope: float = float("nan")
    slope_se: float = float("nan")
    per_sample_size: tuple[SampleSizeResult, ...] = ()
    hessian: Inertia | None = None
    fit: FamilyFit | None = None
    reason: str = ""
    problem: str = ""
    fit_source: str = ""
    tol: float = float("nan")
    tol_source: str = ""
    normal_lower: float = float("nan")
    normal_upper: float = float("nan")
    samples_to_decide: int | None = None
    design: str = ""
    stop: str = ""
    sampler: str = ""
    caveat: str = ""

    @property
    def confidence(self) -> float:
        """:math:`1 - \\alpha`, the confidence of the verdict (``nan`` for exact)."""
        return 1.0 - self.alpha

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (keys ``verdict, point, loss, grad_norm_tangent(_se), grad_norm_normal(_se), hessian, ...``)."""
        return {
            "verdict": self.verdict, "family": self.family, "method": self.method, "problem": self.problem,
            "mask": self.mask, "free_entries": self.free, "normal_dim": self.normal_dim,
            "point": self.point, "loss": self.loss, "loss_se": self.loss_se,
            "grad_norm_tangent": self.grad_norm_tangent.value, "grad_norm_tangent_se": self.grad_norm_tangent.se,
            "grad_norm_normal": self.grad_norm_normal.value, "grad_norm_normal_se": self.grad_norm_normal.se,
            "grad_norm_normal_noise_floor": self.grad_norm_normal.noise_floor,
            "test": self.test, "p_value": self.p_value, "alpha": self.alpha, "tolerance": self.tolerance,
            "slope": self.slope, "slope_se": self.slope_se,
            "tol": self.tol, "tol_source": self.tol_source, "confidence": self.confidence,
            "grad_norm_normal_lower": self.normal_lower, "grad_norm_normal_upper": self.normal_upper,
            "samples_to_decide": self.samples_to_decide, "design": self.design, "stop": self.stop, "sampler": self.sampler, "caveat": self.caveat,
            "per_sample_size": [r.to_dict() for r in self.per_sample_size],
            "hessian": None if self.hessian is None else self.hessian.summary(),
            "fit": None if self.fit is None else {"converged": self.fit.converged, "grad_norm": self.fit.grad_norm,
                                                  "iterations": self.fit.iterations, "message": self.fit.message},
            "fit_source": self.fit_source,
            "reason": self.reason,
        }


# ---------------------------------------------------------------------- helpers
def _symmetric_free_coords(family: Family, J: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``J W`` with ``W`` spanning the family directions that are *not* model symmetries."""
    G = symmetry_generators(family.spec, theta, family.symmetries)
    Ug, _ = orthonormal_complement(G)
    R = J - Ug @ (Ug.T @ J)
    _, s, Vh = torch.linalg.svd(R, full_matrices=True)
    smax = float(s.max()) if s.numel() else 0.0
    r = int((s > RANK_RTOL[torch.float64] * max(smax, 1e-300)).sum())
    return J @ Vh[:r].T


def _restricted_generators(G: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """Combinations of the symmetry generators that lie inside the free entries, restricted to them."""
    if bool(free.all()) or G.shape[1] == 0:
        return G[free]
    out = G[~free]
    _, s, Vh = torch.linalg.svd(out, full_matrices=True)
    scale = max(float(G.abs().max()), 1e-300)
    r = int((s > RANK_RTOL[torch.float64] * scale).sum())
    Z = Vh[r:].T
    return (G @ Z)[free]


def _hessian_summary(oracle: LossOracle, family: Family, theta: torch.Tensor, free: torch.Tensor,
                     max_dense: int) -> Inertia | None:
    if int(free.sum()) > max_dense:
        return None
    H = hessian(oracle, theta)[free][:, free]
    G = _restricted_generators(symmetry_generators(family.spec, theta, family.symmetries), free)
    return inertia(H, symmetries=G)


def _tests(e: torch.Tensor, C: torch.Tensor, samples: int, direction_estimate: torch.Tensor,
           direction_var: torch.Tensor, replicate_scores: torch.Tensor | None = None) -> dict[str, Any]:
    r"""The tests of :math:`H_0: E\,e = 0` for ``e ≈ N(μ, C)`` in (free) parameter coordinates.

    * ``"directional"``: :math:`t = u^\top e / \sqrt{u^\top C u}`, :math:`u_p = \hat\mu^A_p/\hat v^A_p`
      from the independent fitting sample; one-sided p-value :math:`1 - \Phi(t)`.
    * ``"standardized"``: :math:`Q = \sum_p e_p^2 / C_{pp}` against :math:`\sum_j\lambda_j(\mathrm{corr})\chi^2_1`.
    * ``"norm"``: :math:`Q = \lVert e\rVert^2` against :math:`\sum_j\lambda_j(C)\chi^2_1`.

    Entries whose standard deviation is below ``STANDARDIZE_FLOOR`` times the largest (identically
    zero gradients) are left out of the standardized quantities.

    With ``replicate_scores`` (``(R, P)``: the scores of ``R`` independent replicate batches whose mean
    is ``e``; the quasi-random and antithetic samplers, whose prompts inside a batch are dependent) the
    directional statistic is the one-sample Student :math:`t` of :math:`u^\top e_r`,
    :math:`t = \overline{u^\top e_r}\,\sqrt R / \mathrm{sd}_r(u^\top e_r)` against :math:`t_{R-1}`: its
    variance comes from the replicates alone, not from ``C``.

    Returns:
        ``{name: (statistic, p_value, dof)}`` plus ``"_standardized_norm"``: the norm of ``e`` in units
        of per-prompt standard deviations.
    """
    from scipy.stats import norm as normal_dist

    C = (C + C.T) / 2
    sd = torch.diagonal(C).clamp_min(0).sqrt()
    keep = sd > STANDARDIZE_FLOOR * sd.max()
    sdk = sd[keep]
    corr = C[keep][:, keep] / torch.outer(sdk, sdk)
    z = e[keep] / sdk
    out: dict[str, Any] = {"_standardized_norm": norm_estimate(z / math.sqrt(samples), corr / samples)}
    for name, vec, cov in (("standardized", z, corr), ("norm", e, C)):
        lam = torch.linalg.eigvalsh(cov)
        lam = lam[lam > RANK_RTOL[torch.float64] * lam.abs().max()]
        Q = float(vec @ vec)
        out[name] = (Q, quadratic_form_sf(Q, lam), float(lam.sum() ** 2 / (lam**2).sum()))
    vA = direction_var.clamp_min(0)
    keepA = vA.sqrt() > STANDARDIZE_FLOOR * vA.sqrt().max()
    u = torch.zeros_like(e)
    u[keepA] = direction_estimate[keepA] / vA[keepA]
    var_t = float(u @ C @ u)
    if replicate_scores is not None:
        from scipy.stats import t as student_t

        proj = replicate_scores @ u
        R = proj.numel()
        sd = float(proj.std())
        if sd > 0:
            t = float(proj.mean()) * math.sqrt(R) / sd
            out["directional"] = (t, float(student_t.sf(t, R - 1)), float(R - 1))
        else:
            out["directional"] = (0.0, 1.0, float(R - 1))
    elif var_t > 0:
        t = float(u @ e) / math.sqrt(var_t)
        out["directional"] = (t, float(normal_dist.sf(t)), 1.0)
    else:
        out["directional"] = (0.0, 1.0, 1.0)
    return out


def _check_sizes(samples: Sequence[int] | int, q: int, replicates: int) -> tuple[int, ...]:
    if isinstance(samples, int):
        samples = (samples,)
    sizes = tuple(check_int("samples", t, minimum=1) for t in samples)
    if not sizes:
        raise ValueError("a Monte-Carlo certificate needs at least one sample size")
    if list(sizes) != sorted(set(sizes)):
        raise ValueError(f"sample sizes must be strictly increasing, got {list(sizes)}")
    need = max(100, 2 * q, 4 * replicates)
    if sizes[0] < need:
        raise ValueError(f"sample size {sizes[0]} is too small for a test on the {q}-dimensional normal space "
                         f"with {replicates} replicate batches: need T >= {need} (2 × normal dimension, "
                         "4 × replicates, at least 100)")
    return sizes


def _parse_budget(budget: Any) -> tuple[int | None, float | None]:
    """``budget`` → ``(prompts, seconds)``: an int (prompts), or a mapping with ``prompts`` / ``seconds``."""
    if budget is None:
        return None, None
    if isinstance(budget, Mapping):
        unknown = sorted(set(budget) - {"prompts", "seconds"})
        if unknown or not budget:
            raise ValueError(f"budget takes the keys 'prompts' and/or 'seconds', got {sorted(budget)}")
        prompts = budget.get("prompts")
        seconds = budget.get("seconds")
    else:
        prompts, seconds = budget, None
    if prompts is not None:
        prompts = check_int("budget prompts", prompts, minimum=1)
    if seconds is not None:
        seconds = check_real("budget seconds", seconds, positive=True)
    return prompts, seconds


def decide(p_values: Sequence[float], levels: Sequence[float], uppers: Sequence[float],
           tol: float) -> tuple[str, int | None]:
    r"""The three-way Monte-Carlo verdict from the evidence of every look.

    Args:
        p_values: the rejection test's p-value at each look.
        levels: the level :math:`\alpha_k` spent on each look (:math:`\sum_k\alpha_k \le \alpha`).
        uppers: the upper confidence bound on :math:`\lVert N^\top\nabla f\rVert` at each look, at
            level :math:`\alpha_k`.
        tol: the tolerance.

    Returns:
        ``(verdict, k)``: ``("not_stationary", k)`` for the first look with :math:`p_k < \alpha_k`; else
        ``("stationary", k)`` for the first look with upper bound :math:`\le` ``tol``; else
        ``("inconclusive", None)``. By the union bound over looks, the probability of a false
        ``not_stationary`` (when :math:`N^\top\nabla f = 0`) and of a false ``stationary`` (when
        :math:`\lVert N^\top\nabla f\rVert > \mathrm{tol}`) are each at most :math:`\sum_k\alpha_k`,
        whatever the dependence between looks.
    """
    if not (len(p_values) == len(levels) == len(uppers)) or not p_values:
        raise ValueError("decide needs one p-value, level and upper bound per look (at least one look)")
    for k, (p, a) in enumerate(zip(p_values, levels)):
        if p < a:
            return "not_stationary", k
    for k, u in enumerate(uppers):
        if u <= tol:
            return "stationary", k
    return "inconclusive", None


def combined_p_value(p_values: Sequence[float], levels: Sequence[float], alpha: float) -> float:
    r""":math:`\min(1, \min_k p_k\,\alpha/\alpha_k)`: the smallest overall level at which the spending rule rejects.

    With Bonferroni levels :math:`\alpha_k = \alpha/K` this is :math:`\min(1, K\min_k p_k)`.
    """
    return min(1.0, min(p * alpha / a for p, a in zip(p_values, levels)))


def _resolve_family_loss(family: Family, task: Task, family_loss: Any) -> tuple[Any, str]:
    """``(values -> loss or None, description)`` of the exact family loss used for fitting."""
    if family_loss is None:
        return None, "Monte-Carlo fitting sample"
    if isinstance(family_loss, str):
        if family_loss != "auto":
            raise ValueError(f"family_loss must be 'auto', None, an exact FamilyLoss or a callable, got {family_loss!r}")
        try:
            from landscape.symbolic import family_loss as symbolic_family_loss
        except ImportError:
            return None, "Monte-Carlo fitting sample"
        for method in ("wishart", "one-layer"):
            try:
                fl = symbolic_family_loss(family, task, method=method)
            except (ValueError, TypeError, NotImplementedError):
                continue
            if getattr(fl, "exact", False):
                return fl.torch_fn(), f"exact family loss ({fl.method})"
        return None, "Monte-Carlo fitting sample"
    if callable(getattr(family_loss, "torch_fn", None)):
        if not getattr(family_loss, "exact", False):
            raise ValueError("family_loss must be exact (its sampling error would bias the test); pass None to fit "
                             "on independent Monte-Carlo samples instead")
        return family_loss.torch_fn(), f"exact family loss ({getattr(family_loss, 'method', 'given')})"
    if callable(family_loss):
        return family_loss, "given family loss"
    raise TypeError(f"family_loss must be 'auto', None, a FamilyLoss or a callable, got {type(family_loss).__name__}")


def _mask_name(mask: Any) -> str:
    return "all" if mask is None else (mask if isinstance(mask, str) else "custom")


# ---------------------------------------------------------------------- the certificate
def certify_stationary(
    family: Family,
    data: Task | ExactLoss | Callable[[torch.Tensor], torch.Tensor],
    *,
    point: Any = None,
    mask: str | Mapping[str, torch.Tensor] | None = None,
    samples: Sequence[int] = (4000, 16000, 64000),
    generator: torch.Generator | None = None,
    alpha: float = 1e-3,
    test: str = "directional",
    fit_ratio: float = 1.0,
    chunk_size: int = 4096,
    init: Any = None,
    n_starts: int = 3,
    hessian_samples: int = 2048,
    max_dense_hessian: int = 1500,
    family_loss: Any = "auto",
    tol: float | None = None,
    replicates: int = REPLICATES,
    budget: Any = None,
    progress: Any = None,
    sampler: str = SAMPLER,
) -> StationarityCertificate:
    r"""Certify (or refute) that ``family`` holds a stationary point of the in-context loss.

    See the module docstring for the maths and the decision rule.

    Args:
        family: the family :math:`S` (:func:`landscape.theory.families.get_family`).
        data: a prompt distribution with ``sample(batch, generator)`` (Monte-Carlo certificate), or an
            exact loss — an :class:`~landscape.numeric.ExactLoss` or any callable ``params -> scalar``.
        point: the point to test — symbol values or full weights in the family; default: fitted.
        mask: the entries the gradient is over (see :func:`free_entries`); default all.
        samples: increasing evaluation sample sizes ``T_1 < ... < T_K`` (Monte-Carlo, ``K >= 2``).
        generator: the randomness of every sample and random start (Monte-Carlo: required).
        alpha: test level.
        test: the test behind the verdict, one of :data:`TESTS`.
        fit_ratio: fitting-sample size as a multiple of ``T``.
        chunk_size: prompts per chunk (memory bound).
        init: start of the family fit.
        n_starts: random starts of the first fit.
        hessian_samples: prompts of the last fitting sample used for the Hessian summary (0: skip).
        max_dense_hessian: skip the Hessian summary above this many free entries.
        family_loss: Monte-Carlo certificates — an exact loss *on the family* to fit the scalars with
            (then the fit has no sampling error, no fitting sample is drawn and ``M = I``):
            ``"auto"`` (the symbolic layer's fast exact routes, ``wishart`` / ``one-layer``, when
            they apply — e.g. ``pgd`` on Gaussian regression data), ``None`` (always fit on samples),
            a :class:`landscape.symbolic.FamilyLoss` with ``exact=True``, or a callable
            ``values (k,) -> scalar``.
        tol: Monte-Carlo — the tolerance a ``stationary`` verdict certifies:
            :math:`\lVert N^\top\nabla f\rVert \le` ``tol`` at confidence :math:`1-\alpha`. Default
            ``TOL_REL`` (1%) times :math:`\lVert\nabla f(\theta(0))\rVert` over the free entries (the
            gradient of the family's zero point, estimated on its own sample).
        replicates: replicate batches per direction / evaluation sample (for the confidence bounds).
        budget: sequential design — ``None`` (the fixed sizes ``samples``), a number of prompts, or
            ``{"prompts": P, "seconds": S}`` (either or both): looks of sizes ``samples[0]``,
            ``GROWTH × samples[0]``, ... until the verdict is decisive or the next look would exceed
            the budget (all drawn prompts — fitting, direction, evaluation — count), with
            :math:`\alpha_k = \alpha 2^{-k}` spent on look ``k``.
        progress: optional callable ``str -> None`` told about every look (the CLI writes to stderr).
        sampler: how the Monte-Carlo prompts are drawn, one of :data:`landscape.numeric.oracles.SAMPLERS`
            (default :data:`SAMPLER`): ``"mc"`` i.i.d.; ``"qmc"`` one scrambled Sobol set per replicate
            batch; ``"antithetic"`` label-sign pairs. For the last two the variances come from the
            replicate batches (:func:`landscape.numeric.stats.variance_ratio`, a replicate :math:`t`
            for the directional test), which stay independent.

    Returns:
        :class:`StationarityCertificate`.

    Raises:
        TypeError: ``data`` is neither a task nor a loss; missing generator.
        ValueError: a point outside the family, NaN values, a bad mask, sample sizes too small.
    """
    if not isinstance(family, Family):
        raise TypeError(f"family must be a Family (see landscape.theory.families.get_family), got {type(family).__name__}")
    check_real("alpha", alpha, positive=True)
    if not alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    check_real("fit_ratio", fit_ratio, positive=True)
    check_int("chunk_size", chunk_size, minimum=1)
    check_int("hessian_samples", hessian_samples, minimum=0)
    free = free_entries(family, mask)
    given = None if point is None else family_point(family, point)
    s_probe = given if given is not None else torch.full((family.dim,), 0.5, dtype=torch.float64)
    J_probe = family.tangent_basis(s_probe)
    _check_inside(family, J_probe, free)
    is_task = callable(getattr(data, "sample", None))
    if not is_task:
        if isinstance(data, MonteCarloLoss):
            raise TypeError("a Monte-Carlo certificate draws fresh samples per size: pass the task (prompt "
                            "distribution), not a fixed MonteCarloLoss")
        try:
            oracle = as_oracle(data, family.spec)
        except TypeError:
            raise TypeError("data must be a prompt distribution (with .sample) or an exact loss "
                            f"(callable params -> scalar), got {type(data).__name__}") from None
        return _certify_exact(family, oracle, given, free, _mask_name(mask), init, generator, n_starts,
                              hessian_samples > 0, max_dense_hessian)
    if not isinstance(generator, torch.Generator):
        raise TypeError("a Monte-Carlo certificate needs an explicit torch.Generator (generator=...)")
    check_int("replicates", replicates, minimum=3)
    check_sampler(sampler, data)
    if tol is not None:
        tol = check_real("tol", tol, positive=True)
    budget_prompts, budget_seconds = _parse_budget(budget)
    k = orthonormal_complement(J_probe[free])[0].shape[1]
    sizes = _check_sizes(samples, int(free.sum()) - k, replicates)
    if budget_prompts is not None and budget_prompts < (2 + fit_ratio) * sizes[0]:
        raise ValueError(f"budget of {budget_prompts} prompts is below one look at T = {sizes[0]} "
                         f"(about {int((2 + fit_ratio) * sizes[0])} prompts)")
    scalar_loss, fit_source = _resolve_family_loss(family, data, family_loss) if given is None else (None, "given")
    return _certify_mc(family, data, given, free, _mask_name(mask), sizes, generator, alpha, test, fit_ratio,
                       chunk_size, init, n_starts, hessian_samples, max_dense_hessian, scalar_loss, fit_source,
                       tol, replicates, budget is not None, budget_prompts, budget_seconds, progress, sampler)


def _certify_exact(family: Family, oracle: LossOracle, given: torch.Tensor | None, free: torch.Tensor,
                   mask_name: str, init: Any, generator: torch.Generator | None, n_starts: int,
                   do_hessian: bool, max_dense: int) -> StationarityCertificate:
    fit = None
    if given is None:
        fit = fit_family(family, oracle, init=init, generator=generator, n_starts=n_starts)
        s = fit.values
    else:
        s = given
    dev = getattr(oracle, "device", s.device)
    s = s.to(device=dev)
    free = free.to(dev)
    theta = family.flat(s).detach()
    loss = float(oracle(theta))
    if not math.isfinite(loss):
        raise ValueError(f"the loss is not finite at the point {dict(zip(family.names, s.tolist()))}")
    g = gradient(oracle, theta)[free]
    U, N = orthonormal_complement(family.tangent_basis(s)[free])
    gt, gn = U.T @ g, N.T @ g
    tol = STATIONARITY_ATOL[torch.float64] * max(1.0, abs(loss))
    nt, nn = float(gt.norm()), float(gn.norm())
    point = {n: float(v) for n, v in zip(family.names, s.tolist())}
    if nn <= tol and nt <= tol:
        verdict = "stationary"
        reason = f"gradient vanishes: |normal| = {nn:.3g}, |tangent| = {nt:.3g} <= {tol:.1g}"
    elif nn > tol and (given is not None or fit.converged):
        verdict = "not_stationary"
        reason = (f"normal gradient {nn:.3g} > tolerance {tol:.1g} at the "
                  f"{'given point' if given is not None else 'family minimum'}")
    else:
        verdict = "inconclusive"
        reason = (f"normal gradient {nn:.3g}, tangent {nt:.3g} (tolerance {tol:.1g}); "
                  f"{fit.message if fit is not None else 'the given point is not stationary within the family'}")
    hess = _hessian_summary(oracle, family, theta, free, max_dense) if do_hessian else None
    return StationarityCertificate(verdict, family.name, "exact", point, loss, 0.0, norm_estimate(gt),
                                   norm_estimate(gn), mask=mask_name, free=int(free.sum()), normal_dim=N.shape[1],
                                   test="tolerance", tolerance=tol, hessian=hess, fit=fit, reason=reason,
                                   problem=family.problem.describe(),
                                   fit_source="exact loss" if given is None else "given")


def _tolerance(family: Family, task: Task, free: torch.Tensor, samples: int, generator: torch.Generator,
               chunk_size: int) -> tuple[float, str]:
    """Default tolerance: ``TOL_REL`` × the gradient norm at the family's zero point (own i.i.d. sample)."""
    theta0 = family.flat(torch.zeros(family.dim, dtype=torch.float64)).detach()
    mom = streamed_gradient_moments(task, family.spec, theta0, samples, generator, chunk_size=chunk_size)
    g0 = mom.mean[free.to(mom.mean.device)]
    est = norm_estimate(g0, mom.mean_cov[free][:, free])
    if not math.isfinite(est.value) or est.value <= 3 * est.se or est.value == 0:
        raise ValueError(f"the gradient at the family's zero point ({est.value:.3g} ± {est.se:.2g}) gives no scale "
                         "for the default tolerance; pass tol= (--tol)")
    return TOL_REL * est.value, (f"{TOL_REL:g} × |grad f| at the family's zero point "
                                 f"({est.value:.4g} ± {est.se:.2g}, {samples} prompts)")


def _certify_mc(family: Family, task: Task, given: torch.Tensor | None, free: torch.Tensor, mask_name: str,
                sizes: tuple[int, ...], generator: torch.Generator, alpha: float, test: str, fit_ratio: float,
                chunk_size: int, init: Any, n_starts: int, hessian_samples: int,
                max_dense: int, scalar_loss: Any, fit_source: str, tol: float | None, replicates: int,
                sequential: bool, budget_prompts: int | None, budget_seconds: float | None,
                progress: Any, sampler: str = "mc") -> StationarityCertificate:
    import time

    spec = family.spec
    say = progress if callable(progress) else (lambda _msg: None)
    start = time.perf_counter()
    if tol is None:
        tol, tol_source = _tolerance(family, task, free, min(max(sizes[0], 1000), 4 * chunk_size), generator,
                                     chunk_size)
    else:
        tol_source = "given"
    results: list[SampleSizeResult] = []
    fit = None
    prev = init
    A = theta = None
    q = 0
    spent = 0
    stop = "all sample sizes done" if not sequential else ""
    sample_fit = given is None and scalar_loss is None
    if given is None and scalar_loss is not None:
        fit = fit_family(family, None, scalar_loss=scalar_loss, init=init, generator=generator, n_starts=n_starts)
    if sequential:
        plan = [sizes[0] * GROWTH**j for j in range(64)]
        levels_for = lambda j: alpha * 2.0 ** -(j + 1)  # noqa: E731
    else:
        plan = list(sizes)
        levels_for = lambda j: alpha / len(sizes)  # noqa: E731
    verdict, at = "inconclusive", None
    for j, T in enumerate(plan):
        T_fit = max(2, int(math.ceil(fit_ratio * T))) if sample_fit else 0
        cost = 2 * T + T_fit
        if sequential and j > 0:
            if budget_prompts is not None and spent + cost > budget_prompts:
                stop = f"prompt budget: the next look (T = {T}) would need {cost} more prompts"
                break
            if budget_seconds is not None:
                elapsed = time.perf_counter() - start
                est = results[-1].seconds * GROWTH
                if elapsed + est > budget_seconds:
                    stop = f"time budget: the next look (T = {T}) would take about {est:.0f} s"
                    break
        t0 = time.perf_counter()
        spent += cost
        a_k = levels_for(j)
        if sample_fit:
            A = MonteCarloLoss.from_task(task, spec, T_fit, generator, chunk_size=chunk_size, sampler=sampler)
            fit = fit_family(family, A, init=prev, generator=generator if j == 0 else None,
                             n_starts=n_starts if j == 0 else 0)
            s = prev = fit.values
        elif fit is not None:
            s = fit.values
        else:
            s = given
        s = s.to(dtype=torch.float64)
        theta = family.flat(s).detach()
        J = family.tangent_basis(s).detach()
        U, N = orthonormal_complement(J[free])
        q = N.shape[1]
        if sample_fit:
            Jr = _symmetric_free_coords(family, J, theta)
            HJ = hvp(A, theta, Jr.T).T[free]
            K = Jr[free].T @ HJ
            K = (K + K.T) / 2
            R = N.T - (N.T @ HJ) @ torch.linalg.pinv(K, rtol=RANK_RTOL[torch.float64], hermitian=True) @ Jr[free].T
        else:
            R = N.T
        momC = streamed_gradient_moments(task, spec, theta, T, generator, chunk_size=chunk_size, batches=replicates,
                                         sampler=sampler)
        mom = streamed_gradient_moments(task, spec, theta, T, generator, chunk_size=chunk_size, batches=replicates,
                                        sampler=sampler)
        if not bool(torch.isfinite(mom.mean).all()) or not math.isfinite(mom.loss):
            raise ValueError(f"the loss or its gradient is not finite at {dict(zip(family.names, s.tolist()))}")
        dev = mom.mean.device
        free_d, R, U, N = free.to(dev), R.to(dev), U.to(dev), N.to(dev)
        repB, repC = mom.batch_means[:, free_d] @ R.T, momC.batch_means[:, free_d] @ R.T
        reps = torch.cat([repB, repC])
        covE = R @ ((mom.cov + momC.cov)[free_d][:, free_d] / (4 * T)) @ R.T  # Cov of the mean of 2T i.i.d. prompts
        kappa = 1.0 if sampler == "mc" else variance_ratio(reps, covE)
        gbar, Cg = mom.mean[free_d], kappa * mom.mean_cov[free_d][:, free_d]
        gt, gn, ge = U.T @ gbar, N.T @ gbar, R @ gbar
        Ct, Cn, Ce = U.T @ Cg @ U, N.T @ Cg @ N, R @ Cg @ R.T
        NR = N @ R
        tests = _tests(N @ ge, N @ Ce @ N.T, T, NR @ momC.mean[free_d],
                       torch.diagonal(NR @ momC.cov[free_d][:, free_d] @ NR.T),
                       replicate_scores=None if sampler == "mc" else repB @ N.T)
        zn = tests.pop("_standardized_norm")
        stat, p, dof = tests[test]
        bounds = norm_bounds(reps, a_k, kappa * covE)
        point = {n: float(v) for n, v in zip(family.names, s.tolist())}
        results.append(SampleSizeResult(T, T_fit, point, mom.loss, mom.loss_se, norm_estimate(gt, Ct),
                                        norm_estimate(gn, Cn), norm_estimate(ge, Ce), zn, stat, p, dof,
                                        {k_: (v[0], v[1]) for k_, v in tests.items()}, a_k, bounds,
                                        time.perf_counter() - t0, kappa))
        say(f"look {j + 1}: T = {T}, {test} p = {p:.3g} (level {a_k:.3g}), |N^T grad f| in "
            f"[{bounds.lower:.3g}, {bounds.upper:.3g}] vs tol {tol:.3g}, {time.perf_counter() - start:.0f} s, "
            f"{spent} prompts")
        verdict, at = decide([r.p_value for r in results], [r.alpha for r in results],
                             [r.bounds.upper for r in results], tol)
        if sequential and verdict != "inconclusive":
            stop = f"decisive at look {j + 1}"
            break
    if sequential and not stop:
        stop = "look limit reached"
    levels = [r.alpha for r in results]
    alpha_spent = sum(levels)
    p_comb = combined_p_value([r.p_value for r in results], levels, alpha)
    slope, slope_se = log_log_slope([r.samples for r in results], [r.standardized_normal for r in results])
    last = results[-1]
    deciding = results[at] if at is not None else last
    bd = deciding.bounds
    conf = f"confidence 1 - alpha = {1 - alpha:g}"
    need = None
    if verdict == "not_stationary":
        reason = (f"normal gradient significantly non-zero ({test} test, combined p = {p_comb:.3g} < {alpha:g}): "
                  f"statistic {deciding.statistic:.3g} at T = {deciding.samples}, where |N^T g| = "
                  f"{deciding.normal.value:.3g} (noise floor {deciding.normal.noise_floor:.3g}); bounds on "
                  f"|N^T grad f|: [{bd.lower:.3g}, {bd.upper:.3g}]")
    elif verdict == "stationary":
        reason = (f"stationary within tol = {tol:.3g} at {conf}: |N^T grad f| <= {bd.upper:.3g} (upper bound "
                  f"at T = {deciding.samples}); not rejected ({test} test, combined p = {p_comb:.3g})")
    else:
        need = samples_to_decide(bd, deciding.samples, tol)
        if need is None:
            t_obs = deciding.statistic
            from scipy.stats import norm as normal_dist

            z = float(normal_dist.isf(levels[-1] / 2)) + 1.6448536269514722
            if test == "directional" and t_obs > 0:
                need = int(math.ceil(deciding.samples * (z / t_obs) ** 2))
            hint = (f"the estimate |N^T grad f| ~ {math.sqrt(max(bd.estimate_sq, 0)):.3g} exceeds tol, so a larger "
                    "sample should reject" + (f" (about T = {need} prompts per sample)" if need else ""))
        else:
            hint = f"about T = {need} prompts per sample would likely decide (from the measured variance)"
        reason = (f"neither rejected ({test} test, combined p = {p_comb:.3g} >= {alpha:g}) nor within "
                  f"tol = {tol:.3g} at {conf} (|N^T grad f| in [{bd.lower:.3g}, {bd.upper:.3g}] at "
                  f"T = {deciding.samples}); {hint}")
    caveat = ""
    if verdict == "not_stationary" and test == "directional" and deciding.samples < DIRECTIONAL_MIN_T:
        caveat = (f"rejected at T = {deciding.samples} < {DIRECTIONAL_MIN_T} prompts per sample, where heavy-tailed "
                  "per-prompt gradients make the directional test over-reject (measured false-reject rate 0.13 at "
                  "nominal 0.05 for T = 400, docs/calibration.md); confirm with a larger sample")
    hess = None
    if hessian_samples > 0:
        H_or = (A if A is not None else MonteCarloLoss.from_task(task, spec, hessian_samples, generator,
                                                                 chunk_size=chunk_size))
        hess = _hessian_summary(H_or.subsample(hessian_samples), family, theta, free.to(theta.device), max_dense)
    say(f"verdict {verdict} ({reason})")
    return StationarityCertificate(
        verdict, family.name, "monte_carlo", last.point, last.loss, last.loss_se, last.tangent, last.normal,
        mask=mask_name, free=int(free.sum()), normal_dim=q, test=test, p_value=p_comb, alpha=alpha, slope=slope,
        slope_se=slope_se, per_sample_size=tuple(results), hessian=hess, fit=fit, reason=reason,
        problem=family.problem.describe(), fit_source=fit_source, tol=tol, tol_source=tol_source,
        normal_lower=bd.lower, normal_upper=bd.upper, samples_to_decide=need,
        design="sequential" if sequential else "fixed", stop=stop + (f"; alpha spent {alpha_spent:.3g}"),
        sampler=sampler, caveat=caveat)
