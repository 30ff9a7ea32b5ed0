"""Tests of the training engines: the chunked stacked gradient and the fused CPU kernel.

References: the unchunked stacked gradient (one autograd pass over the whole batch) for the
chunked one; ``torch.func.grad`` of the loss of :func:`landscape.model.forward`, the one reference
forward pass, for every engine; repeated runs for bit-reproducibility.
"""

from __future__ import annotations

import torch

from landscape.model import forward, init_params, unflatten_params, flatten_params
from landscape.train import TrainConfig, init_state, make_generator, make_step, make_task, resolve_chunk, \
    sample_batch, stacked_grad, train

F64 = torch.float64


def _reference_grad(flat: torch.Tensor, spec, Z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-seed gradient of the mean squared error, by torch.func.grad of model.forward's loss."""
    def loss(p: torch.Tensor, Zi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        pred = -forward(unflatten_params(p, spec), spec, Zi, validate=False)[..., -1, -1]
        return ((pred - yi) ** 2).mean()

    gs, ls = [], []
    for i in range(flat.shape[0]):
        g = torch.func.grad(loss)(flat[i], Z[i], y[i])
        gs.append(g)
        ls.append(loss(flat[i], Z[i], y[i]))
    return torch.stack(gs), torch.stack(ls)


def _batch(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    state = init_state(cfg)
    flat = state.flat + 0.1 * torch.randn(state.flat.shape, generator=torch.Generator().manual_seed(5),
                                          dtype=state.flat.dtype)
    Z, y = sample_batch(make_task(cfg), cfg, make_generator(cfg, "data"))
    return flat, Z, y


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------------- chunked stacked gradient
def test_chunked_gradient_equals_full_batch_gradient_float64() -> None:
    """Any chunk size gives the full-batch gradient (one autograd pass) to 1e-12 relative, and
    both equal torch.func.grad of model.forward's loss."""
    cfg = TrainConfig(d=3, n=6, attention="kernel", activations=("relu", "softmax"), layers=3, seeds=3, batch=37,
                      dtype="float64", device="cpu")
    flat, Z, y = _batch(cfg)
    g_full, l_full = stacked_grad(flat, cfg.spec, Z, y, 37)
    g_ref, l_ref = _reference_grad(flat, cfg.spec, Z, y)
    assert _rel(g_full, g_ref) < 1e-12 and _rel(l_full, l_ref) < 1e-12
    for chunk in (1, 5, 16, 36):
        g, l = stacked_grad(flat, cfg.spec, Z, y, chunk)
        assert _rel(g, g_full) < 1e-12, chunk
        assert _rel(l, l_full) < 1e-12, chunk
        assert float(g_full.abs().max()) > 1e-3


def test_resolved_chunk_bounds_the_largest_temporary() -> None:
    """The automatic chunk keeps S·chunk·n·(n+1)·4 bytes (one head's scores) under 8 MiB; an
    explicit chunk wins (capped at the batch)."""
    cfg = TrainConfig(d=5, n=20, attention="kernel", activations=("relu",), layers=3, seeds=32, batch=1024,
                      device="cpu")
    c = resolve_chunk(cfg)
    assert 32 * c * 20 * 21 * 4 <= 8 << 20 < 32 * (c + 1) * 20 * 21 * 4
    assert resolve_chunk(TrainConfig(d=5, n=20, seeds=32, batch=1024, chunk=100, device="cpu")) == 100
    assert resolve_chunk(TrainConfig(d=5, n=20, seeds=32, batch=64, chunk=100, device="cpu")) == 64
    assert resolve_chunk(TrainConfig(d=2, n=3, seeds=1, batch=50, device="cpu")) == 50


def test_chunked_training_is_bit_reproducible_float32() -> None:
    """The same config (chunk size fixed) trains to the same bits twice, and matches the whole-batch
    engine to float32 round-off."""
    base = dict(d=3, n=6, attention="kernel", activations=("softmax",), layers=2, seeds=3, steps=8, batch=40,
                eval_batch=32, dtype="float32", device="cpu", engine="stacked", log_every=4,
                checkpoint_every=0, lr=0.02)
    a = train(TrainConfig(**base, chunk=7), progress=False)
    b = train(TrainConfig(**base, chunk=7), progress=False)
    w = train(TrainConfig(**base, chunk=40), progress=False)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])
        assert torch.allclose(a.params[k], w.params[k], rtol=1e-4, atol=1e-5)
    assert torch.equal(a.final_loss, b.final_loss)
