r"""``landscape train``: train S seeds at once and measure their distance to a family.

Every seed is one model of a stacked parameter set trained by one optimizer (see
:mod:`landscape.train`). With ``--out DIR`` the run is stored in the run store at ``DIR``:
rerunning the same command resumes from the latest checkpoint, or prints the stored result of a
finished run without training. ``--family`` projects the learned weights onto a parameter family
modulo its symmetries (:func:`landscape.distance.project_onto_family`).

Examples::

    landscape train --attention linear --data linear --sigma random:0 --family pgd \
        --d 5 --n 20 --layers 3 --seeds 8 --steps 5000 --batch 256 --lr 0.01 --out runs/ahn
    landscape train --activation exp --data gp:exp --family fgd --d 5 --n 10 --layers 2 \
        --seeds 4 --steps 2000 --batch 512 --json

With ``--json`` the last line printed is one JSON object with the per-seed final losses and
distances to the family.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run", "config_from_args"]


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``landscape train``."""
    doc = __doc__ or ""
    p = subparsers.add_parser(
        "train",
        help="train S seeds at once (seed-parallel) and measure distances to a family",
        description=doc.split("\n\n")[1] if doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("task")
    g.add_argument("--data", default="linear",
                   help="linear | gp:KERNEL (e.g. gp:exp, gp:relu, gp:linear) | classification | features "
                        "(default: linear)")
    g.add_argument("--d", type=int, default=5, help="covariate dimension (default 5)")
    g.add_argument("--n", type=int, default=20, help="context length (default 20)")
    g.add_argument("--sigma", default="identity",
                   help="covariance of x: identity | random[:SEED] | diag:v1,...,vd | file (.pt/.npy/.txt)")
    g.add_argument("--task-cov", choices=("auto", "identity", "inverse"), default="auto",
                   help="linear data: w* ~ N(0, I) or N(0, Σ^-1) (Ahn et al. Thm 3); auto = inverse for "
                        "the pgd, pgd-relaxed and pgd-identity families, identity otherwise")
    g.add_argument("--covariates", choices=("gaussian", "sphere"), default=None,
                   help="covariate law (default: gaussian, sphere for gp data)")
    g.add_argument("--noise", type=float, default=0.0, help="label noise std (default 0)")
    g.add_argument("--probs", type=_floats, default=(0.5, 0.5),
                   help="feature probabilities of the features task (default 0.5,0.5)")
    m = p.add_argument_group("model")
    m.add_argument("--attention", choices=("auto", "linear", "kernel"), default="auto",
                   help="linear = Ahn's P, Q heads; kernel = V, B, C heads with --activation; auto = the "
                        "family's attention if --family is built in, else kernel when --activation is "
                        "given, else linear")
    m.add_argument("--activation", default=None,
                   help="kernel-head activation(s), comma-separated for several heads (e.g. exp or exp,linear)")
    m.add_argument("--heads", type=int, default=1, help="linear-attention heads (default 1)")
    m.add_argument("--layers", type=int, default=1, help="layers L (default 1)")
    m.add_argument("--family", default=None,
                   help="family to measure distances to: a built-in name (landscape families) or file.py:NAME")
    m.add_argument("--mask", choices=("full", "paper", "sparse"), default="full",
                   help="free entries: full, paper (keys/queries read x only) or sparse (Ahn Thm 3 / "
                        "Cheng sparse value)")
    m.add_argument("--init-std", type=float, default=0.1, help="init std (default 0.1)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--seeds", type=int, default=4, help="seeds S trained together (default 4)")
    o.add_argument("--steps", type=int, default=1000, help="optimizer steps T (default 1000)")
    o.add_argument("--batch", type=int, default=256, help="prompts per seed per step B (default 256)")
    o.add_argument("--lr", type=_floats, default=(1e-3,),
                   help="learning rate, or one per seed comma-separated (default 1e-3)")
    o.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    o.add_argument("--betas", type=_floats, default=(0.9, 0.999), help="Adam betas (default 0.9,0.999)")
    o.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default 0)")
    o.add_argument("--weight-decay", type=float, default=0.0)
    o.add_argument("--clip", type=float, default=None, help="per-seed max gradient norm")
    o.add_argument("--schedule", choices=("constant", "cosine", "linear"), default="constant")
    o.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    o.add_argument("--resample-every", type=int, default=1, help="fresh prompts every k steps (default 1)")
    o.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    o.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    o.add_argument("--engine", choices=("stacked", "vmap"), default="stacked")
    b = p.add_argument_group("bookkeeping")
    b.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    b.add_argument("--out", default=None, help="run store directory (resume/reuse); default: not stored")
    b.add_argument("--name", default=None, help="run name in the store (default run-<config hash>)")
    b.add_argument("--log-every", type=int, default=100)
    b.add_argument("--checkpoint-every", type=int, default=1000)
    b.add_argument("--eval-batch", type=int, default=2048, help="held-out prompts (default 2048)")
    b.add_argument("--distance-every", type=int, default=None,
                   help="project onto the family every k steps (default: every log step; 0: only at the end)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("--json", action="store_true", help="print one JSON object (last line)")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    """Build (and thereby validate) the :class:`~landscape.train.TrainConfig` of parsed arguments.

    Raises:
        ValueError, TypeError: a bad value, named with the accepted ones.
    """
    from ..families import FAMILY_ATTENTION
    from ..train import TrainConfig

    acts = tuple(a.strip() for a in args.activation.split(",")) if args.activation else ("linear",)
    attention = args.attention
    if attention == "auto":
        if args.family in FAMILY_ATTENTION:
            attention = FAMILY_ATTENTION[args.family]
        else:
            attention = "kernel" if args.activation else "linear"
    if attention == "linear" and args.activation:
        raise ValueError("--activation applies to kernel attention; linear attention (--attention linear) "
                         "has P, Q heads without an activation")
    task_cov = args.task_cov
    if task_cov == "auto":
        task_cov = ("inverse" if args.family in ("pgd", "pgd-relaxed", "pgd-identity")
                    and args.data == "linear" and args.sigma != "identity" else "identity")
    if not args.lr:
        raise ValueError("--lr needs at least one number (or one per seed, comma-separated)")
    lr: float | tuple[float, ...] = args.lr[0] if len(args.lr) == 1 else tuple(args.lr)
    return TrainConfig(
        task=args.data, d=args.d, n=args.n, sigma=args.sigma, task_cov=task_cov, covariates=args.covariates,
        noise=args.noise, probs=tuple(args.probs), attention=attention, activations=acts, heads=args.heads,
        layers=args.layers, family=args.family, mask=args.mask, init_std=args.init_std, seeds=args.seeds,
        steps=args.steps, batch=args.batch, lr=lr, optimizer=args.optimizer, betas=tuple(args.betas),
        momentum=args.momentum, weight_decay=args.weight_decay, clip=args.clip, schedule=args.schedule,
        warmup=args.warmup, resample_every=args.resample_every, dtype=args.dtype, seed=args.seed,
        engine=args.engine, device=args.device, log_every=args.log_every,
        checkpoint_every=args.checkpoint_every, eval_batch=args.eval_batch, distance_every=args.distance_every,
    )


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def run(args: argparse.Namespace) -> int:
    """Train; print a per-seed table (or, with ``--json``, one JSON object as the last line)."""
    from ..cli import emit_json
    from ..train import train

    config = config_from_args(args)
    result = train(config, args.out, name=args.name, progress=not args.no_progress and not args.json)
    summary = result.summary()
    if args.json:
        emit_json(summary)
        return 0
    where = f" -> {result.root} ({result.run_name})" if result.root is not None else ""
    how = ("loaded (finished earlier)" if result.resumed_from == result.steps and result.steps > 0
           else f"resumed from step {result.resumed_from}" if result.resumed_from is not None else "trained")
    print(f"{config.spec.describe()}, {config.seeds} seeds x {config.steps} steps: {how}{where}")
    header = ["seed", "final loss", "diverged"]
    if result.family_distance is not None:
        header += [f"dist({config.family})"] + list(result.family_values)
    rows = []
    for i in range(config.seeds):
        row = [str(i), _fmt(float(result.final_loss[i])), "yes" if bool(result.diverged[i]) else "no"]
        if result.family_distance is not None:
            row.append(_fmt(float(result.family_distance[i])))
            row += [_fmt(float(v[i])) for v in result.family_values.values()]
        rows.append(row)
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()
    return 0
