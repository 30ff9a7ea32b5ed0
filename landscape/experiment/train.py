r"""Seed-parallel training of in-context transformers.

``S`` seeds are one stacked parameter set (every tensor has a leading seed axis) trained by one
optimizer written as pure functions over stacked tensors: one step is one gradient evaluation for
all seeds, one elementwise optimizer update, no per-seed Python loop. Two interchangeable gradient
engines compute the per-seed gradients :math:`\nabla_{\theta_i} f_i(\theta_i)`:

* ``"stacked"`` (default): a fused forward (:func:`stacked_predict`) runs all seeds at once on
  prompts ``(S, B, D, N)`` and reverse mode differentiates :math:`\sum_i f_i(\theta_i)`; because
  seed ``i``'s loss depends only on :math:`\theta_i`, the gradient of the sum with respect to
  :math:`\theta_i` is exactly :math:`\nabla f_i(\theta_i)`.
* ``"vmap"``: ``torch.func.vmap(torch.func.grad_and_value(f))`` over the seed axis, with ``f`` the
  reference forward :func:`landscape.core.model.predict` of one model.
* ``"fused"``: the CPU kernel of :mod:`landscape.engine.fused` — forward and hand-derived backward
  in one pass, SIMD across blocks of 16 prompts, for linear attention and the ``linear``, ``relu``,
  ``exp``, ``softmax`` kernels in float32/float64 (needs numba). ``"auto"`` (the default) takes it
  wherever it applies and ``"stacked"`` otherwise (user kernels, CUDA, numba missing):
  :func:`resolve_engine`. The engine that ran is recorded in the results and shown in the
  progress bar.

The stacked engine processes the batch in chunks of prompts (:func:`stacked_grad`,
:func:`resolve_chunk`) so that no tensor the size of the whole batch is materialised.

Both give the same numbers up to round-off (tested); ``"stacked"`` is faster on the CPU because it
avoids the batching-rule overhead of ``vmap`` on the many small ops of the backward pass and
reorders the linear-attention products (see :func:`stacked_predict`).

The loss is the in-context squared error of Ahn et al. (2023) and Cheng, Chen, Sra (2024),
:math:`f(\theta) = \mathbb E[(\mathrm{TF}_\theta(Z_0) - y_{n+1})^2]`, estimated on a fresh batch
of ``B`` prompts per seed (``S × B`` prompts drawn per refresh, reshaped ``(S, B, ...)``: every
seed sees its own prompts). Initialisation follows Cheng et al.: :math:`N(0, 0.1^2)` entries,
then the masked blocks zeroed; masked entries receive zero gradient and stay zero. Entries *held*
at non-zero values (``fixed``, e.g. Ahn et al.'s :math:`P_{d+1,d+1} = 1`; :func:`landscape.recipe.preset`)
start at their values and are restored after every update.

Optimizers (the semantics of ``torch.optim``, per seed, elementwise):

* Adam (Kingma & Ba 2015): :math:`m \leftarrow \beta_1 m + (1-\beta_1)g`,
  :math:`v \leftarrow \beta_2 v + (1-\beta_2)g^2`,
  :math:`\theta \leftarrow \theta - \frac{\eta}{1-\beta_1^t}\, m / (\sqrt{v/(1-\beta_2^t)} + \epsilon)`
  (``weight_decay`` adds :math:`\lambda\theta` to ``g``);
* AdamW (Loshchilov & Hutter 2019): the same with decoupled decay
  :math:`\theta \leftarrow (1 - \eta\lambda)\theta` first;
* SGD with momentum: :math:`b \leftarrow \mu b + g`, :math:`\theta \leftarrow \theta - \eta b`.

These updates are one pure function, :func:`optimizer_update` (with :func:`clip_gradient` and the
schedule :func:`schedule_factor`), which :func:`minimise` also steps with: the loop for a user
objective over a parameter dict (another embedding, target or loss; entries held at non-zero
values; an L-BFGS polish), the one other training loop of the project.

Per-seed gradient clipping rescales seed ``i``'s gradient by
:math:`\min(1, c / (\lVert g_i\rVert + 10^{-6}))` with :math:`\lVert g_i\rVert` its global norm over
all parameters (as ``torch.nn.utils.clip_grad_norm_`` does for one model). A seed whose loss,
gradient norm or updated parameters are not finite is *frozen*: its parameters and optimizer
state keep their last finite values, and it is marked diverged; the other seeds go on.

Determinism and resume: randomness comes from three ``torch.Generator`` streams derived from the
config seed (initialisation, training prompts, held-out prompts). A checkpoint stores the stacked
parameters, the optimizer state, the divergence marks, the prompt generator's state and the
current batch, so a run resumed from it reproduces the uninterrupted run bit for bit (same
device, dtype and thread count). Metrics are written with ``INSERT OR REPLACE`` keyed by
``(run, key, step, seed)``: steps replayed after a resume overwrite, never duplicate. The resume
starts from the newest checkpoint whose file verifies (SHA-256); newer missing or corrupt ones are
skipped with a logged warning. While a run trains, its writer lock is held, so a second process
training the same run refuses. Everything that can fail on a bad config (task, family, held-out
prompts, step function) is built before the store is opened; a failure after the run is created
marks it ``failed`` with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from landscape import _progress, recipe
from landscape._checks import check_choice, check_int, check_real
from landscape.experiment.summary import seed_median
from landscape.theory.families import (
    FAMILY_ATTENTION,
    Family,
    Problem,
    check_stored_family,
    is_family_file,
)
from landscape.core.loss import squared_error
from landscape.core.masks import SPEC_MASKS, canonical_mask, make_mask
from landscape.core.model import (
    ModelSpec,
    flatten_params,
    init_params,
    predict,
    unflatten_params,
)
from landscape.experiment.metrics import family_key, metric_key, parse_family_key

__all__ = [
    "TrainConfig",
    "stored_config",
    "stored_preset",
    "preset_overrides",
    "PRESET_RESULT",
    "PRESET_OVERRIDES_RESULT",
    "UNSTORED_FIELDS",
    "TrainObjects",
    "TaskPart",
    "ModelPart",
    "OptimisationPart",
    "BookkeepingPart",
    "PART_TYPES",
    "PARTS",
    "TrainResult",
    "TrainState",
    "train",
    "train_mask",
    "free_mask",
    "held_entries",
    "HELD_LETTERS",
    "HELD_BLOCKS",
    "resolve_sigma",
    "make_task",
    "init_state",
    "make_step",
    "resolve_engine",
    "make_generator",
    "sample_batch",
    "stacked_predict",
    "stacked_grad",
    "resolve_chunk",
    "prompt_bytes",
    "lr_factor",
    "schedule_factor",
    "optimizer_state",
    "optimizer_update",
    "clip_gradient",
    "minimise",
    "MinimiseResult",
    "OPTIMIZERS",
    "SCHEDULES",
    "TASKS",
]

TASKS: tuple[str, ...] = recipe.TASKS
"""Task kinds; ``"gp"`` takes its data kernel as ``"gp:KERNEL"`` (e.g. ``"gp:exp"``, ``"gp:relu"``)."""
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear")
MASKS: tuple[str, ...] = SPEC_MASKS
"""The mask names a run takes: :data:`landscape.core.masks.SPEC_MASKS` (the vocabulary is
:data:`landscape.core.masks.MASKS`; runs store the canonical spelling, ``"full"``)."""
ENGINES: tuple[str, ...] = ("auto", "fused", "stacked", "vmap")
_DTYPES: dict[str, torch.dtype] = recipe.DTYPES
_CHECKPOINT_FORMAT = 1

STORED_OPTIONAL_FIELDS: frozenset[str] = frozenset({"chunk", "data_kernel", "fixed"})
"""TrainConfig fields a stored config may lack (written only when set; see :meth:`TrainConfig.to_dict`)."""

UNSTORED_FIELDS: frozenset[str] = frozenset({"device", "preset", "_from_store"})
"""TrainConfig fields that are not part of a run's identity, so never in its stored config: where it
runs (``device``), the preset its fields came from (``preset``: provenance, recorded as the run's
:data:`PRESET_RESULT` result) and where the config was read (``_from_store``)."""

PRESET_RESULT = "preset"
r"""Result key (:meth:`~landscape.experiment.store.RunStore.results`) of a run's provenance: the name
of the :func:`~landscape.recipe.preset` that the command which first trained it took its fields
from, or ``None`` for fields given one by one (:func:`stored_preset`)."""

PRESET_OVERRIDES_RESULT = "preset_overrides"
"""Result key beside :data:`PRESET_RESULT` (written with a preset only): the preset's fields the run
did not take from it (:func:`preset_overrides`), so a provenance never claims more than the run holds."""


# ---------------------------------------------------------------------- covariance specs
def resolve_sigma(
    spec: str | Sequence[Sequence[float]] | torch.Tensor | None, d: int, seed: int = 0
) -> torch.Tensor | None:
    r"""Turn a covariance spec into a ``(d, d)`` float64 matrix (``None`` for the identity).

    The forms of :func:`landscape.recipe.covariance` (``identity``, ``random[:SEED]``,
    ``diag:l1,...,ld``, ``spectrum:l1,...,ld[:SEED]``, a matrix file, or a matrix taken as it is),
    random rotations defaulting to ``seed``.

    Args:
        spec: the spec.
        d: dimension.
        seed: default seed of the random rotations.

    Returns:
        The covariance, or ``None`` for the identity.

    Raises:
        ValueError: unknown spec, missing or unreadable file, wrong shape, not symmetric positive
            definite.
    """
    return recipe.covariance(spec, d, seed)


def _stored_sigma(spec: str, d: int, seed: int) -> str | list[list[float]]:
    r"""How a ``sigma`` string is written into a stored run config (what the store hashes).

    Run configs have always stored ``sigma`` as the string given, and until ``spectrum:`` existed
    ``diag:l1,...,ld`` meant the spectrum *randomly rotated* by the config's seed. Stored configs
    keep that convention, so that old stores read back to the matrices they were trained on and
    their config hashes stay the identifiers of the same runs (resume, sweep skipping):

    * ``spectrum:l1,...,ld`` and ``spectrum:l1,...,ld:SEED`` with ``SEED = seed`` → ``"diag:l1,...,ld"``
      (the list text as written; exactly what the old code stored for this matrix);
    * ``spectrum:l1,...,ld:SEED`` with another SEED → kept as it is;
    * ``diag:l1,...,ld`` (now the diagonal matrix) and a covariance file → the matrix itself
      (so the run is reproducible anywhere and editing the file makes a new run);
    * ``identity``, ``random[:SEED]`` → kept as they are.

    :meth:`TrainConfig.from_dict` reads a stored ``"diag:..."`` back as ``"spectrum:..."``.

    Args:
        spec: the config's ``sigma`` string (already validated).
        d: dimension.
        seed: the config's seed (default seed of the rotations).

    Returns:
        The string or the matrix (nested lists) to store.
    """
    s = spec.strip()
    if s.startswith("spectrum:"):
        body, sd = recipe.split_spectrum(s)
        return f"diag:{body}" if sd is None or sd == seed else s
    if s.startswith("diag:") or Path(s).expanduser().is_file():
        return resolve_sigma(s, d, seed).tolist()  # type: ignore[union-attr]
    return spec


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


STREAMS: tuple[str, ...] = ("init", "data", "eval")
"""The random streams of a run: initial weights, training prompts, held-out prompts."""


_SEED_SALT = "landscape.train"
"""Salt of the stream seeds (fixed forever: changing it changes every run's random streams)."""


def _derive_seed(seed: int, stream: str) -> int:
    """Independent 63-bit seed for a named random stream of a run."""
    # The salt is part of every stored run's identity (resume, reproduction): it names the module
    # as it was when the first runs were stored and must never follow a rename.
    digest = hashlib.sha256(f"{_SEED_SALT}:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_generator(config: "TrainConfig", stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """The ``torch.Generator`` of one random stream of a run, freshly seeded.

    The seed is derived from ``config.seed`` and the stream name by SHA-256, so the streams are
    independent and reproducible. ``"init"`` draws the initial weights (always on the CPU, so they
    do not depend on the device), ``"data"`` the training prompts (``S × B`` per refresh, seed ``i``
    getting rows ``i·B … (i+1)·B − 1``), ``"eval"`` the held-out prompts.

    Raises:
        ValueError: unknown stream.
    """
    check_choice("stream", stream, STREAMS)
    return torch.Generator(device=device).manual_seed(_derive_seed(config.seed, stream))


# ---------------------------------------------------------------------- config
# Declarative validation: one rule per field, applied in field order by TrainConfig.__post_init__;
# each rule takes (name, value) and returns the canonical value (or raises one line naming what is
# accepted). Rules that relate fields follow in _CROSS_RULES.
def _int(minimum: int) -> Callable[[str, Any], int]:
    return lambda name, v: check_int(name, v, minimum=minimum)


def _real(*, positive: bool = False, below: float | None = None) -> Callable[[str, Any], float]:
    def rule(name: str, v: Any) -> float:
        x = check_real(name, v, positive=positive, nonnegative=not positive)
        if below is not None and x >= below:
            raise ValueError(f"{name} must be in [0, {below:g}), got {v}")
        return x

    return rule


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    return lambda name, v: check_choice(name, v, choices)


def _optional(rule: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, v: None if v is None else rule(name, v)


def _str(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{name} must be a str, got {type(v).__name__}")
    return v


def _sigma(name: str, v: Any) -> str | tuple[tuple[float, ...], ...] | None:
    if v is None or isinstance(v, str):
        return v
    rows = v.tolist() if isinstance(v, torch.Tensor) else v
    return tuple(tuple(float(x) for x in row) for row in rows)


def _probs(name: str, v: Any) -> tuple[float, ...]:
    return tuple(float(p) for p in v)


def _activations(name: str, v: Any) -> tuple[str, ...]:
    return recipe.activations((v,) if isinstance(v, str) else tuple(v))


def _family(name: str, v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise TypeError(f"family must be a name or 'file.py:NAME', got {type(v).__name__}")
    if v not in FAMILY_ATTENTION and not is_family_file(v):
        raise ValueError(f"unknown family {v!r}; known: {', '.join(FAMILY_ATTENTION)} or 'path/to/file.py:NAME'")
    return v


def _lr(name: str, v: Any) -> float | tuple[float, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(check_real(f"lr[{i}]", x, positive=True) for i, x in enumerate(v))
    return check_real("lr", v, positive=True)


def _betas(name: str, v: Any) -> tuple[float, float]:
    betas = tuple(v)
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {v!r}")
    for i, b in enumerate(betas):
        check_real(f"betas[{i}]", b, nonnegative=True)
        if b >= 1:
            raise ValueError(f"betas[{i}] must be in [0, 1), got {b}")
    return float(betas[0]), float(betas[1])


def _device(name: str, v: Any) -> str:
    recipe.device(v)  # raises on an unknown or unavailable device
    return str(v)


def _data_kernel(name: str, v: Any) -> tuple[Any, ...] | None:
    return None if v is None else recipe.kernel_terms(v)


HELD_LETTERS: tuple[str, ...] = ("P", "Q", "V", "B", "C")
"""Parameter letters a ``fixed`` entry names (``P, Q`` linear heads; ``V, B, C`` kernel heads)."""
HELD_BLOCKS: tuple[str, ...] = ("covariate", "label_column", "label_row", "corner")
"""Structural blocks a ``fixed`` entry names (:func:`landscape.core.masks.structural_blocks`)."""


def _fixed(name: str, v: Any) -> tuple[tuple[str, str, float], ...] | None:
    if v is None:
        return None
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or not v:
        raise TypeError(f"{name} must be None or a non-empty sequence of (letter, block, value), got {v!r}")
    out: dict[tuple[str, str], float] = {}
    for i, item in enumerate(v):
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise ValueError(f"{name}[{i}] must be (letter, block, value), e.g. ('P', 'corner', 1.0), got {item!r}")
        letter = check_choice(f"{name}[{i}] letter", item[0], HELD_LETTERS)
        block = check_choice(f"{name}[{i}] block", item[1], HELD_BLOCKS)
        if (letter, block) in out:
            raise ValueError(f"{name} names ({letter!r}, {block!r}) twice")
        out[(letter, block)] = check_real(f"{name}[{i}] value", item[2])
    return tuple((k[0], k[1], x) for k, x in sorted(out.items()))


_FIELD_RULES: dict[str, Callable[[str, Any], Any]] = {
    # task
    "task": _str, "d": _int(1), "n": _int(1), "sigma": _sigma, "task_cov": _choice(recipe.PRIORS),
    "covariates": _optional(_choice(recipe.COVARIATES)), "noise": _real(), "probs": _probs, "margin": _real(),
    "flip": _real(below=0.5), "data_kernel": _data_kernel,
    # model
    "attention": _choice(recipe.ATTENTIONS), "activations": _activations, "heads": _int(1), "layers": _int(1),
    "family": _family, "mask": _choice(recipe.MASKS), "init_std": _real(), "fixed": _fixed,
    # optimisation
    "seeds": _int(1), "steps": _int(0), "batch": _int(1), "lr": _lr, "optimizer": _choice(OPTIMIZERS),
    "betas": _betas, "eps": _real(positive=True), "momentum": _real(below=1.0), "weight_decay": _real(),
    "clip": _optional(_real(positive=True)), "schedule": _choice(SCHEDULES), "warmup": _int(0),
    "resample_every": _int(1), "dtype": lambda name, v: recipe.dtype_name(v), "seed": _int(0),
    "engine": _choice(ENGINES), "chunk": _optional(_int(1)),
    # bookkeeping
    "device": _device, "log_every": _int(1), "checkpoint_every": _int(0), "eval_batch": _int(1),
    "distance_every": _optional(_int(0)), "preset": _optional(_choice(tuple(recipe.PRESETS))),
}

def _apply_rules(obj: Any, names: Sequence[str]) -> None:
    for name in names:
        object.__setattr__(obj, name, _FIELD_RULES[name](name, getattr(obj, name)))


@dataclass(frozen=True)
class TaskPart:
    """The task part of a :class:`TrainConfig`: the prompt distribution (fields documented there).

    Standing alone it checks its fields one by one; the checks across fields are the config's.
    """

    task: str = "linear"
    d: int = 5
    n: int = 20
    sigma: str | tuple[tuple[float, ...], ...] | None = "identity"
    task_cov: str = "identity"
    covariates: str | None = None
    noise: float = 0.0
    probs: tuple[float, ...] = (0.5, 0.5)
    margin: float = 0.0
    flip: float = 0.0
    data_kernel: tuple[tuple[float, str, tuple[tuple[float, ...], ...] | None], ...] | None = None

    def __post_init__(self) -> None:
        _apply_rules(self, [f.name for f in dataclasses.fields(TaskPart)])


@dataclass(frozen=True)
class ModelPart:
    """The model part of a :class:`TrainConfig`: architecture, family, mask, initialisation."""

    attention: str = "linear"
    activations: tuple[str, ...] = ("linear",)
    heads: int = 1
    layers: int = 1
    family: str | None = None
    mask: str = "full"
    init_std: float = 0.1
    fixed: tuple[tuple[str, str, float], ...] | None = None

    def __post_init__(self) -> None:
        _apply_rules(self, [f.name for f in dataclasses.fields(ModelPart)])


@dataclass(frozen=True)
class OptimisationPart:
    """The optimisation part of a :class:`TrainConfig`: seeds, steps, optimizer, schedule, dtype, engine."""

    seeds: int = 1
    steps: int = 1000
    batch: int = 256
    lr: float | tuple[float, ...] = 1e-3
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip: float | None = None
    schedule: str = "constant"
    warmup: int = 0
    resample_every: int = 1
    dtype: str = "float32"
    seed: int = 0
    engine: str = "auto"
    chunk: int | None = None

    def __post_init__(self) -> None:
        _apply_rules(self, [f.name for f in dataclasses.fields(OptimisationPart)])


@dataclass(frozen=True)
class BookkeepingPart:
    """The bookkeeping part of a :class:`TrainConfig` (``device`` and ``preset`` are not part of a run's identity)."""

    device: str = "auto"
    log_every: int = 100
    checkpoint_every: int = 1000
    eval_batch: int = 2048
    distance_every: int | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        _apply_rules(self, [f.name for f in dataclasses.fields(BookkeepingPart)])


PART_TYPES: dict[str, type] = {"task": TaskPart, "model": ModelPart, "optimisation": OptimisationPart,
                               "bookkeeping": BookkeepingPart}
"""The four parts of a :class:`TrainConfig`, whose flat fields are theirs."""

PARTS: dict[str, tuple[str, ...]] = {k: tuple(f.name for f in dataclasses.fields(t)) for k, t in PART_TYPES.items()}
"""The field names of each part."""


def _cross_task(c: "TrainConfig", set_: Callable[[str, Any], None]) -> None:
    if c.data_kernel is not None:
        if c.task != "gp":
            raise ValueError(f"data_kernel gives the kernel of task 'gp'; got task {c.task!r} (write task='gp')")
        if len(c.data_kernel) == 1 and c.data_kernel[0][0] == 1.0 and c.data_kernel[0][2] is None:
            set_("task", f"gp:{c.data_kernel[0][1]}")  # one plain kernel: the 'gp:KERNEL' run it is
            set_("data_kernel", None)
    set_("task", recipe.task_kind(c.task, composite=c.data_kernel is not None))
    if c.task_cov == "inverse" and c.task.partition(":")[0] != "linear":
        raise ValueError(f"task_cov='inverse' applies to the linear task only, not {c.task.partition(':')[0]!r}")


def _cross_model(c: "TrainConfig", set_: Callable[[str, Any], None]) -> None:
    if c.attention == "linear":
        set_("activations", ("linear",))  # unused by linear attention: one canonical value, one config hash
    if c.fixed is not None:
        letters = ("P", "Q") if c.attention == "linear" else ("V", "B", "C")
        bad = sorted({t[0] for t in c.fixed} - set(letters))
        if bad:
            raise ValueError(f"fixed names {bad}, but {c.attention} attention has the weights {list(letters)}")
    want = FAMILY_ATTENTION.get(c.family) if c.family is not None else None
    if want is not None and want != c.attention:
        raise ValueError(f"family {c.family!r} needs {want} attention; this config has "
                         f"attention={c.attention!r} (use --attention {want})")
    if c.family is not None and is_family_file(c.family) and not c._from_store:
        file = c.family.rpartition(":")[0]
        if not Path(file).expanduser().is_file():
            raise ValueError(f"family file {file!r} does not exist")


def _cross_optimisation(c: "TrainConfig", set_: Callable[[str, Any], None]) -> None:
    if isinstance(c.lr, tuple) and len(c.lr) != c.seeds:
        raise ValueError(f"lr has {len(c.lr)} per-seed values but seeds = {c.seeds}")
    _check_momentum(c.optimizer, c.momentum)
    if c.engine == "fused":
        from landscape.engine.fused import unsupported_reason

        why = unsupported_reason(c.spec, recipe.device(c.device), c.torch_dtype)
        if why is not None:
            raise ValueError(f"engine 'fused': {why}; use engine 'auto' or 'stacked'")


def _check_momentum(optimizer: str, momentum: float) -> None:
    if momentum > 0 and optimizer != "sgd":
        raise ValueError(f"momentum applies to optimizer 'sgd' only (got optimizer {optimizer!r}); "
                         "Adam's momentum is betas[0]")


def _cross_data(c: "TrainConfig", set_: Callable[[str, Any], None]) -> None:
    # Σ parses (a bad spec or a missing file is an error now) and the task accepts its arguments;
    # the family is compiled only by TrainConfig.build.
    make_task(c, sigma=c.sigma_matrix())


_CROSS_RULES: tuple[Callable[["TrainConfig", Callable[[str, Any], None]], None], ...] = (
    _cross_task, _cross_model, _cross_optimisation, _cross_data)


@dataclass(frozen=True)
class TrainObjects:
    r"""What a :class:`TrainConfig` builds (:meth:`TrainConfig.build`).

    Attributes:
        sigma: :math:`\Sigma` (float64) or ``None`` for the identity.
        task: the prompt distribution (in the training dtype).
        problem: the :class:`~landscape.theory.families.Problem` the family lives in.
        family: the family, or ``None``.
        spec: the architecture.
        device: the device it trains on.
        dtype: the training dtype.
        mask: the free entries (:func:`free_mask`: those of :func:`landscape.recipe.mask`, less the held ones).
    """

    sigma: torch.Tensor | None
    task: Any
    problem: Problem
    family: Family | None
    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype
    mask: dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig(BookkeepingPart, OptimisationPart, ModelPart, TaskPart):
    r"""Everything that defines a training run: four parts (:data:`PART_TYPES`), flat keyword arguments.

    Construction validates declaratively (one rule per field, then the rules that relate fields:
    cheap checks, every one a one-line error naming what is accepted); :meth:`build` turns the
    config into objects (:math:`\Sigma`, task, family, architecture, device) through
    :mod:`landscape.recipe`. The fields are those of the four frozen parts it is made of —
    :class:`TaskPart`, :class:`ModelPart`, :class:`OptimisationPart`, :class:`BookkeepingPart` —
    and :attr:`task_part`, :attr:`model_part`, :attr:`optimisation_part`, :attr:`bookkeeping_part`
    return them (:meth:`part` by name).

    Example — the composite-kernel GP data of Cheng, Chen, Sra (2024, Prop. 3),
    :math:`K^\circ(x,x') = e^{\frac12\langle x_{1:2},x'_{1:2}\rangle} + \langle x_{3:4},x'_{3:4}\rangle`, learned by
    a two-head exp + linear transformer, trained and stored like any run::

        import math
        from landscape import TrainConfig, train

        d = 5
        E = [[float(i == j) for j in range(d)] for i in range(d)]
        K = ((1.0, "exp", [[v / math.sqrt(2) for v in E[0]], [v / math.sqrt(2) for v in E[1]]]),
             (1.0, "linear", [E[2], E[3]]))
        cfg = TrainConfig(task="gp", data_kernel=K, d=d, n=20, attention="kernel",
                          activations=("exp", "linear"), layers=2, seeds=4, steps=2000, batch=256)
        result = train(cfg, "runs/composite")

    ``data_kernel`` also takes a :class:`~landscape.core.kernels.SumKernel` (or a
    :class:`~landscape.core.kernels.Kernel`) and stores it as its terms (:func:`landscape.recipe.kernel_terms`).

    Task:
        task: ``"linear"`` (:class:`~landscape.core.tasks.LinearRegression`), ``"gp:KERNEL"``
            (:class:`~landscape.core.tasks.KernelGP` with that data kernel, e.g. ``"gp:exp"``; ``"gp"``
            with ``data_kernel`` for a composite one), ``"classification"``
            (:class:`~landscape.core.tasks.LinearClassification`) or ``"features"``
            (:class:`~landscape.core.tasks.OrthonormalFeatures`).
        d, n: covariate dimension and context length.
        sigma: covariance spec (:func:`landscape.recipe.covariance`; random rotations default to
            ``seed``): ``"diag:l1,...,ld"`` is the diagonal matrix, ``"spectrum:l1,...,ld[:SEED]"``
            that spectrum randomly rotated; one :math:`\Sigma` for all the seeds of a run.
        task_cov: the prior of :math:`w^*` (linear regression only): :math:`N(0, I)` (``"identity"``)
            or :math:`N(0, \Sigma^{-1})` (``"inverse"``, Ahn et al. Theorem 3).
        covariates: ``"gaussian"`` or ``"sphere"`` (``None``: the task's default — Gaussian for
            regression/classification, sphere for GP data as in Cheng et al.).
        noise: label noise std (linear, gp).
        probs: feature probabilities (features task).
        margin, flip: classification margin and label-flip probability.
        data_kernel: composite GP data kernel, terms ``(weight, kernel name, G rows or None)``
            :math:`K^\circ(x,x') = \sum_h w_h \tilde h_h(G_h x, G_h x')` (or a ``SumKernel``), with
            ``task="gp"``; ``None``: the kernel named in ``task``. Stored only when set.

    Model:
        attention: ``"linear"`` (Ahn's ``P, Q`` heads) or ``"kernel"`` (``V, B, C`` heads).
        activations: one activation per kernel head (names of :func:`~landscape.core.kernels.get_kernel`);
            stored as ``("linear",)`` for linear attention, which has none.
        heads: number of linear-attention heads.
        layers: number of layers ``L``.
        family: a family to measure distances to (a built-in name or ``"file.py:NAME"``), or ``None``.
        mask: ``"full"`` (all entries free), ``"paper"`` (keys/queries read ``x`` only, values
            block-diagonal) or ``"sparse"`` (Ahn's Theorem 3 / Cheng's sparse-value form:
            ``P = diag(0, *)``, ``Q = diag(*, 0)``; ``V = diag(0, *)``, ``B, C = diag(*, 0)``).
        init_std: initialisation std (Cheng et al.: 0.1).
        fixed: entries *held* at given values: ``(letter, block, value)`` triples, e.g.
            ``(("P", "corner", 1.0),)`` holds :math:`P_{d+1,d+1} = 1` in every linear head of every
            layer (Ahn et al. 2023, Lemma 1: :math:`P_l = \mathrm{diag}(0_{d\times d}, 1)`). ``letter``
            is one of :data:`HELD_LETTERS`, ``block`` one of :data:`HELD_BLOCKS`
            (:func:`landscape.core.masks.structural_blocks`). Held entries are not free whatever
            ``mask`` says, start at the value and never move (weight decay included).
            ``None``: none held. Stored only when set (:data:`STORED_OPTIONAL_FIELDS`).
            Named parameterisations of the papers: :func:`landscape.recipe.preset`.

    Optimisation:
        seeds: number of seeds ``S`` trained together.
        steps: number of optimizer steps ``T`` (``0`` evaluates the initialisation).
        batch: prompts per seed per step ``B``.
        lr: learning rate, or one per seed (a tuple of length ``S``).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        betas, eps: Adam constants. momentum: SGD momentum. weight_decay: L2 (adam, sgd) or
            decoupled (adamw).
        clip: per-seed max global gradient norm, or ``None``.
        schedule: ``"constant"``, ``"cosine"`` (to 0 at ``T``) or ``"linear"`` (to 0 at ``T``),
            after ``warmup`` steps of linear warm-up.
        resample_every: draw fresh prompts every this many steps (1 = every step).
        dtype: ``"float32"`` or ``"float64"``.
        seed: the run's seed; seed-``i``'s model is the ``i``-th of a stack initialised from it.
        engine: gradient engine (see module docstring): ``"auto"`` (``"fused"`` where it applies,
            else ``"stacked"``), ``"fused"``, ``"stacked"`` or ``"vmap"``.
        chunk: prompts per seed per chunk of the stacked engine (``None``: chosen by
            :func:`resolve_chunk` from a working-set target); the gradient is the full-batch one
            up to round-off whatever the chunk.

    Bookkeeping (not part of the run's identity: ``device``, ``preset``):
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        log_every: log metrics every this many steps (and at the end).
        checkpoint_every: save a checkpoint every this many steps (``0``: never).
        eval_batch: held-out prompts for the evaluation loss (shared by all seeds).
        distance_every: project onto the family every this many steps (``0``: only at the end;
            ``None``: at every log step).
        preset: the name of the paper preset the fields came from (:func:`landscape.recipe.preset`
            sets it: ``TrainConfig(**preset("ahn2023"), ...)``), or ``None``. Provenance only: it
            is left out of :meth:`to_dict`, so the config hash identifies the trained problem by
            its fields — a run from a preset and the same fields typed out are one run — and
            :func:`train` records it as the run's :data:`PRESET_RESULT` result when the run starts,
            with the preset's fields the config overrides (:func:`preset_overrides`).
        _from_store: set by :meth:`from_dict`: the config was read back from a run store, so a
            user family file it names is never imported (:func:`~landscape.theory.families.check_stored_family`).

    Raises (on construction):
        TypeError: a value of the wrong type.
        ValueError: a value out of range, an unknown name, a bad covariance spec or file, or fields
            that contradict each other (e.g. ``family="fgd"`` with linear attention).
    """

    _from_store: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name, rule in _FIELD_RULES.items():
            set_(name, rule(name, getattr(self, name)))
        for cross in _CROSS_RULES:
            cross(self, set_)

    # ------------------------------------------------------------------ parts and built objects
    def part(self, name: str) -> Any:
        """One part of the config by name (``"task"``, ``"model"``, ``"optimisation"``, ``"bookkeeping"``).

        Returns:
            The frozen part (:data:`PART_TYPES`) holding this config's values.

        Raises:
            ValueError: an unknown part.
        """
        check_choice("part", name, tuple(PART_TYPES))
        return PART_TYPES[name](**{k: getattr(self, k) for k in PARTS[name]})

    @property
    def task_part(self) -> TaskPart:
        """The :class:`TaskPart` of this config."""
        return self.part("task")

    @property
    def model_part(self) -> ModelPart:
        """The :class:`ModelPart` of this config."""
        return self.part("model")

    @property
    def optimisation_part(self) -> OptimisationPart:
        """The :class:`OptimisationPart` of this config."""
        return self.part("optimisation")

    @property
    def bookkeeping_part(self) -> BookkeepingPart:
        """The :class:`BookkeepingPart` of this config."""
        return self.part("bookkeeping")

    def build(self, device: torch.device | str | None = None) -> TrainObjects:
        r"""Turn the config into objects through :mod:`landscape.recipe`: :math:`\Sigma`, the task, the
        problem, the family (compiled here, never on construction), the architecture, the device,
        the dtype and the mask.

        Args:
            device: overrides ``self.device``.

        Returns:
            :class:`TrainObjects`.

        Raises:
            ValueError: a family that does not fit the problem (or a stored config naming a user
                family file, which is never imported: :func:`~landscape.theory.families.check_stored_family`).
        """
        sigma = self.sigma_matrix()
        dev = recipe.device(self.device if device is None else device)
        return TrainObjects(sigma, make_task(self, sigma), self.problem(sigma), self.make_family(sigma), self.spec,
                            dev, self.torch_dtype, free_mask(self))

    @property
    def torch_dtype(self) -> torch.dtype:
        return recipe.dtype(self.dtype)

    @property
    def spec(self) -> ModelSpec:
        """The architecture trained."""
        if self.attention == "linear":
            return ModelSpec.linear(self.d, self.layers, self.heads)
        return ModelSpec.kernel(self.d, self.layers, list(self.activations))

    def sigma_matrix(self) -> torch.Tensor | None:
        """:math:`\\Sigma` as a float64 matrix (``None`` = identity)."""
        return recipe.covariance(self.sigma, self.d, self.seed)

    def problem(self, sigma: torch.Tensor | None = None) -> Problem:
        """The :class:`~landscape.theory.families.Problem` the family lives in."""
        sigma = self.sigma_matrix() if sigma is None else sigma
        return Problem(self.d, self.layers, self.n, sigma, self.attention, self.activations, self.heads)

    def make_family(self, sigma: torch.Tensor | None = None) -> Family | None:
        """The configured family (``None`` if none), built for this problem."""
        if self.family is None:
            return None
        if self._from_store:
            check_stored_family(self.family)  # stored text never imports a user file
        return recipe.family(self.family, self.problem(sigma))

    def lr_vector(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Per-seed base learning rates ``(S,)``."""
        lrs = self.lr if isinstance(self.lr, tuple) else (self.lr,) * self.seeds
        return torch.tensor(lrs, dtype=self.torch_dtype, device=device)

    def to_dict(self) -> dict[str, Any]:
        """The run's identity as a JSON-serialisable dict (what the run store hashes).

        ``device`` is left out (a run may be resumed elsewhere), and so is ``preset`` (provenance,
        not identity: a config from a preset hashes as the same fields typed out). A covariance read from a file is
        stored as its matrix, and a family file is identified by its content (SHA-256), so editing
        either file makes a new run. ``sigma`` is stored in the stored-config convention of
        :func:`_stored_sigma` (``diag:`` there is the rotated spectrum, as it always was; the
        diagonal matrix is stored as its matrix), so every config hash written before stays valid.
        The fields of :data:`STORED_OPTIONAL_FIELDS` (``chunk``, ``data_kernel``, ``fixed``) are
        stored only when set, so a config of the older layout hashes as it did.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in UNSTORED_FIELDS:
                continue
            v = getattr(self, f.name)
            if f.name in STORED_OPTIONAL_FIELDS and v is None:
                continue
            out[f.name] = [list(r) for r in v] if f.name == "sigma" and isinstance(v, tuple) else v
        if isinstance(self.sigma, str):
            out["sigma"] = _stored_sigma(self.sigma, self.d, self.seed)
        if self.data_kernel is not None:
            out["data_kernel"] = [[w, k, None if G is None else [list(r) for r in G]] for w, k, G in self.data_kernel]
        if self.fixed is not None:
            out["fixed"] = [list(t) for t in self.fixed]
        if self.family is not None and ":" in self.family:
            file = self.family.rpartition(":")[0]
            if Path(file).expanduser().is_file():
                out["family_sha256"] = _file_digest(file)
        out["format"] = _CHECKPOINT_FORMAT
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict` (extra bookkeeping keys are ignored); a user family file it
        names is not imported (see :func:`~landscape.theory.families.check_stored_family`)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"_from_store"}
        kw = {k: v for k, v in data.items() if k in names}
        for k in ("probs", "activations", "betas"):
            if k in kw and isinstance(kw[k], list):
                kw[k] = tuple(kw[k])
        if isinstance(kw.get("lr"), list):
            kw["lr"] = tuple(kw["lr"])
        if isinstance(kw.get("fixed"), list):
            kw["fixed"] = tuple(tuple(t) for t in kw["fixed"])
        if isinstance(kw.get("sigma"), list):
            kw["sigma"] = tuple(tuple(r) for r in kw["sigma"])
        elif isinstance(kw.get("sigma"), str) and kw["sigma"].strip().startswith("diag:"):
            # stored convention (see _stored_sigma): "diag:" is the randomly rotated spectrum
            kw["sigma"] = "spectrum:" + kw["sigma"].strip()[len("diag:"):]
        return cls(**kw, _from_store=True)


def _resolve_device(device: str | torch.device) -> torch.device:
    """:func:`landscape.recipe.device`."""
    return recipe.device(device)


def make_task(config: TrainConfig, sigma: torch.Tensor | None = None) -> Any:
    """The prompt distribution of ``config`` (in the training dtype), built by :func:`landscape.recipe.task`.

    Args:
        config: the config.
        sigma: :math:`\\Sigma` if already resolved (default: :meth:`TrainConfig.sigma_matrix`).

    Returns:
        The task.

    Raises:
        ValueError: if the task cannot be built from the config's arguments.
    """
    sigma = config.sigma_matrix() if sigma is None else sigma
    return recipe.task(config.task, config.d, config.n, sigma=sigma, prior=config.task_cov,
                       covariates=config.covariates, noise=config.noise, probs=config.probs, margin=config.margin,
                       flip=config.flip, data_kernel=config.data_kernel, dtype=config.torch_dtype)


def train_mask(spec: ModelSpec, preset: str) -> dict[str, torch.Tensor]:
    """Boolean masks of the free entries for a training mask name (see :class:`TrainConfig`).

    :func:`landscape.core.masks.make_mask` restricted to the names a run takes (:data:`MASKS`,
    aliases such as ``"all"`` accepted); the names are documented in :data:`landscape.core.masks.MASKS`.

    Raises:
        ValueError: an unknown name or one that needs a family (``"blocks"``).
    """
    return make_mask(spec, canonical_mask(preset, MASKS))


def held_entries(config: TrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    r"""The entries a run holds at fixed values (its ``fixed`` field) and those values.

    Args:
        config: the run.

    Returns:
        ``(held, values)``: name → bool tensor (``True`` = held) and name → float64 tensor of the
        held values (0 elsewhere), in :func:`landscape.core.model.param_shapes` order; all ``False``
        and zero when ``config.fixed`` is ``None``.
    """
    spec = config.spec
    from landscape.core.masks import structural_blocks
    from landscape.core.model import param_shapes

    held: dict[str, torch.Tensor] = {}
    values: dict[str, torch.Tensor] = {}
    for key, shape in param_shapes(spec).items():
        h = torch.zeros(shape, dtype=torch.bool)
        val = torch.zeros(shape, dtype=torch.float64)
        for letter, block, x in config.fixed or ():
            if key.rsplit(".", 1)[1] == letter:
                rows, cols = structural_blocks(shape[0], spec.d)[block]
                h[rows, cols] = True
                val[rows, cols] = x
        held[key], values[key] = h, val
    return held, values


def free_mask(config: TrainConfig) -> dict[str, torch.Tensor]:
    """The entries a run trains: those its ``mask`` frees (:func:`train_mask`), less the held ones
    (:func:`held_entries`)."""
    mask = train_mask(config.spec, config.mask)
    if config.fixed is None:
        return mask
    held, _ = held_entries(config)
    return {k: m & ~held[k] for k, m in mask.items()}


# ---------------------------------------------------------------------- fused stacked forward
def _pmul(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Per-seed weights ``W (S, a, b)`` times tokens ``X (S, B, b, k)`` or shared ``X (B, b, k)``.

    ``einsum`` folds the prompt axis into the columns of one matrix product per seed, which is
    much faster on the CPU than broadcasting ``W`` to ``(S, B, a, b)`` for a batched product.
    """
    if X.ndim == 4:
        return torch.einsum("sij,sbjk->sbik", W, X)
    return torch.einsum("sij,bjk->sbik", W, X)


def stacked_predict(params: Mapping[str, torch.Tensor], spec: ModelSpec, Z: torch.Tensor) -> torch.Tensor:
    r"""Predictions of a stack of models, fused for speed; equal to :func:`landscape.core.model.predict`.

    Not a second definition of the model: :func:`landscape.core.model.forward` is the source of
    truth, and this is the same function applied to every seed (tested to round-off against it over
    a grid of ``d``, ``n``, ``L``, head mixes and kernels), computed with three exact rewrites:

    * linear heads use associativity, :math:`Z + \frac1n P Z_s (Z_s^\top Q Z) = (I + \frac1n P G Q) Z`
      with :math:`G = Z_s Z_s^\top`, so the per-prompt products are ``D×n×D`` and ``D×D×N`` instead of
      ``n×D×N`` and ``D×n×N`` (and the ``1/n`` lands on the small weights);
    * per-seed weights multiply tokens through ``einsum`` (one matrix product per seed);
    * the last layer computes only the query's label entry
      :math:`[Z_L]_{D,N} = [Z_{L-1}]_{D,N} + \frac1n\sum_h p_h^\top Z_s\, s_h` with :math:`p_h^\top` the last
      row of ``P`` (or ``V``) and :math:`s_h` the query's column of attention scores.

    Args:
        params: stacked parameters ``(S, D, D)`` per name.
        spec: architecture.
        Z: prompts ``(S, B, D, N)`` (one batch per seed) or ``(B, D, N)`` (shared by all seeds).

    Returns:
        ``(S, B)`` predictions :math:`-[Z_L]_{D,N}`.
    """
    n = Z.shape[-1] - 1
    L = spec.layers
    for l in range(L):
        Zs = Z[..., :n]
        if l < L - 1:
            # The 1/n goes on the (tiny) value weights, never on the (large) token updates.
            M = None  # linear heads: sum_h P_h G Q_h / n, applied as (I + M) Z
            upd = None  # kernel heads: sum_h V_h Z_s h(B_h Z_s, C_h Z) / n
            G = None
            for h, head in enumerate(spec.heads):
                pre = f"layer{l}.head{h}."
                if head.kind == "linear":
                    if G is None:
                        G = Zs @ Zs.transpose(-1, -2)  # (.., D, D) per prompt
                    Mh = torch.einsum("sbij,sjk->sbik", _pmul(params[pre + "P"] / n, G), params[pre + "Q"])
                    M = Mh if M is None else M + Mh
                else:
                    scores = head.kernel.gram(_pmul(params[pre + "B"], Zs), _pmul(params[pre + "C"], Z))
                    u = _pmul(params[pre + "V"] / n, Zs) @ scores
                    upd = u if upd is None else upd + u
            if M is not None:
                Zn = (M + torch.eye(spec.token_dim, dtype=M.dtype, device=M.device)) @ Z
                Z = Zn if upd is None else Zn + upd
            else:
                Z = Z + upd  # type: ignore[operator]
            continue
        # Each slice of the (large) tokens costs a full-size zero fill in the backward pass, so the
        # last layer slices Z once (the query column) and works on all N columns otherwise,
        # dropping the query's own (masked) term from the small (S, B, N) products.
        zq = Z[..., :, n:]  # (.., D, 1) the query token
        out = zq[..., -1, 0]
        for h, head in enumerate(spec.heads):
            pre = f"layer{l}.head{h}."
            if head.kind == "linear":
                s = (Z * _pmul(params[pre + "Q"], zq)).sum(-2)  # (S, B, N): z_i^T Q z_q
                a = _pmul(params[pre + "P"][:, -1:, :] / n, Z).squeeze(-2)  # (S, B, N): p^T z_i / n
                prod = a * s
                out = out + (prod.sum(-1) - prod[..., n])
            else:
                s = head.kernel.gram(_pmul(params[pre + "B"], Zs), _pmul(params[pre + "C"], zq)).squeeze(-1)
                a = _pmul(params[pre + "V"][:, -1:, :] / n, Zs).squeeze(-2)
                out = out + (a * s).sum(-1)
        return -out
    raise AssertionError("unreachable: a model has at least one layer")


# ---------------------------------------------------------------------- state and step
@dataclass(frozen=True)
class TrainState:
    """The complete training state of a stack of seeds (everything a checkpoint holds).

    Attributes:
        step: optimizer steps taken.
        flat: ``(S, P)`` the parameters of every seed, flattened as
            :func:`landscape.core.model.flatten_params`.
        opt: optimizer state, flat like ``flat``: ``{"m", "v"}`` (Adam/AdamW), ``{"buf"}`` (SGD
            with momentum) or ``{}``.
        alive: ``(S,)`` bool, False for frozen (diverged) seeds.
        diverged_step: ``(S,)`` int64, the step at which a seed was frozen (``-1``: never).
        loss: ``(S,)`` the last training-batch loss.
        spec: the architecture (to view ``flat`` as a parameter dict).
    """

    step: int
    flat: torch.Tensor
    opt: dict[str, torch.Tensor]
    alive: torch.Tensor
    diverged_step: torch.Tensor
    loss: torch.Tensor
    spec: ModelSpec

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Stacked parameter dict ``(S, D, D)`` per name (views of :attr:`flat`)."""
        return unflatten_params(self.flat, self.spec)


def init_state(config: TrainConfig, device: torch.device | str | None = None) -> TrainState:
    """Fresh state: :math:`N(0, \\mathrm{init\\_std}^2)` parameters with the mask applied, the held
    entries (``fixed``) set to their values, zero moments.

    The initial parameters come from the config's ``"init"`` stream (:func:`make_generator`), drawn
    on the CPU so that they do not depend on the device.
    """
    dev = _resolve_device(config.device) if device is None else torch.device(device)
    spec = config.spec
    g = make_generator(config, "init")
    mask = free_mask(config)
    params = init_params(spec, g, std=config.init_std, mask=mask, seeds=config.seeds,
                         dtype=config.torch_dtype, device=dev)
    if config.fixed is not None:
        held, values = held_entries(config)
        params = {k: torch.where(held[k].to(dev), values[k].to(device=dev, dtype=v.dtype), v) for k, v in params.items()}
    flat = flatten_params(params, spec)
    S = config.seeds
    opt = optimizer_state(config.optimizer, config.momentum, flat)
    return TrainState(0, flat, opt, torch.ones(S, dtype=torch.bool, device=dev),
                      torch.full((S,), -1, dtype=torch.int64, device=dev),
                      torch.full((S,), math.nan, dtype=config.torch_dtype, device=dev), spec)


def schedule_factor(schedule: str, warmup: int, steps: int, step: int) -> float:
    r"""Learning-rate multiplier of a schedule at ``step`` (0-based), the one schedule of every loop.

    Linear warm-up :math:`(t+1)/w` for :math:`t < w`, then, with :math:`u = (t - w)/(T - w)`:

    * ``"constant"``: :math:`1`;
    * ``"cosine"``: :math:`\tfrac12(1 + \cos(\pi u))` (to 0 at :math:`T`; with :math:`w = 0` the
      closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=T, eta_min=0)``);
    * ``"linear"``: :math:`1 - u` (to 0 at :math:`T`).

    When :math:`T \le w` the factor after warm-up is 1 whatever the schedule.

    Args:
        schedule: one of :data:`SCHEDULES`.
        warmup: warm-up steps :math:`w \ge 0`.
        steps: total steps :math:`T \ge 0`.
        step: the step :math:`t`.

    Returns:
        The multiplier (a float; the caller validated the arguments).
    """
    w, T = warmup, steps
    if step < w:
        return (step + 1) / w
    if schedule == "constant" or T <= w:
        return 1.0
    u = (step - w) / (T - w)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * u))
    return 1.0 - u


def lr_factor(config: TrainConfig, step: int) -> float:
    r"""Learning-rate multiplier of a run at ``step``: :func:`schedule_factor` of the config's
    ``schedule``, ``warmup`` and ``steps``."""
    return schedule_factor(config.schedule, config.warmup, config.steps, step)


def optimizer_state(optimizer: str, momentum: float, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fresh (zero) optimizer state shaped like ``like``: ``{"m", "v"}`` for Adam/AdamW,
    ``{"buf"}`` for SGD with momentum, ``{}`` for plain SGD (the state :func:`optimizer_update` takes)."""
    if optimizer in ("adam", "adamw"):
        return {"m": torch.zeros_like(like), "v": torch.zeros_like(like)}
    if momentum > 0:
        return {"buf": torch.zeros_like(like)}
    return {}


def clip_gradient(grad: torch.Tensor, clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Global-norm clipping over the last axis: :math:`g \leftarrow g\,\min(1, c / (\lVert g\rVert + 10^{-6}))`.

    As ``torch.nn.utils.clip_grad_norm_`` for one model; a leading axis (seeds) is clipped row by row.

    Args:
        grad: ``(..., P)`` gradients.
        clip: the largest norm :math:`c`, or ``None`` (no clipping).

    Returns:
        ``(clipped gradient, norm before clipping)``, the norm of shape ``grad.shape[:-1]``.
    """
    gnorm = torch.linalg.vector_norm(grad, dim=-1)
    if clip is not None:
        grad = grad * torch.clamp(clip / (gnorm + 1e-6), max=1.0).unsqueeze(-1)
    return grad, gnorm


def optimizer_update(
    params: torch.Tensor,
    grad: torch.Tensor,
    state: Mapping[str, torch.Tensor],
    step: int,
    lr: float | torch.Tensor,
    *,
    optimizer: str,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""One optimizer update, elementwise and pure: the only optimizer update of the project.

    With :math:`g` the (already clipped) gradient, :math:`\eta` the learning rate of this step,
    :math:`\lambda` the weight decay and :math:`t` the 0-based step (:math:`n = t + 1`):

    * ``"adam"`` (Kingma & Ba 2015; ``torch.optim.Adam``): :math:`g \leftarrow g + \lambda\theta`,
      :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
      :math:`\theta \leftarrow \theta - \frac{\eta}{1-\beta_1^n}\, m / \big(\sqrt v/\sqrt{1-\beta_2^n} + \epsilon\big)`;
    * ``"adamw"`` (Loshchilov & Hutter 2019): the same without the L2 term, after the decoupled decay
      :math:`\theta \leftarrow (1 - \eta\lambda)\theta`;
    * ``"sgd"``: :math:`g \leftarrow g + \lambda\theta`, with momentum :math:`\mu > 0`
      :math:`b \leftarrow \mu b + g`, :math:`g \leftarrow b`; then :math:`\theta \leftarrow \theta - \eta g`.

    Args:
        params: :math:`\theta`, any shape.
        grad: :math:`g`, shaped like ``params``.
        state: the optimizer state (:func:`optimizer_state`), shaped like ``params``.
        step: :math:`t`.
        lr: :math:`\eta`, a float or a tensor broadcastable to ``params`` (e.g. ``(S, 1)`` per seed).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (:data:`OPTIMIZERS`).
        betas, eps: Adam constants.
        momentum: SGD momentum :math:`\mu`.
        weight_decay: :math:`\lambda`.

    Returns:
        ``(new params, new state)``; no input is modified. The arguments are not validated here
        (callers validate their configuration once, before the loop).
    """
    b1, b2 = betas
    wd, mom = weight_decay, momentum
    p, g = params, grad
    if optimizer in ("adam", "adamw"):
        n_t = step + 1
        bc1, bc2 = 1.0 - b1**n_t, 1.0 - b2**n_t
        if wd and optimizer == "adamw":
            p = p * (1.0 - lr * wd)
        elif wd:
            g = g + wd * p
        m = torch.lerp(state["m"], g, 1.0 - b1)
        v = state["v"] * b2 + (1.0 - b2) * (g * g)
        denom = torch.sqrt(v) / bc2**0.5 + eps
        return p - (lr / bc1) * (m / denom), {"m": m, "v": v}
    if wd:
        g = g + wd * p
    if mom:
        g = state["buf"] * mom + g
    return p - lr * g, ({"buf": g} if mom else {})


StepFn = Callable[..., tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


def make_step(config: TrainConfig) -> StepFn:
    r"""The pure training step of ``config``.

    Returns:
        ``step(flat, opt, alive, diverged_step, t, Z, y, lr) -> (flat, opt, alive, diverged_step,
        loss, grad_norm)`` with ``flat (S, P)`` the stacked flat parameters, ``opt`` the flat
        optimizer state, ``alive`` the ``(S,)`` bool mask of live seeds, ``t`` the 0-based step
        index, ``Z (S, B, D, N)`` and ``y (S, B)`` the prompts and targets, ``lr (S,)`` the per-seed
        learning rates of this step. ``loss`` and ``grad_norm`` are ``(S,)``, evaluated at the
        incoming parameters (the norm before clipping). No input is modified.
    """
    spec = config.spec
    free_flat = flatten_params(free_mask(config), spec)
    all_free = bool(free_flat.all())
    hold = config.fixed is not None  # held non-zero entries: restore them after the update (weight decay)

    engine = resolve_engine(config, _resolve_device(config.device))
    if engine == "fused":
        from landscape.engine.fused import fused_grad

        def grad_fn(flat: torch.Tensor, Z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if flat.device.type != "cpu":
                return stacked_grad(flat, spec, Z, y, resolve_chunk(config, flat.device))
            return fused_grad(flat, spec, Z, y)
    elif engine == "vmap":
        def loss_one(p: torch.Tensor, Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            pred = predict(unflatten_params(p, spec), spec, Z, validate=False)
            return squared_error(pred, y)

        grad_fn = torch.func.vmap(torch.func.grad_and_value(loss_one))
    else:
        chunk_cache: dict[torch.device, int] = {}

        def grad_fn(flat: torch.Tensor, Z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if flat.device not in chunk_cache:
                chunk_cache[flat.device] = resolve_chunk(config, flat.device)
            return stacked_grad(flat, spec, Z, y, chunk_cache[flat.device])

    opt_name, betas, eps = config.optimizer, config.betas, config.eps
    wd, mom, clip = config.weight_decay, config.momentum, config.clip
    mask_cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def step(flat: torch.Tensor, opt: dict[str, torch.Tensor], alive: torch.Tensor, diverged_step: torch.Tensor,
             t: int, Z: torch.Tensor, y: torch.Tensor, lr: torch.Tensor):
        g, loss = grad_fn(flat, Z, y)
        if not all_free:
            key = (flat.device, flat.dtype)
            if key not in mask_cache:
                mask_cache[key] = free_flat.to(device=flat.device, dtype=flat.dtype)
            g = g * mask_cache[key]
        g, gnorm = clip_gradient(g, clip)
        new, new_opt = optimizer_update(flat, g, opt, t, lr[:, None], optimizer=opt_name, betas=betas, eps=eps,
                                        momentum=mom, weight_decay=wd)
        if hold:
            new = torch.where(mask_cache[(flat.device, flat.dtype)] > 0, new, flat)
        finite = torch.isfinite(loss) & torch.isfinite(gnorm) & torch.isfinite(new).all(-1)
        keep = alive & finite
        k2 = keep[:, None]
        out = torch.where(k2, new, flat)
        out_opt = {name: torch.where(k2, new_opt[name], opt[name]) for name in opt}
        out_div = torch.where(alive & ~finite, torch.full_like(diverged_step, t), diverged_step)
        return out, out_opt, keep, out_div, loss.detach(), gnorm.detach()

    step.engine = engine  # type: ignore[attr-defined]
    return step


# ---------------------------------------------------------------------- user objectives
@dataclass(frozen=True)
class MinimiseResult:
    """Outcome of :func:`minimise`.

    Attributes:
        params: the final parameters (detached; held-fixed entries equal to the initial ones), with
            the keys, shapes and order of the initial point.
        loss: ``(k,)`` the objective at the incoming parameters of every first-phase step taken
            (``k = steps``, or one more than the updates applied when a step diverged), in the
            parameters' dtype.
        diverged_step: the step whose loss, gradient norm or update was not finite (the parameters
            are those before it and the polish is skipped), or ``None``.
        steps: first-phase updates applied.
        polish_loss: the objective on the polish batch after the L-BFGS phase (``None`` without one).
    """

    params: dict[str, torch.Tensor]
    loss: torch.Tensor
    diverged_step: int | None
    steps: int
    polish_loss: float | None


def _is_batch_sampler(data: Any) -> bool:
    return callable(data) and not isinstance(data, torch.Tensor)


def minimise(
    objective: Callable[[dict[str, torch.Tensor], Any], torch.Tensor],
    params: Mapping[str, torch.Tensor],
    *,
    generator: torch.Generator,
    data: Any = None,
    steps: int = 0,
    lr: float = 1e-3,
    optimizer: str = "adam",
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    clip: float | None = None,
    schedule: str = "constant",
    warmup: int = 0,
    free: Mapping[str, torch.Tensor] | None = None,
    polish_iters: int = 0,
    polish_data: Any = None,
    polish_history: int = 50,
    polish_tolerance_grad: float = 1e-15,
    polish_tolerance_change: float = 1e-18,
    record: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    record_every: int = 1,
) -> MinimiseResult:
    r"""Minimise a user objective over a parameter dict with the project's optimizer and schedule.

    For objectives :class:`TrainConfig` does not name (another embedding, target or loss; entries
    held at non-zero values). With :math:`\theta_0` the initial point, :math:`F` the free entries
    (``free``; the others stay at their values in :math:`\theta_0`, exactly) and :math:`b_t` the batch
    of step :math:`t` (drawn by ``data(generator)`` every step, or the one fixed batch ``data``):

    .. math::
        g_t = \mathrm{clip}\big(\nabla_{\theta_F}\, f(\theta_t, b_t)\big),\qquad
        \theta_{t+1, F} = \mathrm{update}(\theta_{t,F}, g_t;\ \eta\, s(t)),

    for :math:`t = 0 \dots T-1`, with the update of :func:`optimizer_update` (Adam, AdamW, SGD with
    momentum), the clipping of :func:`clip_gradient` and the schedule :math:`s` of
    :func:`schedule_factor` — the same functions :func:`train` steps with, so ``adam`` with
    ``schedule="cosine"`` is ``torch.optim.Adam`` under ``CosineAnnealingLR(T_max=steps)`` (up to
    round-off; tested). Gradients are :func:`torch.func.grad` of ``objective`` with respect to the
    free entries. A step whose loss, gradient norm or update is not finite ends the phase: the
    parameters stay those before it and the step is reported as ``diverged_step``.

    Then, when ``polish_iters > 0``, a full-batch L-BFGS phase (``torch.optim.LBFGS``, strong Wolfe
    line search, step 1) of at most ``polish_iters`` iterations minimises :math:`f(\cdot, b)` over
    the free entries on one fixed batch :math:`b` (``polish_data``, or ``polish_data(generator)``
    drawn once after the first phase).

    Args:
        objective: ``objective(params, batch) -> 0-d tensor``, differentiable by :func:`torch.func.grad`
            (no in-place writes into ``params``, no ``.item()``).
        params: the initial point, name → floating tensor (one dtype and device for all).
        generator: the only randomness (the batches of ``data``/``polish_data`` callables).
        data: ``data(generator) -> batch`` (a fresh batch every step) or one fixed batch (anything
            that is not callable, e.g. a tensor or a tuple of tensors); required when ``steps > 0``.
        steps: first-phase steps :math:`T \ge 0`.
        lr: base learning rate :math:`\eta > 0` (one number).
        optimizer, betas, eps, momentum, weight_decay, clip, schedule, warmup: as in
            :class:`TrainConfig` (validated by the same field rules).
        free: name → bool tensor of the entry's shape, ``True`` where the entry is trained
            (``None``: every entry); every key of ``params`` exactly once.
        polish_iters: L-BFGS iterations (``0``: no polish).
        polish_data: the polish batch, or ``polish_data(generator) -> batch``; required when
            ``polish_iters > 0``.
        polish_history, polish_tolerance_grad, polish_tolerance_change: ``history_size``,
            ``tolerance_grad``, ``tolerance_change`` of ``torch.optim.LBFGS``.
        record: ``record(step, params)`` called with the parameters after ``step`` updates at every
            ``step % record_every == 0`` of the first phase and once at its end.
        record_every: recording interval ``>= 1``.

    Returns:
        A :class:`MinimiseResult`.

    Raises:
        TypeError: a non-callable objective or ``record``, params that are not a dict of floating
            tensors, a generator that is not a ``torch.Generator``, an objective that does not
            return a 0-d floating tensor.
        ValueError: an unknown optimizer or schedule, out-of-range numbers (negative steps, ...),
            a per-seed ``lr`` tuple, a ``free`` mask whose keys or shapes differ from ``params``,
            no free entry, a missing ``data`` or ``polish_data``, params of mixed dtype or device.
    """
    # ---- validation (every check before any work)
    if not callable(objective):
        raise TypeError(f"objective must be a callable objective(params, batch) -> scalar tensor, "
                        f"got {type(objective).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if record is not None and not callable(record):
        raise TypeError(f"record must be a callable record(step, params) or None, got {type(record).__name__}")
    if not isinstance(params, Mapping) or not params:
        raise TypeError("params must be a non-empty dict name -> floating tensor")
    for k, v in params.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise TypeError(f"params must map names (str) to floating tensors; entry {k!r} is {type(v).__name__}"
                            + (f" of dtype {v.dtype}" if isinstance(v, torch.Tensor) else ""))
    first = next(iter(params.values()))
    mixed = [k for k, v in params.items() if v.dtype != first.dtype or v.device != first.device]
    if mixed:
        raise ValueError(f"params must share one dtype and device ({first.dtype}, {first.device}); "
                         f"{mixed} differ")
    if isinstance(lr, (list, tuple)):
        raise ValueError(f"lr must be one number for minimise (per-seed tuples are for TrainConfig), got {lr!r}")
    opt = OptimisationPart(steps=steps, lr=lr, optimizer=optimizer, betas=betas, eps=eps, momentum=momentum,
                           weight_decay=weight_decay, clip=clip, schedule=schedule, warmup=warmup)
    _check_momentum(opt.optimizer, opt.momentum)
    check_int("polish_iters", polish_iters, minimum=0)
    check_int("polish_history", polish_history, minimum=1)
    check_real("polish_tolerance_grad", polish_tolerance_grad, nonnegative=True)
    check_real("polish_tolerance_change", polish_tolerance_change, nonnegative=True)
    check_int("record_every", record_every, minimum=1)
    if opt.steps > 0 and data is None:
        raise ValueError("data is required when steps > 0: a callable data(generator) -> batch or one fixed batch")
    if polish_iters > 0 and polish_data is None:
        raise ValueError("polish_data is required when polish_iters > 0: a callable polish_data(generator) -> batch "
                         "or one fixed batch")
    names = list(params)
    shapes = [tuple(params[k].shape) for k in names]
    if free is not None:
        if not isinstance(free, Mapping) or set(free) != set(names):
            got = sorted(free) if isinstance(free, Mapping) else type(free).__name__
            raise ValueError(f"free must map exactly the keys of params {sorted(names)} to bool tensors, got {got}")
        for k, shape in zip(names, shapes):
            m = free[k]
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or tuple(m.shape) != shape:
                what = f"{m.dtype} tensor of shape {tuple(m.shape)}" if isinstance(m, torch.Tensor) else type(m).__name__
                raise ValueError(f"free[{k!r}] must be a bool tensor of shape {shape} (the entry's), got {what}")

    # ---- flat view of the free entries
    numels = [math.prod(sh) for sh in shapes]
    base = torch.cat([params[k].detach().reshape(-1) for k in names]).clone()
    if free is None:
        idx = None
    else:
        mask_flat = torch.cat([free[k].reshape(-1) for k in names]).to(base.device)
        idx = mask_flat.nonzero().squeeze(-1)
        if idx.numel() == 0:
            raise ValueError("free marks no entry as trained; at least one entry must be free")
        if idx.numel() == base.numel():
            idx = None

    def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        full = flat if idx is None else base.index_put((idx,), flat)
        out, o = {}, 0
        for k, sh, n in zip(names, shapes, numels):
            out[k] = full[o:o + n].view(sh)
            o += n
        return out

    checked = [False]

    def f(x: torch.Tensor, batch: Any) -> torch.Tensor:
        value = objective(unflatten(x), batch)
        if not checked[0]:
            if not isinstance(value, torch.Tensor) or value.ndim != 0 or not value.is_floating_point():
                what = (f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
                        if isinstance(value, torch.Tensor) else type(value).__name__)
                raise TypeError(f"objective must return a 0-d floating tensor, got {what}")
            checked[0] = True
        return value

    grad_and_value = torch.func.grad_and_value(f)
    x = base.clone() if idx is None else base[idx].clone()
    state = optimizer_state(opt.optimizer, opt.momentum, x)
    sampler = _is_batch_sampler(data)

    def view(x_: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in unflatten(x_.detach()).items()}

    losses: list[torch.Tensor] = []
    diverged: int | None = None
    last_recorded = -1
    t = 0
    for t in range(opt.steps):
        if record is not None and t % record_every == 0:
            record(t, view(x))
            last_recorded = t
        batch = data(generator) if sampler else data
        g, loss = grad_and_value(x, batch)
        g, gnorm = clip_gradient(g, opt.clip)
        new, new_state = optimizer_update(x, g, state, t, opt.lr * schedule_factor(opt.schedule, opt.warmup, opt.steps, t),
                                          optimizer=opt.optimizer, betas=opt.betas, eps=opt.eps,
                                          momentum=opt.momentum, weight_decay=opt.weight_decay)
        losses.append(loss.detach())
        if not (bool(torch.isfinite(loss)) and bool(torch.isfinite(gnorm)) and bool(torch.isfinite(new).all())):
            diverged = t
            break
        x, state = new, new_state
    taken = diverged if diverged is not None else opt.steps
    if record is not None and last_recorded != taken:
        record(taken, view(x))

    polish_loss: float | None = None
    if polish_iters > 0 and diverged is None:
        pbatch = polish_data(generator) if _is_batch_sampler(polish_data) else polish_data
        xp = x.detach().clone().requires_grad_(True)
        lbfgs = torch.optim.LBFGS([xp], lr=1.0, max_iter=polish_iters, history_size=polish_history,
                                  tolerance_grad=polish_tolerance_grad, tolerance_change=polish_tolerance_change,
                                  line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            g_, v_ = grad_and_value(xp.detach(), pbatch)
            xp.grad = g_
            return v_.detach()

        lbfgs.step(closure)
        x = xp.detach()
        polish_loss = float(f(x, pbatch))
    loss_hist = torch.stack(losses) if losses else torch.empty(0, dtype=base.dtype, device=base.device)
    return MinimiseResult(view(x), loss_hist, diverged, taken, polish_loss)


def resolve_engine(config: TrainConfig, device: torch.device | str = "cpu") -> str:
    """The gradient engine a run of ``config`` uses on ``device``.

    ``"auto"`` becomes ``"fused"`` where :func:`landscape.engine.fused.unsupported_reason` finds
    nothing against it (CPU, float32/float64, built-in attention kinds, numba importable), and
    ``"stacked"`` otherwise; the other names are returned as they are.

    Returns:
        ``"fused"``, ``"stacked"`` or ``"vmap"``.
    """
    if config.engine != "auto":
        return config.engine
    from landscape.engine.fused import unsupported_reason

    return "fused" if unsupported_reason(config.spec, device, config.torch_dtype) is None else "stacked"


# ---------------------------------------------------------------------- chunked stacked gradient
CHUNK_TARGET_BYTES: dict[str, int] = {"cpu": 8 << 20, "cuda": 256 << 20}
"""Size target of the largest tensor one chunk of the stacked engine allocates (all seeds).

CPU: 8 MiB. glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh
``mmap`` pages, so a step whose temporaries exceed it page-faults on every use: at 32 seeds ×
1024 prompts (d = 5, n = 20, L = 3, ReLU kernel attention, float32) the whole-batch step, whose
score tensors are 55 MB each, took 684 ms of CPU, chunks of 128–512 prompts (7–28 MB scores)
480–530 ms (docs/benchmarks.md). 8 MiB stays under the threshold with margin. CUDA: 256 MiB,
enough to amortise the per-chunk launch overhead."""


def prompt_bytes(spec: ModelSpec, n: int, dtype: torch.dtype) -> int:
    r"""Bytes of the largest tensor the stacked engine allocates per prompt and seed.

    The attention scores of one head, :math:`n \times N` numbers with ``N = n + 1``, or a token
    matrix :math:`D \times N` if that is larger (``D`` the token dimension).

    Args:
        spec: architecture.
        n: context length.
        dtype: training dtype.

    Returns:
        The size in bytes (positive).
    """
    D, N = spec.token_dim, n + 1
    return max(n * N, D * N) * torch.empty((), dtype=dtype).element_size()


def resolve_chunk(config: TrainConfig, device: torch.device | str = "cpu") -> int:
    r"""Prompts per seed per chunk of the stacked engine.

    ``config.chunk`` when given (capped at the batch), otherwise the largest chunk whose largest
    tensor, ``S · chunk ·`` :func:`prompt_bytes`, fits :data:`CHUNK_TARGET_BYTES` of the device
    type (at least 8 prompts, at most the batch). The result depends on the config and the device
    type only, never on the machine, so a run is reproducible anywhere with the same engine.

    Args:
        config: the run.
        device: where the step runs.

    Returns:
        The chunk size, ``1 <= chunk <= config.batch``.
    """
    B = config.batch
    if config.chunk is not None:
        return min(config.chunk, B)
    dev = torch.device(device)
    target = CHUNK_TARGET_BYTES.get(dev.type, CHUNK_TARGET_BYTES["cpu"])
    per = config.seeds * prompt_bytes(config.spec, config.n, config.torch_dtype)
    return max(1, min(B, max(8, target // per)))


def stacked_grad(flat: torch.Tensor, spec: ModelSpec, Z: torch.Tensor, y: torch.Tensor,
                 chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-seed gradients and losses of the stacked engine, the batch processed in prompt chunks.

    With :math:`f_i = \frac1B\sum_{b} (\mathrm{TF}_{\theta_i}(Z_{ib}) - y_{ib})^2` and the
    prompts split into consecutive chunks :math:`C_1, C_2, \dots` of ``chunk`` prompts,
    :math:`\nabla f_i = \sum_c \nabla \frac1B\sum_{b\in C_c}(\cdot)^2`: each chunk runs the fused
    forward (:func:`stacked_predict`) and reverse mode on the sum over seeds of its share of the
    loss, and the gradients are added in chunk order. Only one chunk's autograd graph is alive at
    a time, so the temporaries stay cache-sized whatever ``B`` is; the sum equals the full-batch
    gradient up to float round-off, and a fixed chunk gives the same bits every run.

    Args:
        flat: ``(S, P)`` stacked flat parameters (not modified).
        spec: architecture.
        Z: ``(S, B, D, N)`` prompts.
        y: ``(S, B)`` targets.
        chunk: prompts per chunk (``>= 1``).

    Returns:
        ``(grad (S, P), loss (S,))``.
    """
    B = Z.shape[1]
    grad = None
    loss = None
    # Reverse mode on a detached alias: the caller's tensor is untouched. Plain autograd rather
    # than torch.func.grad here: same numbers, less per-op overhead.
    with torch.enable_grad():
        x = flat.detach().requires_grad_(True)
        for c0 in range(0, B, chunk):
            Zc, yc = Z[:, c0:c0 + chunk], y[:, c0:c0 + chunk]
            pred = stacked_predict(unflatten_params(x, spec), spec, Zc)
            per = squared_error(pred, yc, reduction="sum") / B
            (g,) = torch.autograd.grad(per.sum(), x)
            per = per.detach()
            grad = g if grad is None else grad + g
            loss = per if loss is None else loss + per
    return grad, loss  # type: ignore[return-value]


def sample_batch(task: Any, config: TrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``S × B`` prompts in one call and reshape them ``(S, B, D, N)``, targets ``(S, B)``.

    ``task`` may be a :class:`landscape.core.tasks.BufferedSampler` (what :func:`train` passes): the
    same prompts, written into the buffers of the previous call.
    """
    S, B = config.seeds, config.batch
    batch = task.sample(S * B, generator)
    Z = batch.Z.reshape((S, B) + tuple(batch.Z.shape[1:]))
    return Z, batch.target.reshape(S, B)


# ---------------------------------------------------------------------- result
@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        config: the config trained.
        params: final stacked parameters ``(S, D, D)`` per name (on the training device).
        final_loss: ``(S,)`` loss of the final parameters on the held-out prompts.
        train_loss: ``(S,)`` last training-batch loss.
        diverged: ``(S,)`` bool, seeds frozen after a non-finite loss/gradient/update.
        diverged_step: ``(S,)`` the step each diverged seed was frozen at (``-1``: never).
        steps: optimizer steps taken.
        family_distance: ``(S,)`` relative distance to the configured family (``None`` without one).
        family_values: symbol name → ``(S,)`` family scalars fitted by least squares over the raw
            weight entries (empty without a family). When :math:`\\Sigma \\ne I` these are *not* the
            papers' step sizes: every raw entry counts alike, so the small-variance directions of
            :math:`\\Sigma` dominate (see :mod:`landscape.experiment.distance`).
        family_step_sizes: symbol name → ``(S,)`` the family scalars fitted in whitened coordinates
            (:func:`landscape.experiment.distance.project_whitened`) — the step sizes of Ahn et al.; equal to
            ``family_values`` when :math:`\\Sigma = I`; empty when the family is not defined in
            whitened coordinates (:func:`landscape.experiment.distance.whitened_family`) or for runs stored
            before it was measured.
        identity_distance: ``(S, L, H)`` raw :math:`\\mathrm{Dist}(M_l, I)` (see
            :func:`landscape.experiment.distance.identity_distances`).
        identity_distance_whitened: ``(S, L, H)`` the whitened version.
        run_name, run_id, root: where the run is stored (``None`` without a store).
        resumed_from: the checkpoint step training resumed from (``None``: fresh start;
            ``steps`` when a finished run was loaded without training).
        wall_time: seconds spent in this call.
        engine: the gradient engine that ran (:func:`resolve_engine`; ``None`` when a finished
            run was loaded without training).
    """

    config: TrainConfig
    params: dict[str, torch.Tensor]
    final_loss: torch.Tensor
    train_loss: torch.Tensor
    diverged: torch.Tensor
    diverged_step: torch.Tensor
    steps: int
    family_distance: torch.Tensor | None = None
    family_values: dict[str, torch.Tensor] = field(default_factory=dict)
    family_step_sizes: dict[str, torch.Tensor] = field(default_factory=dict)
    identity_distance: torch.Tensor | None = None
    identity_distance_whitened: torch.Tensor | None = None
    run_name: str | None = None
    run_id: int | None = None
    root: Path | None = None
    resumed_from: int | None = None
    wall_time: float = 0.0
    engine: str | None = None

    @property
    def run(self) -> str | None:
        """The run's name in the store (alias of :attr:`run_name`)."""
        return self.run_name

    def summary(self) -> dict[str, Any]:
        """JSON-friendly per-seed summary (what ``landscape train --json`` prints)."""
        out: dict[str, Any] = {
            "run": self.run_name,
            "root": None if self.root is None else str(self.root),
            "steps": self.steps,
            "seeds": self.config.seeds,
            "final_loss": self.final_loss.tolist(),
            "train_loss": self.train_loss.tolist(),
            "diverged": self.diverged.tolist(),
        }
        if self.family_distance is not None:
            out["family"] = self.config.family
            out["family_distance"] = self.family_distance.tolist()
            out["family_values"] = {k: v.tolist() for k, v in self.family_values.items()}
            out["family_step_sizes"] = ({k: v.tolist() for k, v in self.family_step_sizes.items()}
                                        if self.family_step_sizes else None)
            out["family_fits"] = FAMILY_FIT_LABELS
        if self.identity_distance is not None:
            out["identity_distance"] = self.identity_distance.tolist()
            out["identity_distance_whitened"] = self.identity_distance_whitened.tolist()  # type: ignore[union-attr]
        out["resumed_from"] = self.resumed_from
        out["engine"] = self.engine
        out["wall_time"] = self.wall_time
        return out


# ---------------------------------------------------------------------- evaluation helpers
def _eval_loss(spec: ModelSpec, params: Mapping[str, torch.Tensor], Z: torch.Tensor, y: torch.Tensor,
               engine: str = "stacked") -> torch.Tensor:
    r"""``(S,)`` mean squared error of every seed on shared prompts ``Z (E, D, N)``, targets ``y (E,)``.

    :math:`\frac1E\sum_b (\mathrm{TF}_{\theta_s}(Z_b) - y_b)^2`. With ``engine="fused"`` (where the
    run trains with the fused kernel) the predictions come from the kernel's forward pass
    (:func:`landscape.engine.fused.fused_predict`), otherwise from :func:`stacked_predict` on
    chunks of the prompts (temporaries stay small); the two agree to round-off of the dtype
    (tested), and the training itself does not depend on which runs.
    """
    S = next(iter(params.values())).shape[0]
    E = Z.shape[0]
    if engine == "fused" and Z.device.type == "cpu":
        from landscape.engine.fused import fused_predict

        flat = flatten_params({k: v.detach() for k, v in params.items()}, spec)
        return squared_error(fused_predict(flat, spec, Z), y, reduction="sum") / E
    chunk = max(8, CHUNK_TARGET_BYTES.get(Z.device.type, CHUNK_TARGET_BYTES["cpu"])
                // (S * prompt_bytes(spec, Z.shape[-1] - 1, Z.dtype)))
    with torch.no_grad():
        total = None
        for c0 in range(0, E, chunk):  # chunks of the shared prompts: temporaries stay small
            part = squared_error(stacked_predict(params, spec, Z[c0:c0 + chunk]), y[c0:c0 + chunk], reduction="sum")
            total = part if total is None else total + part
        return total / E  # type: ignore[operator]


FAMILY_FIT_LABELS: dict[str, str] = {
    "family_step_sizes": "step sizes: the family fitted in whitened coordinates (x = Sigma^1/2 xi, "
                         "A_l -> Sigma^1/2 A_l Sigma^1/2), the papers' a_l; null when the family is not "
                         "defined in whitened coordinates",
    "family_values": "least-squares fit of the family over the raw weight entries (not the step sizes when "
                     "Sigma != I: the small-variance directions of Sigma dominate it)",
}
"""What the two family fits of :meth:`TrainResult.summary` are (printed with them)."""


def _measure(spec: ModelSpec, family: Family | None, sigma: torch.Tensor | None,
             params: Mapping[str, torch.Tensor], eval_Z: torch.Tensor, eval_y: torch.Tensor,
             with_family: bool, white: Family | None = None, engine: str = "stacked") -> dict[str, torch.Tensor]:
    """Per-seed metrics of the current weights: held-out loss (by ``engine``: :func:`_eval_loss`),
    Ahn's identity distances per layer and head (raw and whitened), the projection onto the family
    (distance, fitted scalars) and, with ``white`` (the family in whitened coordinates), the step
    sizes ``family_whitened.*``."""
    from landscape.experiment.distance import identity_distances, project_stacked, project_whitened

    vals: dict[str, torch.Tensor] = {"eval_loss": _eval_loss(spec, params, eval_Z, eval_y, engine)}
    cpu = {k: v.detach().to("cpu", torch.float64) for k, v in params.items()}
    ids = identity_distances(cpu, spec, sigma)
    for l in range(spec.layers):
        for h in range(len(spec.heads)):
            vals[metric_key("dist_identity", layer=l, head=h)] = ids.raw[:, l, h]
            vals[metric_key("dist_identity_whitened", layer=l, head=h)] = ids.whitened[:, l, h]
    if family is not None and with_family:
        # One fresh start (t = 0, Gauss-Newton scalars, greedy signs: enough for the scaling
        # symmetries of every built-in family) and no warm start from the previous log step: the
        # logged numbers must depend on the weights alone, so that a resumed run logs exactly what
        # an uninterrupted one does. Frozen (diverged) seeds keep finite weights.
        proj = project_stacked(cpu, family, starts=1)
        vals["family_distance"] = proj.distance
        for j, name in enumerate(proj.names):
            vals[family_key(name)] = proj.values[:, j]
        if white is not None:
            wproj = proj if white is family else project_whitened(cpu, white, sigma, starts=1)
            for j, name in enumerate(wproj.names):
                vals[family_key(name, whitened=True)] = wproj.values[:, j]
    return vals


# ---------------------------------------------------------------------- the loop
def _progress_enabled(progress: bool) -> bool:
    """A tqdm bar: progress asked for, not ``--quiet``, stderr a terminal (:mod:`landscape._progress`)."""
    return _progress.bar_enabled(progress)


PROGRESS_LINE_SECONDS = _progress.PROGRESS_LINE_SECONDS
"""Seconds between two progress lines on stderr when it is not a terminal (no bar there)."""


class _ProgressLines:
    """Progress of a run on a non-terminal stderr (:class:`landscape._progress.ProgressLines`): one
    line (step, median live loss, diverged seeds, elapsed, ETA) every :data:`PROGRESS_LINE_SECONDS`."""

    def __init__(self, desc: str, step0: int, total: int) -> None:
        self.lines = _progress.ProgressLines(desc, step0, total, interval=PROGRESS_LINE_SECONDS)

    def step(self, step: int, loss: torch.Tensor, alive: torch.Tensor) -> None:
        if time.perf_counter() - self.lines.last < self.lines.interval:
            return
        live = loss[alive]
        med = float(seed_median(live)) if live.numel() else math.nan
        self.lines.update(step, f", loss {med:.4g}, diverged {int((~alive).sum())}")


def _state_dict(state: TrainState, gen: torch.Generator, batch: tuple[torch.Tensor, torch.Tensor] | None,
                chash: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "format": _CHECKPOINT_FORMAT,
        "config_hash": chash,
        "step": state.step,
        "flat": state.flat,
        "opt": state.opt,
        "alive": state.alive,
        "diverged_step": state.diverged_step,
        "loss": state.loss,
        "generator": gen.get_state(),
    }
    if batch is not None:
        out["batch_Z"], out["batch_y"] = batch
    return out


def _restore(ckpt: Mapping[str, Any], dev: torch.device, spec: ModelSpec) -> tuple[TrainState, torch.Tensor, tuple | None]:
    state = TrainState(int(ckpt["step"]), ckpt["flat"].to(dev), {k: v.to(dev) for k, v in ckpt["opt"].items()},
                       ckpt["alive"].to(dev), ckpt["diverged_step"].to(dev), ckpt["loss"].to(dev), spec)
    batch = (ckpt["batch_Z"].to(dev), ckpt["batch_y"].to(dev)) if "batch_Z" in ckpt else None
    return state, ckpt["generator"], batch


def train(
    config: TrainConfig,
    store: Any = None,
    *,
    name: str | None = None,
    progress: bool = True,
    callback: Callable[[int, TrainState], None] | None = None,
) -> TrainResult:
    r"""Train ``config.seeds`` seeds at once; resume or reuse a stored run when there is one.

    Args:
        config: the run.
        store: ``None`` (nothing persisted), a :class:`~landscape.experiment.store.RunStore`, or a directory
            (a store is opened there). With a store, an existing run of the same config is resumed
            from its latest checkpoint, and a finished one is returned without training.
        name: run name in the store (default ``run-<config hash>``); a name holding another
            config is an error.
        progress: show a tqdm bar (loss, diverged seeds, ETA) when stderr is a terminal.
        callback: called as ``callback(step, state)`` after every optimizer step (e.g. to stop
            early by raising); it must not modify the state.

    Returns:
        :class:`TrainResult`.

    Raises:
        ValueError: the store cannot be opened, or the run name holds another config — before any
            training.
        TypeError: ``config`` is not a :class:`TrainConfig`.
        landscape.experiment.store.StoreError: the store is not usable, or another process is training the
            same run (its writer lock is held).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    t_start = time.perf_counter()
    from landscape.experiment.store import RunStore

    if store is not None and not isinstance(store, (RunStore, str, os.PathLike)):
        raise TypeError(f"store must be None, a RunStore or a directory, got {type(store).__name__}")
    setup = _setup(config)  # a bad config fails here, before anything is created on disk
    own_store = False
    if store is not None and not isinstance(store, RunStore):
        store = RunStore(store)
        own_store = True
    try:
        return _train(config, setup, store, name, progress, callback, t_start)
    finally:
        if own_store:
            store.close()


_log = logging.getLogger(__name__)


def _setup(config: TrainConfig) -> tuple[Any, ...]:
    """Everything a bad config can fail on: device, Σ, family (and its whitened form), task, held-out prompts, step."""
    built = config.build()
    dev, sigma, family, task = built.device, built.sigma, built.family, built.task
    from landscape.experiment.distance import whitened_family

    white = whitened_family(family, config.family) if family is not None else None
    # held-out prompts, shared by every seed, fixed by the config seed
    eval_batch = task.sample(config.eval_batch, make_generator(config, "eval", dev))
    return dev, sigma, family, white, task, eval_batch.Z, eval_batch.target, make_step(config)


def _failure_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def _train(config: TrainConfig, setup: tuple[Any, ...], store: Any, name: str | None, progress: bool,
           callback: Callable[[int, TrainState], None] | None, t_start: float) -> TrainResult:
    dev, sigma, family, white, task, eval_Z, eval_y, step_fn = setup
    spec = config.spec
    run = None
    cfg_dict = config.to_dict()
    from landscape.experiment.store import config_hash

    chash = config_hash(cfg_dict)
    if store is not None:
        run = store.create_run(cfg_dict, name=name)
        _record_preset(store, run, config)
        if run.status == "finished":
            loaded = _load_finished(config, store, run, dev, t_start)
            if loaded is not None:
                return loaded
    with contextlib.ExitStack() as held:
        if run is not None:
            held.enter_context(store.writer_lock(run))  # a second trainer of this run refuses here
        try:
            return _train_locked(config, dev, spec, sigma, family, eval_Z, eval_y, step_fn, store, run, chash,
                                 progress, callback, t_start, task, white)
        except KeyboardInterrupt:
            if run is not None:
                with contextlib.suppress(Exception):
                    store.set_status(run, "interrupted", reason="interrupted (KeyboardInterrupt)")
            raise
        except BaseException as exc:
            if run is not None:
                with contextlib.suppress(Exception):  # keep the original error if the store fails too
                    store.set_status(run, "failed", reason=_failure_reason(exc))
            raise


def preset_overrides(config: TrainConfig) -> tuple[str, ...]:
    """The fields of ``config.preset`` (:func:`landscape.recipe.preset`) whose value in ``config`` is not the preset's.

    ``landscape train --preset NAME --mask full`` overrides ``mask``; ``TrainConfig(preset=NAME)``
    without the preset's fields overrides every field that differs from them. Each value is
    compared in the form the config stores it (the field's validation rule).

    Returns:
        The overridden field names in the preset's order; ``()`` without a preset.
    """
    if config.preset is None:
        return ()
    return tuple(k for k, v in recipe.PRESETS[config.preset].items() if getattr(config, k) != _FIELD_RULES[k](k, v))


def _record_preset(store: Any, run: Any, config: TrainConfig) -> None:
    """Record the run's provenance (:data:`PRESET_RESULT`, :data:`PRESET_OVERRIDES_RESULT`) when it starts.

    Never rewritten after: a run that already holds training state (a checkpoint or final
    weights) or the record keeps what it has — resuming it, typed out or from a preset, does not
    change how it began.
    """
    if PRESET_RESULT in store.results(run) or store.checkpoints(run) or store.has_final(run):
        return
    if config.preset is not None:
        store.log_result(run, PRESET_OVERRIDES_RESULT, list(preset_overrides(config)))
    store.log_result(run, PRESET_RESULT, config.preset)


def stored_preset(store: Any, run: Any) -> str | None:
    """The preset a stored run was started from (:data:`PRESET_RESULT`), or ``None``.

    ``None`` both for a run whose fields were given one by one and for one stored before the
    provenance was recorded (:func:`train` records it when a run starts). The stored text is
    only returned (a str, else ``None``), never interpreted.

    Args:
        store: an open :class:`~landscape.experiment.store.RunStore`.
        run: the run, its name or its id.
    """
    value = store.results(run).get(PRESET_RESULT)
    return value if isinstance(value, str) else None


def _train_locked(config: TrainConfig, dev: torch.device, spec: ModelSpec, sigma: torch.Tensor | None,
                  family: Family | None, eval_Z: torch.Tensor, eval_y: torch.Tensor, step_fn: StepFn,
                  store: Any, run: Any, chash: str, progress: bool,
                  callback: Callable[[int, TrainState], None] | None, t_start: float, task: Any,
                  white: Family | None = None) -> TrainResult:
    gen = make_generator(config, "data", dev)
    state = init_state(config, dev)
    batch: tuple[torch.Tensor, torch.Tensor] | None = None
    resumed_from = None
    if run is not None:
        scan = store.latest_intact_checkpoint(run)
        for bad_step, why in scan.skipped:
            _log.warning("run %s: skipping the checkpoint at step %d: %s", run.name, bad_step, why)
        if scan.skipped:
            _log.warning("run %s: resuming from %s", run.name,
                         f"the checkpoint at step {scan.step}" if scan.step is not None
                         else "step 0 (no stored checkpoint verifies)")
        if scan.state is not None:
            step0, payload = scan.step, scan.state
            if payload.get("config_hash") != chash or payload.get("format") != _CHECKPOINT_FORMAT:
                raise ValueError(f"checkpoint at step {step0} of run {run.name!r} does not belong to this config")
            state, gstate, batch = _restore(payload, dev, spec)
            gen.set_state(gstate)
            resumed_from = state.step
        store.set_status(run, "running")

    engine = step_fn.engine  # type: ignore[attr-defined]
    lr_base = config.lr_vector(dev)
    T, k_res = config.steps, config.resample_every
    dist_every = config.log_every if config.distance_every is None else config.distance_every

    from tqdm import tqdm

    from landscape.core.tasks import BufferedSampler
    from landscape.engine.fused import linear_prompts

    # each batch is dead before the next is drawn: draw every one into the same buffers (the same bits),
    # labels and prompts in one compiled pass where it applies
    sampler = BufferedSampler(task, linear_prompts)
    bar = tqdm(total=T, initial=state.step, desc=f"train {config.seeds} seeds [{engine}]", unit="step",
               disable=not _progress_enabled(progress), dynamic_ncols=True, file=sys.stderr)
    # without a terminal, progress goes to stderr as a line every PROGRESS_LINE_SECONDS
    lines = _ProgressLines(f"train {config.seeds} seeds [{engine}]", state.step, T) \
        if _progress.enabled(progress) and not _progress_enabled(progress) else None
    try:
        while state.step < T:
            t = state.step
            if (run is not None and config.checkpoint_every and t % config.checkpoint_every == 0
                    and t > 0 and t != resumed_from):
                keep_batch = batch if (k_res > 1 and t % k_res != 0) else None
                store.save_checkpoint(run, t, _state_dict(state, gen, keep_batch, chash))
            if t % k_res == 0 or batch is None:
                batch = sample_batch(sampler, config, gen)
            lr_t = lr_base * lr_factor(config, t)
            flat, opt, alive, dstep, loss, gnorm = step_fn(
                state.flat, state.opt, state.alive, state.diverged_step, t, batch[0], batch[1], lr_t)
            if t % config.log_every == 0:
                with_family = dist_every > 0 and t % dist_every == 0
                meas = _measure(spec, family, sigma, state.params, eval_Z, eval_y, with_family, white, engine)
                if run is not None:
                    vals = {"loss": loss, "grad_norm": gnorm, "lr": lr_t,
                            "diverged": (~alive).to(torch.float64), **meas}
                    store.log_metrics(run, t, vals)
                live = loss[alive]
                bar.set_postfix(loss=f"{float(seed_median(live)) if live.numel() else math.nan:.4g}",
                                diverged=int((~alive).sum()))
            state = TrainState(t + 1, flat, opt, alive, dstep, loss, spec)
            bar.update(1)
            if lines is not None:
                lines.step(state.step, loss, alive)
            if callback is not None:
                callback(state.step, state)
        # final measurements at step T
        meas = _measure(spec, family, sigma, state.params, eval_Z, eval_y, True, white, engine)
        final_loss = meas["eval_loss"]
        ids_raw, ids_white = _stack_identity(meas, spec)
        fam = {k: parse_family_key(k) for k in meas}
        fam_vals = {f[0]: meas[k] for k, f in fam.items() if f is not None and not f[1]}
        fam_steps = {f[0]: meas[k] for k, f in fam.items() if f is not None and f[1]}
        fam_dist = meas.get("family_distance")
        result = TrainResult(
            config=config, params=state.params, final_loss=final_loss, train_loss=state.loss,
            diverged=~state.alive, diverged_step=state.diverged_step, steps=state.step,
            family_distance=fam_dist, family_values=fam_vals, family_step_sizes=fam_steps, identity_distance=ids_raw,
            identity_distance_whitened=ids_white, run_name=None if run is None else run.name,
            run_id=None if run is None else run.id, root=None if store is None else store.root,
            resumed_from=resumed_from, wall_time=time.perf_counter() - t_start, engine=engine,
        )
        if run is not None:
            store.log_metrics(run, T, {"diverged": (~state.alive).to(torch.float64), **meas})
            final_state = {
                "format": _CHECKPOINT_FORMAT, "config_hash": chash, "step": state.step,
                "params": state.params, "final_loss": final_loss, "train_loss": state.loss,
                "alive": state.alive, "diverged_step": state.diverged_step,
                "identity_distance": ids_raw, "identity_distance_whitened": ids_white,
            }
            if fam_dist is not None:
                final_state["family_distance"] = fam_dist
                final_state["family_values"] = fam_vals
                final_state["family_step_sizes"] = fam_steps
            store.save_final(run, final_state, step=state.step)
            for key, value in result.summary().items():
                if key not in ("wall_time", "resumed_from", "run", "root"):
                    store.log_result(run, key, value)
            store.set_status(run, "finished")
    finally:
        bar.close()
    return result


def _stack_identity(values: Mapping[str, torch.Tensor], spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    L, H = spec.layers, len(spec.heads)
    raw = torch.stack([torch.stack([values[metric_key("dist_identity", layer=l, head=h)] for h in range(H)], -1)
                       for l in range(L)], -2)
    white = torch.stack([torch.stack([values[metric_key("dist_identity_whitened", layer=l, head=h)]
                                      for h in range(H)], -1) for l in range(L)], -2)
    return raw, white


def _load_finished(config: TrainConfig, store: Any, run: Any, dev: torch.device, t_start: float) -> TrainResult | None:
    try:
        final = store.load_final(run)
    except ValueError:
        return None
    if final.get("step") != config.steps:
        return None
    fam_dist = final.get("family_distance")
    return TrainResult(
        config=config, params={k: v.to(dev) for k, v in final["params"].items()},
        final_loss=final["final_loss"].to(dev), train_loss=final["train_loss"].to(dev),
        diverged=~final["alive"].to(dev), diverged_step=final["diverged_step"].to(dev), steps=int(final["step"]),
        family_distance=fam_dist, family_values=dict(final.get("family_values", {})),
        family_step_sizes=dict(final.get("family_step_sizes", {})),
        identity_distance=final.get("identity_distance"),
        identity_distance_whitened=final.get("identity_distance_whitened"),
        run_name=run.name, run_id=run.id, root=store.root, resumed_from=int(final["step"]),
        wall_time=time.perf_counter() - t_start,
    )


def stored_config(run: Any) -> "TrainConfig | None":
    """The :class:`TrainConfig` of a stored training run, or ``None`` for another kind of run.

    Reading a stored config only validates it (declarative checks; :math:`\\Sigma` and the task are
    checked, the family is not compiled and a user family file is never imported); the objects a
    figure needs are built explicitly where it needs them (the task for the Bayes line, the family
    for the heat map).

    Args:
        run: a run of a :class:`~landscape.experiment.store.RunStore`.

    Returns:
        The validated config, or ``None`` when the stored config is not that of a training run.

    Raises:
        ValueError: a training run whose stored config does not validate (a damaged or edited
            store); the message names the run and the reason.
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)} - UNSTORED_FIELDS - STORED_OPTIONAL_FIELDS
    if not names <= set(run.config):
        return None
    try:
        return TrainConfig.from_dict({**run.config, "device": "cpu"})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"run {run.name!r}: its stored config is rejected: {exc}") from None
