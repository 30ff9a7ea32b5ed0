r"""Local learning coefficient (LLC) of a point of the loss, estimated by SGLD (Lau et al. 2023).

Singular learning theory measures the degeneracy of a minimum :math:`w^*` by its learning
coefficient :math:`\lambda`: the volume of :math:`\{w: L(w) - L(w^*) < \epsilon\}` scales as
:math:`\epsilon^{\lambda}` (up to logarithms). For a non-degenerate quadratic minimum in
:math:`\mathbb R^P`, :math:`\lambda = P/2`; for a quadratic of rank :math:`r` whose other
directions are exactly flat, :math:`\lambda = r/2`; for :math:`L = w^{2k}` in one dimension,
:math:`\lambda = 1/(2k)`. The estimator of Lau, Furman, Wang, Murfet, Wei (2023) (as in devinterp)
samples the localised tempered posterior

.. math::
    p(w) \propto \exp\Big(-n\beta\,L(w) - \frac{\gamma}{2}\lVert w - w^*\rVert^2\Big),
    \qquad \beta = 1/\log n,

by stochastic-gradient Langevin dynamics

.. math:: w_{t+1} = w_t - \frac{\epsilon}{2}\big(n\beta\nabla L(w_t) + \gamma (w_t - w^*)\big) + \sqrt{\epsilon}\,\xi_t,
          \qquad \xi_t \sim N(0, I),

and returns :math:`\hat\lambda = n\beta\,(\overline{L(w_t)} - L(w^*))` averaged over the draws after
burn-in and over independent chains, with the standard error over chains. Here :math:`L` is a
loss oracle evaluated in full (the exact population loss, or a Monte-Carlo loss on fixed prompts),
and :math:`n` is the nominal sample size that sets the temperature.

For a quadratic :math:`L = L_0 + \frac12 w^\top H w` the discretised chain is Gaussian with the
closed-form stationary law of :func:`quadratic_llc` (the reference the tests hold SGLD to).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from landscape._checks import check_int, check_real
from landscape.core.model import ModelSpec
from landscape.numeric.derivatives import _check_flat
from landscape.numeric.oracles import LossOracle, as_oracle

__all__ = ["LLCEstimate", "local_learning_coefficient", "quadratic_llc"]


@dataclass(frozen=True)
class LLCEstimate:
    r"""An SGLD estimate of the local learning coefficient.

    Attributes:
        value: :math:`\hat\lambda` (mean over chains).
        se: standard error over chains.
        per_chain: ``(chains,)`` estimates.
        n, beta, gamma, step_size: the sampler's constants.
        steps, burn_in: SGLD steps per chain and how many were discarded.
        loss_star: :math:`L(w^*)`.
        loss_trace: ``(steps,)`` mean over chains of :math:`L(w_t)` (to judge burn-in and stability).
        diverged: chains whose loss became non-finite (left out of the estimate).
    """

    value: float
    se: float
    per_chain: torch.Tensor
    n: int
    beta: float
    gamma: float
    step_size: float
    steps: int
    burn_in: int
    loss_star: float
    loss_trace: torch.Tensor
    diverged: int = 0

    def summary(self) -> dict[str, object]:
        return {"llc": self.value, "se": self.se, "chains": int(self.per_chain.numel()), "n": self.n,
                "beta": self.beta, "gamma": self.gamma, "step_size": self.step_size, "steps": self.steps,
                "burn_in": self.burn_in, "loss_star": self.loss_star, "diverged": self.diverged}


def local_learning_coefficient(
    oracle: LossOracle | Callable,
    flat: torch.Tensor,
    generator: torch.Generator,
    *,
    n: int = 10_000,
    beta: float | None = None,
    gamma: float = 100.0,
    step_size: float = 1e-4,
    steps: int = 2000,
    burn_in: int | None = None,
    chains: int = 8,
    spec: ModelSpec | None = None,
) -> LLCEstimate:
    r"""SGLD estimate of the local learning coefficient at :math:`w^*` (module docstring).

    Args:
        oracle: loss oracle (or callable ``params -> scalar`` with ``spec``).
        flat: :math:`w^*`, ``(P,)``.
        generator: the Langevin noise.
        n: nominal sample size (temperature :math:`n\beta`).
        beta: inverse temperature (default :math:`1/\log n`).
        gamma: localisation strength :math:`\gamma \ge 0`.
        step_size: :math:`\epsilon > 0`; stability needs :math:`\epsilon (n\beta\lambda_{\max}(H) + \gamma) < 4`.
        steps: SGLD steps per chain.
        burn_in: draws discarded (default ``steps // 4``).
        chains: independent chains (``>= 2`` for a standard error), run together (vmapped gradients).
        spec: only for plain callables.

    Returns:
        :class:`LLCEstimate`.

    Raises:
        ValueError: bad constants, or every chain diverged (lower ``step_size``).
    """
    oracle = as_oracle(oracle, spec)
    w_star = _check_flat(oracle, flat).detach()
    check_int("n", n, minimum=2)
    check_int("steps", steps, minimum=2)
    check_int("chains", chains, minimum=2)
    b = 1.0 / math.log(n) if beta is None else check_real("beta", beta, positive=True)
    gamma = check_real("gamma", gamma, nonnegative=True)
    step_size = check_real("step_size", step_size, positive=True)
    burn = steps // 4 if burn_in is None else check_int("burn_in", burn_in, minimum=0)
    if burn >= steps:
        raise ValueError(f"burn_in = {burn} must be < steps = {steps}")
    nb = n * b

    def value_and_grad(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vg = torch.func.grad_and_value(oracle)
        try:
            g, v = torch.func.vmap(vg)(W)
        except (RuntimeError, TypeError, ValueError):
            outs = [vg(w) for w in W]
            g, v = torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])
        return v, g

    loss_star = float(oracle(w_star))
    W = w_star.expand(chains, -1).clone()
    sums = torch.zeros(chains, dtype=w_star.dtype, device=w_star.device)
    trace = torch.zeros(steps, dtype=w_star.dtype, device=w_star.device)
    alive = torch.ones(chains, dtype=torch.bool, device=w_star.device)
    sq = math.sqrt(step_size)
    for t in range(steps):
        v, g = value_and_grad(W)
        alive &= torch.isfinite(v) & torch.isfinite(g).all(dim=1)
        v = torch.where(alive, v, torch.zeros_like(v))
        g = torch.where(alive[:, None], g, torch.zeros_like(g))
        trace[t] = v[alive].mean() if bool(alive.any()) else float("nan")
        if t >= burn:
            sums = sums + v
        noise = torch.randn(W.shape, generator=generator, dtype=W.dtype, device=generator.device).to(W.device)
        W = W - 0.5 * step_size * (nb * g + gamma * (W - w_star)) + sq * noise
        W = torch.where(alive[:, None], W, w_star.expand_as(W))
    if not bool(alive.any()):
        raise ValueError(f"every SGLD chain diverged at step_size {step_size:g}; lower it")
    per = nb * (sums[alive] / (steps - burn) - loss_star)
    k = int(per.numel())
    se = float(per.std(unbiased=True) / math.sqrt(k)) if k > 1 else float("nan")
    return LLCEstimate(float(per.mean()), se, per, n, b, float(gamma), float(step_size), steps, burn, loss_star,
                       trace, chains - k)


def quadratic_llc(eigenvalues: torch.Tensor, *, n: int, beta: float | None = None, gamma: float,
                  step_size: float | None = None) -> float:
    r"""The estimator's exact expectation for a quadratic loss :math:`L_0 + \frac12 w^\top Hw` at its minimum.

    With :math:`a_i = n\beta\lambda_i + \gamma`, the Langevin diffusion (``step_size=None``) has
    stationary variance :math:`1/a_i` along eigenvector ``i``, and the discretised chain
    :math:`1/(a_i(1 - \epsilon a_i/4))`, so

    .. math:: \mathbb E\hat\lambda = \frac{n\beta}{2}\sum_i \lambda_i\,\mathrm{Var}_i
              \;\to\; \frac{r}{2}\quad(n\beta\lambda_i \gg \gamma,\ \epsilon \to 0),

    ``r`` the rank of ``H`` (the LLC of a rank-``r`` quadratic whose other directions are flat).

    >>> round(quadratic_llc(torch.tensor([1.0, 2.0, 0.0]), n=10**6, gamma=1.0), 4)  # rank 2: r/2 = 1
    1.0
    >>> round(quadratic_llc(torch.tensor([1.0, 2.0, 0.0]), n=100, gamma=10.0), 4)  # nβ/2 Σ λ_i/(nβλ_i + γ), nβ = 100/log 100
    0.7488

    Raises:
        ValueError: negative eigenvalues, or an unstable step (:math:`\epsilon a_i \ge 4`).
    """
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    if bool((lam < 0).any()):
        raise ValueError("a quadratic minimum needs eigenvalues >= 0")
    b = 1.0 / math.log(n) if beta is None else float(beta)
    a = n * b * lam + gamma
    if step_size is None:
        var = 1.0 / a
    else:
        if bool((step_size * a >= 4).any()):
            raise ValueError("the discretised chain is unstable: step_size * (n beta lambda_max + gamma) >= 4")
        var = 1.0 / (a * (1.0 - step_size * a / 4.0))
    return float(n * b / 2.0 * (lam * var).sum())
