r"""Zhang, Cao (2026): softmax transformers do normalised GD for in-context classification.

Claim (arXiv 2605.06609): a multi-layer softmax transformer whose every layer performs one step of
normalised GD on an in-context exponential-type loss is obtained by (i) training **one**
self-attention layer supervised by one GD step and (ii) looping it with shared weights; the
looped model inherits the convergence of normalised GD, in distribution and out of it, and its
direction approaches the max-margin separator.

**Embedding** (the mechanism of docs/theory.md §6, :func:`landscape.theory.constructions.normalised_gd_construction`;
not the paper's own embedding): tokens in :math:`\mathbb R^{2d}`, ``n`` context tokens
:math:`(u_i, 0)` with :math:`u_i = y_i x_i` and a last *state* token :math:`(0, w)` that receives only.
One softmax kernel head (:mod:`landscape.core.model`; the model multiplies every update by ``1/n``):

.. math::
    w^+ = w + \frac1n\sum_{i\le n} V_{21} u_i\;\mathrm{softmax}_i\big(u_i^\top B_{11}^\top C_{12}\, w\big).

The exact construction is :math:`B_{11} = I`, :math:`C_{12} = -cI`, :math:`V_{21} = n\eta I`:
:math:`w^+ = w - (\eta/c)\nabla L(w)/L(w)` with :math:`L(w) = \sum_i e^{-c\,y_i x_i^\top w}`
(:func:`landscape.theory.algorithms.normalised_gd`).

**Trained layer — parameterisation (our choice):** the three ``d×d`` blocks
:math:`B_{11}` (keys read ``u``), :math:`C_{12}` (queries read the state ``w``) and :math:`V_{21}`
(values write ``u`` into the state block) are free; every other entry of ``V, B, C`` is zero. With
free full ``2d×2d`` matrices, entries that read the state block of the *context* tokens are
unconstrained by one-step supervision (that block is zero at the input) but are not zero after
one layer, so looping would be ill-defined; the block form is the smallest parameterisation that
contains the construction and loops cleanly. Only :math:`B_{11}^\top C_{12}` and :math:`V_{21}`
matter; the construction is recovered iff :math:`B_{11}^\top C_{12} = -cI` and
:math:`V_{21} = n\eta I`.

**Training:** supervised regression of the one-step output on the NGD step,
:math:`\mathbb E\lVert w_1^{\mathrm{TF}}(w_0) - \mathrm{NGD}(w_0)\rVert^2 / \mathbb E\lVert \mathrm{NGD}(w_0) - w_0\rVert^2`,
on :class:`~landscape.core.tasks.LinearClassification` prompts with random starting states
:math:`w_0 = s\,\xi`, :math:`\xi \sim N(0, I_d)`, :math:`s \sim U(0, s_{\max})` (``w_0 = 0`` alone
would not identify the scores). Adam on fresh batches, then L-BFGS on a fixed batch, float64.

**Out of distribution:** the model's ``1/n`` makes the trained value :math:`V_{21} \approx n_{\rm train}\eta I`
act at context length ``n'`` as the step :math:`\eta\, n_{\rm train}/n'`; at ``n' ≠ n`` the
looped layer is compared with NGD at that effective step (the max-margin direction does not
depend on the step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from analysis._study import Claim, StudyContext, StudyResult, study_main
from landscape._checks import check_int, check_real
from landscape.tolerances import CONSTRUCTION_RTOL
from landscape.theory.algorithms import max_margin_direction, normalised_gd
from landscape.theory.constructions import normalised_gd_construction
from landscape.core.model import HeadSpec, ModelSpec, forward
from landscape.core.tasks import LinearClassification, random_covariance

__all__ = [
    "layer_spec",
    "block_params",
    "init_blocks",
    "TrainedLayer",
    "train_one_step_layer",
    "one_step_error",
    "loop_layer",
    "TrackingResult",
    "compare_with_ngd",
    "run",
]

_BLOCKS = ("B11", "C12", "V21")


# ------------------------------------------------------------------------- the trained layer
def layer_spec(d: int) -> ModelSpec:
    """One softmax kernel-head layer on tokens of size ``2d``."""
    d = check_int("d", d, minimum=1)
    return ModelSpec(d, 1, (HeadSpec("kernel", "softmax"),), token_dim=2 * d)


def block_params(blocks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    r"""Full ``2d×2d`` matrices ``V, B, C`` of the one-layer model from the free blocks.

    :math:`B = \begin{bmatrix}B_{11}&0\\0&0\end{bmatrix}`,
    :math:`C = \begin{bmatrix}0&C_{12}\\0&0\end{bmatrix}`,
    :math:`V = \begin{bmatrix}0&0\\V_{21}&0\end{bmatrix}` (built out of place: differentiable).

    Args:
        blocks: ``{"B11", "C12", "V21"}`` → ``(d, d)`` tensors.

    Returns:
        ``{"layer0.head0.V", "layer0.head0.B", "layer0.head0.C"}``.

    Raises:
        ValueError: missing blocks or blocks of different/non-square shapes.
    """
    missing = [k for k in _BLOCKS if k not in blocks]
    if missing:
        raise ValueError(f"blocks must hold {list(_BLOCKS)}; missing {missing}")
    shapes = {tuple(blocks[k].shape) for k in _BLOCKS}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or len(set(next(iter(shapes)))) != 1:
        raise ValueError(f"blocks must all be square (d, d) of one size, got shapes { {k: tuple(blocks[k].shape) for k in _BLOCKS} }")
    Z = torch.zeros_like(blocks["B11"])
    B = torch.cat([torch.cat([blocks["B11"], Z], 1), torch.cat([Z, Z], 1)], 0)
    C = torch.cat([torch.cat([Z, blocks["C12"]], 1), torch.cat([Z, Z], 1)], 0)
    V = torch.cat([torch.cat([Z, Z], 1), torch.cat([blocks["V21"], Z], 1)], 0)
    return {"layer0.head0.V": V, "layer0.head0.B": B, "layer0.head0.C": C}


def init_blocks(d: int, generator: torch.Generator, *, std: float = 0.1, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Blocks drawn i.i.d. ``N(0, std²)`` from ``generator``."""
    d = check_int("d", d, minimum=1)
    std = check_real("std", std, nonnegative=True)
    return {k: std * torch.randn(d, d, generator=generator, dtype=dtype, device=generator.device) for k in _BLOCKS}


def _embed(X: torch.Tensor, y: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    d, n = X.shape[-2], X.shape[-1]
    return normalised_gd_construction(d, 1.0, 1.0, 1, n, dtype=X.dtype, device=X.device).embed(X, y, w0)


def _one_step(params: Mapping[str, torch.Tensor], spec: ModelSpec, Z: torch.Tensor, n: int) -> torch.Tensor:
    return forward(params, spec, Z, n_sources=n, validate=False)


def _sample_states(task: LinearClassification, batch: int, g: torch.Generator, eta: float, c: float,
                   w0_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts with random starting states: (Z, w0, NGD(w0))."""
    pb = task.sample(batch, g)
    X, y = pb.X[..., :-1], pb.y[..., :-1]
    s = w0_scale * torch.rand(batch, 1, generator=g, dtype=X.dtype, device=g.device)
    w0 = s * torch.randn(batch, task.d, generator=g, dtype=X.dtype, device=g.device)
    return _embed(X, y, w0), w0, normalised_gd(X, y, 1, eta, c, w0=w0)


def _relative_mse(blocks: Mapping[str, torch.Tensor], spec: ModelSpec, Z: torch.Tensor, w0: torch.Tensor,
                  target: torch.Tensor, n: int) -> torch.Tensor:
    d = spec.d
    out = _one_step(block_params(blocks), spec, Z, n)[..., d:, -1]
    return ((out - target) ** 2).sum(-1).mean() / ((target - w0) ** 2).sum(-1).mean()


@dataclass(frozen=True)
class TrainedLayer:
    r"""A trained one-step layer.

    Attributes:
        blocks: the learned ``B11, C12, V21`` (detached).
        params: the full parameter dict of :func:`layer_spec`.
        spec: :func:`layer_spec` ``(d)``.
        n: training context length (the model's ``1/n``).
        history: relative one-step training loss per Adam step, then per L-BFGS call.
        score_error: :math:`\lVert B_{11}^\top C_{12} + cI\rVert_F / \lVert cI\rVert_F`.
        value_error: :math:`\lVert V_{21} - n\eta I\rVert_F / \lVert n\eta I\rVert_F`.
    """

    blocks: dict[str, torch.Tensor]
    params: dict[str, torch.Tensor]
    spec: ModelSpec
    n: int
    history: torch.Tensor
    score_error: float
    value_error: float


def train_one_step_layer(
    task: LinearClassification,
    *,
    eta: float,
    c: float,
    generator: torch.Generator,
    adam_steps: int = 400,
    adam_lr: float = 0.1,
    batch: int = 256,
    lbfgs_batch: int = 1024,
    lbfgs_iters: int = 100,
    w0_scale: float = 3.0,
    init_std: float = 0.1,
) -> TrainedLayer:
    r"""Train the block-parameterised softmax layer to output one normalised-GD step.

    Loss: :math:`\mathbb E\lVert w_1^{\mathrm{TF}} - \mathrm{NGD}_{\eta,c}(w_0)\rVert^2 / \mathbb E\lVert \mathrm{NGD}(w_0) - w_0\rVert^2`
    with :math:`w_0 = s\xi`, :math:`s\sim U(0, w_{0,\rm scale})`. Adam (cosine-decayed ``adam_lr``)
    on fresh batches, then full-batch L-BFGS (strong Wolfe) on one fixed batch.

    Args:
        task: prompt distribution (float64 recommended).
        eta, c: the target step and score scale.
        generator: the only randomness (init and prompts).
        adam_steps, adam_lr, batch: Adam phase.
        lbfgs_batch, lbfgs_iters: L-BFGS phase (``lbfgs_iters = 0`` skips it).
        w0_scale: largest scale of the random starting states.
        init_std: initial blocks ``N(0, init_std²)``.

    Returns:
        A :class:`TrainedLayer`.

    Raises:
        TypeError, ValueError: non-integer or non-positive sizes, non-finite or non-positive scales.
    """
    check_int("adam_steps", adam_steps, minimum=0)
    check_int("lbfgs_iters", lbfgs_iters, minimum=0)
    check_int("batch", batch, minimum=1)
    check_int("lbfgs_batch", lbfgs_batch, minimum=1)
    eta = check_real("eta", eta, positive=True)
    c = check_real("c", c, positive=True)
    check_real("adam_lr", adam_lr, positive=True)
    check_real("w0_scale", w0_scale, positive=True)
    spec = layer_spec(task.d)
    n, d = task.n, task.d
    blocks = {k: v.requires_grad_() for k, v in init_blocks(d, generator, std=init_std, dtype=task.dtype).items()}
    history: list[float] = []
    if adam_steps:
        opt = torch.optim.Adam(list(blocks.values()), lr=adam_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, adam_steps)
        for _ in range(adam_steps):
            Z, w0, tgt = _sample_states(task, batch, generator, eta, c, w0_scale)
            loss = _relative_mse(blocks, spec, Z, w0, tgt, n)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            history.append(float(loss.detach()))
    if lbfgs_iters:
        Z, w0, tgt = _sample_states(task, lbfgs_batch, generator, eta, c, w0_scale)
        lb = torch.optim.LBFGS(list(blocks.values()), lr=1.0, max_iter=lbfgs_iters, history_size=50,
                               tolerance_grad=1e-15, tolerance_change=1e-18, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            lb.zero_grad()
            loss = _relative_mse(blocks, spec, Z, w0, tgt, n)
            loss.backward()
            return loss

        lb.step(closure)
        with torch.no_grad():
            history.append(float(_relative_mse(blocks, spec, Z, w0, tgt, n)))
    learned = {k: v.detach() for k, v in blocks.items()}
    eye = torch.eye(d, dtype=task.dtype, device=learned["B11"].device)
    score_err = float(torch.linalg.norm(learned["B11"].T @ learned["C12"] + c * eye) / (c * math.sqrt(d)))
    value_err = float(torch.linalg.norm(learned["V21"] - n * eta * eye) / (n * eta * math.sqrt(d)))
    return TrainedLayer(learned, block_params(learned), spec, n, torch.tensor(history, dtype=torch.float64),
                        score_err, value_err)


def one_step_error(layer: TrainedLayer, task: LinearClassification, *, eta: float, c: float,
                   generator: torch.Generator, batch: int = 2048, w0_scale: float = 3.0) -> dict[str, float]:
    r"""Held-out one-step error :math:`\lVert w_1^{\rm TF} - \mathrm{NGD}(w_0)\rVert / \lVert \mathrm{NGD}(w_0) - w_0\rVert`.

    Returns:
        ``{"mean": ..., "max": ...}`` over the prompts.
    """
    Z, w0, tgt = _sample_states(task, batch, generator, eta, c, w0_scale)
    out = _one_step(layer.params, layer.spec, Z, layer.n)[..., task.d:, -1]
    rel = (out - tgt).norm(dim=-1) / (tgt - w0).norm(dim=-1)
    return {"mean": float(rel.mean()), "max": float(rel.max())}


def loop_layer(params: Mapping[str, torch.Tensor], spec: ModelSpec, X: torch.Tensor, y: torch.Tensor,
               steps: int, w0: torch.Tensor | None = None) -> torch.Tensor:
    r"""Apply one layer ``steps`` times with shared weights; return the state after every pass.

    The whole residual stream is fed back (the context tokens' state block included), i.e. the
    ``steps``-layer transformer whose layers all equal ``params``.

    Args:
        params: one-layer parameters for ``spec`` (token size ``2d``).
        spec: :func:`layer_spec`.
        X: context covariates ``(batch, d, n)``; ``y`` labels ``(batch, n)``.
        steps: number of passes ``T >= 0``.
        w0: start ``(batch, d)``; zeros when ``None``.

    Returns:
        ``(batch, T+1, d)``: :math:`w_0, \dots, w_T`.

    Raises:
        TypeError, ValueError: wrong shapes or types.
    """
    steps = check_int("steps", steps, minimum=0)
    if w0 is None:
        w0 = torch.zeros(X.shape[0], X.shape[-2], dtype=X.dtype, device=X.device)
    Z = _embed(X, y, w0)
    d, n = X.shape[-2], X.shape[-1]
    ws = [Z[..., d:, -1]]
    for _ in range(steps):
        Z = forward(params, spec, Z, n_sources=n)
        ws.append(Z[..., d:, -1])
    return torch.stack(ws, dim=1)


@dataclass(frozen=True)
class TrackingResult:
    r"""Looped layer vs explicit NGD on one prompt distribution.

    Attributes:
        rel_error: mean over prompts of :math:`\lVert w_t^{\rm TF} - w_t\rVert / \lVert w_t\rVert`, ``(T,)`` for ``t = 1..T``.
        cos_tf, cos_ngd: mean cosine with the max-margin direction, ``(T+1,)``.
        min_cos_tf: smallest cosine over prompts at ``T``.
        acc_tf, acc_ngd, acc_max_margin: query accuracy at ``T`` (sign of :math:`x_q^\top w`).
        eta_eff: the NGD step compared with.
    """

    rel_error: torch.Tensor
    cos_tf: torch.Tensor
    cos_ngd: torch.Tensor
    min_cos_tf: float
    acc_tf: float
    acc_ngd: float
    acc_max_margin: float
    eta_eff: float


def compare_with_ngd(params: Mapping[str, torch.Tensor], spec: ModelSpec, task: LinearClassification, *,
                     steps: int, eta_eff: float, c: float, batch: int, generator: torch.Generator) -> TrackingResult:
    """Loop the layer ``steps`` times from ``w = 0`` and compare with :func:`~landscape.theory.algorithms.normalised_gd`.

    Args:
        params, spec: the one-layer model.
        task: prompts (its ``n`` may differ from the training ``n``).
        steps: loop length ``T``.
        eta_eff: NGD step to compare with; c: score scale.
        batch: prompts; generator: randomness.

    Returns:
        A :class:`TrackingResult`.
    """
    pb = task.sample(batch, generator)
    X, y = pb.X[..., :-1], pb.y[..., :-1]
    xq, yq = pb.X[..., -1], pb.y[..., -1]
    with torch.no_grad():
        w_tf = loop_layer(params, spec, X, y, steps)
    w_ngd = normalised_gd(X, y, steps, eta_eff, c, return_iterates=True)
    mm = max_margin_direction(X, y)
    rel = ((w_tf - w_ngd).norm(dim=-1)[:, 1:] / w_ngd.norm(dim=-1)[:, 1:]).mean(0)

    def cos(w: torch.Tensor) -> torch.Tensor:
        return (w * mm[:, None]).sum(-1) / w.norm(dim=-1).clamp_min(torch.finfo(w.dtype).tiny)

    def acc(w: torch.Tensor) -> float:
        return float(((w * xq).sum(-1) * yq > 0).double().mean())

    ctf = cos(w_tf)
    return TrackingResult(rel, ctf.mean(0), cos(w_ngd).mean(0), float(ctf[:, -1].min()), acc(w_tf[:, -1]),
                          acc(w_ngd[:, -1]), acc(mm), float(eta_eff))


# ------------------------------------------------------------------------------------- figures
def _save(fig: Any, out: Path, stem: str) -> tuple[Path, Path]:
    png, svg = out / f"{stem}.png", out / f"{stem}.svg"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    fig.savefig(svg, bbox_inches="tight")
    return png, svg


# ---------------------------------------------------------------------------------------- study
def run(ctx: StudyContext) -> StudyResult:
    """Zhang, Cao 2026: a trained, looped softmax layer runs normalised GD for classification."""
    quick = ctx.quick
    dt = torch.float64
    d, n = 5, 20
    eta, c = 1.0, 1.0
    T = 100 if quick else 300
    eval_batch = 100 if quick else 400
    train_task = LinearClassification(d, n, margin=0.1, dtype=dt)

    # --- sanity: the exact construction is NGD (one step at random states; T0 looped steps)
    T0 = 20
    con = normalised_gd_construction(d, eta, c, 1, n, dtype=dt)
    g1 = ctx.generator(1)
    Z1, w0, w1 = _sample_states(train_task, 256, g1, eta, c, 30.0)
    step_err = float(((con.readout(con.forward(Z1)) - w1).norm(dim=-1) / (w1 - w0).norm(dim=-1)).max())
    pb = train_task.sample(32, g1)
    X, y = pb.X[..., :-1], pb.y[..., :-1]
    w_con = loop_layer(con.params, con.spec, X, y, T)
    w_ref = normalised_gd(X, y, T, eta, c, return_iterates=True)
    rel_con = (w_con - w_ref).norm(dim=-1)[:, 1:] / w_ref.norm(dim=-1)[:, 1:]
    con_err_T0 = float(rel_con[:, :T0].max())
    con_err_T = float(rel_con.max())
    # NGD's own sensitivity: restart it from a round-off-sized perturbation of w_0 = 0
    w_pert = normalised_gd(X, y, T, eta, c, return_iterates=True,
                           w0=1e-14 * torch.randn(X.shape[0], d, generator=g1, dtype=dt))
    self_sens_T = float(((w_pert - w_ref).norm(dim=-1)[:, 1:] / w_ref.norm(dim=-1)[:, 1:]).max())
    c_con = Claim(
        "construction_is_ngd",
        "The looped softmax construction (score −c u_iᵀw, value η u_i, residual) equals normalised GD on "
        "the in-context exponential loss (docs/theory.md §6)",
        step_err < CONSTRUCTION_RTOL and con_err_T0 < CONSTRUCTION_RTOL,
        {"one_step_max_rel_error": step_err, f"max_rel_error_{T0}_steps": con_err_T0,
         f"max_rel_error_{T}_steps": con_err_T, f"ngd_self_sensitivity_{T}_steps": self_sens_T},
        f"one layer at random states (‖w₀‖ up to ~30√d): max ‖Δw₁‖/‖w₁ − w₀‖ < {CONSTRUCTION_RTOL:g}, and "
        f"max_t≤{T0} ‖w_t^con − w_t^NGD‖/‖w_t^NGD‖ < {CONSTRUCTION_RTOL:g}",
    )

    # --- (i) train one layer on one NGD step
    layer = train_one_step_layer(
        train_task, eta=eta, c=c, generator=ctx.generator(2),
        adam_steps=300 if quick else 1500, lbfgs_iters=100 if quick else 300,
        batch=256, lbfgs_batch=512 if quick else 4096,
    )
    held = one_step_error(layer, train_task, eta=eta, c=c, generator=ctx.generator(3))
    c_one = Claim(
        "trained_layer_one_step_is_ngd",
        "One self-attention layer trained on one normalised-GD step reproduces that step (Zhang, Cao 2026)",
        held["mean"] < 1e-2,
        {"mean_rel_error": held["mean"], "max_rel_error": held["max"], "score_block_error": layer.score_error,
         "value_block_error": layer.value_error, "final_train_loss": float(layer.history[-1])},
        "held-out mean ‖w₁^TF − NGD(w₀)‖/‖NGD(w₀) − w₀‖ < 1e-2",
    )

    # --- (ii) loop it: in distribution and out of distribution
    sigma = random_covariance(d, ctx.generator(4), dtype=dt)
    settings: dict[str, tuple[LinearClassification, float]] = {
        "in-distribution": (train_task, eta),
        "n' = 2n": (LinearClassification(d, 2 * n, margin=0.1, dtype=dt), eta * n / (2 * n)),
        "anisotropic Σ": (LinearClassification(d, n, sigma=sigma, margin=0.1, dtype=dt), eta),
        "margin 0.5": (LinearClassification(d, n, margin=0.5, dtype=dt), eta),
    }
    results: dict[str, TrackingResult] = {}
    for i, (name, (task, eta_eff)) in enumerate(settings.items()):
        results[name] = compare_with_ngd(layer.params, layer.spec, task, steps=T, eta_eff=eta_eff, c=c,
                                         batch=eval_batch, generator=ctx.generator(10 + i))
    ind = results["in-distribution"]
    track_err = float(ind.rel_error.max())
    c_track = Claim(
        "looped_layer_tracks_ngd",
        "Looping the trained layer (shared weights) tracks explicit normalised GD over T steps (Zhang, Cao 2026)",
        track_err < 1e-2,
        {"max_t_mean_rel_error": track_err, "rel_error_at_T": float(ind.rel_error[-1]), "steps": float(T)},
        "max over t ≤ T of the mean ‖w_t^TF − w_t^NGD‖/‖w_t^NGD‖ < 1e-2 (in distribution)",
    )
    c_mm = Claim(
        "direction_approaches_max_margin",
        "The looped model's direction w_T/‖w_T‖ approaches the max-margin separator, as NGD does (Zhang, Cao 2026)",
        float(ind.cos_tf[-1]) > 0.99 and abs(float(ind.cos_tf[-1] - ind.cos_ngd[-1])) < 1e-3
        and float(ind.cos_tf[-1]) > float(ind.cos_tf[1]),
        {"cos_tf_T": float(ind.cos_tf[-1]), "cos_ngd_T": float(ind.cos_ngd[-1]), "cos_tf_1": float(ind.cos_tf[1]),
         "min_cos_tf_T": ind.min_cos_tf, "acc_tf": ind.acc_tf, "acc_ngd": ind.acc_ngd,
         "acc_max_margin": ind.acc_max_margin},
        "mean cos(w_T^TF, w_mm) > 0.99, within 1e-3 of NGD's, and larger than after one step",
    )
    ood = {k: v for k, v in results.items() if k != "in-distribution"}
    ood_err = max(float(v.rel_error.max()) for v in ood.values())
    ood_cos = min(float(v.cos_tf[-1]) for v in ood.values())
    measured_ood: dict[str, float] = {"max_rel_error": ood_err, "min_mean_cos": ood_cos}
    for k, v in ood.items():
        measured_ood[f"rel_error[{k}]"] = float(v.rel_error.max())
        measured_ood[f"cos[{k}]"] = float(v.cos_tf[-1])
    c_ood = Claim(
        "ood_tracks_ngd_and_max_margin",
        "Out of distribution (longer context, anisotropic covariates, larger margin) the looped layer still "
        "tracks NGD and its direction approaches the max-margin separator (Zhang, Cao 2026)",
        ood_err < 1e-2 and ood_cos > 0.98,
        measured_ood,
        "every OOD setting: max_t mean relative error < 1e-2 and mean cos(w_T^TF, w_mm) > 0.98",
    )

    # --- figures
    from matplotlib.figure import Figure

    out = ctx.out
    out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(15, 4.3))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ts = torch.arange(T + 1).numpy()
    for name, r in results.items():
        ax1.semilogy(ts[1:], r.rel_error.cpu().numpy(), label=name)
        (line,) = ax2.semilogx(ts[1:], 1 - r.cos_tf[1:].cpu().numpy(), label=f"{name} (looped)")
        ax2.semilogx(ts[1:], 1 - r.cos_ngd[1:].cpu().numpy(), ls=":", color=line.get_color())
    ax2.set_yscale("log")
    ax1.set_title("looped layer vs NGD: relative distance")
    ax2.set_title("1 − cos(w_t, max-margin); dotted: NGD")
    ax1.set_xlabel("step t")
    ax2.set_xlabel("step t")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    ax3.semilogy(layer.history.numpy())
    ax3.axvline(len(layer.history) - 1.5, color="k", lw=0.6, ls=":")
    ax3.set_title("one-step training loss (Adam, then L-BFGS)")
    ax3.set_xlabel("iteration")
    fig.tight_layout()
    figs = list(_save(fig, out, "zhangcao2026_tracking"))

    table = []
    for name, r in results.items():
        table.append({"setting": name, "eta_eff": r.eta_eff, "max_rel_error": float(r.rel_error.max()),
                      "cos_tf_T": float(r.cos_tf[-1]), "cos_ngd_T": float(r.cos_ngd[-1]),
                      "min_cos_tf_T": r.min_cos_tf, "acc_tf": r.acc_tf, "acc_ngd": r.acc_ngd,
                      "acc_max_margin": r.acc_max_margin})
    blocks = layer.blocks
    notes = (
        "Embedding: context tokens (u_i, 0), u_i = y_i x_i, state token (0, w) last; one softmax kernel head; "
        "the embedding is the mechanism of docs/theory.md §6 (landscape.theory.constructions.normalised_gd_construction), not the paper's.",
        "Trained parameterisation: free d×d blocks B11 (keys read u), C12 (queries read w), V21 (values write into "
        "w); all other entries of V, B, C fixed at 0, so that looping is well defined (see module docstring).",
        f"Training: d={d}, n={n}, η={eta}, c={c}, margin 0.1, Gaussian covariates; w₀ = s·N(0, I), s ~ U(0, 3); "
        f"Adam then L-BFGS in float64 (relative one-step loss after Adam {float(layer.history[-2]):.2e}, after L-BFGS "
        f"{float(layer.history[-1]):.2e}: the full-batch polish does most of the fitting). Learned: ‖B11ᵀC12 + cI‖/‖cI‖ = {layer.score_error:.2e}, "
        f"‖V21 − nηI‖/‖nηI‖ = {layer.value_error:.2e} (mean diag of V21 = {float(torch.diagonal(blocks['V21']).mean()):.4f}).",
        "Looped iterates grow like ‖w_t‖ ∝ t (NGD), far beyond the training range of w₀ (‖w₀‖ ≲ 3√d); tracking there "
        "tests extrapolation of the learned bilinear score.",
        f"OOD n' = 2n: the model's 1/n turns the learned value n·η into the step η·n/n' = {eta * n / (2 * n):g}; the "
        "looped layer is compared with NGD at that step.",
        f"Round-off amplification: over {T} steps the exact construction drifts from explicit NGD by up to "
        f"{con_err_T:.1e} (relative), while explicit NGD restarted from w₀ = 1e-14·N(0, I) instead of 0 drifts by "
        f"{self_sens_T:.1e}: NGD with a constant step amplifies round-off along the loop by itself, so exactness is "
        f"checked per step and over the "
        f"first {T0} steps, where it holds to 1e-10; as docs/theory.md §6 says, 1e-15 agreement along the loop holds only "
        f"for short loops.",
        f"T = {T} loop steps, {eval_batch} prompts per setting; max-margin directions by SLSQP "
        "(landscape.theory.algorithms.max_margin_direction).",
    )
    return StudyResult(
        study="zhangcao2026",
        claims=(c_con, c_one, c_track, c_mm, c_ood),
        tables={"looped layer vs NGD": table},
        figures=tuple(figs),
        notes=notes,
    )


if __name__ == "__main__":
    raise SystemExit(study_main("zhangcao2026", run))
