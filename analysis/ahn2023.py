r"""Ahn, Cheng, Daneshmand, Sra (2023), *Transformers learn to implement preconditioned gradient
descent for in-context learning* (arXiv 2306.00297).

Linear attention :math:`\mathrm{Attn}_{P,Q}(Z) = P Z M (Z^\top Q Z)` on noiseless linear-regression
prompts :math:`x \sim N(0, \Sigma)`, :math:`y = w^{*\top}x`. What this study checks (docs/theory.md §2):

1. **Theorem 1** (one layer, :math:`w^* \sim N(0, I)`): the global minimiser is
   :math:`P = \mathrm{diag}(0, 1)`, :math:`Q = -\mathrm{diag}(A^*, 0)` with

   .. math:: A^* = \Big(\frac{n+1}{n}\Sigma + \frac{\operatorname{tr}\Sigma}{n} I\Big)^{-1}

   (up to :math:`P \to \gamma P, Q \to Q/\gamma`). Checked three ways: the symbolic stationary point
   of the exact one-layer loss on the family ``pgd-full`` (:mod:`landscape.symbolic`), the exact
   stationarity certificate over **all** entries of ``P, Q`` (:func:`landscape.numeric.certify_stationary`),
   and one-layer transformers trained with every entry free: :math:`A_{\mathrm{eff}} = -P_{d+1,d+1}
   Q_{1:d,1:d}` (invariant under the scaling) against :math:`A^*`.
2. **Theorems 3/4** (:math:`w^* \sim N(0, \Sigma^{-1})`, ``L`` layers): the family
   :math:`A_l = a_l\Sigma^{-1}` (sparse form, Theorem 3) — and :math:`A_l = a_l\Sigma^{-1}`,
   :math:`B_l = b_l I` (relaxed form :math:`P_l = \mathrm{diag}(B_l, 1)`, Theorem 4) — holds
   stationary points, and training finds them: the whitened :math:`\Sigma^{1/2}A_l\Sigma^{1/2}`
   becomes a multiple of ``I`` (:math:`\mathrm{Dist}(\cdot, I) \to` small) while :math:`A_l` itself
   stays far from one. The trained weights are projected onto the family
   (:func:`landscape.experiment.distance.project_onto_family`, modulo the P/Q scaling) and the fitted
   :math:`a_l` compared with the symbolic stationary point (exact loss
   :math:`\mathbb E\operatorname{tr}\prod_l (I - a_l S)^2` from Wishart moments). The family is certified
   stationary and the control :math:`A_l = a_l I` is not.
3. **Lemma 1**: the ``L``-layer construction with :math:`A_l = a^*_l\Sigma^{-1}` *is* ``L`` steps of
   preconditioned GD (:func:`landscape.theory.algorithms.preconditioned_gd`); its Monte-Carlo loss equals the
   symbolic loss, and the trained transformers reach that optimal-step PGD loss.
4. **Lemma 1 on the trained seeds** — probed layer by layer (:func:`landscape.numeric.probe.probe`,
   :func:`probe_layers`): the prediction after layer ``l`` of a trained sparse-form model is that of ``l``
   steps of preconditioned GD (preconditioners fitted), not that of ``l`` steps of plain GD; the
   relaxed-form model's layers are probed too (table).
5. **The paper's parameterisation beside landscape's** — the sparse-form run is repeated with Ahn et
   al.'s own parameterisation (:func:`landscape.recipe.preset` ``"ahn2023-p0"``: the value scale
   :math:`P_{d+1,d+1} = 1` held, :math:`N(0, 10^{-8})` initialisation; :data:`PAPER_PRESET`) at the
   same sizes, seeds, steps and Adam schedule, and both are measured by one mechanism
   (:func:`family_fit`, :func:`whitened_reach_step`): held-out loss, distance to the family, fitted
   :math:`a_l` against the symbolic :math:`a^*_l`, whitened distance along training (table, figure,
   claim).
6. **Degeneracy** — the local learning coefficient (SGLD, :func:`llc_at`) of the exact one-layer loss
   at the construction :math:`A^*` and at the best trained one-layer seed, with standard errors and
   the quadratic reference (table).

Medians over seeds are :func:`landscape.experiment.summary.seed_median` (mean of the two middle
values) in every table, claim and figure.

Experiment setting (the paper's): ``d = 5``, ``n = 20``, :math:`\Sigma = U^\top D U` with a random
rotation ``U`` and :math:`D = \mathrm{diag}(1, 1, 0.25, 0.0625, 1)`; 3 layers (quick: 2).

Choices: Adam with warm-up and cosine decay (the paper: Adam), initialisation :math:`N(0, 0.1^2)`,
float64; one-layer training with every entry of ``P, Q`` free (mask ``"full"``), multi-layer
training in the sparse form (mask ``"sparse"``: only :math:`P_{d+1,d+1}` and the covariate block of
``Q`` free) and in the relaxed form (mask ``"paper"``: ``P`` block-diagonal). Because the family
loss is symmetric under permuting the layers' step sizes (the factors :math:`I - a_l S` commute), the
fitted :math:`a_l` are compared with the nearest permutation of the symbolic stationary point.

Run: ``python -m analysis.ahn2023 [--quick]`` or ``landscape reproduce ahn2023 [--quick]``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from analysis._study import (Claim, Findings, Sections, StudyContext, StudyResult, label_seed_band, merge_probes,
                             probe_figure, probe_medians, study_main, study_threads)
import landscape.theory.algorithms as alg
from landscape._checks import check_int, check_real, check_shape, check_tensor
from landscape.experiment.metrics import metric_key
from landscape.experiment.summary import seed_median
from landscape.tolerances import CONSTRUCTION_RTOL, MC_NUM_SE, RANK_RTOL
from landscape.theory.constructions import preconditioned_gd_construction
from landscape.experiment.distance import dist_to_identity, identity_distances, project_onto_family
from landscape.theory.families import Family, Problem, get_family
from landscape.core.loss import squared_error
from landscape.core.model import ModelSpec
from landscape.core.tasks import AHN_SPECTRUM, LinearRegression, PromptBatch, random_covariance, sqrtm_psd
from landscape.experiment.train import TrainConfig, TrainResult, stacked_predict, train

__all__ = [
    "Settings",
    "QUICK",
    "FULL",
    "theorem1_optimum",
    "effective_preconditioner",
    "symbolic_optimum",
    "relaxed_family_minimum",
    "nearest_permutation_error",
    "relaxed_form_distances",
    "FamilyFit",
    "family_fit",
    "whitened_reach_step",
    "PAPER_PRESET",
    "REACH_DISTANCE",
    "probe_layers",
    "LLCAtPoint",
    "llc_at",
    "whitened_distance_figure",
    "run",
]

F64 = torch.float64


@dataclass(frozen=True)
class Settings:
    """Sizes of one run (quick: CI on 2 CPU cores; full: the paper's).

    Attributes:
        d, n: dimension and context length.
        layers: depth of the multi-layer experiments.
        spectrum: eigenvalues ``D`` of :math:`\\Sigma = U^\\top D U`.
        seeds: seeds trained together.
        steps_one, steps_multi: Adam steps (one layer; multi-layer).
        batch: prompts per seed per step.
        lr, warmup: Adam learning rate and linear warm-up steps (cosine decay after).
        lr_relaxed, steps_relaxed: the relaxed form's (it is unstable at the larger rate).
        log_every: metric logging interval (distance curves).
        eval_batch: held-out prompts for losses.
        relaxed: also train the relaxed form (Theorem 4).
        cert_samples: Monte-Carlo sizes of the multi-layer certificate (empty: only the exact
            one-layer certificates).
        probe_fit, probe_eval: prompts the layer-by-layer probe fits the algorithms on and evaluates them on.
        llc_n, llc_gamma, llc_steps, llc_chains: the SGLD estimate of the local learning coefficient
            (nominal sample size, localisation, steps per chain, chains; ``llc_steps = 0``: skipped).
    """

    d: int
    n: int
    layers: int
    spectrum: tuple[float, ...]
    seeds: int
    steps_one: int
    steps_multi: int
    batch: int
    lr: float
    warmup: int
    lr_relaxed: float
    steps_relaxed: int
    log_every: int
    eval_batch: int
    relaxed: bool
    cert_samples: tuple[int, ...]
    probe_fit: int = 512
    probe_eval: int = 512
    llc_n: int = 10_000
    llc_gamma: float = 1000.0
    llc_steps: int = 800
    llc_chains: int = 6


QUICK = Settings(d=5, n=20, layers=2, spectrum=AHN_SPECTRUM, seeds=3, steps_one=1500, steps_multi=800, batch=256,
                 lr=0.1, warmup=50, lr_relaxed=0.03, steps_relaxed=4000, log_every=50, eval_batch=8192, relaxed=True, cert_samples=())
"""Quick sizes (about two minutes on a 2-core CPU)."""

FULL = Settings(d=5, n=20, layers=3, spectrum=AHN_SPECTRUM, seeds=8, steps_one=20000, steps_multi=10000, batch=2048,
                lr=0.02, warmup=200, lr_relaxed=0.01, steps_relaxed=10000, log_every=200, eval_batch=65536, relaxed=True,
                cert_samples=(4000, 16000, 64000), probe_fit=4096, probe_eval=4096, llc_steps=4000, llc_chains=16)
"""The paper's sizes: d = 5, n = 20, 3 layers."""


# --------------------------------------------------------------------------------------- maths
def theorem1_optimum(sigma: torch.Tensor, n: int) -> torch.Tensor:
    r"""Theorem 1 of Ahn et al. (2023): :math:`A^* = \big(\frac{n+1}{n}\Sigma + \frac{\operatorname{tr}\Sigma}{n}I\big)^{-1}`.

    The one-layer global minimiser for :math:`x \sim N(0, \Sigma)`, :math:`w^* \sim N(0, I)`, noiseless labels.

    Args:
        sigma: covariance ``(d, d)``.
        n: context length.

    Returns:
        :math:`A^*` ``(d, d)``.

    Raises:
        TypeError: ``n`` is not an integer, or ``sigma`` is not a floating-point tensor.
        ValueError: ``n < 1`` or a non-square ``sigma``.
    """
    check_int("n", n, minimum=1)
    check_tensor("sigma", sigma)
    d = check_shape("sigma", sigma, ("d", "d"))["d"]
    eye = torch.eye(d, dtype=sigma.dtype, device=sigma.device)
    return torch.linalg.inv((n + 1) / n * sigma + torch.trace(sigma) / n * eye)


def effective_preconditioner(params: Mapping[str, torch.Tensor], spec: ModelSpec, layer: int = 0) -> torch.Tensor:
    r"""The preconditioner a linear-attention layer applies to the labels: :math:`A_{\mathrm{eff}} = -(p_y Q_{xx} + p_x q_y^\top)`.

    With :math:`p^\top = (p_x^\top, p_y)` the last row of ``P`` and the first ``d`` columns of ``Q``
    split as :math:`Q_{xx}` (covariate rows) and :math:`q_y^\top` (label row), the one-layer prediction
    :math:`-\frac1n\sum_i (p^\top z_i)(z_i^\top Q z_q)` has the part linear in the labels

    .. math:: \frac1n\sum_{i\le n} y_i\, x_i^\top A_{\mathrm{eff}}\, x_q ,

    i.e. one step of preconditioned GD with :math:`A_{\mathrm{eff}}` (Lemma 1). The other parts are
    quadratic in or free of the labels. :math:`A_{\mathrm{eff}}` is invariant under
    :math:`P \to \gamma P, Q \to Q/\gamma`; for :math:`P = \mathrm{diag}(0, p)`,
    :math:`Q = -\mathrm{diag}(A, 0)` it is :math:`pA`.

    Args:
        params: linear-attention parameters (leading seed axes allowed).
        spec: architecture.
        layer: which layer.

    Returns:
        ``(..., d, d)``.
    """
    d = spec.d
    P, Q = params[spec.key(layer, 0, "P")], params[spec.key(layer, 0, "Q")]
    p_y, p_x = P[..., d, d], P[..., d, :d]
    return -(p_y[..., None, None] * Q[..., :d, :d] + p_x[..., :, None] * Q[..., d, None, :d])


@dataclass(frozen=True)
class SymbolicOptimum:
    """Lowest-loss minimum of a family's exact loss.

    Attributes:
        values: symbol name → value.
        loss: exact loss there.
        method: the symbolic route (``"wishart"``, ``"one-layer"``).
        points: every stationary point found (``(values, loss, kind)``).
    """

    values: dict[str, float]
    loss: float
    method: str
    points: tuple[tuple[dict[str, float], float, str], ...]


def symbolic_optimum(family: Family, data: LinearRegression) -> SymbolicOptimum:
    """The lowest-loss local minimum of ``family``'s exact loss (:func:`landscape.symbolic.loss.family_loss`).

    Args:
        family: a linear-attention family.
        data: the prompt distribution.

    Returns:
        :class:`SymbolicOptimum`.

    Raises:
        ValueError: no exact route or no minimum found.
    """
    from landscape.symbolic.loss import family_loss
    from landscape.symbolic.solve import stationary_points

    fl = family_loss(family, data)
    if not fl.exact:
        raise ValueError(f"family {family.name!r}: no exact loss for this data (route {fl.method!r})")
    pts = stationary_points(fl)
    mins = [p for p in pts if p.kind == "min"]
    if not mins:
        raise ValueError(f"family {family.name!r}: no minimum among {len(pts)} stationary points")
    best = min(mins, key=lambda p: p.loss)
    return SymbolicOptimum(dict(best.values), float(best.loss), fl.method,
                           tuple((dict(p.values), float(p.loss), p.kind) for p in pts))


def relaxed_family_minimum(problem: Problem, data: LinearRegression,
                           generator: torch.Generator) -> tuple[float, dict[str, float]]:
    """Exact minimum of the ``pgd-relaxed`` family loss (Theorem 4) over its scalars ``a_l, b_l``.

    The last layer's ``b`` does not enter the loss, so the minimum is not isolated and
    :func:`symbolic_optimum` (which classifies by the Hessian) does not apply; the family loss is
    minimised by :func:`landscape.numeric.fit_family` from several starts instead.

    Args:
        problem: the linear-attention problem (``d, L, n, Σ``).
        data: the prompt distribution (``w* ~ N(0, Σ^{-1})`` for Theorem 4).
        generator: randomness of the random starts.

    Returns:
        The minimum loss and the minimising scalars.

    Raises:
        ValueError: the family loss is not exact for this data, or the minimisation did not converge.
    """
    from landscape.numeric import fit_family
    from landscape.symbolic.loss import family_loss

    fam = get_family("pgd-relaxed", problem)
    fl = family_loss(fam, data)
    if not fl.exact:
        raise ValueError(f"pgd-relaxed: no exact loss for this data (route {fl.method!r})")
    fit = fit_family(fam, None, scalar_loss=fl.torch_fn(), n_starts=8, generator=generator)
    if not fit.converged:
        raise ValueError(f"pgd-relaxed: minimising the exact family loss did not converge ({fit.message})")
    return fit.loss, dict(fit.point)


def nearest_permutation_error(fitted: Sequence[float], reference: Sequence[float]) -> tuple[float, tuple[int, ...]]:
    r"""Relative error :math:`\min_\pi \lVert a - a^*_\pi\rVert / \lVert a^*\rVert` over permutations of the layers.

    The family loss :math:`\mathbb E\operatorname{tr}\prod_l (I - a_l S)^2` is symmetric in the
    :math:`a_l` (the factors commute), so its minimisers come in permuted copies.

    Returns:
        The error and the best permutation.
    """
    a = torch.tensor(list(fitted), dtype=F64)
    ref = torch.tensor(list(reference), dtype=F64)
    best = (math.inf, tuple(range(len(ref))))
    for perm in itertools.permutations(range(len(ref))):
        e = float(torch.linalg.vector_norm(a - ref[list(perm)]) / torch.linalg.vector_norm(ref))
        if e < best[0]:
            best = (e, tuple(perm))
    return best


# ------------------------------------------------------------------------------------ training
def _config(s: Settings, ctx: StudyContext, sigma: torch.Tensor, *, layers: int, task_cov: str, mask: str,
            steps: int, family: str | None, lr: float | None = None) -> TrainConfig:
    return TrainConfig(
        task="linear", d=s.d, n=s.n, sigma=tuple(tuple(float(v) for v in r) for r in sigma.tolist()),
        task_cov=task_cov, attention="linear", layers=layers, mask=mask, seeds=s.seeds, steps=steps, batch=s.batch,
        lr=s.lr if lr is None else lr, optimizer="adam", schedule="cosine", warmup=s.warmup, dtype="float64",
        seed=ctx.seed,
        device=ctx.device, log_every=s.log_every, checkpoint_every=0, eval_batch=512, family=family,
        distance_every=0,
    )


def _losses(params: Mapping[str, torch.Tensor], spec: ModelSpec, batch: PromptBatch) -> torch.Tensor:
    with torch.no_grad():
        pred = stacked_predict({k: v.to(F64) for k, v in params.items()}, spec, batch.Z)
    return squared_error(pred, batch.target)


def _median(v: torch.Tensor) -> float:
    return float(seed_median(v.reshape(-1)))


# ------------------------------------------------------------------------------------ sections
@dataclass(frozen=True)
class _Theorem1:
    """The one-layer problem of Theorem 1: its exact loss over every entry of P, Q, the optimum, the trained seeds."""

    exact: Any  # params -> exact population loss (landscape.symbolic.one_layer.exact_loss_fn)
    config: TrainConfig
    optimum: dict[str, torch.Tensor]  # P = diag(0, 1), Q = -diag(A*, 0)
    result: TrainResult
    exact_trained: torch.Tensor  # (S,) exact loss of every trained seed


def _theorem1(ctx: StudyContext, s: Settings, sigma: torch.Tensor, store: Any, found: Findings) -> _Theorem1:
    """Theorem 1 (one layer, w ~ N(0, I)): closed form = symbolic optimum = certified; training reaches it."""
    from landscape.numeric import certify_stationary
    from landscape.symbolic.one_layer import exact_loss_fn

    d, n = s.d, s.n
    data1 = LinearRegression(d, n, sigma)
    A_star = theorem1_optimum(sigma, n)
    fam_full = get_family("pgd-full", Problem(d, 1, n=n, sigma=sigma, attention="linear"))
    sym1 = symbolic_optimum(fam_full, data1)
    A_sym = torch.tensor([[sym1.values[f"A{min(i, j)}{max(i, j)}"] for j in range(d)] for i in range(d)], dtype=F64)
    err_sym = float(torch.linalg.matrix_norm(A_sym - A_star) / torch.linalg.matrix_norm(A_star))
    exact1 = exact_loss_fn(fam_full, data1)
    point = {f"A{i}{j}": float(A_star[i, j]) for i in range(d) for j in range(i, d)}
    cert1 = certify_stationary(fam_full, exact1, point=point)
    found.claim(Claim(
        "thm1_closed_form_optimum",
        "Thm 1: for one layer and w* ~ N(0, I) the optimum is P = diag(0,1), Q = −diag(A*, 0) with "
        "A* = ((n+1)/n Σ + tr(Σ)/n I)^{-1}, a stationary point over all entries of P and Q",
        err_sym < 1e-8 and cert1.verdict == "stationary",
        {"rel_error_symbolic_vs_closed_form": err_sym, "loss_at_A*": cert1.loss,
         "symbolic_loss": sym1.loss, "normal_grad_norm": cert1.grad_norm_normal.value,
         "tangent_grad_norm": cert1.grad_norm_tangent.value},
        "‖A_sym − A*‖/‖A*‖ < 1e-8 (symbolic stationary point of the exact loss) and exact certificate "
        "'stationary' at A* (full gradient over P, Q)",
    ))
    cfg1 = _config(s, ctx, sigma, layers=1, task_cov="identity", mask="full", steps=s.steps_one, family=None)
    res1 = train(cfg1, store, progress=ctx.progress)
    A_tr = effective_preconditioner(res1.params, cfg1.spec).to(F64)
    half = sqrtm_psd(sigma)
    rel = torch.linalg.matrix_norm(A_tr - A_star) / torch.linalg.matrix_norm(A_star)
    rel_w = torch.linalg.matrix_norm(half @ (A_tr - A_star) @ half) / torch.linalg.matrix_norm(half @ A_star @ half)
    exact_tr = torch.stack([exact1({k: v[i].to(F64) for k, v in res1.params.items()})
                            for i in range(s.seeds)])
    excess1 = exact_tr / cert1.loss - 1
    found.claim(Claim(
        "thm1_trained_matches_optimum",
        "Thm 1: one-layer linear transformers trained from random init (all entries of P, Q free) converge "
        "to the optimum A* (up to the P/Q scaling)",
        _median(rel_w) < 0.2 and _median(excess1) < 0.03,
        {"median_whitened_rel_error": _median(rel_w), "median_raw_rel_error": _median(rel),
         "median_exact_loss_excess": _median(excess1), "optimal_loss": cert1.loss, "seeds": float(s.seeds),
         "steps": float(s.steps_one)},
        "median over seeds, A_eff = −(p_y Q_xx + p_x q_yᵀ): ‖Σ^½(A_eff − A*)Σ^½‖/‖Σ^½A*Σ^½‖ < 0.2 and exact "
        "loss / optimal loss − 1 < 0.03",
    ))
    found.table("Theorem 1: one-layer optimum", [
        {"quantity": "A* closed form vs symbolic stationary point (rel.)", "value": err_sym},
        {"quantity": "exact loss at A*", "value": cert1.loss},
        {"quantity": "certificate verdict at A*", "value": cert1.verdict},
        *({"quantity": f"seed {i}: trained A_eff vs A* (rel., raw)", "value": float(rel[i])} for i in range(s.seeds)),
        *({"quantity": f"seed {i}: trained A_eff vs A* (rel., whitened)", "value": float(rel_w[i])}
          for i in range(s.seeds)),
        *({"quantity": f"seed {i}: trained exact loss", "value": float(exact_tr[i])} for i in range(s.seeds)),
    ])
    P = torch.zeros(d + 1, d + 1, dtype=F64)
    P[d, d] = 1.0
    Q = torch.zeros(d + 1, d + 1, dtype=F64)
    Q[:d, :d] = -A_star
    return _Theorem1(exact1, cfg1, {cfg1.spec.key(0, 0, "P"): P, cfg1.spec.key(0, 0, "Q"): Q}, res1, exact_tr)


@dataclass(frozen=True)
class LLCAtPoint:
    r"""The local learning coefficient at a point, with its quadratic reference.

    Attributes:
        estimate: the SGLD estimate (:func:`landscape.numeric.llc.local_learning_coefficient`), with its
            standard error over chains.
        hessian_rank: numerical rank of the Hessian (eigenvalues above ``RANK_RTOL`` × the largest).
        quadratic: the estimator's exact expectation for the quadratic approximation
            :math:`L(w^*) + \frac12 (w - w^*)^\top H (w - w^*)` at the same sampler constants
            (:func:`landscape.numeric.llc.quadratic_llc`, negative eigenvalues clamped to 0); it tends to
            ``hessian_rank / 2`` when :math:`n\beta\lambda_i \gg \gamma`.
        loss: :math:`L(w^*)`.
        grad_norm: :math:`\lVert\nabla L(w^*)\rVert` (0 at a critical point).
    """

    estimate: Any
    hessian_rank: int
    quadratic: float
    loss: float
    grad_norm: float


def llc_at(loss_fn: Any, spec: ModelSpec, flat: torch.Tensor, generator: torch.Generator, *, n: int, gamma: float,
           steps: int, chains: int, step_fraction: float = 1.0) -> LLCAtPoint:
    r"""Estimate the local learning coefficient of ``loss_fn`` at ``flat`` and its quadratic reference.

    The SGLD step is ``step_fraction`` :math:`/\,(n\beta\lambda_{\max}(H) + \gamma)`, inside the
    stability bound :math:`\epsilon(n\beta\lambda_{\max} + \gamma) < 4` of the discretised chain.

    Args:
        loss_fn: ``params -> scalar`` (e.g. an exact population loss).
        spec: the architecture of ``params``.
        flat: the point :math:`w^*`, ``(P,)`` in flat order.
        generator: the Langevin noise.
        n, gamma, steps, chains: the sampler's constants (:func:`landscape.numeric.llc.local_learning_coefficient`).
        step_fraction: the step relative to :math:`1/(n\beta\lambda_{\max} + \gamma)` (in ``(0, 4)``).

    Returns:
        :class:`LLCAtPoint`.

    Raises:
        ValueError: a step fraction outside ``(0, 4)``, or bad sampler constants.
    """
    from landscape.core.model import unflatten_params
    from landscape.numeric.derivatives import hessian
    from landscape.numeric.llc import local_learning_coefficient, quadratic_llc

    frac = check_real("step_fraction", step_fraction, positive=True)
    if frac >= 4:
        raise ValueError(f"step_fraction must be in (0, 4) for a stable chain, got {frac}")
    w = flat.detach().to(F64)
    ev = torch.linalg.eigvalsh(hessian(loss_fn, w, spec=spec))
    rank = int((ev > RANK_RTOL[F64] * ev.abs().max()).sum())
    nb = n / math.log(n)
    eps = frac / (nb * float(ev.max().clamp(min=0)) + gamma)
    est = local_learning_coefficient(loss_fn, w, generator, n=n, gamma=gamma, step_size=eps, steps=steps,
                                     chains=chains, spec=spec)
    grad = torch.func.grad(lambda x: loss_fn(unflatten_params(x, spec)))(w)
    return LLCAtPoint(est, rank, quadratic_llc(ev.clamp(min=0), n=n, gamma=gamma, step_size=eps), est.loss_star,
                      float(grad.norm()))


def _llc(ctx: StudyContext, s: Settings, t1: _Theorem1, found: Findings) -> None:
    """Degeneracy of the one-layer optimum: the LLC at the construction A* and at the best trained seed."""
    from landscape.core.model import flatten_params

    spec = t1.config.spec
    best = int(t1.exact_trained.argmin())
    points = {"construction A* (Thm 1)": flatten_params(t1.optimum, spec),
              f"trained seed {best} (lowest exact loss)": flatten_params(
                  {k: v[best].detach().to(F64) for k, v in t1.result.params.items()}, spec)}
    rows = []
    for i, (name, w) in enumerate(points.items()):
        r = llc_at(t1.exact, spec, w, ctx.generator(30 + i), n=s.llc_n, gamma=s.llc_gamma, steps=s.llc_steps,
                   chains=s.llc_chains)
        rows.append({"point": name, "llc": r.estimate.value, "llc_se": r.estimate.se,
                     "quadratic_expectation": r.quadratic, "half_hessian_rank": r.hessian_rank / 2,
                     "hessian_rank": r.hessian_rank, "parameters": int(w.numel()), "exact_loss": r.loss,
                     "grad_norm": r.grad_norm, "chains": int(r.estimate.per_chain.numel()),
                     "diverged_chains": r.estimate.diverged})
    found.table(f"Local learning coefficient of the exact one-layer loss (all entries of P, Q; SGLD, n = {s.llc_n}, "
                f"gamma = {s.llc_gamma:g}, {s.llc_steps} steps)", rows)


@dataclass(frozen=True)
class _Theorem3:
    """The multi-layer problem of Theorems 3/4 and the sparse-form training run."""

    data: LinearRegression  # w* ~ N(0, Σ^{-1})
    problem: Problem
    family: Family  # pgd: A_l = a_l Σ^{-1}
    optimum: SymbolicOptimum
    a_star: list[float]
    config: TrainConfig
    result: TrainResult


def _train_sparse(ctx: StudyContext, s: Settings, sigma: torch.Tensor, store: Any) -> _Theorem3:
    """Theorem 3: the symbolic optimum of the family, and L-layer training in the sparse form."""
    data3 = LinearRegression(s.d, s.n, sigma, task_cov="inverse")
    prob = Problem(s.d, s.layers, n=s.n, sigma=sigma, attention="linear")
    fam = get_family("pgd", prob)
    sym3 = symbolic_optimum(fam, data3)
    a_star = [sym3.values[f"a{l}"] for l in range(s.layers)]
    cfg3 = _config(s, ctx, sigma, layers=s.layers, task_cov="inverse", mask="sparse", steps=s.steps_multi,
                   family=None)
    res3 = train(cfg3, store, progress=ctx.progress)
    return _Theorem3(data3, prob, fam, sym3, a_star, cfg3, res3)


def _identity_distance_curves(metrics: Mapping[str, Any], layers: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Steps and ``(L, steps, S)`` raw and whitened ``Dist(A_l, I)`` logged along training."""
    steps = metrics[metric_key("dist_identity", layer=0, head=0)].steps.tolist()
    raw = torch.stack([torch.as_tensor(metrics[metric_key("dist_identity", layer=l, head=0)].values)
                       for l in range(layers)])
    white = torch.stack([torch.as_tensor(metrics[metric_key("dist_identity_whitened", layer=l, head=0)].values)
                         for l in range(layers)])
    return steps, raw, white


def whitened_distance_figure(steps: Sequence[int], raw: torch.Tensor, white: torch.Tensor) -> Any:
    r"""Ahn et al. Fig. 2: :math:`\mathrm{Dist}(\Sigma^{1/2}A_l\Sigma^{1/2}, I)` (solid) and :math:`\mathrm{Dist}(A_l, I)` (dashed) per layer.

    Median over seeds with the inter-quartile band (:func:`landscape.views.plots.distance_figure`);
    the two curves of a layer share its colour.

    Args:
        steps: logged training steps.
        raw, white: ``(L, steps, S)`` distances.

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    from landscape.views.plots import distance_figure

    L, S = raw.shape[0], raw.shape[-1]
    curves, labels = {}, {}
    for l in range(L):
        curves[f"layer {l}: whitened"] = (steps, white[l].numpy())
        labels[f"layer {l}: whitened"] = rf"layer {l}: whitened $\Sigma^{{1/2}} A \Sigma^{{1/2}}$"
        curves[f"layer {l}: raw A"] = (steps, raw[l].numpy())
    fig = distance_figure(curves, labels=labels, ylabel="Dist(M, I) = min_α ‖M − αI‖ / ‖M‖", xlabel="training step",
                          title=f"{L}-layer linear attention (sparse form), Σ = UᵀDU:\n"
                                f"whitened vs raw preconditioner, median of {S} seeds")
    ax = fig.axes[0]
    bands = [c for c in ax.collections]
    for i, line in enumerate(ax.get_lines()):
        color = f"C{i // 2}"
        line.set_color(color)
        if i % 2:
            line.set_linestyle("--")
        if i < len(bands):
            bands[i].set_color(color)
    label_seed_band(fig, S)
    return fig


def _theorem3_distances(s: Settings, store: Any, t3: _Theorem3, found: Findings) -> None:
    """Theorem 3 (experiment): Dist(Σ^½ A_l Σ^½, I) → small while Dist(A_l, I) stays large (figure, claim, table)."""
    steps, raw, white = _identity_distance_curves(store.metrics(t3.result.run_name), s.layers)
    found.figure(whitened_distance_figure(steps, raw, white), "ahn2023_distance")
    w0 = seed_median(white[:, 0])
    wT = seed_median(white[:, -1])
    rT = seed_median(raw[:, -1])
    found.claim(Claim(
        "thm3_whitened_distance",
        "Thm 3 (experiment): trained multi-layer weights converge to A_l ∝ Σ^{-1}: Dist(Σ^{1/2} A_l Σ^{1/2}, I) "
        "becomes small while Dist(A_l, I) stays large",
        bool((wT < 0.5 * w0).all() and (wT < 0.5 * rT).all()),
        {**{f"layer{l}: whitened initial": float(w0[l]) for l in range(s.layers)},
         **{f"layer{l}: whitened final": float(wT[l]) for l in range(s.layers)},
         **{f"layer{l}: raw final": float(rT[l]) for l in range(s.layers)}},
        "every layer, median over seeds: whitened final < 0.5 × whitened initial and < 0.5 × raw final",
    ))
    found.table("Theorem 3: distances along training (median over seeds)", [
        {"step": int(t), **{f"whitened_l{l}": float(seed_median(white[l, i])) for l in range(s.layers)},
         **{f"raw_l{l}": float(seed_median(raw[l, i])) for l in range(s.layers)}}
        for i, t in enumerate(steps)])


@dataclass(frozen=True)
class FamilyFit:
    r"""Trained seeds projected onto the family :math:`A_l = a_l\Sigma^{-1}` and compared with its symbolic minimiser.

    Attributes:
        a: ``(S, L)`` fitted step sizes :math:`a_l` per seed (:func:`~landscape.experiment.distance.project_onto_family`,
            modulo the P/Q scaling).
        distance: ``(S,)`` relative distance of each seed to the family.
        error: ``(S,)`` :func:`nearest_permutation_error` of the fitted :math:`a_l` against :math:`a^*`.
    """

    a: torch.Tensor
    distance: torch.Tensor
    error: torch.Tensor


def family_fit(params: Mapping[str, torch.Tensor], family: Family, a_star: Sequence[float]) -> FamilyFit:
    r"""Project every seed of stacked weights onto ``family`` and compare the fitted :math:`a_l` with ``a_star``.

    The one measure of "distance to the characterised construction" of the multi-layer runs:
    Theorem 3's claim and the comparison of parameterisations both read it.

    Args:
        params: stacked linear-attention weights ``(S, D, D)``.
        family: the ``pgd`` family of the problem (symbols ``a0 … a{L-1}``).
        a_star: the symbolic minimiser :math:`a^*_l`.

    Returns:
        :class:`FamilyFit`.
    """
    S = next(iter(params.values())).shape[0]
    L = len(a_star)
    a, dist, err = [], [], []
    for i in range(S):
        proj = project_onto_family({k: v[i].detach().to("cpu", F64) for k, v in params.items()}, family)
        fit = [proj.values[f"a{l}"] for l in range(L)]
        a.append(fit)
        dist.append(proj.distance)
        err.append(nearest_permutation_error(fit, a_star)[0])
    return FamilyFit(torch.tensor(a, dtype=F64), torch.tensor(dist, dtype=F64), torch.tensor(err, dtype=F64))


def _theorem3_scalars(s: Settings, t3: _Theorem3, found: Findings) -> None:
    """Theorem 3: the trained weights projected onto the family sit at its symbolic stationary point."""
    ff = family_fit(t3.result.params, t3.family, t3.a_star)
    fits = [(ff.a[i].tolist(), float(ff.distance[i])) for i in range(s.seeds)]
    errs = ff.error.tolist()
    err_t, dist_t = ff.error, ff.distance
    found.claim(Claim(
        "thm3_fitted_scalars_match_symbolic",
        "Thm 3: the trained weights sit at the family's stationary point: projected onto S = {A_l = a_l Σ^{-1}} "
        "(modulo P/Q scaling), the fitted a_l equal the symbolic minimiser of E tr Π_l (I − a_l S)²",
        _median(err_t) < 0.15 and _median(dist_t) < 0.5,
        {**{f"symbolic a{l}": t3.a_star[l] for l in range(s.layers)},
         **{f"median fitted a{l}": _median(torch.tensor([f[0][l] for f in fits])) for l in range(s.layers)},
         "median_rel_error_nearest_permutation": _median(err_t), "median_family_distance": _median(dist_t),
         "symbolic_loss": t3.optimum.loss},
        "median over seeds: min over layer permutations ‖a_fit − a*‖/‖a*‖ < 0.15 and relative distance to the "
        "family < 0.5",
    ))
    found.table("Theorem 3: fitted family scalars vs the symbolic stationary point", [
        {"seed": i, **{f"a{l}_fit": f[0][l] for l in range(s.layers)}, "family_distance": f[1],
         "rel_error": errs[i]} for i, f in enumerate(fits)] + [
        {"seed": "symbolic", **{f"a{l}_fit": t3.a_star[l] for l in range(s.layers)}, "family_distance": 0.0,
         "rel_error": 0.0}])


def _certificates(ctx: StudyContext, s: Settings, sigma: torch.Tensor, t3: _Theorem3, found: Findings) -> None:
    """Theorem 3: pgd certified stationary, the control pgd-identity not (exact at one layer, MC at L)."""
    from landscape.numeric import certify_stationary
    from landscape.symbolic.one_layer import exact_loss_fn

    rows, verdicts = [], {}
    p1 = Problem(s.d, 1, n=s.n, sigma=sigma, attention="linear")
    for name in ("pgd", "pgd-identity"):
        f1 = get_family(name, p1)
        c = certify_stationary(f1, exact_loss_fn(f1, t3.data), generator=ctx.generator(7))
        verdicts[name] = c
        rows.append({"family": name, "layers": 1, "method": c.method, "verdict": c.verdict,
                     "normal_grad": c.grad_norm_normal.value, "tangent_grad": c.grad_norm_tangent.value,
                     "loss": c.loss, "reason": c.reason})
    if s.cert_samples:
        for name in ("pgd", "pgd-identity"):
            fL = get_family(name, t3.problem)
            c = certify_stationary(fL, t3.data, samples=s.cert_samples, generator=ctx.generator(8),
                                   hessian_samples=0)
            verdicts[f"{name}@L"] = c
            rows.append({"family": name, "layers": s.layers, "method": c.method, "verdict": c.verdict,
                         "normal_grad": c.grad_norm_normal.value, "tangent_grad": c.grad_norm_tangent.value,
                         "loss": c.loss, "reason": c.reason})
    found.table("Stationarity certificates (gradient over all entries of P, Q)", rows)
    ok_c = verdicts["pgd"].verdict == "stationary" and verdicts["pgd-identity"].verdict == "not_stationary"
    if s.cert_samples:
        ok_c &= (verdicts["pgd@L"].verdict == "stationary"
                 and verdicts["pgd-identity@L"].verdict == "not_stationary")
    found.claim(Claim(
        "thm3_certificate",
        "Thm 3: inf over S = {A_l = a_l Σ^{-1}} of the full gradient norm is 0; the control A_l = a_l I is not "
        "stationary for anisotropic Σ",
        ok_c,
        {"pgd_normal_grad": verdicts["pgd"].grad_norm_normal.value,
         "control_normal_grad": verdicts["pgd-identity"].grad_norm_normal.value,
         **({"pgd_L_p_value": verdicts["pgd@L"].p_value, "control_L_p_value": verdicts["pgd-identity@L"].p_value}
            if s.cert_samples else {})},
        "certificate verdicts: pgd 'stationary', pgd-identity 'not_stationary' (exact at one layer"
        + (f"; Monte-Carlo at L = {s.layers}, T in {list(s.cert_samples)})" if s.cert_samples else ")"),
    ))


def _lemma1(ctx: StudyContext, s: Settings, sigma: torch.Tensor, t3: _Theorem3,
            found: Findings) -> tuple[PromptBatch, float]:
    """Lemma 1: the construction is PGD, its loss is the symbolic optimum; trained models reach it.

    Returns:
        The held-out prompts and the optimal-PGD loss on them (Theorem 4 is scored on the same).
    """
    n = s.n
    held = t3.data.sample(s.eval_batch, ctx.generator(9))
    A_l = torch.stack([a * torch.linalg.inv(sigma) for a in t3.a_star])
    con = preconditioned_gd_construction(A_l)
    Xc, yc, xq = held.X[..., :n], held.y[:, :n], held.X[..., n]
    trace = con.trace(Xc, yc, xq)
    w_iter = alg.preconditioned_gd(Xc, yc, A_l, return_iterates=True)
    ref = torch.einsum("bld,bd->bl", w_iter, xq)
    con_err = max(float((trace[l] - ref[:, l]).abs().max() / ref[:, l].abs().max()) for l in range(1, s.layers + 1))
    per = squared_error(trace[-1], held.target, reduction="none")
    mc, se = float(per.mean()), float(per.std() / math.sqrt(per.numel()))
    z = abs(mc - t3.optimum.loss) / se
    tr_loss = _losses(t3.result.params, t3.config.spec, held)
    ratio = tr_loss / mc
    found.claim(Claim(
        "lemma1_construction_is_pgd",
        "Lemma 1: with P_l = diag(0, 1), Q_l = −diag(A_l, 0) the L-layer transformer is L steps of preconditioned "
        "GD w_{l+1} = w_l − A_lᵀ∇R(w_l); at A_l = a*_l Σ^{-1} its loss is the symbolic optimum",
        con_err <= CONSTRUCTION_RTOL and z < MC_NUM_SE,
        {"max_rel_error": con_err, "mc_loss": mc, "mc_se": se, "symbolic_loss": t3.optimum.loss, "z": z},
        f"relative error <= {CONSTRUCTION_RTOL:g} and |MC − symbolic| < {MC_NUM_SE:g} SE",
    ))
    found.claim(Claim(
        "trained_reaches_optimal_pgd",
        "Trained L-layer transformers (sparse form) reach the loss of L steps of optimally preconditioned GD",
        bool(_median(ratio) < 1.05),
        {"median_trained_over_optimal_pgd": _median(ratio), "best_trained_over_optimal_pgd": float(ratio.min()),
         "optimal_pgd_loss": mc},
        "median over seeds of held-out loss / optimal-PGD loss (same prompts) < 1.05",
    ))
    return held, mc


def relaxed_form_distances(params: Mapping[str, torch.Tensor], spec: ModelSpec,
                           sigma: torch.Tensor) -> dict[str, torch.Tensor]:
    r"""Theorem 4's distances of stacked relaxed-form weights, median over seeds (:func:`~landscape.experiment.summary.seed_median`).

    With :math:`P_l = \mathrm{diag}(B_l, p_l)` and :math:`A_l = -[Q_l]_{1:d,1:d}`:

    * ``"A_whitened"``, ``"A_raw"`` — ``(L,)`` :math:`\mathrm{Dist}(\Sigma^{1/2}A_l\Sigma^{1/2}, I)` and
      :math:`\mathrm{Dist}(A_l, I)` (:func:`landscape.experiment.distance.identity_distances`);
    * ``"B"``, ``"B_whitened"``, ``"B_over_p"`` — ``(L-1,)`` :math:`\mathrm{Dist}(B_l, I)`,
      :math:`\mathrm{Dist}(\Sigma^{-1/2}B_l\Sigma^{1/2}, I)` (``B`` in whitened coordinates) and
      :math:`\lVert B_l\rVert_F/|p_l|` for the layers ``l < L-1`` (the last layer's ``B`` moves covariates
      that nothing reads afterwards: it gets no gradient).

    Args:
        params: stacked linear-attention weights ``(S, D, D)``.
        spec: the architecture (one head per layer).
        sigma: :math:`\Sigma`.

    Returns:
        The medians, by name.
    """
    d, L = spec.d, spec.layers
    p64 = {k: v.detach().to(F64) for k, v in params.items()}
    ids = identity_distances(p64, spec, sigma)
    out = {"A_whitened": seed_median(ids.whitened[..., 0], dim=0), "A_raw": seed_median(ids.raw[..., 0], dim=0)}
    Bs = torch.stack([p64[spec.key(l, 0, "P")][..., :d, :d] for l in range(L - 1)], 1)
    Pc = torch.stack([p64[spec.key(l, 0, "P")][..., d, d] for l in range(L - 1)], 1).abs()
    half, inv_half = sqrtm_psd(sigma), sqrtm_psd(sigma, -0.5)
    out["B"] = seed_median(dist_to_identity(Bs), dim=0)
    out["B_whitened"] = seed_median(dist_to_identity(inv_half @ Bs @ half), dim=0)
    out["B_over_p"] = seed_median(torch.linalg.matrix_norm(Bs) / Pc, dim=0)
    return out


def _theorem4(ctx: StudyContext, s: Settings, sigma: torch.Tensor, store: Any, t3: _Theorem3, held: PromptBatch,
              mc: float, found: Findings) -> TrainResult:
    """Theorem 4 (relaxed form P_l = diag(B_l, 1)): A_l ∝ Σ^{-1}, B_l ∝ I, loss at the family minimum.

    Returns:
        The relaxed-form training run.
    """
    cfg4 = _config(s, ctx, sigma, layers=s.layers, task_cov="inverse", mask="paper", steps=s.steps_relaxed,
                   family=None, lr=s.lr_relaxed)
    res4 = train(cfg4, store, progress=ctx.progress)
    rd = relaxed_form_distances(res4.params, cfg4.spec, sigma)
    loss4 = _losses(res4.params, cfg4.spec, held)
    f4, point4 = relaxed_family_minimum(t3.problem, t3.data, ctx.generator(11))
    w4, r4 = rd["A_whitened"], rd["A_raw"]
    found.claim(Claim(
        "thm4_relaxed_A_form",
        "Thm 4 (experiment): with P_l = diag(B_l, 1) free (GD++ with a covariate transform), trained weights "
        "still reach A_l ∝ Σ^{-1}, and the relaxed model is at least as good as optimal PGD",
        bool((w4 < 0.5 * r4).all()) and _median(loss4 / mc) < 1.05,
        {**{f"layer{l}: whitened A dist": float(w4[l]) for l in range(s.layers)},
         **{f"layer{l}: raw A dist": float(r4[l]) for l in range(s.layers)},
         "median_loss_over_optimal_pgd": _median(loss4 / mc)},
        "every layer (median over seeds): whitened A distance < 0.5 × raw; held-out loss <= 1.05 × optimal "
        "sparse-PGD loss",
    ))
    dB, dBw, rB = rd["B"], rd["B_whitened"], rd["B_over_p"]
    over4 = _median(loss4 / f4)
    found.claim(Claim(
        "thm4_relaxed_B_form",
        "Thm 4 (experiment): in the relaxed form the covariate transforms converge to B_l ∝ I, and the "
        "trained loss reaches the minimum of the family A_l = a_l Σ^{-1}, B_l = b_l I",
        bool((dB < 0.1).all()) and over4 < 1.15,
        {**{f"layer{l}: Dist(B, I)": float(dB[l]) for l in range(s.layers - 1)},
         **{f"layer{l}: Dist(Σ^-½ B Σ^½, I)": float(dBw[l]) for l in range(s.layers - 1)},
         **{f"layer{l}: ‖B‖/|p|": float(rB[l]) for l in range(s.layers - 1)},
         "relaxed_family_min_loss": f4, "median_trained_over_relaxed_family_min": over4,
         **{f"family {k}": v for k, v in point4.items()},
         "steps": float(s.steps_relaxed), "lr": s.lr_relaxed},
        "layers l < L−1 (the last layer's B gets no gradient), median over seeds: Dist(B_l, I) < 0.1; "
        "median held-out loss < 1.15 × the exact minimum of the pgd-relaxed family loss",
    ))
    return res4


PAPER_PRESET = "ahn2023-p0"
r"""The paper's parameterisation trained beside the study's sparse-form run (:func:`landscape.recipe.preset`):
Ahn et al.'s Lemma 1 / Theorem 3 form :math:`P_l = \mathrm{diag}(0_{d\times d}, 1)` with the value scale
held at 1, :math:`Q_l = -\mathrm{diag}(A_l, 0)` trained from :math:`N(0, 10^{-8})` entries, where the
study's own run trains :math:`P_{d+1,d+1}` too from :math:`N(0, 0.1^2)`."""

REACH_DISTANCE = 0.1
r"""Whitened distance :math:`\mathrm{Dist}(\Sigma^{1/2}A_l\Sigma^{1/2}, I)` under which a run counts as having
reached the form :math:`A_l \propto \Sigma^{-1}` (:func:`whitened_reach_step`); the quick sparse-form run ends
at 0.03–0.06 (seed 0)."""


def whitened_reach_step(steps: Sequence[int], white: torch.Tensor, threshold: float = REACH_DISTANCE) -> int | None:
    r"""The first logged step at which every layer's median (over seeds) whitened distance is below ``threshold``.

    Args:
        steps: the logged steps ``(T,)``.
        white: ``(L, T, S)`` whitened distances :math:`\mathrm{Dist}(\Sigma^{1/2}A_l\Sigma^{1/2}, I)`.
        threshold: the distance.

    Returns:
        The step, or ``None`` when the run never got there.

    Raises:
        ValueError: ``white`` is not ``(L, len(steps), S)``.
    """
    if white.ndim != 3 or white.shape[1] != len(steps):
        raise ValueError(f"white must be (L, {len(steps)}, S) for {len(steps)} steps, got {tuple(white.shape)}")
    below = (seed_median(white, dim=-1) < threshold).all(0)
    hit = torch.nonzero(below).flatten()
    return None if hit.numel() == 0 else int(steps[int(hit[0])])


def _parameterisations(ctx: StudyContext, s: Settings, sigma: torch.Tensor, store: Any, t3: _Theorem3,
                       held: PromptBatch, mc: float, found: Findings) -> TrainResult:
    """The paper's parameterisation (:data:`PAPER_PRESET`) beside the study's sparse form: same sizes, seeds, steps.

    Returns:
        The preset's training run.
    """
    from landscape import recipe
    from landscape.experiment.distance import identity_distances
    from landscape.views.plots import distance_figure, figure_data

    cfg = dataclasses.replace(t3.config, **recipe.preset(PAPER_PRESET))
    res = train(cfg, store, progress=ctx.progress)
    d, L = s.d, s.layers
    names = {"landscape": "as in landscape: sparse form, $P_{d+1,d+1}$ trained, init $N(0, 0.1^2)$",
             "paper": f"as in the paper ({PAPER_PRESET}): $P_{{d+1,d+1}} = 1$ held, init $N(0, 10^{{-8}})$"}
    runs = {"landscape": (t3.config, t3.result), "paper": (cfg, res)}
    m: dict[str, dict[str, Any]] = {}
    for key, (c, r) in runs.items():
        steps, _, white = _identity_distance_curves(store.metrics(r.run_name), L)
        final = identity_distances({k: v.detach().to("cpu", F64) for k, v in r.params.items()}, c.spec, sigma)
        scale = torch.stack([r.params[c.spec.key(l, 0, "P")][:, d, d].to(F64) for l in range(L)], 1)
        m[key] = {"fit": family_fit(r.params, t3.family, t3.a_star), "ratio": _losses(r.params, c.spec, held) / mc,
                  "steps": steps, "white": white, "white_final": final.whitened[..., 0], "scale": scale.abs(),
                  "reach": whitened_reach_step(steps, white)}
    lan, pap = m["landscape"], m["paper"]
    rows = []
    for key, v in m.items():
        for i in range(s.seeds):
            rows.append({"parameterisation": key, "seed": i, "loss_over_optimal_pgd": float(v["ratio"][i]),
                         "family_distance": float(v["fit"].distance[i]), "a_rel_error": float(v["fit"].error[i]),
                         **{f"a{l}_fit": float(v["fit"].a[i, l]) for l in range(L)},
                         **{f"whitened_dist_l{l}": float(v["white_final"][i, l]) for l in range(L)},
                         **{f"|P_dd|_l{l}": float(v["scale"][i, l]) for l in range(L)}})
        rows.append({"parameterisation": key, "seed": "median", "loss_over_optimal_pgd": _median(v["ratio"]),
                     "family_distance": _median(v["fit"].distance), "a_rel_error": _median(v["fit"].error),
                     **{f"a{l}_fit": _median(v["fit"].a[:, l]) for l in range(L)},
                     **{f"whitened_dist_l{l}": _median(v["white_final"][:, l]) for l in range(L)},
                     **{f"|P_dd|_l{l}": _median(v["scale"][:, l]) for l in range(L)}})
    rows.append({"parameterisation": "symbolic a*", "seed": "", "loss_over_optimal_pgd": 1.0, "family_distance": 0.0,
                 "a_rel_error": 0.0, **{f"a{l}_fit": t3.a_star[l] for l in range(L)},
                 **{f"whitened_dist_l{l}": 0.0 for l in range(L)}, **{f"|P_dd|_l{l}": math.nan for l in range(L)}})
    found.table(f"The paper's parameterisation ({PAPER_PRESET}) beside landscape's: same sizes, seeds, "
                f"{s.steps_multi} Adam steps", rows)
    curves = {f"{key} l{l}": (v["steps"], v["white"][l].numpy()) for key, v in m.items() for l in range(L)}
    fig = distance_figure(curves, panels={f"layer {l}": [f"{key} l{l}" for key in m] for l in range(L)},
                          labels={f"{key} l{l}": names[key] for key in m for l in range(L)},
                          ylabel=r"Dist($\Sigma^{1/2} A_l \Sigma^{1/2}$, I)", xlabel="training step", band_label=True,
                          title=f"{L}-layer linear attention, w* ~ N(0, Σ⁻¹), Σ = UᵀDU: the paper's "
                                f"parameterisation vs landscape's (median of {s.seeds} seeds)")
    data = {**(figure_data(fig) or {}), "preset": PAPER_PRESET, "reach_distance": REACH_DISTANCE,
            "per_seed": {key: {"steps": list(v["steps"]), "whitened": v["white"].tolist(),
                               "loss_over_optimal_pgd": v["ratio"].tolist(), "a_rel_error": v["fit"].error.tolist(),
                               "family_distance": v["fit"].distance.tolist(), "reach_step": v["reach"]}
                         for key, v in m.items()}}
    found.figure(fig, "ahn2023_parameterisations", data=data)
    w0, wT = seed_median(pap["white"][:, 0], dim=-1), seed_median(pap["white"][:, -1], dim=-1)
    same_form = bool((wT < 0.5 * w0).all())
    slower = lan["reach"] is not None and (pap["reach"] is None or pap["reach"] > lan["reach"])
    never = float(s.steps_multi + 1)
    found.claim(Claim(
        "paper_parameterisation_same_form_slower",
        f"Ahn et al.'s own parameterisation ({PAPER_PRESET}: value scale P_{{d+1,d+1}} = 1 held, N(0, 1e-8) init) "
        "trained with the same seeds, steps and Adam schedule heads for the same form A_l ∝ Σ^{-1} as the "
        "study's sparse form (value scale trained, N(0, 0.1²) init), but reaches it later",
        same_form and slower,
        {**{f"paper layer{l}: whitened initial": float(w0[l]) for l in range(L)},
         **{f"paper layer{l}: whitened final": float(wT[l]) for l in range(L)},
         "landscape_reach_step": float(lan["reach"]) if lan["reach"] is not None else never,
         "paper_reach_step": float(pap["reach"]) if pap["reach"] is not None else never,
         "landscape_median_a_rel_error": _median(lan["fit"].error), "paper_median_a_rel_error": _median(pap["fit"].error),
         "landscape_median_loss_over_optimal_pgd": _median(lan["ratio"]),
         "paper_median_loss_over_optimal_pgd": _median(pap["ratio"]),
         **{f"landscape layer{l}: median |P_dd|": _median(lan["scale"][:, l]) for l in range(L)},
         "steps": float(s.steps_multi)},
        f"the paper's run, every layer, median over seeds: whitened final < 0.5 × whitened initial (Thm 3's "
        f"criterion); and the first logged step at which every layer's median whitened distance is < "
        f"{REACH_DISTANCE:g} comes later for the paper's run than for landscape's (never = {s.steps_multi + 1})",
    ))
    return res


PROBE_OFFSET = 20
"""Generator offset of the probe's prompts (:meth:`~analysis._study.StudyContext.generator`)."""
PROBE_LABELS = {"preconditioned_gd": "preconditioned GD (one d×d preconditioner per layer)",
                "gd": "GD (one step size per layer)"}
"""Human names of the probed algorithms (the legend of the probe figure)."""
PROBE_GD_MIN = 0.25
"""``layers_are_preconditioned_gd``: plain GD's median relative error must be at least this at every layer
(quick size, seed 0: measured 0.70 and 0.60 at layers 1, 2), preconditioned GD's at most ``CONSTRUCTION_RTOL``."""


def probe_layers(params: Mapping[str, torch.Tensor], spec: ModelSpec, task: LinearRegression, ctx: StudyContext, *,
                 fit_samples: int, eval_samples: int) -> Any:
    """Probe trained linear-attention seeds layer by layer against preconditioned GD and plain GD.

    :func:`landscape.numeric.probe.probe` fits each algorithm's per-step parameters (a ``d × d``
    preconditioner, a step size) to the layers' read-outs on ``fit_samples`` prompts and compares the
    predictions on ``eval_samples`` held-out ones, drawn from ``ctx.generator(PROBE_OFFSET)``.

    Args:
        params: stacked trained weights ``(S, D, D)``.
        spec: the architecture.
        task: the prompt distribution the seeds were trained on.
        ctx: the study context (the generator).
        fit_samples, eval_samples: prompt counts.

    Returns:
        The :class:`~landscape.numeric.probe.ProbeResult`, algorithms named by :data:`PROBE_LABELS`.
    """
    from landscape.numeric.probe import probe

    S = next(iter(params.values())).shape[0]
    seeds = [{k: v[i].detach().to("cpu", F64) for k, v in params.items()} for i in range(S)]
    res = probe(seeds, spec, task, ctx.generator(PROBE_OFFSET), algorithms=tuple(PROBE_LABELS),
                fit_samples=fit_samples, eval_samples=eval_samples)
    return merge_probes([(res, PROBE_LABELS)])


def _probe(ctx: StudyContext, s: Settings, t3: _Theorem3, relaxed: TrainResult | None, found: Findings) -> None:
    """Lemma 1 on the trained seeds: layer l of the sparse-form model against l steps of PGD and of GD."""
    res = probe_layers(t3.result.params, t3.config.spec, t3.data, ctx, fit_samples=s.probe_fit,
                       eval_samples=s.probe_eval)
    med = probe_medians(res)
    rel, cos = med["relative_error"], med["cosine"]
    P, G = 0, 1
    L = res.layers
    found.figures.extend(probe_figure(
        res, found.out, "ahn2023_probe",
        f"{L}-layer linear attention (sparse form) trained on w* ~ N(0, Σ⁻¹), Σ = UᵀDU: layer l vs l algorithm "
        f"steps\n(median and interquartile band over {res.seeds} seeds; parameters fitted per step)"))
    rows = [{"model": "sparse form (Thm 3)", "algorithm": name, "layer": l + 1, "rel_error_median": float(rel[a, l]),
             "cosine_median": float(cos[a, l])} for a, name in enumerate(res.algorithms) for l in range(L)]
    if relaxed is not None:
        rr = probe_layers(relaxed.params, relaxed.config.spec, t3.data, ctx, fit_samples=s.probe_fit,
                          eval_samples=s.probe_eval)
        rm = probe_medians(rr)
        rows += [{"model": "relaxed form (Thm 4)", "algorithm": name, "layer": l + 1,
                  "rel_error_median": float(rm["relative_error"][a, l]), "cosine_median": float(rm["cosine"][a, l])}
                 for a, name in enumerate(rr.algorithms) for l in range(L)]
    found.table("Layer-by-layer probe of the trained seeds (prediction after layer l vs l algorithm steps)", rows)
    found.claim(Claim(
        "layers_are_preconditioned_gd",
        "Lemma 1 on trained weights: layer l of a trained sparse-form transformer predicts exactly what l steps of "
        "preconditioned GD predict (preconditioners fitted), while plain GD with fitted step sizes does not (Σ ≠ I)",
        bool((rel[P] <= CONSTRUCTION_RTOL).all() and (rel[G] >= PROBE_GD_MIN).all()),
        {**{f"layer{l + 1}: {key} rel. error": float(rel[a, l]) for l in range(L) for key, a in (("PGD", P), ("GD", G))},
         **{f"layer{l + 1}: GD cosine": float(cos[G, l]) for l in range(L)},
         "seeds": float(res.seeds), "eval_prompts": float(res.eval_samples)},
        f"every layer, median over seeds (landscape.numeric.probe.probe, held-out prompts): preconditioned GD's "
        f"relative error <= CONSTRUCTION_RTOL = {CONSTRUCTION_RTOL:g}, plain GD's >= {PROBE_GD_MIN:g}",
    ))


def _notes(s: Settings, found: Findings) -> None:
    found.note(
        f"Sizes: d={s.d}, n={s.n}, L={s.layers}, Σ = UᵀDU with D = {tuple(s.spectrum)} and a Haar rotation U from the "
        f"seed; {s.seeds} seeds; Adam lr {s.lr} (warm-up {s.warmup}, cosine), batch {s.batch}, "
        f"{s.steps_one} steps (one layer) / {s.steps_multi} steps (multi-layer), float64.",
        "The symbolic optima come from the exact losses of landscape.symbolic (one-layer closed form for Theorem 1, "
        "Wishart moments for the L-layer family), their stationary points from landscape.symbolic.solve.",
        "The family loss is symmetric under permuting the a_l, so fitted scalars are compared with the nearest "
        "permutation of the symbolic minimiser.",
        "Theorem 1 training is measured in whitened coordinates (‖Σ^½(A_eff − A*)Σ^½‖): the loss curvature along "
        "Σ's small eigen-directions is tiny (∝ λ²), so the raw relative error of A converges much more slowly and "
        "is reported alongside; A_eff includes the route through the label row of Q, −p_x q_yᵀ, which a "
        "model with every entry free can use.",
        "Relaxed form (Theorem 4): the last layer's B_l only moves covariates that nothing reads afterwards, gets "
        "no gradient and stays at its initialisation, so it is not tested. The relaxed model converges slowly: "
        "after 1500 steps at lr 0.03 (d = 5, n = 20, L = 2) the held-out loss is still about twice the exact "
        "minimum of the pgd-relaxed family and Dist(B_0, I) is 0.2–0.4; after 4000 steps the loss is within "
        "a few per cent of that minimum and Dist(B_0, I) is about 0.03–0.04. The exact family minimum comes "
        "from the family's Wishart loss, minimised over (a_l, b_l) from several starts.",
        f"Local learning coefficient: SGLD (landscape.numeric.llc) on the exact one-layer loss over every entry of "
        f"P, Q, n = {s.llc_n}, beta = 1/log n, gamma = {s.llc_gamma:g}, step = 1/(n beta lambda_max(H) + gamma), "
        f"{s.llc_steps} steps × {s.llc_chains} chains; its reference is the estimator's exact expectation for the "
        "quadratic approximation at the same constants (landscape.numeric.llc.quadratic_llc), which reaches half the "
        "Hessian rank only when n beta lambda_i >> gamma (not so for the directions Σ's small eigenvalues make "
        "nearly flat). The trained seed is not a critical point (its gradient norm is listed), so the quadratic "
        "reference there is only indicative.",
        f"The paper's parameterisation ({PAPER_PRESET}) is trained with the sparse-form run's seeds, sizes, steps "
        "and Adam schedule. Measured at the quick size (seed 0, 800 steps): the sparse form ends at fitted-a_l error "
        "0.03–0.08 and 1.00–1.01 × the optimal-PGD loss, the paper's at 0.51–0.52 and 1.24–1.26 ×; run three times "
        "as long (2400 steps, measured apart from the study) the paper's reaches 0.22 and 1.04 ×, so it heads for "
        "the same point, slowly. A reading (not tested): Adam moves every entry by about its learning rate per "
        "step, so with P_{d+1,d+1} held at 1 the entries of Q_l must themselves grow to those of a_l Σ^{-1} "
        "(up to 1.25 / λ_min(Σ) = 20 here), while the sparse form trains its value scale too (|P_{d+1,d+1}| "
        "≈ 0.9 and 2.0 at layers 0 and 1, the larger where the fitted step a_l is larger), which halves what "
        "that layer's Q_l must grow to; the paper's run lags most at that layer (table).",
        "The one-layer certificates are exact (closed-form loss over every entry of P, Q)"
        + ("; the multi-layer ones are Monte-Carlo." if s.cert_samples else
           "; the quick run skips the Monte-Carlo multi-layer certificate (the full run includes it)."),
    )


# ----------------------------------------------------------------------------------------- study
def run(ctx: StudyContext) -> StudyResult:
    """Ahn et al. 2023: preconditioned GD in linear attention — Theorem 1, Theorems 3/4, Lemma 1."""
    from landscape.experiment.store import RunStore

    s = QUICK if ctx.quick else FULL
    found = Findings(ctx.out)
    sec = Sections(ctx, "ahn2023", ("theorem1", "train_sparse", "theorem3_distances", "theorem3_scalars",
                                    "certificates", "lemma1", "parameterisations") + (("theorem4",) if s.relaxed else ())
                   + ("probe",) + (("llc",) if s.llc_steps > 0 else ()) + ("notes",))
    with study_threads(ctx), RunStore(ctx.out) as store:
        sigma = random_covariance(s.d, ctx.generator(1), spectrum=s.spectrum)
        t1 = sec(_theorem1, ctx, s, sigma, store, found)
        t3 = sec(_train_sparse, ctx, s, sigma, store)
        sec(_theorem3_distances, s, store, t3, found)
        sec(_theorem3_scalars, s, t3, found)
        sec(_certificates, ctx, s, sigma, t3, found)
        held, mc = sec(_lemma1, ctx, s, sigma, t3, found)
        sec(_parameterisations, ctx, s, sigma, store, t3, held, mc, found)
        relaxed = sec(_theorem4, ctx, s, sigma, store, t3, held, mc, found) if s.relaxed else None
        sec(_probe, ctx, s, t3, relaxed, found)
        if s.llc_steps > 0:
            sec(_llc, ctx, s, t1, found)
    sec(_notes, s, found)
    return found.result("ahn2023")


if __name__ == "__main__":
    raise SystemExit(study_main("ahn2023", run))
