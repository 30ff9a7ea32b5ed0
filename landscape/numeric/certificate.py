r"""Stationarity certificates: does a parameter family hold stationary points of the in-context loss?

The claims (Ahn et al. 2023, Theorems 3–4; Cheng, Chen, Sra 2024) have the form
:math:`\inf_{\theta\in S}\lVert\nabla f(\theta)\rVert = 0`. The natural witness is the minimiser of
:math:`f` over the family scalars, :math:`\theta^* = \theta(s^*)` (:func:`landscape.numeric.fit_family`):
there the gradient's component *tangent* to :math:`S` vanishes by construction, and the claim is
that the *normal* component vanishes too.

**Which gradient.** By default the gradient over **all** entries of every matrix. A ``mask``
restricts it to a subset of entries (the other entries stay at the family's values): ``"blocks"`` —
the :math:`d\times d`, label-column, label-row and corner blocks in which the family has a free
symbol, i.e. the sparse parameterisation the papers' theorems are stated in (Ahn et al.'s Theorem 3
differentiates w.r.t. the blocks :math:`A_l` only); ``"paper"`` — :func:`landscape.model.make_mask`'s
preset; or a dict of boolean masks (``True`` = free; names left out are fixed). With an orthonormal
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

Verdict, at level ``alpha``:

* ``not_stationary`` if :math:`K\min_k p_k < \alpha` (Bonferroni over the sample sizes);
* ``stationary`` if not rejected **and** the normal score, measured in per-prompt standard deviations
  (:math:`\lVert z_T\rVert`, :math:`z_p = \bar e_p/\sqrt{T C_{pp}}`), shrinks like :math:`T^{-1/2}`:
  its weighted log–log slope ``b`` (standard error ``se``) is negative and consistent with
  :math:`-1/2`: ``b < 0`` and ``b + 0.5 <= max(0.15, 2 se)``;
* ``inconclusive`` otherwise (e.g. a plateau too small to reject at this ``T``: increase ``T``).

"Stationary" means consistent with zero at the resolution reached: the noise floor at the largest
``T`` is part of the result. When an exact loss *on the family* is known (``family_loss="auto"``:
the symbolic layer's Wishart or one-layer routes, e.g. ``pgd`` on Gaussian data), the scalars are
fitted on it once: there is no fitting error, no sample ``A`` and ``M = I``, which also protects the
test from heavy-tailed fitting samples. For a *given* point (no fitting), ``M = I`` too.

Caveats (measured): per-prompt gradients are heavy-tailed (products of many Gaussian factors for
deep linear attention), so the Gaussian approximations need hundreds to thousands of prompts per
size. With three-layer linear attention on Gaussian covariates and a Monte-Carlo fitting sample of
a few hundred prompts, a single extreme prompt in ``A`` moved the fit far enough for false
rejections; the exact family loss removes this, and larger ``T`` (the CLI default is
1000/4000/16000) reduces it.

A Hessian inertia summary (dense Hessian on the free entries, modulo the model's continuous
symmetries that stay inside them) is attached: the exact Hessian, or the sample Hessian on (a
subsample of) the last fitting sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from .._checks import check_int, check_real
from .._tolerances import RANK_RTOL, STATIONARITY_ATOL
from ..families import Family
from ..model import flatten_params, make_mask, num_params, param_shapes
from .derivatives import Inertia, gradient, hessian, hvp, inertia, orthonormal_complement, symmetry_generators
from .fit import FamilyFit, family_point, fit_family
from .oracles import LossOracle, MonteCarloLoss, as_oracle
from .stats import NormEstimate, log_log_slope, norm_estimate, quadratic_form_sf

__all__ = [
    "SampleSizeResult",
    "StationarityCertificate",
    "certify_stationary",
    "free_entries",
    "VERDICTS",
    "TESTS",
    "MASKS",
]

VERDICTS = ("stationary", "not_stationary", "inconclusive")
TESTS = ("directional", "standardized", "norm")
MASKS = ("all", "blocks", "paper")

SLOPE_TARGET = -0.5
SLOPE_TOL = 0.15
SLOPE_SE_MULT = 2.0
STANDARDIZE_FLOOR = 1e-6


# ---------------------------------------------------------------------- masks
def free_entries(family: Family, mask: str | Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Boolean vector ``(P,)`` (flat order) of the entries the gradient is taken over.

    Args:
        family: the family.
        mask: ``None``/``"all"`` (every entry), ``"blocks"`` (the structural blocks — top-left
            ``d×d``, label column, label row, corner — holding a free symbol of the family),
            ``"paper"`` (:func:`landscape.model.make_mask` preset), or a dict name → bool tensor of
            the parameter's shape (names left out are fixed).

    Returns:
        The flat boolean mask.

    Raises:
        ValueError: unknown preset, wrong names/shapes, or a family that moves entries outside the mask.
    """
    spec = family.spec
    shapes = param_shapes(spec)
    if mask is None or (isinstance(mask, str) and mask == "all"):
        return torch.ones(num_params(spec), dtype=torch.bool)
    if isinstance(mask, str):
        if mask == "paper":
            m = make_mask(spec, "paper")
        elif mask == "blocks":
            d = family.problem.d
            m = {}
            for name, shape in shapes.items():
                M = family.blocks.get(name)
                out = torch.zeros(shape, dtype=torch.bool)
                if M is not None:
                    for rows in (slice(0, d), slice(d, shape[0])):
                        for cols in (slice(0, d), slice(d, shape[1])):
                            sub = M[rows, cols]
                            if any(e.free_symbols for e in sub):
                                out[rows, cols] = True
                m[name] = out
        else:
            raise ValueError(f"mask must be one of {MASKS} or a dict of boolean masks, got {mask!r}")
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

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "fit_samples": self.fit_samples, "point": self.point, "loss": self.loss,
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
           direction_var: torch.Tensor) -> dict[str, Any]:
    r"""The tests of :math:`H_0: E\,e = 0` for ``e ≈ N(μ, C)`` in (free) parameter coordinates.

    * ``"directional"``: :math:`t = u^\top e / \sqrt{u^\top C u}`, :math:`u_p = \hat\mu^A_p/\hat v^A_p`
      from the independent fitting sample; one-sided p-value :math:`1 - \Phi(t)`.
    * ``"standardized"``: :math:`Q = \sum_p e_p^2 / C_{pp}` against :math:`\sum_j\lambda_j(\mathrm{corr})\chi^2_1`.
    * ``"norm"``: :math:`Q = \lVert e\rVert^2` against :math:`\sum_j\lambda_j(C)\chi^2_1`.

    Entries whose standard deviation is below ``STANDARDIZE_FLOOR`` times the largest (identically
    zero gradients) are left out of the standardized quantities.

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
    if var_t > 0:
        t = float(u @ e) / math.sqrt(var_t)
        out["directional"] = (t, float(normal_dist.sf(t)), 1.0)
    else:
        out["directional"] = (0.0, 1.0, 1.0)
    return out


def _check_sizes(samples: Sequence[int] | int, q: int) -> tuple[int, ...]:
    if isinstance(samples, int):
        samples = (samples,)
    sizes = tuple(check_int("samples", t, minimum=1) for t in samples)
    if len(sizes) < 2:
        raise ValueError("a Monte-Carlo certificate needs at least two sample sizes (to see the T^-1/2 decay); "
                         f"got {list(sizes)}")
    if list(sizes) != sorted(set(sizes)):
        raise ValueError(f"sample sizes must be strictly increasing, got {list(sizes)}")
    need = max(100, 2 * q)
    if sizes[0] < need:
        raise ValueError(f"sample size {sizes[0]} is too small for a test on the {q}-dimensional normal space: "
                         f"need T >= {need} (2 × normal dimension, at least 100)")
    return sizes


def _resolve_family_loss(family: Family, task: Any, family_loss: Any) -> tuple[Any, str]:
    """``(values -> loss or None, description)`` of the exact family loss used for fitting."""
    if family_loss is None:
        return None, "Monte-Carlo fitting sample"
    if isinstance(family_loss, str):
        if family_loss != "auto":
            raise ValueError(f"family_loss must be 'auto', None, an exact FamilyLoss or a callable, got {family_loss!r}")
        try:
            from ..symbolic import family_loss as symbolic_family_loss
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
    data: Any,
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
) -> StationarityCertificate:
    r"""Certify (or refute) that ``family`` holds a stationary point of the in-context loss.

    See the module docstring for the maths and the decision rule.

    Args:
        family: the family :math:`S` (:func:`landscape.families.get_family`).
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

    Returns:
        :class:`StationarityCertificate`.

    Raises:
        TypeError: ``data`` is neither a task nor a loss; missing generator.
        ValueError: a point outside the family, NaN values, a bad mask, sample sizes too small.
    """
    if not isinstance(family, Family):
        raise TypeError(f"family must be a Family (see landscape.families.get_family), got {type(family).__name__}")
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
    k = orthonormal_complement(J_probe[free])[0].shape[1]
    sizes = _check_sizes(samples, int(free.sum()) - k)
    scalar_loss, fit_source = _resolve_family_loss(family, data, family_loss) if given is None else (None, "given")
    return _certify_mc(family, data, given, free, _mask_name(mask), sizes, generator, alpha, test, fit_ratio,
                       chunk_size, init, n_starts, hessian_samples, max_dense_hessian, scalar_loss, fit_source)


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


def _certify_mc(family: Family, task: Any, given: torch.Tensor | None, free: torch.Tensor, mask_name: str,
                sizes: tuple[int, ...], generator: torch.Generator, alpha: float, test: str, fit_ratio: float,
                chunk_size: int, init: Any, n_starts: int, hessian_samples: int,
                max_dense: int, scalar_loss: Any, fit_source: str) -> StationarityCertificate:
    spec = family.spec
    results: list[SampleSizeResult] = []
    fit = None
    prev = init
    A = C = theta = None
    q = 0
    sample_fit = given is None and scalar_loss is None
    if given is None and scalar_loss is not None:
        fit = fit_family(family, None, scalar_loss=scalar_loss, init=init, generator=generator, n_starts=n_starts)
    for j, T in enumerate(sizes):
        T_fit = max(2, int(math.ceil(fit_ratio * T))) if sample_fit else 0
        if sample_fit:
            A = MonteCarloLoss.from_task(task, spec, T_fit, generator, chunk_size=chunk_size)
        C = MonteCarloLoss.from_task(task, spec, T, generator, chunk_size=chunk_size)
        B = MonteCarloLoss.from_task(task, spec, T, generator, chunk_size=chunk_size)
        if sample_fit:
            fit = fit_family(family, A, init=prev, generator=generator if j == 0 else None,
                             n_starts=n_starts if j == 0 else 0)
            s = prev = fit.values
        elif fit is not None:
            s = fit.values
        else:
            s = given
        s = s.to(device=B.device)
        free = free.to(B.device)
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
        mom, momC = B.gradient_moments(theta), C.gradient_moments(theta)
        if not bool(torch.isfinite(mom.mean).all()) or not math.isfinite(mom.loss):
            raise ValueError(f"the loss or its gradient is not finite at {dict(zip(family.names, s.tolist()))}")
        gbar, Cg = mom.mean[free], mom.mean_cov[free][:, free]
        gt, gn, ge = U.T @ gbar, N.T @ gbar, R @ gbar
        Ct, Cn, Ce = U.T @ Cg @ U, N.T @ Cg @ N, R @ Cg @ R.T
        NR = N @ R
        tests = _tests(N @ ge, N @ Ce @ N.T, T, NR @ momC.mean[free],
                       torch.diagonal(NR @ momC.cov[free][:, free] @ NR.T))
        zn = tests.pop("_standardized_norm")
        stat, p, dof = tests[test]
        point = {n: float(v) for n, v in zip(family.names, s.tolist())}
        results.append(SampleSizeResult(T, T_fit, point, mom.loss, mom.loss_se, norm_estimate(gt, Ct),
                                        norm_estimate(gn, Cn), norm_estimate(ge, Ce), zn, stat, p, dof,
                                        {k: (v[0], v[1]) for k, v in tests.items()}))
    K_ = len(results)
    p_comb = min(1.0, K_ * min(r.p_value for r in results))
    slope, slope_se = log_log_slope([r.samples for r in results], [r.standardized_normal for r in results])
    last = results[-1]
    shrinks = slope < 0 and slope - SLOPE_TARGET <= max(SLOPE_TOL, SLOPE_SE_MULT * slope_se)
    if p_comb < alpha:
        verdict = "not_stationary"
        worst = min(results, key=lambda r: r.p_value)
        reason = (f"normal gradient significantly non-zero ({test} test, Bonferroni p = {p_comb:.3g} < {alpha:g}): "
                  f"statistic {worst.statistic:.3g} at T = {worst.samples}, where |N^T g| = {worst.normal.value:.3g} "
                  f"(noise floor {worst.normal.noise_floor:.3g}) and the normal score is "
                  f"{worst.standardized_normal.value:.3g} per-prompt standard deviations")
    elif shrinks:
        verdict = "stationary"
        reason = (f"normal gradient consistent with zero ({test} test, p = {p_comb:.3g}) and shrinking like "
                  f"T^{slope:.2f}±{slope_se:.2f}; |N^T g| = {last.normal.value:.3g} at T = {last.samples} "
                  f"(noise floor {last.normal.noise_floor:.3g})")
    else:
        verdict = "inconclusive"
        reason = (f"not rejected (p = {p_comb:.3g}) but the normal gradient does not shrink like T^-1/2 "
                  f"(slope {slope:.2f} ± {slope_se:.2f}); increase the sample sizes")
    hess = None
    if hessian_samples > 0 and C is not None:
        hess = _hessian_summary((A if A is not None else C).subsample(hessian_samples), family, theta, free,
                                max_dense)
    return StationarityCertificate(
        verdict, family.name, "monte_carlo", last.point, last.loss, last.loss_se, last.tangent, last.normal,
        mask=mask_name, free=int(free.sum()), normal_dim=q, test=test, p_value=p_comb, alpha=alpha, slope=slope,
        slope_se=slope_se, per_sample_size=tuple(results), hessian=hess, fit=fit, reason=reason,
        problem=family.problem.describe(), fit_source=fit_source)
