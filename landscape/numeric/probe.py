r"""Probing trained layers against algorithm iterates: "layer l does l steps of algorithm A".

For a transformer with weights :math:`\theta` and regression prompts, the residual stream after
layer ``l`` (``landscape.core.model.forward(..., return_states=True)``) carries the prediction
:math:`\hat y_l = -[Z_l]_{d+1,n+1}`. Each reference algorithm of :mod:`landscape.theory.algorithms`
gives, after ``l`` steps, a prediction :math:`a_l(x_{n+1})`. :func:`probe` compares the two, layer by
layer, on held-out prompts:

.. math::
    \cos_l = \frac{\langle \hat y_l, a_l\rangle}{\lVert\hat y_l\rVert\,\lVert a_l\rVert},\qquad
    \mathrm{relerr}_l = \frac{\lVert \hat y_l - a_l\rVert}{\lVert a_l\rVert},

the vectors running over the evaluation prompts (Fu et al. 2023, "Transformers learn higher-order
optimization methods for in-context learning"; Giannou et al. 2024). The algorithms' free
hyperparameters are fitted to the model's layers on a separate *fitting* batch, greedily layer by
layer along the algorithm's own trajectory (never the model's), by least squares:

* ``gd`` — :func:`~landscape.theory.algorithms.gd`, one step size :math:`\eta_l` per step;
* ``preconditioned_gd`` — :func:`~landscape.theory.algorithms.preconditioned_gd`, one
  :math:`d\times d` preconditioner :math:`A_l` per step (Ahn et al. 2023);
* ``gd_plus_plus`` — :func:`~landscape.theory.algorithms.gd_plus_plus` with :math:`A_l = a_lI`,
  :math:`B_l = b_lI` (von Oswald et al. 2023's GD++); :math:`a_l` by least squares, :math:`b_{l-1}`
  (which acts from step ``l`` on) by a grid search over :math:`|b| < 2/(|a_{l-1}|\bar s)` refined by
  bounded Brent;
* ``newton`` — :func:`~landscape.theory.algorithms.least_squares_newton_schulz`, the iterative
  Newton method of Fu et al. / Giannou et al. (Newton–Schulz for :math:`(XX^\top)^{-1}`, default
  :math:`\alpha`); no free parameter;
* ``functional_gd`` — :func:`~landscape.theory.algorithms.functional_gd` in the RKHS of a kernel
  (Cheng, Chen, Sra 2024), one step :math:`r_l` per step.

Every step's prediction is affine in that step's parameters given the earlier ones, so each fit
is an ordinary least-squares problem whose design columns are read off the algorithm itself
(evaluations at the zero and unit parameters): the fit uses the library's algorithms and nothing
else. A construction that *is* an algorithm is recovered to round-off (its fitted parameters are
the construction's). The figure of a :class:`ProbeResult` is drawn by
:func:`landscape.views.pictures.plot_probe`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

import landscape.theory.algorithms as alg
from landscape._checks import check_int
from landscape.core.kernels import Kernel, get_kernel
from landscape.core.model import ModelSpec, forward, unflatten_params
from landscape.core.tasks import Task

__all__ = ["ALGORITHMS", "ProbeResult", "layer_predictions", "fit_algorithm", "probe"]

ALGORITHMS = ("gd", "preconditioned_gd", "gd_plus_plus", "newton", "functional_gd")
"""The algorithms :func:`probe` compares the layers with."""


@dataclass(frozen=True)
class ProbeResult:
    r"""Layer-by-layer agreement of trained seeds with algorithm iterates.

    Attributes:
        algorithms: names, in the order of axis 1.
        layers: ``L``; axis 2 runs over layers ``1..L``.
        cosine: ``(S, A, L)`` cosine similarity of the predictions over the evaluation prompts.
        relative_error: ``(S, A, L)`` :math:`\lVert\hat y_l - a_l\rVert / \lVert a_l\rVert`.
        fitted: ``{algorithm: [per seed: list of fitted parameters per step]}`` (tensors).
        weight_cosine, weight_relative_error: ``(S, A, L)``, the same metrics for the *implied weight
            vectors* :math:`\partial\hat y_l/\partial x_{n+1}` of the model and of the algorithm (per prompt,
            stacked over prompts; for a predictor linear in the query this is its weight vector
            :math:`w_l`, Akyürek et al. 2023, Fu et al. 2023).
        fit_samples, eval_samples: prompts used to fit and to evaluate.
        kernel: the kernel of ``functional_gd``.
    """

    algorithms: tuple[str, ...]
    layers: int
    cosine: torch.Tensor
    relative_error: torch.Tensor
    fitted: dict[str, list[list[torch.Tensor]]] = field(default_factory=dict)
    fit_samples: int = 0
    eval_samples: int = 0
    kernel: str = "linear"
    weight_cosine: torch.Tensor | None = None
    weight_relative_error: torch.Tensor | None = None

    @property
    def seeds(self) -> int:
        return int(self.cosine.shape[0])

    def bands(self) -> dict[str, dict[str, list[float]]]:
        """Per algorithm: median and inter-quartile band over seeds of each metric, per layer."""
        out: dict[str, dict[str, list[float]]] = {}
        for a, name in enumerate(self.algorithms):
            row: dict[str, list[float]] = {}
            metrics = [("cosine", self.cosine), ("relative_error", self.relative_error)]
            if self.weight_cosine is not None and self.weight_relative_error is not None:
                metrics += [("weight_cosine", self.weight_cosine), ("weight_relative_error", self.weight_relative_error)]
            for key, t in metrics:
                q = torch.quantile(t[:, a, :], torch.tensor([0.25, 0.5, 0.75], dtype=t.dtype), dim=0)
                row[f"{key}_q25"], row[f"{key}_median"], row[f"{key}_q75"] = (q[0].tolist(), q[1].tolist(),
                                                                             q[2].tolist())
            out[name] = row
        return out

    def best(self) -> list[str]:
        """Per layer, the algorithm with the smallest median relative error (the median of
        :func:`landscape.experiment.summary.seed_median`: with an even number of seeds, the mean of the
        two middle values)."""
        from landscape.experiment.summary import seed_median

        med = seed_median(self.relative_error, dim=0)  # (A, L)
        return [self.algorithms[int(i)] for i in med.argmin(dim=0)]

    def summary(self) -> dict[str, Any]:
        return {"algorithms": list(self.algorithms), "layers": self.layers, "seeds": self.seeds,
                "fit_samples": self.fit_samples, "eval_samples": self.eval_samples, "kernel": self.kernel,
                "bands": self.bands(), "best": self.best(),
                "cosine": self.cosine.tolist(), "relative_error": self.relative_error.tolist(),
                "weight_cosine": None if self.weight_cosine is None else self.weight_cosine.tolist(),
                "weight_relative_error": None if self.weight_relative_error is None
                else self.weight_relative_error.tolist()}


def layer_predictions(params: dict[str, torch.Tensor], spec: ModelSpec, Z: torch.Tensor) -> torch.Tensor:
    r"""The prediction read off the residual stream after every layer, :math:`-[Z_l]_{d+1,n+1}`, ``(batch, L+1)``."""
    states = forward(params, spec, Z, return_states=True)
    return torch.stack([-S[..., -1, -1] for S in states], dim=-1)  # type: ignore[union-attr]


def _split(Z: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    X = Z[:, :d, :-1]
    y = Z[:, d, :-1]
    xq = Z[:, :d, -1]
    return X, y, xq


def _lstsq(F: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.linalg.lstsq(F, r.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)


def _affine_fit(pred: Callable[[torch.Tensor], torch.Tensor], k: int, target: torch.Tensor,
                dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """Least squares over θ ∈ R^k of ``pred(θ) ≈ target`` for ``pred`` affine in θ; returns (θ, residual²)."""
    zero = torch.zeros(k, dtype=dtype)
    p0 = pred(zero)
    cols = []
    for j in range(k):
        e = zero.clone()
        e[j] = 1.0
        cols.append(pred(e) - p0)
    F = torch.stack(cols, dim=1)
    theta = _lstsq(F, target - p0)
    res = float(((p0 + F @ theta - target) ** 2).sum())
    return theta, res


class _Algorithm:
    """One algorithm: ``run(X, y, xq, params) -> (batch, len(params)+1)`` predictions and a greedy fit."""

    def __init__(self, name: str, d: int, kernel: Kernel) -> None:
        self.name, self.d, self.kernel = name, d, kernel

    def run(self, X: torch.Tensor, y: torch.Tensor, xq: torch.Tensor, params: Sequence[torch.Tensor],
            steps: int) -> torch.Tensor:
        d, dt = self.d, X.dtype
        eye = torch.eye(d, dtype=dt)
        if self.name == "newton":
            return alg.least_squares_newton_schulz(X, y, xq, steps, return_iterates=True)
        if steps == 0:
            return X.new_zeros(X.shape[0], 1)
        if self.name == "gd":
            eta = torch.stack([p.reshape(()) for p in params])
            w = alg.gd(X, y, eta, return_iterates=True)
        elif self.name == "preconditioned_gd":
            w = alg.preconditioned_gd(X, y, torch.stack([p.reshape(d, d) for p in params]), return_iterates=True)
        elif self.name == "gd_plus_plus":
            A = torch.stack([p[0] * eye for p in params])
            B = torch.stack([p[1] * eye for p in params])
            return alg.gd_plus_plus(X, y, xq, A, B, return_iterates=True).predictions  # type: ignore[union-attr]
        else:
            r = torch.stack([p.reshape(()) for p in params])
            tr = alg.functional_gd(X, y, xq, self.kernel.scores, r, normalise=self.kernel.normalised,
                                   return_iterates=True)
            return tr.query_values  # type: ignore[union-attr]
        return torch.einsum("bld,bd->bl", w, xq)

    def fit(self, X: torch.Tensor, y: torch.Tensor, xq: torch.Tensor, targets: torch.Tensor) -> list[torch.Tensor]:
        """Greedy per-step least squares of the algorithm's predictions on ``targets`` ``(batch, L)``."""
        L, dt = targets.shape[1], X.dtype
        params: list[torch.Tensor] = []
        if self.name == "newton":
            return params
        for l in range(L):
            t = targets[:, l]
            if self.name in ("gd", "functional_gd", "preconditioned_gd"):
                k = self.d * self.d if self.name == "preconditioned_gd" else 1
                theta, _ = _affine_fit(lambda th: self.run(X, y, xq, params + [th], l + 1)[:, -1], k, t, dt)
                params.append(theta)
                continue
            # GD++: a_l affine; b_{l-1} acts from this step on and is searched
            def best_a(b_prev: float | None) -> tuple[torch.Tensor, float]:
                prev = list(params)
                if b_prev is not None:
                    prev[-1] = torch.stack([prev[-1][0], torch.tensor(b_prev, dtype=dt)])

                def pred(th: torch.Tensor) -> torch.Tensor:
                    return self.run(X, y, xq, prev + [torch.stack([th[0], th.new_zeros(())])], l + 1)[:, -1]

                a, res = _affine_fit(pred, 1, t, dt)
                return torch.stack([a[0], a.new_zeros(())]), res

            if l == 0:
                params.append(best_a(None)[0])
                continue
            from scipy.optimize import minimize_scalar

            # b_{l-1} B S_{l-1} A_{l-1} is a contraction for |b| a s < 2: search a grid there, then refine
            s_bar = float((X * X).sum(dim=(1, 2)).mean()) / (X.shape[1] * X.shape[2])
            scale = 2.0 / max(abs(float(params[-1][0])) * s_bar, 1e-12)
            grid = torch.linspace(-scale, scale, 41).tolist()
            vals = [best_a(b)[1] for b in grid]
            i = min(range(len(grid)), key=vals.__getitem__)
            lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
            sol = minimize_scalar(lambda b: best_a(float(b))[1], bounds=(lo, hi), method="bounded",
                                  options={"xatol": 1e-13 * scale, "maxiter": 500})
            b = float(sol.x) if sol.fun <= vals[i] else grid[i]
            params[-1] = torch.stack([params[-1][0], torch.tensor(b, dtype=dt)])
            params.append(best_a(b)[0])
        return params


def fit_algorithm(name: str, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, targets: torch.Tensor,
                  *, kernel: Kernel | str = "linear") -> tuple[list[torch.Tensor], torch.Tensor]:
    """Fit one algorithm's per-step parameters to ``targets`` ``(batch, L)`` (predictions after steps ``1..L``).

    Args:
        name: one of :data:`ALGORITHMS`.
        X, y, x_query: the regression prompts (``(batch, d, n)``, ``(batch, n)``, ``(batch, d)``).
        targets: what steps ``1..L`` should predict.
        kernel: functional GD's kernel.

    Returns:
        ``(parameters per step, predictions (batch, L+1) of the fitted algorithm)``.

    Raises:
        ValueError: unknown algorithm.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}")
    a = _Algorithm(name, X.shape[1], get_kernel(kernel))
    params = a.fit(X, y, x_query, targets)
    return params, a.run(X, y, x_query, params, targets.shape[1])


def _metrics(model: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and relative error over prompts (axis 0), per column."""
    num = (model * ref).sum(0)
    cos = num / (model.norm(dim=0) * ref.norm(dim=0)).clamp_min(1e-300)
    rel = (model - ref).norm(dim=0) / ref.norm(dim=0).clamp_min(1e-300)
    return cos, rel


def probe(
    weights: torch.Tensor | Sequence[dict[str, torch.Tensor]],
    spec: ModelSpec,
    task: Task,
    generator: torch.Generator,
    *,
    algorithms: Sequence[str] = ALGORITHMS,
    fit_samples: int = 512,
    eval_samples: int = 512,
    kernel: Kernel | str | None = None,
) -> ProbeResult:
    r"""Compare every layer of every seed with ``l`` steps of each algorithm (module docstring).

    Args:
        weights: ``(S, P)`` flat weights (or a list of parameter dicts), one per seed.
        spec: the architecture (token dimension ``d + 1``: regression prompts).
        task: the prompt distribution (``sample(batch, generator)``; ``Z`` of shape ``(batch, d+1, n+1)``).
        generator: draws the fitting prompts, then the evaluation prompts.
        algorithms: a subset of :data:`ALGORITHMS`.
        fit_samples: prompts to fit the algorithms' parameters on (per seed, shared).
        eval_samples: held-out prompts the metrics are computed on.
        kernel: functional GD's kernel (default: the first head's activation for kernel attention,
            the linear kernel for linear attention).

    Returns:
        :class:`ProbeResult` (metrics in float64).

    Raises:
        ValueError: unknown algorithms, bad counts, or prompts that are not regression prompts.
    """
    algos = tuple(algorithms)
    unknown = [a for a in algos if a not in ALGORITHMS]
    if unknown or not algos:
        raise ValueError(f"unknown algorithm(s) {unknown}; choose from {', '.join(ALGORITHMS)}")
    check_int("fit_samples", fit_samples, minimum=2)
    check_int("eval_samples", eval_samples, minimum=2)
    if kernel is None:
        kern = get_kernel("linear") if spec.heads[0].kind == "linear" else spec.heads[0].kernel
    else:
        kern = get_kernel(kernel)
    if isinstance(weights, torch.Tensor):
        flats = weights.to(torch.float64).reshape(-1, weights.shape[-1])
        seeds = [unflatten_params(f, spec) for f in flats]
    else:
        seeds = [{k: v.to(torch.float64) for k, v in p.items()} for p in weights]
    d = spec.token_dim - 1
    Zf = task.sample(fit_samples, generator).Z.to(torch.float64)
    Ze = task.sample(eval_samples, generator).Z.to(torch.float64)
    if Zf.ndim != 3 or Zf.shape[1] != d + 1:
        raise ValueError(f"probe needs regression prompts (batch, d+1, n+1) with d+1 = {d + 1}, got {tuple(Zf.shape)}")
    Xf, yf, qf = _split(Zf, d)
    Xe, ye, qe = _split(Ze, d)
    L = spec.layers
    cos = torch.zeros(len(seeds), len(algos), L, dtype=torch.float64)
    rel = torch.zeros_like(cos)
    fitted: dict[str, list[list[torch.Tensor]]] = {a: [] for a in algos}
    wcos = torch.zeros_like(cos)
    wrel = torch.zeros_like(cos)
    for s, params in enumerate(seeds):
        tf = layer_predictions(params, spec, Zf)[:, 1:]
        te = layer_predictions(params, spec, Ze)[:, 1:]
        wm = _implied_weights(lambda q: layer_predictions(params, spec, _with_query(Ze, q))[:, 1:], qe)
        for a, name in enumerate(algos):
            A = _Algorithm(name, d, kern)
            ps = A.fit(Xf, yf, qf, tf)
            ref = A.run(Xe, ye, qe, ps, L)[:, 1:]
            cos[s, a], rel[s, a] = _metrics(te, ref)
            wa = _implied_weights(lambda q, A=A, ps=ps: A.run(Xe, ye, q, ps, L)[:, 1:], qe)
            wcos[s, a], wrel[s, a] = _metrics(wm.flatten(0, 1), wa.flatten(0, 1))
            fitted[name].append(ps)
    return ProbeResult(algos, L, cos, rel, fitted, fit_samples, eval_samples, kern.name, wcos, wrel)


def _with_query(Z: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """``Z`` with the query covariate replaced (differentiably)."""
    d = xq.shape[1]
    top = torch.cat([Z[:, :d, :-1], xq.unsqueeze(-1)], dim=-1)
    return torch.cat([top, Z[:, d:, :]], dim=1)


def _implied_weights(pred: Callable[[torch.Tensor], torch.Tensor], xq: torch.Tensor) -> torch.Tensor:
    r"""Implied weight vectors :math:`\partial \hat y_l / \partial x_{n+1}` per prompt and layer, ``(batch, d, L)``.

    Prompts are independent, so the gradient of the sum over prompts gives every prompt's own gradient;
    for a predictor linear in the query, :math:`\hat y_l = x_{n+1}^\top w_l`, it is :math:`w_l`.
    """
    q = xq.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = pred(q)  # (batch, L)
        cols = [torch.autograd.grad(out[:, l].sum(), q, retain_graph=l + 1 < out.shape[1])[0]
                for l in range(out.shape[1])]
    return torch.stack(cols, dim=-1)
