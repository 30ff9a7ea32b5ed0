"""The Newton polish of landscape.numeric.fit reuses its Hessian: same fitted point, fewer Hessians.

Reference: the same fit with a fresh Hessian at every Newton step (``reuse=False``, the polish as
it was), from the same start on the same Monte-Carlo loss.
"""

from __future__ import annotations

import pytest
import torch

from landscape.theory.families import Problem, get_family
import landscape.numeric.fit as fitmod
from landscape.numeric.oracles import MonteCarloLoss
from landscape.core.tasks import KernelGP, LinearRegression, random_covariance

F64 = torch.float64


def _settings():
    sig = random_covariance(3, torch.Generator().manual_seed(7))
    pgd = Problem(d=3, layers=2, n=6, sigma=sig, attention="linear")
    fgd = Problem(d=3, layers=2, n=5, sigma=sig, attention="kernel", activations=("exp",))
    return [("pgd", pgd, LinearRegression(3, 6, sig, "gaussian", "inverse", 0.0, F64)),
            ("fgd", fgd, KernelGP(3, 5, "exp", sigma=sig, covariates="sphere"))]


@pytest.mark.parametrize("case", range(2), ids=["pgd", "fgd"])
def test_reused_hessian_gives_the_same_fit_with_fewer_hessians(case: int, monkeypatch: pytest.MonkeyPatch) -> None:
    name, problem, task = _settings()[case]
    fam = get_family(name, problem)
    loss = MonteCarloLoss.from_task(task, problem.spec, 1500, torch.Generator().manual_seed(11))
    counts = {"n": 0}
    real = fitmod._hessian

    def counting(pieces, s):
        counts["n"] += 1
        return real(pieces, s)

    monkeypatch.setattr(fitmod, "_hessian", counting)
    new = fitmod.fit_family(fam, loss, n_starts=0)
    n_new = counts["n"]
    counts["n"] = 0
    orig = fitmod._newton
    monkeypatch.setattr(fitmod, "_newton", lambda p, s, steps, tol: orig(p, s, steps, tol, reuse=False))
    old = fitmod.fit_family(fam, loss, n_starts=0)
    n_old = counts["n"]
    assert old.converged and new.converged, (old.message, new.message)
    tol = fitmod.STATIONARITY_ATOL[F64] * max(1.0, abs(old.loss))
    assert new.grad_norm <= tol
    # same point: the two polished points agree to the fit tolerance (gradient norm / curvature)
    assert float((new.values - old.values).abs().max()) < 1e-8 * max(1.0, float(old.values.abs().max()))
    assert abs(new.loss - old.loss) <= 1e-12 * max(1.0, abs(old.loss))
    assert n_new < n_old, (n_new, n_old)
    print(f"{name}: {n_new} Hessians with reuse, {n_old} without")
