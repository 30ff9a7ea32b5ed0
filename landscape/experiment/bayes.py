r"""Reference losses of a training config, and recording them as a run's results.

* the Bayes-optimal in-context loss: :func:`bayes_loss_estimate` is a pure computation (fixed
  prompts and seed: deterministic); :func:`record_bayes_loss` writes it as the ``bayes_loss``
  result of a training run;
* the minimum of the population loss over the run's family, from the symbolic layer:
  :func:`family_minimum` (the lowest stationary value of the exact family loss,
  :func:`landscape.symbolic.loss.family_loss` and :func:`landscape.symbolic.solve.stationary_points`,
  the numbers ``landscape solve`` prints; certified when the search is exhaustive);
  :func:`record_family_minimum` writes it as the ``family_minimum`` result.

Recording happens where results are produced (a sweep records both for every point it trains,
``landscape train --out`` the family minimum; anyone may call the ``record_*`` functions on a
writable store); figures only read them, and estimate the Bayes loss in memory when a run has
none (:mod:`landscape.views.plots` never writes to a store).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["BAYES_RESULT", "BAYES_PROMPTS", "bayes_loss_estimate", "stored_bayes_loss", "record_bayes_loss",
           "FAMILY_MINIMUM_RESULT", "FAMILY_MINIMUM_SECONDS", "family_minimum", "stored_family_minimum",
           "record_family_minimum"]

BAYES_RESULT = "bayes_loss"
"""Result key under which a run's Bayes-optimal loss is stored."""

BAYES_PROMPTS = 8192
"""Monte-Carlo sample size of the recorded estimate."""

FAMILY_MINIMUM_RESULT = "family_minimum"
"""Result key under which the minimum of the loss over a run's family is stored."""

FAMILY_MINIMUM_SECONDS = 10.0
"""Time limit of the exhaustive enumeration in :func:`family_minimum`; past it the search is a
multi-start search (and the record says so)."""


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


def family_minimum(config: Any, *, starts: int = 24, seed: int = 0, method: str = "auto",
                   time_limit: float = FAMILY_MINIMUM_SECONDS) -> dict[str, Any] | None:
    r"""The minimum of the in-context population loss over a training config's family, exactly.

    The family loss :math:`\ell(a) = f(\theta(a))` on the config's task is derived by the
    symbolic layer (:func:`landscape.symbolic.loss.family_loss`, route ``auto``) and its stationary
    points are found by :func:`landscape.symbolic.solve.stationary_points` with the defaults of
    ``landscape solve`` (``starts`` seeded starts, ``seed``); the minimum is the lowest stationary
    value :math:`\min_k \ell(a_k)`. When the search is exhaustive (an exact linear solve or the
    certified enumeration of every real critical point) this is the minimum over the family;
    otherwise it is the lowest point a multi-start search found, an upper bound.

    Only exact routes are used: when the first route that applies to the setting is Monte-Carlo
    (kernel families without a closed form), nothing is computed and None is returned.

    Args:
        config: a :class:`landscape.experiment.train.TrainConfig` (float64 on the CPU is used).
        starts: seeded starts of the numerical search.
        seed: their seed.
        method: the search (``stationary_points``'s ``method``: ``auto``, ``exhaustive`` or ``multistart``).
        time_limit: seconds for the exhaustive enumeration (past it: multi-start, marked so).

    Returns:
        ``{"value", "point", "kind", "search", "exhaustive", "certified", "route", "family"}`` —
        ``search`` the method (``linear``, ``bivariate``, ``exhaustive``, ... or ``multistart``) — or None when the
        config has no family, no exact route applies, no stationary point was found, or the config
        was read from a store and names a user family file (stored text never imports code).
    """
    import dataclasses

    from landscape.experiment.train import make_task
    from landscape.symbolic.loss import family_loss
    from landscape.symbolic.routes import ROUTES
    from landscape.symbolic.solve import stationary_points
    from landscape.theory.families import is_family_file

    if getattr(config, "family", None) is None:
        return None
    if getattr(config, "_from_store", False) and is_family_file(config.family):
        return None  # a stored config never imports a user family file
    cfg = dataclasses.replace(config, dtype="float64", device="cpu")
    sigma = cfg.sigma_matrix()
    family = cfg.make_family(sigma)
    task = make_task(cfg, sigma)
    first = next((r for r in ROUTES.values() if not r.match(family, task)[1]), None)
    if first is None or not first.exact:
        return None
    loss = family_loss(family, task)
    points = stationary_points(loss, starts=starts, seed=seed, method=method, time_limit=time_limit)
    if not len(points):
        return None
    best = min(points, key=lambda p: p.loss)
    return {"value": float(best.loss), "point": {k: float(v) for k, v in best.values.items()}, "kind": best.kind,
            "search": points.method, "exhaustive": bool(points.exhaustive), "certified": bool(points.certified),
            "route": loss.method, "family": family.name}


def stored_family_minimum(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The family minimum recorded in a run's results (:func:`record_family_minimum`), else None.

    Args:
        results: the run's results (:meth:`landscape.experiment.store.RunStore.results`).

    Returns:
        The record (with a numeric ``value``), or None.
    """
    res = results.get(FAMILY_MINIMUM_RESULT)
    if isinstance(res, Mapping) and isinstance(res.get("value"), (int, float)) and not isinstance(res["value"], bool):
        return dict(res)
    return None


def record_family_minimum(store: Any, run: Any, **kwargs: Any) -> float | None:
    """Compute the minimum of the loss over a training run's family and record it as its ``family_minimum`` result.

    A run that already has one keeps it (nothing is written). The record is :func:`family_minimum`'s.

    Args:
        store: a :class:`~landscape.experiment.store.RunStore` open for writing, or the folder of
            one (opened and closed here); ``None`` (a run that was not stored) does nothing.
        run: the run, its name or id.
        **kwargs: passed to :func:`family_minimum`.

    Returns:
        The minimum (recorded or already there), or None for a run without a family, a setting
        without an exact family loss, or no store (nothing is written then).

    Raises:
        ValueError: the store is read-only.
    """
    from pathlib import Path

    from landscape.experiment.store import Run, RunStore
    from landscape.experiment.train import stored_config

    if store is None or run is None:
        return None
    if isinstance(store, (str, Path)):
        with RunStore(store) as opened:
            return record_family_minimum(opened, run, **kwargs)
    if store.read_only:
        raise ValueError(f"cannot record the family minimum in {store.root}: the store is open read-only")
    r = store._resolve(run) if isinstance(run, Run) else store.get_run(run)
    have = stored_family_minimum(store.results(r))
    if have is not None:
        return float(have["value"])
    config = stored_config(r)
    if config is None:
        return None
    found = family_minimum(config, **kwargs)
    if found is None:
        return None
    store.log_result(r, FAMILY_MINIMUM_RESULT, found)
    return found["value"]
