r"""Loss oracles over a flat parameter view.

An *oracle* is the in-context loss :math:`f(\theta) = \mathbb E[(\mathrm{TF}(Z_0;\theta) - y_{n+1})^2]`
as a function of the flat parameter vector :math:`\theta \in \mathbb R^P`
(:func:`landscape.core.model.flatten_params` order). Every oracle is a finite weighted sum of *pieces*

.. math::
    f(\theta) = \sum_c w_c\, f_c(\theta),

each piece a pure torch function of :math:`\theta` that ``torch.func`` can differentiate and
``vmap``. The derivative routines of :mod:`landscape.numeric.derivatives` differentiate piece by
piece and add the results, so the peak memory of a gradient, a Hessian-vector product or a dense
Hessian is that of *one* piece, whatever the number of prompts.

Two oracles:

* :class:`MonteCarloLoss` — common random numbers: one fixed set of ``T`` prompts, sampled once
  from a task with an explicit ``torch.Generator`` and reused by every evaluation, split into
  chunks of at most ``chunk_size`` prompts (the pieces, :math:`w_c = T_c / T`). Besides the loss it
  gives per-chunk values and the mean and covariance of the *per-prompt* gradients (for the
  uncertainty of the gradient estimate).
* :class:`ExactLoss` — any callable ``params -> scalar`` (e.g. an exact population loss from the
  symbolic layer) as a single piece.

:func:`streamed_gradient_moments` gives the same gradient moments as
:meth:`MonteCarloLoss.gradient_moments` for prompts drawn chunk by chunk and discarded (memory
``O(chunk_size · P + P²)`` whatever the number of prompts), for samples that are only evaluated once.

**Samplers** (``sampler=``, :data:`SAMPLERS`), for tasks that build prompts from given standard-normal
draws (``normal_shapes`` / ``from_normals``, :mod:`landscape.core.tasks`):

* ``"mc"`` — i.i.d. prompts, ``task.sample`` (the default; bit-identical to drawing without a sampler);
* ``"qmc"`` — randomised quasi-Monte Carlo: each replicate batch is one scrambled Sobol point set
  (:class:`torch.quasirandom.SobolEngine`, linear matrix scrambling and digital shift, seed drawn from
  the ``torch.Generator``) in dimension ``D`` = the number of standard normals per prompt, mapped to
  Gaussians by :math:`\Phi^{-1}` (and to the sphere by normalising, as the task does). Every point is
  uniform on :math:`[0,1)^D`, so every batch mean is unbiased; independent scramblings make the
  batch means independent — the replicates behind the error bars. Within a batch the points are
  *not* independent: the per-prompt covariance over ``T`` over-states the variance of the mean
  (measured in ``benchmarks/bench_variance.py``), so only the replicate batches estimate it;
* ``"antithetic"`` — pairs: every second prompt repeats the previous one's draws with the
  ``label_normals`` of the task negated (labels :math:`y \to -y`, covariates unchanged). Pairs never
  straddle two batches. Gradient components even in :math:`y` (e.g. every entry of the linear
  attention blocks on the ``x`` rows and columns at a family point without label-row / label-column
  entries) are *identical* within a pair, so there this doubles the variance at equal prompts;
  components odd in :math:`y` cancel within a pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import torch

from landscape._checks import check_int
from landscape.core.loss import squared_error
from landscape.core.model import ModelSpec, check_params, flatten_params, num_params, predict, unflatten_params
from landscape.core.tasks import NormalsTask, PromptBatch, Task

__all__ = [
    "LossOracle",
    "MonteCarloLoss",
    "ExactLoss",
    "GradientMoments",
    "as_oracle",
    "as_flat",
    "exact_loss_oracle",
    "streamed_gradient_moments",
    "SAMPLERS",
    "check_sampler",
    "prompt_chunks",
]

SAMPLERS = ("mc", "qmc", "antithetic")
"""Prompt samplers: i.i.d. Monte Carlo, scrambled Sobol (randomised quasi-Monte Carlo), antithetic pairs."""

Piece = tuple[float, Callable[[torch.Tensor], torch.Tensor]]


@runtime_checkable
class LossOracle(Protocol):
    """What the numerical layer needs from a loss: a spec, pieces, and whether it is exact."""

    spec: ModelSpec

    @property
    def exact(self) -> bool: ...

    def pieces(self) -> Sequence[Piece]: ...

    def __call__(self, flat: torch.Tensor) -> torch.Tensor: ...


def as_flat(params: Mapping[str, torch.Tensor] | torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """A flat parameter vector from a parameter dict or a vector (checked).

    Raises:
        TypeError, ValueError: parameters that do not fit ``spec``, or non-finite entries.
    """
    if isinstance(params, Mapping):
        check_params(spec, params)
        flat = flatten_params(params, spec)
    elif isinstance(params, torch.Tensor):
        P = num_params(spec)
        if params.ndim != 1 or params.shape[0] != P:
            raise ValueError(f"flat parameters must have shape ({P},) for {spec.describe()}, got {tuple(params.shape)}")
        if not params.is_floating_point():
            raise TypeError(f"flat parameters must be floating point, got {params.dtype}")
        flat = params
    else:
        raise TypeError(f"params must be a dict[str, Tensor] or a flat Tensor, got {type(params).__name__}")
    if not bool(torch.isfinite(flat).all()):
        bad = (~torch.isfinite(flat)).nonzero().flatten().tolist()[:5]
        raise ValueError(f"parameters contain NaN or infinite entries (flat indices {bad}...)")
    return flat


@dataclass(frozen=True)
class GradientMoments:
    r"""Mean and covariance of per-prompt gradients :math:`g_i = \nabla_\theta (\mathrm{TF}_i - y_i)^2`.

    The Monte-Carlo gradient is :math:`\bar g = \frac1T\sum_i g_i` with covariance
    :math:`\mathrm{Cov}(\bar g) \approx \hat\Sigma / T`.

    Attributes:
        mean: :math:`\bar g`, shape ``(P,)`` (or ``(m,)`` when projected).
        cov: unbiased per-prompt covariance :math:`\hat\Sigma`, ``(P, P)``.
        count: number of prompts ``T``.
        loss: the Monte-Carlo loss :math:`\frac1T\sum_i (\mathrm{TF}_i - y_i)^2`.
        loss_se: its standard error (per-prompt standard deviation over :math:`\sqrt T`).
        batch_means: ``(R, P)`` means of the per-prompt gradients over ``R`` consecutive, disjoint,
            (nearly) equal batches of the prompts — independent replicates of :math:`\bar g` at
            ``T/R`` prompts — or ``None`` when not asked for.
        sampler: how the prompts were drawn (:data:`SAMPLERS`). For ``"qmc"`` and ``"antithetic"`` the
            prompts inside a batch are dependent: ``cov`` is still the per-prompt (marginal) covariance,
            but :attr:`mean_cov` is then *not* the covariance of the mean; only ``batch_means`` estimate it.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    count: int
    loss: float
    loss_se: float
    batch_means: torch.Tensor | None = None
    sampler: str = "mc"

    @property
    def mean_cov(self) -> torch.Tensor:
        r"""Covariance of the mean, :math:`\hat\Sigma / T`."""
        return self.cov / self.count


def _combine(n_a: int, mean_a: torch.Tensor, m2_a: torch.Tensor,
             n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Chan et al.'s parallel update of (count, mean, centred scatter matrix)."""
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    m2 = m2_a + m2_b + torch.outer(delta, delta) * (n_a * n_b / n)
    return n, mean, m2


@dataclass(frozen=True, eq=False)
class MonteCarloLoss:
    r"""Monte-Carlo in-context loss on a fixed prompt sample (common random numbers).

    .. math::
        \hat f_T(\theta) = \frac1T \sum_{i=1}^T (\mathrm{TF}(Z^{(i)};\theta) - y^{(i)}_{n+1})^2 ,

    evaluated in chunks of at most ``chunk_size`` prompts. Build it with :meth:`from_task`.

    Attributes:
        spec: the architecture.
        Z: prompts ``(T, d+1, n+1)``.
        target: query labels ``(T,)``.
        chunk_size: prompts per piece (bounds the memory of every derivative).
    """

    spec: ModelSpec
    Z: torch.Tensor
    target: torch.Tensor
    chunk_size: int = 4096
    _bounds: tuple[tuple[int, int], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.spec, ModelSpec):
            raise TypeError(f"spec must be a ModelSpec, got {type(self.spec).__name__}")
        if not isinstance(self.Z, torch.Tensor) or self.Z.ndim != 3 or self.Z.shape[1] != self.spec.token_dim:
            shape = tuple(self.Z.shape) if isinstance(self.Z, torch.Tensor) else type(self.Z).__name__
            raise ValueError(f"Z must be prompts (T, {self.spec.token_dim}, n+1), got {shape}")
        if self.Z.shape[-1] < 2:
            raise ValueError("prompts need at least one context token and the query (n + 1 >= 2 columns)")
        if not isinstance(self.target, torch.Tensor) or self.target.shape != self.Z.shape[:1]:
            raise ValueError(f"target must have shape ({self.Z.shape[0]},), got "
                             f"{tuple(self.target.shape) if isinstance(self.target, torch.Tensor) else self.target!r}")
        if self.Z.dtype != self.target.dtype or not self.Z.is_floating_point():
            raise TypeError(f"Z and target must share one floating dtype, got {self.Z.dtype} and {self.target.dtype}")
        check_int("chunk_size", self.chunk_size, minimum=1)
        T = self.Z.shape[0]
        bounds = tuple((lo, min(lo + self.chunk_size, T)) for lo in range(0, T, self.chunk_size))
        object.__setattr__(self, "_bounds", bounds)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_task(
        cls,
        task: Task,
        spec: ModelSpec,
        samples: int,
        generator: torch.Generator,
        *,
        chunk_size: int = 4096,
        dtype: torch.dtype = torch.float64,
        sampler: str = "mc",
    ) -> "MonteCarloLoss":
        """Sample ``samples`` prompts once from ``task`` and freeze them.

        Args:
            task: a prompt distribution with ``sample(batch, generator) -> PromptBatch``
                (:mod:`landscape.core.tasks`).
            spec: architecture (its ``token_dim`` must match the prompts).
            samples: number of prompts ``T``.
            generator: the only source of randomness.
            chunk_size: prompts per piece; sampling is done chunk by chunk too.
            dtype: dtype of the stored prompts (float64 by default).
            sampler: one of :data:`SAMPLERS` (``"qmc"``: one scrambled Sobol set of ``samples`` points).

        Returns:
            The oracle.

        Raises:
            TypeError: ``task`` has no ``sample`` method or ``generator`` is not a generator.
            ValueError: ``samples < 1``, prompts that do not fit ``spec``, or a sampler the task does not support.
        """
        if not callable(getattr(task, "sample", None)):
            raise TypeError(f"task must have a sample(batch, generator) method, got {type(task).__name__}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        check_int("samples", samples, minimum=1)
        check_int("chunk_size", chunk_size, minimum=1)
        check_sampler(sampler, task)
        Zs, ys = [], []
        for b in prompt_chunks(task, samples, generator, chunk_size, sampler):
            Zs.append(b.Z.to(dtype))
            ys.append(b.target.to(dtype))
        return cls(spec, torch.cat(Zs), torch.cat(ys), chunk_size)

    # ------------------------------------------------------------------ views
    @property
    def exact(self) -> bool:
        return False

    @property
    def samples(self) -> int:
        """Number of prompts ``T``."""
        return int(self.Z.shape[0])

    @property
    def num_chunks(self) -> int:
        return len(self._bounds)

    @property
    def dtype(self) -> torch.dtype:
        return self.Z.dtype

    @property
    def device(self) -> torch.device:
        return self.Z.device

    def subsample(self, samples: int) -> "MonteCarloLoss":
        """The oracle on the first ``samples`` prompts (same chunking)."""
        check_int("samples", samples, minimum=1)
        m = min(samples, self.samples)
        return MonteCarloLoss(self.spec, self.Z[:m], self.target[:m], self.chunk_size)

    # ------------------------------------------------------------------ evaluation
    def prompt_losses(self, flat: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Per-prompt squared errors :math:`(\\mathrm{TF}_i - y_i)^2` for prompts ``lo:hi`` (vmappable in ``flat``)."""
        hi = self.samples if hi is None else hi
        params = unflatten_params(flat, self.spec)
        pred = predict(params, self.spec, self.Z[lo:hi], validate=False)
        return squared_error(pred, self.target[lo:hi], reduction="none")

    def _piece(self, lo: int, hi: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def f(flat: torch.Tensor) -> torch.Tensor:
            return self.prompt_losses(flat, lo, hi).mean()

        return f

    def pieces(self) -> tuple[Piece, ...]:
        """``(weight, chunk mean loss)`` per chunk; the weights sum to one."""
        T = self.samples
        return tuple(((hi - lo) / T, self._piece(lo, hi)) for lo, hi in self._bounds)

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        """The Monte-Carlo loss :math:`\\hat f_T(\\theta)` (vmappable in ``flat``)."""
        total = None
        for w, f in self.pieces():
            v = w * f(flat)
            total = v if total is None else total + v
        return total

    def per_chunk(self, flat: torch.Tensor) -> torch.Tensor:
        """Chunk means of the loss, ``(num_chunks,)`` (batch means for variance estimates)."""
        return torch.stack([f(flat) for _, f in self.pieces()])

    def loss_and_se(self, flat: torch.Tensor) -> tuple[float, float]:
        """The loss and its standard error from the per-prompt losses."""
        with torch.no_grad():
            vals = torch.cat([self.prompt_losses(flat, lo, hi) for lo, hi in self._bounds])
        T = vals.numel()
        se = float(vals.std(unbiased=True)) / math.sqrt(T) if T > 1 else float("nan")
        return float(vals.mean()), se

    def per_prompt_gradients(self, flat: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Per-prompt gradients ``(hi - lo, P)`` (``vmap`` of ``grad`` over the prompts)."""
        spec = self.spec

        def one(f: torch.Tensor, Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            pred = predict(unflatten_params(f, spec), spec, Z.unsqueeze(0), validate=False)
            return squared_error(pred, y, reduction="sum")

        g = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))
        return g(flat, self.Z[lo:hi], self.target[lo:hi])

    def gradient_moments(self, flat: torch.Tensor, projection: torch.Tensor | None = None,
                         batches: int = 0) -> GradientMoments:
        r"""Mean and per-prompt covariance of the (optionally projected) per-prompt gradients.

        Accumulated chunk by chunk with the parallel (Chan et al. 1979) update of the centred
        scatter matrix, so memory is ``O(chunk_size · P + P²)`` for any ``T``.

        Args:
            flat: the point :math:`\theta`.
            projection: optional ``(m, P)`` matrix ``A``; moments of :math:`A g_i` are returned.
            batches: if ``R > 0``, also the means over ``R`` consecutive disjoint batches of the
                prompts (prompt ``i`` in batch :math:`\lfloor iR/T\rfloor`).

        Returns:
            :class:`GradientMoments`.

        Raises:
            ValueError: fewer than two prompts (no covariance), or more batches than prompts.
        """
        acc = _MomentAccumulator(self.samples, batches)
        for lo, hi in self._bounds:
            acc.add(self, flat, lo, hi, projection)
        return acc.result()


def check_sampler(sampler: str, task: Task) -> str:
    """``sampler`` if it is one of :data:`SAMPLERS` and ``task`` supports it.

    Raises:
        ValueError: an unknown sampler, or ``"qmc"`` / ``"antithetic"`` for a task without
            ``normal_shapes`` / ``from_normals`` (``"antithetic"`` also needs ``label_normals``).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler != "mc":
        if not (callable(getattr(task, "normal_shapes", None)) and callable(getattr(task, "from_normals", None))):
            raise ValueError(f"sampler {sampler!r} needs a task that builds prompts from standard-normal draws "
                             f"(normal_shapes / from_normals: LinearRegression, KernelGP), got {type(task).__name__}; "
                             "use sampler 'mc'")
        if sampler == "antithetic" and not getattr(task, "label_normals", ()):
            raise ValueError(f"sampler 'antithetic' needs the task's label_normals, {type(task).__name__} has none")
    return sampler


def _split_normals(task: NormalsTask, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """``(m, D)`` standard normals → the task's named draws of shapes ``normal_shapes(m)``."""
    out, col = {}, 0
    for k, shape in task.normal_shapes(flat.shape[0]).items():
        width = math.prod(shape[1:])
        out[k] = flat[:, col:col + width].reshape(shape)
        col += width
    return out


def prompt_chunks(task: Task, count: int, generator: torch.Generator, chunk_size: int,
                  sampler: str = "mc") -> Iterator[PromptBatch]:
    r"""Yield ``count`` prompts from ``task`` as :class:`~landscape.core.tasks.PromptBatch` chunks of at most ``chunk_size``.

    One call is one *batch* of the sampler: ``"qmc"`` uses one scrambled Sobol sequence for all
    ``count`` points (its seed is drawn from ``generator``, so independent calls give independent
    scramblings); ``"antithetic"`` yields pairs (draws, draws with the label normals negated), never
    split across chunks; ``"mc"`` calls ``task.sample`` chunk by chunk (the same prompts as one call of
    ``task.sample(count)`` split into chunks would be only when ``count <= chunk_size``).

    Args:
        task: the prompt distribution (``"qmc"`` / ``"antithetic"``: with ``normal_shapes`` / ``from_normals``).
        count: prompts in this batch.
        generator: the only source of randomness.
        chunk_size: largest chunk.
        sampler: one of :data:`SAMPLERS`.
    """
    check_int("count", count, minimum=1)
    if sampler == "mc":
        for lo in range(0, count, chunk_size):
            yield task.sample(min(chunk_size, count - lo), generator)
        return
    dev = generator.device
    dt = getattr(task, "dtype", torch.float64)
    if sampler == "qmc":
        D = sum(math.prod(s[1:]) for s in task.normal_shapes(1).values())
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=dev))
        engine = torch.quasirandom.SobolEngine(D, scramble=True, seed=seed)
        eps = 2.0**-53
        for lo in range(0, count, chunk_size):
            u = engine.draw(min(chunk_size, count - lo), dtype=torch.float64).clamp(eps, 1 - eps)
            yield task.from_normals(_split_normals(task, torch.special.ndtri(u).to(dtype=dt, device=dev)))
        return
    if sampler == "antithetic":
        step = max(2, chunk_size - chunk_size % 2)
        flip = set(task.label_normals)
        for lo in range(0, count, step):
            m = min(step, count - lo)
            h = (m + 1) // 2
            base = {k: torch.randn(*shape, generator=generator, dtype=dt, device=dev)
                    for k, shape in task.normal_shapes(h).items()}
            pairs = {k: torch.stack((v, -v if k in flip else v), 1).reshape(2 * h, *v.shape[1:])[:m]
                     for k, v in base.items()}
            yield task.from_normals(pairs)
        return
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


class _MomentAccumulator:
    """Running (count, mean, scatter, loss sums, batch sums) of per-prompt gradients, prompt ``offset`` on."""

    def __init__(self, total: int, batches: int) -> None:
        if total < 2:
            raise ValueError("gradient covariance needs at least 2 prompts")
        check_int("batches", batches, minimum=0)
        if batches > total:
            raise ValueError(f"{batches} batches need at least as many prompts, got {total}")
        self.total, self.batches = total, batches
        self.n, self.mean, self.m2 = 0, None, None
        self.loss_sum = self.loss_sq = 0.0
        self.bsum: torch.Tensor | None = None
        self.bcount: torch.Tensor | None = None

    def add(self, oracle: "MonteCarloLoss", flat: torch.Tensor, lo: int, hi: int,
            projection: torch.Tensor | None) -> None:
        G = oracle.per_prompt_gradients(flat, lo, hi).detach()
        if projection is not None:
            G = G @ projection.T
        with torch.no_grad():
            lv = oracle.prompt_losses(flat.detach(), lo, hi)
        self.loss_sum += float(lv.sum())
        self.loss_sq += float((lv**2).sum())
        if self.batches:
            if self.bsum is None:
                self.bsum = G.new_zeros(self.batches, G.shape[1])
                self.bcount = G.new_zeros(self.batches)
            idx = (torch.arange(G.shape[0], device=G.device) + self.n) * self.batches // self.total
            self.bsum.index_add_(0, idx, G)
            self.bcount.index_add_(0, idx, torch.ones_like(idx, dtype=G.dtype))
        cm = G.mean(0)
        Gc = G - cm
        cm2 = Gc.T @ Gc
        if self.mean is None:
            self.n, self.mean, self.m2 = hi - lo, cm, cm2
        else:
            self.n, self.mean, self.m2 = _combine(self.n, self.mean, self.m2, hi - lo, cm, cm2)

    def result(self, sampler: str = "mc") -> GradientMoments:
        T = self.n
        loss = self.loss_sum / T
        var = max(self.loss_sq / T - loss**2, 0.0) * T / (T - 1)
        bm = None if self.bsum is None else self.bsum / self.bcount.clamp_min(1).unsqueeze(1)
        return GradientMoments(self.mean, self.m2 / (T - 1), T, loss, math.sqrt(var / T), bm, sampler)


def streamed_gradient_moments(task: Task, spec: ModelSpec, flat: torch.Tensor, samples: int,
                              generator: torch.Generator, *, chunk_size: int = 4096, batches: int = 0,
                              projection: torch.Tensor | None = None,
                              dtype: torch.dtype = torch.float64, sampler: str = "mc") -> GradientMoments:
    r"""Per-prompt gradient moments on ``samples`` fresh prompts, drawn and discarded chunk by chunk.

    Equal (same prompts, same generator state afterwards) to
    ``MonteCarloLoss.from_task(task, spec, samples, generator, chunk_size=chunk_size).gradient_moments(flat,
    projection, batches)``, with memory ``O(chunk_size · P + P²)`` instead of ``O(samples)``.

    Args:
        task: a prompt distribution with ``sample(batch, generator)``.
        spec: the architecture.
        flat: the point.
        samples: number of prompts.
        generator: the only source of randomness.
        chunk_size: prompts per chunk.
        batches: replicate batches (see :meth:`MonteCarloLoss.gradient_moments`).
        projection: optional ``(m, P)`` projection of the gradients.
        dtype: dtype of the prompts.
        sampler: one of :data:`SAMPLERS`. For ``"qmc"`` / ``"antithetic"`` each replicate batch is drawn
            on its own (one scrambling / whole pairs per batch, :func:`prompt_chunks`), so the batch means
            stay independent; with ``batches = 0`` all prompts form one batch.

    Returns:
        :class:`GradientMoments`.

    Raises:
        TypeError, ValueError: as :meth:`MonteCarloLoss.from_task` and :meth:`MonteCarloLoss.gradient_moments`.
    """
    check_int("samples", samples, minimum=1)
    check_int("chunk_size", chunk_size, minimum=1)
    check_sampler(sampler, task)
    acc = _MomentAccumulator(samples, batches)

    def feed(b: Any) -> None:
        m = int(b.Z.shape[0])
        piece = MonteCarloLoss(spec, b.Z.to(dtype), b.target.to(dtype), m)
        acc.add(piece, flat.to(piece.device), 0, m, projection)

    if sampler == "mc":
        for lo in range(0, samples, chunk_size):
            m = min(chunk_size, samples - lo)
            piece = MonteCarloLoss.from_task(task, spec, m, generator, chunk_size=m, dtype=dtype)
            acc.add(piece, flat.to(piece.device), 0, m, projection)
        return acc.result()
    R = max(batches, 1)
    # batch r holds the prompts i with floor(i R / T) = r (the accumulator's assignment)
    sizes = [-(-(r + 1) * samples // R) + (-r * samples // R) for r in range(R)]
    for m in sizes:
        if m:
            for b in prompt_chunks(task, m, generator, chunk_size, sampler):
                feed(b)
    return acc.result(sampler)


@dataclass(frozen=True, eq=False)
class ExactLoss:
    """A loss given by any callable ``params dict -> scalar`` (e.g. an exact population loss).

    Attributes:
        spec: the architecture of the parameter dicts the callable takes.
        fn: ``fn(params) -> 0-dim tensor``; should be a pure torch function (for derivatives and
            ``vmap``).
        name: shown in reports.
    """

    spec: ModelSpec
    fn: Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
    name: str = "exact"

    def __post_init__(self) -> None:
        if not isinstance(self.spec, ModelSpec):
            raise TypeError(f"spec must be a ModelSpec, got {type(self.spec).__name__}")
        if not callable(self.fn):
            raise TypeError(f"fn must be callable params -> scalar, got {type(self.fn).__name__}")

    @property
    def exact(self) -> bool:
        return True

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        out = self.fn(unflatten_params(flat, self.spec))
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"loss function {self.name!r} must return a torch.Tensor, got {type(out).__name__}")
        return out.reshape(())

    def pieces(self) -> tuple[Piece, ...]:
        return ((1.0, self.__call__),)


def as_oracle(loss: Any, spec: ModelSpec | None = None) -> LossOracle:
    """Turn ``loss`` into an oracle: oracles pass through; a callable ``params -> scalar`` becomes :class:`ExactLoss`.

    Raises:
        TypeError: anything else, or a callable without ``spec``.
    """
    if isinstance(loss, (MonteCarloLoss, ExactLoss)):
        return loss
    if isinstance(loss, LossOracle) and hasattr(loss, "spec"):
        return loss
    if callable(loss):
        if spec is None:
            raise TypeError("a plain loss callable needs the ModelSpec its parameter dicts follow (spec=...)")
        return ExactLoss(spec, loss, getattr(loss, "__name__", "exact"))
    raise TypeError(f"a loss must be an oracle or a callable params -> scalar, got {type(loss).__name__}")


def exact_loss_oracle(problem: Any, task: Task) -> ExactLoss | None:
    """The symbolic layer's exact population loss for ``problem``/``task`` as an oracle, if it has one.

    Uses the symbolic layer's ``exact_loss_fn(problem, task)`` when importable; returns ``None`` when
    the symbolic layer is absent or has no exact formula for this setting.

    Args:
        problem: a :class:`~landscape.theory.families.Problem` (or family / spec, as the symbolic layer accepts).
        task: the prompt distribution.
    """
    try:
        from landscape.symbolic import exact_loss_fn  # type: ignore[attr-defined]
    except ImportError:
        try:
            from landscape.symbolic.one_layer import exact_loss_fn  # type: ignore[no-redef]
        except ImportError:
            return None
    try:
        fn = exact_loss_fn(problem, task)
    except (NotImplementedError, ValueError, TypeError):
        return None
    if fn is None:
        return None
    spec = getattr(problem, "spec", problem)
    return ExactLoss(spec, fn, "exact")
