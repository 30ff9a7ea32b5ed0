"""Tests of the reused sampling buffers (landscape.core.tasks.BufferedSampler, ``embed(out=)``).

References: the samplers' formulas as they were before the buffers existed, written out here
operation by operation (fresh ``torch.randn`` draws in ``normal_shapes`` order, the label sums
taken in numpy float arithmetic, the two concatenations of the embedding) — every comparison is bit for bit
(``torch.equal``), since a training run must give the same weights for the same seed; and a
training run through the reused buffers against the same run drawing every batch afresh.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import landscape.core.tasks as tasks_mod
import landscape.engine.fused as fused
from landscape.core.tasks import (
    BufferedSampler,
    KernelGP,
    LinearClassification,
    LinearRegression,
    OrthonormalFeatures,
    PromptBatch,
    embed,
    linear_labels,
    random_covariance,
    sqrtm_psd,
)
from landscape.experiment.train import TrainConfig, train

SIGMA3 = random_covariance(3, torch.Generator().manual_seed(99), spectrum=(2.0, 1.0, 0.25))


# ---------------------------------------------------------------------- the formulas before the buffers
def _old_embed(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y_ctx = torch.cat([y[:, :-1], torch.zeros_like(y[:, -1:])], dim=1)
    return torch.cat([X, y_ctx.unsqueeze(1)], dim=1)


def _old_half(sigma: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    ev, U = torch.linalg.eigh(sigma.to(torch.float64))
    return ((U * ev.clamp_min(0) ** 0.5) @ U.T).to(dt)


def _labels_ref(w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``y[b, j] = sum_k w[b, k] X[b, k, j]``: numpy's IEEE products and sums in increasing ``k``, in the inputs' dtype."""
    wn, Xn = w.numpy(), X.numpy()
    y = Xn[:, 0] * wn[:, :1]
    for k in range(1, Xn.shape[1]):
        y = np.add(y, np.multiply(Xn[:, k], wn[:, k:k + 1]))
    return torch.from_numpy(np.ascontiguousarray(y))


def _old_linear(t: LinearRegression, B: int, g: torch.Generator) -> PromptBatch:
    d, m, dt = t.d, t.n + 1, t.dtype
    xi = torch.randn(B, d, m, generator=g, dtype=dt)
    w = torch.randn(B, d, generator=g, dtype=dt)
    eps = torch.randn(B, m, generator=g, dtype=dt) if t.noise > 0 else None
    if t.covariates == "sphere":
        xi = xi / xi.norm(dim=1, keepdim=True)
    X = xi if t.sigma is None else _old_half(t.sigma, dt) @ xi
    if t.task_cov == "inverse":
        w = w @ _old_half(torch.linalg.inv(t.sigma.to(torch.float64)), dt)
    y = _labels_ref(w, X)
    if eps is not None:
        y = y + t.noise * eps
    return PromptBatch(_old_embed(X, y), y[:, -1], X, y, {"w": w, "xi": xi})


def _old_gp(t: KernelGP, B: int, g: torch.Generator) -> PromptBatch:
    d, m, dt = t.d, t.n + 1, t.dtype
    xi = torch.randn(B, d, m, generator=g, dtype=dt)
    z = torch.randn(B, m, 1, generator=g, dtype=dt)
    if t.covariates == "sphere":
        xi = xi / xi.norm(dim=1, keepdim=True)
    K = t.gram(xi.to(torch.float64))
    L = torch.linalg.cholesky(K)
    y = (L @ z.to(torch.float64)).squeeze(-1).to(dt)
    X = xi if t.sigma is None else _old_half(t.sigma, dt) @ xi
    return PromptBatch(_old_embed(X, y), y[:, -1], X, y, {"xi": xi, "K": K.to(dt)})


def _equal(a: PromptBatch, b: PromptBatch) -> None:
    for name in ("Z", "target", "X", "y"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.latent.keys() == b.latent.keys()
    for k in a.latent:
        assert torch.equal(a.latent[k], b.latent[k]), k


LINEAR = [
    LinearRegression(5, 20, dtype=torch.float32),
    LinearRegression(5, 20),
    LinearRegression(3, 6, sigma=SIGMA3, covariates="sphere", task_cov="inverse", noise=0.1, dtype=torch.float32),
    LinearRegression(3, 6, sigma=SIGMA3, noise=0.3),
]
GP = [KernelGP(3, 6, "relu", sigma=SIGMA3, dtype=torch.float32), KernelGP(3, 6, "exp", covariates="gaussian")]
OLD = [(t, _old_linear) for t in LINEAR] + [(t, _old_gp) for t in GP]


def _id(case: tuple) -> str:
    t = case[0]
    return f"{type(t).__name__}-{str(t.dtype)[6:]}-{'sigma' if t.sigma is not None else 'I'}"


@pytest.mark.parametrize("case", OLD, ids=_id)
def test_sample_and_the_buffered_sampler_equal_the_formula_before_the_buffers(case: tuple) -> None:
    """Three consecutive batches (the generator's stream continues identically), batch sizes that
    change in between (the buffers are reallocated), bit for bit."""
    t, old = case
    g_old, g_new, g_buf = (torch.Generator().manual_seed(11) for _ in range(3))
    buffered = BufferedSampler(t)
    for B in (64, 64, 33):
        ref = old(t, B, g_old)
        _equal(t.sample(B, g_new), ref)
        _equal(buffered.sample(B, g_buf), ref)
    assert torch.equal(g_old.get_state(), g_new.get_state())
    assert torch.equal(g_old.get_state(), g_buf.get_state())


@pytest.mark.parametrize("t", [LINEAR[0], GP[0]], ids=lambda t: type(t).__name__)
def test_buffers_are_reused_and_the_previous_batch_overwritten(t) -> None:
    s = BufferedSampler(t)
    a = s.sample(40, torch.Generator().manual_seed(1))
    a_Z = a.Z.clone()
    b = s.sample(40, torch.Generator().manual_seed(2))
    assert b.Z.data_ptr() == a.Z.data_ptr()
    if t.sigma is None:  # X is the draws' buffer
        assert b.X.data_ptr() == a.X.data_ptr()
    assert torch.equal(a.Z, b.Z) and not torch.equal(a_Z, b.Z)  # documented: the next call overwrites
    fresh = t.sample(40, torch.Generator().manual_seed(1))
    assert torch.equal(fresh.Z, a_Z)
    c = s.sample(41, torch.Generator().manual_seed(2))  # another size: new buffers
    assert c.Z.shape[0] == 41 and c.Z.data_ptr() != b.Z.data_ptr()


@pytest.mark.parametrize("t", [LinearClassification(3, 5, margin=0.2, flip=0.1),
                               OrthonormalFeatures(4, 6, probs=(0.7, 0.2, 0.1))], ids=lambda t: type(t).__name__)
def test_other_tasks_are_sampled_by_their_own_sample(t) -> None:
    a = BufferedSampler(t).sample(30, torch.Generator().manual_seed(3))
    _equal(a, t.sample(30, torch.Generator().manual_seed(3)))


def test_embed_into_out_equals_embed_and_checks_the_shape() -> None:
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(9, 4, 7, generator=g), torch.randn(9, 7, generator=g)
    out = torch.full((9, 5, 7), float("nan"))
    assert embed(X, y, out) is out
    assert torch.equal(out, _old_embed(X, y)) and torch.equal(embed(X, y), _old_embed(X, y))
    with pytest.raises(ValueError, match=r"out must have shape \(9, 5, 7\)"):
        embed(X, y, torch.empty(9, 4, 7))


ENGINES = ["stacked"] + (["fused"] if fused.available() else [])


@pytest.mark.parametrize("engine", ENGINES)
def test_training_through_the_buffers_gives_the_weights_of_fresh_batches(engine: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """train() draws every batch into one BufferedSampler; the same run with every batch drawn afresh by
    task.sample (the loop as it was) ends at the same bits, resampling every step and every 2 steps."""
    cfg = TrainConfig(d=3, n=6, seeds=2, steps=6, batch=48, eval_batch=64, dtype="float32", device="cpu",
                      attention="kernel", activations=("relu",), layers=2, log_every=3, checkpoint_every=0,
                      engine=engine, lr=0.01, resample_every=2 if engine == "stacked" else 1)
    used: list[BufferedSampler] = []

    class Spy(BufferedSampler):
        def __init__(self, task: object, prompt_pass: object = None) -> None:
            super().__init__(task, prompt_pass)
            used.append(self)

    monkeypatch.setattr(tasks_mod, "BufferedSampler", Spy)
    a = train(cfg, progress=False)
    assert len(used) == 1 and "Z" in used[0]._pool  # the run went through the buffers
    assert used[0].prompt_pass is fused.linear_prompts  # and the compiled label pass
    monkeypatch.setattr(tasks_mod, "BufferedSampler", lambda task, prompt_pass=None: task)
    b = train(cfg, progress=False)
    assert a.engine == b.engine == engine
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k
    assert torch.equal(a.train_loss, b.train_loss) and torch.equal(a.final_loss, b.final_loss)
    assert bool(torch.isfinite(a.final_loss).all())


def test_sqrtm_in_the_reference_is_the_library_one() -> None:
    """The reference formula's Σ^{1/2} (written here) is bitwise the library's sqrtm_psd."""
    assert torch.equal(_old_half(SIGMA3, torch.float64), sqrtm_psd(SIGMA3))


# ---------------------------------------------------------------------- the label sums
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [1, 2, 5, 9])
def test_linear_labels_are_the_ordered_unfused_sum(dtype: torch.dtype, d: int) -> None:
    g = torch.Generator().manual_seed(31 + d)
    X = torch.randn(257, d, 11, generator=g, dtype=dtype) * 10.0 ** torch.randint(-3, 4, (257, d, 1), generator=g)
    w = torch.randn(257, d, generator=g, dtype=dtype)
    ref = _labels_ref(w, X)
    got = linear_labels(w, X)
    out, scratch = torch.full((257, 11), float("nan"), dtype=dtype), torch.empty(257, 11, dtype=dtype)
    into = linear_labels(w, X, out, scratch)
    assert into is out
    assert torch.equal(got, ref) and torch.equal(into, ref)  # the same bits with and without buffers
    exact = torch.einsum("bk,bkj->bj", w.double(), X.double())  # the value, to d roundings
    scale = torch.einsum("bk,bkj->bj", w.double().abs(), X.double().abs())
    assert bool(((got.double() - exact).abs() <= d * torch.finfo(dtype).eps * scale + 1e-300).all())


def test_linear_labels_differ_from_a_fused_sum_somewhere() -> None:
    """The reference above is not vacuous: summing with fused multiply-adds (emulated in float64,
    one rounding per term) gives other float32 bits for some of these labels."""
    g = torch.Generator().manual_seed(5)
    X, w = torch.randn(4096, 5, 21, generator=g), torch.randn(4096, 5, generator=g)
    fused_sum = torch.zeros(4096, 21)
    for k in range(5):
        fused_sum = (fused_sum.double() + w[:, k:k + 1].double() * X[:, k].double()).float()
    assert not torch.equal(fused_sum, linear_labels(w, X))


@pytest.mark.skipif(not fused.available(), reason="numba is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_the_compiled_prompt_pass_equals_the_torch_operations(dtype: torch.dtype, noise: float) -> None:
    g = torch.Generator().manual_seed(12)
    X, w = torch.randn(300, 4, 9, generator=g, dtype=dtype), torch.randn(300, 4, generator=g, dtype=dtype)
    eps = torch.randn(300, 9, generator=g, dtype=dtype)
    want_eps = eps.clone().mul_(noise) if noise > 0 else eps.clone()
    want_y = linear_labels(w, X) + (want_eps if noise > 0 else 0)
    want_Z = embed(X, want_y)
    y, Z = torch.full((300, 9), float("nan"), dtype=dtype), torch.full((300, 5, 9), float("nan"), dtype=dtype)
    assert fused.linear_prompts(X, w, noise, eps if noise > 0 else None, y, Z) is True
    assert torch.equal(y, want_y) and torch.equal(Z, want_Z) and torch.equal(eps, want_eps)


def test_the_compiled_prompt_pass_declines_what_it_does_not_cover() -> None:
    g = torch.Generator().manual_seed(13)
    X, w = torch.randn(20, 3, 9, generator=g), torch.randn(20, 3, generator=g)
    y, Z = torch.zeros(20, 9), torch.zeros(20, 4, 9)
    Xt = torch.randn(20, 9, 3, generator=g).transpose(1, 2)  # not contiguous
    assert fused.linear_prompts(Xt, w, 0.0, None, y, Z) is False
    assert fused.linear_prompts(X.double(), w, 0.0, None, y, Z) is False  # mixed dtypes
    assert fused.linear_prompts(X.half(), w.half(), 0.0, None, y.half(), Z.half()) is False
    assert bool((y == 0).all()) and bool((Z == 0).all())  # nothing written


@pytest.mark.parametrize("case", OLD, ids=_id)
def test_the_buffered_sampler_with_the_compiled_pass_equals_the_formula(case: tuple) -> None:
    """What ``train`` draws (``BufferedSampler(task, fused.linear_prompts)``): the formula's bits, three
    consecutive batches of changing size; the pass is used for the linear tasks where numba is installed."""
    t, old = case
    calls = []

    def counted(*args):
        done = fused.linear_prompts(*args)
        calls.append(done)
        return done

    buffered = BufferedSampler(t, counted)
    g_old, g_new = torch.Generator().manual_seed(21), torch.Generator().manual_seed(21)
    for B in (40, 40, 17):
        _equal(buffered.sample(B, g_new), old(t, B, g_old))
    assert torch.equal(g_old.get_state(), g_new.get_state())
    if isinstance(t, LinearRegression):
        assert calls == [fused.available()] * 3
    else:
        assert calls == []


def test_a_declining_prompt_pass_leaves_the_torch_operations() -> None:
    task = LinearRegression(3, 6, sigma=SIGMA3, covariates="sphere", task_cov="inverse", noise=0.1, dtype=torch.float32)
    plain = BufferedSampler(task).sample(50, torch.Generator().manual_seed(3))
    plain = PromptBatch(plain.Z.clone(), plain.target.clone(), plain.X.clone(), plain.y.clone(),
                        {k: v.clone() for k, v in plain.latent.items()})
    calls = []
    declined = BufferedSampler(task, lambda *a: calls.append(1) or False).sample(50, torch.Generator().manual_seed(3))
    assert calls == [1]
    _equal(plain, declined)
