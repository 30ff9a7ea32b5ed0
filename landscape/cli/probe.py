r"""``landscape probe``: does layer ``l`` of the trained seeds do ``l`` steps of an algorithm?

For every seed of a trained run (``--run STORE[:RUN]``, read-only; ``--seeds all`` or a list) or for
a construction's weights (``--construction pgd|gd++|fgd`` with ``--d --layers``, a check of the
probe itself), the prediction read off the residual stream after each layer is compared with the
prediction of ``l`` steps of each algorithm of ``--algorithms`` (default: GD, preconditioned GD,
GD++, iterative Newton, functional GD), their step parameters fitted to the layers on
``--fit-samples`` prompts and the metrics computed on ``--eval-samples`` held-out prompts
(:func:`landscape.numeric.probe.probe`): cosine similarity and relative error of the predictions and
of the implied weight vectors (the gradient of the prediction in the query), median and quartiles
over seeds. ``--plot FILE`` draws both against the layer (the bands beside it, suffix ``.json``).

Exit status 0, or 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from landscape.cli._args import index_list_arg

__all__ = ["add_parser", "run", "algorithm_list", "seed_list"]

_ALGORITHMS = ("gd", "preconditioned_gd", "gd_plus_plus", "newton", "functional_gd")
_ALIASES = {"pgd": "preconditioned_gd", "gd++": "gd_plus_plus", "fgd": "functional_gd"}


def algorithm_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated algorithms (aliases ``pgd``, ``gd++``, ``fgd``) or ``all``."""
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if items == ["all"]:
        return _ALGORITHMS
    out = tuple(_ALIASES.get(x, x) for x in items)
    bad = [x for x, o in zip(items, out) if o not in _ALGORITHMS]
    if bad or not out or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(
            f"must be 'all' or distinct comma-separated names from {', '.join(_ALGORITHMS)} (aliases pgd, gd++, fgd), "
            f"got {text!r}")
    return out


seed_list = index_list_arg(allow_all=True)
"""argparse type of ``--seeds``: ``all`` (None) or distinct comma-separated seed indices >= 0."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``landscape probe``."""
    from landscape.cli._args import add_command, add_run_arg, int_arg, positive_int, seed_int

    p = add_command(
        subparsers, "probe",
        help="compare each layer's predictions with l steps of GD, preconditioned GD, GD++, Newton, functional GD",
        description="Probe trained layers against algorithm iterates: per layer and seed, cosine similarity and "
                    "relative error between the residual-stream prediction and l steps of each algorithm (step "
                    "parameters fitted on separate prompts), with bands over seeds. Exit 0, 2 on bad input.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    add_run_arg(src, help="a trained run (read-only); --seeds picks its seeds")
    src.add_argument("--construction", choices=("pgd", "gd++", "fgd"), default=None,
                     help="probe a construction's weights instead (random preconditioners / steps from --seed)")
    p.add_argument("--seeds", type=seed_list, default=None, help="--run: which seeds, 'all' or e.g. 0,2 (default all)")
    p.add_argument("--algorithms", type=algorithm_list, default=_ALGORITHMS,
                   help="comma-separated: gd, pgd, gd++, newton, fgd, or all (default all)")
    p.add_argument("--kernel", default=None, help="functional GD's kernel (default: the model's activation, or linear)")
    p.add_argument("--fit-samples", type=int_arg(2), default=512, help="prompts the step parameters are fitted on")
    p.add_argument("--eval-samples", type=int_arg(2), default=512, help="held-out prompts the metrics use")
    p.add_argument("--d", type=positive_int, default=3, help="--construction: covariate dimension (default 3)")
    p.add_argument("--n", type=positive_int, default=10, help="--construction: context length (default 10)")
    p.add_argument("--layers", type=positive_int, default=3, help="--construction: layers (default 3)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the prompts (and of a construction; default 0)")
    p.add_argument("--plot", default=None, metavar="FILE", help="draw the metrics per layer to FILE (.png or .svg)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
    return p


def _construction(kind: str, d: int, n: int, layers: int, seed: int) -> tuple[Any, Any, Any]:
    import torch

    from landscape.core.model import flatten_params
    from landscape.core.tasks import KernelGP, LinearRegression
    from landscape.theory.constructions import (
        functional_gd_construction,
        gd_plus_plus_construction,
        preconditioned_gd_construction,
    )

    g = torch.Generator().manual_seed(seed)
    F = torch.float64
    eye = torch.eye(d, dtype=F)
    if kind == "pgd":
        A = 0.8 * eye + 0.3 * torch.randn(layers, d, d, generator=g, dtype=F)
        c, task = preconditioned_gd_construction(A), LinearRegression(d, n, dtype=F)
    elif kind == "gd++":
        a = 0.5 + 0.5 * torch.rand(layers, generator=g, dtype=F)
        b = 0.4 * torch.rand(layers, generator=g, dtype=F) - 0.2
        c = gd_plus_plus_construction(a[:, None, None] * eye, b[:, None, None] * eye)
        task = LinearRegression(d, n, dtype=F)
    else:
        r = (0.3 + 0.6 * torch.rand(layers, generator=g, dtype=F)).tolist()
        c, task = functional_gd_construction(d, r, "exp", dtype=F), KernelGP(d, n, kernel="exp", dtype=F)
    return flatten_params(c.params, c.spec)[None], c.spec, task


def run(args: argparse.Namespace) -> int:
    """Run the probe; print a table per algorithm (or JSON)."""
    if args.plot is not None:
        from landscape.views.save import figure_path

        figure_path(args.plot, "--plot")
    if args.construction is not None and args.seeds is not None:
        raise ValueError("--seeds applies to --run")
    import torch

    from landscape.cli import emit_json
    from landscape.numeric.probe import probe
    from landscape.views.pictures import plot_probe

    if args.run is not None:
        from landscape.cli._args import load_run

        tr = load_run(args.run)
        seeds = list(range(tr.seeds)) if args.seeds is None else [tr.check_seed(s) for s in args.seeds]
        W, spec, task, label = tr.final[seeds], tr.spec, tr.task, f"{tr.run}, seeds {','.join(map(str, seeds))}"
        if spec.token_dim != tr.config.d + 1 or not tr.config.task.startswith(("linear", "gp")):
            raise ValueError(f"run {tr.run!r} is not a regression run (task {tr.config.task!r}); probe needs "
                             "linear or gp prompts")
    else:
        W, spec, task = _construction(args.construction, args.d, args.n, args.layers, args.seed)
        seeds, label = [0], f"{args.construction} construction (d={args.d}, L={args.layers}, seed {args.seed})"
    res = probe(W, spec, task, torch.Generator().manual_seed(args.seed), algorithms=args.algorithms,
                fit_samples=args.fit_samples, eval_samples=args.eval_samples, kernel=args.kernel)
    out = {"source": label, **res.summary(), "seed_indices": seeds}
    if args.plot is not None:
        plot_probe(res, args.plot, title=f"{label}: layers vs algorithm iterates",
                   formats=(args.plot.rsplit(".", 1)[-1].lower(),))
        out["plot"] = args.plot
    if args.json:
        emit_json(out)
        return 0
    w = sys.stdout.write
    w(f"probe    {label}: {res.layers} layers, {res.seeds} seed(s), fitted on {res.fit_samples} prompts, "
      f"evaluated on {res.eval_samples} (functional GD kernel: {res.kernel})\n")
    w("relative error ||y_l - a_l|| / ||a_l||, median [q25, q75] over seeds; cosine median\n")
    bands = res.bands()
    width = max(len(a) for a in res.algorithms)
    w(f"{'algorithm':<{width}}  " + "  ".join(f"{'layer ' + str(l + 1):>30}" for l in range(res.layers)) + "\n")
    for name in res.algorithms:
        b = bands[name]
        cells = [f"{b['relative_error_median'][l]:.2e} [{b['relative_error_q25'][l]:.1e}, "
                 f"{b['relative_error_q75'][l]:.1e}] cos {b['cosine_median'][l]:.3f}" for l in range(res.layers)]
        w(f"{name:<{width}}  " + "  ".join(f"{c:>30}" for c in cells) + "\n")
    if "weight_relative_error_median" in bands[res.algorithms[0]]:
        w("implied weights d y_l / d x_query: relative error median over seeds (cosine median)\n")
        for name in res.algorithms:
            b = bands[name]
            cells = [f"{b['weight_relative_error_median'][l]:.2e} (cos {b['weight_cosine_median'][l]:.3f})"
                     for l in range(res.layers)]
            w(f"{name:<{width}}  " + "  ".join(f"{c:>30}" for c in cells) + "\n")
    w("closest per layer: " + ", ".join(f"{l + 1}: {a}" for l, a in enumerate(res.best())) + "\n")
    if args.plot is not None:
        w(f"plot     {args.plot}\n")
    return 0
