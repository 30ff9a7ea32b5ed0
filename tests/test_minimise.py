"""landscape.experiment.train.minimise: the training loop of user objectives.

References: closed-form gradient-descent iterates of quadratics, torch.optim (Adam, AdamW, SGD with
momentum, CosineAnnealingLR, LBFGS) run step for step on the same batches, and the minimiser
solved by linear algebra.
"""

from __future__ import annotations

import math

import pytest
import torch

from landscape.experiment.train import MinimiseResult, minimise

D64 = torch.float64


def _spd(n: int, seed: int, cond: float = 10.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D64))
    eig = torch.logspace(0, math.log10(cond), n, dtype=D64)
    return (Q * eig) @ Q.T


def _quadratic(params: dict[str, torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """0.5 (x - a)^T H (x - a) with x the (2, 3) entry "x" read as a 6-vector."""
    H, a = batch
    r = params["x"].reshape(-1) - a
    return 0.5 * r @ (H @ r)


# ------------------------------------------------------------------------------------ (a) SGD
def test_sgd_matches_closed_form_iterates() -> None:
    H, a = _spd(6, 0), torch.linspace(-1, 1, 6, dtype=D64)
    x0 = torch.arange(6, dtype=D64).reshape(2, 3) / 3
    lr, T = 0.05, 40
    seen: dict[int, torch.Tensor] = {}
    res = minimise(_quadratic, {"x": x0}, generator=torch.Generator().manual_seed(0), data=(H, a), steps=T, lr=lr,
                   optimizer="sgd", record=lambda t, p: seen.__setitem__(t, p["x"].reshape(-1)), record_every=10)
    A = torch.eye(6, dtype=D64) - lr * H
    closed = lambda t: a + torch.linalg.matrix_power(A, t) @ (x0.reshape(-1) - a)  # noqa: E731
    assert isinstance(res, MinimiseResult) and res.steps == T and res.diverged_step is None
    assert res.params["x"].shape == (2, 3)
    torch.testing.assert_close(res.params["x"].reshape(-1), closed(T), rtol=0, atol=1e-13)
    assert sorted(seen) == [0, 10, 20, 30, 40]
    for t, x in seen.items():
        torch.testing.assert_close(x, closed(t), rtol=0, atol=1e-13)
    want_loss = torch.stack([0.5 * (closed(t) - a) @ H @ (closed(t) - a) for t in range(T)])
    torch.testing.assert_close(res.loss, want_loss, rtol=1e-13, atol=0)


# ------------------------------------------------------------------------------------ (b) torch.optim
def _noisy(params: dict[str, torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    H, a, xi = batch
    r = params["x"].reshape(-1) - a - xi
    return 0.5 * r @ (H @ r) + 0.25 * (params["w"] ** 2).sum() ** 2 + 0.5 * params["w"].sum()


@pytest.mark.parametrize("optimizer, kw, torch_opt", [
    ("adam", dict(weight_decay=0.01), lambda ps, lr: torch.optim.Adam(ps, lr=lr, weight_decay=0.01, foreach=False)),
    ("adamw", dict(weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6),
     lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6, foreach=False)),
    ("sgd", dict(momentum=0.9), lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, foreach=False)),
])
def test_update_equals_torch_optim_with_cosine_schedule(optimizer: str, kw: dict, torch_opt) -> None:
    H, a = _spd(6, 1), torch.linspace(0, 1, 6, dtype=D64)
    g0 = torch.Generator().manual_seed(7)
    init = {"x": torch.randn(2, 3, generator=g0, dtype=D64), "w": 0.3 * torch.randn(4, generator=g0, dtype=D64)}
    lr, T = 0.03, 60

    def sample(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return H, a, 0.1 * torch.randn(6, generator=g, dtype=D64)

    res = minimise(_noisy, init, generator=torch.Generator().manual_seed(3), data=sample, steps=T, lr=lr,
                   optimizer=optimizer, schedule="cosine", **kw)
    ps = {k: v.clone().requires_grad_() for k, v in init.items()}
    opt = torch_opt(list(ps.values()), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T)
    g = torch.Generator().manual_seed(3)
    ref_loss = []
    for _ in range(T):
        loss = _noisy(ps, sample(g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ref_loss.append(loss.detach())
    moved = max(float((ps[k].detach() - init[k]).abs().max()) for k in init)
    assert moved > 0.1  # the comparison is not between two resting points
    for k in init:
        torch.testing.assert_close(res.params[k], ps[k].detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(res.loss, torch.stack(ref_loss), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------ (c) held fixed
def test_held_fixed_entries_keep_their_values_and_free_ones_follow_the_restricted_iterate() -> None:
    H, a = _spd(6, 2), torch.linspace(-1, 2, 6, dtype=D64)
    x0 = torch.tensor([[0.7, -1.3, 2.0], [0.5, 0.0, -0.4]], dtype=D64)
    free = torch.tensor([[True, False, True], [False, True, True]])
    lr, T = 0.04, 30
    for optimizer, kw in (("sgd", {}), ("adamw", dict(weight_decay=0.5)), ("adam", dict(weight_decay=0.5))):
        res = minimise(_quadratic, {"x": x0}, generator=torch.Generator().manual_seed(0), data=(H, a), steps=T,
                       lr=lr, optimizer=optimizer, free={"x": free}, **kw)
        assert torch.equal(res.params["x"][~free], x0[~free]), optimizer  # exactly, weight decay notwithstanding
        assert float((res.params["x"][free] - x0[free]).abs().min()) > 1e-3, optimizer
        if optimizer == "sgd":
            F, X = free.reshape(-1), ~free.reshape(-1)
            HFF, HFX = H[F][:, F], H[F][:, X]
            xX = x0.reshape(-1)[X]
            star = a[F] - torch.linalg.solve(HFF, HFX @ (xX - a[X]))
            A = torch.eye(int(F.sum()), dtype=D64) - lr * HFF
            want = star + torch.linalg.matrix_power(A, T) @ (x0.reshape(-1)[F] - star)
            torch.testing.assert_close(res.params["x"].reshape(-1)[F], want, rtol=0, atol=1e-13)


# ------------------------------------------------------------------------------------ (d) L-BFGS
def test_lbfgs_polish_reaches_the_minimiser() -> None:
    H, a = _spd(6, 3, cond=100.0), torch.linspace(-2, 1, 6, dtype=D64)
    x0 = torch.zeros(2, 3, dtype=D64)
    for steps in (0, 5):
        res = minimise(_quadratic, {"x": x0}, generator=torch.Generator().manual_seed(0), data=(H, a), steps=steps,
                       lr=0.01, optimizer="adam", polish_iters=100, polish_data=lambda g: (H, a),
                       polish_tolerance_change=0.0)
        torch.testing.assert_close(res.params["x"].reshape(-1), a, rtol=0, atol=1e-10)
        r = res.params["x"].reshape(-1) - a
        assert res.polish_loss == pytest.approx(float(0.5 * r @ H @ r), rel=1e-12, abs=1e-30)
        assert res.polish_loss < 0.5 * 100 * 6e-20  # largest eigenvalue × |x - a|^2 at 1e-10 per entry
        assert res.loss.shape == (steps,)


def test_lbfgs_polish_on_a_free_subset() -> None:
    H, a = _spd(6, 4, cond=50.0), torch.linspace(-2, 1, 6, dtype=D64)
    x0 = torch.full((2, 3), 0.25, dtype=D64)
    free = torch.tensor([[True, True, False], [True, False, True]])
    res = minimise(_quadratic, {"x": x0}, generator=torch.Generator().manual_seed(0), polish_iters=100,
                   polish_data=(H, a), free={"x": free}, polish_tolerance_change=0.0)
    F, X = free.reshape(-1), ~free.reshape(-1)
    star = a[F] - torch.linalg.solve(H[F][:, F], H[F][:, X] @ (x0.reshape(-1)[X] - a[X]))
    # The restricted minimum value is 4.43, not 0: f resolves x only to about sqrt(eps * f / lambda_min(H_FF))
    # = 3e-8 (lambda_min >= 1), the limit of the line search's function values.
    torch.testing.assert_close(res.params["x"].reshape(-1)[F], star, rtol=0, atol=3e-8)
    assert float((res.params["x"].reshape(-1)[F] - x0.reshape(-1)[F]).abs().min()) > 0.1
    assert torch.equal(res.params["x"][~free], x0[~free])


# ------------------------------------------------------------------------------------ divergence
def test_divergence_stops_at_the_last_finite_point() -> None:
    H, a = _spd(6, 5), torch.zeros(6, dtype=D64)
    x0 = torch.ones(2, 3, dtype=D64)
    seen: list[torch.Tensor] = []
    res = minimise(_quadratic, {"x": x0}, generator=torch.Generator().manual_seed(0), data=(H, a), steps=500,
                   lr=1e40, optimizer="sgd", record=lambda t, p: seen.append(p["x"]))
    assert res.diverged_step is not None and 0 < res.diverged_step < 500
    assert res.steps == res.diverged_step and res.loss.shape == (res.diverged_step + 1,)
    assert bool(torch.isfinite(res.params["x"]).all())
    assert torch.equal(res.params["x"], seen[-1])  # the point before the non-finite step
    assert not bool(torch.isfinite(res.loss[-1]))


# ------------------------------------------------------------------------------------ (e) bad input
def _base() -> dict:
    return dict(objective=_quadratic, params={"x": torch.zeros(2, 3, dtype=D64)},
                generator=torch.Generator().manual_seed(0), data=(torch.eye(6, dtype=D64), torch.zeros(6, dtype=D64)),
                steps=3, lr=0.1)


@pytest.mark.parametrize("change, exc, match", [
    (dict(objective=3), TypeError, "objective must be a callable"),
    (dict(steps=-1), ValueError, "steps"),
    (dict(optimizer="lion"), ValueError, "adam"),
    (dict(schedule="step"), ValueError, "cosine"),
    (dict(lr=-0.1), ValueError, "lr"),
    (dict(lr=(0.1, 0.2)), ValueError, "one number"),
    (dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    (dict(momentum=0.9), ValueError, "momentum applies to optimizer 'sgd' only"),
    (dict(free={"y": torch.ones(2, 3, dtype=torch.bool)}), ValueError, r"free must map exactly the keys of params \['x'\]"),
    (dict(free={"x": torch.ones(3, 2, dtype=torch.bool)}), ValueError, r"free\['x'\] must be a bool tensor of shape \(2, 3\)"),
    (dict(free={"x": torch.ones(2, 3)}), ValueError, "bool tensor"),
    (dict(free={"x": torch.zeros(2, 3, dtype=torch.bool)}), ValueError, "at least one entry must be free"),
    (dict(params={"x": torch.zeros(2, 3, dtype=torch.int64)}), TypeError, "floating tensors"),
    (dict(params={}), TypeError, "non-empty dict"),
    (dict(params={"x": torch.zeros(6, dtype=D64), "y": torch.zeros(1)}), ValueError, "one dtype and device"),
    (dict(generator=0), TypeError, "torch.Generator"),
    (dict(data=None), ValueError, "data is required"),
    (dict(polish_iters=5), ValueError, "polish_data is required"),
    (dict(record_every=0), ValueError, "record_every"),
    (dict(objective=lambda p, b: p["x"]), TypeError, r"0-d floating tensor, got a tensor of shape \(2, 3\)"),
])
def test_bad_input_is_one_line(change: dict, exc: type, match: str) -> None:
    kw = _base()
    kw.update(change)
    with pytest.raises(exc, match=match) as info:
        minimise(kw.pop("objective"), kw.pop("params"), **kw)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ (f) determinism
def test_same_generator_seed_gives_bit_identical_results() -> None:
    H, a = _spd(6, 6), torch.zeros(6, dtype=D64)
    init = {"x": torch.ones(2, 3, dtype=D64), "w": torch.full((4,), 0.2, dtype=D64)}

    def sample(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return H, a, torch.randn(6, generator=g, dtype=D64)

    def run(seed: int) -> MinimiseResult:
        return minimise(_noisy, init, generator=torch.Generator().manual_seed(seed), data=sample, steps=25, lr=0.05,
                        clip=1.0, schedule="linear", warmup=5, polish_iters=10, polish_data=sample)

    r1, r2, r3 = run(11), run(11), run(12)
    assert all(torch.equal(r1.params[k], r2.params[k]) for k in init)
    assert torch.equal(r1.loss, r2.loss) and r1.polish_loss == r2.polish_loss
    assert not torch.equal(r1.params["x"], r3.params["x"])  # the seed does reach the result


# ------------------------------------------------------------------------------------ the studies on it
def test_huang2023_train_gd_is_plain_gd_on_the_w_integrated_loss() -> None:
    """train_gd (through minimise) equals GD written out here, bit for bit."""
    from analysis import huang2023 as hu
    from landscape.core.tasks import OrthonormalFeatures

    task = OrthonormalFeatures(3, 8, (0.6, 0.2, 0.2), dtype=D64)
    steps, lr, batch = 15, 2.0, 32
    traj = hu.train_gd(task, steps=steps, lr=lr, batch=batch, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    Q = torch.zeros(3, 3, dtype=D64)
    f = lambda Qm, X: hu.w_integrated_loss(Qm, X).mean()  # noqa: E731
    losses = []
    for _ in range(steps):
        X = task.sample(batch, g).X
        losses.append(f(Q, X))
        Q = Q - lr * torch.func.grad(f)(Q, X)
    assert torch.equal(traj.Q, Q) and torch.equal(traj.train_loss, torch.stack(losses))
    assert float(Q.abs().max()) > 0.1


def test_zhangcao2026_adam_phase_equals_torch_optim_adam_with_cosine_annealing() -> None:
    """train_one_step_layer's Adam phase (through minimise) against torch.optim.Adam + CosineAnnealingLR."""
    from analysis import zhangcao2026 as zc
    from landscape.core.tasks import LinearClassification

    task = LinearClassification(3, 8, margin=0.1, dtype=D64)
    steps, lr, batch = 20, 0.1, 64
    layer = zc.train_one_step_layer(task, eta=1.0, c=1.0, generator=torch.Generator().manual_seed(5), adam_steps=steps,
                                    adam_lr=lr, batch=batch, lbfgs_iters=0)
    g = torch.Generator().manual_seed(5)
    spec = zc.layer_spec(3)
    blocks = {k: v.requires_grad_() for k, v in zc.init_blocks(3, g, std=0.1, dtype=D64).items()}
    opt = torch.optim.Adam(list(blocks.values()), lr=lr, foreach=False)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    hist = []
    for _ in range(steps):
        Z, w0, tgt = zc._sample_states(task, batch, g, 1.0, 1.0, 3.0)
        loss = zc._relative_mse(blocks, spec, Z, w0, tgt, task.n)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        hist.append(float(loss.detach()))
    for k in blocks:
        torch.testing.assert_close(layer.blocks[k], blocks[k].detach(), rtol=0, atol=1e-13)
    torch.testing.assert_close(layer.history, torch.tensor(hist, dtype=D64), rtol=1e-13, atol=0)
