r"""The Bayes-optimal in-context loss of a training config, and recording it as a run's result.

:func:`bayes_loss_estimate` is a pure computation (fixed prompts and seed: deterministic);
:func:`record_bayes_loss` writes it as the ``bayes_loss`` result of a training run. Recording
happens where results are produced (a sweep records it for every point it trains; anyone may
call :func:`record_bayes_loss` on a writable store); figures only read it, and estimate it in
memory when a run has none (:mod:`landscape.views.plots` never writes to a store).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["BAYES_RESULT", "BAYES_PROMPTS", "bayes_loss_estimate", "stored_bayes_loss", "record_bayes_loss"]

BAYES_RESULT = "bayes_loss"
"""Result key under which a run's Bayes-optimal loss is stored."""

BAYES_PROMPTS = 8192
"""Monte-Carlo sample size of the recorded estimate."""


def bayes_loss_estimate(config: Any, *, prompts: int = BAYES_PROMPTS, seed: int = 0) -> tuple[float, float] | None:
    r"""Monte-Carlo estimate of the Bayes-optimal in-context loss of a training config's task.

    The Bayes risk is :math:`\mathbb E[\mathrm{Var}(y_{n+1}\mid x_{1:n+1}, y_{1:n})]`, averaged over
    ``prompts`` covariate draws in float64:

    * GP data (Cheng, Chen, Sra 2024, Prop. 2): the posterior variance
      :math:`K_{qq} - k_q^\top K_{nn}^{-1}k_q` (:func:`landscape.theory.algorithms.bayes_risk`; the
      noise variance is on the Gram diagonal);
    * linear regression with prior :math:`w\sim N(0,\Lambda)` (:math:`\Lambda = I` or
      :math:`\Sigma^{-1}`) and noise std :math:`s`: :math:`x_q^\top(\Lambda^{-1} + XX^\top/s^2)^{-1}x_q + s^2`;
      for :math:`s = 0`, :math:`x_q^\top(\Lambda - \Lambda X(X^\top\Lambda X)^{-1}X^\top\Lambda)x_q`,
      which is exactly 0 when :math:`n \ge d`.

    Args:
        config: a :class:`landscape.experiment.train.TrainConfig`.
        prompts: Monte-Carlo sample size.
        seed: seed of the covariate draws.

    Returns:
        ``(value, standard_error)``, or None for tasks without a closed-form Bayes predictor
        (classification, feature tokens).
    """
    import dataclasses

    import torch

    from landscape.theory.algorithms import bayes_risk
    from landscape.experiment.train import make_task

    kind = config.task.partition(":")[0]
    if kind not in ("gp", "linear"):
        return None
    cfg = dataclasses.replace(config, dtype="float64", device="cpu")
    task = make_task(cfg)
    g = torch.Generator().manual_seed(seed)
    batch = task.sample(prompts, g)
    n, d = config.n, config.d
    if kind == "gp":
        K = batch.latent["K"]
        risk = bayes_risk(K[:, :-1, :-1], K[:, :-1, -1], K[:, -1, -1])
        return float(risk.value), float(risk.standard_error)
    if config.noise == 0 and n >= d:
        return 0.0, 0.0
    lam = task.task_covariance()
    eye = torch.eye(d, dtype=torch.float64)
    lam = eye if lam is None else lam.to(torch.float64)
    X = batch.X[..., :n]
    xq = batch.X[..., n]
    if config.noise > 0:
        s2 = config.noise**2
        C = torch.linalg.inv(torch.linalg.inv(lam) + X @ X.transpose(-1, -2) / s2)
        per = (xq.unsqueeze(-2) @ C @ xq.unsqueeze(-1)).reshape(-1) + s2
    else:
        LX = lam @ X
        G = X.transpose(-1, -2) @ LX
        C = lam - LX @ torch.linalg.solve(G, LX.transpose(-1, -2))
        per = (xq.unsqueeze(-2) @ C @ xq.unsqueeze(-1)).reshape(-1)
    return float(per.mean()), float(per.std(correction=1) / math.sqrt(prompts))


def stored_bayes_loss(results: Mapping[str, Any]) -> float | None:
    """The Bayes loss recorded in a run's results (a number, or ``{"value": ...}``), else None.

    Args:
        results: the run's results (:meth:`landscape.experiment.store.RunStore.results`).

    Returns:
        The recorded value, or None when the run has no ``bayes_loss`` result.
    """
    res = results.get(BAYES_RESULT)
    if isinstance(res, (int, float)) and not isinstance(res, bool):
        return float(res)
    if isinstance(res, Mapping) and isinstance(res.get("value"), (int, float)) and not isinstance(res["value"], bool):
        return float(res["value"])
    return None


def record_bayes_loss(store: Any, run: Any, *, prompts: int = BAYES_PROMPTS, seed: int = 0) -> float | None:
    """Estimate the Bayes-optimal loss of a training run's task and record it as its ``bayes_loss`` result.

    A run that already has one keeps it (nothing is written). The record is
    ``{"value", "standard_error", "prompts", "method": "monte-carlo"}``.

    Args:
        store: a :class:`~landscape.experiment.store.RunStore` open for writing.
        run: the run, its name or id.
        prompts: Monte-Carlo sample size.
        seed: seed of the covariate draws.

    Returns:
        The Bayes loss (recorded or already there), or None for a run that is not a training run
        or a task without a closed-form Bayes predictor (nothing is written then).

    Raises:
        ValueError: the store is read-only.
    """
    from landscape.experiment.store import Run
    from landscape.experiment.train import stored_config

    if store.read_only:
        raise ValueError(f"cannot record the Bayes loss in {store.root}: the store is open read-only")
    r = store._resolve(run) if isinstance(run, Run) else store.get_run(run)
    have = stored_bayes_loss(store.results(r))
    if have is not None:
        return have
    config = stored_config(r)
    if config is None:
        return None
    est = bayes_loss_estimate(config, prompts=prompts, seed=seed)
    if est is None:
        return None
    store.log_result(r, BAYES_RESULT, {"value": est[0], "standard_error": est[1], "prompts": prompts,
                                       "method": "monte-carlo"})
    return est[0]
