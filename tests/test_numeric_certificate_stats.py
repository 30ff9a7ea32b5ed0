r"""The statistics behind the Monte-Carlo certificate, each against a simulation or a closed form.

* :func:`landscape.numeric.stats.norm_bounds`: unbiasedness of :math:`U = \lVert\bar e\rVert^2 -
  \mathrm{tr}\,\hat C` and the non-coverage of both bounds over many simulated replicate sets
  (Gaussian and heavy-tailed), against the nominal level plus binomial slack;
* the noise floor :math:`\sqrt{\mathrm{tr}\,C}` against the simulated RMS of :math:`\lVert\bar v\rVert`
  at :math:`v = 0`;
* every branch of :func:`landscape.numeric.decide` and the combined p-value (Bonferroni and alpha
  spending), and that the certificate uses them;
* the log–log slope (the :math:`T^{-1/2}` diagnostic) on simulated norms;
* the Neyman-orthogonalised score: with a deliberately small fitting sample, the plain normal
  gradient at the fitted point carries the fitting error (equal to the exact normal gradient there,
  one-layer exact loss), the orthogonalised score does not;
* the Hessian inertia modulo the model's symmetry (one-layer exact loss);
* streamed gradient moments equal the stored-sample moments, replicate batches included.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binom

from landscape.theory.families import Problem, get_family
from landscape.numeric import (
    MonteCarloLoss,
    certify_stationary,
    combined_p_value,
    decide,
    exact_loss_oracle,
    family_point,
    gradient,
    hessian,
    orthonormal_complement,
)
from landscape.numeric.oracles import streamed_gradient_moments
from landscape.numeric.stats import NormEstimate, log_log_slope, norm_bounds, norm_estimate, samples_to_decide
from landscape.core.tasks import LinearRegression, random_covariance

F64 = torch.float64


def _slack(level: float, n: int, p: float = 1e-4) -> float:
    """Largest non-coverage rate consistent with ``level`` at one-sided binomial p-value ``p``."""
    return float(binom.isf(p, n, level)) / n


def _replicates(g: torch.Generator, R: int, m: int, q: int, mu: torch.Tensor, tail: str) -> torch.Tensor:
    """``R`` means of ``m`` draws each; coordinates scaled 0.2..3; Gaussian, t(3) or product-of-Gaussians."""
    scale = torch.linspace(0.2, 3.0, q, dtype=F64)
    if tail == "gauss":
        X = torch.randn(R, m, q, generator=g, dtype=F64)
    elif tail == "t3":
        z = torch.randn(R, m, q, generator=g, dtype=F64)
        chi = torch.randn(R, m, q, 3, generator=g, dtype=F64).pow(2).sum(-1)
        X = z / torch.sqrt(chi / 3) / math.sqrt(3.0)
    else:  # heavy: a shared product of Gaussian factors per draw, as in deep linear attention
        a = torch.randn(R, m, 1, generator=g, dtype=F64)
        b = torch.randn(R, m, 1, generator=g, dtype=F64)
        X = torch.randn(R, m, q, generator=g, dtype=F64) * a * b * b / math.sqrt(3.0)
    return (X * scale).mean(1) + mu


@pytest.mark.parametrize("tail", ["gauss", "t3", "products"])
@pytest.mark.parametrize("q", [2, 30])
def test_norm_bounds_cover_at_the_nominal_level(tail: str, q: int) -> None:
    g = torch.Generator().manual_seed(10 + q)
    R, m, sims, alpha = 32, 40, 600, 0.02
    scale = torch.linspace(0.2, 3.0, q, dtype=F64)
    floor = math.sqrt(float((scale**2).sum()) / (R * m))
    for factor in (0.0, 1.0, 4.0):
        mu = torch.zeros(q, dtype=F64)
        mu[-1] = factor * floor
        true = float(mu.norm())
        miss_up = miss_lo = 0
        Us = []
        for _ in range(sims):
            b = norm_bounds(_replicates(g, R, m, q, mu, tail), alpha)
            Us.append(b.estimate_sq)
            miss_up += b.upper < true
            miss_lo += b.lower > true
            assert b.lower <= b.upper
        limit = _slack(alpha, sims)
        assert miss_up / sims <= limit, (tail, q, factor, miss_up / sims)
        assert miss_lo / sims <= limit, (tail, q, factor, miss_lo / sims)
        U = torch.tensor(Us)
        assert abs(float(U.mean()) - true**2) < 4 * float(U.std()) / math.sqrt(sims)  # unbiased


def test_norm_bounds_closed_form_pieces() -> None:
    E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]], dtype=F64)
    b = norm_bounds(E, 0.05)
    R = 4
    pairs = sum(float(E[r] @ E[s]) for r in range(R) for s in range(R) if r != s)
    assert abs(b.estimate_sq - pairs / (R * (R - 1))) < 1e-12
    ebar = E.mean(0)
    C = torch.cov(E.T) / R
    assert abs(b.estimate_sq - (float(ebar @ ebar) - float(C.trace()))) < 1e-12
    assert abs(b.lam_max - float(torch.linalg.eigvalsh(C).max())) < 1e-12
    # the upper bound solves rho^2 - U = t sqrt(4 rho^2 lam + 2 w)
    x = b.upper**2
    assert abs((x - b.estimate_sq) - b.quantile * math.sqrt(4 * x * b.lam_max + 2 * b.tr_c2)) < 1e-9
    with pytest.raises(ValueError, match="R >= 3"):
        norm_bounds(E[:2], 0.05)
    with pytest.raises(ValueError, match="alpha"):
        norm_bounds(E, 1.5)


def test_samples_to_decide_reaches_tol_and_refuses_when_estimate_exceeds_it() -> None:
    g = torch.Generator().manual_seed(3)
    b = norm_bounds(_replicates(g, 32, 40, 5, torch.zeros(5, dtype=F64), "gauss"), 0.01)
    tol = b.upper / 3
    need = samples_to_decide(b, 1000, tol)
    assert need is not None and need > 1000
    # at the proposed size the extrapolated bound (U kept, C scaled by 1000/need) is below tol
    c = need / 1000
    from landscape.numeric.stats import _score_upper

    assert math.sqrt(_score_upper(max(b.estimate_sq, 0), b.lam_max / c, b.tr_c2 / c**2, b.quantile)) <= tol
    big = norm_bounds(_replicates(g, 32, 40, 5, torch.full((5,), 3.0, dtype=F64), "gauss"), 0.01)
    assert samples_to_decide(big, 1000, 1.0) is None  # U > tol^2: more samples should reject, not accept


def test_noise_floor_is_the_rms_of_a_zero_mean_estimate() -> None:
    g = torch.Generator().manual_seed(4)
    q, T, sims = 6, 50, 4000
    A = torch.randn(q, q, generator=g, dtype=F64)
    Sigma = A @ A.T + 0.1 * torch.eye(q, dtype=F64)
    L = torch.linalg.cholesky(Sigma)
    norms = []
    for _ in range(sims):
        x = (torch.randn(T, q, generator=g, dtype=F64) @ L.T).mean(0)
        norms.append(float(x.norm()))
    rms = math.sqrt(sum(v * v for v in norms) / sims)
    est = norm_estimate(torch.zeros(q, dtype=F64) + 1e-300, Sigma / T)
    assert abs(est.noise_floor - rms) / rms < 0.03, (est.noise_floor, rms)
    assert abs(est.noise_floor - math.sqrt(float(Sigma.trace()) / T)) < 1e-12


# ---------------------------------------------------------------------- decision rule
def test_decide_every_branch() -> None:
    a = [0.01 / 3] * 3
    assert decide([0.5, 0.001, 0.9], a, [5.0, 5.0, 5.0], 0.1) == ("not_stationary", 1)
    assert decide([0.5, 0.4, 0.9], a, [5.0, 0.08, 5.0], 0.1) == ("stationary", 1)
    assert decide([0.5, 0.4, 0.9], a, [5.0, 0.2, 0.11], 0.1) == ("inconclusive", None)
    # rejection wins over acceptance (a small but significant normal gradient is reported as such)
    assert decide([0.5, 0.4, 1e-5], a, [0.05, 0.2, 0.2], 0.1) == ("not_stationary", 2)
    # the level is per look: p = 0.004 is below alpha = 0.01 but not below alpha / 3
    assert decide([0.004], [0.01 / 3], [1.0], 0.1)[0] == "inconclusive"
    assert decide([0.004], [0.01], [1.0], 0.1)[0] == "not_stationary"
    assert decide([0.5], [0.01], [0.1], 0.1)[0] == "stationary"  # upper == tol is within tol
    with pytest.raises(ValueError, match="one p-value"):
        decide([0.5], [0.01, 0.01], [1.0], 0.1)


def test_combined_p_value_bonferroni_and_spending() -> None:
    assert combined_p_value([0.2, 0.01, 0.5], [0.001 / 3] * 3, 0.001) == pytest.approx(0.03)
    spend = [0.001 * 2.0 ** -(k + 1) for k in range(3)]
    assert combined_p_value([0.2, 0.01, 0.5], spend, 0.001) == pytest.approx(min(0.4, 0.04, 4.0))
    assert combined_p_value([0.9, 0.8], [0.0005, 0.0005], 0.001) == 1.0


def test_log_log_slope_of_simulated_norms() -> None:
    """The T^-1/2 diagnostic: a pure-noise mean shrinks with slope -1/2, a non-zero mean with slope 0."""
    g = torch.Generator().manual_seed(5)
    sizes = [250, 1000, 4000, 16000]
    q = 4
    for mean, target in ((0.0, -0.5), (2.0, 0.0)):
        slopes = []
        for _ in range(60):
            norms = []
            for T in sizes:
                x = torch.randn(T, q, generator=g, dtype=F64) + mean
                norms.append(norm_estimate(x.mean(0), torch.eye(q, dtype=F64) / T))
            slopes.append(log_log_slope(sizes, norms)[0])
        avg = sum(slopes) / len(slopes)
        assert abs(avg - target) < 0.08, (mean, avg)
    assert all(math.isnan(v) for v in log_log_slope([100], [NormEstimate(1.0)]))


# ---------------------------------------------------------------------- certificate integration
def _pgd(L: int, d: int = 2, n: int = 20, task_cov: str = "inverse") -> tuple[Problem, LinearRegression]:
    sig = random_covariance(d, torch.Generator().manual_seed(100))
    return (Problem(d=d, layers=L, n=n, sigma=sig, attention="linear"),
            LinearRegression(d, n, sigma=sig, task_cov=task_cov))


def test_certificate_levels_p_value_and_inconclusive_branch() -> None:
    """Fixed design: each of K looks at alpha/K, combined p = K min p; a tolerance below what the sample
    resolves gives ``inconclusive`` with a proposed sample size larger than the one used."""
    problem, task = _pgd(2)
    cert = certify_stationary(get_family("pgd", problem), task, mask="blocks", samples=(400, 1600),
                              generator=torch.Generator().manual_seed(0), hessian_samples=0, n_starts=0,
                              tol=1e-3, alpha=0.01)
    assert cert.verdict == "inconclusive", cert.reason
    assert [r.alpha for r in cert.per_sample_size] == [0.005, 0.005]
    assert cert.p_value == pytest.approx(min(1.0, 2 * min(r.p_value for r in cert.per_sample_size)))
    assert cert.samples_to_decide is not None and cert.samples_to_decide > 1600
    assert "within tol" in cert.reason and cert.normal_upper > 1e-3
    assert cert.design == "fixed" and cert.tol == 1e-3 and cert.tol_source == "given"
    # the same evidence with a generous tolerance is a certified 'stationary'
    loose = certify_stationary(get_family("pgd", problem), task, mask="blocks", samples=(400, 1600),
                               generator=torch.Generator().manual_seed(0), hessian_samples=0, n_starts=0,
                               tol=10.0, alpha=0.01)
    assert loose.verdict == "stationary" and "stationary within tol = 10" in loose.reason
    assert loose.normal_upper <= 10.0


def test_sequential_design_spends_alpha_and_stops_when_decisive() -> None:
    problem, task = _pgd(2)
    fam = get_family("pgd-identity", problem)
    cert = certify_stationary(fam, task, mask="blocks", samples=(200,), budget={"prompts": 200_000},
                              generator=torch.Generator().manual_seed(1), hessian_samples=0, n_starts=0, tol=0.01)
    assert cert.design == "sequential" and cert.verdict == "not_stationary", cert.reason
    looks = cert.per_sample_size
    assert [r.samples for r in looks] == [200 * 4**k for k in range(len(looks))]
    assert [r.alpha for r in looks] == [1e-3 * 2.0 ** -(k + 1) for k in range(len(looks))]
    assert looks[-1].p_value < looks[-1].alpha and all(r.p_value >= r.alpha for r in looks[:-1])
    assert cert.stop.startswith(f"decisive at look {len(looks)}")
    d = cert.to_dict()
    assert len(d["per_sample_size"]) == len(looks) and d["per_sample_size"][0]["bounds"]["upper"] >= 0
    # out of budget: a tolerance that cannot be met stops at the prompt budget, inconclusive
    small = certify_stationary(get_family("pgd", problem), task, mask="blocks", samples=(200,), budget=3000,
                               generator=torch.Generator().manual_seed(1), hessian_samples=0, n_starts=0,
                               tol=1e-4)
    assert small.verdict == "inconclusive" and small.stop.startswith("prompt budget")
    assert sum(2 * r.samples for r in small.per_sample_size) <= 3000
    with pytest.raises(ValueError, match="budget"):
        certify_stationary(fam, task, mask="blocks", samples=(200,), budget=100,
                           generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="budget"):
        certify_stationary(fam, task, mask="blocks", samples=(200,), budget={"minutes": 3},
                           generator=torch.Generator().manual_seed(1))


def test_orthogonalised_score_removes_the_fitting_error() -> None:
    """One layer, all entries, exact truth: the family holds a stationary point, so at the fitted point
    the true normal gradient is exactly the first-order effect of the fitting error. With a small
    fitting sample (160 prompts for T = 8000) the plain projection sees it (it equals the exact normal
    gradient there, up to 4.5 noise floors); the Neyman-orthogonalised score removes its first-order
    part. Measured over seeds 0-5: directional t = 0.1, 1.7, 4.6, -0.1, -0.7, 1.7 (mean 1.2, one
    rejection: the second-order fitting error remains); without the orthogonalisation t = -0.2, 5.5,
    8.9, 2.8, 1.6, 3.4 (mean 3.7, three rejections)."""
    problem, task = _pgd(1, d=2, n=20)
    fam = get_family("pgd", problem)
    ex = exact_loss_oracle(problem, task)
    if ex is None:
        pytest.skip("the symbolic layer provides no exact loss for this setting")
    ratios, ts, rejections = [], [], 0
    for seed in range(6):
        cert = certify_stationary(fam, task, samples=(8000,), fit_ratio=0.02, family_loss=None,
                                  generator=torch.Generator().manual_seed(seed), hessian_samples=0, n_starts=0,
                                  tol=1.0)
        r = cert.per_sample_size[-1]
        s = family_point(fam, r.point)
        _, N = orthonormal_complement(fam.tangent_basis(s))
        exact_normal = float((N.T @ gradient(ex, fam.flat(s))).norm())
        assert abs(r.normal.value - exact_normal) < 3 * r.normal.noise_floor + 0.2 * exact_normal
        ratios.append(r.normal.value / r.normal.noise_floor)
        ts.append(r.tests["directional"][0])
        rejections += cert.verdict == "not_stationary"
    assert max(ratios) > 4, ratios  # the fitting error is visible in the plain projection
    assert sum(ts) / len(ts) < 2.0 and rejections <= 1, ts


def test_hessian_summary_is_taken_modulo_the_scaling_symmetry() -> None:
    problem, task = _pgd(1, d=2, n=20)
    ex = exact_loss_oracle(problem, task)
    if ex is None:
        pytest.skip("the symbolic layer provides no exact loss for this setting")
    fam = get_family("pgd", problem)
    cert = certify_stationary(fam, ex)
    h = cert.hessian
    assert h is not None and h.n_symmetry == 1 and h.reduced is not None
    assert h.reduced.n_zero == h.n_zero - 1 and h.reduced.n_pos == h.n_pos
    # the generator of P -> e^t P, Q -> e^-t Q, written out here, is a null direction of the Hessian
    theta = fam.flat(family_point(fam, cert.point))
    p = fam.params(cert.point)
    gen = torch.cat([p[k].flatten() * (1.0 if k.endswith(".P") else -1.0) for k in p])
    H = hessian(ex, theta)
    assert float((H @ gen).norm()) < 1e-8 * float(H.norm()) * float(gen.norm())


def test_streamed_moments_equal_stored_moments() -> None:
    problem, task = _pgd(2)
    theta = get_family("pgd", problem).flat(torch.tensor([0.4, 0.6], dtype=F64))
    a = MonteCarloLoss.from_task(task, problem.spec, 301, torch.Generator().manual_seed(9), chunk_size=64)
    ma = a.gradient_moments(theta, batches=7)
    mb = streamed_gradient_moments(task, problem.spec, theta, 301, torch.Generator().manual_seed(9),
                                   chunk_size=64, batches=7)
    assert torch.allclose(ma.mean, mb.mean, atol=1e-12, rtol=0) and torch.allclose(ma.cov, mb.cov, atol=1e-10)
    assert abs(ma.loss - mb.loss) < 1e-12 and ma.count == mb.count == 301
    G = torch.cat([a.per_prompt_gradients(theta, lo, min(lo + 64, 301)) for lo in range(0, 301, 64)])
    idx = torch.arange(301) * 7 // 301
    ref = torch.stack([G[idx == r].mean(0) for r in range(7)])
    assert torch.allclose(mb.batch_means, ref, atol=1e-12) and torch.allclose(ma.batch_means, ref, atol=1e-12)
