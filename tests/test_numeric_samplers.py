"""Prompt samplers of the certificate: given normal draws, scrambled Sobol batches, antithetic pairs.

References: the sampling formulas of Ahn et al.'s regression prompts and of GP prompts written out
here independently of :mod:`landscape.core.tasks`; the exact one-layer population loss of the symbolic
layer (unbiasedness of every batch of every sampler); i.i.d. simulations for the variance ratio.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chi2

from landscape.core.tasks import KernelGP, LinearRegression, random_covariance, sqrtm_psd
from landscape.numeric.oracles import MonteCarloLoss, SAMPLERS, prompt_chunks, streamed_gradient_moments
from landscape.numeric.stats import variance_ratio


def _sigma(d: int, seed: int) -> torch.Tensor:
    return random_covariance(d, torch.Generator().manual_seed(seed))


def test_linear_regression_sample_is_the_documented_formula_of_its_normal_draws() -> None:
    """Default sampling is unchanged: ``sample`` equals the formula applied to randn draws in the order xi, w, noise."""
    sig = _sigma(3, 1)
    task = LinearRegression(3, 5, sigma=sig, task_cov="inverse", noise=0.3)
    b = task.sample(6, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    xi = torch.randn(6, 3, 6, generator=g, dtype=torch.float64)
    w = torch.randn(6, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 6, generator=g, dtype=torch.float64)
    X = sqrtm_psd(sig) @ xi
    w = w @ sqrtm_psd(torch.linalg.inv(sig))
    y = sum(X[:, k] * w[:, k:k + 1] for k in range(3)) + 0.3 * eps  # the ordered, unfused label sum
    assert torch.equal(b.X, X) and torch.equal(b.y, y) and torch.equal(b.target, y[:, -1])
    assert torch.equal(b.Z[:, -1, :-1], y[:, :-1]) and bool((b.Z[:, -1, -1] == 0).all())


def test_kernel_gp_sample_is_the_documented_formula_of_its_normal_draws() -> None:
    sig = _sigma(2, 3)
    task = KernelGP(2, 4, "exp", sigma=sig, covariates="sphere")
    b = task.sample(5, torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    xi = torch.randn(5, 2, 5, generator=g, dtype=torch.float64)
    z = torch.randn(5, 5, 1, generator=g, dtype=torch.float64)
    xi = xi / xi.norm(dim=1, keepdim=True)
    K = torch.exp(xi.transpose(1, 2) @ xi) + 1e-8 * torch.eye(5, dtype=torch.float64)
    y = (torch.linalg.cholesky(K) @ z).squeeze(-1)
    assert torch.allclose(b.y, y, rtol=1e-12, atol=1e-12) and torch.equal(b.X, sqrtm_psd(sig) @ xi)


def test_from_normals_rejects_wrong_draws() -> None:
    task = LinearRegression(2, 3)
    with pytest.raises(ValueError, match="'w' must have shape"):
        task.from_normals({"xi": torch.zeros(4, 2, 4, dtype=torch.float64), "w": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="sampler must be one of"):
        MonteCarloLoss.from_task(task, None, 10, torch.Generator(), sampler="sobol")  # type: ignore[arg-type]


def test_antithetic_pairs_negate_the_labels_and_keep_the_covariates() -> None:
    task = LinearRegression(2, 6, sigma=_sigma(2, 5), task_cov="inverse", noise=0.1)
    (b,) = list(prompt_chunks(task, 9, torch.Generator().manual_seed(0), 100, "antithetic"))
    assert b.Z.shape[0] == 9
    assert torch.equal(b.X[0::2][:4], b.X[1::2]) and torch.equal(b.y[0::2][:4], -b.y[1::2])
    # the odd count: the last prompt is the first half of a pair, with fresh draws
    assert not torch.equal(b.X[8], b.X[6])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_batch_of_every_sampler_is_unbiased_for_the_exact_loss(sampler: str) -> None:
    """32 independent batches (one Sobol scrambling each for qmc) estimate the exact one-layer loss:
    the z-score of their mean against the symbolic population loss is within 4 replicate SEs."""
    from landscape.symbolic import exact_loss_fn
    from landscape.theory.families import Problem, get_family

    sig = _sigma(2, 8)
    prob = Problem(d=2, layers=1, n=6, sigma=sig, attention="linear")
    task = LinearRegression(2, 6, sigma=sig, task_cov="inverse")
    fam = get_family("pgd", prob)
    params = fam.params(torch.tensor([0.4], dtype=torch.float64))
    exact = float(exact_loss_fn(prob, task)(params))
    g = torch.Generator().manual_seed(3)
    means = []
    for _ in range(32):
        (b,) = list(prompt_chunks(task, 256, g, 4096, sampler))
        oracle = MonteCarloLoss(fam.spec, b.Z, b.target)
        means.append(float(oracle(fam.flat(torch.tensor([0.4], dtype=torch.float64)))))
    m = torch.tensor(means, dtype=torch.float64)
    z = (float(m.mean()) - exact) / (float(m.std()) / math.sqrt(32))
    assert abs(z) < 4, (sampler, float(m.mean()), exact, z)


def test_qmc_batches_are_independent_scramblings_with_less_variance_than_iid() -> None:
    """Scrambled Sobol batches integrate smooth low-order functions of the normals far better than
    i.i.d. batches: over 40 batches of 256 prompts (d = 1, n = 1: 3 normals per prompt), the batch means
    of the query covariate x (linear), of the label y = w x (a product) and of x_1^2 vary at least 20
    times less (measured about 1700, 66 and 65; a ratio of 20 has F-test p < 1e-12 on 39 and 39
    degrees of freedom if the variances were equal). A wrong Sobol-to-Gaussian map, one scrambling
    shared by all batches, or an unscrambled sequence would fail this or the two checks after it."""
    from scipy.stats import f as f_dist

    task = LinearRegression(1, 1)
    spread = {}
    for sampler in ("mc", "qmc"):
        g = torch.Generator().manual_seed(1)
        means = []
        for _ in range(40):
            (b,) = list(prompt_chunks(task, 256, g, 4096, sampler))
            means.append(torch.stack([b.X[:, 0, 1].mean(), b.target.mean(), (b.X[:, 0, 0] ** 2).mean()]))
        M = torch.stack(means)
        spread[sampler] = M.var(0)
        if sampler == "qmc":  # unbiased: the means of x, y and x^2 are 0, 0 and 1
            assert torch.allclose(M.mean(0), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=0.02), M.mean(0)
    ratio = spread["mc"] / spread["qmc"]
    assert f_dist.sf(20.0, 39, 39) < 1e-12 and bool((ratio > 20).all()), ratio
    g = torch.Generator().manual_seed(2)
    (a,) = list(prompt_chunks(task, 8, g, 100, "qmc"))
    (b,) = list(prompt_chunks(task, 8, g, 100, "qmc"))
    assert not torch.allclose(a.X, b.X)
    # the moments accumulate one scrambling per replicate batch
    from landscape.theory.families import Problem, get_family

    fam = get_family("pgd", Problem(d=1, layers=1, n=1, attention="linear"))
    theta = fam.flat(torch.tensor([0.3], dtype=torch.float64)).detach()
    mom = streamed_gradient_moments(task, fam.spec, theta, 64, torch.Generator().manual_seed(0), batches=4,
                                    sampler="qmc")
    assert mom.sampler == "qmc" and mom.batch_means.shape == (4, theta.numel()) and mom.count == 64


def test_variance_ratio_recovers_a_known_scale() -> None:
    """Replicates i.i.d. N(0, κ C0) with κ = 0.3: the estimate is within its chi-square interval."""
    g = torch.Generator().manual_seed(0)
    q, M, kappa = 10, 64, 0.3
    A = torch.randn(q, q, generator=g, dtype=torch.float64)
    C0 = A @ A.T / q + 0.1 * torch.eye(q, dtype=torch.float64)
    L = torch.linalg.cholesky(kappa * C0 * M)  # batch means of a mean whose covariance is kappa C0
    hits = 0
    for _ in range(200):
        E = torch.randn(M, q, generator=g, dtype=torch.float64) @ L.T
        k = variance_ratio(E, C0)
        hits += k >= kappa  # the max of two estimates: at least the trace estimate
    # the trace estimate alone is below kappa about half the time; the max is below only when both are
    assert hits / 200 > 0.5
    E = torch.randn(M, q, generator=g, dtype=torch.float64) @ L.T
    k = variance_ratio(E, C0)
    lo, hi = chi2.ppf(1e-4, M - 1) / (M - 1), chi2.isf(1e-4, M - 1) / (M - 1)
    assert kappa * lo < k < kappa * hi * 1.5, k
    with pytest.raises(ValueError, match="M >= 3"):
        variance_ratio(E[:2], C0)


def test_bad_sampler_is_refused_before_any_work() -> None:
    """An unknown sampler, or one the task cannot serve, is a one-line ValueError before sampling."""
    from landscape.core.tasks import OrthonormalFeatures
    from landscape.numeric.certificate import certify_stationary
    from landscape.theory.families import Problem, get_family

    fam = get_family("pgd", Problem(d=2, layers=2, n=20, attention="linear"))
    with pytest.raises(ValueError, match="sampler must be one of"):
        certify_stationary(fam, LinearRegression(2, 20), samples=(400,), generator=torch.Generator(),
                           sampler="sobol")
    with pytest.raises(ValueError, match="standard-normal draws"):
        certify_stationary(fam, OrthonormalFeatures(2, 20), samples=(400,), generator=torch.Generator(),
                           sampler="qmc")
