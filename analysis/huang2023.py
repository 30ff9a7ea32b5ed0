r"""Huang, Cheng, Liang (2023), *In-context convergence of transformers* (arXiv 2310.05249).

One softmax attention layer, no residual, the value fixed to read out the label, and a trained
key–query block :math:`Q \in \mathbb R^{d\times d}`:

.. math::
    \hat y_q = \sum_{i\le N} y_i\, a_i(Q),\qquad
    a_i(Q) = \mathrm{softmax}_i\big(x_i^\top Q\, x_q\big)
           = \frac{e^{x_i^\top Q x_q}}{\sum_{j\le N} e^{x_j^\top Q x_q}} .

**Choice (the paper leaves it open here):** the softmax runs over the ``N`` *context* tokens
only; the query is not in its own softmax (it has no label to contribute anyway).

Data (:class:`landscape.core.tasks.OrthonormalFeatures`): every token and the query is one of ``K``
orthonormal features :math:`v_1..v_K` (probabilities :math:`p_k`), :math:`y = \langle w, x\rangle`,
:math:`w \sim N(0, I_d)`. Training is GD from :math:`Q = 0` on
:math:`L(Q) = \tfrac12\mathbb E(\hat y_q - \langle w, x_q\rangle)^2`.

**Integrating out w (variance reduction).** With :math:`y_i = w^\top x_i` and
:math:`\mathbb E\, ww^\top = I`,

.. math::
    \mathbb E_w\big(\textstyle\sum_i a_i y_i - y_q\big)^2
    = \mathbb E_w\big(w^\top(\textstyle\sum_i a_i x_i - x_q)\big)^2
    = \big\lVert \textstyle\sum_i a_i x_i - x_q \big\rVert^2 ,

so the loss of a prompt is a function of its covariates alone. Training uses this form on fresh
Monte-Carlo prompts each step (the ``w``-noise is gone exactly); :func:`monte_carlo_loss` keeps
the sampled ``w`` for the check.

**Per-feature loss (derived).** Group the tokens by feature: with counts :math:`c_m` of feature
``m`` in the context and the query of feature ``k``, the attention *mass* on feature ``m`` is
:math:`\mathrm{mass}_m = c_m e^{\tilde Q_{mk}} / \sum_l c_l e^{\tilde Q_{lk}}`, where
:math:`\tilde Q = V^\top Q V` (:math:`V = [v_1..v_K]`), and by orthonormality

.. math::
    \tfrac12\big\lVert \textstyle\sum_m \mathrm{mass}_m v_m - v_k \big\rVert^2
    = \tfrac12\Big[(1 - \mathrm{mass}_k)^2 + \textstyle\sum_{m\ne k} \mathrm{mass}_m^2\Big].

The counts are multinomial :math:`(N; p)`, so the population per-feature loss
:math:`L_k(Q) = \mathbb E[\cdot \mid \text{query feature } k]` is an exact finite sum over the
:math:`\binom{N+K-1}{K-1}` count vectors (:func:`feature_statistics`). If feature ``k`` is absent
from the context (:math:`c_k = 0`), :math:`\mathrm{mass}_k = 0`: the loss has the floor
:math:`L_k \ge \tfrac12 (1-p_k)^N`, which matters for rare features.

Measured along training: target weight :math:`A_k = v_k^\top Q v_k`, off-target weight
:math:`B_k = \mathrm{mean}_{m\ne k}\, v_m^\top Q v_k`, the expected attention mass on same-feature
tokens :math:`\mathbb E[\mathrm{mass}_k \mid k]` and :math:`L_k`.

Claims checked (docs/theory.md §5): balanced features → near-zero error;
imbalanced (one dominant feature) → stage-wise: dominant-feature queries converge first,
under-represented ones later; and the ``w``-integrated loss equals the Monte-Carlo loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from analysis._study import Claim, Findings, Sections, StudyContext, StudyResult, study_main, study_threads
from landscape._checks import check_int, check_real, check_same_dtype_device, check_shape, check_tensor
from landscape.tolerances import MC_NUM_SE
from landscape.core.loss import squared_error
from landscape.core.tasks import OrthonormalFeatures, PromptBatch
from landscape.experiment.train import minimise
from landscape.views.record import DrawnPanel

__all__ = [
    "attention_weights",
    "prediction",
    "w_integrated_loss",
    "monte_carlo_loss",
    "count_vectors",
    "FeatureStatistics",
    "feature_statistics",
    "Trajectory",
    "train_gd",
    "half_time",
    "Settings",
    "QUICK",
    "FULL",
    "trajectory_figure",
    "run",
]


# ----------------------------------------------------------------------------------- the model
def _check_Q_X(Q: torch.Tensor, X: torch.Tensor) -> None:
    check_tensor("Q", Q)
    check_tensor("X", X)
    dims = check_shape("X", X, ("batch", "d", "N+1"), min_size={"N+1": 2})  # the query is last
    check_shape("Q", Q, ("d", "d"), dims)
    check_same_dtype_device("X", X, Q=Q)


def _attention(Q: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    Xc, xq = X[..., :-1], X[..., -1:]
    scores = (Xc.transpose(-1, -2) @ (Q @ xq)).squeeze(-1)  # (B, N): x_i^T Q x_q
    return torch.softmax(scores, dim=-1)


def attention_weights(Q: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    r"""Attention of the query on the context, :math:`a_i = \mathrm{softmax}_i(x_i^\top Q x_q)`.

    The softmax runs over the ``N`` context tokens only (the query is not in its own softmax).

    Args:
        Q: key–query block ``(d, d)``.
        X: covariates ``(batch, d, N+1)``, query last.

    Returns:
        ``(batch, N)``, rows summing to one.

    Raises:
        TypeError: non-tensors, a dtype other than float32/float64, mixed dtypes/devices
            (:mod:`landscape._checks`).
        ValueError: shapes that do not match (``X`` needs at least one context token).
    """
    _check_Q_X(Q, X)
    return _attention(Q, X)


def prediction(Q: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r""":math:`\hat y_q = \sum_{i\le N} y_i\, a_i(Q)` (Huang, Cheng, Liang 2023).

    Args:
        Q: ``(d, d)``.
        X: ``(batch, d, N+1)``, query last.
        y: labels ``(batch, N+1)`` (the query's entry is ignored) or ``(batch, N)``.

    Returns:
        ``(batch,)``.

    Raises:
        TypeError, ValueError: as :func:`attention_weights`, or ``y`` of the wrong shape.
    """
    _check_Q_X(Q, X)
    N = X.shape[-1] - 1
    if y.ndim != 2 or y.shape[0] != X.shape[0] or y.shape[1] not in (N, N + 1):
        raise ValueError(f"y must have shape ({X.shape[0]}, {N}) or ({X.shape[0]}, {N + 1}), got {tuple(y.shape)}")
    return (_attention(Q, X) * y[:, :N]).sum(-1)


def _w_integrated(Q: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    a = _attention(Q, X)
    r = (X[..., :-1] @ a.unsqueeze(-1)).squeeze(-1) - X[..., -1]
    return 0.5 * (r * r).sum(-1)


def w_integrated_loss(Q: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    r"""Per-prompt loss with the task vector integrated out.

    .. math:: \tfrac12\,\mathbb E_w(\hat y_q - y_q)^2 = \tfrac12\big\lVert \textstyle\sum_i a_i x_i - x_q\big\rVert^2
              \qquad(\mathbb E\, ww^\top = I).

    Args:
        Q: ``(d, d)``.
        X: ``(batch, d, N+1)``, query last.

    Returns:
        ``(batch,)``.

    Raises:
        TypeError, ValueError: as :func:`attention_weights`.
    """
    _check_Q_X(Q, X)
    return _w_integrated(Q, X)


def monte_carlo_loss(Q: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
    r"""Per-prompt loss :math:`\tfrac12(\hat y_q - y_q)^2` with the sampled task vector.

    Args:
        Q: ``(d, d)``.
        batch: prompts from :class:`~landscape.core.tasks.OrthonormalFeatures`.

    Returns:
        ``(batch,)``.
    """
    return 0.5 * squared_error(prediction(Q, batch.X, batch.y), batch.target, reduction="none")  # Huang et al.: ½


# --------------------------------------------------------------------------- exact statistics
def count_vectors(N: int, K: int, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
    r"""All count vectors :math:`c \in \mathbb N^K` with :math:`\sum_m c_m = N`.

    Args:
        N: context length ``>= 1``.
        K: number of features ``>= 1``.

    Returns:
        ``(M, K)`` with :math:`M = \binom{N+K-1}{K-1}`, in lexicographic order.

    Raises:
        TypeError: ``N`` or ``K`` not an integer.
        ValueError: ``N < 1`` or ``K < 1``, or more than 2e6 vectors.
    """
    N = check_int("N", N, minimum=1)
    K = check_int("K", K, minimum=1)
    M = math.comb(N + K - 1, K - 1)
    if M > 2_000_000:
        raise ValueError(f"{M} count vectors for N={N}, K={K}; exact statistics need M <= 2e6")
    rows: list[list[int]] = []

    def rec(prefix: list[int], rest: int, k: int) -> None:
        if k == K - 1:
            rows.append(prefix + [rest])
            return
        for c in range(rest + 1):
            rec(prefix + [c], rest - c, k + 1)

    rec([], N, 0)
    return torch.tensor(rows, dtype=dtype, device=device)


@dataclass(frozen=True)
class FeatureStatistics:
    r"""Exact population statistics of :math:`Q` per query feature ``k`` (all shape ``(K,)``).

    Attributes:
        loss: :math:`L_k = \tfrac12\mathbb E[(1-\mathrm{mass}_k)^2 + \sum_{m\ne k}\mathrm{mass}_m^2 \mid k]`.
        mass: :math:`\mathbb E[\mathrm{mass}_k \mid k]`, attention on same-feature tokens.
        target_weight: :math:`A_k = v_k^\top Q v_k`.
        off_target_weight: :math:`B_k = \mathrm{mean}_{m \ne k}\, v_m^\top Q v_k` (0 when K = 1).
        total_loss: :math:`L = \sum_k p_k L_k` (0-d).
        floor: :math:`\tfrac12 (1 - p_k)^N`, the loss left when feature ``k`` is absent from the context.
    """

    loss: torch.Tensor
    mass: torch.Tensor
    target_weight: torch.Tensor
    off_target_weight: torch.Tensor
    total_loss: torch.Tensor
    floor: torch.Tensor


class _Enumeration:
    """Count vectors and their multinomial log-probabilities for a task (cached per task)."""

    def __init__(self, task: OrthonormalFeatures, dtype: torch.dtype, device: torch.device | str) -> None:
        self.C = count_vectors(task.n, task.K, dtype=dtype, device=device)
        p = torch.tensor(task.probs, dtype=dtype, device=device)
        self.p = p
        n = torch.tensor(float(task.n), dtype=dtype, device=device)
        self.logP = torch.lgamma(n + 1) - torch.lgamma(self.C + 1).sum(-1) + (self.C * torch.log(p)).sum(-1)
        self.logC = torch.log(self.C)  # -inf where a feature is absent
        self.F = task.feature_matrix(device).to(dtype)


def _stats(Q: torch.Tensor, task: OrthonormalFeatures, en: _Enumeration) -> FeatureStatistics:
    K = task.K
    Qt = en.F.T @ Q @ en.F  # (K, K): Qt[m, k] = v_m^T Q v_k
    P = en.logP.exp()  # (M,)
    # logits[k, c, m] = log c_m + Qt[m, k]; every count vector has some c_m > 0
    logits = en.logC.unsqueeze(0) + Qt.T.unsqueeze(1)
    mass = torch.softmax(logits, dim=-1)  # (K, M, K)
    eye = torch.eye(K, dtype=Q.dtype, device=Q.device)
    per = 0.5 * ((mass - eye.unsqueeze(1)) ** 2).sum(-1)  # (K, M)
    loss = per @ P
    same = torch.diagonal(mass, dim1=0, dim2=2).T  # (K, M): mass[k, :, k]
    mass_k = same @ P
    A = torch.diagonal(Qt)
    B = (Qt.sum(0) - A) / (K - 1) if K > 1 else torch.zeros_like(A)
    floor = 0.5 * (1 - en.p) ** task.n
    return FeatureStatistics(loss, mass_k, A, B, (en.p * loss).sum(), floor)


def feature_statistics(Q: torch.Tensor, task: OrthonormalFeatures) -> FeatureStatistics:
    r"""Exact per-feature population statistics of ``Q`` (sum over all count vectors).

    Args:
        Q: ``(d, d)`` key–query block (float64 recommended).
        task: the prompt distribution.

    Returns:
        A :class:`FeatureStatistics`.

    Raises:
        TypeError: ``Q`` not a float32/float64 tensor.
        ValueError: ``Q`` of the wrong shape or too many count vectors.
    """
    check_tensor("Q", Q)
    check_shape("Q", Q, (task.d, task.d))
    return _stats(Q, task, _Enumeration(task, Q.dtype, Q.device))


# ----------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Trajectory:
    r"""GD trajectory from :math:`Q = 0` with exact statistics recorded along the way.

    Attributes:
        steps: recorded step numbers ``(T,)`` (int64).
        loss: per-feature population loss ``(T, K)``.
        mass: same-feature attention mass ``(T, K)``.
        target_weight: :math:`A_k` ``(T, K)``.
        off_target_weight: :math:`B_k` ``(T, K)``.
        total_loss: ``(T,)``.
        train_loss: Monte-Carlo (w-integrated) minibatch loss at every step ``(steps,)``.
        Q: final key–query block ``(d, d)``.
        floor: per-feature loss floor ``(K,)`` (feature absent from the context).
    """

    steps: torch.Tensor
    loss: torch.Tensor
    mass: torch.Tensor
    target_weight: torch.Tensor
    off_target_weight: torch.Tensor
    total_loss: torch.Tensor
    train_loss: torch.Tensor
    Q: torch.Tensor
    floor: torch.Tensor


def train_gd(
    task: OrthonormalFeatures,
    *,
    steps: int,
    lr: float,
    batch: int,
    generator: torch.Generator,
    record_every: int = 1,
    dense_until: int = 0,
) -> Trajectory:
    r"""GD from :math:`Q = 0` on the w-integrated loss, fresh prompts every step.

    .. math:: Q_{t+1} = Q_t - \eta\, \nabla_Q\, \frac1B\sum_{b\le B} \tfrac12\big\lVert \textstyle\sum_i a_i x_i - x_q\big\rVert^2 .

    Exact statistics (:func:`feature_statistics`) are recorded every ``record_every`` steps and at
    the end.

    Training goes through :func:`landscape.experiment.train.minimise` (plain SGD, constant step,
    gradients by :func:`torch.func.grad`): the objective here is the w-integrated per-prompt loss,
    not the sampled-label :math:`(\mathrm{TF} - y)^2` of :func:`landscape.experiment.train.train`
    (the same expectation, less gradient noise), and the model is one softmax kernel head
    (:class:`landscape.core.model.ModelSpec` ``kernel``) whose value ``V = diag(0, −N)`` and query
    map ``C = I`` are held *fixed* at those values while only the covariate block of ``B`` is
    trained from zero (then :math:`B^\top C = \mathrm{diag}(Q^\top, 0)`). The fixed ``V`` and ``C``
    are folded into the objective, :func:`w_integrated_loss` of ``Q``, so the parameters handed to
    ``minimise`` are ``{"Q": 0}``, all free.

    Args:
        task: prompt distribution (its dtype is the training dtype).
        steps: number of GD steps ``>= 1``.
        lr: step size :math:`\eta > 0`.
        batch: prompts per step ``>= 1``.
        generator: the only randomness (prompts).
        record_every: recording interval ``>= 1``.
        dense_until: record every step before this step (resolves the fast early phase).

    Returns:
        A :class:`Trajectory`.

    Raises:
        TypeError: ``steps``, ``batch``, ``record_every`` or ``dense_until`` not an integer, ``lr`` not
            a real number.
        ValueError: ``steps``, ``batch`` or ``record_every`` below 1, ``dense_until`` negative, ``lr``
            not finite and positive.
    """
    dense_until = check_int("dense_until", dense_until, minimum=0)
    steps = check_int("steps", steps, minimum=1)
    batch = check_int("batch", batch, minimum=1)
    record_every = check_int("record_every", record_every, minimum=1)
    lr = check_real("lr", lr, positive=True)
    device = generator.device
    en = _Enumeration(task, task.dtype, device)
    Q = torch.zeros(task.d, task.d, dtype=task.dtype, device=device)

    def objective(Qm: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return _w_integrated(Qm, X).mean()

    rec_steps, recs = [], []

    def record(t: int, params: dict[str, torch.Tensor]) -> None:
        if t % record_every == 0 or t < dense_until or t == steps:
            rec_steps.append(t)
            recs.append(_stats(params["Q"], task, en))

    result = minimise(lambda p, X: objective(p["Q"], X), {"Q": Q}, generator=generator,
                      data=lambda g: task.sample(batch, g).X, steps=steps, lr=lr, optimizer="sgd", record=record)
    Q, train_loss = result.params["Q"], result.loss
    stack = lambda attr: torch.stack([getattr(r, attr) for r in recs])  # noqa: E731
    return Trajectory(
        steps=torch.tensor(rec_steps, dtype=torch.int64),
        loss=stack("loss"),
        mass=stack("mass"),
        target_weight=stack("target_weight"),
        off_target_weight=stack("off_target_weight"),
        total_loss=stack("total_loss"),
        train_loss=train_loss,
        Q=Q,
        floor=recs[0].floor,
    )


def half_time(steps: torch.Tensor, curve: torch.Tensor) -> float:
    """First recorded step at which ``curve`` is at most half its initial value (``nan`` if never).

    Args:
        steps: ``(T,)`` step numbers.
        curve: ``(T,)`` values, ``curve[0]`` the initial one.

    Returns:
        The step, as a float.
    """
    below = (curve <= 0.5 * curve[0]).nonzero()
    return float(steps[below[0, 0]]) if len(below) else math.nan


# ------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Settings:
    """Sizes of one run of the study (quick: CI on 2 CPU cores; full: larger d, N, K and longer GD).

    Attributes:
        d: covariate dimension.
        N: context length.
        K: number of orthonormal features.
        dominant: probability of the dominant feature in the imbalanced task (the others share the rest).
        steps, lr, batch: GD from Q = 0 (steps, step size, fresh prompts per step).
        record_every: interval of the exact statistics along training.
        dense_until: record every step before this one (resolves the fast early phase).
        mc_prompts: prompts of the Monte-Carlo check of the w-integrated loss.
    """

    d: int
    N: int
    K: int
    dominant: float
    steps: int
    lr: float
    batch: int
    record_every: int
    dense_until: int
    mc_prompts: int

    @property
    def rare_p(self) -> float:
        """Probability of each under-represented feature of the imbalanced task."""
        return (1.0 - self.dominant) / (self.K - 1)

    def tasks(self) -> dict[str, OrthonormalFeatures]:
        """``{"balanced": p_k = 1/K, "imbalanced": (dominant, rare_p, ..., rare_p)}`` in float64."""
        return {"balanced": OrthonormalFeatures(self.d, self.N, (1.0 / self.K,) * self.K, dtype=torch.float64),
                "imbalanced": OrthonormalFeatures(self.d, self.N, (self.dominant,) + (self.rare_p,) * (self.K - 1),
                                                  dtype=torch.float64)}


QUICK = Settings(d=4, N=30, K=4, dominant=0.7, steps=400, lr=2.0, batch=256, record_every=1, dense_until=0,
                 mc_prompts=20_000)
"""Quick sizes: a couple of minutes on a 2-core CPU."""

FULL = Settings(d=6, N=60, K=5, dominant=0.7, steps=3000, lr=2.0, batch=1024, record_every=10, dense_until=300,
                mc_prompts=200_000)
"""Full sizes."""


# ------------------------------------------------------------------------------------ sections
def _train(ctx: StudyContext, s: Settings, tasks: Mapping[str, OrthonormalFeatures]) -> dict[str, Trajectory]:
    """GD from Q = 0 on each task (:func:`train_gd`; prompts from ``ctx.generator(1)``, ``(2)``)."""
    return {name: train_gd(task, steps=s.steps, lr=s.lr, batch=s.batch, generator=ctx.generator(1 + i),
                           record_every=s.record_every, dense_until=s.dense_until)
            for i, (name, task) in enumerate(tasks.items())}


def _check_w_integration(ctx: StudyContext, s: Settings, task: OrthonormalFeatures, traj: Trajectory,
                         found: Findings) -> None:
    """Claim: the exact per-feature loss (w integrated out) equals the Monte-Carlo loss at the final Q."""
    pb = task.sample(s.mc_prompts, ctx.generator(3))
    mc = monte_carlo_loss(traj.Q, pb)
    feat_q = pb.latent["feature"][:, -1]
    exact = traj.loss[-1]
    zs, mc_means = [], []
    for k in range(s.K):
        sel = mc[feat_q == k]
        m, se = float(sel.mean()), float(sel.std() / math.sqrt(len(sel)))
        mc_means.append(m)
        zs.append(abs(m - float(exact[k])) / se)
    z_max = max(zs)
    found.claim(Claim(
        "w_integrated_loss_matches_monte_carlo",
        "Per-feature loss ½[(1−mass_k)² + Σ_{m≠k} mass_m²] (w integrated out, counts enumerated) equals the "
        "Monte-Carlo loss ½(ŷ_q − ⟨w,x_q⟩)² with sampled w (derived, docs/theory.md §5)",
        z_max < MC_NUM_SE,
        {"max_z": z_max, "exact_rare": float(exact[1]), "mc_rare": mc_means[1],
         "exact_dominant": float(exact[0]), "mc_dominant": mc_means[0], "mc_prompts": float(s.mc_prompts)},
        f"max over features of |MC mean − exact| / SE < {MC_NUM_SE}",
    ))


def _check_balanced(s: Settings, tb: Trajectory, found: Findings) -> None:
    """Claim: balanced features converge to near-zero error."""
    L0, LT = float(tb.total_loss[0]), float(tb.total_loss[-1])
    ratio_b = LT / L0
    min_mass = float(tb.mass[-1].min())
    found.claim(Claim(
        "balanced_converges",
        "Balanced features: GD from Q = 0 converges to near-zero prediction error (Huang et al. 2023, Thm 1)",
        ratio_b < 0.01 and min_mass > 0.95,
        {"initial_loss": L0, "final_loss": LT, "final_over_initial": ratio_b,
         "min_final_same_feature_mass": min_mass, "steps": float(s.steps)},
        "final population loss < 0.01 × initial and same-feature attention mass > 0.95 for every feature",
    ))


def _check_imbalanced(s: Settings, ti: Trajectory, found: Findings) -> None:
    """Claims: imbalanced features converge stage-wise (dominant first), the rare ones later."""
    t_dom = half_time(ti.steps, ti.loss[:, 0])
    t_rare_min = min(half_time(ti.steps, ti.loss[:, k]) for k in range(1, s.K))
    ratio_t = t_dom / t_rare_min if t_rare_min > 0 else math.nan
    dom_final, rare_final = float(ti.loss[-1, 0]), float(ti.loss[-1, 1:].max())
    rare_floor = float(ti.floor[1])
    found.claim(Claim(
        "imbalanced_stagewise",
        "Imbalanced features: dominant-feature queries converge first, under-represented ones later "
        "(Huang et al. 2023, Thm 2: stage-wise convergence)",
        bool(ratio_t < 0.5),
        {"t_half_dominant": t_dom, "t_half_rare_first": t_rare_min, "ratio": ratio_t,
         "dominant_initial": float(ti.loss[0, 0]), "dominant_final": dom_final,
         "rare_initial": float(ti.loss[0, 1]), "rare_final": rare_final, "rare_floor": rare_floor},
        "t½(dominant) / min_k t½(rare k) < 0.5, t½ = first step with L_k ≤ ½ L_k(0)",
    ))
    found.claim(Claim(
        "imbalanced_rare_learned_later",
        "Imbalanced features: under-represented features also converge later (near-zero error up to the "
        "absent-feature floor ½(1−p_k)^N of a finite context)",
        rare_final < 0.1 * float(ti.loss[0, 1]) and rare_final < 2.0 * rare_floor + 0.01,
        {"rare_initial": float(ti.loss[0, 1]), "rare_final": rare_final, "rare_floor": rare_floor,
         "final_mass_rare": float(ti.mass[-1, 1:].min())},
        "max rare final loss < 0.1 × its initial loss and < 2 × floor + 0.01",
    ))


def _feature_labels(s: Settings, name: str) -> list[str]:
    if name == "balanced":
        return [f"feature v{k + 1}" for k in range(s.K)]
    return ["v1 (dominant)"] + [f"v{k + 1} (rare)" for k in range(1, s.K)]


def trajectory_figure(traj: Trajectory, title: str, labels: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    r"""Four panels along GD: :math:`A_k` and :math:`B_k`, same-feature mass, :math:`L_k` with floors, total loss.

    The numbers are recorded as they are handed to matplotlib (:class:`landscape.views.record.DrawnPanel`),
    for the figure's data file (:meth:`analysis._study.Findings.figure` ``data=``): ``{"title", "panels"}``,
    each panel ``{"title", "xlabel", "ylabel", "yscale", "curves", "reference"}``; a curve is
    ``{"id", "label", "x", "y"}`` with ``"id"`` the gid of its line (``"target_weight:v<k>"``,
    ``"off_target_weight:v<k>"``, ``"mass:v<k>"``, ``"loss:v<k>"``, ``"total_loss"``,
    ``"train_loss"``), a reference ``{"id", "label", "value"}`` a horizontal line (the floor
    :math:`\tfrac12(1-p_k)^N`, gid ``"floor:v<k>"``, drawn where it exceeds ``1e-6``).

    Args:
        traj: the trajectory.
        title: figure title.
        labels: one name per feature.

    Returns:
        The :class:`matplotlib.figure.Figure` and the numbers it draws.
    """
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    panels = {
        (0, 0): (r"key–query weights $A_k = v_k^\top Q v_k$, $B_k = \mathrm{mean}_{m\neq k}\, v_m^\top Q v_k$",
                 "weight", "linear"),
        (0, 1): (r"attention mass on same-feature tokens $E[\mathrm{mass}_k \mid k]$", "attention mass", "linear"),
        (1, 0): (r"per-feature population loss $L_k$", "loss", "log"),
        (1, 1): ("total loss", "loss", "log"),
    }
    drawn = {ij: DrawnPanel(axes[ij], title=t, xlabel="GD step", ylabel=yl, yscale=sc, reference=True)
             for ij, (t, yl, sc) in panels.items()}

    s = traj.steps.numpy()
    for k, lab in enumerate(labels):
        color, v = f"C{k}", f"v{k + 1}"
        drawn[0, 0].line(f"target_weight:{v}", lab, s, traj.target_weight[:, k].cpu().numpy(), color=color)
        drawn[0, 0].line(f"off_target_weight:{v}", f"{lab} (off-target)", s,
                         traj.off_target_weight[:, k].cpu().numpy(), "--", legend=False, color=color)
        drawn[0, 1].line(f"mass:{v}", lab, s, traj.mass[:, k].cpu().numpy(), color=color)
        drawn[1, 0].line(f"loss:{v}", lab, s, traj.loss[:, k].cpu().numpy(), color=color)
        floor = float(traj.floor[k])
        if floor > 1e-6:
            drawn[1, 0].reference(f"floor:{v}", f"{lab}: floor ½(1−p_k)^N", floor, legend=False,
                                  color=color, lw=0.8, ls=":")
    drawn[1, 1].line("total_loss", "population loss (exact)", s, traj.total_loss.cpu().numpy())
    drawn[1, 1].line("train_loss", "minibatch loss (w integrated out)", np.arange(len(traj.train_loss)),
                     traj.train_loss.cpu().numpy(), alpha=0.4, lw=0.7)
    style = [Line2D([], [], color="0.3", label="solid: target $A_k$"),
             Line2D([], [], color="0.3", ls="--", label="dashed: off-target $B_k$")]
    h, lab = axes[0, 0].get_legend_handles_labels()
    axes[0, 0].legend(h + style, lab + [x.get_label() for x in style], fontsize=7)
    h, lab = axes[1, 0].get_legend_handles_labels()
    floor_key = Line2D([], [], color="0.3", ls=":", lw=0.8, label=r"dotted: floor $\frac{1}{2}(1-p_k)^N$")
    axes[1, 0].legend(h + [floor_key], lab + [floor_key.get_label()], fontsize=7)
    axes[0, 1].legend(fontsize=7)
    axes[1, 1].legend(fontsize=7)
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    return fig, {"title": title, "panels": [panel.finish() for panel in drawn.values()]}


def _figures(s: Settings, tasks: Mapping[str, OrthonormalFeatures], trajs: Mapping[str, Trajectory],
             found: Findings) -> None:
    """One :func:`trajectory_figure` per task, with the numbers it draws beside it (``<stem>.json``)."""
    p = tasks["imbalanced"].probs
    titles = {"balanced": f"Balanced features: p = {tasks['balanced'].probs[0]:.2g} each",
              "imbalanced": f"Imbalanced features: p = {p[0]:.2g} (dominant), {s.rare_p:.2g} (each rare)"}
    for name, traj in trajs.items():
        title = f"{titles[name]} (K = {s.K}, N = {s.N}, GD step {s.lr:g})"
        fig, data = trajectory_figure(traj, title, _feature_labels(s, name))
        found.figure(fig, f"huang2023_{name}", data=data)


def _trajectory_rows(s: Settings, tr: Trajectory) -> list[dict[str, float]]:
    idx = sorted({0, *[int(i) for i in torch.linspace(0, len(tr.steps) - 1, 9).round().long()]})
    rows = []
    for i in idx:
        r: dict[str, float] = {"step": int(tr.steps[i]), "total_loss": float(tr.total_loss[i])}
        for k in range(s.K):
            r[f"L{k + 1}"] = float(tr.loss[i, k])
            r[f"mass{k + 1}"] = float(tr.mass[i, k])
            r[f"A{k + 1}"] = float(tr.target_weight[i, k])
        r["B1"] = float(tr.off_target_weight[i, 0])
        rows.append(r)
    return rows


def _tables(s: Settings, trajs: Mapping[str, Trajectory], found: Findings) -> None:
    for name, traj in trajs.items():
        found.table(f"{name} trajectory", _trajectory_rows(s, traj))


def _notes(s: Settings, trajs: Mapping[str, Trajectory], found: Findings) -> None:
    found.note(
        "Model: ŷ_q = Σ_{i≤N} y_i softmax_i(x_iᵀ Q x_q); the query is NOT in its own softmax (context-only; "
        "the paper's setting leaves this open).",
        "Training: plain GD from Q = 0 with step lr on fresh Monte-Carlo prompts each step; the task vector w is "
        "integrated out exactly (E_w(Σ a_i y_i − y_q)² = ‖Σ a_i x_i − x_q‖² since E wwᵀ = I), which removes "
        "the label noise from the gradient. Reported losses are exact population values: the per-feature loss "
        "is a finite sum over the multinomial count vectors of the context.",
        f"Sizes: d={s.d}, K={s.K}, N={s.N}, {s.steps} steps, batch {s.batch}, lr={s.lr}; imbalanced p = "
        f"({s.dominant}, {s.rare_p:.3g}×{s.K - 1}).",
        f"With a finite context a feature is absent with probability (1−p_k)^N; then mass_k = 0 and the loss "
        f"cannot go below ½(1−p_k)^N (rare features here: {float(trajs['imbalanced'].floor[1]):.3g}). This floor "
        "is not in the paper's asymptotic statement (N → ∞ regime).",
        "B_k is the mean off-target weight v_mᵀ Q v_k over m ≠ k; softmax is invariant to adding a constant to a "
        "column of VᵀQV, so only A_k − B_k-type differences matter for the attention.",
        "Training (train_gd) runs through landscape's minimise (plain SGD from Q = 0, the optimizer update and "
        "schedule of landscape.train) on the w-integrated loss, not TrainConfig's sampled-label (TF − y)²; the "
        "model is one softmax kernel head with V = diag(0, −N) and C = I held fixed and only the covariate block "
        "of B trained from 0, so that BᵀC = diag(Qᵀ, 0).",
    )


# ---------------------------------------------------------------------------------------- study
def run(ctx: StudyContext) -> StudyResult:
    """Huang, Cheng, Liang 2023: GD dynamics of one softmax attention layer on feature tokens."""
    s = QUICK if ctx.quick else FULL
    found = Findings(ctx.out)
    sec = Sections(ctx, "huang2023", ("train", "check_w_integration", "check_balanced", "check_imbalanced",
                                      "figures", "tables", "notes"))
    with study_threads(ctx):
        tasks = s.tasks()
        trajs = sec(_train, ctx, s, tasks)
        sec(_check_w_integration, ctx, s, tasks["imbalanced"], trajs["imbalanced"], found)
        sec(_check_balanced, s, trajs["balanced"], found)
        sec(_check_imbalanced, s, trajs["imbalanced"], found)
        sec(_figures, s, tasks, trajs, found)
        sec(_tables, s, trajs, found)
        sec(_notes, s, trajs, found)
    return found.result("huang2023")


if __name__ == "__main__":
    raise SystemExit(study_main("huang2023", run))
