"""Tests of the training engines: the chunked stacked gradient and the fused CPU kernel.

References: the unchunked stacked gradient (one autograd pass over the whole batch) for the
chunked one; ``torch.func.grad`` of the loss of :func:`landscape.core.model.forward`, the one reference
forward pass, for every engine; repeated runs for bit-reproducibility.
"""

from __future__ import annotations

import torch

from limits import HANG_GUARD_S
from landscape.core.model import forward, init_params, unflatten_params, flatten_params
from landscape.experiment.train import (
    TrainConfig,
    init_state,
    make_generator,
    make_step,
    make_task,
    resolve_chunk,
    sample_batch,
    stacked_grad,
    train,
)

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


# ---------------------------------------------------------------------- the fused kernel
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from landscape.tolerances import RTOL  # noqa: E402
import landscape.engine.fused as fused  # noqa: E402
from landscape.experiment.train import resolve_engine  # noqa: E402

needs_numba = pytest.mark.skipif(not fused.available(), reason="numba not installed")

ACTS = ["linear", "relu", "exp", "exp:0.5", "softmax"]


def _cfg(attention: str, acts: tuple[str, ...], heads: int, d: int, n: int, L: int, S: int, B: int,
         dtype: str = "float64", mask: str = "full") -> TrainConfig:
    if attention == "linear":
        return TrainConfig(d=d, n=n, attention="linear", heads=heads, layers=L, seeds=S, batch=B, dtype=dtype,
                           device="cpu", mask=mask)
    return TrainConfig(d=d, n=n, attention="kernel", activations=acts, layers=L, seeds=S, batch=B, dtype=dtype,
                       device="cpu", mask=mask)


def test_block_size_constants_agree() -> None:
    if fused.available():
        import landscape.engine._kernel as _kernel

        assert _kernel.BL == fused.BLOCK


@needs_numba
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(attention=st.sampled_from(["linear", "kernel"]),
       acts=st.lists(st.sampled_from(ACTS), min_size=1, max_size=3).map(tuple),
       heads=st.integers(1, 3), d=st.integers(1, 4), n=st.integers(1, 9), L=st.integers(1, 3),
       B=st.integers(1, 140), mask=st.sampled_from(["full", "sparse"]))
def test_fused_gradient_equals_reference_and_torch_engine_float64(attention, acts, heads, d, n, L, B, mask) -> None:
    """Fused loss and gradient = torch.func.grad of model.forward's loss = the stacked engine
    (float64, 1e-10 relative), over a grid of d, n, L, heads, activations, batch sizes (partial
    16-prompt blocks included) and masks."""
    cfg = _cfg(attention, acts, heads, d, n, L, 2, B, mask=mask)
    flat, Z, y = _batch(cfg)
    g, loss = fused.fused_grad(flat, cfg.spec, Z, y)
    g_ref, l_ref = _reference_grad(flat, cfg.spec, Z, y)
    g_st, l_st = stacked_grad(flat, cfg.spec, Z, y, B)
    assert torch.isfinite(g_ref).all()
    assert _rel(loss, l_ref) < RTOL[F64]
    assert _rel(g, g_ref) < RTOL[F64], (_rel(g, g_ref), cfg.spec.describe())
    assert _rel(g_st, g_ref) < RTOL[F64]


@needs_numba
@pytest.mark.parametrize("acts", [("relu",), ("softmax", "linear"), ("exp:0.5",)])
def test_fused_gradient_equals_torch_engine_float32(acts: tuple[str, ...]) -> None:
    """float32: fused = stacked engine to float32 round-off (both against the float64 reference)."""
    cfg32 = _cfg("kernel", acts, 1, 5, 20, 3, 3, 100, dtype="float32")
    cfg64 = _cfg("kernel", acts, 1, 5, 20, 3, 3, 100, dtype="float64")
    flat, Z, y = _batch(cfg64)
    g64, l64 = _reference_grad(flat, cfg64.spec, Z, y)
    g, l = fused.fused_grad(flat.float(), cfg32.spec, Z.float(), y.float())
    g_st, l_st = stacked_grad(flat.float(), cfg32.spec, Z.float(), y.float(), 100)
    assert g.dtype == torch.float32 and torch.isfinite(g64).all()
    err_f, err_t = _rel(g.double(), g64), _rel(g_st.double(), g64)
    assert err_f < 1e-4 and err_t < 1e-4, (err_f, err_t)
    assert _rel(g.double(), g_st.double()) < 1e-4
    assert _rel(l.double(), l64) < 1e-5


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_prompt_results_do_not_depend_on_their_block(dtype: str) -> None:
    """A prompt's prediction is the same bits wherever it sits: shifting the batch by 5 moves
    prompts between lanes, and from a partial block (loaded by the scalar copy) into full ones
    (loaded by gathers); every lane is computed alone, so the bits agree (d = 5: float32's 6-row
    register tiles), and equal model.forward to the dtype's round-off."""
    cfg = _cfg("kernel", ("relu", "softmax"), 2, 5, 20, 3, 2, 37, dtype=dtype)
    flat, Z, _ = _batch(cfg)
    pred = fused.fused_predict(flat, cfg.spec, Z[0])
    shifted = fused.fused_predict(flat, cfg.spec, Z[0, 5:])
    assert torch.equal(pred[:, 5:], shifted)
    ref = torch.stack([-forward(unflatten_params(flat[i].double(), cfg.spec), cfg.spec, Z[0].double(),
                                validate=False)[..., -1, -1] for i in range(2)])
    assert _rel(pred.double(), ref) < (1e-4 if dtype == "float32" else RTOL[F64])


@needs_numba
def test_fused_training_is_bit_reproducible_and_thread_count_free() -> None:
    """The same config trains to the same bits twice, with 1 and with 2 threads; the engine that
    ran is recorded; the result equals the stacked engine's to float32 round-off."""
    base = dict(d=3, n=6, attention="kernel", activations=("relu", "softmax"), layers=2, seeds=3, steps=8,
                batch=40, eval_batch=32, dtype="float32", device="cpu", log_every=4, checkpoint_every=0, lr=0.02)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = train(TrainConfig(**base), progress=False)
        b = train(TrainConfig(**base), progress=False)
        torch.set_num_threads(2)
        c = train(TrainConfig(**base), progress=False)
    finally:
        torch.set_num_threads(before)
    s = train(TrainConfig(**base, engine="stacked"), progress=False)
    assert a.engine == "fused" and s.engine == "stacked" and a.summary()["engine"] == "fused"
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]) and torch.equal(a.params[k], c.params[k])
        assert torch.allclose(a.params[k], s.params[k], rtol=1e-4, atol=1e-5)
    assert torch.equal(a.final_loss, b.final_loss)


def test_engine_falls_back_to_stacked_where_the_kernel_does_not_apply() -> None:
    """A user sympy kernel (or CUDA) runs the stacked engine under 'auto'; asking for 'fused' there
    is a clear error at configuration time."""
    cfg = TrainConfig(d=2, n=4, attention="kernel", activations=("sympy:exp(-r2/2)",), seeds=2, batch=8,
                      device="cpu")
    assert resolve_engine(cfg, "cpu") == "stacked"
    assert fused.unsupported_reason(cfg.spec, "cpu", torch.float32) is not None
    assert "cuda" in fused.unsupported_reason(_cfg("linear", (), 1, 2, 4, 1, 1, 4).spec, "cuda", torch.float32)
    with pytest.raises(ValueError, match="engine 'fused'.*linear/relu/exp/softmax"):
        TrainConfig(d=2, n=4, attention="kernel", activations=("sympy:exp(-r2/2)",), engine="fused", device="cpu")
    res = train(dataclass_replace(cfg, steps=2, eval_batch=8, log_every=1, checkpoint_every=0), progress=False)
    assert res.engine == "stacked"
    if fused.available():
        assert resolve_engine(_cfg("kernel", ("relu",), 1, 2, 4, 1, 1, 4), "cpu") == "fused"


def dataclass_replace(cfg: TrainConfig, **kw) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(cfg, **kw)


# ---------------------------------------------------------------------- threads
def test_set_threads_sets_torch_threads_and_validates() -> None:
    import landscape

    before = torch.get_num_threads()
    try:
        prev = landscape.set_threads(1)
        assert prev == before and torch.get_num_threads() == 1
        assert landscape.set_threads(2) == 1 and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="threads must be an int >= 1, got 0"):
            landscape.set_threads(0)
        with pytest.raises(TypeError, match="threads must be an int"):
            landscape.set_threads(1.5)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(before)


def test_every_command_takes_threads_and_applies_it(capsys: pytest.CaptureFixture[str]) -> None:
    """--threads is registered on every sub-command, defaults to DEFAULT_THREADS, is applied before
    the command runs, and a bad value is a one-line error before any work."""
    from landscape.cli import build_parser, main
    from landscape.engine.threads import DEFAULT_THREADS

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert len(subs.choices) >= 5
    for name, sub in subs.choices.items():
        act = [a for a in sub._actions if "--threads" in a.option_strings]
        assert len(act) == 1 and act[0].default == DEFAULT_THREADS, name
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["families", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        capsys.readouterr()
        assert main(["families", "--threads", "0"]) == 2
        err = capsys.readouterr().err
        assert "--threads must be an integer >= 1, got 0" in err and err.count("\n") == 1
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------- progress without a terminal
def test_progress_lines_on_a_non_terminal_stderr(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    """stderr is not a terminal under pytest: with progress on, the run prints a progress line
    (step, loss, ETA) whenever PROGRESS_LINE_SECONDS have passed (0 here: every step); with
    progress off it prints nothing."""
    import landscape.experiment.train as tr

    cfg = TrainConfig(d=2, n=4, seeds=2, steps=3, batch=8, eval_batch=8, log_every=1, checkpoint_every=0,
                      device="cpu")
    monkeypatch.setattr(tr, "PROGRESS_LINE_SECONDS", 0.0)
    train(cfg, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and err[0].startswith("train 2 seeds [") and "step 1/3" in err[0] and "ETA" in err[0]
    assert "step 3/3" in err[2]
    train(cfg, progress=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------- command-line start-up
HEAVY = ("torch", "sympy", "scipy", "matplotlib")


def _python(code: str) -> "subprocess.CompletedProcess[str]":
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root,
                          timeout=HANG_GUARD_S)


def test_cli_parser_help_and_argument_errors_import_nothing_heavy() -> None:
    """Building the parser, --help and an argument error load none of torch, sympy, scipy,
    matplotlib (a fresh interpreter each), and the help texts are printed."""
    probe = f"import sys; print(sorted(k for k in {HEAVY!r} if k in sys.modules))"
    r = _python("import landscape.cli._main as m; m.build_parser(); " + probe)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)
    for argv in (["--help"], ["train", "--help"]):
        r = _python(f"import landscape.cli._main as m\ntry:\n    m.main({argv!r})\nexcept SystemExit as e:\n"
                    f"    assert e.code == 0, e.code\n{probe}")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        assert lines[-1] == "[]" and lines[0].startswith("usage: landscape"), r.stdout[-500:]
    r = _python(f"import landscape.cli._main as m\nrc = m.main(['train', '--seeds', '0'])\nprint(rc)\n{probe}")
    assert r.stdout.strip().splitlines() == ["2", "[]"], (r.stdout, r.stderr)
    assert "--seeds" in r.stderr and r.stderr.count("\n") == 1
