"""The fused kernel's forward pass (:func:`landscape.engine.fused.fused_predict`) and the held-out
evaluation of ``train`` on it.

References: :func:`landscape.core.model.forward`, the one reference forward pass, seed by seed
(float64); the torch engine's evaluation (:func:`stacked_predict` in chunks) for the held-out loss
in float32; and training runs that evaluate at different steps for the claim that the evaluation
never touches the trained weights.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import landscape.engine.fused as fused
from landscape.core.model import forward, unflatten_params
from landscape.experiment.train import TrainConfig, _eval_loss, init_state, make_generator, make_task, train
from landscape.tolerances import RTOL

needs_numba = pytest.mark.skipif(not fused.available(), reason="numba not installed")

F64 = torch.float64
ACTS = ["linear", "relu", "exp", "exp:0.5", "softmax"]


def _cfg(attention: str, acts: tuple[str, ...], heads: int, d: int, n: int, L: int, S: int,
         dtype: str = "float64") -> TrainConfig:
    if attention == "linear":
        return TrainConfig(d=d, n=n, attention="linear", heads=heads, layers=L, seeds=S, dtype=dtype, device="cpu")
    return TrainConfig(d=d, n=n, attention="kernel", activations=acts, layers=L, seeds=S, dtype=dtype, device="cpu")


def _weights(cfg: TrainConfig, scale: float = 0.1) -> torch.Tensor:
    """Initial weights moved off the initialisation (every block non-zero, masks included)."""
    flat = init_state(cfg).flat
    return flat + scale * torch.randn(flat.shape, generator=torch.Generator().manual_seed(11), dtype=flat.dtype)


def _reference_predict(flat: torch.Tensor, spec, Z: torch.Tensor) -> torch.Tensor:
    """``(S, E)`` predictions of model.forward, one seed at a time; ``Z`` shared or per seed."""
    rows = []
    for s in range(flat.shape[0]):
        Zs = Z if Z.dim() == 3 else Z[s]
        rows.append(-forward(unflatten_params(flat[s], spec), spec, Zs, validate=False)[..., -1, -1])
    return torch.stack(rows)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@needs_numba
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(attention=st.sampled_from(["linear", "kernel"]),
       acts=st.lists(st.sampled_from(ACTS), min_size=1, max_size=3).map(tuple),
       heads=st.integers(1, 3), d=st.integers(1, 4), n=st.integers(1, 9), L=st.integers(1, 3),
       E=st.integers(1, 70), shared=st.booleans())
def test_fused_predict_equals_model_forward_float64(attention, acts, heads, d, n, L, E, shared) -> None:
    """Predictions of the kernel's forward = model.forward seed by seed (float64, RTOL), shared
    prompts and prompts per seed, partial 16-prompt blocks included."""
    cfg = _cfg(attention, acts, heads, d, n, L, 3)
    flat = _weights(cfg)
    gen = make_generator(cfg, "eval")
    task = make_task(cfg)
    Z = task.sample(E, gen).Z if shared else task.sample(3 * E, gen).Z.reshape((3, E) + (cfg.spec.token_dim, n + 1))
    pred = fused.fused_predict(flat, cfg.spec, Z)
    ref = _reference_predict(flat, cfg.spec, Z)
    assert pred.shape == (3, E) and pred.dtype == F64 and torch.isfinite(ref).all()
    assert _rel(pred, ref) < RTOL[F64], (_rel(pred, ref), cfg.spec.describe())


@needs_numba
def test_fused_predict_rejects_prompts_of_the_wrong_shape() -> None:
    cfg = _cfg("kernel", ("relu",), 1, 2, 4, 1, 3)
    flat = _weights(cfg)
    with pytest.raises(ValueError, match=r"Z must be \(E, D, N\) or \(3, E, D, N\)"):
        fused.fused_predict(flat, cfg.spec, torch.zeros(2, 5, 3, 5, dtype=F64))


@needs_numba
@pytest.mark.parametrize("acts", [("relu",), ("softmax", "linear"), ("exp:0.5",)])
def test_fused_eval_loss_equals_torch_engine_eval_float32(acts: tuple[str, ...]) -> None:
    """The held-out loss by the fused forward = the torch engine's (stacked_predict in chunks) to
    float32 round-off, both within float32 round-off of the float64 loss of model.forward."""
    cfg = _cfg("kernel", acts, 1, 5, 20, 3, 4, dtype="float32")
    cfg64 = _cfg("kernel", acts, 1, 5, 20, 3, 4)
    flat = _weights(cfg64, 0.03)  # three exp layers of larger weights overflow float32
    batch = make_task(cfg64).sample(300, make_generator(cfg64, "eval"))
    ref = ((_reference_predict(flat, cfg64.spec, batch.Z) - batch.target) ** 2).mean(-1)
    assert torch.isfinite(ref).all() and ref.max() < 1e3
    p32 = unflatten_params(flat.float(), cfg.spec)
    Z32, y32 = batch.Z.float(), batch.target.float()
    new = _eval_loss(cfg.spec, p32, Z32, y32, "fused")
    old = _eval_loss(cfg.spec, p32, Z32, y32, "stacked")
    assert new.dtype == old.dtype == torch.float32 and new.shape == old.shape == (4,)
    assert _rel(new.double(), old.double()) < 1e-5, (new, old)
    assert _rel(new.double(), ref) < 1e-5 and _rel(old.double(), ref) < 1e-5


@needs_numba
def test_trained_weights_do_not_depend_on_the_evaluation() -> None:
    """Training with the fused engine gives the same bits whether it evaluates the held-out loss
    at every step or only at the start and the end; the final held-out loss equals the torch
    engine's evaluation of the final weights to float32 round-off."""
    base = dict(d=3, n=6, attention="kernel", activations=("relu", "softmax"), layers=2, seeds=3, steps=6,
                batch=40, eval_batch=50, dtype="float32", device="cpu", checkpoint_every=0, lr=0.02)
    every = train(TrainConfig(**base, log_every=1), progress=False)
    rarely = train(TrainConfig(**base, log_every=6), progress=False)
    assert every.engine == rarely.engine == "fused"
    for k in every.params:
        assert torch.equal(every.params[k], rarely.params[k])
    assert torch.equal(every.final_loss, rarely.final_loss)
    cfg = TrainConfig(**base)
    held = make_task(cfg).sample(cfg.eval_batch, make_generator(cfg, "eval"))
    torch_eval = _eval_loss(cfg.spec, every.params, held.Z, held.target, "stacked")
    assert _rel(every.final_loss.double(), torch_eval.double()) < 1e-5
