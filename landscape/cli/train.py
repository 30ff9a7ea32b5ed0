r"""``landscape train``: train S seeds at once and measure their distance to a family.

Every seed is one model of a stacked parameter set trained by one optimizer (see
:mod:`landscape.experiment.train`). With ``--out DIR`` the run is stored in the run store at ``DIR``:
rerunning the same command resumes from the latest checkpoint, or prints the stored result of a
finished run without training. ``--family`` projects the learned weights onto a parameter family
modulo its symmetries (:func:`landscape.experiment.distance.project_onto_family`).

Examples::

    landscape train --attention linear --data linear --sigma random:0 --family pgd \
        --d 5 --n 20 --layers 3 --seeds 8 --steps 5000 --batch 256 --lr 0.01 --out runs/ahn
    landscape train --activation exp --data gp:exp --family fgd --d 5 --n 10 --layers 2 \
        --seeds 4 --steps 2000 --batch 512 --json

The problem options (``--d --n --layers --attention --activation --heads --data --task-cov
--covariates --sigma --noise --seed``) are shared with ``solve`` and ``verify``; ``--data`` also
takes ``classification`` and ``features`` here.

``--preset NAME`` trains a paper's parameterisation (:func:`landscape.recipe.preset`, e.g.
``ahn2023``: Ahn et al.'s :math:`P = \mathrm{diag}(P', 1)` with the corner held); options given on
the same command line override the preset's fields, even when they repeat the default
(:func:`apply_preset`). ``--fixed LETTER:BLOCK=VALUE`` (repeatable) holds entries
(:attr:`TrainConfig.fixed <landscape.experiment.train.TrainConfig>`) and replaces a preset's.

With ``--json`` the last line printed is one JSON object with the per-seed final losses and
distances to the family, ``task``: the task, the prior of w* and Σ
(:func:`landscape.recipe.describe_task`; the text output prints it as one line), ``config``: the
run's config as stored (:meth:`~landscape.experiment.train.TrainConfig.to_dict`) and ``preset``:
the preset's name (or ``null``).

The preset's name is provenance, not part of the run's identity: the stored config (and its hash)
holds the fields, so ``--preset ahn2023`` and the same fields typed out are one run; the name is
recorded beside the run when it starts (result ``preset``,
:func:`~landscape.experiment.train.stored_preset`; ``null`` for fields typed out) and shown by
``landscape runs STORE --show RUN`` and ``--diff``. Resuming a run never rewrites it.

Every numeric option is checked when the command line is parsed, and the memory of the run is
estimated from its sizes before anything is created (:func:`train_memory`): a run that cannot fit
is refused with the estimate.

Exit status: 0 when at least one seed trained without diverging; 1 when every seed diverged (the
table is still printed; lower ``--lr`` or use ``--clip``); 2 on bad arguments, sizes that do not
fit in memory, or an error of the file system or the run store.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run", "config_from_args", "apply_preset", "preset_line", "OPTION_OF_FIELD"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``landscape train`` (the problem options are shared: :mod:`landscape.cli._args`)."""
    from landscape.cli._args import (
        add_command,
        add_problem_args,
        float_arg,
        float_list_arg,
        held_entry_arg,
        nonneg_float,
        nonneg_int,
        positive_float,
        positive_int,
        preset_arg,
        record_given,
    )

    p = add_command(
        subparsers, "train",
        help="train S seeds at once (seed-parallel) and measure distances to a family",
        doc=__doc__,
        paragraph=1,
    )
    record_given(p)  # args.given_options: what --preset must not override
    add_problem_args(p)  # --d --n --layers --attention --activation --heads --data --task-cov --covariates
    #                      --sigma --noise --seed --json
    t = p.add_argument_group("training data (besides linear and gp[:KERNEL])")
    t.add_argument("--probs", type=float_list_arg(0.0, 1.0), default=(0.5, 0.5),
                   help="--data features: feature probabilities (default 0.5,0.5); --data classification is "
                        "linear classification")
    m = p.add_argument_group("model")
    m.add_argument("--family", default=None,
                   help="family to measure distances to: a built-in name (landscape families) or file.py:NAME")
    m.add_argument("--mask", choices=("full", "paper", "sparse"), default="full",
                   help="free entries: full, paper (keys/queries read x only) or sparse (Ahn Thm 3 / "
                        "Cheng sparse value)")
    m.add_argument("--init-std", type=nonneg_float, default=0.1, help="init std (default 0.1)")
    m.add_argument("--fixed", type=held_entry_arg, action="append", default=None, metavar="LETTER:BLOCK=VALUE",
                   help="hold an entry block at a value in every head of every layer, e.g. P:corner=1 (Ahn et "
                        "al.'s P_{d+1,d+1} = 1); repeatable; LETTER P, Q (linear) or V, B, C (kernel), BLOCK "
                        "covariate, label_column, label_row or corner; replaces a preset's held entries")
    m.add_argument("--preset", type=preset_arg, default=None, metavar="NAME",
                   help="a paper's parameterisation (landscape.recipe.preset): ahn2023, ahn2023-p0, cheng2024; "
                        "options given on the same command line override its fields")
    o = p.add_argument_group("optimisation")
    o.add_argument("--seeds", type=positive_int, default=4, help="seeds S trained together (default 4)")
    o.add_argument("--steps", type=nonneg_int, default=1000, help="optimizer steps T (default 1000)")
    o.add_argument("--batch", type=positive_int, default=256, help="prompts per seed per step B (default 256)")
    o.add_argument("--lr", type=float_list_arg(0.0, lo_open=True), default=(1e-3,),
                   help="learning rate, or one per seed comma-separated (default 1e-3)")
    o.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    o.add_argument("--betas", type=float_list_arg(0.0, 1.0, hi_open=True, length=2), default=(0.9, 0.999),
                   help="Adam betas, each in [0, 1) (default 0.9,0.999)")
    o.add_argument("--momentum", type=float_arg(0.0, 1.0, hi_open=True), default=0.0,
                   help="SGD momentum, in [0, 1) (default 0)")
    o.add_argument("--weight-decay", type=nonneg_float, default=0.0)
    o.add_argument("--clip", type=positive_float, default=None, help="per-seed max gradient norm")
    o.add_argument("--schedule", choices=("constant", "cosine", "linear"), default="constant")
    o.add_argument("--warmup", type=nonneg_int, default=0, help="linear warm-up steps")
    o.add_argument("--resample-every", type=positive_int, default=1, help="fresh prompts every k steps (default 1)")
    o.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    o.add_argument("--engine", choices=("auto", "fused", "stacked", "vmap"), default="auto",
                   help="gradient engine (default auto: the fused CPU kernel where it applies, else stacked)")
    o.add_argument("--chunk", type=positive_int, default=None,
                   help="prompts per chunk of the stacked engine (default: from a working-set target)")
    b = p.add_argument_group("bookkeeping")
    b.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    b.add_argument("--out", default=None, help="run store directory (resume/reuse); default: not stored")
    b.add_argument("--name", default=None, help="run name in the store (default run-<config hash>)")
    b.add_argument("--log-every", type=positive_int, default=100)
    b.add_argument("--checkpoint-every", type=nonneg_int, default=1000, help="0: no checkpoints")
    b.add_argument("--eval-batch", type=positive_int, default=2048, help="held-out prompts (default 2048)")
    b.add_argument("--distance-every", type=nonneg_int, default=None,
                   help="project onto the family every k steps (default: every log step; 0: only at the end)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


TRAIN_MEMORY_FACTOR = 6.0
"""Peak bytes per ``seeds × batch × layers × (d+1) × (n+1)`` entry of a training step, in units of
the dtype size, measured for linear attention (d 8, n 16, batch 8192): 5.6 (4 seeds, 3 layers,
float32), 4.5 (12 layers), 3.2 (16 seeds, float64)."""

TRAIN_KERNEL_FACTOR = 4.0
"""The same per ``(n+1)^2`` score entry of each kernel head (measured: 4 seeds × 8192 prompts,
3 exp layers, d 8, n 16 take 0.63 GB where the linear part accounts for 0.33 GB)."""


def train_memory(config: Any) -> int:
    r"""Estimated peak bytes of training ``config``: a step (with backward) plus the held-out evaluation.

    .. math::
        S\,L\,b\,\big[B\,(6\,(d+1)(n+1) + 4\,H_k(n+1)^2) + E\,(2\,(d+1)(n+1) + H_k(n+1)^2)\big]

    (``S`` seeds, ``B`` batch, ``E`` eval batch, ``L`` layers, ``b`` bytes per float, ``H_k``
    kernel heads; the factors are :data:`TRAIN_MEMORY_FACTOR`, :data:`TRAIN_KERNEL_FACTOR`).
    """
    from landscape._checks import prompt_memory

    b = 8 if config.dtype == "float64" else 4
    heads = len(config.activations) if config.attention == "kernel" else 0
    step = prompt_memory(batch=config.batch, d=config.d, n=config.n, layers=config.layers, seeds=config.seeds,
                         dtype_bytes=b, factor=TRAIN_MEMORY_FACTOR, kernel_heads=heads,
                         kernel_factor=TRAIN_KERNEL_FACTOR)
    evaluation = prompt_memory(batch=config.eval_batch, d=config.d, n=config.n, layers=config.layers,
                               seeds=config.seeds, dtype_bytes=b, factor=2.0, kernel_heads=heads, kernel_factor=1.0)
    return step + evaluation


def check_train_memory(config: Any) -> None:
    """Refuse a run whose :func:`train_memory` does not fit in the available memory.

    Raises:
        ValueError: naming the estimate, its formula and the available memory.
    """
    from landscape._checks import check_memory

    check_memory(f"--seeds {config.seeds} --batch {config.batch} --eval-batch {config.eval_batch} --d {config.d} "
                 f"--n {config.n} --layers {config.layers} ({config.dtype})", train_memory(config),
                 f"seeds × layers × {'8' if config.dtype == 'float64' else '4'} B × (batch × {TRAIN_MEMORY_FACTOR:g} "
                 f"+ eval-batch × 2) × (d+1) × (n+1) + kernel scores")


def config_from_args(args: argparse.Namespace) -> Any:
    """Build (and thereby validate) the :class:`~landscape.experiment.train.TrainConfig` of parsed arguments.

    The problem options mean what they mean for every command (:mod:`landscape.cli._args`):
    ``--attention auto`` is the family's attention, else kernel iff ``--activation`` is given;
    kernel heads default to ``exp``; ``--data`` defaults to ``linear`` for linear attention and to
    ``gp`` with the first activation as data kernel (``exp`` for softmax) for kernel attention;
    ``--task-cov auto`` is the family's declared prior (``inverse`` for ``pgd``, ``pgd-relaxed``,
    ``pgd-identity``, a family file's ``PRIOR``; :func:`landscape.recipe.prior`).

    Raises:
        ValueError, TypeError: a bad value, named with the accepted ones.
    """
    from landscape import recipe
    from landscape.experiment.train import TrainConfig

    args, extra = apply_preset(args)
    attention = recipe.attention(args.attention, args.family, bool(args.activation))
    if attention == "linear" and args.activation:
        raise ValueError("--activation applies to kernel attention; linear attention (--attention linear) "
                         "has P, Q heads without an activation")
    acts = recipe.activations(args.activation)
    data = args.data if args.data is not None else recipe.default_data(attention, acts)
    if data == "gp":
        data = recipe.default_data("kernel", acts)
    task_cov = recipe.prior(args.task_cov, args.family, data)
    if not args.lr:
        raise ValueError("--lr needs at least one number (or one per seed, comma-separated)")
    lr: float | tuple[float, ...] = args.lr[0] if len(args.lr) == 1 else tuple(args.lr)
    return TrainConfig(
        task=data, d=args.d, n=args.n, sigma=args.sigma, task_cov=task_cov, covariates=args.covariates,
        noise=args.noise, probs=tuple(args.probs), attention=attention, activations=acts, heads=args.heads,
        layers=args.layers, family=args.family, mask=args.mask, init_std=args.init_std, seeds=args.seeds,
        steps=args.steps, batch=args.batch, lr=lr, optimizer=args.optimizer, betas=tuple(args.betas),
        momentum=args.momentum, weight_decay=args.weight_decay, clip=args.clip, schedule=args.schedule,
        warmup=args.warmup, resample_every=args.resample_every, dtype=args.dtype, seed=args.seed,
        engine=args.engine, chunk=args.chunk, device=args.device, log_every=args.log_every,
        checkpoint_every=args.checkpoint_every, eval_batch=args.eval_batch, distance_every=args.distance_every,
        fixed=tuple(args.fixed) if getattr(args, "fixed", None) else None, preset=getattr(args, "preset", None),
        **extra,
    )


OPTION_OF_FIELD: dict[str, str] = {"task": "data", "activations": "activation"}
"""TrainConfig field → the ``dest`` of its option where the names differ (else the same name)."""


def _as_option(field: str, value: Any) -> Any:
    """A preset's field value in the form the parsed option has."""
    if field == "lr":
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if field == "fixed":
        return None if value is None else [tuple(t) for t in value]
    return value


def apply_preset(args: argparse.Namespace) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The arguments with ``--preset NAME``'s fields (:func:`landscape.recipe.preset`) in place of the options not given.

    An option given on the command line (``args.given_options``,
    :func:`landscape.cli._args.record_given`) keeps its value, even one equal to the default; every
    other preset field replaces the option's default. ``--fixed`` replaces the preset's held
    entries as a whole. Preset fields without an option (e.g. ``eps``) are returned apart.

    Args:
        args: parsed ``landscape train`` arguments (not modified).

    Returns:
        ``(args, extra)``: a new namespace, and the preset's fields that have no option
        (TrainConfig keyword arguments).

    Raises:
        ValueError: an unknown preset name (the names are listed).
    """
    name = getattr(args, "preset", None)
    if name is None:
        return args, {}
    from landscape import recipe

    fields = recipe.preset(name)
    given = getattr(args, "given_options", frozenset())
    out = argparse.Namespace(**vars(args))
    extra: dict[str, Any] = {}
    for field, value in fields.items():
        dest = OPTION_OF_FIELD.get(field, field)
        if not hasattr(args, dest):
            extra[field] = value
        elif dest not in given:
            setattr(out, dest, _as_option(field, value))
    return out, extra


def preset_line(name: str, config: Any) -> str:
    """One line naming the preset and the fields the run took from it (the config's values); the
    fields given otherwise (:func:`landscape.experiment.train.preset_overrides`) name the preset's value."""
    import dataclasses

    from landscape import recipe
    from landscape.experiment.train import preset_overrides

    fields = recipe.preset(name)
    over = set(preset_overrides(dataclasses.replace(config, preset=name)))
    shown = []
    for k, want in fields.items():
        if k == "preset":  # the provenance itself, not a field the run took
            continue
        got = getattr(config, k)
        shown.append(f"{k}={got!r}" + (f" (given; the preset's: {want!r})" if k in over else ""))
    return f"preset {name}: " + ", ".join(shown)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def run(args: argparse.Namespace) -> int:
    """Train; print a per-seed table (or, with ``--json``, one JSON object as the last line)."""
    from landscape import recipe
    from landscape.cli import emit_json
    from landscape.experiment.bayes import record_family_minimum
    from landscape.experiment.train import make_task, train

    config = config_from_args(args)
    check_train_memory(config)
    record = recipe.describe_task(make_task(config), args.sigma)
    result = train(config, args.out, name=args.name, progress=not args.no_progress and not args.json)
    record_family_minimum(result.root, result.run_name)  # the loss plot's family line (None without --out)
    preset = config.preset
    summary = {**result.summary(), "task": record, "preset": preset, "config": config.to_dict()}
    status = 1 if config.seeds > 0 and bool(result.diverged.all()) else 0
    if status:
        print(f"landscape train: every one of the {config.seeds} seeds diverged (non-finite loss); lower --lr or "
              "set --clip", file=sys.stderr)
    if args.json:
        emit_json(summary)
        return status
    where = f" -> {result.root} ({result.run_name})" if result.root is not None else ""
    how = ("loaded (finished earlier)" if result.resumed_from == result.steps and result.steps > 0
           else f"resumed from step {result.resumed_from}" if result.resumed_from is not None else "trained")
    print(f"{config.spec.describe()}, {config.seeds} seeds x {config.steps} steps: {how}{where}")
    print(recipe.task_line(record))
    if preset is not None:
        print(preset_line(preset, config))
    header = ["seed", "final loss", "diverged"]
    steps, raw = result.family_step_sizes, result.family_values
    same = config.sigma_matrix() is None  # Σ = I: the whitened fit is the raw fit
    if result.family_distance is not None:
        header += [f"dist({config.family})"] + list(steps) + ([] if same and steps else [f"raw:{k}" for k in raw])
    rows = []
    for i in range(config.seeds):
        row = [str(i), _fmt(float(result.final_loss[i])), "yes" if bool(result.diverged[i]) else "no"]
        if result.family_distance is not None:
            row.append(_fmt(float(result.family_distance[i])))
            row += [_fmt(float(v[i])) for v in steps.values()]
            if not (same and steps):
                row += [_fmt(float(v[i])) for v in raw.values()]
        rows.append(row)
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    if result.family_distance is not None:
        if steps:
            print(f"{', '.join(steps)}: step sizes, the family fitted in whitened coordinates "
                  "(x = Σ^½ξ, A_l → Σ^½ A_l Σ^½)" + (" (Σ = I: the raw fit)" if same else ""))
        else:
            print(f"step sizes: not available ({config.family} is not defined in whitened coordinates"
                  + (", or the run was stored before they were measured" if result.resumed_from else "") + ")")
        if not (same and steps):
            print(f"{', '.join('raw:' + k for k in raw)}: least-squares fit over the raw weight entries "
                  "(not step sizes when Σ ≠ I: the small-variance directions of Σ dominate it)")
    sys.stdout.flush()
    return status
