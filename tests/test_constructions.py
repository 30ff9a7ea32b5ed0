"""Tests of landscape/theory/constructions.py and ``landscape check``.

Every construction's forward pass is compared, state by state, with its reference algorithm in
landscape/theory/algorithms.py over a property-based grid (hypothesis, derandomised): preconditioned GD
(Ahn et al. Lemma 1), GD++ (Thm 4), functional GD with one or several heads and every activation
including softmax and user sympy kernels (Cheng et al. Props 1, 3), Newton–Schulz (Giannou et
al.), normalised GD (Zhang, Cao). Plus the paper-level statements: Cheng et al. Prop. 2 (depth ->
GP posterior mean), the Newton–Schulz residual squaring, NGD's direction -> max margin.
"""

from __future__ import annotations

import json

import pytest
import torch
from base_suites import CUBIC, F32, F64, LAPLACE_BY_HAND, regression_inputs, rel_err
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import landscape.theory.algorithms as alg
from landscape.tolerances import CONSTRUCTION_RTOL, RTOL
from landscape.cli import main
import landscape.cli.check as check
from landscape.theory.constructions import (
    Construction,
    embed_regression,
    functional_gd_construction,
    gd_plus_plus_construction,
    newton_schulz_construction,
    normalised_gd_construction,
    preconditioned_gd_construction,
)
from landscape.core.kernels import Kernel, get_kernel, known_kernels
from landscape.core.tasks import KernelGP, LinearClassification

GRID = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

KERNEL_CHOICES: list[Kernel | str] = [*known_kernels(), LAPLACE_BY_HAND, CUBIC]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- Ahn et al. 2023
@GRID
@given(d=st.integers(1, 4), n=st.integers(1, 8), layers=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_preconditioned_gd_construction(d: int, n: int, layers: int, seed: int) -> None:
    g = _gen(seed)
    X, y, xq = regression_inputs(d, n, 5, g)
    A = 0.8 * torch.randn(layers, d, d, generator=g, dtype=F64) / d**0.5
    c = preconditioned_gd_construction(A)
    states = c.forward(c.embed(X, y, xq), return_states=True)
    w = alg.preconditioned_gd(X, y, A, return_iterates=True)  # (batch, L+1, d)
    assert len(states) == layers + 1
    for l, Z in enumerate(states):
        assert torch.equal(Z[:, :d, :], states[0][:, :d, :])  # X_l = X_0
        if l == 0:
            continue
        residual = y - torch.einsum("bdn,bd->bn", X, w[:, l])
        assert rel_err(Z[:, d, :n], residual) <= CONSTRUCTION_RTOL
        assert rel_err(-Z[:, d, n], (xq * w[:, l]).sum(-1)) <= CONSTRUCTION_RTOL
    assert rel_err(c(X, y, xq), (xq * w[:, -1]).sum(-1)) <= CONSTRUCTION_RTOL


def test_preconditioned_gd_weights_are_lemma_1() -> None:
    A = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=F64)
    c = preconditioned_gd_construction(A)
    P = torch.zeros(3, 3, dtype=F64)
    P[2, 2] = 1
    Q = torch.zeros(3, 3, dtype=F64)
    Q[:2, :2] = -A[0]
    assert torch.equal(c.params["layer0.head0.P"], P) and torch.equal(c.params["layer0.head0.Q"], Q)
    # the non-symmetric A enters as A^T grad R: a plain GD step on x^T A^T w would differ
    X, y, xq = regression_inputs(2, 4, 3, _gen(0))
    wrong = alg.preconditioned_gd(X, y, A.transpose(-1, -2))
    assert rel_err(c(X, y, xq), (xq * wrong).sum(-1)) > 1e-3


@GRID
@given(d=st.integers(1, 4), n=st.integers(1, 8), layers=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_gd_plus_plus_construction(d: int, n: int, layers: int, seed: int) -> None:
    g = _gen(seed)
    X, y, xq = regression_inputs(d, n, 5, g)
    A = 0.8 * torch.randn(layers, d, d, generator=g, dtype=F64) / d**0.5
    B = 0.8 * torch.randn(layers, d, d, generator=g, dtype=F64) / d**0.5
    c = gd_plus_plus_construction(A, B)
    states = c.forward(c.embed(X, y, xq), return_states=True)
    ref = alg.gd_plus_plus(X, y, xq, A, B, return_iterates=True)
    for l in range(1, layers + 1):
        Z = states[l]
        assert rel_err(Z[:, :d, :n], ref.X[:, l]) <= CONSTRUCTION_RTOL
        assert rel_err(Z[:, :d, n], ref.x_query[:, l]) <= CONSTRUCTION_RTOL
        assert rel_err(Z[:, d, :n], ref.residuals[:, l]) <= CONSTRUCTION_RTOL
        assert rel_err(-Z[:, d, n], ref.predictions[:, l]) <= CONSTRUCTION_RTOL
    # GD++ in the original coordinates is preconditioned GD with the effective preconditioners
    w_eff = torch.stack([alg.preconditioned_gd(X[b : b + 1], y[b : b + 1], ref.effective_preconditioners[b])
                         for b in range(5)]).squeeze(1)
    assert rel_err(c(X, y, xq), (xq * w_eff).sum(-1)) <= CONSTRUCTION_RTOL


# ---------------------------------------------------------------------- Cheng, Chen, Sra 2024
def _reference_kernel(kernels: list[Kernel], G: list[torch.Tensor | None], alpha: list[float]):
    """Σ_h α_h h_h(G_h u, G_h w), softmax heads normalised over the sources by hand."""

    def fn(U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(U.shape[0], U.shape[-1], W.shape[-1], dtype=U.dtype)
        for k, g, a in zip(kernels, G, alpha):
            Gu, Gw = (U, W) if g is None else (g @ U, g @ W)
            S = k.scores(Gu, Gw)
            if k.normalised:
                S = S / S.sum(dim=-2, keepdim=True)
            out = out + a * S
        return out

    return fn


@st.composite
def _fgd_cases(draw: st.DrawFn) -> dict:
    d = draw(st.integers(1, 4))
    heads = draw(st.integers(1, 3))
    return {
        "d": d,
        "n": draw(st.integers(1, 7)),
        "layers": draw(st.integers(1, 4)),
        "kernels": [get_kernel(k) for k in draw(st.lists(st.sampled_from(KERNEL_CHOICES), min_size=heads,
                                                          max_size=heads))],
        "proj_rows": [draw(st.one_of(st.none(), st.integers(1, d + 1))) for _ in range(heads)],
        "weights": draw(st.lists(st.floats(-2, 2).filter(lambda a: abs(a) > 0.1), min_size=heads, max_size=heads)),
        "seed": draw(st.integers(0, 2**16)),
    }


@GRID
@given(case=_fgd_cases())
def test_functional_gd_construction(case: dict) -> None:
    d, n, L, kernels = case["d"], case["n"], case["layers"], case["kernels"]
    g = _gen(case["seed"])
    X, y, xq = regression_inputs(d, n, 4, g)
    steps = (torch.rand(L, generator=g, dtype=F64) * 1.6 - 0.8).tolist()
    G = [None if k is None else torch.randn(k, d, generator=g, dtype=F64) / d**0.5 for k in case["proj_rows"]]
    c = functional_gd_construction(d, steps, kernels, G, case["weights"])
    states = c.forward(c.embed(X, y, xq), return_states=True)
    ref = alg.functional_gd(X, y, xq, _reference_kernel(kernels, G, case["weights"]), steps, return_iterates=True)
    for l, Z in enumerate(states):
        assert torch.equal(Z[:, :d, :], states[0][:, :d, :])  # X_l = X_0
        assert rel_err(Z[:, d, :n], ref.residuals[:, l]) <= CONSTRUCTION_RTOL  # y_i - f_l(x_i)
        assert rel_err(-Z[:, d, n], ref.query_values[:, l]) <= CONSTRUCTION_RTOL  # f_l(x_{n+1})
    assert rel_err(c(X, y, xq), ref.prediction) <= CONSTRUCTION_RTOL


def test_functional_gd_softmax_is_normalised_exp_gd() -> None:
    # Softmax attention = functional GD with the context-normalised exp kernel (normalise=True).
    X, y, xq = regression_inputs(3, 6, 8, _gen(1))
    c = functional_gd_construction(3, [0.5, 0.9, -0.2], "softmax")
    ref = alg.functional_gd(X, y, xq, get_kernel("exp").gram, [0.5, 0.9, -0.2], normalise=True)
    assert rel_err(c(X, y, xq), ref) <= CONSTRUCTION_RTOL
    unnormalised = alg.functional_gd(X, y, xq, get_kernel("exp").gram, [0.5, 0.9, -0.2])
    assert rel_err(c(X, y, xq), unnormalised) > 0.1


def test_multihead_kernel_is_the_composite_sum_kernel() -> None:
    # Prop. 3 with Cheng et al.'s composite data kernel exp(<x_{1:2}, x'_{1:2}>/2) + <x_{3:4}, x'_{3:4}>.
    d = 4
    eye = torch.eye(d, dtype=F64)
    G1, G2 = eye[:2] / 2**0.5, eye[2:]
    c = functional_gd_construction(d, [0.3] * 5, ["exp", "linear"], [G1, G2], [1.0, 1.0])
    X, y, xq = regression_inputs(d, 9, 6, _gen(2))
    R = torch.cat([X, xq[..., None]], -1)
    Kfull = torch.exp(X[:, :2].mT @ R[:, :2] / 2) + X[:, 2:].mT @ R[:, 2:]
    ref = alg.functional_gd(X, y, xq, lambda U, W: Kfull, [0.3] * 5)
    assert rel_err(c(X, y, xq), ref) <= CONSTRUCTION_RTOL
    assert rel_err(c.meta["kernel"](X, R), Kfull) <= RTOL[F64]


def test_cheng_prop2_depth_converges_to_gp_posterior_mean() -> None:
    # GP data with kernel exp(u^T w), xi on the sphere, d = 5, n = 10, constant step r = 0.7 < 2/e.
    d, n, r = 5, 10, 0.7
    batch = KernelGP(d, n, "exp").sample(256, _gen(3))
    X, y, xq = batch.X[:, :, :n], batch.y[:, :n], batch.X[:, :, n]
    depths = [1, 4, 16, 64, 256, 1024]
    c = functional_gd_construction(d, [r] * depths[-1], "exp")
    trace = c.trace(X, y, xq)
    K = torch.exp(batch.X.mT @ batch.X)
    gp = alg.gp_posterior_mean(K[:, :n, :n], K[:, :n, n], y)
    gaps = [float(((trace[L] - gp) ** 2).mean()) for L in depths]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-3, gaps
    # and every depth equals the closed form (r/n) k_q^T sum_s (I - r K/n)^s y
    for L in depths:
        closed = alg.functional_gd_closed_form(K[:, :n, :n], K[:, :n, n], y, r, L)
        assert rel_err(trace[L], closed) <= 1e-8, L  # eigen-route vs 1024 sequential layers


# ---------------------------------------------------------------------- Giannou et al. 2024
@GRID
@given(m=st.integers(1, 5), steps=st.integers(1, 6), symmetric=st.booleans(), seed=st.integers(0, 2**16))
def test_newton_schulz_construction(m: int, steps: int, symmetric: bool, seed: int) -> None:
    g = _gen(seed)
    M = torch.randn(4, m, m, generator=g, dtype=F64) / m**0.5
    A = M @ M.mT + 0.5 * torch.eye(m, dtype=F64) if symmetric else M + 2 * torch.eye(m, dtype=F64)
    c = newton_schulz_construction(m, steps)
    Z0 = c.embed(A)
    states = c.forward(Z0, return_states=True)
    ref = alg.newton_schulz(A, steps=steps, return_iterates=True)
    eye = torch.eye(m, dtype=F64)
    for t, Z in enumerate(states):
        assert torch.equal(Z[:, :m], Z0[:, :m]) and torch.equal(Z[:, 2 * m :], Z0[:, 2 * m :])  # a, e blocks
        assert rel_err(c.readout(Z), ref[:, t]) <= CONSTRUCTION_RTOL
        if t:  # R_t = I - A X_t = R_{t-1}^2 as matrices
            R_prev = eye - A @ c.readout(states[t - 1])
            assert float((eye - A @ c.readout(Z) - R_prev @ R_prev).abs().max()) <= 1e-12 * max(1.0, float(A.abs().max()))


def test_newton_schulz_residual_squares_layer_by_layer() -> None:
    m, T = 4, 12
    g = _gen(4)
    M = torch.randn(6, m, m, generator=g, dtype=F64)
    A = M @ M.mT / m + torch.eye(m, dtype=F64)
    c = newton_schulz_construction(m, T)
    Xs = torch.stack(c.trace(A), dim=1)
    res = alg.newton_schulz_residuals(A, Xs)  # spectral norms, (batch, T+1)
    assert bool((res[:, 0] < 1).all()) and float(res[:, 0].max()) > 0.5
    checked = 0
    for t in range(T):
        big = res[:, t] ** 2 > 1e-6  # above the round-off floor
        if big.any():
            # symmetric A: R_t is symmetric, so ||R_{t+1}|| = ||R_t^2|| = ||R_t||^2 exactly
            assert rel_err(res[big, t + 1], res[big, t] ** 2) <= 1e-9, t
            checked += int(big.sum())
    assert checked >= 3 * 6
    assert float(res[:, -1].max()) < 1e-12
    assert rel_err(Xs[:, -1], torch.linalg.inv(A)) <= 1e-12


def test_newton_schulz_explicit_start() -> None:
    m = 3
    A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.5]], dtype=F64).expand(2, m, m)
    X0 = 0.3 * torch.eye(m, dtype=F64).expand(2, m, m)
    c = newton_schulz_construction(m, 4)
    assert rel_err(c(A, X0), alg.newton_schulz(A, X0=X0, steps=4)) <= CONSTRUCTION_RTOL


# ---------------------------------------------------------------------- Zhang, Cao 2026
@GRID
@given(d=st.integers(1, 4), n=st.integers(1, 10), layers=st.integers(1, 12), eta=st.floats(0.05, 2.0),
       c=st.floats(0.2, 3.0), loss=st.sampled_from(["exp", "logsumexp1"]), seed=st.integers(0, 2**16))
def test_normalised_gd_construction(d: int, n: int, layers: int, eta: float, c: float, loss: str, seed: int) -> None:
    g = _gen(seed)
    X = torch.randn(3, d, n, generator=g, dtype=F64)
    y = torch.where(torch.rand(3, n, generator=g, dtype=F64) < 0.5, -1.0, 1.0).to(F64)
    w0 = torch.randn(3, d, generator=g, dtype=F64)
    con = normalised_gd_construction(d, eta, c, layers, n, loss=loss)  # type: ignore[arg-type]
    trace = con.trace(X, y, w0)
    ref = alg.normalised_gd(X, y, layers, eta, c, w0=w0, loss=loss, return_iterates=True)  # type: ignore[arg-type]
    for t in range(layers + 1):
        assert rel_err(trace[t], ref[:, t]) <= CONSTRUCTION_RTOL
    assert all(torch.equal(con.params[f"layer{l}.head0.V"], con.params["layer0.head0.V"]) for l in range(layers))


def test_looped_normalised_gd_matches_explicit_ngd_over_many_steps_and_finds_max_margin() -> None:
    d, n, T = 3, 12, 1000
    batch = LinearClassification(d, n, margin=0.1).sample(6, _gen(5))
    X, y = batch.X[:, :, :n], batch.y[:, :n]
    c = normalised_gd_construction(d, 0.5, 1.0, T, n)
    trace = c.trace(X, y)
    ref = alg.normalised_gd(X, y, T, 0.5, 1.0, return_iterates=True)
    assert max(rel_err(trace[t], ref[:, t]) for t in range(1, T + 1)) <= 1e-10
    # the direction approaches the hard-margin SVM direction (Zhang, Cao 2026)
    mm = alg.max_margin_direction(X, y)
    cos = [float(((trace[t] / trace[t].norm(dim=-1, keepdim=True)) * mm).sum(-1).min()) for t in (10, 100, T)]
    assert cos[0] < cos[1] < cos[2] and cos[2] > 0.998, cos


# ---------------------------------------------------------------------- the Construction object
def test_construction_call_trace_and_meta() -> None:
    X, y, xq = regression_inputs(2, 5, 3, _gen(6))
    c = functional_gd_construction(2, [0.4, 0.4], "rbf")
    assert isinstance(c, Construction) and c.spec.layers == 2 and c.n_sources is None
    tr = c.trace(X, y, xq)
    assert len(tr) == 3 and torch.equal(tr[0], torch.zeros(3, dtype=F64)) and torch.equal(tr[-1], c(X, y, xq))
    assert torch.equal(c.embed(X, y, xq), embed_regression(X, y, xq))
    assert "Cheng" in c.description


def test_step_sizes_as_tensors_keep_gradients() -> None:
    X, y, xq = regression_inputs(2, 5, 3, _gen(7))
    r = torch.tensor([0.3, 0.6], dtype=F64, requires_grad=True)
    c = functional_gd_construction(2, r, "exp")
    c(X, y, xq).sum().backward()
    h = 1e-6
    e = torch.tensor([h, 0.0], dtype=F64)
    fd = (functional_gd_construction(2, r.detach() + e, "exp")(X, y, xq).sum()
          - functional_gd_construction(2, r.detach() - e, "exp")(X, y, xq).sum()) / (2 * h)
    assert r.grad is not None and abs(float(r.grad[0] - fd)) <= 1e-6 * max(1.0, abs(float(fd)))


def test_builders_vmap_over_step_sizes_and_preconditioners() -> None:
    X, y, xq = regression_inputs(2, 5, 4, _gen(11))
    R = torch.rand(8, 3, generator=_gen(12), dtype=F64)
    A = 0.5 * torch.randn(8, 2, 2, 2, generator=_gen(13), dtype=F64)
    fgd = lambda r: functional_gd_construction(2, r, ["exp", "softmax"])(X, y, xq)  # noqa: E731
    pgd = lambda a: preconditioned_gd_construction(a)(X, y, xq)  # noqa: E731
    assert torch.equal(torch.func.vmap(fgd)(R), torch.stack([fgd(r) for r in R]))
    assert torch.equal(torch.func.vmap(pgd)(A), torch.stack([pgd(a) for a in A]))


def test_float32_construction_runs_in_float32() -> None:
    X, y, xq = regression_inputs(3, 6, 4, _gen(8))
    A = 0.5 * torch.randn(2, 3, 3, generator=_gen(9), dtype=F64)
    c64, c32 = preconditioned_gd_construction(A), preconditioned_gd_construction(A.to(F32))
    out32 = c32(X.to(F32), y.to(F32), xq.to(F32))
    assert out32.dtype == F32 and rel_err(out32.to(F64), c64(X, y, xq)) <= RTOL[F32]


# ---------------------------------------------------------------------- bad input
def test_bad_input_to_builders() -> None:
    with pytest.raises(ValueError, match=r"preconditioners must have shape \(L, d, d\)"):
        preconditioned_gd_construction(torch.zeros(2, 3, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"preconditioners is empty; accepted: a sequence of L >= 1 tensors"):
        preconditioned_gd_construction([])
    with pytest.raises(TypeError, match=r"preconditioners must be a sequence of L >= 1 tensors.*got str"):
        preconditioned_gd_construction("A")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"preconditioners\[1\] has dtype torch.float32"):
        preconditioned_gd_construction([torch.eye(2, dtype=F64), torch.eye(2, dtype=F32)])
    with pytest.raises(ValueError, match=r"L = 2 layers but covariate_transforms has L = 1"):
        gd_plus_plus_construction(torch.zeros(2, 2, 2, dtype=F64), torch.zeros(1, 2, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"d must be an int >= 1, got 0"):
        functional_gd_construction(0, [0.1])
    with pytest.raises(ValueError, match=r"unknown activation/kernel 'tanh'; known: linear, relu, exp, softmax"):
        functional_gd_construction(2, [0.1], "tanh")
    with pytest.raises(ValueError, match=r"projections\[0\] must have shape \(k, d\) = \(k, 2\) with 1 <= k <= d\+1 = 3"):
        functional_gd_construction(2, [0.1], "exp", [torch.zeros(4, 2, dtype=F64)])
    with pytest.raises(ValueError, match=r"weights must list one number alpha_h per head \(2 heads\)"):
        functional_gd_construction(2, [0.1], ["exp", "linear"], weights=[1.0])
    with pytest.raises(ValueError, match=r"step_sizes is empty"):
        functional_gd_construction(2, [], "exp")
    with pytest.raises(ValueError, match=r"m must be an int >= 1, got 0"):
        newton_schulz_construction(0, 3)
    with pytest.raises(ValueError, match=r"steps must be an int >= 1, got 0"):
        newton_schulz_construction(2, 0)
    with pytest.raises(ValueError, match=r"c must be > 0, got 0.0"):
        normalised_gd_construction(2, 0.5, 0.0, 3, 4)
    with pytest.raises(ValueError, match=r"loss must be one of 'exp', 'logsumexp1'; got 'hinge'"):
        normalised_gd_construction(2, 0.5, 1.0, 3, 4, loss="hinge")  # type: ignore[arg-type]


def test_bad_input_to_embeddings_and_forward() -> None:
    X, y, xq = regression_inputs(2, 5, 3, _gen(10))
    with pytest.raises(ValueError, match=r"y must have shape \(3, 5\) \(\.\.\., n\)"):
        embed_regression(X, y[:, :4], xq)
    with pytest.raises(ValueError, match=r"x_query must have shape \(3, 2\)"):
        embed_regression(X, y, xq[:, :1])
    with pytest.raises(TypeError, match=r"y has dtype torch.float32 but the first input has torch.float64"):
        embed_regression(X, y.to(F32), xq)
    c = functional_gd_construction(2, [0.1], "exp")
    with pytest.raises(TypeError, match=r"Z has dtype torch.float32 but params has dtype torch.float64"):
        c(X.to(F32), y.to(F32), xq.to(F32))
    ngd = normalised_gd_construction(2, 0.5, 1.0, 3, n=4)
    with pytest.raises(ValueError, match=r"built for d = 2, n = 4\), got \(3, 2, 5\)"):
        ngd(X, torch.sign(y))
    ns = newton_schulz_construction(3, 2)
    with pytest.raises(ValueError, match=r"A must have shape \(\.\.\., 3, 3\) for this construction \(m = 3\)"):
        ns(torch.eye(2, dtype=F64))


# ---------------------------------------------------------------------- landscape check
def test_cli_check_json_all_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--d", "2", "--n", "5", "--layers", "2", "--seed", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is True and out["rtol"] == CONSTRUCTION_RTOL
    names = {r["construction"] for r in out["results"]}
    assert names == {"preconditioned_gd", "gd_plus_plus", "functional_gd", "newton_schulz", "normalised_gd"}
    acts = {r["activation"] for r in out["results"] if r["construction"] == "functional_gd"}
    assert set(known_kernels()) <= acts and any(a.startswith("user:") for a in acts)
    assert all(0 <= r["max_relative_error"] <= CONSTRUCTION_RTOL for r in out["results"])


def test_cli_check_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--layers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["construction", "activation", "max", "rel.", "error", "result"]
    rows = [l for l in lines[1:-1]]
    assert len(rows) == len(check.CASES) and all(r.rstrip().endswith("pass") for r in rows)
    assert lines[-1].startswith(f"{len(rows)}/{len(rows)} constructions within CONSTRUCTION_RTOL")


def test_cli_check_fails_with_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(check, "CASES", [*check.CASES[:1], ("broken", "none", lambda d, n, L, b, g: 1e-6)])
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1/2 constructions" in out
    assert main(["check", "--json"]) == 1
    res = json.loads(capsys.readouterr().out)
    assert res["passed"] is False and [r["passed"] for r in res["results"]] == [True, False]


def test_cli_check_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--n", "0"]) == 2
    assert "--n must be an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["check", "--layers", "0", "--json"]) == 2
    err = json.loads(capsys.readouterr().out)
    assert err["error"] == "--layers must be an integer >= 1, got 0" and err["kind"] == "argument"
