"""Tests of landscape/experiment/train.py and the ``landscape train`` command.

References: landscape.core.model.predict seed by seed (for the fused stacked forward); torch.optim
Adam/AdamW/SGD and clip_grad_norm_ on one nn.Parameter set per seed (for the stacked optimizer);
the vmap engine (for the stacked engine); a manual loop over the public pieces (for train());
closed-form schedules; Ahn et al. (2023) Theorem 1/3 and the exact Wishart family loss of
landscape.symbolic (for what training converges to).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import sqlite3
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import sympy
import torch

from landscape.tolerances import ALGORITHM_RTOL
from landscape.core.model import ModelSpec, flatten_params, init_params, predict, unflatten_params
from landscape.experiment.store import RunStore
from landscape.experiment.train import (
    TrainConfig,
    init_state,
    lr_factor,
    make_generator,
    make_step,
    make_task,
    sample_batch,
    stacked_predict,
    train,
    train_mask,
)

F64 = torch.float64
TINY = dict(d=3, n=6, seeds=3, steps=12, batch=16, eval_batch=64, dtype="float64", device="cpu",
            log_every=4, checkpoint_every=0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- fused forward
SPECS = [
    ModelSpec.linear(3, 1),
    ModelSpec.linear(3, 3),
    ModelSpec.linear(3, 2, heads=2),
    ModelSpec.kernel(3, 1, ["exp"]),
    ModelSpec.kernel(3, 3, ["softmax"]),
    ModelSpec.kernel(3, 2, ["relu"]),
    ModelSpec.kernel(3, 2, ["exp", "linear"]),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
@pytest.mark.parametrize("shared", [False, True], ids=["per-seed-prompts", "shared-prompts"])
def test_stacked_predict_equals_model_predict(spec: ModelSpec, shared: bool) -> None:
    S, B, n = 4, 5, 7
    g = _gen(0)
    params = init_params(spec, g, std=0.3, seeds=S, dtype=F64)
    shape = (B, spec.token_dim, n + 1) if shared else (S, B, spec.token_dim, n + 1)
    Z = 0.7 * torch.randn(shape, generator=g, dtype=F64)
    Z[..., -1, -1] = 0.0
    out = stacked_predict(params, spec, Z)
    assert out.shape == (S, B)
    for i in range(S):
        ref = predict({k: v[i] for k, v in params.items()}, spec, Z if shared else Z[i])
        scale = float(ref.abs().max())
        assert 1e-3 < scale < 1e3
        assert torch.allclose(out[i], ref, rtol=ALGORITHM_RTOL, atol=ALGORITHM_RTOL * scale)


# ---------------------------------------------------------------------- one step vs torch.optim per seed
OPTS = [
    dict(optimizer="adam"),
    dict(optimizer="adam", weight_decay=0.1, clip=0.5),
    dict(optimizer="adamw", weight_decay=0.3, betas=(0.8, 0.99)),
    dict(optimizer="sgd", momentum=0.9, weight_decay=0.05),
    dict(optimizer="sgd", clip=0.2),
]


def _torch_opt(cfg: TrainConfig, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@pytest.mark.parametrize("opt", OPTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_stack_equals_each_seed_trained_alone_with_torch_optim(opt: dict) -> None:
    """S seeds in one stack = S separate nn.Parameter sets, each with its own torch.optim
    optimizer and its own slice of the prompt stream (float64 round-off)."""
    lrs = (0.05, 0.02, 0.08) if opt["optimizer"] != "sgd" else (0.01, 0.004, 0.016)
    cfg = TrainConfig(**{**TINY, "lr": lrs, "layers": 2, "attention": "linear", **opt})
    state = init_state(cfg)
    step = make_step(cfg)
    task = make_task(cfg)
    gen = make_generator(cfg, "data")
    batches = [sample_batch(task, cfg, gen) for _ in range(6)]
    flat, optst, alive, dstep = state.flat, state.opt, state.alive, state.diverged_step
    for t, (Z, y) in enumerate(batches):
        flat, optst, alive, dstep, loss, gnorm = step(flat, optst, alive, dstep, t, Z, y, cfg.lr_vector())
    spec = cfg.spec
    for i in range(cfg.seeds):
        ps = {k: torch.nn.Parameter(v[i].clone()) for k, v in state.params.items()}
        o = _torch_opt(cfg, list(ps.values()), lrs[i])
        for Z, y in batches:
            o.zero_grad()
            loss_i = ((predict(ps, spec, Z[i]) - y[i]) ** 2).mean()
            loss_i.backward()
            if cfg.clip is not None:
                torch.nn.utils.clip_grad_norm_(list(ps.values()), cfg.clip)
            o.step()
        ref = flatten_params({k: v.detach() for k, v in ps.items()}, spec)
        assert torch.allclose(flat[i], ref, rtol=1e-10, atol=1e-13), (i, (flat[i] - ref).abs().max())
        assert float((ref - state.flat[i]).abs().max()) > 1e-3  # it did move
    assert bool(alive.all()) and bool((dstep == -1).all())


def test_vmap_engine_equals_stacked_engine() -> None:
    base = dict(TINY, attention="kernel", activations=("exp", "softmax"), layers=2, steps=8, lr=0.03)
    a = train(TrainConfig(**base, engine="stacked"), progress=False)
    b = train(TrainConfig(**base, engine="vmap"), progress=False)
    for k in a.params:
        assert torch.allclose(a.params[k], b.params[k], rtol=1e-10, atol=1e-13)
    assert torch.allclose(a.final_loss, b.final_loss, rtol=1e-10, atol=0)


def test_train_equals_manual_loop_over_public_pieces() -> None:
    """train() = init_state + make_step + sample_batch every `resample_every` steps + lr_factor."""
    cfg = TrainConfig(**{**TINY, "steps": 10, "resample_every": 3, "schedule": "cosine", "warmup": 2,
                         "mask": "paper", "attention": "kernel", "activations": ("relu",), "lr": 0.05})
    res = train(cfg, progress=False)
    state, step, task = init_state(cfg), make_step(cfg), make_task(cfg)
    gen = make_generator(cfg, "data")
    flat, o, alive, dstep = state.flat, state.opt, state.alive, state.diverged_step
    for t in range(cfg.steps):
        if t % 3 == 0:
            Z, y = sample_batch(task, cfg, gen)
        flat, o, alive, dstep, loss, _ = step(flat, o, alive, dstep, t, Z, y, cfg.lr_vector() * lr_factor(cfg, t))
    ref = unflatten_params(flat, cfg.spec)
    for k in ref:
        assert torch.equal(res.params[k], ref[k])
    assert torch.equal(res.train_loss, loss)
    ev = task.sample(cfg.eval_batch, make_generator(cfg, "eval"))
    per = torch.stack([((predict({k: v[i] for k, v in ref.items()}, cfg.spec, ev.Z) - ev.target) ** 2).mean()
                       for i in range(cfg.seeds)])
    assert torch.allclose(res.final_loss, per, rtol=1e-12, atol=0)


def test_same_config_same_numbers_float32() -> None:
    cfg = TrainConfig(**{**TINY, "dtype": "float32", "steps": 6})
    a, b = train(cfg, progress=False), train(cfg, progress=False)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])
    c = train(dataclasses.replace(cfg, seed=1), progress=False)
    assert not torch.equal(a.params["layer0.head0.Q"], c.params["layer0.head0.Q"])


def test_each_seed_sees_its_own_prompts() -> None:
    cfg = TrainConfig(**TINY)
    Z, y = sample_batch(make_task(cfg), cfg, make_generator(cfg, "data"))
    assert Z.shape == (3, 16, 4, 7) and y.shape == (3, 16)
    assert not torch.equal(Z[0], Z[1])
    # the rows of one S*B draw, in order
    ref = make_task(cfg).sample(48, make_generator(cfg, "data"))
    assert torch.equal(Z[1], ref.Z[16:32])


# ---------------------------------------------------------------------- masks, schedules
def test_masked_entries_stay_zero() -> None:
    cfg = TrainConfig(**{**TINY, "mask": "sparse", "lr": 0.05})
    res = train(cfg, progress=False)
    free = train_mask(cfg.spec, "sparse")
    for k, v in res.params.items():
        assert bool((v[:, ~free[k]] == 0).all())
        assert bool((v[:, free[k]] != 0).all())
    # sparse = Ahn Thm 3 form: P = diag(0, p), Q = diag(A, 0)
    assert int(free["layer0.head0.P"].sum()) == 1 and bool(free["layer0.head0.P"][3, 3])
    assert int(free["layer0.head0.Q"].sum()) == 9 and not bool(free["layer0.head0.Q"][3].any())


def test_lr_schedules_closed_form() -> None:
    cfg = TrainConfig(**{**TINY, "steps": 10, "warmup": 2, "schedule": "cosine"})
    assert lr_factor(cfg, 0) == 0.5 and lr_factor(cfg, 1) == 1.0
    assert abs(lr_factor(cfg, 6) - 0.5) < 1e-15  # u = 4/8
    assert abs(lr_factor(cfg, 4) - 0.5 * (1 + math.cos(math.pi / 4))) < 1e-15
    lin = dataclasses.replace(cfg, schedule="linear")
    assert abs(lr_factor(lin, 8) - 0.25) < 1e-15
    assert lr_factor(dataclasses.replace(cfg, schedule="constant"), 9) == 1.0


# ---------------------------------------------------------------------- divergence
def test_diverging_seed_is_frozen_and_marked_others_continue() -> None:
    base = dict(TINY, optimizer="sgd", steps=30, log_every=100)
    snaps: dict[int, torch.Tensor] = {0: init_state(TrainConfig(**base, lr=0.05)).flat}
    res = train(TrainConfig(**base, lr=(0.05, 1e5, 0.05)), progress=False,
                callback=lambda s, st: snaps.__setitem__(s, st.flat))
    ok = train(TrainConfig(**base, lr=0.05), progress=False)
    assert res.diverged.tolist() == [False, True, False]
    t = int(res.diverged_step[1])
    assert 0 <= t < 30 and res.diverged_step[[0, 2]].tolist() == [-1, -1]
    flat = flatten_params(res.params, res.config.spec)
    assert bool(torch.isfinite(flat).all())
    assert torch.equal(flat[1], snaps[t][1])  # frozen at its last finite weights ...
    assert torch.equal(snaps[30][1], snaps[t + 1][1])  # ... and never updated again
    ok_flat = flatten_params(ok.params, ok.config.spec)
    for i in (0, 2):  # the other seeds trained exactly as without the diverging one
        assert torch.allclose(flat[i], ok_flat[i], rtol=1e-12, atol=0)
    assert bool(torch.isfinite(res.final_loss[[0, 2]]).all())


def test_injected_nan_freezes_only_that_seed() -> None:
    cfg = TrainConfig(**TINY)
    state, step = init_state(cfg), make_step(cfg)
    Z, y = sample_batch(make_task(cfg), cfg, make_generator(cfg, "data"))
    Zbad = Z.clone()
    Zbad[2, 0, 0, 0] = math.nan
    flat, opt, alive, dstep, loss, _ = step(state.flat, state.opt, state.alive, state.diverged_step, 7, Zbad, y,
                                            cfg.lr_vector())
    assert alive.tolist() == [True, True, False] and dstep.tolist() == [-1, -1, 7]
    assert torch.isnan(loss[2])
    assert torch.equal(flat[2], state.flat[2]) and torch.equal(opt["m"][2], state.opt["m"][2])
    assert not torch.equal(flat[0], state.flat[0])
    # a frozen seed stays frozen on clean data
    flat2, _, alive2, dstep2, _, _ = step(flat, opt, alive, dstep, 8, Z, y, cfg.lr_vector())
    assert alive2.tolist() == [True, True, False] and dstep2[2] == 7 and torch.equal(flat2[2], flat[2])


# ---------------------------------------------------------------------- config validation
BAD = [
    (dict(attention="kernel", activations=("foo",)), ValueError, "unknown activation"),
    (dict(family="nope"), ValueError, "unknown family"),
    (dict(steps=-1), ValueError, "steps must be an int >= 0"),
    (dict(sigma="/no/such/sigma.pt"), ValueError, "no such file exists"),
    (dict(lr=(0.1, 0.2)), ValueError, "per-seed values but seeds = 3"),
    (dict(family="fgd"), ValueError, "needs kernel attention"),
    (dict(task="gp:softmax"), ValueError, "not a data kernel"),
    (dict(task="regression"), ValueError, "task must be one of"),
    (dict(dtype="float16"), ValueError, "dtype must be one of"),
    (dict(device="tpu"), ValueError, "unknown device|unsupported device"),
    (dict(family="/no/such/fam.py:f"), ValueError, "does not exist"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer must be one of"),
    (dict(mask="dense"), ValueError, "mask must be one of"),
    (dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be in \[0, 1\)"),
    (dict(momentum=0.9), ValueError, "momentum applies to optimizer 'sgd'"),
    (dict(task_cov="inverse", task="gp:exp", attention="kernel"), ValueError, "linear task only"),
    (dict(sigma="diag:1,2"), ValueError, "expected d = 3"),
    (dict(batch=0), ValueError, "batch must be an int >= 1"),
    (dict(seeds=2.0), TypeError, "seeds must be an int"),
]


@pytest.mark.parametrize("kw,exc,match", BAD, ids=[m for _, _, m in BAD])
def test_bad_config_raises_clear_error(kw: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        TrainConfig(**{**TINY, **kw})


def test_sigma_specs_resolve() -> None:
    from landscape.core.tasks import random_covariance

    cfg = TrainConfig(**{**TINY, "sigma": "random:4"})
    assert torch.equal(cfg.sigma_matrix(), random_covariance(3, _gen(4)))
    # without an explicit SEED the rotation follows the run seed (one covariance per run)
    assert torch.equal(TrainConfig(**{**TINY, "sigma": "random", "seed": 7}).sigma_matrix(),
                       random_covariance(3, _gen(7)))
    rot = TrainConfig(**{**TINY, "sigma": "diag:1,2,3", "seed": 5}).sigma_matrix()
    assert torch.allclose(torch.linalg.eigvalsh(rot), torch.tensor([1.0, 2.0, 3.0], dtype=F64), rtol=1e-12)
    assert torch.equal(TrainConfig(**{**TINY, "sigma": ((2.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 3.0))})
                       .sigma_matrix(), torch.diag(torch.tensor([2.0, 1.0, 3.0], dtype=F64)))
    assert TrainConfig(**TINY).sigma_matrix() is None


def test_sigma_file_is_identified_by_content(tmp_path: Path) -> None:
    f = tmp_path / "sigma.txt"
    f.write_text("2 0 0\n0 1 0\n0 0 0.5\n")
    a = TrainConfig(**{**TINY, "sigma": str(f)})
    assert torch.equal(a.sigma_matrix(), torch.diag(torch.tensor([2.0, 1.0, 0.5], dtype=F64)))
    d = a.to_dict()
    assert d["sigma"] == [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]]
    assert TrainConfig.from_dict(d).to_dict() == d  # reloadable without the file
    f.write_text("3 0 0\n0 1 0\n0 0 0.5\n")
    assert a.to_dict()["sigma"][0][0] == 3.0  # a new run when the file changes
    f.write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match="shape"):
        TrainConfig(**{**TINY, "sigma": str(f)})


def test_config_round_trips_through_dict() -> None:
    cfg = TrainConfig(**{**TINY, "lr": (0.1, 0.2, 0.3), "sigma": "random:2", "family": "pgd", "mask": "sparse"})
    d = json.loads(json.dumps(cfg.to_dict()))
    back = TrainConfig.from_dict({**d, "device": "cpu"})
    assert back == cfg
    assert "device" not in d


def test_cli_config_of_linear_attention_hashes_like_the_python_config() -> None:
    """Linear attention has no activation: the CLI and the Python API must name the same run."""
    import argparse

    from landscape.cli.train import add_parser, config_from_args
    from landscape.experiment.store import config_hash

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--family", "pgd", "--d", "3", "--n", "5", "--layers", "2",
                              "--seeds", "2", "--steps", "3", "--batch", "4"])
    cli = config_from_args(args)
    py = TrainConfig(**{**dataclasses.asdict(cli), "activations": ("exp", "relu")})
    assert cli.attention == "linear" and cli.activations == py.activations == ("linear",)
    assert config_hash(cli.to_dict()) == config_hash(py.to_dict())


def test_store_name_holding_another_config_fails_before_training(tmp_path: Path) -> None:
    root = tmp_path / "store"
    train(TrainConfig(**{**TINY, "steps": 2}), root, name="exp1", progress=False)
    calls: list[int] = []
    with pytest.raises(ValueError, match="holds another config"):
        train(TrainConfig(**{**TINY, "steps": 3}), root, name="exp1", progress=False,
              callback=lambda s, st: calls.append(s))
    assert calls == []
    with RunStore(root) as s:
        assert [r.name for r in s.list_runs()] == ["exp1"]
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        train(TrainConfig(**TINY), not_a_dir, progress=False)


# ---------------------------------------------------------------------- store integration
def test_store_metrics_results_and_finished_run_reuse(tmp_path: Path) -> None:
    cfg = TrainConfig(**{**TINY, "steps": 10, "log_every": 5, "family": "pgd", "sigma": "random:1",
                         "task_cov": "inverse", "layers": 2})
    res = train(cfg, tmp_path, progress=False)
    with RunStore(tmp_path) as s:
        run = s.get_run(res.run_name)
        assert run.status == "finished"
        m = s.metrics(run)
        assert m["loss"].steps.tolist() == [0, 5]
        assert m["eval_loss"].steps.tolist() == [0, 5, 10]
        assert m["family_distance"].seeds.tolist() == [0, 1, 2]
        for key in ("grad_norm", "lr", "diverged", "family.a0", "family.a1",
                    "dist_identity.layer1.head0", "dist_identity_whitened.layer0.head0"):
            assert key in m
        assert torch.allclose(torch.as_tensor(m["eval_loss"].values[-1]), res.final_loss, rtol=0, atol=0)
        assert torch.allclose(torch.as_tensor(m["family_distance"].values[-1]), res.family_distance, rtol=0, atol=0)
        assert s.results(run)["final_loss"] == res.final_loss.tolist()
        final = s.load_final(run)
        for k in res.params:
            assert torch.equal(final["params"][k], res.params[k])
    con = sqlite3.connect(tmp_path / "store.sqlite")
    total, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT run_id || key || step || ':' || seed) "
                                  "FROM metrics").fetchone()
    con.close()
    assert total == distinct
    calls: list[int] = []
    again = train(cfg, tmp_path, progress=False, callback=lambda s, st: calls.append(s))
    assert calls == [] and again.resumed_from == cfg.steps
    for k in res.params:
        assert torch.equal(again.params[k], res.params[k])
    assert torch.equal(again.final_loss, res.final_loss)
    assert torch.equal(again.family_distance, res.family_distance)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_follows_the_device() -> None:
    res = train(TrainConfig(**{**TINY, "device": "cuda"}), progress=False)
    assert all(v.is_cuda for v in res.params.values()) and res.final_loss.is_cuda


# ---------------------------------------------------------------------- CLI
def _cli(argv: list[str]) -> tuple[int, str]:
    from landscape.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def test_cli_json_last_line_has_per_seed_losses_and_distances(tmp_path: Path) -> None:
    argv = ["train", "--data", "linear", "--sigma", "random:0", "--family", "pgd", "--d", "3", "--n", "6",
            "--layers", "2", "--seeds", "2", "--steps", "6", "--batch", "8", "--eval-batch", "32",
            "--lr", "0.05", "--mask", "sparse", "--dtype", "float64", "--device", "cpu", "--out", str(tmp_path), "--json"]
    rc, out = _cli(argv)
    assert rc == 0
    obj = json.loads(out.strip().splitlines()[-1])
    assert len(obj["final_loss"]) == 2 and len(obj["family_distance"]) == 2
    assert set(obj["family_values"]) == {"a0", "a1"}
    assert obj["resumed_from"] is None
    with RunStore(tmp_path) as s:
        cfg = TrainConfig.from_dict({**s.get_run(obj["run"]).config, "device": "cpu"})
    assert cfg.task_cov == "inverse" and cfg.attention == "linear"  # inferred from the pgd family
    rc, out = _cli(argv)
    again = json.loads(out.strip().splitlines()[-1])
    assert again["resumed_from"] == 6 and again["final_loss"] == obj["final_loss"]


def test_cli_table_and_errors() -> None:
    rc, out = _cli(["train", "--activation", "exp", "--data", "gp:exp", "--d", "2", "--n", "4", "--seeds", "2",
                    "--steps", "3", "--batch", "4", "--eval-batch", "16", "--device", "cpu", "--no-progress"])
    assert rc == 0 and "kernel[exp]" in out and len(out.strip().splitlines()) == 5
    assert out.splitlines()[1] == "task: gp (kernel exp); prior none (GP labels); Σ = identity, covariates sphere, noise 0"
    rc, out = _cli(["train", "--activation", "nope", "--json"])
    assert rc == 2 and "unknown activation" in json.loads(out.strip().splitlines()[-1])["error"]
    rc, out = _cli(["train", "--attention", "linear", "--activation", "exp", "--json"])
    assert rc == 2 and "--activation applies to kernel attention" in out


# ---------------------------------------------------------------------- what training finds
def _exact_pgd_minimiser(L: int, n: int, d: int) -> tuple[list[float], float]:
    """Minimiser of the exact family loss E tr prod_l (I - a_l S)^2 (Ahn et al. Thm 3, whitened)."""
    from scipy.optimize import minimize

    from landscape.symbolic import preconditioned_gd_loss

    a = sympy.symbols(f"a0:{L}")
    f = preconditioned_gd_loss(list(a), n, d)
    fn = sympy.lambdify([a], f)
    gr = sympy.lambdify([a], [sympy.diff(f, x) for x in a])
    best = None
    for x0 in ([0.5] * L, [0.3 + 0.9 * i / max(L - 1, 1) for i in range(L)]):
        r = minimize(lambda x: float(fn(x)), x0, jac=lambda x: [float(v) for v in gr(x)], method="BFGS", tol=1e-12)
        if best is None or r.fun < best.fun:
            best = r
    return sorted(float(x) for x in best.x), float(best.fun)


@pytest.mark.slow
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_ahn_theorem3_training_finds_the_whitened_preconditioner(layers: int) -> None:
    """Ahn et al. 2023, Thm 3 setting: d = 5, n = 20, Sigma = U^T diag(1, 1, 1/4, 1/16, 1) U,
    w* ~ N(0, Sigma^{-1}), linear attention with the sparse mask of Thm 3 (P = diag(0, p),
    Q = diag(A, 0)). Trained weights must whiten to a multiple of the identity while the raw A_l
    stay far from it, and the fitted step sizes must approach the exact family minimiser
    (a* = n/(n+d+1) for L = 1; the minimiser of the exact Wishart loss for L = 2, 3). Three layers
    need a longer, quieter run: the loss is flat along the valley of step-size permutations."""
    steps, batch, lr = (1500, 128, 0.1) if layers < 3 else (8000, 256, 0.05)
    cfg = TrainConfig(task="linear", d=5, n=20, sigma="random:0", task_cov="inverse", attention="linear",
                      layers=layers, family="pgd", mask="sparse", seeds=3, steps=steps, batch=batch, lr=lr,
                      schedule="cosine", dtype="float32", device="cpu", log_every=10**6, eval_batch=4096)
    res = train(cfg, progress=False)
    assert not bool(res.diverged.any())
    white, raw = res.identity_distance_whitened, res.identity_distance
    assert float(raw.min()) > 0.7  # Dist(Sigma^{-1}, I) = 0.784 for Ahn's spectrum
    assert float(white.max()) < 0.06 and bool((white < 0.1 * raw).all())
    assert float(res.family_distance.max()) < 0.03
    a_star, f_star = _exact_pgd_minimiser(layers, 20, 5)
    if layers == 1:
        assert abs(a_star[0] - 20 / 26) < 1e-9  # Theorem 1 (whitened): a* = n/(n+d+1)
    fitted = torch.stack([res.family_values[f"a{l}"] for l in range(layers)], -1).sort(-1).values
    rel = (fitted - torch.tensor(a_star, dtype=F64)).abs() / torch.tensor(a_star, dtype=F64)
    assert float(rel.max()) < (0.03 if layers == 1 else 0.07), fitted
    # held-out loss within Monte-Carlo error of the exact minimum (4096 prompts: ~3% relative)
    assert float((res.final_loss / f_star - 1).abs().max()) < 0.06
