"""Tests of the reference algorithms against closed forms, second algorithms, the unrolled
transformer recursions they encode, SciPy, finite differences and Monte-Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import torch

import landscape.theory.algorithms as alg
from landscape.tolerances import ALGORITHM_RTOL, ATOL, FD_RTOL, FD_STEP, MC_NUM_SE, RTOL

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# helpers (independent of the module under test)
# ---------------------------------------------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


def regression(g: torch.Generator, b: int, d: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return randn(g, b, d, n), randn(g, b, n), randn(g, b, d)


def sphere(g: torch.Generator, b: int, d: int, m: int) -> torch.Tensor:
    x = randn(g, b, d, m)
    return x / x.norm(dim=1, keepdim=True)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def prompt_matrix(X: torch.Tensor, y: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """Z0 = [[x_1..x_n x_q], [y_1..y_n 0]], tokens as columns."""
    b, d, n = X.shape
    top = torch.cat([X, xq.unsqueeze(-1)], dim=-1)
    bottom = torch.cat([y, torch.zeros(b, 1, dtype=X.dtype)], dim=-1).unsqueeze(1)
    return torch.cat([top, bottom], dim=1)


def mask(n: int) -> torch.Tensor:
    return torch.diag(torch.cat([torch.ones(n, dtype=F64), torch.zeros(1, dtype=F64)]))


def linear_attention_recursion(Z: torch.Tensor, Ps: list[torch.Tensor], Qs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Z_{l+1} = Z_l + (1/n) P_l Z_l M (Z_l^T Q_l Z_l), unrolled literally."""
    n = Z.shape[-1] - 1
    M = mask(n)
    out = [Z]
    for P, Q in zip(Ps, Qs):
        Z = Z + P @ Z @ M @ (Z.transpose(-1, -2) @ Q @ Z) / n
        out.append(Z)
    return out


def kernel_attention_recursion(Z: torch.Tensor, rs: list[float], kind: str) -> list[torch.Tensor]:
    """Z_{l+1} = Z_l + (1/n) V_l Z_l M h(X_l, X_l), V_l = diag(0, -r_l), B = C = I.

    ``kind``: "exp" (h = exp(u^T w)) or "softmax" (exp normalised over the n sources i for each
    receiver j, written with torch.softmax and a -inf mask on the query as a source)."""
    b, D, m = Z.shape
    d, n = D - 1, m - 1
    M = mask(n)
    out = [Z]
    for r in rs:
        V = torch.zeros(D, D, dtype=F64)
        V[d, d] = -r
        Xl = Z[:, :d]
        S = Xl.transpose(-1, -2) @ Xl  # S_ij = x_i^T x_j, i source, j receiver
        if kind == "exp":
            H = torch.exp(S)
        else:
            src_mask = torch.zeros(m, 1, dtype=F64)
            src_mask[n] = -math.inf
            H = torch.softmax(S + src_mask, dim=-2)
        Z = Z + V @ Z @ M @ H / n
        out.append(Z)
    return out


def linear_kernel(U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return U.transpose(-1, -2) @ W


def exp_kernel(U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return torch.exp(U.transpose(-1, -2) @ W)


# ---------------------------------------------------------------------------------------------
# in-context risk
# ---------------------------------------------------------------------------------------------


def test_risk_matches_sum_and_grad_matches_finite_differences() -> None:
    g = gen(0)
    b, d, n = 3, 4, 6
    X, y, _ = regression(g, b, d, n)
    w = randn(g, b, d)
    R = alg.in_context_risk(w, X, y)
    loop = torch.stack(
        [sum((w[k] @ X[k, :, i] - y[k, i]) ** 2 for i in range(n)) / (2 * n) for k in range(b)]
    )
    assert rel_err(R, loop) < ALGORITHM_RTOL
    grad = alg.in_context_risk_grad(w, X, y)
    h = FD_STEP[F64]
    fd = torch.stack(
        [
            (alg.in_context_risk(w + h * e, X, y) - alg.in_context_risk(w - h * e, X, y)) / (2 * h)
            for e in torch.eye(d, dtype=F64)
        ],
        dim=-1,
    )
    assert rel_err(grad, fd) < FD_RTOL[F64]


# ---------------------------------------------------------------------------------------------
# preconditioned GD, GD
# ---------------------------------------------------------------------------------------------


def test_preconditioned_gd_one_step_closed_form() -> None:
    g = gen(1)
    b, d, n = 4, 3, 5
    X, y, _ = regression(g, b, d, n)
    A0 = randn(g, d, d)
    w1 = alg.preconditioned_gd(X, y, [A0])
    expected = torch.einsum("ji,bj->bi", A0, torch.einsum("bdn,bn->bd", X, y) / n)  # A0^T (1/n) X y
    assert rel_err(w1, expected) < ALGORITHM_RTOL


def test_gd_matches_spectral_closed_form() -> None:
    """w_L - w_ls = prod_l (I - eta_l S)(w_0 - w_ls), w_ls = S^{-1} (1/n) X y, S = XX^T/n."""
    g = gen(2)
    b, d, n = 3, 4, 12
    X, y, _ = regression(g, b, d, n)
    S = X @ X.transpose(-1, -2) / n
    lam, U = torch.linalg.eigh(S)
    w_ls = torch.linalg.solve(S, torch.einsum("bdn,bn->bd", X, y).unsqueeze(-1) / n).squeeze(-1)
    for etas in ([0.3] * 7, [0.1, 0.5, 0.2, 0.05]):
        wL = alg.gd(X, y, etas)
        factor = torch.ones_like(lam)
        for eta in etas:
            factor = factor * (1 - eta * lam)
        coeff = torch.einsum("bij,bi->bj", U, w_ls)  # U^T w_ls
        expected = w_ls - torch.einsum("bij,bj->bi", U, factor * coeff)
        assert rel_err(wL, expected) < ALGORITHM_RTOL


def test_preconditioned_gd_input_formats_and_iterates_agree() -> None:
    g = gen(3)
    b, d, n, L = 2, 3, 5, 4
    X, y, _ = regression(g, b, d, n)
    A = randn(g, L, d, d) * 0.4
    ref = alg.preconditioned_gd(X, y, list(A), return_iterates=True)
    assert ref.shape == (b, L + 1, d)
    assert torch.equal(ref[:, 0], torch.zeros(b, d, dtype=F64))
    assert rel_err(alg.preconditioned_gd(X, y, A), ref[:, -1]) < ALGORITHM_RTOL
    assert rel_err(alg.preconditioned_gd(X, y, A.expand(b, L, d, d)), ref[:, -1]) < ALGORITHM_RTOL
    # iterate l+1 is one step from iterate l
    for l in range(L):
        step = alg.preconditioned_gd(X, y, [A[l]], w0=ref[:, l])
        assert rel_err(step, ref[:, l + 1]) < ALGORITHM_RTOL
    # no layers: w0 back
    assert torch.equal(alg.preconditioned_gd(X, y, []), torch.zeros(b, d, dtype=F64))


def test_lemma1_linear_attention_recursion_is_preconditioned_gd() -> None:
    """Ahn et al. Lemma 1: P = diag(0, 1), Q = -diag(A, 0) predicts x_q^T w_L."""
    g = gen(4)
    b, d, n, L = 3, 3, 6, 3
    X, y, xq = regression(g, b, d, n)
    A = randn(g, L, d, d) * 0.5
    Ps, Qs = [], []
    for l in range(L):
        P = torch.zeros(d + 1, d + 1, dtype=F64)
        P[d, d] = 1.0
        Q = torch.zeros(d + 1, d + 1, dtype=F64)
        Q[:d, :d] = -A[l]
        Ps.append(P)
        Qs.append(Q)
    ZL = linear_attention_recursion(prompt_matrix(X, y, xq), Ps, Qs)[-1]
    wL = alg.preconditioned_gd(X, y, A)
    assert rel_err(torch.einsum("bd,bd->b", xq, wL), -ZL[:, d, n]) < ALGORITHM_RTOL


# ---------------------------------------------------------------------------------------------
# GD++
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [5, 6])
def test_gd_plus_plus_matches_unrolled_recursion(seed: int) -> None:
    g = gen(seed)
    b, d, n, L = 3, 4, 7, 3
    X, y, xq = regression(g, b, d, n)
    A = randn(g, L, d, d) * 0.3
    B = randn(g, L, d, d) * 0.3
    Ps, Qs = [], []
    for l in range(L):
        P = torch.zeros(d + 1, d + 1, dtype=F64)
        P[:d, :d] = B[l]
        P[d, d] = 1.0
        Q = torch.zeros(d + 1, d + 1, dtype=F64)
        Q[:d, :d] = -A[l]
        Ps.append(P)
        Qs.append(Q)
    Zs = linear_attention_recursion(prompt_matrix(X, y, xq), Ps, Qs)
    tr = alg.gd_plus_plus(X, y, xq, A, B, return_iterates=True)
    assert isinstance(tr, alg.GDPlusPlusTrace)
    assert rel_err(tr.prediction, -Zs[-1][:, d, n]) < ALGORITHM_RTOL
    assert rel_err(alg.gd_plus_plus(X, y, xq, list(A), list(B)), tr.prediction) < ALGORITHM_RTOL
    for l, Z in enumerate(Zs):
        assert rel_err(tr.X[:, l], Z[:, :d, :n]) < ALGORITHM_RTOL
        assert rel_err(tr.x_query[:, l], Z[:, :d, n]) < ALGORITHM_RTOL
        assert rel_err(tr.residuals[:, l], Z[:, d, :n]) < ALGORITHM_RTOL
        if l > 0:
            assert rel_err(tr.predictions[:, l], -Z[:, d, n]) < ALGORITHM_RTOL
    # the original-coordinate weights: f_L(x_q) = x_q^T w_L, residuals = y - X^T w_l
    assert rel_err(torch.einsum("bd,bd->b", xq, tr.w[:, -1]), tr.prediction) < ALGORITHM_RTOL
    assert rel_err(y.unsqueeze(1) - torch.einsum("bdn,bld->bln", X, tr.w), tr.residuals) < ALGORITHM_RTOL
    # ... which follow preconditioned GD with T_l^T A_l T_l
    w_pgd = alg.preconditioned_gd(X, y, tr.effective_preconditioners, return_iterates=True)
    assert rel_err(w_pgd, tr.w) < ALGORITHM_RTOL


def test_gd_plus_plus_with_zero_transforms_is_lemma1() -> None:
    g = gen(7)
    b, d, n, L = 2, 3, 5, 3
    X, y, xq = regression(g, b, d, n)
    A = randn(g, L, d, d) * 0.4
    pred = alg.gd_plus_plus(X, y, xq, A, torch.zeros(L, d, d, dtype=F64))
    wL = alg.preconditioned_gd(X, y, A)
    assert rel_err(pred, torch.einsum("bd,bd->b", xq, wL)) < ALGORITHM_RTOL


def test_gd_plus_plus_scalar_family_transform() -> None:
    """GD++ (A_l = a I, B_l = b I): x <- (I - a b S_l) x with S_l the transformed covariance."""
    g = gen(8)
    bsz, d, n = 2, 3, 8
    X, y, xq = regression(g, bsz, d, n)
    a, b = 0.7, -0.4
    tr = alg.gd_plus_plus(X, y, xq, [a * torch.eye(d, dtype=F64)] * 2, [b * torch.eye(d, dtype=F64)] * 2,
                          return_iterates=True)
    S0 = X @ X.transpose(-1, -2) / n
    X1 = (torch.eye(d, dtype=F64) - a * b * S0) @ X
    S1 = X1 @ X1.transpose(-1, -2) / n
    X2 = (torch.eye(d, dtype=F64) - a * b * S1) @ X1
    assert rel_err(tr.X[:, 2], X2) < ALGORITHM_RTOL


def test_gd_plus_plus_vmap_over_parameter_sets_equals_loop() -> None:
    g = gen(9)
    b, d, n, L, S = 2, 3, 5, 2, 4
    X, y, xq = regression(g, b, d, n)
    A = randn(g, S, L, d, d) * 0.3
    B = randn(g, S, L, d, d) * 0.3
    vm = torch.func.vmap(lambda a, bb: alg.gd_plus_plus(X, y, xq, a, bb))(A, B)
    loop = torch.stack([alg.gd_plus_plus(X, y, xq, A[s], B[s]) for s in range(S)])
    assert rel_err(vm, loop) < ALGORITHM_RTOL


# ---------------------------------------------------------------------------------------------
# functional GD
# ---------------------------------------------------------------------------------------------


def test_functional_gd_linear_kernel_is_gd() -> None:
    g = gen(10)
    b, d, n = 3, 4, 6
    X, y, xq = regression(g, b, d, n)
    r = [0.4, 0.2, 0.7, 0.1]
    tr = alg.functional_gd(X, y, xq, linear_kernel, r, return_iterates=True)
    ws = alg.gd(X, y, r, return_iterates=True)
    assert rel_err(tr.prediction, torch.einsum("bd,bd->b", xq, ws[:, -1])) < ALGORITHM_RTOL
    assert rel_err(tr.query_values, torch.einsum("bd,bld->bl", xq, ws)) < ALGORITHM_RTOL
    assert rel_err(tr.residuals, y.unsqueeze(1) - torch.einsum("bdn,bld->bln", X, ws)) < ALGORITHM_RTOL


def test_functional_gd_bilinear_kernel_is_preconditioned_gd() -> None:
    """K(x, x') = (Bx)^T (Cx') gives preconditioned GD with A_l = r_l B^T C (Cheng et al. Prop. 1)."""
    g = gen(11)
    b, d, n = 2, 3, 5
    X, y, xq = regression(g, b, d, n)
    Bm, Cm = randn(g, d, d), randn(g, d, d)
    r = [0.3, 0.1, 0.2]
    pred = alg.functional_gd(X, y, xq, lambda U, W: (Bm @ U).transpose(-1, -2) @ (Cm @ W), r)
    wL = alg.preconditioned_gd(X, y, [ri * Bm.T @ Cm for ri in r])
    assert rel_err(pred, torch.einsum("bd,bd->b", xq, wL)) < ALGORITHM_RTOL


@pytest.mark.parametrize("kind", ["exp", "softmax"])
def test_functional_gd_matches_kernel_attention_recursion(kind: str) -> None:
    """Prop. 1: label row of Z_l is (y_i - f_l(x_i), -f_l(x_q)); softmax normalises over sources."""
    g = gen(12)
    b, d, n = 3, 3, 6
    X, xq = sphere(g, b, d, n), sphere(g, b, d, 1)[..., 0]
    y = randn(g, b, n)
    r = [0.9, 0.5, 1.3]
    Zs = kernel_attention_recursion(prompt_matrix(X, y, xq), r, kind)
    tr = alg.functional_gd(X, y, xq, exp_kernel, r, normalise=(kind == "softmax"), return_iterates=True)
    for l, Z in enumerate(Zs):
        assert rel_err(tr.residuals[:, l], Z[:, d, :n]) < ALGORITHM_RTOL
        if l > 0:
            assert rel_err(tr.query_values[:, l], -Z[:, d, n]) < ALGORITHM_RTOL
    assert rel_err(tr.prediction, -Zs[-1][:, d, n]) < ALGORITHM_RTOL


def test_functional_gd_matches_closed_form() -> None:
    g = gen(13)
    b, d, n = 4, 3, 6
    X, xq = sphere(g, b, d, n), sphere(g, b, d, 1)[..., 0]
    y = randn(g, b, n)
    K = exp_kernel(X, X)
    kq = exp_kernel(X, xq.unsqueeze(-1))[..., 0]
    r = 0.8
    for L in (0, 1, 2, 5, 17):
        fgd = alg.functional_gd(X, y, xq, exp_kernel, [r] * L)
        cf = alg.functional_gd_closed_form(K, kq, y, r, L)
        if L == 0:
            assert torch.equal(fgd, torch.zeros(b, dtype=F64)) and cf.abs().max() == 0
        else:
            assert rel_err(fgd, cf) < ALGORITHM_RTOL


def test_functional_gd_converges_to_gp_posterior_mean() -> None:
    """Prop. 2: with 0 < r < 2n/lambda_max the error to k_q^T K^{-1} y decays like (1 - r lambda/n)^L."""
    g = gen(14)
    b, d, n = 4, 5, 5
    X, xq = sphere(g, b, d, n), sphere(g, b, d, 1)[..., 0]
    y = randn(g, b, n)
    K = exp_kernel(X, X)
    kq = exp_kernel(X, xq.unsqueeze(-1))[..., 0]
    lam, _ = torch.linalg.eigh(K)
    r = 1.5 * n / lam[:, -1]  # per-prompt step in (0, 2n / lambda_max)
    L_max, checkpoints = 400, (3, 10, 30, 100, 400)
    mean = alg.gp_posterior_mean(K, kq, y)
    tr = alg.functional_gd(X, y, xq, exp_kernel, r[:, None].expand(b, L_max), return_iterates=True)
    errors = torch.stack([(tr.query_values[:, L] - mean).abs() for L in checkpoints], dim=1)
    assert bool((errors[:, 1:-1] < errors[:, :-2]).all()), errors  # until round-off is reached
    # the exact error is k_q^T U diag((1 - c lam)^L / lam) U^T y; bound it by Cauchy-Schwarz
    c = (r / n)[:, None]
    for j, L in enumerate(checkpoints):
        bound = kq.norm(dim=-1) * y.norm(dim=-1) * ((1 - c * lam).abs() ** L / lam).amax(dim=-1)
        assert bool((errors[:, j] <= bound * (1 + RTOL[F64]) + 1e-14).all())
    assert float(errors[:, -1].max()) < RTOL[F64] * float(mean.abs().max())


def test_closed_form_handles_zero_eigenvalue() -> None:
    """A rank-deficient Gram (repeated point): phi(0) = c L; compare with the iteration."""
    g = gen(15)
    b, d, n = 2, 3, 4
    X = sphere(g, b, d, n)
    X = torch.cat([X[..., :3], X[..., :1]], dim=-1)  # x_4 = x_1
    xq = sphere(g, b, d, 1)[..., 0]
    y = randn(g, b, n)
    K, kq = linear_kernel(X, X), linear_kernel(X, xq.unsqueeze(-1))[..., 0]
    for L in (1, 6):
        cf = alg.functional_gd_closed_form(K, kq, y, 0.5, L)
        it = alg.functional_gd(X, y, xq, linear_kernel, [0.5] * L)
        assert rel_err(cf, it) < RTOL[F64]


# ---------------------------------------------------------------------------------------------
# Gaussian processes
# ---------------------------------------------------------------------------------------------


def test_gp_posterior_mean_and_variance_match_scipy() -> None:
    g = gen(16)
    b, d, n = 3, 3, 7
    X, xq = sphere(g, b, d, n), sphere(g, b, d, 1)[..., 0]
    y = randn(g, b, n)
    K = exp_kernel(X, X)
    kq = exp_kernel(X, xq.unsqueeze(-1))[..., 0]
    Kqq = torch.exp((xq * xq).sum(-1))
    for jitter in (0.0, 1e-3):
        mean = alg.gp_posterior_mean(K, kq, y, jitter=jitter)
        var = alg.gp_posterior_variance(K, kq, Kqq, jitter=jitter)
        for k in range(b):
            Kk = K[k].numpy() + jitter * np.eye(n)
            m_ref = kq[k].numpy() @ scipy.linalg.solve(Kk, y[k].numpy(), assume_a="pos")
            v_ref = Kqq[k].item() - kq[k].numpy() @ scipy.linalg.solve(Kk, kq[k].numpy(), assume_a="pos")
            assert abs(mean[k].item() - m_ref) <= RTOL[F64] * max(1.0, abs(m_ref))
            assert abs(var[k].item() - v_ref) <= RTOL[F64] * max(1.0, abs(v_ref))


def test_bayes_risk_matches_monte_carlo() -> None:
    """E[(y_q - posterior mean)^2] over GP labels equals the mean posterior variance."""
    g = gen(17)
    b, d, n = 4000, 3, 5
    Xall = sphere(g, b, d, n + 1)
    Kall = torch.exp(0.5 * Xall.transpose(-1, -2) @ Xall)  # exp(<x, x'>/2), the data kernel
    L = torch.linalg.cholesky(Kall)
    yall = (L @ randn(g, b, n + 1, 1))[..., 0]
    K, kq, Kqq = Kall[:, :n, :n], Kall[:, :n, n], Kall[:, n, n]
    risk = alg.bayes_risk(K, kq, Kqq)
    assert bool((risk.per_prompt >= 0).all())
    err2 = (yall[:, n] - alg.gp_posterior_mean(K, kq, yall[:, :n])) ** 2
    diff = err2 - risk.per_prompt
    se = diff.std() / math.sqrt(b)
    z = float(diff.mean() / se)
    assert abs(z) < MC_NUM_SE, f"Monte-Carlo Bayes risk off by {z:.2f} standard errors"
    assert float(risk.standard_error) > 0 and risk.value.ndim == 0


def test_bayes_risk_standard_error_matches_the_spread_of_independent_estimates() -> None:
    """The reported standard error is the sd of the batch estimate: compare with R replicate batches.

    For a correct SE (sd/√b) the ratio spread/mean-SE is 1 up to ~1/√(2R) = 7 %; sd/b would give √b = 8.
    """
    g = gen(23)
    R, b, d, n = 100, 64, 3, 4
    Xall = sphere(g, R * b, d, n + 1)
    Kall = torch.exp(0.5 * Xall.transpose(-1, -2) @ Xall)
    K, kq, Kqq = Kall[:, :n, :n], Kall[:, :n, n], Kall[:, n, n]
    values, ses = [], []
    for r in range(R):
        sl = slice(r * b, (r + 1) * b)
        risk = alg.bayes_risk(K[sl], kq[sl], Kqq[sl])
        values.append(float(risk.value))
        ses.append(float(risk.standard_error))
    spread = float(np.std(values, ddof=1))
    ratio = spread / float(np.mean(ses))
    assert 0.75 < ratio < 1.33, f"replicate spread / reported SE = {ratio:.3f}"


# ---------------------------------------------------------------------------------------------
# Newton–Schulz and least squares
# ---------------------------------------------------------------------------------------------


def spd(g: torch.Generator, b: int, m: int, cond: float) -> torch.Tensor:
    Q, _ = torch.linalg.qr(randn(g, b, m, m))
    lam = torch.logspace(0, math.log10(cond), m, dtype=F64)
    return Q @ torch.diag_embed(lam.expand(b, m)) @ Q.transpose(-1, -2)


def test_newton_schulz_residual_squares_and_converges() -> None:
    g = gen(18)
    b, m, T = 3, 5, 20
    A = spd(g, b, m, cond=10.0)
    Xs = alg.newton_schulz(A, steps=T, return_iterates=True)
    assert Xs.shape == (b, T + 1, m, m)
    res = alg.newton_schulz_residuals(A, Xs)
    # R_{t+1} = R_t^2 with R_t symmetric: the spectral norm squares exactly (up to round-off)
    assert bool((res[:, 1:] <= res[:, :-1] ** 2 * (1 + RTOL[F64]) + ATOL[F64]).all())
    assert rel_err(res[:, 1:8], res[:, :7] ** 2) < RTOL[F64]  # equality before round-off dominates
    # default alpha = 1/||A||^2: ||R_0|| = 1 - 1/cond^2
    assert rel_err(res[:, 0], torch.full((b,), 1 - 1 / 100.0, dtype=F64)) < ALGORITHM_RTOL
    assert rel_err(Xs[:, -1], torch.linalg.inv(A)) < RTOL[F64]
    # Frobenius variant against a direct computation
    fro = alg.newton_schulz_residuals(A, Xs[:, 3], ord="fro")
    direct = (torch.eye(m, dtype=F64) - A @ Xs[:, 3]).pow(2).sum((-2, -1)).sqrt()
    assert rel_err(fro, direct) < ALGORITHM_RTOL


def test_newton_schulz_nonsymmetric_and_explicit_start() -> None:
    g = gen(19)
    b, m = 2, 4
    A = randn(g, b, m, m) + 3 * torch.eye(m, dtype=F64)
    X = alg.newton_schulz(A, steps=40)
    assert rel_err(X, torch.linalg.inv(A)) < RTOL[F64]
    alpha = 0.5 / torch.linalg.matrix_norm(A, ord=2) ** 2
    X_a = alg.newton_schulz(A, alpha=alpha, steps=3)
    X_0 = alg.newton_schulz(A, X0=alpha[:, None, None] * A.transpose(-1, -2), steps=3)
    assert rel_err(X_a, X_0) < ALGORITHM_RTOL


def test_least_squares_newton_schulz_matches_lstsq() -> None:
    g = gen(20)
    b, d, n = 3, 4, 15
    Adata, y, a_test = regression(g, b, d, n)
    preds = alg.least_squares_newton_schulz(Adata, y, a_test, steps=30, return_iterates=True)
    w_hat = torch.linalg.lstsq(Adata.transpose(-1, -2), y.unsqueeze(-1)).solution[..., 0]
    assert rel_err(preds[:, -1], torch.einsum("bd,bd->b", a_test, w_hat)) < RTOL[F64]
    # invariant to the 1/n scaling of the Gram (default alpha)
    scaled = alg.least_squares_newton_schulz(Adata / math.sqrt(n), y / math.sqrt(n), a_test, steps=5)
    assert rel_err(scaled, preds[:, 5]) < ALGORITHM_RTOL


# ---------------------------------------------------------------------------------------------
# damped Newton for logistic regression
# ---------------------------------------------------------------------------------------------


def logistic_data(g: torch.Generator, b: int, d: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    A = randn(g, b, d, n)
    w_true = randn(g, b, d)
    noise = randn(g, b, n)
    y = torch.sign(torch.einsum("bdn,bd->bn", A, w_true) + 0.5 * noise)
    return A, y


def test_logistic_derivatives_match_finite_differences() -> None:
    g = gen(21)
    b, d, n, mu = 2, 3, 9, 0.1
    A, y = logistic_data(g, b, d, n)
    w = randn(g, b, d)
    h = FD_STEP[F64]
    E = torch.eye(d, dtype=F64)
    fd_g = torch.stack(
        [(alg.logistic_loss(w + h * e, A, y, mu) - alg.logistic_loss(w - h * e, A, y, mu)) / (2 * h) for e in E],
        dim=-1,
    )
    grad = alg.logistic_grad(w, A, y, mu)
    assert rel_err(grad, fd_g) < FD_RTOL[F64]
    fd_H = torch.stack(
        [(alg.logistic_grad(w + h * e, A, y, mu) - alg.logistic_grad(w - h * e, A, y, mu)) / (2 * h) for e in E],
        dim=-1,
    )
    assert rel_err(alg.logistic_hessian(w, A, y, mu), fd_H) < FD_RTOL[F64]
    # loss against a direct formula
    direct = torch.log1p(torch.exp(-y * torch.einsum("bdn,bd->bn", A, w))).mean(-1) + 0.5 * mu * (w**2).sum(-1)
    assert rel_err(alg.logistic_loss(w, A, y, mu), direct) < ALGORITHM_RTOL


def test_damped_newton_reaches_bfgs_minimiser() -> None:
    g = gen(22)
    b, d, n, mu = 3, 4, 25, 0.2
    A, y = logistic_data(g, b, d, n)
    ws = alg.damped_newton_logistic(A, y, mu, steps=30, return_iterates=True)
    dec = alg.newton_decrement(ws[:, -1], A, y, mu)
    assert float(dec.max()) < 1e-20
    losses = torch.stack([alg.logistic_loss(ws[:, t], A, y, mu) for t in range(ws.shape[1])], dim=1)
    assert bool((losses[:, 1:] <= losses[:, :-1] + 1e-15).all())  # damped Newton is monotone
    for k in range(b):
        An, yn = A[k].numpy(), y[k].numpy()

        def f(w: np.ndarray) -> float:
            return float(np.mean(np.logaddexp(0.0, -yn * (An.T @ w))) + 0.5 * mu * w @ w)

        def grad(w: np.ndarray) -> np.ndarray:
            s = 1.0 / (1.0 + np.exp(yn * (An.T @ w)))
            return -(An @ (yn * s)) / n + mu * w

        x = np.zeros(d)
        for _ in range(3):  # restarts refresh BFGS's curvature estimate after precision loss
            x = scipy.optimize.minimize(f, x, jac=grad, method="BFGS", options={"gtol": 1e-13}).x
        # mu-strong convexity: ||w - w*|| <= ||grad f(w)|| / mu certifies how close BFGS got
        certified = np.linalg.norm(grad(x)) / mu
        distance = np.linalg.norm(ws[k, -1].numpy() - x)
        assert certified < 1e-8
        assert distance <= certified + 1e-14


# ---------------------------------------------------------------------------------------------
# normalised GD and max margin
# ---------------------------------------------------------------------------------------------


def separable(g: torch.Generator, b: int, d: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    X = randn(g, b, d, n)
    w_true = randn(g, b, d)
    return X, torch.sign(torch.einsum("bdn,bd->bn", X, w_true))


@pytest.mark.parametrize("loss", ["exp", "logsumexp1"])
def test_normalised_gd_step_is_softmax_attention(loss: str) -> None:
    g = gen(23)
    b, d, n = 3, 4, 7
    X, y = separable(g, b, d, n)
    w = randn(g, b, d) * 3
    eta, c = 0.7, 1.9
    w1 = alg.normalised_gd(X, y, steps=1, eta=eta, c=c, w0=w, loss=loss)
    u = y.unsqueeze(1) * X
    s = -c * torch.einsum("bdn,bd->bn", u, w)
    if loss == "exp":
        att = torch.softmax(s, dim=-1)
    else:  # the state attends to itself with score 0 and value 0
        att = torch.softmax(torch.cat([s, torch.zeros(b, 1, dtype=F64)], dim=-1), dim=-1)[:, :n]
    expected = w + eta * torch.einsum("bdn,bn->bd", u, att)
    assert rel_err(w1, expected) < ALGORITHM_RTOL


def test_normalised_gd_is_gradient_of_log_loss_by_autograd() -> None:
    """exp: w - (eta/c) grad log L_exp; logsumexp1: w - (eta/c) grad log(1 + sum e^s)."""
    g = gen(24)
    b, d, n = 2, 3, 6
    X, y = separable(g, b, d, n)
    w = randn(g, b, d).requires_grad_(True)
    eta, c = 0.3, 0.8
    s = -c * y * torch.einsum("bdn,bd->bn", X, w)
    for loss, value in (("exp", torch.logsumexp(s, -1)),
                        ("logsumexp1", torch.log1p(torch.exp(s).sum(-1)))):
        (grad,) = torch.autograd.grad(value.sum(), w, retain_graph=True)
        w1 = alg.normalised_gd(X, y, steps=1, eta=eta, c=c, w0=w.detach(), loss=loss)
        assert rel_err(w1, w.detach() - eta / c * grad) < ALGORITHM_RTOL


def test_max_margin_direction_two_points_closed_form() -> None:
    """Both constraints active: w = U (U^T U)^{-1} 1 when those multipliers are >= 0."""
    u1 = torch.tensor([1.0, 0.2, 0.0], dtype=F64)
    u2 = torch.tensor([0.8, -0.5, 0.3], dtype=F64)
    U = torch.stack([u1, u2], dim=-1)
    alpha = torch.linalg.solve(U.T @ U, torch.ones(2, dtype=F64))
    assert bool((alpha > 0).all())
    w = U @ alpha
    y = torch.tensor([[1.0, -1.0]], dtype=F64)
    X = (U * y).unsqueeze(0)  # x_i = y_i u_i
    direction = alg.max_margin_direction(X, y)
    assert rel_err(direction[0], w / w.norm()) < 1e-7  # SLSQP accuracy, far above round-off
    with pytest.raises(RuntimeError, match="separable"):
        alg.max_margin_direction(torch.stack([X[0, :, 0], X[0, :, 0]], -1).unsqueeze(0), torch.tensor([[1.0, -1.0]], dtype=F64))


def test_normalised_gd_direction_approaches_max_margin() -> None:
    g = gen(25)
    b, d, n = 4, 3, 20
    X, y = separable(g, b, d, n)
    mm = alg.max_margin_direction(X, y)
    # KKT check of the solver: margins >= 1 after rescaling, with equality on the support
    margins = torch.einsum("bdn,bd->bn", y.unsqueeze(1) * X, mm)
    assert bool((margins > 0).all())
    ws = alg.normalised_gd(X, y, steps=2000, eta=1.0, c=1.0, return_iterates=True)
    checkpoints = (10, 100, 1000, 2000)
    cos = torch.stack([(ws[:, t] / ws[:, t].norm(dim=-1, keepdim=True) * mm).sum(-1) for t in checkpoints], 1)
    assert bool((cos[:, 1:] > cos[:, :-1]).all()), cos
    assert float(cos[:, -1].min()) > 0.999, cos


# ---------------------------------------------------------------------------------------------
# dtype/device follow the inputs; bad input
# ---------------------------------------------------------------------------------------------


def test_float32_inputs_give_float32_outputs() -> None:
    g = gen(26)
    X, y, xq = (t.float() for t in regression(g, 2, 3, 4))
    assert alg.gd(X, y, [0.1, 0.2]).dtype == torch.float32
    assert alg.gd_plus_plus(X, y, xq, [torch.eye(3)], [torch.eye(3)]).dtype == torch.float32
    assert alg.functional_gd(X, y, xq, linear_kernel, [0.1]).dtype == torch.float32
    assert alg.normalised_gd(X, torch.sign(y), steps=2, eta=0.1).dtype == torch.float32


def test_bad_inputs_raise_clear_errors() -> None:
    g = gen(27)
    X, y, xq = regression(g, 2, 3, 4)
    with pytest.raises(ValueError, match=r"y must have shape \(batch, n\) = \(2, 4\); got shape \(2, 5\)"):
        alg.gd(X, randn(g, 2, 5), [0.1])
    with pytest.raises(ValueError, match=r"X must have 3 axes"):
        alg.in_context_risk(randn(g, 2, 3), X[..., 0], y)
    with pytest.raises(ValueError, match=r"X has n = 0"):
        alg.gd(torch.zeros(2, 3, 0, dtype=F64), torch.zeros(2, 0, dtype=F64), [0.1])
    with pytest.raises(ValueError, match=r"X has d = 0"):
        alg.gd(torch.zeros(2, 0, 4, dtype=F64), y, [0.1])
    with pytest.raises(TypeError, match=r"y has dtype torch.float32 but X has dtype torch.float64"):
        alg.gd(X, y.float(), [0.1])
    with pytest.raises(TypeError, match=r"X has dtype torch.int64; accepted dtypes"):
        alg.gd(X.long(), y, [0.1])
    with pytest.raises(ValueError, match=r"preconditioners\[0\] must have shape \(3, 3\)"):
        alg.preconditioned_gd(X, y, [torch.eye(2, dtype=F64)])
    with pytest.raises(ValueError, match=r"x_query must have shape \(batch, d\) = \(2, 3\)"):
        alg.gd_plus_plus(X, y, randn(g, 2, 4), [torch.eye(3, dtype=F64)], [torch.eye(3, dtype=F64)])
    with pytest.raises(ValueError, match=r"L = 1 layers but covariate_transforms has L = 2"):
        alg.gd_plus_plus(X, y, xq, [torch.eye(3, dtype=F64)], [torch.eye(3, dtype=F64)] * 2)
    with pytest.raises(ValueError, match=r"expected \(batch, n, n\+1\)"):
        alg.functional_gd(X, y, xq, lambda U, W: U.transpose(-1, -2) @ U, [0.1])
    with pytest.raises(TypeError, match=r"kernel_fn must be callable"):
        alg.functional_gd(X, y, xq, "exp", [0.1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"k_q must have shape \(batch, n\) = \(2, 3\)"):
        alg.gp_posterior_mean(randn(g, 2, 3, 3), randn(g, 2, 4), randn(g, 2, 3))
    with pytest.raises(ValueError, match=r"jitter must be >= 0"):
        alg.gp_posterior_mean(randn(g, 2, 3, 3), randn(g, 2, 3), randn(g, 2, 3), jitter=-1.0)
    with pytest.raises(ValueError, match=r"layers must be an int >= 0"):
        alg.functional_gd_closed_form(randn(g, 2, 3, 3), randn(g, 2, 3), randn(g, 2, 3), 0.1, -1)
    with pytest.raises(ValueError, match=r"A must have shape \(batch, m, m\)"):
        alg.newton_schulz(randn(g, 2, 3, 4), steps=2)
    with pytest.raises(ValueError, match=r"at most one of X0 and alpha"):
        alg.newton_schulz(randn(g, 2, 3, 3), X0=randn(g, 2, 3, 3), alpha=0.1, steps=2)
    with pytest.raises(ValueError, match=r"ord must be one of 'spectral', 'fro'"):
        alg.newton_schulz_residuals(randn(g, 2, 3, 3), randn(g, 2, 3, 3), ord="nuc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mu must be > 0"):
        alg.damped_newton_logistic(X, torch.sign(y), 0.0, steps=3)
    with pytest.raises(TypeError, match=r"steps must be an int"):
        alg.damped_newton_logistic(X, torch.sign(y), 0.1, steps=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"loss must be one of 'exp', 'logsumexp1'"):
        alg.normalised_gd(X, torch.sign(y), steps=2, eta=0.1, loss="logistic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"c must be > 0"):
        alg.normalised_gd(X, torch.sign(y), steps=2, eta=0.1, c=-1.0)
