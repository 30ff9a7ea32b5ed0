"""Tests of landscape/core/tasks.py.

References: the distributions' definitions — same seed gives the same bits; empirical moments
within ``MC_NUM_SE`` standard errors of their exact values; labels equal to the formula that
defines them; the GP Gram recomputed by hand; the GP posterior mean from landscape.theory.algorithms.
"""

from __future__ import annotations

import math

import pytest
import torch
from base_suites import F64, rel_err

import landscape.theory.algorithms as alg
from landscape.tolerances import MC_NUM_SE, RTOL
from landscape.core.kernels import SumKernel, get_kernel
from landscape.core.tasks import (
    AHN_SPECTRUM,
    KernelGP,
    LinearClassification,
    LinearRegression,
    OrthonormalFeatures,
    PromptBatch,
    check_covariance,
    embed,
    random_covariance,
    random_rotation,
    sqrtm_psd,
)

SIGMA3 = random_covariance(3, torch.Generator().manual_seed(99), spectrum=(2.0, 1.0, 0.25))

SAMPLERS = [
    LinearRegression(3, 5),
    LinearRegression(3, 5, sigma=SIGMA3, covariates="sphere", task_cov="inverse", noise=0.1),
    KernelGP(3, 5, "exp"),
    KernelGP(3, 5, "relu", sigma=SIGMA3),
    KernelGP(4, 5, SumKernel(((1.0, get_kernel("exp:0.5"), torch.eye(4, dtype=F64)[:2]),
                              (1.0, get_kernel("linear"), torch.eye(4, dtype=F64)[2:])))),
    LinearClassification(3, 5, margin=0.2, flip=0.1),
    OrthonormalFeatures(4, 6, probs=(0.7, 0.2, 0.1)),
]


def _assert_within_se(estimate: torch.Tensor, exact: torch.Tensor, se: torch.Tensor) -> None:
    z = ((estimate - exact).abs() / se).max()
    assert float(z) <= MC_NUM_SE, (estimate, exact, float(z))


def _batches_equal(a: PromptBatch, b: PromptBatch) -> bool:
    same = all(torch.equal(x, y) for x, y in ((a.Z, b.Z), (a.target, b.target), (a.X, b.X), (a.y, b.y)))
    return same and a.latent.keys() == b.latent.keys() and all(torch.equal(a.latent[k], b.latent[k]) for k in a.latent)


# ---------------------------------------------------------------------- determinism and layout
@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
def test_same_seed_same_bits_and_prompt_layout(sampler) -> None:
    a = sampler.sample(7, torch.Generator().manual_seed(5))
    b = sampler.sample(7, torch.Generator().manual_seed(5))
    c = sampler.sample(7, torch.Generator().manual_seed(6))
    assert _batches_equal(a, b)
    assert not torch.equal(a.Z, c.Z)
    d, n = sampler.d, sampler.n
    assert a.Z.shape == (7, d + 1, n + 1) and a.X.shape == (7, d, n + 1) and a.y.shape == (7, n + 1)
    assert torch.equal(a.Z[:, :d], a.X) and torch.equal(a.Z[:, d, :n], a.y[:, :n])
    assert torch.equal(a.Z[:, d, n], torch.zeros(7, dtype=F64)) and torch.equal(a.target, a.y[:, n])
    assert torch.equal(embed(a.X, a.y), a.Z)
    assert a.n == n and a.d == d


# ---------------------------------------------------------------------- linear regression
def test_linear_regression_covariance_and_labels() -> None:
    task = LinearRegression(3, 4, sigma=SIGMA3)
    b = task.sample(3000, torch.Generator().manual_seed(1))
    x = b.X.permute(0, 2, 1).reshape(-1, 3)  # every token, i.i.d. N(0, Σ)
    N = x.shape[0]
    emp = x.T @ x / N
    se = torch.sqrt((torch.diag(SIGMA3)[:, None] * torch.diag(SIGMA3)[None, :] + SIGMA3**2) / N)
    _assert_within_se(emp, SIGMA3, se)
    assert rel_err(b.y, torch.einsum("bd,bdn->bn", b.latent["w"], b.X)) <= RTOL[F64]
    assert rel_err(b.X, sqrtm_psd(SIGMA3) @ b.latent["xi"]) <= RTOL[F64]


def test_linear_regression_task_covariance_inverse_and_noise() -> None:
    task = LinearRegression(3, 4, sigma=SIGMA3, task_cov="inverse", noise=0.3)
    b = task.sample(4000, torch.Generator().manual_seed(2))
    w = b.latent["w"]
    target = torch.linalg.inv(SIGMA3)
    se = torch.sqrt((torch.diag(target)[:, None] * torch.diag(target)[None, :] + target**2) / w.shape[0])
    _assert_within_se(w.T @ w / w.shape[0], target, se)
    eps = b.y - torch.einsum("bd,bdn->bn", w, b.X)
    var = (eps**2).mean()
    _assert_within_se(var, torch.tensor(0.09, dtype=F64), torch.tensor(0.09 * math.sqrt(2 / eps.numel())))


def test_sphere_covariates() -> None:
    b = LinearRegression(4, 3, covariates="sphere").sample(2000, torch.Generator().manual_seed(3))
    assert float((b.X.norm(dim=1) - 1).abs().max()) <= RTOL[F64]
    x = b.X.permute(0, 2, 1).reshape(-1, 4)
    emp = x.T @ x / x.shape[0]  # E xx^T = I/d; Var(x_i x_j) <= 1/d^2 -> generous se
    _assert_within_se(emp, torch.eye(4, dtype=F64) / 4, torch.full((4, 4), 0.25 / math.sqrt(x.shape[0]), dtype=F64))


# ---------------------------------------------------------------------- kernel GP
def test_kernel_gp_gram_and_label_covariance() -> None:
    task = KernelGP(3, 4, "exp")
    b = task.sample(3000, torch.Generator().manual_seed(4))
    xi = b.latent["xi"]
    K_hand = torch.exp(xi.mT @ xi) + task.jitter * torch.eye(5, dtype=F64)
    assert rel_err(b.latent["K"], K_hand) <= RTOL[F64]
    assert float((xi.norm(dim=1) - 1).abs().max()) <= RTOL[F64]
    # y ~ N(0, K) per prompt: whitened labels L^{-1} y are i.i.d. N(0, I)
    z = torch.linalg.solve_triangular(torch.linalg.cholesky(b.latent["K"]), b.y.unsqueeze(-1), upper=False).squeeze(-1)
    N = z.shape[0]
    eye = torch.eye(5, dtype=F64)
    _assert_within_se(z.T @ z / N, eye, torch.sqrt((1 + eye) / N))
    # the Bayes prediction is the GP posterior mean
    K = b.latent["K"]
    assert rel_err(task.bayes_prediction(b), alg.gp_posterior_mean(K[:, :4, :4], K[:, :4, 4], b.y[:, :4])) <= 1e-8


def test_kernel_gp_float32_labels_are_the_float64_factor_applied_to_float32_noise() -> None:
    """A smooth kernel's Gram matrix at n = 40 is singular in float32; the factor is taken in float64."""
    task = KernelGP(5, 40, "rbf", dtype=torch.float32)
    b = task.sample(16, torch.Generator().manual_seed(6))
    assert b.y.dtype == b.X.dtype == b.latent["K"].dtype == torch.float32
    g = torch.Generator().manual_seed(6)
    xi = torch.randn(16, 5, 41, generator=g, dtype=torch.float32)
    xi = xi / xi.norm(dim=1, keepdim=True)  # GP inputs on the sphere by default
    assert torch.equal(xi, b.latent["xi"])
    z = torch.randn(16, 41, 1, generator=g, dtype=torch.float32).double()
    L = torch.linalg.cholesky(task.gram(xi.double()))
    assert rel_err(b.y.double(), (L @ z).squeeze(-1)) <= RTOL[torch.float32]
    assert bool(torch.isfinite(task.bayes_prediction(b)).all())


def test_kernel_gp_on_whitened_inputs_with_sigma() -> None:
    task = KernelGP(3, 4, "linear", sigma=SIGMA3)
    b = task.sample(5, torch.Generator().manual_seed(5))
    xi = b.latent["xi"]
    assert rel_err(b.X, sqrtm_psd(SIGMA3) @ xi) <= RTOL[F64]
    assert rel_err(b.latent["K"], xi.mT @ xi + task.jitter * torch.eye(5, dtype=F64)) <= RTOL[F64]


@pytest.mark.parametrize("repair", ["abs", "clip"])
def test_relu_repair_makes_the_gram_psd(repair: str) -> None:
    task = KernelGP(2, 7, "relu", psd_repair=repair, jitter=1e-6)  # 8 points in d = 2: rank-deficient
    b = task.sample(50, torch.Generator().manual_seed(6))
    xi = b.latent["xi"]
    raw = torch.relu(xi.mT @ xi)
    ev_raw, Q = torch.linalg.eigh(raw)
    assert float(ev_raw.min()) < -1e-3  # the ReLU kernel is not PSD on these prompts
    fixed = ev_raw.abs() if repair == "abs" else ev_raw.clamp_min(0)
    expected = (Q * fixed.unsqueeze(-2)) @ Q.mT
    eye = torch.eye(8, dtype=F64)
    assert rel_err(b.latent["K"], expected + 1e-6 * eye) <= 1e-9
    assert float(torch.linalg.eigvalsh(b.latent["K"] - 1e-6 * eye).min()) >= -1e-12 * float(b.latent["K"].abs().max())


# ---------------------------------------------------------------------- classification, features
def test_linear_classification_labels_margin_and_flips() -> None:
    task = LinearClassification(3, 6, sigma=SIGMA3, margin=0.3)
    b = task.sample(500, torch.Generator().manual_seed(7))
    w = b.latent["w"]
    assert float((w.norm(dim=-1) - 1).abs().max()) <= RTOL[F64]
    proj = torch.einsum("bd,bdn->bn", w, b.X)
    assert torch.equal(b.y, torch.where(proj >= 0, 1.0, -1.0).to(F64))
    assert float(proj.abs().min()) >= 0.3 * (1 - RTOL[F64])
    noisy = LinearClassification(3, 6, margin=0.3, flip=0.2).sample(2000, torch.Generator().manual_seed(8))
    clean = torch.where(torch.einsum("bd,bdn->bn", noisy.latent["w"], noisy.X) >= 0, 1.0, -1.0).to(F64)
    rate = (noisy.y != clean).to(F64).mean()
    _assert_within_se(rate, torch.tensor(0.2, dtype=F64), torch.tensor(math.sqrt(0.2 * 0.8 / clean.numel())))


def test_orthonormal_features_frequencies_and_labels() -> None:
    probs = (0.6, 0.3, 0.1)
    F = random_rotation(5, torch.Generator().manual_seed(9))[:, :3]
    task = OrthonormalFeatures(5, 9, probs=probs, features=F)
    b = task.sample(2000, torch.Generator().manual_seed(10))
    idx = b.latent["feature"]
    assert rel_err(b.X, F.T[idx].transpose(1, 2)) <= RTOL[F64]
    N = idx.numel()
    freq = torch.bincount(idx.reshape(-1), minlength=3).to(F64) / N
    p = torch.tensor(probs, dtype=F64)
    _assert_within_se(freq, p, torch.sqrt(p * (1 - p) / N))
    assert rel_err(b.y, torch.einsum("bd,bdn->bn", b.latent["w"], b.X)) <= RTOL[F64]


# ---------------------------------------------------------------------- helpers
def test_covariance_helpers() -> None:
    g = torch.Generator().manual_seed(11)
    U = random_rotation(5, g)
    assert rel_err(U.T @ U, torch.eye(5, dtype=F64)) <= RTOL[F64]
    S = random_covariance(5, g)
    assert rel_err(torch.linalg.eigvalsh(S), torch.tensor(sorted(AHN_SPECTRUM), dtype=F64)) <= RTOL[F64]
    half, inv_half = sqrtm_psd(S), sqrtm_psd(S, -0.5)
    assert rel_err(half @ half, S) <= RTOL[F64] and rel_err(half @ inv_half, torch.eye(5, dtype=F64)) <= RTOL[F64]
    assert check_covariance(S, 5) is S


# ---------------------------------------------------------------------- bad input
def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match=r"d must be an int >= 1, got 0"):
        LinearRegression(0, 3)
    with pytest.raises(ValueError, match=r"n must be an int >= 1, got 0"):
        KernelGP(2, 0)
    with pytest.raises(ValueError, match=r"batch must be an int >= 1, got 0"):
        LinearRegression(2, 3).sample(0, torch.Generator())
    with pytest.raises(TypeError, match=r"dtype must be torch.float32 or torch.float64"):
        LinearClassification(2, 3, dtype=torch.int64)


def test_bad_covariances() -> None:
    with pytest.raises(ValueError, match=r"sigma is not positive definite \(smallest eigenvalue -1"):
        LinearRegression(2, 3, sigma=torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64))
    with pytest.raises(ValueError, match=r"sigma is not symmetric.*symmetric positive definite"):
        KernelGP(2, 3, sigma=torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=F64))
    with pytest.raises(ValueError, match=r"sigma must have shape \(3, 3\), got \(2, 2\)"):
        LinearClassification(3, 3, sigma=torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match=r"task_cov is not positive definite"):
        LinearRegression(2, 3, task_cov=torch.zeros(2, 2, dtype=F64))
    with pytest.raises(TypeError, match=r"sigma must be a torch.Tensor of shape \(2, 2\), got list"):
        check_covariance([[1.0, 0.0], [0.0, 1.0]], 2)  # type: ignore[arg-type]


def test_bad_options() -> None:
    with pytest.raises(ValueError, match=r"covariates must be 'gaussian' or 'sphere', got 'uniform'"):
        LinearRegression(2, 3, covariates="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"softmax \(normalised\) kernel is not a data kernel"):
        KernelGP(2, 3, "softmax")
    with pytest.raises(ValueError, match=r"unknown activation/kernel 'matern'; known: linear, relu"):
        KernelGP(2, 3, "matern")
    with pytest.raises(ValueError, match=r"probs must be positive and sum to 1, got \[0.5, 0.6\]"):
        OrthonormalFeatures(3, 4, probs=(0.5, 0.6))
    with pytest.raises(ValueError, match=r"probs must list K in \[1, d=2\] probabilities"):
        OrthonormalFeatures(2, 4, probs=(0.25, 0.25, 0.5))
    with pytest.raises(ValueError, match=r"flip must be in \[0, 0.5\), got 0.5"):
        LinearClassification(2, 3, flip=0.5)
    with pytest.raises(ValueError, match=r"embed needs X \(B, d, n\+1\) and y \(B, n\+1\)"):
        embed(torch.zeros(2, 3, 4), torch.zeros(2, 5))


def test_kernel_gp_singular_gram_without_jitter_is_a_clear_error() -> None:
    # the linear kernel on d = 1 inputs has rank 1, so 6 points give a singular Gram matrix
    task = KernelGP(d=1, n=5, kernel="linear", jitter=0.0)
    with pytest.raises(ValueError, match="singular.*jitter > 0"):
        task.sample(4, torch.Generator().manual_seed(0))
