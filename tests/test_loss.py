"""Tests of landscape/core/loss.py, the one in-context loss.

References: the prediction of a one-layer linear-attention model written out with einsum from
the paper's formula (independently of :mod:`landscape.core.model`) and the squared error averaged
by a Python loop; the zero model, whose loss is the mean squared label; a Python loop over seeds
for ``vmap``; the exact population loss of the symbolic expansion route
(:func:`landscape.symbolic.expansion_loss`, whose polynomial forward pass is independent of
:func:`landscape.core.model.forward`) against a Monte-Carlo estimate of :func:`landscape.loss`
within its standard error.
"""

from __future__ import annotations

import math

import pytest
import sympy
import torch

import landscape
from landscape.core.loss import REDUCTIONS, loss, squared_error
from landscape.core.model import ModelSpec, flatten_params, init_params, predict
from landscape.core.tasks import LinearRegression, PromptBatch
from landscape.experiment.train import TrainConfig, make_step, stacked_grad
from landscape.symbolic import expansion_loss
from landscape.tolerances import MC_NUM_SE, RTOL

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_exported_at_top_level() -> None:
    assert landscape.loss is loss and landscape.squared_error is squared_error


def test_loss_equals_written_out_one_layer_linear_attention() -> None:
    """TF(Z) = -(1/n) [P Z_s Z_sᵀ Q z_q]_{d+1} for one linear layer (query label slot zero)."""
    d, n, B = 3, 5, 7
    spec = ModelSpec.linear(d, 1)
    p = init_params(spec, _gen(0), std=0.4, dtype=F64)
    batch = LinearRegression(d, n, noise=0.2, dtype=F64).sample(B, _gen(1))
    P, Q = p["layer0.head0.P"], p["layer0.head0.Q"]
    Zs, zq = batch.Z[..., :n], batch.Z[..., n]
    upd = torch.einsum("ij,bjk,blk,lm,bm->bi", P, Zs, Zs, Q, zq) / n
    tf = -(batch.Z[:, -1, -1] + upd[:, -1])
    ref = sum((float(tf[b]) - float(batch.target[b])) ** 2 for b in range(B)) / B
    assert float(loss(p, spec, batch)) == pytest.approx(ref, rel=RTOL[F64])


def test_zero_model_loss_is_mean_squared_label() -> None:
    """All weights zero: TF = 0, so the loss is mean(y_{n+1}²) — no 1/2, no 1/d."""
    spec = ModelSpec.kernel(2, 2, ["exp", "linear"])
    p = {k: torch.zeros(v.shape, dtype=F64) for k, v in init_params(spec, _gen(2), dtype=F64).items()}
    batch = LinearRegression(2, 4, dtype=F64).sample(50, _gen(3))
    assert torch.equal(loss(p, spec, batch), (batch.target ** 2).mean())


def test_reductions() -> None:
    pred = torch.tensor([[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]], dtype=F64)
    y = torch.tensor([0.0, 1.0, 1.0], dtype=F64)
    none = squared_error(pred, y, reduction="none")
    assert torch.equal(none, torch.tensor([[1.0, 1.0, 9.0], [0.0, 4.0, 4.0]], dtype=F64))
    assert torch.equal(squared_error(pred, y, reduction="sum"), torch.tensor([11.0, 8.0], dtype=F64))
    assert torch.equal(squared_error(pred, y), torch.tensor([11.0 / 3, 8.0 / 3], dtype=F64))
    assert REDUCTIONS == ("mean", "sum", "none")
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', 'none'; got 'avg'"):
        squared_error(pred, y, reduction="avg")  # type: ignore[arg-type]


def test_bad_batch() -> None:
    spec = ModelSpec.linear(2, 1)
    p = init_params(spec, _gen(4), dtype=F64)
    batch = LinearRegression(2, 3, dtype=F64).sample(4, _gen(5))
    with pytest.raises(TypeError, match=r"batch must be a PromptBatch \(tensors Z and target\), got tuple"):
        loss(p, spec, (batch.Z, batch.target))  # type: ignore[arg-type]
    short = PromptBatch(batch.Z, batch.target[:3], batch.X, batch.y)
    with pytest.raises(ValueError, match=r"batch.target has shape \(3,\) but batch.Z holds \(4,\) prompts"):
        loss(p, spec, short)


def test_vmap_over_seeds_equals_loop_bit_for_bit() -> None:
    spec = ModelSpec.kernel(2, 2, "softmax")
    stacked = init_params(spec, _gen(6), std=0.5, seeds=3, dtype=F64)
    batch = LinearRegression(2, 5, dtype=F64).sample(9, _gen(7))
    vm = torch.func.vmap(lambda q: loss(q, spec, batch, validate=False))(stacked)
    loop = torch.stack([loss({k: v[i] for k, v in stacked.items()}, spec, batch) for i in range(3)])
    assert torch.equal(vm, loop)


def test_training_engines_form_this_loss() -> None:
    """The vmap engine's loss is bit-identical to loss(); the chunked stacked engine's to round-off."""
    cfg = TrainConfig(task="linear", d=3, n=6, seeds=3, steps=1, batch=10, dtype="float64", device="cpu",
                      engine="vmap", checkpoint_every=0)
    spec = cfg.spec
    params = init_params(spec, _gen(8), std=0.3, seeds=3, dtype=F64)
    flat = flatten_params(params, spec)
    batch = LinearRegression(3, 6, dtype=F64).sample(30, _gen(9))
    Z, y = batch.Z.reshape(3, 10, 4, 7), batch.target.reshape(3, 10)
    ref = torch.stack([loss({k: v[i] for k, v in params.items()}, spec,
                            PromptBatch(Z[i], y[i], batch.X[:10], batch.y[:10])) for i in range(3)])
    step = make_step(cfg)
    lr = torch.zeros(3, dtype=F64)
    out = step(flat, {"m": torch.zeros_like(flat), "v": torch.zeros_like(flat)}, torch.ones(3, dtype=torch.bool),
               torch.full((3,), -1), 0, Z, y, lr)
    assert torch.equal(out[4], ref)
    _, chunked = stacked_grad(flat, spec, Z, y, chunk=3)
    assert torch.allclose(chunked, ref, rtol=RTOL[F64], atol=0)


# ---------------------------------------------------------------------- exact population loss vs Monte-Carlo
def _rational_blocks(params: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, sympy.Matrix]]:
    """Round the weights to multiples of 1/8 so the symbolic route sees them exactly."""
    q = {k: torch.round(v * 8) / 8 for k, v in params.items()}
    blocks = {k: sympy.Matrix([[sympy.Rational(int(round(x * 8)), 8) for x in row] for row in v.tolist()])
              for k, v in q.items()}
    return q, blocks


@pytest.mark.parametrize("spec, mask, n, noise, std", [
    (ModelSpec.linear(2, 1), "full", 3, 0.0, 0.3),
    (ModelSpec.linear(2, 1, heads=2), "full", 3, 0.3, 0.3),
    (ModelSpec.kernel(2, 1, "linear"), "full", 3, 0.0, 0.3),
    (ModelSpec.linear(1, 2), "paper", 2, 0.0, 0.5),
    (ModelSpec.kernel(1, 2, "linear"), "paper", 2, 0.2, 0.5),
], ids=lambda v: v.describe() if isinstance(v, ModelSpec) else str(v))
def test_monte_carlo_loss_equals_exact_expansion(spec: ModelSpec, mask: str, n: int, noise: float,
                                                 std: float) -> None:
    """E(TF − y)² from the polynomial forward of the expansion route = mean of loss() over prompts.

    Checks the convention (no 1/2, no 1/d) and the forward pass of :mod:`landscape.symbolic.expansion`
    against :func:`landscape.core.model.forward` at once: a disagreement in either moves the exact
    value away from the Monte-Carlo mean by far more than ``MC_NUM_SE`` standard errors.
    """
    params, blocks = _rational_blocks(init_params(spec, _gen(10), std=std, mask=mask, dtype=F64))
    data = LinearRegression(spec.d, n, noise=noise, dtype=F64)
    exact = float(expansion_loss(blocks, spec, data))
    g = _gen(11)
    batches = [data.sample(50_000, g) for _ in range(4)]
    per = torch.cat([squared_error(predict(params, spec, b.Z), b.target, reduction="none") for b in batches])
    mc, se = float(per.mean()), float(per.std()) / math.sqrt(per.numel())
    assert abs(mc - exact) <= MC_NUM_SE * se, (mc, exact, se)
    # and loss() is that mean on one batch
    b = data.sample(1000, _gen(12))
    assert torch.equal(loss(params, spec, b), squared_error(predict(params, spec, b.Z), b.target))
