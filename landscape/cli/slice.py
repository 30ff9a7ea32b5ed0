r"""``landscape slice``: pictures of the loss landscape, lines and planes through trained and family points.

The point options are those of ``landscape hessian`` (:func:`landscape.cli._args.add_point_args`): a trained run
(``--run STORE[:RUN] --seed K``, read-only) or a family point (``--family NAME`` and the problem
options, ``--point`` or the fitted best point). Exactly one of ``--line`` or ``--plane``:

``--line init``          :math:`\theta_{\mathrm{init}} \to \theta_{\mathrm{trained}}` (a run; α = 0, 1 are the two points)
``--line construction``  :math:`\theta_{\mathrm{trained}} \to` the nearest construction (the trained weights projected
                         onto the run's family modulo its symmetries, ``landscape.experiment.distance.project_onto_family``)
``--line family``        along the first family symbol (``--symbols``) around the family point
``--plane random``       two Gaussian directions, filter-normalised (Li et al. 2018), around the point
``--plane seeds``        the plane through the construction (the projection of the first of ``--seeds A,B``) and
                         the two trained seeds: they sit at (α, β) = (1, 0) and (0, 1)
``--plane family``       two of the family's own coordinates (``--symbols i,j``), each grid point mapped through the family

The trained seeds, the constructions and the initialisation that fall in the picture are drawn on
it (with their distance off the plane in the legend). The grid is evaluated with ``torch.func.vmap``
over grid points (:func:`landscape.numeric.slices.evaluate_losses`). ``--kind contour|surface``
chooses the figure of a plane; ``--out FILE`` (.png or .svg) is where it goes, with the grid and the
points beside it as ``FILE`` with the suffix ``.json``; ``--json`` prints the grid's minimum and the
loss at each drawn point.

Exit status 0, or 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from landscape.cli._args import index_list_arg

__all__ = ["add_parser", "run", "index_pair"]


index_pair = index_list_arg(2)
"""argparse type of ``--seeds`` and ``--symbols``: one or two distinct comma-separated integers >= 0 (``0,1``)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``landscape slice``."""
    from landscape.cli._args import add_command, add_point_args, float_list_arg, int_arg

    p = add_command(
        subparsers, "slice",
        help="loss along a line or on a plane through trained seeds, constructions and family points (figure)",
        description="Loss landscape pictures: 1-D interpolation (init -> trained, trained -> construction, a family "
                    "symbol) and 2-D planes (filter-normalised random directions, the plane through the "
                    "construction and two trained seeds, two family coordinates), with the points drawn on them; "
                    "contour or surface figures. Exit 0, 2 on bad input.",
    )
    add_point_args(p)
    g = p.add_argument_group("slice")
    what = g.add_mutually_exclusive_group(required=True)
    what.add_argument("--line", choices=("init", "construction", "family"), help="a 1-D slice")
    what.add_argument("--plane", choices=("random", "seeds", "family"), help="a 2-D slice")
    g.add_argument("--seeds", type=index_pair, default=(0, 1), help="--plane seeds: the two seeds A,B (default 0,1)")
    g.add_argument("--symbols", type=index_pair, default=None,
                   help="family coordinates (indices into the family's symbols; default 0 or 0,1)")
    g.add_argument("--range", type=float_list_arg(length=2), default=None, metavar="LO,HI",
                   help="grid range of each axis, written --range=LO,HI when LO is negative (default: -0.25,1.25 "
                        "for lines and the seeds plane, -1,1 otherwise)")
    g.add_argument("--grid", type=int_arg(2, 401), default=None,
                   help="grid points per axis (default 61 for lines, 25 for planes)")
    g.add_argument("--normalisation", choices=("filter", "matrix", "none"), default="filter",
                   help="--plane random: direction scaling (default filter, Li et al. 2018)")
    g.add_argument("--kind", choices=("contour", "surface"), default="contour", help="figure of a plane")
    g.add_argument("--log", action="store_true", help="logarithmic loss scale")
    g.add_argument("--out", default="slice.png", metavar="FILE", help="figure file, .png or .svg (default slice.png)")
    p.set_defaults(func=run)
    return p


def _check(args: argparse.Namespace) -> None:
    from landscape.cli._args import check_point_args
    from landscape.views.save import figure_path

    check_point_args(args)
    figure_path(args.out, "--out")
    mode = args.line or args.plane
    if args.run is None and ((args.line in ("init", "construction")) or args.plane == "seeds"):
        raise ValueError(f"--{'line' if args.line else 'plane'} {mode} needs trained seeds: give --run STORE[:RUN]")
    if args.symbols is not None and mode != "family":
        raise ValueError("--symbols applies to --line family and --plane family")
    if args.line == "family" and args.symbols is not None and len(args.symbols) != 1:
        raise ValueError("--line family takes one symbol index, e.g. --symbols 0")
    if args.plane == "family" and args.symbols is not None and len(args.symbols) != 2:
        raise ValueError("--plane family takes two symbol indices, e.g. --symbols 0,1")
    if args.plane == "seeds" and len(args.seeds) != 2:
        raise ValueError("--plane seeds needs two seeds, e.g. --seeds 0,1")


def run(args: argparse.Namespace) -> int:
    """Evaluate the slice, draw it, print a summary."""
    _check(args)
    import torch

    from landscape.cli import emit_json
    from landscape.cli._args import resolve_point
    from landscape.core.model import flatten_params, unflatten_params
    from landscape.numeric.slices import (
        LineSlice,
        family_plane_slice,
        line_slice,
        plane_coordinates,
        plane_slice,
        random_directions,
    )
    from landscape.views.pictures import plot_slice
    from landscape.views.save import figure_path

    pt = resolve_point(args)
    mode = args.line or args.plane
    is_line = args.line is not None
    lo, hi = args.range if args.range is not None else ((-0.25, 1.25) if (is_line and mode != "family")
                                                        or mode == "seeds" else (-1.0, 1.0))
    n = args.grid or (61 if is_line else 25)
    grid = torch.linspace(lo, hi, n, dtype=torch.float64)
    tr = pt.trained

    def construction_of(k: int) -> torch.Tensor:
        if tr.family is None:
            raise ValueError(f"run {tr.run!r} has no family: the construction is the nearest family point "
                             "(train with --family)")
        from landscape.experiment.distance import project_onto_family

        proj = project_onto_family(unflatten_params(tr.final[k], tr.spec), tr.family)
        return flatten_params(proj.point, tr.spec)

    marks: list[tuple[str, torch.Tensor]] = []
    if mode == "init":
        k = pt.seed
        sl = line_slice(pt.oracle, tr.init[k], end=tr.final[k], alphas=grid, label=f"init → trained (seed {k})")
        marks = [(f"init (seed {k})", tr.init[k]), (f"trained (seed {k})", tr.final[k])]
    elif mode == "construction":
        k = pt.seed
        c = construction_of(k)
        sl = line_slice(pt.oracle, tr.final[k], end=c, alphas=grid, label=f"trained (seed {k}) → construction")
        marks = [(f"trained (seed {k})", tr.final[k]), (f"construction ({tr.family.name})", c)]
    elif mode == "family":
        if pt.family is None or pt.family_values is None:
            raise ValueError("--line/--plane family needs a family (give --family, or a run trained with --family)")
        syms = args.symbols or ((0,) if is_line else (0, 1))
        if max(syms) >= pt.family.dim:
            raise ValueError(f"--symbols {','.join(map(str, syms))}: family {pt.family.name} has {pt.family.dim} "
                             f"symbol(s) {', '.join(pt.family.names)}"
                             + ("; use --line family" if not is_line and pt.family.dim == 1 else ""))
        sl = family_plane_slice(pt.oracle, pt.family, pt.family_values, syms, alphas=grid, betas=grid)
        marks = [(f"family point ({pt.family.name})", sl.origin)]
        if tr is not None:
            marks.append((f"trained (seed {pt.seed})", pt.flat))
    elif mode == "random":
        D = random_directions(pt.spec, pt.flat, torch.Generator().manual_seed(args.sample_seed), 2,
                              normalisation=args.normalisation)
        sl = plane_slice(pt.oracle, pt.flat, D[0], D[1], alphas=grid, betas=grid,
                         labels=(f"random dir. 1, {args.normalisation}-norm.", f"random dir. 2, {args.normalisation}-norm."))
        marks = [(pt.label if tr is None else f"trained (seed {pt.seed})", pt.flat)]
        if tr is not None and tr.family is not None:
            marks.append((f"construction ({tr.family.name})", construction_of(pt.seed)))
    else:  # seeds
        a, b = (tr.check_seed(s) for s in args.seeds)
        c = construction_of(a)
        sl = plane_slice(pt.oracle, c, tr.final[a] - c, tr.final[b] - c, alphas=grid, betas=grid,
                         labels=(f"construction → seed {a}", f"construction → seed {b}"))
        marks = [(f"construction ({tr.family.name}, nearest to seed {a})", c), (f"trained seed {a}", tr.final[a]),
                 (f"trained seed {b}", tr.final[b])]
    pts = []
    rows = []
    for label, theta in marks:
        coords, off = plane_coordinates(sl, theta)
        loss = float(pt.oracle(theta))
        shown = label if off <= 1e-9 * max(1.0, float(theta.norm())) else f"{label} (off-plane {off:.2g})"
        pts.append((shown, coords, loss))
        rows.append({"label": label, "coordinates": list(coords), "off_plane": off, "loss": loss})
    Lv = sl.losses
    finite = torch.isfinite(Lv)
    if not bool(finite.any()):
        raise ValueError("the loss is not finite anywhere on the grid (overflow): shrink --range")
    i = int(torch.argmin(torch.where(finite, Lv, torch.full_like(Lv, float("inf")))))
    if isinstance(sl, LineSlice):
        argmin = [float(sl.alphas[i])]
    else:
        argmin = [float(sl.alphas[i // Lv.shape[1]]), float(sl.betas[i % Lv.shape[1]])]
    where = f"{tr.run} seeds {args.seeds[0]}, {args.seeds[1]}" if mode == "seeds" else pt.label
    title = f"{where}: {mode} {'line' if is_line else 'plane'} ({pt.oracle_desc})"
    out = figure_path(args.out, "--out")
    files = plot_slice(sl, out, title=title, formats=(out.suffix.lower().lstrip("."),), log=args.log, points=pts,
                       kind=args.kind)
    summary = {"point": where, "loss_kind": pt.oracle_desc, "slice": f"{'line' if is_line else 'plane'} {mode}",
               "grid": [n] if is_line else [n, n], "range": [lo, hi], "min_loss": float(Lv[finite].min()),
               "argmin": argmin, "max_loss": float(Lv[finite].max()), "nonfinite": int((~finite).sum()),
               "points": rows, "figure": str(files[0])}
    if args.json:
        emit_json(summary)
        return 0
    w = sys.stdout.write
    w(f"{summary['slice']} at {where} ({pt.oracle_desc}), grid {'x'.join(map(str, summary['grid']))} on "
      f"[{lo:g}, {hi:g}]\n")
    w(f"loss on the grid in [{summary['min_loss']:.6g}, {summary['max_loss']:.6g}], minimum at "
      f"{', '.join(f'{v:.3g}' for v in argmin)}"
      + (f"; {summary['nonfinite']} grid points overflow (left blank)" if summary["nonfinite"] else "") + "\n")
    for r in rows:
        w(f"  {r['label']:<40} at ({', '.join(f'{v:.3g}' for v in r['coordinates'])}), loss {r['loss']:.6g}, "
          f"off-plane {r['off_plane']:.2g}\n")
    w(f"figure {files[0]}\n")
    return 0
