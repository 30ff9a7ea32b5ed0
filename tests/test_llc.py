"""Local learning coefficient by SGLD (landscape.numeric.llc) against closed forms and an exact family loss."""

from __future__ import annotations

import math

import pytest
import torch

from landscape.core.model import ModelSpec, num_params
from landscape.numeric.llc import local_learning_coefficient, quadratic_llc

F64 = torch.float64
SPEC = ModelSpec.linear(d=1, layers=1)  # 8 parameters, used only as the flat vector's shape


def _loss_on_flat(fn):
    from landscape.core.model import flatten_params

    return lambda params: fn(flatten_params(params, SPEC))


@pytest.mark.slow
def test_quadratic_rank_three_matches_the_discrete_chain_closed_form():
    P = num_params(SPEC)
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=F64))
    lam = torch.tensor([1.0, 2.0, 4.0] + [0.0] * (P - 3), dtype=F64)
    H = Q @ torch.diag(lam) @ Q.T
    loss = _loss_on_flat(lambda w: 0.5 * w @ H @ w + 0.3)
    n, gamma = 10_000, 5.0
    nb = n / math.log(n)
    eps = 0.4 / (nb * 4.0 + gamma)
    ref = quadratic_llc(lam, n=n, gamma=gamma, step_size=eps)
    est = local_learning_coefficient(loss, torch.zeros(P, dtype=F64), g, n=n, gamma=gamma, step_size=eps,
                                     steps=3000, chains=16, spec=SPEC)
    assert abs(est.value - ref) <= 4 * est.se, (est.value, est.se, ref)
    # the flat directions add nothing: the coefficient is rank / 2 up to the localisation and the step
    assert quadratic_llc(lam, n=n, gamma=gamma) == pytest.approx(1.5, rel=0.01)
    assert abs(est.value - 1.5) <= 4 * est.se + 0.1


def test_quartic_direction_has_coefficient_one_quarter():
    """L = w_0^4: the coefficient is 1/4. Reference: the estimator's expectation by 1-D quadrature."""
    P = num_params(SPEC)
    n, gamma, eps = 10_000, 1.0, 2e-4
    nb = n / math.log(n)
    loss = _loss_on_flat(lambda w: w[0] ** 4)
    est = local_learning_coefficient(loss, torch.zeros(P, dtype=F64), torch.Generator().manual_seed(1), n=n,
                                     gamma=gamma, step_size=eps, steps=4000, chains=16, spec=SPEC)
    x = torch.linspace(-1.5, 1.5, 200001, dtype=F64)
    dens = torch.exp(-nb * x**4 - gamma * x**2 / 2)
    ref = nb * float(torch.trapezoid(x**4 * dens, x) / torch.trapezoid(dens, x))
    assert ref == pytest.approx(0.25, abs=0.01)
    assert abs(est.value - ref) <= 4 * est.se + 0.01, (est.value, est.se, ref)


@pytest.mark.slow
def test_exact_family_loss_at_the_pgd_minimum_gives_half_the_hessian_rank():
    """One layer of linear attention, d = 2, at the pgd family's minimum a0 = 8/11 of the exact loss: the
    Hessian has rank 8 and its ten zero directions are flat at the sampler's scale, so lambda = 8/2 = 4."""
    from landscape.core.tasks import LinearRegression
    from landscape.numeric.derivatives import hessian
    from landscape.numeric.oracles import exact_loss_oracle
    from landscape.theory.families import Problem, get_family

    problem = Problem(d=2, layers=1, n=8, attention="linear")
    fam = get_family("pgd", problem)
    oracle = exact_loss_oracle(problem, LinearRegression(2, 8, dtype=F64))
    theta = fam.flat(torch.tensor([8 / 11], dtype=F64))
    ev = torch.linalg.eigvalsh(hessian(oracle, theta))
    rank = int((ev > 1e-8 * ev.abs().max()).sum())
    assert rank == 8
    n, gamma = 10_000, 10.0
    eps = 0.5 / (n / math.log(n) * float(ev.max()) + gamma)
    est = local_learning_coefficient(oracle, theta, torch.Generator().manual_seed(0), n=n, gamma=gamma,
                                     step_size=eps, steps=1500, chains=8)
    lo = quadratic_llc(ev.clamp(min=0), n=n, gamma=gamma)                 # continuous diffusion, 3.98
    hi = quadratic_llc(ev.clamp(min=0), n=n, gamma=gamma, step_size=eps)  # discretised chain, 4.18
    assert lo - 4 * est.se <= est.value <= hi + 4 * est.se, (est.value, est.se, lo, hi)
    assert abs(est.value - rank / 2) <= 4 * est.se + 0.2


def test_bad_constants():
    P = num_params(SPEC)
    loss = _loss_on_flat(lambda w: (w**2).sum())
    g = torch.Generator()
    with pytest.raises(ValueError, match="step_size"):
        local_learning_coefficient(loss, torch.zeros(P, dtype=F64), g, step_size=0.0, spec=SPEC)
    with pytest.raises(ValueError, match="burn_in"):
        local_learning_coefficient(loss, torch.zeros(P, dtype=F64), g, steps=10, burn_in=10, spec=SPEC)
    with pytest.raises(ValueError, match="diverged"):
        local_learning_coefficient(loss, torch.zeros(P, dtype=F64), g, n=10_000, step_size=1.0, steps=200, spec=SPEC)
    with pytest.raises(ValueError, match="unstable"):
        quadratic_llc(torch.tensor([1.0]), n=100, gamma=0.0, step_size=1.0)
