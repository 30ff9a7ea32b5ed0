"""The standard error the LLC estimate reports is honest: calibration over independent noise seeds.

On a rank-3 quadratic :math:`L = \\frac12 w^\\top H w` the estimator's expectation at the sampler's
settings is known in closed form (:func:`landscape.numeric.llc.quadratic_llc`, the discretised
chain's stationary law). Over many noise seeds, the interval ``value ± 2 se`` (``se`` over 8
independent chains, so ``(value - E)/se`` is Student-t with 7 degrees of freedom) must cover that
expectation as often as the t law says, 91.4 %, and the standardised errors must centre on zero.
"""

from __future__ import annotations

import math

import torch
from scipy import stats

from landscape.core.model import ModelSpec, flatten_params, num_params
from landscape.numeric.llc import local_learning_coefficient, quadratic_llc

F64 = torch.float64
SPEC = ModelSpec.linear(d=1, layers=1)  # 8 parameters, only the flat vector's shape


def test_two_standard_error_intervals_cover_at_the_student_t_rate() -> None:
    P = num_params(SPEC)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=torch.Generator().manual_seed(0), dtype=F64))
    lam = torch.tensor([1.0, 2.0, 4.0] + [0.0] * (P - 3), dtype=F64)
    H = Q @ torch.diag(lam) @ Q.T

    def loss(params):
        w = flatten_params(params, SPEC)
        return 0.5 * w @ H @ w

    n, gamma, chains = 10_000, 5.0, 8
    eps = 0.4 / (n / math.log(n) * 4.0 + gamma)
    ref = quadratic_llc(lam, n=n, gamma=gamma, step_size=eps)
    reps = 60
    z = []
    for seed in range(reps):
        est = local_learning_coefficient(loss, torch.zeros(P, dtype=F64), torch.Generator().manual_seed(1000 + seed),
                                         n=n, gamma=gamma, step_size=eps, steps=600, chains=chains, spec=SPEC)
        z.append((est.value - ref) / est.se)
    z_t = torch.tensor(z, dtype=F64)
    covered = int((z_t.abs() <= 2.0).sum())
    level = 2 * stats.t.cdf(2.0, chains - 1) - 1  # 0.914
    p = stats.binomtest(covered, reps, level).pvalue
    assert p > 1e-3, (covered, reps, level, z)
    # no bias: the mean standardised error is within four of its standard errors of zero
    assert abs(float(z_t.mean())) <= 4 * math.sqrt((chains - 1) / (chains - 3) / reps), float(z_t.mean())
